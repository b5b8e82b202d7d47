"""The commit stage: captions back from any backend → per-video outputs, resume records,
``summary.json``.

A video is committed (every output renamed from ``.part`` into place, then its resume
record written) once its decoder has said how many frames it sampled (and, with
``--scenes``, how many scenes it found) and that many captions (and scenes) are back.
Captions may arrive in any order and more than once (a retried Ray task): they are kept
per frame index, so each frame is written exactly once, in order. A frame that reused
another's caption (``--skip-similar``) takes it here, at commit time: the captioned frame
may come back after it.

Resume records (``vidcap.records``) live in ``OUT/.vidcap/<name>.json`` and hold the
settings key and the source's identity; which videos a run must do, and under which
names, ``vidcap.plan`` decides from them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vidcap import regular
from vidcap.errors import FOLDER_FULL, OutFolderFull, UsageError
from vidcap.inputs import SHA256, require_utf8_name
from vidcap.jobs import RunSettings, RunWriter, VideoJob, VideoResult
from vidcap.journal import (
    JOURNAL_AFTER,
    JOURNAL_DIR,
    MAX_OPEN,
    Journal,
    Kept,
    adopt_journals,
    drop_journal,
    header,
    journal_path,
    read_journal,
)
from vidcap.jsontext import storable
from vidcap.out_lock import LOCK_NAME
from vidcap.outputs import (
    STAGING_NAME,
    THUMBS_DIR,
    THUMBS_STAGING,
    CaptionedFrame,
    place_thumbnails,
    remove_video_outputs,
    stage_thumbnails,
    thumbs_folder,
    write_thumbnail,
    write_video_outputs,
)
from vidcap.records import (
    STATE_DIR,
    SUMMARY,
    identity_of,
    read_record,
    write_record,
    write_summary,
)
from vidcap.scenes import Scene
from vidcap.settings import joined_precisions
from vidcap.wording import counted

log = logging.getLogger(__name__)

SHOWN_WARNINGS = 20


class WarningLines:
    """A run's warnings about its videos (a video failed, a file cut off, frames lost): the
    first ``limit`` on lines of their own, then one line saying the rest are not shown, so
    a library with thousands of broken files does not bury the run in them. With ``-v``
    (INFO logging) every one. ``summary.json`` keeps each video's status and error."""

    def __init__(self, limit: int = SHOWN_WARNINGS) -> None:
        self.limit = limit
        self.count = 0  # warnings about videos, shown or not

    def show(self, message: str) -> None:
        self.count += 1
        if self.count <= self.limit or log.isEnabledFor(logging.INFO):
            log.warning("%s", message)
        elif self.count == self.limit + 1:
            log.warning(
                "more warnings about videos: not shown from here on (-v shows every one; "
                "summary.json holds each video's status and error)"
            )


@dataclass
class _Open:
    job: VideoJob
    started: float
    frames: dict[int, CaptionedFrame] = field(default_factory=dict)
    reused: dict[int, CaptionedFrame] = field(default_factory=dict)  # caption: not yet known
    scenes: dict[int, Scene] = field(default_factory=dict)
    thumbs: set[int] = field(default_factory=set)  # frame indices whose thumbnail is staged
    staged: Path | None = None  # the folder they are staged in (``stage_thumbnails``)
    journal: Journal | None = None  # its captions on disk as they come (``vidcap.journal``)
    unjournaled: list[CaptionedFrame] = field(default_factory=list)  # (until JOURNAL_AFTER)
    kept: int = 0  # frames whose caption came from an interrupted run's journal
    expected: int | None = None
    expected_scenes: int = 0
    duration: float = 0.0
    lost: int = 0  # frames the decoder could not decode

    def complete(self) -> bool:
        return (
            self.expected is not None
            and len(self.frames.keys() | self.reused.keys()) >= self.expected
            and len(self.scenes) >= self.expected_scenes
        )


