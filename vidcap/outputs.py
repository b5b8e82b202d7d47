"""Writers for ``<video>.jsonl``, ``.srt``, ``.vtt`` and ``summary.json``.

Every file is written under a ``.part`` name and renamed only when complete, so a
file with a final name is always whole.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

import srt
import webvtt

PART_SUFFIX = ".part"
FORMATS = ("jsonl", "srt", "vtt")


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
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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

    def commit(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(part_path(self.path), self.path)

    def abort(self) -> None:
        """Drop the partial file: a failed video leaves nothing behind."""
        self._handle.close()
        part_path(self.path).unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def merge_cues(frames: Sequence[CaptionedFrame], end_time: float) -> list[Cue]:
    """Consecutive equal captions become one cue covering [first time, next different time).

    The last cue ends at ``end_time`` (the video's end). Empty captions open no cue.
    """
    cues: list[Cue] = []
    start_index = 0
    for i in range(1, len(frames) + 1):
        if i < len(frames) and frames[i].caption == frames[start_index].caption:
            continue
        first = frames[start_index]
        end = frames[i].time if i < len(frames) else max(end_time, first.time)
        if first.caption.strip():
            cues.append(Cue(start=first.time, end=end, text=first.caption))
        start_index = i
    return cues


def render_srt(cues: Iterable[Cue]) -> str:
    subtitles = [
        srt.Subtitle(
            index=i,
            start=timedelta(seconds=cue.start),
            end=timedelta(seconds=cue.end),
            content=cue.text,
        )
        for i, cue in enumerate(cues, start=1)
    ]
    return srt.compose(subtitles, reindex=False)


def _vtt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def render_vtt(cues: Iterable[Cue]) -> str:
    document = webvtt.WebVTT()
    for cue in cues:
        document.captions.append(
            webvtt.Caption(start=_vtt_time(cue.start), end=_vtt_time(cue.end), text=cue.text)
        )
    buffer = io.StringIO()
    document.write(buffer)
    text = buffer.getvalue()
    return text if text.endswith("\n") else text + "\n"


def write_subtitles(
    base: Path, frames: Sequence[CaptionedFrame], end_time: float, formats: Sequence[str]
) -> None:
    cues = merge_cues(frames, end_time)
    if "srt" in formats:
        write_atomic(base.with_name(base.name + ".srt"), render_srt(cues))
    if "vtt" in formats:
        write_atomic(base.with_name(base.name + ".vtt"), render_vtt(cues))


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
