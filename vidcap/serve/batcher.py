"""Micro-batching for a threaded server: concurrent requests merged into one core run.

A server thread per request calls ``MicroBatcher.submit(request)`` and waits on the
returned future. One worker thread takes the first waiting request, keeps collecting
for up to ``max_delay`` seconds or until ``max_batch`` frames are in hand, and hands
what it holds to ``run`` (``ServingCore.run``: group by settings, flatten, caption,
split back, per-request errors); each future gets its own ``Outcome``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from vidcap.errors import UsageError
from vidcap.serve.core import Outcome
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
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting_frames = 0
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="vidcap-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: CaptionRequest) -> Future[Outcome]:
        """Queue one request; the future gets its ``Outcome``."""
        job = _Job(request)
        with self._lock:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            waiting = self._waiting_frames
            if waiting and waiting + job.frames > self.settings.max_queue:
                raise QueueFull(f"{waiting} frames are already waiting for the model")
            self._waiting_frames += job.frames
            self.stats.requests += 1
            self.stats.frames += job.frames
        self._queue.put(job)
        return job.future

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self.stats.__dict__, "waiting_frames": self._waiting_frames}

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    # --- worker thread ---

    def _work(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry or self._queue.get()
            carry = None
            if first is None:
                return
            jobs, carry, stop = self._collect(first)
            self._run(jobs)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """Jobs for one round, the job that did not fit (next round's first), and stop."""
        jobs = [first]
        self._taken(first)
        frames = first.frames
        deadline = time.monotonic() + self.settings.max_delay
        while frames < self.settings.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is None:
                return jobs, None, True
            if frames + job.frames > self.settings.max_batch:
                return jobs, job, False
            self._taken(job)
            jobs.append(job)
            frames += job.frames
        return jobs, None, False

    def _taken(self, job: _Job) -> None:
        with self._lock:
            self._waiting_frames -= job.frames

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
        with self._lock:
            self.stats.model_calls += 1
            self.stats.largest_call = max(self.stats.largest_call, frames)
            self.stats.failed_requests += sum(o.error is not None for o in outcomes)
        log.debug(
            "%d frames from %d requests in %.3fs", frames, len(jobs), time.perf_counter() - started
        )
        for job, outcome in zip(jobs, outcomes, strict=True):
            job.future.set_result(outcome)