class Committer:
    """Collects captions per video and commits each video once all its frames are back."""

    def __init__(
        self,
        settings: RunSettings,
        jobs: Sequence[VideoJob],
        run_writers: Sequence[RunWriter] = (),
        on_done: Any = None,
    ) -> None:
        self.settings = settings
        self.key = settings.key()
        self.jobs = {job.id: job for job in jobs}
        self._by_name = {job.name: job for job in jobs}
        self._finished: set[str] = set()  # names of videos done or failed in this run
        self._warned: set[tuple[int, str]] = set()  # decoder warnings shown (job, message)
        self.warnings = WarningLines()
        self.run_writers = list(run_writers)
        self.on_done = on_done  # called with each finished VideoResult (progress)
        self.results: list[VideoResult] = []
        self.new_frames = 0
        self._open: dict[int, _Open] = {}
        self._undurable: dict[int, VideoResult] = {}
        self._sha256: dict[int, str] = {}  # job id → its file's SHA-256, for its record
        self.summary: dict | None = None  # summary.json as close() wrote it
        # The output folder took no more (full, over quota, read-only): the run stops with
        # one line (``_full``), and what cannot be written after it is not warned about.
        self.folder_full = False
        regular.own_folder(settings.out_dir / STATE_DIR)
        # (to tell the folder was removed mid-run: its run lock, held from before, gone)
        self._lock = settings.out_dir / STATE_DIR / LOCK_NAME
        self._locked = self._lock.exists()
        self._staging = thumbs_staging(settings.out_dir)
        shutil.rmtree(self._staging, ignore_errors=True)  # (what a killed run left staged)
        self._kept = self._read_journals(jobs)
        self._writing: OrderedDict[int, Journal] = OrderedDict()  # open files, oldest first

    def _header(self, job: VideoJob) -> dict[str, Any]:
        return header(self.key, self.settings.revision, job.identity, self.settings.precision)

    def _journal_path(self, name: str) -> Path:
        return journal_path(self.settings.out_dir / STATE_DIR, name)

    def _read_journals(self, jobs: Sequence[VideoJob]) -> dict[int, Kept]:
        """The captions interrupted runs made of ``jobs`` (with these settings, of these
        sources), by job id: the journal folder listed once, only journals read."""
        folder = self.settings.out_dir / STATE_DIR / JOURNAL_DIR
        try:
            names = {p.name for p in folder.iterdir()}
        except OSError:
            return {}
        kept: dict[int, Kept] = {}
        for job in jobs:
            path = self._journal_path(job.name)
            if path.name in names and (journal := read_journal(path, self._header(job))):
                kept[job.id] = journal
        wanted = {self._journal_path(job.name): job for job in jobs if job.id not in kept}
        unclaimed = names - {self._journal_path(job.name).name for job in jobs}
        if wanted and unclaimed:  # (a journal under another name: ``adopt_journals``)
            headers = {target: self._header(job) for target, job in wanted.items()}
            for target, journal in adopt_journals(folder, unclaimed, headers).items():
                kept[wanted[target].id] = journal
        for job in jobs:
            if (journal := kept.get(job.id)) is not None:
                log.info(
                    "%s: goes on from an interrupted run: %s kept%s",
                    job.shown, counted(len(journal.captions), "caption"),
                    "" if journal.moved_from is None else
                    f" (of the same file at {journal.moved_from}, gone from there since)",
                )  # fmt: skip
        return kept

    def journaled(self, job_id: int) -> list[tuple[int, float]]:
        """The frames (index, time) of this job whose captions a stopped run journaled."""
        kept = self._kept.get(job_id)
        return [] if kept is None else [(i, t) for i, (t, _) in kept.captions.items()]

    def known(self, job_id: int, index: int, time: float) -> str | None:
        """The caption an interrupted run made of frame ``index`` (at ``time``) of this
        job, if its journal holds one: the engine sends that frame to no model."""
        kept = self._kept.get(job_id)
        found = kept.captions.get(index) if kept is not None else None
        return found[1] if found is not None and found[0] == time else None

    def _state(self, job_id: int) -> _Open | None:
        if job_id not in self.jobs or self.jobs[job_id].name in self._finished:
            return None  # finished already (a duplicate from a retried task)
        if job_id not in self._open:
            self._open[job_id] = _Open(self.jobs[job_id], time.monotonic())
        return self._open[job_id]

    def frame(self, job_id: int, frame: CaptionedFrame, kept: bool = False) -> None:
        """A frame's caption; ``kept``: from this video's journal (``known``), so not
        written to it again."""
        state = self._state(job_id)
        if state is None:
            return
        state.frames[frame.index] = frame
        if kept:
            state.kept += 1
        else:
            state.unjournaled.append(frame)
            try:
                self._journal(state)
            except OSError as exc:
                del self._open[job_id]
                self._unwritable(state, exc)
                return
        self._maybe_commit(state)

    def _journal(self, state: _Open, now: bool = False) -> None:
        """The captions not yet in the video's journal into it, once it has one: from its
        ``JOURNAL_AFTER``-th caption, at once where an interrupted run began it, or ``now``."""
        kept = self._kept.get(state.job.id)
        if state.journal is None:
            if not now and kept is None and len(state.unjournaled) < JOURNAL_AFTER:
                return
            path = self._journal_path(state.job.name)
            state.journal = Journal(path, self._header(state.job), kept)
        for frame in state.unjournaled:
            state.journal.add(frame)
        state.unjournaled.clear()
        self._writing[state.job.id] = state.journal
        self._writing.move_to_end(state.job.id)
        while len(self._writing) > MAX_OPEN:
            self._writing.popitem(last=False)[1].suspend()

    def reuse(self, job_id: int, index: int, time: float, same_as: int) -> None:
        """Frame ``index`` takes the caption of frame ``same_as`` (``--skip-similar``)."""
        state = self._state(job_id)
        if state is None:
            return
        state.reused[index] = CaptionedFrame(index, time, "", same_as)
        self._maybe_commit(state)

    def thumbnail(self, job_id: int, index: int, jpeg: bytes) -> None:
        """The decoder's thumbnail of sample ``index``: staged on disk at once (none waits
        in memory: a long video sampled at every frame makes hundreds of thousands), put in
        place with the video's outputs."""
        state = self._state(job_id)
        if state is None:
            return
        try:
            if state.staged is None:
                state.staged = stage_thumbnails(self._staging, state.job.name)
            write_thumbnail(state.staged, index, jpeg)
        except OSError as exc:
            del self._open[job_id]
            self._unwritable(state, exc)
            return
        state.thumbs.add(index)

    def scene(self, job_id: int, scene: Scene) -> None:
        """The decoder found ``scene`` (``--scenes``)."""
        state = self._state(job_id)
        if state is None:
            return
        state.scenes[scene.number] = scene
        self._maybe_commit(state)

    def end(
        self,
        job_id: int,
        sampled_frames: int,
        duration: float,
        scenes: int = 0,
        lost: int = 0,
        sha256: str = "",
    ) -> None:
        """The decoder sampled ``sampled_frames`` frames of this video (and found ``scenes``
        scenes), which ends at ``duration``; ``lost`` frames of it could not be decoded;
        ``sha256``: the file's digest, kept in its record (``inputs.same_source``)."""
        state = self._state(job_id)
        if state is None:
            return
        if sha256:
            self._sha256[job_id] = sha256
        state.expected = sampled_frames
        state.expected_scenes = scenes
        state.duration = duration
        state.lost = lost
        self._maybe_commit(state)

    def warn(self, job_id: int, message: str) -> None:
        """A decoder's warning about this video (a cut-off file, frames lost): shown once,
        though a Ray task decoding the video again sends it again."""
        state = self._state(job_id)
        if state is not None and (job_id, message) not in self._warned:
            self._warned.add((job_id, message))
            self.warnings.show(message)

    def fail(self, job_id: int, error: str, warn: bool = True) -> None:
        state = self._state(job_id)
        if state is None:
            return
        del self._open[job_id]
        if warn:
            self.warnings.show(f"failed: {error}")
        self._unstage(state)
        self._stop_if_gone()
        result = self._result(state, "failed", error)
        self._record_if_possible(result)
        self._finish(result)

    def uncaptioned(self, job_id: int, index: int, time: float, reason: str) -> None:
        """Frame ``index`` got no caption (the backend failed it): the video fails, saying so."""
        job = self.jobs.get(job_id)
        if job is not None:
            self.fail(job_id, f"{job.shown}: no caption for frame {index} ({time:g} s): {reason}")

    def fail_unfinished(self) -> None:
        """After the stream ended: a video still open lost frames on the way (it never
        commits by itself); it fails, saying so, rather than vanishing from the run."""
        for job_id, state in list(self._open.items()):
            if state.expected is None:
                why = "the decoder never said the video ended"
            else:
                back = len(state.frames.keys() | state.reused.keys())
                why = f"{back} of the {state.expected} sampled frames came back"
            self.fail(job_id, f"{state.job.shown}: {why}")

    def fail_open(self, error: str) -> None:
        """Fail every video begun but not finished (the backend went away)."""
        for job_id in list(self._open):
            self.fail(job_id, error, warn=False)  # the run's own error line says why

    def _result(
        self, state: _Open, status: str, error: str | None = None, frames: int = 0
    ) -> VideoResult:
        sampling = self.settings.sampling
        done = status == "done"
        damaged = sorted(index for index, frame in state.frames.items() if frame.damaged)
        return VideoResult(
            video=state.job.shown,
            name=state.job.name,
            status=status,
            error=error,
            frames=frames if done else 0,
            duration=round(state.duration, 6),
            seconds=round(time.monotonic() - state.started, 3),
            key=self.key,
            model=self.settings.model,
            revision=self.settings.revision or None,
            precision=self._precision(state, say=done) or None,
            reused=len(state.reused) if done and sampling.skip_similar is not None else None,
            scenes=len(state.scenes) if done and sampling.scenes else None,
            thumbs=len(state.thumbs) if done and state.thumbs else None,
            lost_frames=state.lost if done and state.lost else None,
            damaged_frames=damaged if done and damaged else None,
            kept_frames=state.kept if done and state.kept else None,
        )

    def _precision(self, state: _Open, say: bool) -> str:
        """What a video's captions were made in: this run's precision, joined with its
        journal's where captions were kept from one made in another (``""``: unknown);
        ``say``: in a line, where they differ."""
        kept = self._kept.get(state.job.id)
        if not state.kept or kept is None or kept.precision == self.settings.precision:
            return self.settings.precision
        both = joined_precisions(kept.precision, self.settings.precision)
        if both and say:
            log.warning(
                "%s: %s kept from an interrupted run were made in %s, the others in %s: its "
                "record names both (the same wording in both is not assured)", state.job.shown,
                counted(state.kept, "caption"), kept.precision, self.settings.precision,
            )  # fmt: skip
        return both

    def _resolved(self, state: _Open) -> list[CaptionedFrame] | str:
        """Every sampled frame in order, reused ones with their caption; or why not."""
        frames = dict(state.frames)
        for index, frame in state.reused.items():
            if index in frames:
                continue  # (captioned after all: a duplicate event from a retried task)
            source = state.frames.get(frame.same_as)
            if source is None:
                return f"frame {index} reuses the caption of frame {frame.same_as}, never captioned"
            frames[index] = replace(frame, caption=source.caption)
        # (a server's caption holding a lone surrogate, "\ud800", no UTF-8 file can hold:
        # it failed the write of this video's outputs, and a rerun from its journal again)
        return [_storable(frames[i]) for i in sorted(frames)]

    def _maybe_commit(self, state: _Open) -> None:
        if not state.complete():
            return
        del self._open[state.job.id]
        frames = self._resolved(state)
        if isinstance(frames, str):
            result = self._result(state, "failed", f"{state.job.shown}: {frames}")
            self.warnings.show(f"failed: {result.error}")
            self._unstage(state)
            self._record_if_possible(result)
            self._finish(result)
            return
        scenes = (
            [state.scenes[n] for n in sorted(state.scenes)]
            if self.settings.sampling.scenes
            else None
        )
        base = self.settings.out_dir / state.job.name
        self._check_folder()
        try:
            # (none this time, e.g. --no-thumbs: an earlier run's would belong to other frames)
            place_thumbnails(thumbs_folder(self.settings.out_dir, state.job.name), state.staged)
            write_video_outputs(
                base,
                state.job.shown,
                frames,
                state.duration,
                self.settings.video_formats(),
                scenes,
                same_as=self.settings.sampling.skip_similar is not None,
            )
        except (OSError, ValueError) as exc:  # (ValueError: text no file format can hold)
            self._unwritable(state, exc)
            return
        self._close_journal(state)  # (removed once the record is written: ``_record``)
        result = self._result(state, "done", frames=len(frames))
        # (captions kept from an interrupted run's journal are no new frames: not in the
        # run's frames nor its frames/s)
        self.new_frames += result.frames - (result.kept_frames or 0)
        durable = [state.job.id]
        self._undurable[state.job.id] = result
        for writer in self.run_writers:
            durable = writer.add(state.job, frames, scenes or ())
        self._settle(durable if self.run_writers else [state.job.id])
        self._finish(result)

    def _unwritable(self, state: _Open, exc: OSError | ValueError) -> None:
        """Video ``state`` (no longer open) fails: an output of it cannot be written. A
        folder that takes nothing more stops the run."""
        self._unstage(state)
        self._stop_if_gone()  # (a thumbnail or journal with nowhere to go: the folder went)
        result = self._result(state, "failed", f"cannot write outputs: {exc}")
        self._record_if_possible(result)
        self._finish(result)
        if isinstance(exc, OSError) and exc.errno in FOLDER_FULL:
            raise self._full(exc) from None

    def _unstage(self, state: _Open) -> None:
        """A failed video's staged thumbnails go; its journal is kept, for the rerun. So do
        the outputs an earlier run made of another file at its path, or with other
        settings (``_outdated``): its record now vouches for none, and the page played
        their subtitles over the file as it is. Outputs of these bytes and settings (a
        video redone for an output missing, failing for a server or a timeout) stay."""
        if state.staged is not None:
            shutil.rmtree(state.staged, ignore_errors=True)
        self._keep_journal(state)
        if not self._outdated(state.job):
            return
        try:
            removed = [r for writer in self.run_writers for r in writer.remove(state.job)]
            removed += remove_video_outputs(self.settings.out_dir, state.job.name)
        except OSError as exc:
            removed = []
            log.warning("%s: its earlier outputs could not be removed: %s", state.job.shown, exc)
        if removed:
            self.warnings.show(
                f"{state.job.shown}: the outputs of its earlier captioning are removed "
                f"({', '.join(removed[:3])}{', …' if len(removed) > 3 else ''}): they were of "
                "other bytes or settings"
            )

    def _outdated(self, job: VideoJob) -> bool:
        """Are the outputs an earlier run made under ``job``'s name (its record, still the
        earlier one's) of another file or other settings than this run's?"""
        record = read_record(self.settings.out_dir, job.name)
        if record is None or record.get("result", {}).get("status") != "done":
            return False
        recorded = {k: v for k, v in (identity_of(record) or {}).items() if k != SHA256}
        return record.get("key") != self.key or recorded != job.identity

    def _keep_journal(self, state: _Open) -> None:
        """The journal of a video left unfinished (failed, or the run stops), with every
        caption it has, closed."""
        if state.unjournaled:
            with contextlib.suppress(OSError):  # (a full disk: lost, as with a kill)
                self._journal(state, now=True)
        self._close_journal(state)

    def _close_journal(self, state: _Open) -> None:
        if state.journal is not None:
            self._writing.pop(state.job.id, None)
            with contextlib.suppress(OSError):
                state.journal.close()
            state.journal = None

    def _settle(self, durable: Sequence[int]) -> None:
        for job_id in durable:
            result = self._undurable.pop(job_id, None)
            if result is not None:
                self._record(result)

    def _record(self, result: VideoResult) -> None:
        job = self._by_name[result.name]
        identity = job.identity
        if result.status == "done" and (sha256 := self._sha256.get(job.id)):
            identity = {**identity, SHA256: sha256}
        try:
            write_record(
                self.settings.out_dir, job.name, self.key, identity, result.record(), job.metadata
            )
        except OSError as exc:
            if exc.errno in FOLDER_FULL:
                raise self._full(exc) from None
            raise
        if result.status == "done":  # (a failed video keeps it, for the rerun)
            drop_journal(self._journal_path(job.name))

    def _check_folder(self) -> None:
        """The output folder must be the one the run began in: removed mid-run (``rm -rf
        OUT``), its outputs, records and lock went with it, and writing on (a
        folder made again by the next video's outputs) would leave a summary counting
        videos whose files are not there. The run stops, saying so."""
        if not self._folder_gone():
            return
        self.folder_full = True  # (nothing more is written there: summary, page)
        raise OutFolderFull(
            f"stopped: the output folder {self.settings.out_dir} was removed while the run "
            "wrote in it, with what the run had written there: rerun the same command to "
            "begin again"
        )

    def _stop_if_gone(self) -> None:
        """Before a failed video's record: a folder removed mid-run stops the run here too,
        not at the next commit only (the record would be the folder's only file). Once the
        run stops for its folder, the videos it leaves are recorded where possible."""
        if not self.folder_full:
            self._check_folder()

    def _folder_gone(self) -> bool:
        """Is the output folder not the one the run began in: its ``.vidcap`` gone, or the
        run lock it held (``out_lock``) — a folder made again by later outputs has neither
        the lock nor the records. (Not by the folder's inode: FUSE mounts may renumber it.)"""
        state = self.settings.out_dir / STATE_DIR
        return not state.is_dir() or (self._locked and not self._lock.exists())

    def _full(self, exc: OSError) -> OutFolderFull:
        self.folder_full = True
        fix = "make it writable" if exc.errno == errno.EROFS else "make room"
        return OutFolderFull(
            f"stopped: cannot write outputs in {self.settings.out_dir} ({exc.strerror}); the "
            f"videos done are kept: {fix} and rerun the same command to resume"
        )

    def _record_if_possible(self, result: VideoResult) -> None:
        """A failed video's record, unless the folder cannot take it (full): a video
        without a record is redone by a rerun all the same (this run's totals count it)."""
        try:
            self._record(result)
        except OutFolderFull:  # (the run's own error says why: not a line of its own)
            log.info("%s: its failure not recorded: the output folder takes no more", result.name)
        except OSError as exc:
            # (once the folder took no more, or went, the run's own error says why)
            (log.info if self.folder_full else log.warning)(
                "%s: its failure not recorded: %s", result.name, exc
            )

    def _finish(self, result: VideoResult) -> None:
        self.results.append(result)
        self._finished.add(result.name)
        self._kept.pop(self._by_name[result.name].id, None)
        if self.on_done is not None:
            self.on_done(result)

    def close(self, seconds: float, resumed: Sequence[VideoResult] = ()) -> list[VideoResult]:
        """Make run-level outputs durable, write ``summary.json``; every result of the run."""
        for state in self._open.values():  # (a stopped run: their journals stay)
            self._keep_journal(state)
        for writer in self.run_writers:
            self._settle(writer.close())
        results = list(resumed) + self.results
        if self.folder_full and self._folder_gone():
            return results  # (removed mid-run: nothing is written into another one)
        if self._staging.name == STAGING_NAME:  # (in OUT/thumbs: none left in sight)
            with contextlib.suppress(OSError):
                self._staging.rmdir()
        try:
            self.summary = write_summary(
                self.settings.out_dir, results, self.new_frames, seconds,
                {self.key: self.settings.keyed()},
            )  # fmt: skip
        except OSError as exc:
            if exc.errno not in FOLDER_FULL:
                raise
            # (the run's own error says the folder is full; a rerun writes the summary)
            self.folder_full = True
            log.info("%s not written: %s", self.settings.out_dir / "summary.json", exc)
        return results


