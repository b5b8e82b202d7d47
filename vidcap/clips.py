"""Cut a video's segments into playable MP4 clips, plus a ``manifest.json`` (``vidcap clips``).

Default: stream copy with input seeking (``-ss`` before ``-i``, ``-c copy``): fast and
lossless, but a clip can only begin at a keyframe, so it may run up to one GOP longer
than asked (players that honour MP4 edit lists start at the asked time). ``precise``
re-encodes with libx264 for frame-accurate cuts. Each clip is written under a ``.part``
name and renamed when whole; the manifest records each clip's probed duration.

Clips play as their source does: stream copy keeps the display matrix (a phone's rotation)
and the sample aspect ratio; a re-encode turns the pixels upright (ffmpeg's autorotate,
which then drops the matrix) and keeps the aspect ratio (tests/test_picture.py).

Stream copy into MP4 fails for codecs MP4 cannot hold (MS-MPEG4 v3 "DIV3" in old AVIs)
and for streams it cannot time (some MPEG-4 Part 2 AVIs). Such a clip is re-encoded as
``precise`` would, and its manifest entry says so and why; if that fails too, the error
carries ffmpeg's full reason.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from vidcap.errors import UsageError
from vidcap.ffmpeg import FfmpegError, probe, run_ffmpeg
from vidcap.mask import DECIMALS, Segment, is_number
from vidcap.outputs import part_path, write_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STREAM_COPY, PRECISE, REENCODED = "stream-copy", "precise", "re-encoded"
PRECISE_VIDEO = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
PRECISE_AUDIO = ["-c:a", "aac", "-b:a", "160k"]


@dataclass(frozen=True)
class Clip:
    """One exported clip: ``path`` relative to the manifest's folder; times in seconds.

    ``mode``: how it was cut (stream-copy, precise, or re-encoded when stream copy
    failed); ``note``: why it was re-encoded.
    """

    path: str
    source: str
    start: float
    end: float
    duration: float
    mode: str = STREAM_COPY
    note: str | None = None


def load_segments(path: Path | str) -> list[Segment]:
    """Segments from a ``vidcap mask`` report, or a bare JSON list of ``{"start", "end"}``."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a segments JSON file ({_reason(exc)})") from exc
    rows = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise UsageError(
            f"{path}: expected a list of segments or a 'vidcap mask' report with 'segments'"
        )
    return [_parse_segment(path, i, row) for i, row in enumerate(rows, start=1)]


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}"
    return "not UTF-8 text"


def _parse_segment(path: Path, number: int, row: object) -> Segment:
    where = f"{path}: segment {number}"
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected an object with 'start' and 'end', got {row!r}")
    start, end = row.get("start"), row.get("end")
    for name, value in (("start", start), ("end", end)):
        if not is_number(value):
            raise UsageError(f"{where}: '{name}' must be a number of seconds, got {value!r}")
    if start < 0:
        raise UsageError(f"{where}: start {start} is negative")
    if end <= start:
        raise UsageError(f"{where}: end {end} is not after start {start}")
    frames = row.get("frames", 0)
    return Segment(float(start), float(end), frames if isinstance(frames, int) else 0)


def clip_name(stem: str, number: int, segment: Segment) -> str:
    """Stable name: ``<stem>_0001_3.000-7.000.mp4`` (number, then start-end in seconds)."""
    return f"{stem}_{number:04d}_{segment.start:.3f}-{segment.end:.3f}.mp4"


def cut_arguments(
    video: Path, start: float, length: float, output: Path, precise: bool
) -> list[str]:
    """ffmpeg arguments for one clip: first video stream and any audio, MP4 out."""
    codecs = [*PRECISE_VIDEO, *PRECISE_AUDIO] if precise else ["-c", "copy"]
    return [
        "-ss", f"{start:.6f}",
        "-i", str(video.resolve()),
        "-t", f"{length:.6f}",
        "-map", "0:v:0", "-map", "0:a?",
        *codecs,
        "-movflags", "+faststart",
        "-f", "mp4", "-y", str(output.resolve()),
    ]  # fmt: skip


def export_clip(
    video: Path,
    segment: Segment,
    output: Path,
    precise: bool,
    video_duration: float,
    offset: float = 0.0,
) -> Clip:
    """Cut one segment into ``output`` atomically and probe what came out.

    A stream copy that ffmpeg refuses is redone as a re-encode, and the clip says why.
    ``offset``: ``vidcap.video.seek_offset`` (frame times to ffmpeg's seek positions).
    """
    end = min(segment.end, video_duration)
    mode, note = (PRECISE if precise else STREAM_COPY), None
    start = max(0.0, segment.start + offset)
    try:
        _cut(video, start, end + offset - start, output, precise)
    except FfmpegError as exc:
        if precise:
            raise
        note = f"stream copy failed: {exc}"
        log.warning("%s: %s; re-encoding this clip", output.name, note)
        mode = REENCODED
        try:
            _cut(video, start, end + offset - start, output, precise=True)
        except FfmpegError as again:
            raise FfmpegError(
                f"{video}: could not cut {output.name}: {note}; re-encoding failed too: {again}"
            ) from again
    duration = probe(output).duration
    log.info("wrote %s (%.3f s, %s)", output, duration, mode)
    return Clip(output.name, str(video), segment.start, end, round(duration, DECIMALS), mode, note)


def _cut(video: Path, start: float, length: float, output: Path, precise: bool) -> None:
    part = part_path(output)
    try:
        run_ffmpeg(cut_arguments(video, start, length, part, precise))
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)


def export_clips(
    video: Path | str, segments: list[Segment], out_dir: Path | str, precise: bool = False
) -> list[Clip]:
    """Every segment of ``video`` as its own MP4 in ``out_dir``, then ``manifest.json``."""
    from vidcap.video import seek_offset

    video, out_dir = Path(video), Path(out_dir)
    duration = probe(video).duration
    offset = seek_offset(video)  # frame times keep a late start; ffmpeg seeks from 0
    duration -= offset
    for number, segment in enumerate(segments, start=1):
        if segment.start >= duration:
            raise UsageError(
                f"segment {number} starts at {segment.start} s, at or after the end of "
                f"{video} ({duration:.3f} s)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = [
        export_clip(
            video, seg, out_dir / clip_name(video.stem, number, seg), precise, duration, offset
        )
        for number, seg in enumerate(segments, start=1)
    ]
    write_manifest(out_dir / MANIFEST_NAME, video, clips, precise)
    return clips


def write_manifest(path: Path, video: Path, clips: list[Clip], precise: bool) -> None:
    manifest = {
        "source": str(video),
        "mode": PRECISE if precise else STREAM_COPY,
        "clips": [asdict(clip) for clip in clips],
    }
    write_atomic(path, json.dumps(manifest, indent=2) + "\n")
