"""Cut a video's segments into playable MP4 clips, plus a ``manifest.json`` (``vidcap clips``).

Default: stream copy with input seeking (``-ss`` before ``-i``, ``-c copy``): fast and
lossless, but a clip can only begin at a keyframe, so it may run up to one GOP longer
than asked (players that honour MP4 edit lists start at the asked time). ``precise``
re-encodes with libx264 for frame-accurate cuts. Each clip is written under a ``.part``
name and renamed when whole; the manifest records each clip's playable length
(``clip_duration``: to the end of its last frame, or of its sound).

Clips play as their source does: stream copy keeps the display matrix (a phone's rotation)
and the sample aspect ratio; a re-encode turns the pixels upright (ffmpeg's autorotate,
which then drops the matrix) and keeps the aspect ratio (tests/test_picture.py).

Per scene (``vidcap clips --scenes``): each scene of a ``<name>.scenes.jsonl`` (``vidcap
caption --scenes``) is cut into ``<clip>.mp4`` with ``<clip>.json`` beside it (the scene's
caption and its sampled frames' captions): the clip–caption pairs a dataset builder wants.
``--min-duration`` drops shorter scenes; ``--max-duration`` splits a longer one at fixed
strides from its start (the pieces each that long, the last one the rest, dropped when
shorter than ``--min-duration``), as NeMo Curator's fixed-stride splitting does.

Stream copy into MP4 fails for codecs MP4 cannot hold (MS-MPEG4 v3 "DIV3" in old AVIs)
and for streams it cannot time (some MPEG-4 Part 2 AVIs). Such a clip is re-encoded as
``precise`` would, and its manifest entry says so and why; if that fails too, the error
carries ffmpeg's full reason.

Every clip is checked after the cut (its first frame shows at its start, its length is the
asked one): where ffmpeg's input seek landed after the keyframe it needed (MPEG-TS streams
whose keyframes its demuxer cannot find), the clip is cut again with output seeking,
decoding from where the demuxer lands ``LEAD_S`` before the cut, and only if that is not
whole either, from the file's start; its ``note`` says why.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vidcap import jsontext
from vidcap.errors import UsageError, VideoError
from vidcap.ffmpeg import FfmpegError, every_frame_at_its_time, playable_end, probe, run_ffmpeg
from vidcap.mask import DECIMALS, Segment, is_number
from vidcap.outputs import new_part, part_path, short_stem, write_atomic

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
STREAM_COPY, PRECISE, REENCODED = "stream-copy", "precise", "re-encoded"
# What stops one video's clips and not the next video's, when many are cut in one command.
ONE_VIDEO_ERRORS = (VideoError, FfmpegError)
PRECISE_VIDEO = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p"]
PRECISE_AUDIO = ["-c:a", "aac", "-b:a", "160k"]
# An interlaced source re-encoded interlaced (libx264 follows each frame's field order).
INTERLACED = ["-flags", "+ildct+ilme"]
# A transparent source composited onto white, as the model saw it (``frames.over_white``):
# white − (white − c)·alpha, by FFmpeg's filters — negate the colours, premultiply them by
# the alpha, drop it, negate back — which every FFmpeg since 4 has. MP4 keeps no alpha.
ONTO_WHITE = "format=rgba,negate,premultiply=inplace=1,format=rgb24,negate"
TRANSPARENT = "the source is transparent: re-encoded onto white, as the model saw it"
EPSILON = 1e-6  # s: two times closer than this are one
HOLD_S = 0.25  # a frame shown this long (s) across a clip's start or end is held
# A clip whose seek landed after the frame it needed is cut again decoding from where the
# demuxer lands seeking this long before it (a keyframe lies in between unless keyframes
# are further apart), and only then, if still not whole, from the file's start.
LEAD_S = 20.0
# The end of a source's picture is read from this long (s) before its header's end, and
# taken where it is later, by up to two frame intervals or this long (s): a header may end
# where the last frame begins, or short of it; a damaged timestamp lies anywhere.
TAIL_S, PAST_HEADER_S = 10.0, 1.0
UNORDERED = (
    "the source stores no presentation time for frames its codec reorders (B-frames in AVI, "
    "ASF or MPEG-PS): a stream copy into MP4 would show them out of order; re-encoded"
)
# ffmpeg's words when MP4 cannot hold a codec (WMV, DV, Theora, ProRes, VP8 …): every FFmpeg
# since 4 says "Could not find tag for codec X in stream #0, codec not currently supported".
REFUSED_CODEC = "Could not find tag for codec"
UNCOPYABLE = "MP4 cannot hold the source's codec ({codec}): re-encoded"
HEADERLESS = (
    "the source is an elementary stream (no container whose index a seek could use): cut "
    "by decoding from its start, re-encoded"
)
RESTARTS = (
    "the source's clock starts again: cut on the timeline that goes on (from the file's "
    "start), re-encoded"
)


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
    return load_report(path)[0]


def load_report(path: Path | str) -> tuple[list[Segment], str | None]:
    """``load_segments``, and the video a ``vidcap mask`` report names (None: a bare list,
    or a report that names none)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder: give a segments JSON file (a `vidcap mask` report)")
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a segments JSON file ({_reason(exc)})") from exc
    rows = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise UsageError(
            f"{path}: expected a list of segments or a 'vidcap mask' report with 'segments'"
        )
    named = data.get("video") if isinstance(data, dict) else None
    segments = [_parse_segment(path, i, row) for i, row in enumerate(rows, start=1)]
    return segments, named if isinstance(named, str) and named else None


