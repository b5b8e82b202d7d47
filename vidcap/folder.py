"""An output folder read back as a whole: what ``vidcap report``, ``search`` and ``export`` see.

- its videos: every resume record in ``OUT/.vidcap/`` (the freshest truth: a run killed
  before it rewrote ``summary.json`` still left a record per finished video), or, in a
  folder copied without its hidden ``.vidcap/``, the videos ``summary.json`` lists;
- their captions, one video at a time (memory stays flat whatever the folder's size): from
  ``<name>.jsonl``, or from the Parquet shards (``OUT/parquet/``) for videos without one,
  matched on the output name (in shards from before the ``name`` column: the source) and
  the settings key of the video's record;
- beside them, where they exist: ``<name>.scenes.jsonl``, ``<name>.mask.json`` (a ``vidcap
  mask`` report saved beside the captions) and ``thumbs/<name>/<frame:06d>.jpg``.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidcap import jsontext, regular
from vidcap.errors import UsageError
from vidcap.inputs import is_url, same_source, source_identity
from vidcap.mask import frame_ends, is_number, load_captions
from vidcap.outputs import CaptionedFrame, is_output_name
from vidcap.records import STATE_DIR, SUMMARY, current_summary, identity_of, read_record
from vidcap.regular import is_regular
from vidcap.wording import counted

log = logging.getLogger(__name__)

THUMBS_DIR = "thumbs"
SHARD_DIR = "parquet"  # vidcap.parquet.SHARD_DIR, without importing pyarrow's user
SCENES_SUFFIX = ".scenes.jsonl"
MASK_SUFFIX = ".mask.json"
# said after a source's path, where it is not the file captioned
SOURCE_CHANGED = (
    "is not the file captioned: its size or modification time is not the record's (edited "
    "since, or copied without its times)"
)


@dataclass(frozen=True, eq=False)
class FolderVideo:
    """One video of an output folder, as its resume record (or ``summary.json``) tells it.

    ``video``: the source as given to ``vidcap caption``; ``name``: its output base name;
    ``duration``: the end of its last decodable frame (0 when unknown); ``lost_frames``:
    frames its decoder could not decode (a corrupt or truncated file); ``damaged_frames``:
    the decoder indices of its samples that may show decoding damage, in order.
    """

    folder: Path
    name: str
    video: str
    status: str
    error: str | None = None
    frames: int = 0
    duration: float = 0.0
    key: str = ""
    model: str = ""
    identity: dict[str, Any] = field(default_factory=dict)
    lost_frames: int = 0
    damaged_frames: tuple[int, ...] = ()

    @property
    def done(self) -> bool:
        return self.status == "done"

    def output(self, suffix: str) -> Path:
        """``OUT/<name><suffix>``, e.g. ``output(".jsonl")``."""
        return self.folder / f"{self.name}{suffix}"

    def local_source(self) -> Path | None:
        """The source video as a file on this machine, when it is one and is still there."""
        if is_url(self.video):
            return None
        path = Path(self.identity.get("path") or self.video.removeprefix("file://"))
        return path if path.is_file() else None

    def captioned_file(self) -> Path | None:
        """``local_source``, only if it is the very file captioned: its identity
        (``inputs.source_identity``: path, size, modification time) the one its record
        holds, as resume requires. A record from elsewhere may name any file (a key, a
        password store) as its source; a file changed since would not match its captions."""
        path = self.local_source()
        return path if path is not None and self._is_captioned(path) else None

    def source_changed(self, path: Path | None = None) -> Path | None:
        """``local_source`` (``path``, where the caller has it) when it may not show what
        was captioned: its size or modification time is not the one its record holds
        (edited since, or copied without its times). None when they are, or there is no
        local source or identity to compare (a folder from before records held one)."""
        path = path or self.local_source()
        if path is None or "size" not in self.identity or self._is_captioned(path):
            return None
        return path

    def _is_captioned(self, path: Path) -> bool:
        try:
            return same_source(self.identity, source_identity(str(path)), by_content=False)
        except OSError:
            return False


@dataclass(frozen=True, eq=False)
class VideoRead:
    """A video and what the folder holds of its captions; ``problem`` says why none were read;
    ``unread``: lines of a caption file that ``read_captions``' ``prefilter`` ruled out."""

    video: FolderVideo
    frames: tuple[CaptionedFrame, ...] = ()
    problem: str | None = None
    unread: int = 0

    @property
    def times(self) -> list[float]:
        return [frame.time for frame in self.frames]

    def damaged(self) -> set[int]:
        """The decoder indices of the frames that may show decoding damage: marked in the
        video's record (``damaged_frames``) or on the rows read (``"damaged": true``)."""
        return set(self.video.damaged_frames) | {f.index for f in self.frames if f.damaged}

    @functools.cached_property
    def scenes(self) -> list[Span]:
        """``read_scenes`` of the video, read once (the search, the export and the page
        each ask for them)."""
        return read_scenes(self.video)

    def shots(self) -> list[tuple[float, float]]:
        """The video's shots, [start, end) each, when it was captioned ``--scenes``: its
        samples cover their part of their shot (``vidcap.mask.frame_spans``)."""
        return [(span.start, span.end) for span in self.scenes]

    def segment_duration(self) -> float | None:
        """Where the last frame's coverage ends, for ``vidcap.mask.segments``: the video's
        duration when the folder knows it, else what ``vidcap mask`` infers (the last
        time plus the median frame interval), else (one distinct time) a second after it."""
        times = self.times
        if not times:
            return None
        known = self.video.duration
        if is_number(known) and known > 0 and known >= times[-1]:
            return float(known)
        if len(set(times)) > 1:
            return frame_ends(times)[-1]
        return times[-1] + 1.0


