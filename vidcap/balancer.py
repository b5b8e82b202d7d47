"""Which server gets the next request: the least loaded healthy endpoint, ``inflight`` each.

Used by ``vidcap.client.RemoteBackend`` on its event loop thread (no locks needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Endpoint:
    """One server URL and what the balancer knows of it."""

    url: str
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0
    answered: bool = False  # it answered (or took a request) in this run
    lost: bool = False  # its last attempt could not connect: said once, until it answers


class Balancer:
    """Endpoints with at most ``inflight`` requests each; the least loaded healthy one wins.

    An endpoint that failed (connection error, timeout, 503/429, 5xx) cools down for
    ``backoff(failures - 1)`` seconds, a time that grows with each consecutive failure;
    while another endpoint is healthy, new requests wait for a free slot there rather
    than go to the cooling one. When every endpoint is cooling, requests go to the least
    loaded anyway (that is how a restarted server is found again).
    """

    def __init__(self, urls: Sequence[str], inflight: int, backoff: Callable[[int], float]) -> None:
        self.endpoints = [Endpoint(url) for url in urls]
        self.inflight = inflight
        self.backoff = backoff
        self._changed = asyncio.Event()

    async def acquire(self, avoid: Endpoint | None = None) -> Endpoint:
        """A free slot on the best endpoint (``avoid``, the one that just failed, last)."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            healthy = [e for e in self.endpoints if e.down_until <= now]
            open_ = [e for e in healthy or self.endpoints if e.outstanding < self.inflight]
            if open_:
                best = min(open_, key=lambda e: (e is avoid, e.outstanding, e.failures))
                best.outstanding += 1
                return best
            wake = [e.down_until - now for e in self.endpoints if e.down_until > now]
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(wake, default=None))
            except asyncio.TimeoutError:
                pass

    def acquire_extra(self, avoid: Endpoint) -> Endpoint:
        """A slot now, over the ``inflight`` limit if need be, on the best endpoint other than
        ``avoid`` (``avoid`` itself when it is the only one): for a request sent again
        because ``avoid`` is stalled on it, whose own slot it holds."""
        now = asyncio.get_running_loop().time()
        best = min(
            self.endpoints,
            key=lambda e: (e is avoid, e.down_until > now, e.outstanding, e.failures),
        )
        best.outstanding += 1
        return best

    def release(self, endpoint: Endpoint, failed: bool, cooldown: float | None = None) -> None:
        """Give the slot back; a failure cools the endpoint down (``cooldown`` seconds when
        the server said how long, else ``backoff``)."""
        endpoint.outstanding -= 1
        if failed:
            endpoint.failures += 1
            if cooldown is None:
                cooldown = self.backoff(endpoint.failures - 1)
            endpoint.down_until = asyncio.get_running_loop().time() + cooldown
        else:
            endpoint.failures = 0
            endpoint.down_until = 0.0
        self._changed.set()

    def retire(self, url: str) -> bool | None:
        """No more requests to ``url`` (it serves another model than the run's): True when
        it is retired now, False when it was already, None when it is the last endpoint
        (kept: the caller stops)."""
        mine = [e for e in self.endpoints if e.url == url]
        if not mine:
            return False
        if len(self.endpoints) == len(mine):
            return None
        self.endpoints = [e for e in self.endpoints if e.url != url]
        self._changed.set()
        return True

    def reachable_besides(self, endpoint: Endpoint) -> list[Endpoint]:
        """The other endpoints not known to be unreachable (``Endpoint.lost``)."""
        return [e for e in self.endpoints if e is not endpoint and not e.lost]

    def any_healthy_besides(self, endpoint: Endpoint) -> bool:
        now = asyncio.get_running_loop().time()
        return any(e is not endpoint and e.down_until <= now for e in self.endpoints)
