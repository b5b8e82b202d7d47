"""Micro-batching for a threaded server: concurrent requests merged into one core run.

A server thread per request calls ``MicroBatcher.submit(request, client)`` and waits on
the returned future. One worker thread takes the first waiting request, keeps collecting
for up to ``max_delay`` seconds or until ``max_batch`` frames are in hand, and hands
what it holds to ``run`` (``ServingCore.run``: group by settings, flatten, caption,
split back, per-request errors); each future gets its own ``Outcome``.

Clients (the server passes each request's peer address) take turns
(``vidcap.serve.turns``): each round takes the clients' oldest requests in rotation, so a
client's request waits for one request of each other client, not for everything a busy
neighbour has queued. And a busy neighbour cannot shut a client out: ``max_queue``
refuses only a client that already has a request waiting, so every client's first request
gets in (how far that takes the queue past ``max_queue`` is bounded by the server's
threads, one request each).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from vidcap.errors import UsageError
from vidcap.serve.core import Outcome
from vidcap.serve.turns import Turns
from vidcap.wire import CaptionRequest

log = logging.getLogger(__name__)

RunFn = Callable[[Sequence[CaptionRequest]], list[Outcome]]


@dataclass(frozen=True)
class BatchSettings:
    """``max_batch`` frames per round; wait ``max_delay`` s for company; at most
    ``max_queue`` frames waiting (beyond that, ``submit`` raises ``QueueFull``)."""

    max_batch: int
    max_delay: float
    max_queue: int

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise UsageError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_delay <= 10:
            raise UsageError(f"max_delay must be between 0 and 10 seconds, got {self.max_delay}")
        if self.max_queue < 1:
            raise UsageError(f"max_queue must be >= 1, got {self.max_queue}")


class QueueFull(Exception):
    """Too many frames are waiting for the model: answer 503 and let the client retry."""


@dataclass
class BatchStats:
    requests: int = 0
    frames: int = 0
    model_calls: int = 0
    failed_requests: int = 0
    largest_call: int = 0


@dataclass
class _Job:
    request: CaptionRequest
    client: str = ""
    future: Future[Outcome] = field(default_factory=Future)

    @property
    def frames(self) -> int:
        return len(self.request.images)


class MicroBatcher:
    """Owns one worker thread; ``run`` is only ever called from it (one at a time)."""

    def __init__(self, run: RunFn, settings: BatchSettings) -> None:
        self.run = run
        self.settings = settings
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._waiting: Turns[_Job] = Turns()  # each client's waiting jobs, in turns
        self._waiting_frames = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="vidcap-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: CaptionRequest, client: str = "") -> Future[Outcome]:
        """Queue one request of ``client`` (the peer's address); the future gets its
        ``Outcome``. ``QueueFull`` when ``max_queue`` frames would be passed and this client
        already has a request waiting."""
        job = _Job(request, client)
        with self._cond:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            refused = self._refusal(client, job.frames)
            if refused:
                raise QueueFull(refused)
            self._waiting.push(client, job)
            self._waiting_frames += job.frames
            self.stats.requests += 1
            self.stats.frames += job.frames
            self._cond.notify()
        return job.future

    def refuses(self, client: str, frames: int) -> str | None:
        """Why ``submit`` would refuse ``frames`` frames of ``client`` now (None: it would
        not): asked before a request's frames are decoded, so that a client resending at
        once, ignoring ``Retry-After``, costs the server no decoding."""
        with self._cond:
            return self._refusal(client, frames)

    def _refusal(self, client: str, frames: int) -> str | None:
        waiting = self._waiting_frames
        if client in self._waiting and waiting + frames > self.settings.max_queue:
            return f"{waiting} frames are already waiting for the model"
        return None

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {**self.stats.__dict__, "waiting_frames": self._waiting_frames}

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new requests; those already waiting are still run."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # --- worker thread ---

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if not self._waiting:  # closed, and nothing left to run
                    return
            self._run(self._collect())

    def _collect(self) -> list[_Job]:
        """One round: the clients' oldest jobs in turn, the first whatever its size, then
        while the next in turn fits in ``max_batch``; waiting up to ``max_delay`` for more."""
        jobs: list[_Job] = []
        frames = 0
        deadline = time.monotonic() + self.settings.max_delay
        with self._cond:
            while frames < self.settings.max_batch:
                if self._waiting:
                    if jobs and frames + self._waiting.peek().frames > self.settings.max_batch:
                        break  # it goes first next round (its client keeps its turn)
                    job = self._waiting.pop()  # (its client's next job: after the others')
                    self._waiting_frames -= job.frames
                    jobs.append(job)
                    frames += job.frames
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
        return jobs

    def _run(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        started = time.perf_counter()
        try:
            outcomes = self.run([job.request for job in jobs])
        except Exception as exc:  # noqa: BLE001 - the core catches model errors: a bug
            log.exception("serving %d requests failed", len(jobs))
            for job in jobs:
                job.future.set_exception(exc)
            return
        frames = sum(job.frames for job in jobs)
        with self._cond:
            self.stats.model_calls += 1
            self.stats.largest_call = max(self.stats.largest_call, frames)
            self.stats.failed_requests += sum(o.error is not None for o in outcomes)
        log.debug(
            "%d frames from %d requests in %.3fs", frames, len(jobs), time.perf_counter() - started
        )
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.future.set_result(outcome)