# --- the videos -----------------------------------------------------------------------


def open_folder(out: Path | str, summary: Mapping[str, Any] | None = None) -> list[FolderVideo]:
    """Every video ``out`` holds a record of, by output name; a usage error when ``out`` is
    not an output folder. ``summary``: what ``write_summary`` has just written from those
    records (the end of a run), taken instead of reading every record again."""
    out = Path(out)
    if summary is not None:
        return _from_summary(out, summary.get("videos"))
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder (give a `vidcap caption --out` folder)")
    if not out.is_dir():
        raise UsageError(f"{out}: no such folder (give a `vidcap caption --out` folder)")
    state, listed = out / STATE_DIR, out / SUMMARY
    if not state.is_dir() and not listed.is_file():
        raise UsageError(
            f"{out} is not a vidcap output folder: it has neither {SUMMARY} nor {STATE_DIR}/"
        )
    current = current_summary(out)  # every record as it is, in one file
    if current is not None:
        return _from_summary(out, current)
    videos: dict[str, FolderVideo] = {}
    for path in sorted(state.glob("*.json")) if state.is_dir() else ():
        record = read_record(out, path.stem)
        result = record.get("result") if record else None
        if isinstance(result, dict):
            videos[path.stem] = _video(out, path.stem, result, identity_of(record))
    if videos:
        return [videos[name] for name in sorted(videos)]
    try:  # a folder copied without its .vidcap/: what summary.json lists
        data = jsontext.loads(regular.read_text(listed))
    except (OSError, ValueError) as exc:
        if listed.exists():  # (no records and no summary: a run that has committed nothing)
            log.warning("%s cannot be read (%s): no video of it is listed", listed, exc)
        return []
    entries = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(entries, list):  # (JSON, but not a summary: a list, another tool's)
        log.warning("%s is no vidcap summary (no list of videos): no video of it is listed", listed)
        return []
    return _from_summary(out, entries)


def _from_summary(out: Path, entries: object) -> list[FolderVideo]:
    """The videos a ``summary.json``'s ``"videos"`` list names, by output name; a name that
    is no output name (``../x``, ``/etc/x``: a folder from elsewhere may hold anything) is
    passed over with a warning, never joined to a path."""
    videos: dict[str, FolderVideo] = {}
    for entry in entries if isinstance(entries, list) else ():
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name and not is_output_name(name):
            log.warning("%s: passed over a video named %r: not an output name", out, name)
        elif isinstance(name, str) and name and name not in videos:
            videos[name] = _video(out, name, entry, entry.get("identity"))
    return [videos[name] for name in sorted(videos)]


def _video(out: Path, name: str, result: dict, identity: object) -> FolderVideo:
    def number(key: str) -> float:
        value = result.get(key)
        return float(value) if is_number(value) and value >= 0 else 0.0

    error = result.get("error")
    return FolderVideo(
        folder=out,
        name=name,
        video=str(result.get("video") or name),
        status="done" if result.get("status") == "done" else "failed",
        error=str(error) if error is not None else None,
        frames=int(number("frames")),
        duration=number("duration"),
        key=str(result.get("key") or ""),
        model=str(result.get("model") or ""),
        identity=identity if isinstance(identity, dict) else {},
        lost_frames=int(number("lost_frames")),
        damaged_frames=_indices(result.get("damaged_frames")),
    )


def _indices(value: object) -> tuple[int, ...]:
    """A record's list of frame indices, sorted; anything else (an older record, a hand
    edit) as none."""
    if not isinstance(value, list):
        return ()
    return tuple(sorted({i for i in value if type(i) is int and i >= 0}))


