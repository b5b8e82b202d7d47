"""The streaming engine: decoder pool → one bounded frame queue → backend → commit.

One look at the whole flow::

    jobs = plan(sources)                      # resume: skip what is done (plan.py)
    pool = DecodePool(jobs)                   # N decoder processes, several videos at once,
                                              # each running decode.decode_events per video
    for item in _in_order(pool.events(),      # embedded replicas or --server endpoints,
                          backend):           # full batches across video boundaries
        deliver(committer, item)              # per-video outputs once its last frame is back

A frame's place in the stream is remembered in ``pending`` (job id, index, time; no
pixels), together with the decoders' other events — a reused caption (``--skip-similar``),
a scene (``--scenes``), the end of a video, a failure — in the order the decoders sent
them: since a backend returns captions in order, a video's marker is reached only after all
its frames are captioned, so it can be committed right there. A frame the backend could not
caption (``CaptionFailed``: a server failed its request past the retries, or the model
in-process raised on the frame even alone) fails its video alone, and that video's later
frames are not sent; only a backend that cannot caption at all (``BackendUnavailable``)
stops the run, every video in flight recorded failed; so do
``FAILING_VIDEOS_STOP`` videos in a row that got no caption, with none captioned between
them (``BackendFailing``: a server that answers but fails everything).
``deliver`` is the one routing to the ``Committer`` (the Ray pipeline uses it too);
``caption_video`` is the same stream for one video whose captions the caller consumes as
they come (the example clients, benches).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vidcap.backend import Backend, CaptionFailed
from vidcap.commit import Committer
from vidcap.decode import (
    Decoded,
    Ended,
    Event,
    Failed,
    Planned,
    Reused,
    SceneFound,
    Thumbnail,
    Warned,
)
from vidcap.decode_pool import DecodePool
from vidcap.errors import BackendUnavailable, VidcapError, VideoError
from vidcap.jobs import RunSettings, RunWriter, VideoResult
from vidcap.model import AUTO_BATCH_CUDA
from vidcap.out_lock import holding
from vidcap.outputs import CaptionedFrame
from vidcap.plan import plan
from vidcap.records import write_summary
from vidcap.report import refresh_report
from vidcap.settings import EngineSettings, GenerationSettings, SamplingSettings
from vidcap.terminal import logs_above

log = logging.getLogger(__name__)

QUEUE_FRAMES = 64  # decoded frames waiting for the backend in ``caption_video``
# Videos in a row that got no caption, with no frame captioned between them: the backend
# answers but fails everything (a server whose model is broken), so the run stops rather
# than fail every remaining video, each after its retries.
FAILING_VIDEOS_STOP = 16


class BackendFailing(BackendUnavailable):
    """The backend answered, but failed every frame of many videos in a row."""


class FailingStreak:
    """The videos in a row that got no caption, none captioned between them: at
    ``FAILING_VIDEOS_STOP`` the run stops (``BackendFailing``). The one rule for the
    engine's stream and Ray's output, told of each video's first frame without a caption
    and of each frame captioned."""

    def __init__(self) -> None:
        self.videos = 0

    def captioned(self) -> None:
        self.videos = 0

    def uncaptioned(self, reason: str) -> None:
        self.videos += 1
        if self.videos >= FAILING_VIDEOS_STOP:
            raise BackendFailing(
                f"stopped: the last {self.videos} videos got no caption, none captioned "
                f"between them, so the backend fails every frame (last: {reason}); a rerun "
                "resumes"
            )


@dataclass(frozen=True)
class Captioned:
    """A captioned frame of job ``job``: what comes back from the model stage; ``kept``:
    its caption is an interrupted run's (``vidcap.journal``), no model was sent it."""

    job: int
    frame: CaptionedFrame
    kept: bool = False


@dataclass(frozen=True)
class Uncaptioned:
    """Frame ``index`` (at ``time``) of job ``job`` got no caption: the video fails."""

    job: int
    index: int
    time: float
    reason: str


@dataclass(frozen=True)
class _Slot:
    job: int
    index: int
    time: float
    damaged: bool = False


Marker = Reused | Thumbnail | SceneFound | Ended | Failed | Warned
"""A decoder event that passes the model stage untouched, in its place among the frames."""


