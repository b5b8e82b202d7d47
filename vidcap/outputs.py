"""The per-video outputs ``<video>.jsonl``, ``.srt``, ``.vtt``, ``.scenes.jsonl``, and JSON files.

A video's outputs are written once the whole video is captioned, not frame by frame:
captions may come back in any order and more than once (a retried Ray task), and a
subtitle cue's end is only known from the next different caption or the video's end. So
each per-video format is one class behind one interface, ``VideoFormat.render(video,
frames, duration) -> text``, which renders a finished video at once, and
``write_video_outputs`` writes every format's text; the engine never branches on format
names. Every file is written under a ``.part`` name and renamed only when complete, so a
file with a final name is always whole.

``frame_row`` is the one row layout of a captioned frame, shared by the JSONL files, the
Parquet shards (``vidcap.parquet``) and ``vidcap mask``'s saved answers.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import srt
import webvtt

from vidcap import jsontext, regular
from vidcap.scenes import Scene

PART_SUFFIX = ".part"
SCENES_FORMAT = "scenes.jsonl"


@dataclass(frozen=True)
class CaptionedFrame:
    """One sampled frame's caption: decoder index, presentation time (s), text.

    ``same_as``: with ``--skip-similar``, the index of the captioned frame whose caption
    this one reuses (it never reached the model); None for a captioned frame. ``damaged``:
    its picture may show decoding damage (``vidcap.decoded.DecodedFrame.damaged``).
    """

    index: int
    time: float
    caption: str
    same_as: int | None = None
    damaged: bool = False


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


# A file name is at most 255 bytes (Linux, macOS, Windows): a video's outputs add at most 27
# to its name (``-<hash>`` for a name two inputs share, ``.scenes.jsonl.part``).
NAME_STEM_MAX = 228


def short_stem(stem: str, limit: int = NAME_STEM_MAX) -> str:
    """``stem`` as a name outputs can carry: as it is up to ``limit`` UTF-8 bytes; a longer
    one (a download named after a long title) cut at a character and ended with ``~`` and
    a hash of the whole, so two long names that start alike stay apart."""
    data = stem.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        return stem
    digest = hashlib.sha1(data).hexdigest()[:8]
    head = data[: limit - len(digest) - 1].decode("utf-8", "ignore")  # (a whole character)
    return f"{head}~{digest}"


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def create_new(path: Path) -> int:
    """``path`` created empty, open for writing (a file descriptor). Whatever stood at its
    name is removed first, never followed or opened: a stale part, or a link or FIFO planted
    in a shared folder under a part's name (``summary.json.part`` → ``~/.bashrc``), which a
    plain ``open(..., "w")`` would have truncated and written through."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)


# Told of every file ``new_part`` puts in place and every thumbnail folder
# ``place_thumbnails`` does, by path, and of every output removed (a path no longer there):
# how a staged remote ``--out`` (``vidcap.remote_out``) knows what to upload, or remove
# there, without reading the whole folder at each sync.
_TOLD: list[Callable[[Path], None]] = []


@contextmanager
def telling(callback: Callable[[Path], None]) -> Iterator[None]:
    """While the block runs, ``callback(path)`` for each output put in place (any folder)."""
    _TOLD.append(callback)
    try:
        yield
    finally:
        _TOLD.remove(callback)


def _placed(path: Path) -> None:
    for callback in tuple(_TOLD):
        callback(path)