# --- their captions --------------------------------------------------------------------


def read_captions(
    videos: Sequence[FolderVideo], prefilter: Callable[[str], bool] | None = None
) -> Iterator[VideoRead]:
    """Each video with its captions, one at a time: first every video with a ``.jsonl`` (in
    the order given), then those read from the Parquet shards (in shard order), then those
    with neither. A failed video comes with no captions.

    ``prefilter(text)``: False when no caption in a JSONL file's text can matter, so the
    file is not parsed (asked only of files without JSON escapes, in which every caption
    stands as it is)."""
    from_parquet: list[FolderVideo] = []
    for video in videos:
        if not video.done:
            yield VideoRead(video)
            continue
        path = video.output(".jsonl")
        if path.is_file():
            yield _read_jsonl(video, path, prefilter)
        else:
            from_parquet.append(video)
    by_folder: dict[Path, list[FolderVideo]] = {}
    for video in from_parquet:
        by_folder.setdefault(video.folder, []).append(video)
    for folder, wanted in by_folder.items():
        yield from _read_parquet(folder, wanted)


def _read_jsonl(
    video: FolderVideo, path: Path, prefilter: Callable[[str], bool] | None = None
) -> VideoRead:
    try:
        text = regular.read_text(path)
        if not text.strip():
            if video.frames:  # an --out URL's staging folder holds empty placeholders
                return VideoRead(video, problem=f"{path.name} is empty (a placeholder?)")
            return VideoRead(video)
        if prefilter is not None and "\\" not in text and not prefilter(text):
            return VideoRead(video, unread=text.count("\n"))
        frames = _plain_frames(text)
        return VideoRead(video, frames if frames is not None else load_captions(path).frames)
    except (UsageError, OSError, UnicodeDecodeError) as exc:
        log.warning("%s: captions not read: %s", path, exc)
        return VideoRead(video, problem=f"{path.name} could not be read: {exc}")


def _plain_frames(text: str) -> tuple[CaptionedFrame, ...] | None:
    """A well-formed caption JSONL's frames, parsed in one go (``json.loads`` of the lines
    as one array); None at anything unusual, and ``vidcap.mask.load_captions`` — the one
    reader of caption files — reads it instead (and says what is wrong)."""
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        rows = jsontext.loads("[" + ",".join(lines) + "]")
    except ValueError:
        return None
    if len(rows) != len(lines):  # one object a line, or let the reader say what is wrong
        return None
    frames = []
    previous = 0.0
    video = rows[0].get("video") if rows and isinstance(rows[0], dict) else None
    for row in rows:  # what the reader accepts, checked with as few calls as can be
        if type(row) is not dict or row.get("video") != video:
            return None
        index, time, caption = row.get("frame"), row.get("time"), row.get("caption")
        if type(index) is not int or type(caption) is not str:
            return None
        if type(time) not in (int, float) or not previous <= time < math.inf:  # NaN: False
            return None
        previous = time
        frames.append(
            CaptionedFrame(index, float(time), caption, damaged=row.get("damaged") is True)
        )
    return tuple(frames)


def _read_parquet(folder: Path, wanted: Sequence[FolderVideo]) -> Iterator[VideoRead]:
    """Rows of the shards grouped by video, one video at a time: by output name (``name``),
    or in shards from before that column by source; each with its settings key. A video's
    rows are contiguous in a shard; rows of another settings key (an earlier run) or a
    repeat of a video already read (a rerun after a crash) are skipped. Two videos of one
    source text (``clip.mp4`` from two folders) are told apart by name."""
    shards = sorted(p for p in (folder / SHARD_DIR).glob("part-*.parquet") if is_regular(p))
    exact = {(v.video, v.key): v for v in wanted if v.key}
    loose = {v.video: v for v in wanted if not v.key}
    named = {(v.name, v.key): v for v in wanted if v.key}
    loose_named = {v.name: v for v in wanted if not v.key}
    seen: set[str] = set()

    def owner(source: str, key: str, name: str) -> FolderVideo | None:
        if name:
            video = named.get((name, key)) or loose_named.get(name)
        else:
            video = exact.get((source, key)) or loose.get(source)
        return None if video is None or video.name in seen else video

    if shards:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            pq = None
            log.warning("%s: Parquet shards not read: pyarrow is not installed", folder)
        for shard in shards if pq is not None else ():
            for (source, key, name), rows in _groups(pq, shard):
                video = owner(source, key, name)
                if video is not None:
                    seen.add(video.name)
                    rows.sort(key=lambda frame: frame.time)
                    yield VideoRead(video, tuple(rows))
    for video in wanted:
        if video.name not in seen:
            yield VideoRead(
                video, problem=f"its captions are in neither {video.name}.jsonl nor Parquet"
            )