def thumbs_staging(out_dir: Path) -> Path:
    """Where a run stages thumbnails: ``OUT/.vidcap/thumbs``. Where ``OUT/thumbs`` is on
    another file system (a link to a bigger disk, a mount), a rename from there cannot put
    a set in place (``EXDEV``: every video failed), so they are staged in
    ``OUT/thumbs/.vidcap-staging`` (``STAGING_NAME``, a name no video is given)."""
    staging, thumbs = out_dir / STATE_DIR / THUMBS_STAGING, out_dir / THUMBS_DIR
    try:  # (no OUT/thumbs yet: it is made in OUT; OUT/.vidcap may be the link)
        device = (thumbs if thumbs.exists() else out_dir).stat().st_dev
        elsewhere = device != staging.parent.stat().st_dev
    except OSError:
        return staging
    return thumbs / STAGING_NAME if elsewhere else staging


def check_out_dir(out_dir: Path) -> None:
    """``--out`` must be a folder this process can write (created if missing): one line,
    not a traceback, when it cannot be (nor a name that is not UTF-8: outputs name it)."""
    require_utf8_name(out_dir, "--out")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a folder")
    for name in (SUMMARY, "index.html"):  # (written at the end: said before any work)
        if (out_dir / name).is_dir() and not (out_dir / name).is_symlink():
            raise UsageError(
                f"--out {out_dir}: {name} there is a folder, where the run writes its own "
                f"{name}: move it"
            )
    try:
        regular.own_folder(out_dir / STATE_DIR)
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK) or not os.access(out_dir / STATE_DIR, os.W_OK):
        raise UsageError(f"--out {out_dir}: the folder is not writable")


def _storable(frame: CaptionedFrame) -> CaptionedFrame:
    """``frame`` with a caption a UTF-8 file can hold (``jsontext.storable``)."""
    caption = storable(frame.caption)
    return frame if caption is frame.caption else replace(frame, caption=caption)