def deliver(committer: Committer, item: Captioned | Marker | Uncaptioned) -> None:
    """The one routing of the stages' output to the ``Committer`` (engine and Ray)."""
    if isinstance(item, Captioned):
        committer.frame(item.job, item.frame, item.kept)
    elif isinstance(item, Reused):
        committer.reuse(item.job, item.index, item.time, item.same_as)
    elif isinstance(item, Thumbnail):
        committer.thumbnail(item.job, item.index, item.jpeg)
    elif isinstance(item, SceneFound):
        committer.scene(item.job, item.scene)
    elif isinstance(item, Ended):
        committer.end(item.job, item.sampled, item.duration, item.scenes, item.lost, item.sha256)
    elif isinstance(item, Failed):
        committer.fail(item.job, item.error)
    elif isinstance(item, Uncaptioned):
        committer.uncaptioned(item.job, item.index, item.time, item.reason)
    elif isinstance(item, Warned):
        committer.warn(item.job, item.message)
    else:
        raise TypeError(f"nothing to deliver in {type(item).__name__}")


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
    model's ``input_size``, decoders start while it loads. A frame the backend could not
    caption fails its video only. When the backend is unavailable altogether (every server
    down after retries) the run stops at once: the videos begun are recorded failed, the
    summary written, and ``BackendUnavailable`` propagates; a rerun resumes. (Any other
    error stops the run the same way.)
    """
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    with holding(settings.out_dir):  # one run at a time in a folder
        return _run(
            sources, settings, backend_factory, engine or EngineSettings(), metadata,
            run_writers, input_size,
        )  # fmt: skip


def _run(
    sources: Sequence[str],
    settings: RunSettings,
    backend_factory: Callable[[], Backend],
    engine: EngineSettings,
    metadata: Sequence[dict] | None,
    run_writers: Sequence[RunWriter],
    input_size: tuple[int, int] | None,
) -> list[VideoResult]:
    started = time.monotonic()
    jobs, resumed = plan(sources, settings, metadata)
    for result in resumed:
        log.info("%s: already done, skipped", result.video)
    if not jobs:
        summary = write_summary(
            settings.out_dir, resumed, 0, time.monotonic() - started,
            {settings.key(): settings.keyed()},
        )  # fmt: skip
        refresh_report(settings.out_dir, summary)
        return list(resumed)

    # Few videos (all decoding at once): the progress line counts frames, against the
    # total the decoders announce (``Planned``).
    by_frames = len(jobs) <= engine.workers() and not settings.quiet

    def start_pool(size: tuple[int, int]) -> DecodePool:
        frames = engine.queue_frames(size, AUTO_BATCH_CUDA)
        work = [(job.id, job.source) for job in jobs]
        return DecodePool(
            work,
            settings.sampling,
            size,
            engine.workers(),
            frames,
            engine.decode_timeout,
            plans=by_frames,
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
    progress = _Progress(
        len(jobs) + len(resumed), len(resumed), settings.quiet, [job.id for job in jobs], by_frames
    )
    committer = Committer(settings, jobs, run_writers, on_done=progress.done)
    try:
        pool = pool or start_pool(backend.input_size)
        try:
            _caption(pool, backend, settings, committer, progress)
            committer.fail_unfinished()
        except Exception as exc:
            committer.fail_open(_why(exc))
            raise
        finally:
            pool.close()
    finally:
        backend.close()
        progress.close()
        results = committer.close(time.monotonic() - started, resumed)
        if not committer.folder_full:  # (else the run stops saying so; the rerun writes it)
            refresh_report(settings.out_dir, committer.summary)  # also after an interruption
    return results


def _caption(
    pool: DecodePool,
    backend: Backend,
    settings: RunSettings,
    committer: Committer,
    progress: _Progress,
) -> None:
    pending: deque[_Slot | Marker | Captioned] = deque()
    events = progress.plans(pool.events())
    try:
        for item in _in_order(events, backend, settings.generation, pending, committer.known):
            deliver(committer, item)
            progress.item(item)
    except Exception as exc:  # the run stops: every video with frames in flight is recorded
        for slot in list(pending):
            committer.fail(slot.job, _why(exc), warn=False)
        raise


def _why(exc: Exception) -> str:
    """An error that stopped the run, as each unfinished video's record gives it."""
    return str(exc) if isinstance(exc, VidcapError) else f"{type(exc).__name__}: {exc}"