def check_report_video(segments: Path, named: str | None, video: Path) -> None:
    """A ``vidcap mask`` report (``segments``) names the video its times are of (``named``,
    ``load_report``): cutting another one by them is a usage error where that video is here,
    and a warning where only its name differs (a report made elsewhere, a library moved)."""
    if named is None:
        return
    other = Path(named)
    try:
        same = other.samefile(video)
    except OSError:  # (not here)
        if other.name != video.name:
            log.warning(
                "%s is a report of %s, not of %s: its times may not be this video's",
                segments, named, video,
            )  # fmt: skip
        return
    if not same:
        raise UsageError(
            f"{segments} is a report of {named}, not of {video}: give that video, or a "
            "report of this one"
        )


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
    if end > MAX_SEGMENT_S:  # (its clip's name, which holds the times, would be too long)
        raise UsageError(f"{where}: end {end:g} s is past any video ({MAX_SEGMENT_S:g} s)")
    frames = row.get("frames", 0)
    return Segment(float(start), float(end), frames if isinstance(frames, int) else 0)


# A segment's times are at most this (31 years): beyond it a time is no video's.
MAX_SEGMENT_S = 1e9
# A clip's name adds up to ~60 bytes to its source's stem (scene, piece, times of a long
# video, ``.mp4.part``): the stem keeps at most this many, within 255.
CLIP_STEM_MAX = 180


def clip_name(stem: str, number: int, segment: Segment) -> str:
    """Stable name: ``<stem>_0001_3.000-7.000.mp4`` (number, then start-end in seconds)."""
    return (
        f"{short_stem(stem, CLIP_STEM_MAX)}_{number:04d}_{segment.start:.3f}-{segment.end:.3f}.mp4"
    )


def cut_arguments(
    video: Path,
    start: float,
    length: float,
    output: str,
    precise: bool,
    seek_late: bool = False,
    timing: SourceTiming | None = None,
    held: float | None = None,
    lead: float = 0.0,
) -> list[str]:
    """ffmpeg arguments for one clip: the video stream (``timing.stream``, its index in the
    file: the one ``vidcap.container.video_stream`` picks) and any audio, MP4 out.
    ``precise``: re-encoded (a transparent source onto white, decoded by ``timing.decoder``
    where FFmpeg's own decoder would not see its alpha), else a stream copy.

    ``seek_late``: seek on ffmpeg's output side (``-ss`` after ``-i``): it decodes from the
    file's start, slow on a long file, but right where the demuxer cannot seek to a keyframe;
    with ``lead`` (s), from where the demuxer lands seeking that long before ``start``: right
    wherever a keyframe lies between there and ``start``.

    ``held`` (frames a second; re-encoded): the picture is resampled to that constant rate,
    each frame repeated for as long as it is shown, so a frame shown since before ``start``
    opens the clip and the last one lasts to its end; ffmpeg's frame-accurate seek drops a
    frame that began before ``start``, and a copy ends a frame after the last one begins.
    The video is read from the keyframe before ``start`` (a second input, seeking exactly,
    gives the sound).
    """
    stream = timing.stream if timing else None
    transparent = precise and timing is not None and timing.transparent
    decoder = ["-c:v", timing.decoder] if transparent and timing.decoder else []
    if precise:
        interlaced = INTERLACED if timing is not None and timing.interlaced else []
        chain = []
        if held is not None:  # (the stream's last frame cloned on, for as long as the clip
            # may reach past it from the keyframe read first: a picture held while the sound
            # goes on is shown to the clip's end, where -t cuts)
            chain = [
                f"tpad=stop_mode=clone:stop_duration={start + length:.6f}",
                f"fps={held:.6f}:start_time=0",
            ]
        chain += [ONTO_WHITE] * transparent
        picture = [*(["-vf", ",".join(chain)] if chain else []), *PRECISE_VIDEO, *interlaced]
        codecs = [*picture, *every_frame_at_its_time(), *PRECISE_AUDIO]
    else:
        codecs = ["-c", "copy"]
    name = ffmpeg_input(video, timing)
    seek, source = ["-ss", f"{start:.6f}"], [*decoder, "-i", name]
    sound = "0:a?"
    if held is not None:  # the picture from the keyframe before, the sound exactly
        inputs = ["-noaccurate_seek", *seek, *source, *seek, "-i", name]
        sound = "1:a?"
    else:
        inputs = source + seek if seek_late else seek + source
        if seek_late and lead > 0 and start > lead:
            inputs = ["-ss", f"{start - lead:.6f}", *source, "-ss", f"{lead:.6f}"]
    return [
        *inputs,
        "-t", f"{length:.6f}",
        "-map", "0:v:0" if stream is None else f"0:{stream}", "-map", sound,
        *codecs,
        "-movflags", "+faststart",
        "-f", "mp4", "-y", output,
    ]  # fmt: skip


