"""Writers for ``<video>.jsonl``, ``.srt``, ``.vtt`` and JSON files.

Every per-video format is one class behind one small interface (``VideoWriter``:
``write`` each frame, then ``commit`` or ``abort``), so the engine never branches on
format names. Every file is written under a ``.part`` name and renamed only when
complete, so a file with a final name is always whole.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Protocol

import srt
import webvtt

PART_SUFFIX = ".part"


@dataclass(frozen=True)
class CaptionedFrame:
    """One sampled frame's caption: decoder index, presentation time (s), text."""

    index: int
    time: float
    caption: str


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a ``.part`` file and an atomic rename."""
    tmp = part_path(path)
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never a stray .part
        raise


class VideoWriter(Protocol):
    """One output file of one video: frames in order, then ``commit`` (or ``abort``)."""

    path: Path

    def write(self, frame: CaptionedFrame) -> None: ...

    def commit(self, duration: float) -> None:
        """Make the file whole under its final name; ``duration`` is the video's end (s)."""
        ...

    def abort(self) -> None:
        """Drop what was written: a failed video leaves nothing behind."""
        ...


class JsonlWriter:
    """Streams one JSON object per frame to ``<path>.part``; ``commit`` renames it."""

    def __init__(self, path: Path, video: str) -> None:
        self.path = path
        self.video = video
        self._handle: IO[str] = open(part_path(path), "w", encoding="utf-8", newline="\n")

    def write(self, frame: CaptionedFrame) -> None:
        record = {
            "video": self.video,
            "frame": frame.index,
            "time": round(frame.time, 6),
            "caption": frame.caption,
        }
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def commit(self, duration: float = 0.0) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(part_path(self.path), self.path)

    def abort(self) -> None:
        self._handle.close()
        part_path(self.path).unlink(missing_ok=True)


class _SubtitleWriter:
    """Collects captions; ``commit`` merges them into cues and writes the file atomically."""

    render: Callable[[Sequence[Cue], float], str]

    def __init__(self, path: Path, video: str) -> None:
        self.path = path
        self.frames: list[CaptionedFrame] = []

    def write(self, frame: CaptionedFrame) -> None:
        self.frames.append(frame)

    def commit(self, duration: float) -> None:
        write_atomic(self.path, type(self).render(merge_cues(self.frames, duration), duration))

    def abort(self) -> None:
        part_path(self.path).unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


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
    """The one rounding rule of both subtitle formats: to the nearest millisecond."""
    return round(seconds * 1000)


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
            content=cue.text,
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
            webvtt.Caption(start=_vtt_time(cue.start), end=_vtt_time(cue.end), text=cue.text)
        )
    buffer = io.StringIO()
    document.write(buffer)
    text = buffer.getvalue()
    if not text.startswith("WEBVTT"):
        text = "WEBVTT\n\n" + text
    return text if text.endswith("\n") else text + "\n"


class SrtWriter(_SubtitleWriter):
    render = staticmethod(render_srt)


class VttWriter(_SubtitleWriter):
    render = staticmethod(render_vtt)


# Per-video formats: name → writer class. Adding a format is adding a class here.
VIDEO_WRITERS: dict[str, Callable[[Path, str], VideoWriter]] = {
    "jsonl": JsonlWriter,
    "srt": SrtWriter,
    "vtt": VttWriter,
}
FORMATS = tuple(VIDEO_WRITERS)


def open_writers(base: Path, video: str, formats: Sequence[str]) -> list[VideoWriter]:
    """One writer per per-video format in ``formats`` for the video whose outputs are ``base.*``."""
    return [
        VIDEO_WRITERS[fmt](base.with_name(f"{base.name}.{fmt}"), video)
        for fmt in formats
        if fmt in VIDEO_WRITERS
    ]


def write_video_outputs(
    base: Path,
    video: str,
    frames: Sequence[CaptionedFrame],
    duration: float,
    formats: Sequence[str],
) -> list[Path]:
    """Write every per-video output of one video atomically; on failure nothing is left."""
    writers = open_writers(base, video, formats)
    try:
        for frame in frames:
            for writer in writers:
                writer.write(frame)
        for writer in writers:
            writer.commit(duration)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return [writer.path for writer in writers]


def write_subtitles(
    base: Path, frames: Sequence[CaptionedFrame], end_time: float, formats: Sequence[str]
) -> None:
    """SRT and/or WebVTT of one video (the JSONL aside)."""
    write_video_outputs(base, "", frames, end_time, [f for f in formats if f != "jsonl"])


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