def _in_order(
    events: Iterator[Event],
    backend: Backend,
    generation: GenerationSettings,
    pending: deque[_Slot | Marker | Captioned],
    known: Callable[[int, int, float], str | None] | None = None,
) -> Iterator[Captioned | Marker | Uncaptioned]:
    """The frames of ``events`` through ``backend``, back captioned in order, the other
    events in their places among them (each video's end or failure right after its last
    frame). ``pending``: what is in flight. A video's first frame without a caption comes
    back as ``Uncaptioned``; its frames decoded after that are not sent. ``known(job,
    index, time)``: a frame's caption made already (an interrupted run's journal), or
    None; such a frame goes to no backend and comes back, in its place, with it."""
    uncaptioned: set[int] = set()  # jobs with a frame the backend could not caption
    streak = FailingStreak()

    def frames() -> Iterator[np.ndarray]:
        for event in events:
            if isinstance(event, Decoded):
                if event.job in uncaptioned:
                    continue
                frame = event.frame
                caption = known(event.job, frame.index, frame.time) if known else None
                if caption is not None:
                    kept = CaptionedFrame(frame.index, frame.time, caption, damaged=frame.damaged)
                    pending.append(Captioned(event.job, kept, kept=True))
                    continue
                pending.append(_Slot(event.job, frame.index, frame.time, frame.damaged))
                yield event.frame.rgb
            elif not isinstance(event, Planned):  # (a plan is for progress lines only)
                pending.append(event)

    def markers() -> Iterator[Marker | Captioned]:  # what is before the next frame's slot
        while pending and not isinstance(pending[0], _Slot):
            yield pending.popleft()

    for caption in backend.caption_stream(frames(), generation):
        yield from markers()
        if not pending:
            raise RuntimeError("a caption came back with no frame waiting for it")
        slot = pending.popleft()
        if isinstance(caption, CaptionFailed):
            if slot.job not in uncaptioned:
                uncaptioned.add(slot.job)
                yield Uncaptioned(slot.job, slot.index, slot.time, caption.reason)
                streak.uncaptioned(caption.reason)
        else:
            streak.captioned()
            if slot.job not in uncaptioned:
                captioned = CaptionedFrame(slot.index, slot.time, caption, damaged=slot.damaged)
                yield Captioned(slot.job, captioned)
        yield from markers()
    yield from markers()
    if pending:
        raise RuntimeError(f"the backend returned {len(pending)} captions too few")


def caption_video(
    source: str | Path,
    backend: Backend,
    sampling: SamplingSettings,
    generation: GenerationSettings,
) -> Iterator[CaptionedFrame]:
    """Caption ``source``'s sampled frames in order (raises ``VideoError`` if undecodable).

    Decoding runs ahead in a decoder process, bounded, while the backend captions. A frame
    that reuses a caption (``sampling.skip_similar``) comes with it and its ``same_as``.
    """
    for name, value, kind in (("sampling", sampling, SamplingSettings),
                              ("generation", generation, GenerationSettings)):  # fmt: skip
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a {kind.__name__}, got {value!r}")
    pool = DecodePool([(0, str(source))], sampling, backend.input_size, 1, QUEUE_FRAMES)
    captions: dict[int, str] = {}  # (--skip-similar: a reused frame follows its captioned one)
    try:
        for item in _in_order(pool.events(), backend, generation, deque()):
            if isinstance(item, Failed):
                raise VideoError(item.error)
            if isinstance(item, Uncaptioned):
                raise VideoError(
                    f"{source}: no caption for frame {item.index} ({item.time:g} s): {item.reason}"
                )
            if isinstance(item, Captioned):
                if sampling.skip_similar is not None:
                    captions[item.frame.index] = item.frame.caption
                yield item.frame
            elif isinstance(item, Reused):
                yield CaptionedFrame(item.index, item.time, captions[item.same_as], item.same_as)
            elif isinstance(item, Warned):
                log.warning("%s", item.message)
    finally:
        pool.close()