def export_clip(
    video: Path,
    segment: Segment,
    output: Path,
    precise: bool,
    timing: SourceTiming,
) -> Clip:
    """Cut one segment into ``output`` atomically and probe what came out.

    A stream copy that ffmpeg refuses is redone as a re-encode, and the clip says why.
    A clip that comes out without its start (no video, or shorter than asked by more than
    1.5 frame intervals: ffmpeg's seek landed after the keyframe it needed, as in an MPEG-TS
    whose keyframes its demuxer cannot find) is redone frame-accurately by decoding from the
    file's start, and says so.
    """
    end = min(segment.end, timing.duration)
    mode, note = (PRECISE if precise else STREAM_COPY), None
    # Re-encoded whatever was asked: MP4 keeps no alpha; where timestamps repeat, a stream
    # copy can start only at a keyframe after the cut (the seek is on ffmpeg's output side);
    # where frames carry no presentation time, a copy into MP4 shows them out of order.
    why = [TRANSPARENT] * timing.transparent + [RESTARTS] * timing.restarts
    if timing.uncopyable:  # (an earlier clip's stream copy was refused)
        why.append(UNCOPYABLE.format(codec=timing.codec))
    if timing.headerless:  # (decoded from the start: whether it stores an order is moot)
        why.append(HEADERLESS)
    elif timing.unordered:
        why.append(UNORDERED)
    if why:
        mode, note = (PRECISE if precise else REENCODED), "; ".join(why)
    start = max(0.0, segment.start + timing.offset)
    length = end + timing.offset - start
    unheld = timing.restarts or timing.unordered or timing.headerless
    held = None if unheld else held_edge(video, start, length, timing)
    if held is not None:
        why.append(held)
        mode, note = (PRECISE if precise else REENCODED), "; ".join(why)
    reencode = precise or bool(why)

    def cut(precise: bool, seek_late: bool = False, lead: float = 0.0) -> None:
        # (past a restart ffmpeg's timeline goes on, as vidcap's does)
        late = seek_late or timing.restarts or timing.headerless
        rate = held_rate(timing) if held is not None and not seek_late else None
        _cut(output, lambda part: cut_arguments(
            video, start, length, part, precise, late, timing, rate, lead))  # fmt: skip

    try:  # (where frames store no order, FFmpeg 5.1's seek in the file can land on a frame
        # that is no keyframe: gray pictures until the next; decoded from well before: exact)
        cut(reencode, seek_late=timing.unordered, lead=LEAD_S if timing.unordered else 0.0)
    except FfmpegError as exc:
        if reencode:
            raise
        if REFUSED_CODEC in str(exc):
            note = UNCOPYABLE.format(codec=timing.codec)
            log.info("%s: %s", output.name, note)
        else:
            note = f"stream copy failed: {exc}"
            log.warning("%s: %s; re-encoding this clip", output.name, note)
        mode = REENCODED
        try:
            cut(precise=True)
        except FfmpegError as again:
            raise FfmpegError(
                f"{video}: could not cut {output.name}: {note}; re-encoding failed too: {again}"
            ) from again
    last = None if unheld else lambda: last_frame_before(video, start, start + length)
    tolerance = 1.5 * timing.frame
    missing = _missing_start(output, length, tolerance, last)
    if missing:
        again = f"{missing}: ffmpeg's seek in the source landed after the frame it needed"
        note = again if note is None else f"{note}; {again}"
        mode = PRECISE if precise else REENCODED
        # (not past a restart, nor in a headerless stream, whose demuxer cannot seek)
        if start > LEAD_S and not (timing.restarts or timing.headerless):
            log.info("%s: %s; cutting again from %g s before it", output.name, again, LEAD_S)
            cut(precise=True, seek_late=True, lead=LEAD_S)
            if (missing := _missing_start(output, length, tolerance, last)) is None:
                note += f"; cut again from {LEAD_S:g} s before it"
        if missing:
            log.warning("%s: %s; cutting again from the file's start", output.name, again)
            cut(precise=True, seek_late=True)
        if first_frame_time(output) is None:
            output.unlink(missing_ok=True)  # (no clip of no frame under a clip's name)
            raise VideoError(f"{video}: no frame decodes between {segment.start} and {end} s")
    duration = clip_duration(output)
    log.info("wrote %s (%.3f s, %s)", output, duration, mode)
    return Clip(output.name, str(video), segment.start, end, round(duration, DECIMALS), mode, note)