@contextmanager
def new_part(path: Path, tmp: Path | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """A new part file for ``path`` (``tmp``, default ``part_path(path)``: ``create_new``),
    open to write; when the block ends, flushed, fsynced where ``durable``, and renamed over
    ``path``: whole or absent. On an error it is removed (never a stray part), and a write or
    fsync that failed, which names no file, names ``path``."""
    tmp = tmp or part_path(path)
    try:
        with os.fdopen(create_new(tmp), "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        _placed(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a ``new_part``."""
    with new_part(path, durable=durable) as handle:
        handle.write(text.encode("utf-8"))


def copy_atomic(source: Path, path: Path) -> None:
    """``source``'s bytes and times to ``path``, through a ``new_part`` (not fsynced, as a
    plain copy is not)."""
    with open(source, "rb") as reader, new_part(path, durable=False) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        shutil.copystat(source, part_path(path))  # (before the rename; nothing left to write)


THUMBS_DIR = "thumbs"
# The folder in OUT/thumbs where thumbnails are staged when OUT/thumbs is on another file
# system than OUT (``vidcap.commit.thumbs_staging``): never a video's name.
STAGING_NAME = ".vidcap-staging"
# Where a video's thumbnails are written as they come, in OUT's state folder, until they are
# renamed into OUT/thumbs/<name> with its other outputs (``commit.thumbs_staging``).
THUMBS_STAGING = "thumbs"


def is_output_name(name: str) -> bool:
    """Can ``name`` be a video's output name: one plain file name (no ``/``, NUL, not ``.``
    or ``..``, not empty, not ``STAGING_NAME``)? Names read from a folder (its
    ``summary.json``, which anyone may have written) are taken only if so: joined to a path,
    any other could reach outside it."""
    return bool(name.strip(".")) and "/" not in name and "\0" not in name and name != STAGING_NAME


def thumbs_folder(out_dir: Path, name: str) -> Path:
    """Where a video's thumbnails live: ``OUT/thumbs/<name>/<frame, 6 digits>.jpg``; a name
    that is not one plain folder name is an error (the folder is replaced whole)."""
    if not is_output_name(name):
        raise ValueError(f"not an output name: {name!r}")
    return out_dir / THUMBS_DIR / name


def stage_thumbnails(staging: Path, name: str) -> Path:
    """An empty folder for a video's thumbnails, written into one by one as the decoder
    makes them (``write_thumbnail``), so that none waits in memory: ``staging/<name>.part``,
    a folder on the same file system that holds no video's thumbnails (beside them,
    ``x.part`` would be the folder of a video named ``x.part``)."""
    if not is_output_name(name):
        raise ValueError(f"not an output name: {name!r}")
    staged = part_path(staging / name)
    shutil.rmtree(staged, ignore_errors=True)  # (a run killed mid-video left it)
    for folder in (staging.parent, staging):  # (OUT/.vidcap or OUT/thumbs, in OUT: OUT
        folder.mkdir(exist_ok=True)  # itself is never made again, once a run's is gone)
    staged.mkdir()
    return staged


def write_thumbnail(staged: Path, index: int, jpeg: bytes) -> None:
    """Thumbnail of sample ``index`` into a video's staged folder."""
    (staged / f"{index:06d}.jpg").write_bytes(jpeg)


def place_thumbnails(folder: Path, staged: Path | None) -> None:
    """A video's thumbnails, all or none: its staged folder put in place of any earlier
    set with a rename (the earlier set removed first). None staged: only the earlier set is
    removed."""
    if regular.planted(folder):  # (in a shared folder: the link goes, not its target)
        folder.unlink()
    if staged is None:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            _placed(folder)  # (removed)
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(exist_ok=True)  # (OUT/thumbs; OUT itself never made again)
    os.replace(staged, folder)
    _placed(folder)


# Every column a caption row may have in any output: ``frame_row``'s, and the Parquet
# shards' output name, scene columns and settings key. A list file's metadata column of one
# of these names is carried as ``list_<name>`` (``vidcap.inputs``).
OUTPUT_COLUMNS = frozenset(
    {"video", "name", "frame", "time", "caption", "same_as", "damaged", "scene", "scene_start",
     "scene_end", "key"}
)  # fmt: skip


def frame_row(video: str, frame: CaptionedFrame, same_as: bool = False) -> dict[str, Any]:
    """One captioned frame as a row: the source, frame index, time (s, to the microsecond),
    caption and ``damaged`` (true where its picture may show decoding damage); ``same_as``
    (``--skip-similar``): the frame whose caption it reused, null where captioned. Every
    row of a run has the same keys: readers that take them from the first rows or the first
    file (polars' ``read_ndjson``, Hugging Face's ``load_dataset("json")``) lost or refused
    a key only some rows had."""
    row: dict[str, Any] = {
        "video": video,
        "frame": frame.index,
        "time": round(frame.time, 6),
        "caption": frame.caption,
    }
    if same_as or frame.same_as is not None:
        row["same_as"] = frame.same_as
    row["damaged"] = frame.damaged
    return row


def scene_frames(scene: Scene, frames: Sequence[CaptionedFrame]) -> list[CaptionedFrame]:
    """The samples inside ``scene`` (``frames`` in order of index): found by bisection, so
    that a long video's scenes cost no pass over all its samples each (hours of shots
    sampled every second were seconds to minutes of one core, growing as their product)."""
    first = bisect.bisect_left(frames, scene.start_frame, key=_index)
    stop = bisect.bisect_left(frames, scene.end_frame, lo=first, key=_index)
    return list(frames[first:stop])


def _index(frame: CaptionedFrame) -> int:
    return frame.index


def scene_caption(scene: Scene, frames: Sequence[CaptionedFrame]) -> str:
    """A scene's caption: that of its sample nearest the scene's middle (the earlier of
    two as near); "" for a scene without samples."""
    middle = (scene.start + scene.end) / 2
    inside = scene_frames(scene, frames)
    if not inside:
        return ""
    return min(inside, key=lambda f: (abs(f.time - middle), f.time)).caption


def scene_row(video: str, scene: Scene, frames: Sequence[CaptionedFrame]) -> dict[str, Any]:
    """One scene as a row of ``<video>.scenes.jsonl``."""
    return {
        "video": video,
        "scene": scene.number,
        "start": round(scene.start, 6),
        "end": round(scene.end, 6),
        "start_frame": scene.start_frame,
        "end_frame": scene.end_frame,
        "caption": scene_caption(scene, frames),
        "captions": [
            {"frame": f.index, "time": round(f.time, 6), "caption": f.caption}
            for f in scene_frames(scene, frames)
        ],
    }


def scene_cues(scenes: Sequence[Scene], frames: Sequence[CaptionedFrame]) -> list[Cue]:
    """One cue per scene with a caption, over [start, end); none of zero length."""
    cues = []
    for scene in scenes:
        caption = scene_caption(scene, frames)
        if caption.strip() and _millis(scene.end) > _millis(scene.start):
            cues.append(Cue(start=scene.start, end=scene.end, text=caption))
    return cues


def render_jsonl(video: str, frames: Sequence[CaptionedFrame], same_as: bool = False) -> str:
    """One JSON object (``frame_row``) per line; ``same_as``: the run skips similar samples."""
    return "".join(jsontext.line(frame_row(video, f, same_as)) for f in frames)


def merge_cues(frames: Sequence[CaptionedFrame], end_time: float) -> list[Cue]:
    """Consecutive equal captions become one cue covering [first time, next different time).

    The last cue ends at ``end_time`` (the video's end). Empty captions open no cue, and
    no cue is of zero length: times are compared at the millisecond both formats keep.
    """
    cues: list[Cue] = []
    start_index = 0
    for i in range(1, len(frames) + 1):
        if i < len(frames) and frames[i].caption == frames[start_index].caption:
            continue
        first = frames[start_index]
        end = frames[i].time if i < len(frames) else end_time
        if first.caption.strip() and _millis(end) > _millis(first.time):
            cues.append(Cue(start=first.time, end=end, text=first.caption))
        start_index = i
    return cues


def _millis(seconds: float) -> int:
    """The one rounding rule of both subtitle formats: down to the millisecond (a float's
    error aside), so that each frame's time is inside its own cue — rounded to the nearest,
    a 23.976 fps frame at 41.708 ms had its cue from 42 ms, and a player (or ``ffmpeg -vf
    subtitles``) showed the caption before it on it: 115 of 240 frames."""
    return math.floor(seconds * 1000 + 1e-6)


# Where a caption's lines break: CR, LF, CRLF, as in both formats (``str.splitlines`` also
# breaks at U+2028, form feeds, \x1c…: characters of the caption, not line ends).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# C0 controls but TAB, LF, CR, and DEL: a NUL in a cue made FFmpeg drop every later cue.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What SRT readers take for a timing line's arrow (the ``srt`` package: ``-[ -] *>``), and a
# line that starts with a time, which, after an index-like line, they take for a new cue.
_SRT_ARROW = re.compile(r"-(?=[ -] *>)")
_SRT_TIME_START = re.compile(r"^(?=\s*\d+[,.:，．。：]\d+[,.:，．。：]\d+)", re.MULTILINE)
# A clock time's seconds (``12:30:45.5``, ``01:02.500``): pysubs2 takes any line holding two
# times (``h:m:s[.,]f`` in SRT, ``[h:]mm:ss.fff`` in WebVTT) for a timing line, wherever they
# stand and whatever is between them; a zero-width space before the seconds keeps them text.
_CLOCK_SECONDS = re.compile(r"(?<=\d:)(?=\d{1,2}[.,]\d)")


def _cue_lines(text: str) -> str:
    """A caption as cue text: its lines, without blank ones (a blank line ends a cue in
    both formats) and with plain newlines; control characters (NUL…) as U+FFFD. Model
    output is free text: a frame showing text, a prompt's answer, a server's reply may hold
    anything. A clock time's seconds follow a zero-width space (``_CLOCK_SECONDS``)."""
    lines = _LINE_BREAK.split(_CLOCK_SECONDS.sub("\u200b", _CONTROL.sub("\ufffd", text)))
    return "\n".join(line for line in lines if line.strip())


def _srt_text(text: str) -> str:
    """SRT has no escapes, and readers (FFmpeg's, the ``srt`` package) take a line with
    ``-->`` (or ``- >``, ``-- >``) in it, or one starting with a time after a number, for
    the next cue: a zero-width space (between ``--`` and ``>``; before the time) keeps it
    text and shows the same."""
    text = _cue_lines(text).replace("-->", "--\u200b>")
    return _SRT_TIME_START.sub("\u200b", _SRT_ARROW.sub("-\u200b", text))


def _vtt_escaped(text: str) -> str:
    """WebVTT cue text is markup: ``&``, ``<`` and ``>`` escaped show as themselves (and
    ``-->``, which no cue text may hold, as ``--&gt;``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_srt(cues: Sequence[Cue], duration: float = 0.0) -> str:
    """SRT text. With no cue at all (every caption empty) one text-less cue spans the video:
    a file without any cue is not valid SRT (FFmpeg refuses to open it)."""
    if not cues:
        return srt.compose(
            [srt.Subtitle(1, timedelta(0), timedelta(milliseconds=max(1, _millis(duration))), "")],
            reindex=False,
        )
    subtitles = [
        srt.Subtitle(
            index=i,
            start=timedelta(milliseconds=_millis(cue.start)),
            end=timedelta(milliseconds=_millis(cue.end)),
            content=_srt_text(cue.text),
        )
        for i, cue in enumerate(cues, start=1)
    ]
    return srt.compose(subtitles, reindex=False)


def _vtt_time(seconds: float) -> str:
    hours, rest = divmod(_millis(seconds), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def render_vtt(cues: Sequence[Cue], duration: float = 0.0) -> str:
    document = webvtt.WebVTT()
    for cue in cues:
        document.captions.append(
            webvtt.Caption(
                start=_vtt_time(cue.start),
                end=_vtt_time(cue.end),
                text=_vtt_escaped(_cue_lines(cue.text)),
            )
        )
    buffer = io.StringIO()
    document.write(buffer)
    text = buffer.getvalue()
    if not text.startswith("WEBVTT"):
        text = "WEBVTT\n\n" + text
    return text if text.endswith("\n") else text + "\n"


class VideoFormat(Protocol):
    """One per-video output format: the whole file's text for a finished video."""

    def render(
        self,
        video: str,
        frames: Sequence[CaptionedFrame],
        duration: float,
        scenes: Sequence[Scene] | None = None,
        same_as: bool = False,
    ) -> str:
        """``frames``: every sampled frame of ``video`` in order; ``duration``: the video's
        end (s); ``scenes``: its scenes in order (``--scenes``), else None; ``same_as``: the
        run skips similar samples (``--skip-similar``: every row has ``same_as``)."""
        ...


class JsonlFormat:
    def render(
        self,
        video: str,
        frames: Sequence[CaptionedFrame],
        duration: float,
        scenes: Sequence[Scene] | None = None,
        same_as: bool = False,
    ) -> str:
        return render_jsonl(video, frames, same_as)


class _SubtitleFormat:
    """Cues (equal consecutive captions merged, or one per scene) in a subtitle syntax."""

    @staticmethod
    def syntax(cues: Sequence[Cue], duration: float) -> str:
        raise NotImplementedError

    def render(
        self,
        video: str,
        frames: Sequence[CaptionedFrame],
        duration: float,
        scenes: Sequence[Scene] | None = None,
        same_as: bool = False,
    ) -> str:
        cues = merge_cues(frames, duration) if scenes is None else scene_cues(scenes, frames)
        return self.syntax(cues, duration)


class SrtFormat(_SubtitleFormat):
    syntax = staticmethod(render_srt)


class VttFormat(_SubtitleFormat):
    syntax = staticmethod(render_vtt)


class ScenesFormat:
    """``<video>.scenes.jsonl``: one ``scene_row`` per scene (``--scenes`` only)."""

    def render(
        self,
        video: str,
        frames: Sequence[CaptionedFrame],
        duration: float,
        scenes: Sequence[Scene] | None = None,
        same_as: bool = False,
    ) -> str:
        rows = (scene_row(video, scene, frames) for scene in scenes or ())
        return "".join(jsontext.line(row) for row in rows)


# Per-video formats: name → format. Adding a format is adding a class here.
VIDEO_FORMATS: dict[str, VideoFormat] = {
    "jsonl": JsonlFormat(),
    "srt": SrtFormat(),
    "vtt": VttFormat(),
}
FORMATS = tuple(VIDEO_FORMATS)
# Written with --scenes (not a --format choice: the scenes come with the flag).
SCENE_FORMATS: dict[str, VideoFormat] = {SCENES_FORMAT: ScenesFormat()}
_ALL_FORMATS = {**VIDEO_FORMATS, **SCENE_FORMATS}


def write_video_outputs(
    base: Path,
    video: str,
    frames: Sequence[CaptionedFrame],
    duration: float,
    formats: Sequence[str],
    scenes: Sequence[Scene] | None = None,
    same_as: bool = False,
) -> list[Path]:
    """Render a finished video in every per-video format in ``formats`` and write each to
    ``base.<format>`` atomically; on failure none of them is left. ``scenes``: with
    ``--scenes``, the video's scenes (``formats`` then names ``SCENES_FORMAT`` too);
    ``same_as``: with ``--skip-similar`` (every JSONL row has ``same_as``).
    Once they are written, the video's files of the other formats go: an earlier
    captioning's (``--format jsonl,srt`` before, ``jsonl`` now; ``--scenes`` then not), which
    no longer match its captions (the page would play the old subtitles)."""
    texts = {
        base.with_name(f"{base.name}.{fmt}"): _ALL_FORMATS[fmt].render(
            video, frames, duration, scenes, same_as
        )
        for fmt in formats
        if fmt in _ALL_FORMATS
    }
    written: list[Path] = []
    try:
        for path, text in texts.items():
            write_atomic(path, text)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    for fmt in _ALL_FORMATS.keys() - set(formats):
        remove_output(base.with_name(f"{base.name}.{fmt}"))
    return written


def remove_output(path: Path) -> bool:
    """Remove an output file (a link in its place: the link, never what it names), telling
    a remote ``--out``'s sync; whether there was one."""
    if not (path.is_symlink() or path.is_file()):
        return False
    path.unlink()
    _placed(path)  # (removed)
    return True


def remove_video_outputs(out_dir: Path, name: str) -> list[str]:
    """Remove the per-video outputs and thumbnails named ``name`` (a link in their place:
    the link, never what it names); the names removed, relative to ``out_dir``."""
    removed = [f"{name}.{fmt}" for fmt in _ALL_FORMATS if remove_output(out_dir / f"{name}.{fmt}")]
    thumbs = thumbs_folder(out_dir, name)
    if thumbs.is_symlink() or thumbs.is_dir():
        removed.append(f"{thumbs.relative_to(out_dir).as_posix()}/")
    place_thumbnails(thumbs, None)  # (none in place of the set: it goes)
    return removed


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
