"""Clients taking turns: the order both servers serve waiting requests in.

``Turns`` holds each client's (peer address's) waiting items, oldest first; ``pop`` gives
the oldest item of the client whose turn it is and sends that client's next item behind
one of every other waiting client's. So a client's request waits for one request of each
other client, not for everything a busy neighbour has queued. Flask's micro-batcher
(``vidcap.serve.batcher``) collects its batches this way, under its lock; the TorchServe
gate (``vidcap.serve.gate``) hands out its forwarding slots this way (``Slots``), in its
event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Turns(Generic[T]):
    """Waiting items per client; the dict's order is the clients' turns. Not thread-safe:
    its owner holds a lock or runs in one event loop."""

    def __init__(self) -> None:
        self._waiting: dict[str, deque[T]] = {}

    def push(self, client: str, item: T) -> None:
        self._waiting.setdefault(client, deque()).append(item)

    def peek(self) -> T:
        """The item ``pop`` would give (``IndexError`` when nothing waits)."""
        if not self._waiting:
            raise IndexError("nothing waits")
        return self._waiting[next(iter(self._waiting))][0]

    def pop(self) -> T:
        """The oldest item of the client whose turn it is; that client goes to the back."""
        client = next(iter(self._waiting))  # (nothing waits: StopIteration)
        queue = self._waiting.pop(client)
        item = queue.popleft()
        if queue:  # the client's next item waits for the others' turns
            self._waiting[client] = queue
        return item

    def remove(self, client: str, item: T) -> None:
        """Take ``item`` out (it no longer waits); the client keeps its place in turn."""
        queue = self._waiting.get(client)
        if queue is None or item not in queue:
            return
        queue.remove(item)
        if not queue:
            del self._waiting[client]

    def __contains__(self, client: object) -> bool:
        """Has ``client`` an item waiting?"""
        return client in self._waiting

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())


class Slots:
    """At most ``limit`` requests inside at once (0: no limit); past it, the requests
    waiting to enter are let in in their clients' turns (``Turns``) as others leave.

    ``async with slots.held(client):`` around what must be limited."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0
        self._waiting: Turns[asyncio.Future[None]] = Turns()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(self, client: str) -> None:
        if not self.limit or (self.inside < self.limit and not self._waiting):
            self.inside += 1
            return
        entry: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.push(client, entry)
        try:
            await entry  # (``leave`` hands its place over: ``inside`` stays counted)
        except asyncio.CancelledError:
            if entry.done() and not entry.cancelled():
                self.leave()  # handed a place as it was cancelled: pass it on
            else:
                self._waiting.remove(client, entry)
            raise

    def leave(self) -> None:
        while self._waiting:
            entry = self._waiting.pop()
            if not entry.done():
                entry.set_result(None)  # its place is the one leaving
                return
        self.inside -= 1

    @asynccontextmanager
    async def held(self, client: str) -> AsyncIterator[None]:
        await self.enter(client)
        try:
            yield
        finally:
            self.leave()