def held_edge(video: Path, start: float, length: float, timing: SourceTiming) -> str | None:
    """Why a clip of ``video`` from ``start`` (s, ffmpeg's seek timeline) for ``length`` s
    needs its frames held, or None: a clip no frame begins in (within one frame), a frame
    that began more than ``HOLD_S`` before its start, or whose successor begins more than
    that after its end — a slideshow, a screen recording
    that writes a frame only when the screen changes, a timelapse of a few frames a second.
    Never from the frame rate the container states: a slideshow MP4's average rate is one
    frame in 7.5 s. Unknown (None) where the packets read do not reach back to ``start``."""
    from vidcap.container import packet_positions

    end = start + length
    times = packet_positions(video, start, end)
    if not times or times[0] > start + EPSILON:
        return None
    inside = [t for t in times if start - EPSILON <= t < end - EPSILON]
    before_end = [t for t in times if t < end - EPSILON]
    if not before_end:
        return None
    lead = (inside[0] if inside else end) - start
    tail = end - before_end[-1]
    repeated = (
        f"re-encoded at {held_rate(timing):g} frames/s, each frame repeated for as long as it "
        "is shown"
    )
    if not inside:  # (ffmpeg's exact seek would drop the one frame it shows: none left)
        return f"the clip lies within one frame of the source, shown from before it: {repeated}"
    if max(lead, tail) <= HOLD_S:
        return None
    where, gap = ("start", lead) if lead > HOLD_S else ("end", tail)
    return (
        f"the source shows one frame for {gap:.3f} s of the clip at its {where} (a slideshow, "
        f"a screen recording): {repeated}"
    )


def held_rate(timing: SourceTiming) -> float:
    """The constant rate a clip with held frames is re-encoded at: the source's own, kept
    between 25 and 60 frames a second (a slideshow's stated rate can be one frame in 7.5 s;
    a frame shorter than one tick of this rate may be left out)."""
    return min(max(1 / timing.frame, 25.0), 60.0)


@dataclass(frozen=True)
class SourceTiming:
    """What cutting needs to know of a source: ``duration`` on vidcap's frame times,
    ``offset`` (``vidcap.container.seek_offset``) from those times to ffmpeg's seek positions
    (frame times keep a late start; ffmpeg seeks from the container's start), ``frame`` the
    frame interval, ``stream`` the video stream's index in the file, ``transparent``: it has
    an alpha channel, which ``decoder`` (when not None) must decode for ffmpeg to see;
    ``restarts``: its clock starts again (MPEG-TS/PS), so its timestamps repeat — clips are
    cut by seeking on ffmpeg's output side, whose timeline goes on past a reset as vidcap's
    does, and the duration is that timeline's; ``interlaced``: its first frame is, so a
    re-encoded clip is coded interlaced too (each frame's field order kept), not as woven
    progressive frames a player would not deinterlace; ``unordered``: it stores no
    presentation time for frames its codec reorders (``container.stores_no_order``), so
    clips are re-encoded; ``headerless``: an elementary stream (``MediaInfo.headerless``),
    cut by decoding from its start and re-encoded; ``codec``: its video codec (ffprobe's
    name); ``uncopyable``: MP4 refused that codec in an earlier clip's stream copy;
    ``whole``: a fragmented MP4 cut off inside a fragment's 'moof' (a crashed recording):
    where its whole fragments end, all ffmpeg reads (``ffmpeg_input``)."""

    duration: float
    offset: float = 0.0
    frame: float = 0.04
    stream: int | None = None
    transparent: bool = False
    decoder: str | None = None
    restarts: bool = False
    interlaced: bool = False
    unordered: bool = False
    headerless: bool = False
    codec: str = ""
    uncopyable: bool = False
    whole: int | None = None

    @property
    def origin(self) -> float:
        """Where the file starts on vidcap's frame times (s): its first frame, or sound,
        shows no earlier (a late-start MP4's first frame is at its late start)."""
        return max(0.0, -self.offset)

    def after(self, clip: Clip) -> SourceTiming:
        """This source's timing for its next clips: where MP4 refused its codec in ``clip``'s
        stream copy, they are re-encoded at once (no failed copy each, no note of one)."""
        refused = UNCOPYABLE.format(codec=self.codec)
        return replace(self, uncopyable=True) if (clip.note or "").startswith(refused) else self

    @classmethod
    def of(cls, video: Path) -> SourceTiming:
        from vidcap.container import picture_end, seek_offset, stores_no_order
        from vidcap.torn import whole_fragments_end
        from vidcap.video import restarted_duration

        info = probe(video)
        offset = seek_offset(video)
        frame = 1 / info.fps if info.fps > 0 else 0.1
        restarted = restarted_duration(video)
        duration = info.duration - offset if restarted is None else restarted
        if restarted is None:  # (where the last frame ends, if later: not a damaged pts's)
            end = picture_end(video, frame, after=duration - TAIL_S)
            if end is not None and duration < end <= duration + max(2 * frame, PAST_HEADER_S):
                duration = end
        first = first_frame(video)
        return cls(
            duration, offset, frame, info.stream, info.transparent, info.decoder,
            restarts=restarted is not None, interlaced=first is not None and first[1],
            unordered=stores_no_order(video), headerless=info.headerless, codec=info.codec,
            whole=whole_fragments_end(video),
        )  # fmt: skip