class _Progress:
    """One line for the whole run (tqdm; on a terminal only, never with ``--quiet``).

    Many videos: the bar counts videos (done/total, ETA from videos), with the frames
    captioned and frames/s beside it. Few videos (``by_frames``: no more than there are
    decoder workers, so all decode at once): the bar counts frames against the total the
    decoders announce as each video opens (``Planned``, from the demux pass decoding
    needs anyway), with an ETA from frames, and videos done/total beside it; until every
    video has announced its count, frames and frames/s alone.

    Frames taken from a journal (an interrupted run's captions) count as done and are
    said apart ("(688 kept)"), never in a rate or ETA: they come back at decoding speed,
    and would promise the rest as fast.
    """

    REFRESH_S = 0.5  # the videos bar redraws its frame counts this often at most

    def __init__(
        self, total: int, initial: int, quiet: bool, jobs: Sequence[int], by_frames: bool
    ) -> None:
        self.videos, self.videos_done = total, initial
        self.by_frames = by_frames
        self.frames = 0
        self.kept = 0  # of ``frames``, taken from a journal: no model time, no rate
        self.started = self.shown = time.monotonic()
        # by frames only (few videos): per job, frames captioned and the count announced
        self.captioned = dict.fromkeys(jobs, 0) if by_frames else {}
        self.planned: dict[int, int | None] = {}
        self.ended: set[int] = set()
        bar_format = _FRAMES_SO_FAR if by_frames else _VIDEOS
        self.bar = tqdm(
            total=None if by_frames else total,
            initial=0 if by_frames else initial,
            desc="vidcap",
            disable=True if quiet else None,
            dynamic_ncols=True,
            bar_format=bar_format,
            smoothing=0,  # rates and ETA over the whole run
            postfix=self._postfix_text(),
        )
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(logs_above(self.bar))

    def plans(self, events: Iterator[Event]) -> Iterator[Event]:
        """``events`` with the ``Planned`` ones taken in here."""
        for event in events:
            if isinstance(event, Planned):
                self.planned[event.job] = event.samples
                self._retotal()
            else:
                yield event

    def item(self, item: Captioned | Marker) -> None:
        if isinstance(item, (SceneFound, Thumbnail, Warned)):
            return
        if isinstance(item, (Captioned, Reused)):
            self.frames += 1
            if isinstance(item, Captioned) and item.kept:
                self.kept += 1
                if self.by_frames and not self.bar.disable:  # (a disabled bar has none)
                    self.bar.initial += 1  # (tqdm's rate: frames past its initial)
            if self.by_frames:
                self.captioned[item.job] = self.captioned.get(item.job, 0) + 1
                if self.bar.total is not None and self.bar.n >= self.bar.total:
                    self._retotal()  # more frames than announced
                self._postfix()
                self.bar.update(1)
            elif time.monotonic() - self.shown >= self.REFRESH_S:
                self._postfix()
                self.bar.refresh()
                self.shown = time.monotonic()
        elif self.by_frames:  # a video's last frame is back: its count is now exact
            self.ended.add(item.job)
            self._retotal()

    def done(self, result: VideoResult) -> None:
        self.videos_done += 1
        self._postfix()
        if self.by_frames:
            self.bar.refresh()
        else:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self._redirect.close()

    def _rate(self) -> float:
        return (self.frames - self.kept) / max(time.monotonic() - self.started, 1e-9)

    def _postfix_text(self) -> str:
        kept = f" ({self.kept} kept)" if self.kept else ""
        if self.by_frames:
            rate = f"{self._rate():.1f} frames/s{kept}"
            return f"{rate}, {self.videos_done}/{self.videos} videos"
        return f"{self.frames} frames{kept}, {self._rate():.1f} frames/s"

    def _postfix(self) -> None:
        self.bar.set_postfix_str(self._postfix_text(), refresh=False)

    def _retotal(self) -> None:
        """The frame total, once every video left has announced its count."""
        total = 0
        for job, captioned in self.captioned.items():
            if job in self.ended:
                total += captioned
            elif (planned := self.planned.get(job)) is None:
                return
            else:
                total += max(planned, captioned)
        if total != self.bar.total:
            self.bar.total = total
            self.bar.bar_format = _FRAMES
            self.bar.refresh()


_VIDEOS = "{l_bar}{bar}| {n_fmt}/{total_fmt} videos [{elapsed}<{remaining}{postfix}]"
_FRAMES = "{l_bar}{bar}| {n_fmt}/{total_fmt} frames [{elapsed}<{remaining}{postfix}]"
_FRAMES_SO_FAR = "{desc}: {n_fmt} frames [{elapsed}{postfix}]"
