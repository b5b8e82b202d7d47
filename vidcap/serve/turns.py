"""Clients taking turns: the order both servers serve waiting requests in.

``Turns`` holds each client's (peer address's) waiting items, oldest first; ``pop`` gives
the oldest item of the client whose turn it is and sends that client's next item behind
one of every other waiting client's. So a client's request waits for one request of each
other client, not for everything a busy neighbour has queued. Flask's micro-batcher
(``vidcap.serve.batcher``) collects its batches this way, under its lock; the TorchServe
gate (``vidcap.serve.gate``) hands out its forwarding slots this way (``Slots``), in its
event loop, a request weighing what its pixels cost to decode; Flask's worker hands its
threads to requests this way (``TurnQueue``), and its request threads decode frames this
way (``TurnSemaphore``). A client is its peer address as ``client_of`` keys it: an IPv6
host's /64, the block one host or one home is given, not each of its 2⁶⁴ addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")
IPV6_CLIENT_PREFIX = 64  # the prefix an IPv6 host is given (RFC 6177: a /64 at least)


def client_of(address: str | None) -> str:
    """The client a peer ``address`` counts as, for turns and shares: an IPv4 address as
    it is (an IPv4-mapped IPv6 one as its IPv4), an IPv6 one as its /64 (one host may
    take any address of its /64, and would get a turn and a share for each); anything
    else (a Unix socket's, none: "") as it is."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # (no zone: fe80::1%eth0)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


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
    """Requests inside at once weighing at most ``limit`` together (0: no limit), a request
    weighing 1 unless said; past it, the requests waiting to enter are let in in their
    clients' turns (``Turns``) as others leave. A request heavier than ``limit`` enters
    alone, in its turn.

    ``async with slots.held(client, weight):`` around what must be limited."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0  # the weight inside (whole numbers: it returns to 0 exactly)
        self._waiting: Turns[tuple[asyncio.Future[None], int]] = Turns()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _fits(self, weight: int) -> bool:
        return not self.limit or not self.inside or self.inside + weight <= self.limit

    async def enter(self, client: str, weight: int = 1) -> None:
        if not self._waiting and self._fits(weight):
            self.inside += weight
            return
        entry: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (entry, weight)
        self._waiting.push(client, item)
        try:
            await entry  # (``_let_in`` counted it inside)
        except asyncio.CancelledError:
            if entry.done() and not entry.cancelled():
                self.leave(weight)  # let in as it was cancelled: pass its place on
            else:
                self._waiting.remove(client, item)
                self._let_in()  # (it may have held up a lighter one behind it)
            raise

    def leave(self, weight: int = 1) -> None:
        self.inside -= weight
        self._let_in()

    def _let_in(self) -> None:
        """Let waiting requests in, in turn, while the next one fits."""
        while self._waiting:
            entry, weight = self._waiting.peek()
            if entry.done():  # (cancelled: ``enter`` removes it)
                self._waiting.pop()
                continue
            if not self._fits(weight):
                return
            self._waiting.pop()
            self.inside += weight
            entry.set_result(None)

    @asynccontextmanager
    async def held(self, client: str, weight: int = 1) -> AsyncIterator[None]:
        await self.enter(client, weight)
        try:
            yield
        finally:
            self.leave(weight)


class TurnSemaphore:
    """At most ``limit`` holders at once across threads; past it, the threads waiting are
    let in in their clients' turns (``Turns``), so a client waits for one holder of each
    other client's, not for all that a neighbour's many requests hold up.

    ``with semaphore.held(client):`` around what must be limited."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._lock = threading.Lock()
        self._free = limit
        self._waiting: Turns[threading.Event] = Turns()

    def acquire(self, client: str) -> None:
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return
            turn = threading.Event()
            self._waiting.push(client, turn)
        turn.wait()  # (``release`` hands its place over)

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.pop().set()
            else:
                self._free += 1

    @contextmanager
    def held(self, client: str) -> Iterator[None]:
        self.acquire(client)
        try:
            yield
        finally:
            self.release()


class TurnQueue(Generic[T]):
    """A thread-safe queue whose ``get`` gives items in their clients' turns (``Turns``;
    ``client_of(item)`` names an item's client): the ``put``/``get`` a thread pool's
    workers use (``queue.SimpleQueue``'s)."""

    def __init__(self, client_of: Callable[[T], str]) -> None:
        self._client_of = client_of
        self._ready = threading.Condition()
        self._turns: Turns[T] = Turns()

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        with self._ready:
            self._turns.push(self._client_of(item), item)
            self._ready.notify()

    def put_nowait(self, item: T) -> None:
        self.put(item)

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        with self._ready:
            if block and not self._ready.wait_for(lambda: bool(self._turns), timeout):
                raise queue.Empty
            if not self._turns:
                raise queue.Empty
            return self._turns.pop()

    def get_nowait(self) -> T:
        return self.get(block=False)

    def empty(self) -> bool:
        with self._ready:
            return not self._turns

    def qsize(self) -> int:
        with self._ready:
            return len(self._turns)