def ffmpeg_input(video: Path, timing: SourceTiming | None) -> str:
    """What the ffmpeg program opens for ``video``: the file, or, where it is a fragmented
    MP4 cut off inside a 'moof' (``SourceTiming.whole``), its first bytes up to its whole
    fragments, through FFmpeg's ``subfile`` protocol: ffmpeg 8 and 9 cannot open the whole
    file ("trun sample count … exceeds"), as PyAV cannot (``container.open_input``). The
    file is named with ``file:``, so no part of its path reads as a protocol."""
    path = str(video.resolve())
    if timing is None or timing.whole is None:
        return path
    return f"subfile,,start,0,end,{timing.whole},,:file:{path}"


def _missing_start(
    clip: Path,
    length: float,
    tolerance: float,
    last: Callable[[], float | None] | None = None,
) -> str | None:
    """Why ``clip`` lacks the start of what was cut, or None when it is whole: its first
    frame must show at its start (an MP4 edit list hides a stream copy's lead-in from the
    keyframe), and it must be about as long as asked — or, where it is shorter, end with
    the frame the source shows last before the cut's end (``last()``: that frame's time
    from the cut's start). A muxer gives a clip's last frame a duration of its own guess
    (FFmpeg 5.1 one nominal frame; one tenth of a second short at the end of a variable
    rate phone video's slow stretch), so the length alone would send such a clip to be
    cut again from the file's start."""
    first = first_frame_time(clip)
    if first is None:
        return "the clip came out without a frame"
    if first > tolerance:
        return f"the clip's first frame came out {first:.3f} s after its start"
    duration = clip_duration(clip)
    if duration >= length - tolerance:
        return None
    wanted = last() if last is not None else None
    shown = last_frame_before(clip, 0.0, math.inf) if wanted is not None else None
    if wanted is not None and shown is not None and abs(shown - wanted) <= tolerance:
        return None
    return f"the clip came out {duration:.3f} s long, not {length:.3f} s"


def clip_duration(clip: Path) -> float:
    """How long a clip vidcap wrote plays (s): to the end of its last frame or of its
    sound, whichever is later (``ffmpeg.playable_end``: what ffprobe 5 reports as the
    format's duration), never less than ``probe`` says. The libavformat PyAV bundles (62)
    reports the video track's decode-time steps summed instead, short of the last frame's
    end: with B-frames by their delay (1.068 s for a stream copy whose frames run to
    1.134 s), after a variable rate's slow stretch by its interval (1.4 s for a clip whose
    last frame shows from 1.7 s)."""
    probed = probe(clip).duration
    end = playable_end(clip)
    return probed if end is None else max(probed, end)


def last_frame_before(video: Path, start: float, end: float) -> float | None:
    """When the last frame of ``video`` shown before ``end`` begins, in seconds from
    ``start`` (both on ffmpeg's seek timeline); None if no frame is known there."""
    from vidcap.container import packet_positions

    before = [
        t for t in packet_positions(video, start, end) if start - EPSILON <= t < end - EPSILON
    ]
    return before[-1] - start if before else None


def first_frame_time(path: Path) -> float | None:
    """When the first frame of ``path`` that decodes is shown (s), None if none does."""
    first = first_frame(path)
    return None if first is None else first[0]


