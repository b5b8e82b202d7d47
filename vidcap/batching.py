"""Micro-batching: concurrent requests' frames merged into one model call.

A server thread per request calls ``MicroBatcher.submit(images, settings)`` and waits on
the returned future. One worker thread takes the first waiting request, keeps
collecting for up to ``max_delay`` seconds or until ``max_batch`` frames are in hand,
groups what it holds by generation settings, runs the caption function once per group
and resolves each request's future with its own captions, in order. A model exception
fails only the requests of that call; the worker goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from vidcap.errors import UsageError
from vidcap.settings import GenerationSettings

log = logging.getLogger(__name__)

CaptionFn = Callable[[Sequence[np.ndarray], GenerationSettings], list[str]]


@dataclass(frozen=True)
class BatchSettings:
    """``max_batch`` frames per model call; wait ``max_delay`` s for company; at most
    ``max_queue`` frames waiting (beyond that, ``submit`` raises ``QueueFull``)."""

    max_batch: int = 8
    max_delay: float = 0.01
    max_queue: int = 512

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise UsageError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.max_delay <= 10:
            raise UsageError(f"max_delay must be between 0 and 10 seconds, got {self.max_delay}")
        if self.max_queue < 1:
            raise UsageError(f"max_queue must be >= 1, got {self.max_queue}")


class QueueFull(Exception):
    """Too many frames are waiting for the model: answer 503 and let the client retry."""


class ModelFailure(Exception):
    """The model raised while captioning a batch this request was part of."""


@dataclass
class BatchStats:
    requests: int = 0
    frames: int = 0
    model_calls: int = 0
    failed_calls: int = 0
    largest_call: int = 0


@dataclass
class _Job:
    images: Sequence[np.ndarray]
    settings: GenerationSettings
    future: Future[list[str]] = field(default_factory=Future)


class MicroBatcher:
    """Owns one worker thread; ``caption`` is only ever called from it (one at a time)."""

    def __init__(self, caption: CaptionFn, settings: BatchSettings | None = None) -> None:
        self.caption = caption
        self.settings = settings or BatchSettings()
        self.stats = BatchStats()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting_frames = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vidcap-batcher", daemon=True)
        self._thread.start()

    def submit(
        self, images: Sequence[np.ndarray], settings: GenerationSettings
    ) -> Future[list[str]]:
        """Queue one request's frames; the future gets their captions, in order."""
        job = _Job(images, settings)
        with self._lock:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            waiting = self._waiting_frames
            if waiting and waiting + len(images) > self.settings.max_queue:
                raise QueueFull(f"{waiting} frames are already waiting for the model")
            self._waiting_frames += len(images)
            self.stats.requests += 1
            self.stats.frames += len(images)
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

    def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry or self._queue.get()
            carry = None
            if first is None:
                return
            jobs, carry, stop = self._collect(first)
            groups: dict[GenerationSettings, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                self._run_group(settings, group)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """Jobs for one round, the job that did not fit (next round's first), and stop."""
        jobs = [first]
        self._taken(first)
        frames = len(first.images)
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
            if frames + len(job.images) > self.settings.max_batch:
                return jobs, job, False
            self._taken(job)
            jobs.append(job)
            frames += len(job.images)
        return jobs, None, False

    def _taken(self, job: _Job) -> None:
        with self._lock:
            self._waiting_frames -= len(job.images)

    def _run_group(self, settings: GenerationSettings, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        images = [image for job in jobs for image in job.images]
        if not images:
            return
        started = time.perf_counter()
        try:
            captions = list(self.caption(images, settings))
            if len(captions) != len(images):
                raise RuntimeError(f"{len(captions)} captions for {len(images)} frames")
        except Exception as exc:  # noqa: BLE001 - fails these requests, never the worker
            log.exception("model call on %d frames failed", len(images))
            with self._lock:
                self.stats.model_calls += 1
                self.stats.failed_calls += 1
            failure = ModelFailure(f"{type(exc).__name__}: {exc}")
            for job in jobs:
                job.future.set_exception(failure)
            return
        with self._lock:
            self.stats.model_calls += 1
            self.stats.largest_call = max(self.stats.largest_call, len(images))
        log.debug(
            "%d frames from %d requests in %.3fs",
            len(images),
            len(jobs),
            time.perf_counter() - started,
        )
        start = 0
        for job in jobs:
            job.future.set_result(captions[start : start + len(job.images)])
            start += len(job.images)