def _groups(pq: Any, shard: Path) -> Iterator[tuple[tuple[str, str, str], list[CaptionedFrame]]]:
    """A shard's rows, each run of one video's: (source, settings key, output name: ``""``
    in shards from before the column) with its frames."""
    try:
        handle = pq.ParquetFile(shard)
        names = set(handle.schema_arrow.names)
        wanted = ("video", "frame", "time", "caption", "key", "damaged", "name")
        columns = [c for c in wanted if c in names]
        current: tuple[str, str, str] | None = None
        rows: list[CaptionedFrame] = []
        for batch in handle.iter_batches(columns=columns, batch_size=8192):
            data = batch.to_pydict()
            keys = data.get("key") or [""] * batch.num_rows
            marks = data.get("damaged") or [False] * batch.num_rows  # (older shards: none)
            outputs = data.get("name") or [""] * batch.num_rows  # (older shards: none)
            for source, index, time, caption, key, mark, name in zip(
                data["video"],
                data["frame"],
                data["time"],
                data["caption"],
                keys,
                marks,
                outputs,
                strict=True,
            ):
                group = (str(source), str(key or ""), str(name or ""))
                if group != current:
                    if current is not None:
                        yield current, rows
                    current, rows = group, []
                if is_number(time) and isinstance(caption, str):
                    rows.append(
                        CaptionedFrame(int(index), float(time), caption, damaged=mark is True)
                    )
        if current is not None:
            yield current, rows
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors derive from these
        log.warning("%s: not read: %s", shard, exc)


# --- beside the captions ------------------------------------------------------------------


def thumb_path(folder: Path, name: str, frame: int) -> Path:
    """The thumbnail of frame ``frame`` of output ``name``: ``thumbs/<name>/<frame:06d>.jpg``."""
    return folder / THUMBS_DIR / name / f"{frame:06d}.jpg"


def thumb_frames(video: FolderVideo) -> set[int]:
    """The frame indices that have a thumbnail."""
    folder = video.folder / THUMBS_DIR / video.name
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return set()
    return {int(n[:-4]) for n in names if n.endswith(".jpg") and n[:-4].isdigit()}


@dataclass(frozen=True)
class Span:
    """A time range of a video with a label: a scene, or a mask segment; a scene's decoder
    frame indices too, [``start_frame``, ``end_frame``) (None where not known)."""

    start: float
    end: float
    label: str = ""
    frames: int = 0
    damaged: int = 0
    start_frame: int | None = None
    end_frame: int | None = None


def read_scenes(video: FolderVideo) -> list[Span]:
    """``<name>.scenes.jsonl``: one span per shot (label: its caption); none when absent."""
    return read_scene_file(video.output(SCENES_SUFFIX))


def recorded_duration(captions: Path, video: str) -> float | None:
    """The duration recorded for ``video``, whose caption JSONL ``captions`` is, where it
    was decoded: the output folder holding it (``summary.json``, its records: what
    ``vidcap search`` and the page take), or, for a question's answers ``X.answers.jsonl``,
    the ``X.json`` (or ``X``) report written with them. None where neither says (then ``vidcap mask``
    infers one)."""
    folder = captions.parent
    if captions.name.endswith(".answers.jsonl"):
        stem = captions.name.removesuffix(".answers.jsonl")
        # (``--out X.json`` writes X.answers.jsonl, and so does ``--out X``)
        for report in (folder / f"{stem}.json", folder / stem):
            if (known := _report_duration(report, video)) is not None:
                return known
        return None
    if not (folder / SUMMARY).is_file() and not (folder / STATE_DIR).is_dir():
        return None
    try:
        videos = open_folder(folder)
    except UsageError:
        return None
    for entry in videos:
        if entry.video == video and entry.output(".jsonl").name == captions.name:
            return entry.duration if is_number(entry.duration) and entry.duration > 0 else None
    return None


def _report_duration(report: Path, video: str) -> float | None:
    """The decoded duration a ``vidcap mask --question`` report at ``report`` gives for
    ``video``; None where it is no such report or states none."""
    try:
        data = jsontext.loads(regular.read_text(report))
    except (OSError, ValueError):
        return None
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict) or data.get("video") != video:
        return None
    known = settings.get("duration")
    decoded = settings.get("duration_source") in ("decoded", "recorded")  # (a re-mask's)
    return float(known) if decoded and is_number(known) and known > 0 else None