def first_frame(path: Path) -> tuple[float, bool] | None:
    """When the first frame of ``path`` that decodes is shown (s), and whether it is
    interlaced; None if none decodes."""
    import av

    from vidcap.container import open_input, video_stream

    try:
        with open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return None
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else 0.0
                return time, bool(frame.interlaced_frame)
    except av.FFmpegError:
        return None
    return None


def _cut(output: Path, arguments: Callable[[str], list[str]]) -> None:
    """Run ffmpeg with ``arguments(target)`` into a ``new_part`` of ``output``, renamed
    into place when whole (not fsynced, as ffmpeg's own output is not).

    ffmpeg writes the part through the descriptor vidcap made it with, passed down as
    ``/dev/fd/N``: never by its name, which someone sharing the folder could have pointed
    elsewhere in between (a part whose name no longer holds that file is never renamed)."""
    part = part_path(output)
    with new_part(output, durable=False) as handle:
        fd = handle.fileno()
        run_ffmpeg(arguments(f"/dev/fd/{fd}"), pass_fds=(fd,))
        made, named = os.fstat(fd), os.lstat(part)
        if (made.st_dev, made.st_ino) != (named.st_dev, named.st_ino):  # (never renamed in)
            raise OSError(errno.EEXIST, "replaced while ffmpeg wrote it", str(part))


def export_clips(
    video: Path | str, segments: list[Segment], out_dir: Path | str, precise: bool = False
) -> list[Clip]:
    """Every segment of ``video`` as its own MP4 in ``out_dir``, then ``manifest.json``."""
    video, out_dir = Path(video), Path(out_dir)
    timing = SourceTiming.of(video)
    duration, origin = timing.duration, timing.origin
    for number, segment in enumerate(segments, start=1):
        if segment.start >= duration:
            raise UsageError(
                f"segment {number} starts at {segment.start} s, at or after the end of "
                f"{video} ({duration:.3f} s)"
            )
        if segment.end <= origin + EPSILON:
            raise UsageError(
                f"segment {number} ends at {segment.end} s, before {video} starts "
                f"({origin:.3f} s: its times are the frames' own, a late start kept)"
            )
    check_clips_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / MANIFEST_NAME, video, precise)
    for number, asked in enumerate(segments, start=1):
        # (what the video holds of it: its clip's name and manifest times are these)
        seg = Segment(max(asked.start, origin), min(asked.end, duration), asked.frames)
        output = out_dir / clip_name(video.stem, number, seg)
        manifest.cutting(output.name)
        clip = export_clip(video, seg, output, precise, timing)
        manifest.add(clip)
        timing = timing.after(clip)
    manifest.finish()
    return manifest.clips


class Manifest:
    """A clips folder's ``manifest.json``, rewritten as each clip is cut: a run stopped
    part-way (Ctrl-C, a kill, a failed clip) leaves one saying ``"complete": false``, listing
    the clips it wrote, and under ``pending`` the one it was cutting and those an earlier
    manifest listed that it had not yet removed; the next run into the folder removes every
    one of them it does not cut again. ``finish`` removes the earlier ones, then writes it
    ``"complete": true``."""

    def __init__(self, path: Path, video: Path, precise: bool) -> None:
        self.path, self.video, self.precise = path, video, precise
        self.pending = _listed_clips(path)
        self.clips: list[Clip] = []

    def cutting(self, name: str) -> None:
        """``name`` listed before it is cut: if a stop leaves it, the next run removes it."""
        self.pending.add(name)
        self._write(complete=False)

    def add(self, clip: Clip) -> None:
        self.clips.append(clip)
        self._write(complete=False)

    def finish(self) -> None:
        for name in self.pending - {clip.path for clip in self.clips}:
            for stale in (self.path.parent / name, (self.path.parent / name).with_suffix(".json")):
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink()
        self.pending = set()
        self._write(complete=True)

    def _write(self, complete: bool) -> None:
        manifest: dict[str, Any] = {
            "source": str(self.video),
            "mode": PRECISE if self.precise else STREAM_COPY,
            "complete": complete,
            "clips": [asdict(clip) for clip in self.clips],
        }
        if pending := self.pending - {clip.path for clip in self.clips}:
            manifest["pending"] = sorted(pending)
        write_atomic(self.path, json.dumps(manifest, indent=2) + "\n", durable=complete)


def _clips_manifest(path: Path) -> dict[str, Any] | None:
    """``path`` as ``vidcap clips`` writes a manifest (its ``clips`` a list; no ``type``,
    which a FiftyOne export's names), else None: absent, unreadable or another tool's."""
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ours = isinstance(data, dict) and isinstance(data.get("clips"), list) and "type" not in data
    return data if ours else None


