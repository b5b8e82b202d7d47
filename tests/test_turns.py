"""Clients taking turns (``vidcap.serve.turns``): the order, and the gate's forwarding
slots — let in by turns, never lost to a request cancelled while it waits."""

from __future__ import annotations

import asyncio

from vidcap.serve.turns import Slots, Turns


def test_a_clients_next_item_waits_for_one_of_each_other_client() -> None:
    turns: Turns[str] = Turns()
    for item in ("a1", "a2", "a3"):
        turns.push("a", item)
    turns.push("b", "b1")
    turns.push("c", "c1")
    turns.push("c", "c2")
    assert len(turns) == 6 and "b" in turns and "d" not in turns
    assert turns.peek() == "a1"
    assert [turns.pop() for _ in range(6)] == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert not turns and "a" not in turns


def test_an_item_taken_out_keeps_its_clients_place() -> None:
    turns: Turns[str] = Turns()
    turns.push("a", "a1")
    turns.push("a", "a2")
    turns.push("b", "b1")
    turns.remove("a", "a1")
    turns.remove("a", "gone")  # (not waiting: nothing happens)
    assert [turns.pop() for _ in range(2)] == ["a2", "b1"]
    turns.push("c", "c1")
    turns.remove("c", "c1")
    assert "c" not in turns and not turns


async def _enter_in_order(slots: Slots, names: list[str], order: list[str]) -> list[asyncio.Task]:
    async def one(name: str) -> None:
        await slots.enter(name[0])  # (the client: the name's first letter)
        order.append(name)

    tasks = []
    for name in names:
        tasks.append(asyncio.create_task(one(name)))
        await asyncio.sleep(0)  # each waits before the next comes
    return tasks


def test_past_the_limit_requests_enter_in_their_clients_turns() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        slots, order = Slots(2), []
        tasks = await _enter_in_order(slots, ["a1", "a2", "a3", "a4", "a5", "b1"], order)
        await asyncio.sleep(0)
        assert order == ["a1", "a2"] and slots.inside == 2 and slots.waiting == 4
        for _ in range(4):
            slots.leave()
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return order, slots.inside, slots.waiting

    order, inside, waiting = asyncio.run(scenario())
    assert order == ["a1", "a2", "a3", "b1", "a4", "a5"]  # b1 after one more of a's
    assert (inside, waiting) == (2, 0)


def test_a_request_cancelled_while_it_waits_loses_no_place() -> None:
    async def scenario() -> tuple[list[str], int]:
        slots, order = Slots(1), []
        first, waits, other = await _enter_in_order(slots, ["a1", "a2", "b1"], order)
        waits.cancel()  # (its client hung up while it waited)
        await asyncio.sleep(0)
        slots.leave()  # a1 leaves: b1 enters
        await asyncio.wait_for(asyncio.gather(first, other), 5)  # (a lost place: never)
        slots.leave()
        return order, slots.inside

    assert asyncio.run(scenario()) == (["a1", "b1"], 0)


def test_a_place_handed_to_a_request_cancelled_at_once_is_passed_on() -> None:
    async def scenario() -> tuple[list[str], int]:
        slots, order = Slots(1), []
        first, handed, other = await _enter_in_order(slots, ["a1", "b1", "c1"], order)
        slots.leave()  # a1 leaves: its place goes to b1 …
        handed.cancel()  # … cancelled before it runs: c1 gets the place
        await asyncio.wait_for(asyncio.gather(first, other), 5)  # (a lost place: never)
        assert handed.cancelled()
        slots.leave()
        return order, slots.inside

    assert asyncio.run(scenario()) == (["a1", "c1"], 0)


def test_no_limit_lets_every_request_in() -> None:
    async def scenario() -> int:
        slots = Slots(0)
        for client in "abcabc":
            await slots.enter(client)
        return slots.inside

    assert asyncio.run(scenario()) == 6
