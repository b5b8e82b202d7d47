"""Where captions come from: the model in-process, or servers over HTTP (``vidcap.client``).

The engine sees one small protocol. A backend takes frames already resized to its
``input_size`` and yields exactly one answer per frame, in order: its caption, or a
``CaptionFailed`` when that frame could have none (a server failed its request past the
retries; the model in-process raised on it even when it ran alone). The engine fails that
frame's video and goes on; a backend raises only when it cannot caption anything at all
(``BackendUnavailable``: every server down).
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from typing import Protocol

import numpy as np

from vidcap.alone import each_alone
from vidcap.errors import VidcapError
from vidcap.model import Captioner, expand_devices
from vidcap.settings import GenerationSettings, ModelSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptionFailed:
    """In place of a caption: this frame has none, and ``reason`` says why (one line)."""

    reason: str


class CaptionError(VidcapError):
    """A frame got no caption (raised by ``each_caption`` for callers with no video to fail)."""


class Backend(Protocol):
    input_size: tuple[int, int]

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str | CaptionFailed]:
        """One answer per image, in order; pulls images lazily (memory stays flat)."""
        ...

    def close(self) -> None: ...


class EmbeddedBackend:
    """Model replicas in this process (one per device), each in its own thread.

    Batches of ``batch_size`` frames — from any videos — go to whichever replica is free;
    captions come back in order. While a replica runs a batch, the next one is gathered,
    so the model does not wait for the caller between batches.
    """

    def __init__(self, captioners: Captioner | Sequence[Captioner]) -> None:
        replicas = [captioners] if isinstance(captioners, Captioner) else list(captioners)
        if not replicas:
            raise ValueError("EmbeddedBackend needs at least one Captioner")
        self.captioners = replicas
        self.captioner = replicas[0]
        self.input_size = replicas[0].input_size
        self._free: queue.SimpleQueue[Captioner] = queue.SimpleQueue()
        for replica in replicas:
            self._free.put(replica)
        self._pool = ThreadPoolExecutor(len(replicas), thread_name_prefix="vidcap-model")

    @property
    def batch_size(self) -> int:
        return self.captioner.batch_size

    def _run(
        self, images: list[np.ndarray], settings: GenerationSettings
    ) -> list[str | CaptionFailed]:
        replica = self._free.get()
        try:
            return caption_each(replica, images, settings)
        finally:
            self._free.put(replica)

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str | CaptionFailed]:
        iterator = iter(images)
        running: deque[Future[list[str | CaptionFailed]]] = deque()
        depth = len(self.captioners) + 1
        while True:
            while len(running) < depth and (chunk := list(islice(iterator, self.batch_size))):
                running.append(self._pool.submit(self._run, chunk, settings))
            if not running:
                return
            yield from running.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def caption_each(
    captioner: Captioner, images: list[np.ndarray], settings: GenerationSettings
) -> list[str | CaptionFailed]:
    """``captioner``'s captions of ``images``; where the batch raises, each frame is captioned
    alone (``alone.each_alone``, the servers' rule for requests), so only a frame the model
    fails on by itself gets ``CaptionFailed`` (its video fails, its batch-mates from other
    videos keep their captions)."""
    results = each_alone(
        lambda chunk: list(captioner.caption(list(chunk), settings)), images, "frames"
    )
    return [_failed(r) if isinstance(r, Exception) else r for r in results]


def _failed(exc: Exception) -> CaptionFailed:
    log.error("the model failed on a frame: %s: %s", type(exc).__name__, exc)
    return CaptionFailed(f"the model failed on this frame: {type(exc).__name__}: {exc}")


def each_caption(answers: Iterable[str | CaptionFailed]) -> Iterator[str]:
    """The captions of a ``caption_stream``; the first ``CaptionFailed`` raises ``CaptionError``."""
    for answer in answers:
        if isinstance(answer, CaptionFailed):
            raise CaptionError(answer.reason)
        yield answer


def load_replicas(settings: ModelSettings) -> list[Captioner]:
    """One ``Captioner`` per device named in ``settings.device`` (``cuda:all``: every GPU)."""
    return [
        Captioner.load(replace(settings, device=device))
        for device in expand_devices(settings.device)
    ]