def _listed_clips(manifest: Path) -> set[str]:
    """The clip names an earlier ``manifest.json`` lists (its clips, and those a run stopped
    part-way had yet to remove): plain ``.mp4`` names in its folder only (a hand-edited one
    may name anything)."""
    data = _clips_manifest(manifest)
    rows = data["clips"] if data is not None else []
    names = {row.get("path") for row in rows if isinstance(row, dict)}
    pending = data.get("pending") if data is not None else None  # (a run stopped part-way)
    names |= (
        {name for name in pending if isinstance(name, str)} if isinstance(pending, list) else set()
    )
    return {
        name
        for name in names
        if isinstance(name, str) and name.endswith(".mp4") and Path(name).name == name
    }


def check_clips_folder(out_dir: Path) -> None:
    """A usage error unless ``out_dir`` is new, or its ``manifest.json`` (if any) is one
    ``vidcap clips`` wrote: never over another tool's manifest (a FiftyOne export's)."""
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file() and _clips_manifest(manifest) is None:
        raise UsageError(
            f"{out_dir} holds a {MANIFEST_NAME} that `vidcap clips` did not write (a "
            "`vidcap export` folder?): give another folder"
        )


# ---- clips per scene ---------------------------------------------------------------------

SCENES_SUFFIX = ".scenes.jsonl"


@dataclass(frozen=True)
class ScenePiece:
    """One clip to cut from a scene: the scene's row (``<name>.scenes.jsonl``), which piece
    of it (1 unless ``--max-duration`` split it) and its [start, end) in seconds."""

    row: dict[str, Any]
    part: int
    start: float
    end: float

    def captions(self) -> list[dict[str, Any]]:
        """The scene's sampled frames inside this piece."""
        return [c for c in self.row["captions"] if self.start <= c["time"] < self.end]

    def caption(self) -> str:
        """The caption of the piece's sample nearest its middle; the scene's when it has none."""
        inside = self.captions()
        if not inside:
            return self.row["caption"]
        middle = (self.start + self.end) / 2
        return min(inside, key=lambda c: (abs(c["time"] - middle), c["time"]))["caption"]