def scenes_beside(captions: Path) -> Path:
    """``OUT/talk.jsonl`` → ``OUT/talk.scenes.jsonl``, where ``--scenes`` writes its shots."""
    return captions.with_name(captions.name.removesuffix(".jsonl") + SCENES_SUFFIX)


def read_scene_file(path: Path) -> list[Span]:
    """A ``.scenes.jsonl``'s spans, in time order; none when absent or unreadable (a
    warning), rows that are not scenes passed over."""
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: not read: %s", path, exc)
        return []
    spans = []
    for line in lines:
        try:
            row = jsontext.loads(line) if line.strip() else None
        except ValueError:
            row = None
        span = _span(row, "caption") if isinstance(row, dict) else None
        if span is not None:
            spans.append(span)
    return sorted(spans, key=lambda span: span.start)


@dataclass(frozen=True)
class MaskFile:
    """A ``vidcap mask`` report beside a video's captions: what it looked for, and where."""

    path: Path
    label: str
    segments: tuple[Span, ...]


def read_mask(video: FolderVideo) -> MaskFile | None:
    """``<name>.mask.json`` (``vidcap mask OUT/NAME.jsonl … --out OUT/NAME.mask.json``)."""
    path = video.output(MASK_SUFFIX)
    if not path.is_file():
        return None
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: not read: %s", path, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        return None
    queries = data.get("queries") if isinstance(data.get("queries"), list) else []
    label = str(data.get("question") or " | ".join(str(q) for q in queries) or path.name)
    spans = [_span(row) for row in data["segments"] if isinstance(row, dict)]
    return MaskFile(path, label, tuple(s for s in spans if s is not None))


def _span(row: dict, label_key: str = "") -> Span | None:
    start, end = row.get("start"), row.get("end")
    if not (is_number(start) and is_number(end) and end >= start >= 0):
        return None
    frames, damaged = row.get("frames"), row.get("damaged")
    label = row.get(label_key) if label_key else ""
    first, stop = row.get("start_frame"), row.get("end_frame")
    indexed = type(first) is int and type(stop) is int and stop > first >= 0
    return Span(
        float(start),
        float(end),
        label if isinstance(label, str) else "",
        frames if type(frames) is int else 0,
        damaged if type(damaged) is int and damaged > 0 else 0,
        first if indexed else None,
        stop if indexed else None,
    )


def frame_rate(frames: Iterable[CaptionedFrame]) -> float | None:
    """The video's frame rate as its sampled frames tell it (median of index steps over time
    steps); None when fewer than two frames are apart in time."""
    rates = []
    previous = None
    for frame in frames:
        if previous is not None and frame.time > previous.time and frame.index > previous.index:
            rates.append((frame.index - previous.index) / (frame.time - previous.time))
        previous = frame
    if not rates:
        return None
    rates.sort()
    middle = len(rates) // 2
    rate = rates[middle] if len(rates) % 2 else (rates[middle - 1] + rates[middle]) / 2
    return rate if math.isfinite(rate) and rate > 0 else None


def stopped_part_way(out: Path | str) -> str | None:
    """A note on the videos of ``out`` a run began and none finished: a journal
    (``vidcap.journal``) and no record; in progress where a run holds the folder, else
    stopped part-way (killed, Ctrl-C, a lost server). They are on no page and in no search,
    where "0 videos" alone would say the captions are lost; None when there are none (one
    look at the journal folder, the usual case)."""
    from vidcap.journal import JOURNAL_DIR

    folder = Path(out) / STATE_DIR / JOURNAL_DIR
    journals = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not journals:
        return None
    known = {video.name for video in open_folder(out)}
    stopped: dict[str, int] = {}
    for path in journals:
        name = path.name.removesuffix(".jsonl")
        if name in known or not is_regular(path):
            continue
        try:
            with regular.open_regular(path, follow=False) as handle:
                stopped[name] = max(sum(1 for _ in handle) - 1, 0)  # (its header line)
        except OSError:
            continue
    if not stopped:
        return None
    from vidcap.out_lock import held_by

    first, count = next(iter(stopped.items()))
    one = len(stopped) == 1
    videos = f"{counted(len(stopped), 'video')} {'is' if one else 'are'} not shown ({first}: "
    videos += f"{counted(count, 'caption')} so far{'' if one else ', …'})"
    holder = held_by(Path(out))
    if holder is not None:
        return f"{out}: {videos}: in progress, by the run that holds the folder ({holder})"
    return (
        f"{out}: {videos}: a run stopped part-way through {'it' if one else 'them'}; "
        f"{'its captions are' if one else 'theirs are'} kept for the `vidcap caption` run "
        f"that finishes {'it' if one else 'them'} (the same command again)"
    )
