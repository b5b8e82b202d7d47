"""``vidcap export OUT --to fiftyone DIR``: an output folder in a format dataset tools import.

FiftyOne (``fiftyone.types.FiftyOneVideoLabelsDataset``; load it with
``fo.Dataset.from_dir(DIR, dataset_type=fo.types.FiftyOneVideoLabelsDataset)``)::

    DIR/manifest.json        {"type": "eta.core.datasets.LabeledVideoDataset",
                              "description": "...",
                              "index": [{"data": <video>, "labels": "labels/<name>.json"}]}
    DIR/labels/<name>.json   one ETA VideoLabels document per video
    DIR/data/<name><ext>     the videos, with ``copy_media`` only; else "data" is the
                             source's absolute path (FiftyOne joins it to DIR, which
                             leaves an absolute path as it is)

In a VideoLabels document, each sampled frame with a non-empty caption is a frame (FiftyOne
counts frames from 1: number = vidcap's decoder index + 1) with one categorical attribute
``caption``, which FiftyOne imports as the frame field ``caption`` (a ``Classification``).
A sampled frame whose picture may show decoding damage (the JSONL's ``"damaged": true``)
also has the categorical attribute ``damaged`` of value ``damaged``: the frame field
``damaged`` (a ``Classification`` labelled ``damaged``; absent on the other frames).
Time ranges are video events, imported as ``TemporalDetections`` in the sample field named
by the event: ``scenes`` (``<name>.scenes.jsonl``) and ``segments`` (the ``vidcap mask``
report ``<name>.mask.json``, and the moments of each ``queries`` item, labelled with what
was looked for). An event's support is the frame range [first, last] it covers, and its
``start``/``end`` in seconds travel as numeric attributes (attributes of the detection), and
on a segment with matching frames that may show decoding damage, their count as ``damaged``;
on a segment, ``found_by`` (categorical): ``mask`` (the report) or ``query``.
A video whose source is not a file here is exported with a warning (without ``copy_media``:
FiftyOne imports it and cannot open it here). An earlier export in ``target`` is replaced:
its labels and copies this export does not index are removed.
Failed videos and videos whose source is a URL (FiftyOne opens local files) are left out;
with ``copy_media``, so is a video whose source file is not the one captioned (its size or
modification time is not the record's): a folder from elsewhere may name any file; without
it, such a video is exported with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidcap import __version__, jsontext
from vidcap.errors import UsageError
from vidcap.folder import (
    SOURCE_CHANGED,
    Span,
    VideoRead,
    frame_rate,
    open_folder,
    read_captions,
    read_mask,
)
from vidcap.mask import DECIMALS, MaskSettings, compile_queries
from vidcap.outputs import CaptionedFrame, copy_atomic, write_atomic, write_json
from vidcap.regular import own_folder
from vidcap.search import video_moments

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DATASET_TYPE = "eta.core.datasets.LabeledVideoDataset"
CATEGORICAL = "eta.core.data.CategoricalAttribute"
NUMERIC = "eta.core.data.NumericAttribute"
EVENT = "eta.core.events.VideoEvent"
FORMATS = ("fiftyone",)
# A segment's ``found_by``: the ``vidcap mask`` report beside the captions, or a ``--query``
# of the export (the two may find the same moment: told apart, not counted twice unseen)
FOUND_BY_MASK, FOUND_BY_QUERY = "mask", "query"
# Of a frame interval: an end placed by the rate this little past where a frame begins is
# taken for that frame's start (times are rounded, and a rate between samples estimated).
PART_OF_A_FRAME = 0.05


@dataclass
class ExportStats:
    videos: int = 0
    frames: int = 0
    events: int = 0
    skipped: int = 0  # left out: those failed, and one warning line for each other
    failed: int = 0
    listed: int = 0  # the videos OUT lists


def export_fiftyone(
    out: Path | str,
    target: Path | str,
    queries: Sequence[str] = (),
    settings: MaskSettings | None = None,
    copy_media: bool = False,
) -> ExportStats:
    """Write ``out`` as a FiftyOneVideoLabelsDataset in ``target`` (new, empty, or an
    earlier export, which is replaced)."""
    out, target = Path(out), Path(target)
    settings = settings or MaskSettings()
    for query in queries:
        compile_queries([query], settings.regex)
    videos = open_folder(out)
    _check_target(target)
    labels_dir = target / "labels"
    own_folder(labels_dir)  # (its stale labels are removed: never in a link's target)
    if copy_media:
        own_folder(target / "data")
    stats = ExportStats()
    index = []
    written: set[str] = set()
    stats.listed = len(videos)
    for read in read_captions(videos):
        video = read.video
        if not video.done:  # (its error is in summary.json; counted in the last line)
            stats.skipped += 1
            stats.failed += 1
            continue
        if read.problem:
            log.warning("%s: not exported: %s", video.name, read.problem)
            stats.skipped += 1
            continue
        source = video.local_source()
        if source is None and (copy_media or "://" in video.video):
            log.warning(
                "%s: not exported: the source is not a file here (%s)", video.name, video.video
            )
            stats.skipped += 1
            continue
        if copy_media and video.captioned_file() is None:
            log.warning("%s: not exported: %s %s", video.name, source, SOURCE_CHANGED)
            stats.skipped += 1
            continue
        if source is None:  # (FiftyOne imports it, and cannot open it here)
            log.warning(
                "%s: exported, but its source is not a file here: %s", video.name, video.video
            )
        elif not copy_media and video.source_changed(source) is not None:
            log.warning(
                "%s: %s %s: exported, but its labels may not match it",
                video.name, source, SOURCE_CHANGED,
            )  # fmt: skip
        labels = video_labels(read, queries, settings)
        name = f"{video.name}.json"
        # (not fsynced one by one: at 10,000 videos that was half the export; one sync
        # before the manifest, which names them, is written)
        write_atomic(
            labels_dir / name, json.dumps(labels, ensure_ascii=False) + "\n", durable=False
        )
        written.add(name)
        if copy_media:
            assert source is not None
            data = f"data/{video.name}{source.suffix}"
            copy_atomic(source, target / data)
        else:
            data = str(source or Path(video.identity.get("path") or video.video).resolve())
        index.append({"data": data, "labels": f"labels/{name}"})
        stats.videos += 1
        stats.frames += len(labels["frames"])
        stats.events += len(labels["events"]["events"])
    for stale in labels_dir.glob("*.json"):
        if stale.name not in written:
            stale.unlink()
    _remove_stale_copies(target / "data", {item["data"] for item in index})
    manifest = {
        "type": DATASET_TYPE,
        "description": f"vidcap {__version__}: captions of {out.resolve()}",
        "index": index,
    }
    os.sync()  # (the labels and copies on disk before the manifest that names them)
    write_json(target / MANIFEST, manifest)
    return stats


def _remove_stale_copies(data: Path, kept: set[str]) -> None:
    """An earlier export's copies (``data/``) that this one does not index, removed: the
    folder is replaced, not added to (and ``data/`` itself where none is left)."""
    if not data.is_dir() or data.is_symlink():
        return
    for copy in data.iterdir():
        if f"data/{copy.name}" not in kept and (copy.is_file() or copy.is_symlink()):
            copy.unlink()
    if not any(data.iterdir()):
        data.rmdir()


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is a file; give a new or empty folder")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (target / MANIFEST).is_file():
        raise UsageError(f"{target} is not empty and holds no earlier export ({MANIFEST})")
    try:
        earlier = jsontext.loads((target / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not (isinstance(earlier, dict) and earlier.get("type") == DATASET_TYPE):
        raise UsageError(
            f"{target} holds a {MANIFEST} that is not an earlier export (a `vidcap clips` "
            "folder?): give a new or empty folder"
        )


def video_labels(read: VideoRead, queries: Sequence[str], settings: MaskSettings) -> dict:
    """One video's ETA VideoLabels document: captions (and damage) per frame, scenes and
    segments as events."""
    damaged = read.damaged()
    frames = {}
    for frame in read.frames:
        attrs = [{"type": CATEGORICAL, "name": "caption", "value": frame.caption}]
        if not frame.caption.strip():
            attrs = []  # an empty caption is no label
        if frame.index in damaged:
            attrs.append({"type": CATEGORICAL, "name": "damaged", "value": "damaged"})
        if attrs:
            number = frame.index + 1
            frames[str(number)] = {"frame_number": number, "attrs": {"attrs": attrs}}
    scenes = read.scenes
    # (a shot's bounds are known frames: a moment of whole shots is placed by them)
    known = [
        point
        for scene in scenes
        if scene.start_frame is not None and scene.end_frame is not None
        for point in ((scene.start, scene.start_frame), (scene.end, scene.end_frame))
    ]
    support = FrameSupport(read.frames, known)
    events = [_event("scenes", span, support) for span in scenes]
    mask = read_mask(read.video)
    if mask is not None:
        events += [
            _event("segments", span, support, mask.label, FOUND_BY_MASK) for span in mask.segments
        ]
    for query in queries:
        for moment in video_moments(read, [query], settings):
            span = Span(moment.start, moment.end, query, moment.frames, moment.damaged)
            events.append(_event("segments", span, support, query, FOUND_BY_QUERY))
    return {"frames": frames, "events": {"events": events}}


def _event(
    field: str,
    span: Span,
    support: FrameSupport,
    label: str | None = None,
    found_by: str | None = None,
) -> dict:
    if span.start_frame is not None and span.end_frame is not None:  # (a scene's own)
        first, last = span.start_frame + 1, span.end_frame
    else:
        first, last = support.span(span.start, span.end)
    attrs = [
        {"type": NUMERIC, "name": "start", "value": round(span.start, DECIMALS)},
        {"type": NUMERIC, "name": "end", "value": round(span.end, DECIMALS)},
    ]
    if span.damaged:
        attrs.append({"type": NUMERIC, "name": "damaged", "value": span.damaged})
    if found_by is not None:
        attrs.append({"type": CATEGORICAL, "name": "found_by", "value": found_by})
    return {
        "type": EVENT,
        "label": label if label is not None else span.label,
        "name": field,
        "support": {"ranges": f"{first}-{last}"},
        "attrs": {"attrs": attrs},
    }


def frame_support(
    frames: Sequence[CaptionedFrame],
    start: float,
    end: float,
    known: Sequence[tuple[float, int]] = (),
) -> tuple[int, int]:
    """The FiftyOne frame numbers [first, last] that [start, end) seconds cover
    (``FrameSupport``)."""
    return FrameSupport(frames, known).span(start, end)


class FrameSupport:
    """A video's frame numbers by time, worked out once for all its events (each event
    built them again: an export of a flickering query's 6,000 moments over 12,000 samples
    took 4 minutes).

    ``span(start, end)``: the FiftyOne frame numbers [first, last] (counted from 1) that
    [start, end) seconds cover: from the frame shown at ``start`` to the last frame that
    begins before ``end``. A time is placed by a frame known to show at it — a sampled
    frame, or ``known`` (time, index) points: the shots' bounds in a ``--scenes`` folder —
    when there is one, else from the nearest known frame before it by the frame rate the
    known frames around it show (its index + the seconds between × rate, never past the
    next known frame's index): frame times keep a late start (an MP4's first frame at 5 s
    is index 0), and a variable rate is placed by the stretch it is in, not by the whole
    video's. An ``end`` between frames counts every frame that begins before it: a
    video's last frame may last less than one interval (its duration is the muxer's guess:
    one nominal frame after a variable rate's slow stretch), and a segment that ends with
    the video still holds it."""

    def __init__(
        self, frames: Sequence[CaptionedFrame], known: Sequence[tuple[float, int]] = ()
    ) -> None:
        self.exact = {round(f.time, DECIMALS): f.index for f in frames}  # time → frame shown
        self.exact.update((round(time, DECIMALS), index) for time, index in known)
        self.keys = sorted(self.exact)
        self.ordered = [CaptionedFrame(self.exact[time], time, "") for time in self.keys]
        self.rate = frame_rate(self.ordered) if self.ordered else None

    def rate_between(self, after: int) -> float | None:
        """The frame rate around a time that falls before ``ordered[after]``: the one the two
        known frames on either side of it show (the first two, or last two, beyond them),
        else the rate all the known frames show."""
        low = min(max(after - 1, 0), len(self.ordered) - 2)
        if low >= 0:
            before, later = self.ordered[low], self.ordered[low + 1]
            if later.time > before.time and later.index > before.index:
                return (later.index - before.index) / (later.time - before.time)
        return self.rate

    def index_at(self, seconds: float, end: bool = False) -> int:
        """The index of the frame shown at ``seconds``; with ``end``, of the first frame
        that begins at or after it (the first one [.., seconds) does not cover)."""
        key = round(seconds, DECIMALS)
        if key in self.exact:
            return self.exact[key]
        ordered = self.ordered
        after = bisect_right(self.keys, key)
        rate = self.rate_between(after)
        later = ordered[after] if after < len(ordered) else None
        if after == 0:  # (before the first sample: back from it)
            assert later is not None
            step = round((later.time - seconds) * rate) if rate else 1
            return max(0, later.index - step)
        before = ordered[after - 1]
        frames = (seconds - before.time) * rate if rate else 1.0
        # (every frame that begins before an end; a hair's excess is no frame's)
        step = math.ceil(frames - PART_OF_A_FRAME) if end else round(frames)
        index = before.index + max(step, 0)
        return min(index, later.index) if later is not None else index

    def span(self, start: float, end: float) -> tuple[int, int]:
        if not self.exact:
            return 1, 1
        first = self.index_at(start) + 1
        return first, max(first, self.index_at(end, end=True))