def load_scenes(path: Path | str) -> list[dict[str, Any]]:
    """The rows of a ``<name>.scenes.jsonl`` (``vidcap caption --scenes``), checked."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = jsontext.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {number}: not JSON ({exc.msg})") from exc
            rows.append(_check_scene(path, number, row))
    if not rows:
        raise UsageError(f"{path}: no scenes")
    named = list(dict.fromkeys(row["video"] for row in rows))
    if len(named) > 1:
        raise UsageError(
            f"{path}: its rows name more than one video ({named[0]}, {named[1]}): a scenes "
            "file is one video's"
        )
    return rows


# A scene's number names its clips (``scene0003``): beyond this, no video's.
MAX_SCENE_NUMBER = 10**9


def _check_scene(path: Path, number: int, row: object) -> dict[str, Any]:
    where = f"{path}: line {number}"
    if not isinstance(row, dict) or not isinstance(row.get("video"), str):
        raise UsageError(f"{where}: not a scene row of `vidcap caption --scenes`")
    if "scene" not in row and "time" in row and "caption" in row:  # (the JSONL beside it)
        raise UsageError(
            f"{path}: a caption JSONL, not a scenes file: give the <name>{SCENES_SUFFIX} that "
            "`vidcap caption --scenes` writes beside it"
        )
    for name in ("scene", "start", "end"):
        if not is_number(row.get(name)):
            raise UsageError(f"{where}: '{name}' must be a number, got {row.get(name)!r}")
    if row["end"] <= row["start"] or row["start"] < 0:
        raise UsageError(f"{where}: end {row['end']} is not after start {row['start']}")
    if type(row["scene"]) is not int or not 1 <= row["scene"] <= MAX_SCENE_NUMBER:
        raise UsageError(
            f"{where}: 'scene' must be a whole number from 1 to {MAX_SCENE_NUMBER}, got "
            f"{row['scene']!r}"
        )
    row.setdefault("caption", "")
    row.setdefault("captions", [])
    if not isinstance(row["caption"], str):
        raise UsageError(f"{where}: 'caption' must be text, got {row['caption']!r}")
    if not isinstance(row["captions"], list):
        raise UsageError(f"{where}: 'captions' must be a list, got {row['captions']!r}")
    for sample in row["captions"]:
        if not (
            isinstance(sample, dict)
            and is_number(sample.get("time"))
            and isinstance(sample.get("caption"), str)
        ):
            raise UsageError(
                f"{where}: each of 'captions' must be an object with a number 'time' and a "
                f"text 'caption', got {sample!r}"
            )
    return row


def scene_pieces(
    rows: Sequence[dict[str, Any]],
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> list[ScenePiece]:
    """The clips of ``rows``: scenes shorter than ``min_duration`` dropped, longer than
    ``max_duration`` split at that stride from their start (a last piece shorter than
    ``min_duration`` dropped)."""
    if min_duration is not None and min_duration < 0:
        raise UsageError(f"--min-duration must be >= 0, got {min_duration}")
    if max_duration is not None and not max_duration > 0:
        raise UsageError(f"--max-duration must be > 0, got {max_duration}")
    if min_duration and max_duration and min_duration > max_duration:
        raise UsageError(
            f"--min-duration {min_duration} is longer than --max-duration {max_duration}"
        )
    shortest = min_duration or 0.0
    pieces = []
    for row in rows:
        start, end = float(row["start"]), float(row["end"])
        step = max_duration or (end - start)
        part, at = 1, start
        while at < end - 1e-9:
            stop = min(at + step, end)
            if stop - at + 1e-9 >= shortest:
                pieces.append(ScenePiece(row, part, round(at, DECIMALS), round(stop, DECIMALS)))
            part, at = part + 1, stop
    return pieces


def scene_clip_name(stem: str, piece: ScenePiece) -> str:
    """``<stem>_scene0003_02_4.000-6.000.mp4``: scene number, piece, start-end in seconds."""
    number = int(piece.row["scene"])
    return (
        f"{short_stem(stem, CLIP_STEM_MAX)}_scene{number:04d}_{piece.part:02d}_"
        f"{piece.start:.3f}-{piece.end:.3f}.mp4"
    )


def export_scene_clips(
    video: Path | str,
    rows: Sequence[dict[str, Any]],
    out_dir: Path | str,
    precise: bool = False,
    min_duration: float | None = None,
    max_duration: float | None = None,
) -> list[Clip]:
    """Every scene piece of ``video`` as ``<clip>.mp4`` + ``<clip>.json`` in ``out_dir``,
    then ``manifest.json``."""
    video, out_dir = Path(video), Path(out_dir)
    pieces = scene_pieces(rows, min_duration, max_duration)
    timing = SourceTiming.of(video)
    duration = timing.duration
    for piece in pieces:  # (checked before any is cut: no folder of half the clips)
        if piece.start >= duration and piece.part == 1:
            raise UsageError(
                f"scene {piece.row['scene']} starts at {piece.start} s, at or after the end of "
                f"{video} ({duration:.3f} s): is it the video of these scenes?"
            )
    # (a scene's end may lie well past the file's, by its last frame's duration: a
    # slideshow's; a sample is a frame the video showed)
    sampled = [float(c["time"]) for row in rows for c in row["captions"]]
    if sampled and max(sampled) >= duration + EPSILON:
        log.warning(
            "%s: the scenes' samples reach %.3f s, the video ends at %.3f s: is it the video "
            "of these scenes? Their clips are cut to its end",
            video, max(sampled), duration,
        )  # fmt: skip
    check_clips_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir / MANIFEST_NAME, video, precise)
    for piece in pieces:
        if piece.start >= duration:  # a scene whose end, by its last frame's duration, is
            # past the file's: the pieces after its end hold nothing
            log.info("%s: no %s (after the end)", video, scene_clip_name(video.stem, piece))
            continue
        # (what the video holds of it, cut short at its end: the clip's name says these
        # times, as its manifest entry does)
        held = replace(piece, end=min(piece.end, duration))
        segment = Segment(held.start, held.end, len(piece.captions()))
        output = out_dir / scene_clip_name(video.stem, held)
        manifest.cutting(output.name)
        clip = export_clip(video, segment, output, precise, timing)
        timing = timing.after(clip)
        pair = {
            "clip": clip.path,
            "video": str(video),
            "scene": piece.row["scene"],
            "part": piece.part,
            "start": clip.start,
            "end": clip.end,
            "duration": clip.duration,
            "mode": clip.mode,
            "caption": piece.caption(),
            "captions": piece.captions(),
        }
        if clip.note:
            pair["note"] = clip.note
        write_atomic(
            output.with_suffix(".json"), json.dumps(pair, indent=2, ensure_ascii=False) + "\n"
        )
        manifest.add(clip)
    manifest.finish()
    return manifest.clips


def scene_files(path: Path | str) -> list[Path]:
    """``path`` itself (a ``.scenes.jsonl``), or every one in an output folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(f"*{SCENES_SUFFIX}"))
        if not files:
            raise UsageError(
                f"{path}: no *{SCENES_SUFFIX} files (an output folder of `vidcap caption --scenes`)"
            )
        return files
    return [path]


def scene_file_name(path: Path) -> str:
    """``OUT/talk.scenes.jsonl`` → ``talk``."""
    name = path.name
    return name[: -len(SCENES_SUFFIX)] if name.endswith(SCENES_SUFFIX) else path.stem
