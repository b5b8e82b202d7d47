"""Clients taking turns (``vidcap.serve.turns``): the order, and the gate's forwarding
slots — let in by turns, never lost to a request cancelled while it waits."""

from __future__ import annotations

import asyncio
import threading
import time

from vidcap.serve.turns import Slots, Turns, TurnSemaphore, client_of


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


def test_a_heavy_request_enters_alone_and_holds_another_client_up_for_itself_only() -> None:
    """Regression (an attack round): the gate counted requests, not what they cost, so one
    client's requests of 15 4K frames each — 16 of them forwarded at once — held another
    client's one small frame for 36-73 s. A request weighs its pixels' share: a heavy one
    enters alone, in its turn, and the next client's light one enters once it leaves."""

    async def scenario() -> list[str]:
        slots, order = Slots(4), []

        async def one(name: str, weight: int) -> None:
            await slots.enter(name[0], weight)
            order.append(name)

        heavy = [asyncio.create_task(one(f"a{i}", 41)) for i in range(3)]
        await asyncio.sleep(0)
        light = asyncio.create_task(one("b1", 1))
        await asyncio.sleep(0)
        assert order == ["a0"] and slots.inside == 41 and slots.waiting == 3
        slots.leave(41)  # a0 answered
        await asyncio.sleep(0)
        slots.leave(41)  # a1 answered
        await asyncio.sleep(0)
        slots.leave(1)  # b1 answered
        await asyncio.gather(*heavy, light)
        assert slots.inside == 41 and not slots.waiting
        return order

    assert asyncio.run(scenario()) == ["a0", "a1", "b1", "a2"]  # (a was waiting first)


def test_light_requests_fill_the_limit_and_a_heavy_one_waits_for_room() -> None:
    async def scenario() -> tuple[list[str], int]:
        slots, order = Slots(4), []

        async def one(name: str, weight: int) -> None:
            await slots.enter(name[0], weight)
            order.append(name)

        tasks = []
        for name, weight in (("a1", 1), ("a2", 1), ("b1", 3), ("c1", 1)):
            tasks.append(asyncio.create_task(one(name, weight)))
            await asyncio.sleep(0)
        assert order == ["a1", "a2"]  # b1 does not fit, and c1 waits behind it in turn
        slots.leave(1)
        await asyncio.sleep(0)
        assert order == ["a1", "a2", "b1"]  # 1 + 3 fit
        slots.leave(1)
        await asyncio.gather(*tasks)
        return order, slots.inside

    assert asyncio.run(scenario()) == (["a1", "a2", "b1", "c1"], 4)


def test_threads_waiting_to_decode_get_in_in_their_clients_turns() -> None:
    """Flask's request threads decode frames through a ``TurnSemaphore``: one client's many
    threads waiting hold another client's frame up for one frame each, not for all."""
    semaphore, order, lock = TurnSemaphore(1), [], threading.Lock()
    semaphore.acquire("a")  # a frame of client a is decoding

    def one(name: str) -> None:
        with semaphore.held(name[0]):
            with lock:
                order.append(name)

    threads = []
    for name in ("a1", "a2", "a3", "b1"):
        thread = threading.Thread(target=one, args=(name,))
        thread.start()
        threads.append(thread)
        while len(semaphore._waiting) < len(threads):  # each waits before the next comes
            time.sleep(0.001)
    semaphore.release()
    for thread in threads:
        thread.join(10)
    assert order == ["a1", "b1", "a2", "a3"]
    semaphore.acquire("c")  # (every place given back)


def test_the_flask_workers_threads_serve_requests_in_their_clients_turns() -> None:
    """Regression (an attack round): gunicorn's thread pool served requests first come,
    first served, so one address's connections, each resending as soon as it was answered,
    held another address's request behind all of theirs (13-40 s). The worker's pool takes
    them in their clients' turns."""
    order = _served_by_one_thread(("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"))
    assert order == [0, 3, 1, 2]  # (first come: 0, 1, 2, 3)


def _served_by_one_thread(addresses: tuple[str, ...]) -> list[int]:
    """The order the Flask worker's one thread serves connections from ``addresses``
    (their indices), queued while the thread is busy."""
    from types import SimpleNamespace

    from vidcap.serve.gunicorn_worker import DeadlineThreadWorker

    worker = SimpleNamespace(cfg=SimpleNamespace(threads=1))
    pool = DeadlineThreadWorker.get_thread_pool(worker)  # type: ignore[arg-type]
    busy, order = threading.Event(), []
    try:
        first = pool.submit(busy.wait, 10)  # the one thread is taken
        done = [
            pool.submit(order.append, SimpleNamespace(client=(address, 5000), name=n))
            for n, address in enumerate(addresses)
        ]
        busy.set()
        first.result(10)
        for future in done:
            future.result(10)
    finally:
        pool.shutdown(wait=True)
    return [conn.name for conn in order]


def test_a_client_is_its_ipv4_address_or_its_ipv6_hosts_64() -> None:
    assert client_of("10.0.0.1") == "10.0.0.1"
    assert client_of("2001:db8:0:1::a") == client_of("2001:db8:0:1:ffff::b") == "2001:db8:0:1::/64"
    assert client_of("2001:db8:0:2::a") == "2001:db8:0:2::/64"  # (another host's block)
    assert client_of("::ffff:10.0.0.1") == "10.0.0.1"  # (IPv4 on a dual-stack socket)
    assert client_of("fe80::1%eth0") == "fe80::/64"
    assert client_of(None) == client_of("") == ""
    assert client_of("/run/vidcap.sock") == "/run/vidcap.sock"  # (not an IP: as it is)


def test_one_ipv6_host_takes_one_turn_whichever_addresses_of_its_64_it_sends_from() -> None:
    """Regression (round 61's DoS audit, left alone there): each peer address was a client,
    so one IPv6 host, free to send from any address of its /64, got a turn (and, at the
    gate, a share of requests) for each. The Flask worker's threads, its batcher and the
    gate key clients by ``client_of``."""
    order = _served_by_one_thread(
        ("2001:db8:0:1::a", "2001:db8:0:1::b", "2001:db8:0:1::c", "2001:db8:0:2::1")
    )
    assert order == [0, 3, 1, 2]


def test_the_gate_counts_one_ipv6_hosts_requests_as_one_clients() -> None:
    from types import SimpleNamespace

    from vidcap.errors import BadRequest
    from vidcap.serve.gate import Gate, GateSettings

    async def main() -> None:
        settings = GateSettings("http://127.0.0.1:1", 1, 1.0, 1.0, 1.0, max_client_requests=1)
        gate = Gate(settings, session=None)  # type: ignore[arg-type]  # (admit sends nothing)
        assert await gate.admit(SimpleNamespace(remote="2001:db8:0:1::a")) == "2001:db8:0:1::/64"
        assert await gate.admit(SimpleNamespace(remote="2001:db8:0:2::a"))  # another host
        try:
            await gate.admit(SimpleNamespace(remote="2001:db8:0:1::b"))  # the first host again
        except BadRequest as exc:
            assert exc.status == 503
        else:
            raise AssertionError("a second address of one /64 got a share of its own")

    asyncio.run(main())
