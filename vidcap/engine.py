"""The streaming engine: decoder pool → one bounded frame queue → backend → commit.

One look at the whole flow::

    jobs = plan(sources)                      # resume: skip what is done (commit.py)
    pool = DecodePool(jobs)                   # N decoder processes, several videos at once
    for caption in backend.caption_stream(    # embedded replicas or --server endpoints,
            frames_of(pool)):                 # full batches across video boundaries
        route(caption) → Committer            # per-video outputs once a video's last frame is back

A frame's place in the stream is remembered in ``pending`` (job id, index, pts; no
pixels), together with the end-of-video and failure markers in the order the decoders sent
them: since a backend returns captions in order, a video's marker is reached only after all
its frames are captioned, so it can be committed right there.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from vidcap.backend import Backend
from vidcap.commit import Committer, RunSettings, RunWriter, VideoResult, plan, write_summary
from vidcap.decode_worker import Decoded, DecodePool, Ended, Event, Failed
from vidcap.errors import BackendUnavailable
from vidcap.model import AUTO_BATCH_CUDA
from vidcap.outputs import CaptionedFrame
from vidcap.settings import EngineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Slot:
    job: int
    index: int
    pts: float


def run(
    sources: Sequence[str],
    settings: RunSettings,
    backend_factory: Callable[[], Backend],
    engine: EngineSettings | None = None,
    metadata: Sequence[dict] | None = None,
    run_writers: Sequence[RunWriter] = (),
    input_size: tuple[int, int] | None = None,
) -> list[VideoResult]:
    """Caption every source not already done; write outputs, resume records, summary.json.

    The backend is built (the model loaded) only when some video is left to do; given the
    model's ``input_size``, decoders start while it loads. When the
    backend is unavailable altogether (every server down after retries) the run stops at
    once: the videos begun are recorded failed, the summary written, and
    ``BackendUnavailable`` propagates; a rerun resumes.
    """
    engine = engine or EngineSettings()
    started = time.monotonic()
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    jobs, resumed = plan(sources, settings, metadata)
    for result in resumed:
        log.info("%s: already done, skipped", result.video)
    if not jobs:
        write_summary(settings.out_dir, resumed, 0, time.monotonic() - started)
        return list(resumed)

    def start_pool(size: tuple[int, int]) -> DecodePool:
        frames = engine.queue_frames(size, AUTO_BATCH_CUDA)
        work = [(job.id, job.source) for job in jobs]
        return DecodePool(
            work, settings.sampling, size, engine.workers(), frames, engine.decode_timeout
        )

    # Decoding starts while the model loads when the input size is known beforehand.
    pool = start_pool(input_size) if input_size else None
    try:
        backend = backend_factory()
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    if pool is not None and backend.input_size != input_size:
        pool.close()
        pool = None
    progress = _Progress(len(jobs) + len(resumed), len(resumed), settings.quiet)
    committer = Committer(settings, jobs, run_writers, on_done=progress.done)
    try:
        pool = pool or start_pool(backend.input_size)
        try:
            _caption(pool, backend, settings, committer, progress)
            committer.fail_unfinished()
        except BackendUnavailable as exc:
            committer.fail_open(str(exc))
            raise
        finally:
            pool.close()
    finally:
        backend.close()
        progress.close()
        results = committer.close(time.monotonic() - started, resumed)
    return results


def _caption(
    pool: DecodePool,
    backend: Backend,
    settings: RunSettings,
    committer: Committer,
    progress: _Progress,
) -> None:
    pending: deque[_Slot | Event] = deque()

    def frames() -> Iterator[np.ndarray]:
        for event in pool.events():
            if isinstance(event, Decoded):
                pending.append(_Slot(event.job, event.frame.index, event.frame.pts_seconds))
                yield event.frame.rgb
            else:
                pending.append(event)

    def settle_markers() -> None:
        while pending and not isinstance(pending[0], _Slot):
            marker = pending.popleft()
            if isinstance(marker, Ended):
                committer.end(marker.job, marker.sampled, marker.duration)
            elif isinstance(marker, Failed):
                committer.fail(marker.job, marker.error)

    try:
        for caption in backend.caption_stream(frames(), settings.generation):
            settle_markers()
            slot = pending.popleft()
            if not isinstance(slot, _Slot):
                raise RuntimeError("a caption came back with no frame waiting for it")
            committer.frame(slot.job, CaptionedFrame(slot.index, slot.pts, caption))
            progress.frame()
            settle_markers()
    except BackendUnavailable as exc:
        for item in list(pending):  # every video with frames in flight is recorded failed
            committer.fail(item.job, str(exc), warn=False)
        raise
    settle_markers()
    if pending:
        raise RuntimeError(f"the backend returned {len(pending)} captions too few")


class _Progress:
    """One line for the whole run: videos done/total, frames/s, ETA (tqdm, terminals only)."""

    def __init__(self, total: int, initial: int, quiet: bool) -> None:
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="video",
            desc="vidcap",
            disable=True if quiet else None,
            dynamic_ncols=True,
        )
        self.frames = 0
        self.started = time.monotonic()

    def frame(self) -> None:
        self.frames += 1

    def done(self, result: VideoResult) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.frames / elapsed:.1f} frames/s", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
