"""What a video's container says before any frame is decoded: which stream is the video,
its frame rate, where its time counts from, how long its header says it is, and the demux
pass — every packet's time read without decoding (a few ms), the plan ``VideoReader``
decodes by (``vidcap.video``).

Times count from zero in MP4/MOV and Matroska/WebM (a late start is kept, as players show
it) and from the file's start elsewhere (its earliest stream's: MPEG-TS/PS timestamps have
an arbitrary origin, and a picture that starts after its sound keeps the delay).
"""

from __future__ import annotations

import errno
import functools
import itertools
import math
import os
import re
from array import array
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from vidcap.edit_list import edit_list
from vidcap.errors import VideoError
from vidcap.ffmpeg import FOLLOWS, follows, local_name, packets_end
from vidcap.picture import format_has_alpha
from vidcap.torn import (
    FileHead,
    asf_stated_length,
    matroska_states_duration,
    mp4_boxes,
    unfinished_mp4,
    whole_fragments_end,
)

if TYPE_CHECKING:
    from vidcap.decoded import VideoStats

# Frames missing at the end count as failed only beyond this many frame intervals.
TAIL_TOLERANCE_FRAMES = 1.5
# Container families whose timeline starts at zero by definition: a first frame later than
# zero (an MP4 edit list's initial empty edit, a Matroska stream's late first block) is a
# delay players show, and is kept. Elsewhere (MPEG-TS/PS: an arbitrary origin such as 1.4 s)
# times count from the file's start: its earliest stream's, as players and ffmpeg count.
DELAY_KEEPING_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
# Formats whose header states the file's length but no stream's: Matroska/WebM (the
# segment's duration), FLV (its onMetaData duration, which FFmpeg's muxer writes at the end
# and a cut-off download keeps).
FILE_DURATION_FORMATS = frozenset({"matroska", "webm", "flv"})
# Formats whose header states one length for every stream, the file's (ASF's play duration,
# which FFmpeg gives each stream): a video track that ends before its sound loses nothing.
FILE_LENGTH_FORMATS = frozenset({"asf"})
# A picture shown this much longer than its own frame lasts, because the sound goes on,
# ends the video where the sound ends (``held_end``); a shorter overhang (AAC's padding,
# a few tens of milliseconds) is no held picture.
HELD_PICTURE_S = 1.0
# Formats whose header states each track's length: MP4/MOV (each track's duration, its edit
# list applied), Matroska/WebM (the per-track DURATION tag; ``_header_length``). Elsewhere a
# stream's length is FFmpeg's estimate.
TRACK_LENGTH_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
# Formats whose track may carry an edit list (what is shown of the media, in what order).
EDIT_LIST_FORMATS = frozenset({"mov", "mp4"})
# Containers that store no presentation times, only decode order (FFmpeg infers pts): AVI,
# and ASF (WMV, DVR-MS), whose packets carry their send times, read as decode times.
NO_PTS_FORMATS = frozenset({"avi", "asf"})
AVFMT_NOTIMESTAMPS = 0x0080  # libavformat's flag for raw streams without timestamps
AVFMT_TS_DISCONT = 0x0200  # libavformat's "timestamps may start again" (MPEG-TS/PS)
# In such a format, a packet more than this before the latest, or more than this after it,
# is on a clock that started again (recordings joined, a splice in a broadcast): the ffmpeg
# command's thresholds (a dts 0.1 s before the latest; `-dts_delta_threshold`, 10 s).
RESET_BACK_S = 0.1
RESET_FORWARD_S = 10.0
# Decoders that give no frame for pictures predicted from frames never decoded (a stream
# that starts mid-GOP), without ``flags2 showall``: checked on x264/x265 (open and closed
# GOPs) and MPEG-2 cut mid-GOP in MPEG-TS. MPEG-4 Part 2's shows them, damaged.
DROPS_UNREFERENCED = frozenset({"h264", "hevc", "mpeg2video"})
AVFMT_FLAG_GENPTS = 0x0001  # libavformat's "generate missing pts" (PyAV always sets it)
MAX_PLAUSIBLE_FPS = 1000  # a codec's frame rate above this is a time base, not a rate
AV_DISPOSITION_DEFAULT = 0x0001  # a stream's "default" flag (libavformat's dispositions)
AV_DISPOSITION_ATTACHED_PIC = 0x0400  # a cover picture, not a video
# MPEG-4 Part 2: a picture (VOP) starts with this code; an "N-VOP" (not coded: a packed
# stream's placeholder) is a header only, a few bytes.
VOP_START_CODE = b"\x00\x00\x01\xb6"
N_VOP_MAX_BYTES = 8


@functools.cache
def allowed_demuxers() -> str:
    """Every demuxer of PyAV's FFmpeg but ``vidcap.ffmpeg.FOLLOWING_DEMUXERS``: its
    ``format_whitelist``."""
    return ",".join(
        sorted(
            name
            for name in av.formats_available
            if not follows(name) and av.ContainerFormat(name).is_input
        )
    )


def open_input(path: Path | str) -> av.container.InputContainer:
    """``path`` opened by PyAV with a demuxer that reads the file alone (none of
    ``vidcap.ffmpeg.FOLLOWING_DEMUXERS``: FFmpeg refuses with EINVAL where its contents
    call for one). A fragmented MP4 cut off inside a fragment's index ('moof': a crashed
    OBS recording), which FFmpeg cannot open, is opened up to its whole fragments
    (``whole_fragments_end``: a few reads, where opening it failed)."""
    options = {"format_whitelist": allowed_demuxers()}
    try:
        return av.open(local_name(path), options=options)
    except av.FFmpegError as exc:
        end = None if exc.errno == errno.EINVAL else whole_fragments_end(path)
        if end is None:
            raise
    return av.open(FileHead(local_name(path), end), options=options)


def why_unopened(path: Path | str, exc: av.FFmpegError) -> str:
    """Why ``open_input`` failed with ``exc``, in words."""
    if exc.errno == errno.EINVAL:  # the only option given is the demuxers allowed
        return FOLLOWS
    return unfinished_mp4(path) or f"FFmpeg cannot open it: {exc.strerror or exc}"


def open_container(path: Path) -> av.container.InputContainer:
    """``open_input``; a file FFmpeg cannot open is a one-line ``VideoError``."""
    try:
        return open_input(path)
    except av.FFmpegError as exc:
        raise unopened(path, exc, "not a decodable video") from exc


def unopened(path: Path | str, exc: av.FFmpegError, what: str) -> VideoError:
    """The one-line error of a file ``open_input`` could not open: ``what`` it is not, and
    why; a file this process may not read is said as such (it was "not a decodable
    video (FFmpeg cannot open it: Permission denied)")."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return VideoError(f"{path}: cannot read it ({exc.strerror or 'Permission denied'})")
    return VideoError(f"{path}: {what} ({why_unopened(path, exc)})")


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream a player shows (None: the file has none): never a cover picture (an
    attached picture), the one flagged default where some are and some are not, else the
    first, as mpv picks. A cover FFmpeg's Matroska muxer stored as an ordinary first track
    (its attached-picture flag dropped, the film's default flag kept) is not the video."""
    moving = [s for s in container.streams.video if not _is_cover(s)]
    flagged = [s for s in moving if int(s.disposition) & AV_DISPOSITION_DEFAULT]
    return (flagged or moving or [None])[0]


def other_video_streams(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> list[av.video.stream.VideoStream]:
    """The video streams of ``container`` other than ``stream`` that move: not a cover,
    flagged as one or (FFmpeg's Matroska muxer) stored as an ordinary one-picture track."""
    others = [s for s in container.streams.video if s.index != stream.index and not _is_cover(s)]
    return [s for s in others if _moves(container.name, s.index)] if others else []


def _moves(path: str, index: int) -> bool:
    """Does stream ``index`` of ``path`` hold more than one picture? (Read until a second
    one: at once for a video, to the end for a cover.) Unreadable: assumed to."""
    try:
        with open_container(Path(path)) as container:
            pictures = 0
            for packet in container.demux(container.streams[index]):
                pictures += bool(packet.size)
                if pictures > 1:
                    return True
    except av.FFmpegError:
        return True
    return False


def _is_cover(stream: av.video.stream.VideoStream) -> bool:
    return bool(int(stream.disposition) & AV_DISPOSITION_ATTACHED_PIC)


def the_video_stream(
    container: av.container.InputContainer, path: Path | str
) -> av.video.stream.VideoStream:
    """``video_stream``, or a ``VideoError`` saying why there is none: a file whose only
    picture is a cover (a song or podcast with artwork) is no video."""
    stream = video_stream(container)
    if stream is not None:
        return stream
    if any(_is_cover(s) for s in container.streams.video):
        raise VideoError(f"{path}: no video stream, only a cover picture (audio with artwork)")
    raise VideoError(f"{path}: no video stream")


# (Pillow, a dependency, reads animated WebP; ffmpeg reads it from FFmpeg 9 on, not 5–8)
WEBP_CONVERT = "from PIL import Image; Image.open('IN.webp').save('OUT.gif', save_all=True)"
WEBP_HINT = (
    f'convert it first, e.g. python -c "{WEBP_CONVERT}" (256 colours), or with the ffmpeg '
    "of FFmpeg 9 or later: ffmpeg -i IN.webp -c:v libx264 -pix_fmt yuv420p OUT.mp4"
)


def undecodable_why(container: av.container.InputContainer, path: Path | str) -> str | None:
    """Why a file that opened gave no frame, where it is known: an animated WebP (FFmpeg 8,
    PyAV's, reads it as a still-image sequence and decodes none of its frames), an MP4
    cut off before any fragment was whole (``unfinished_mp4``), else None."""
    if EDIT_LIST_FORMATS & set(container.format.name.split(",")):
        return unfinished_mp4(path)
    if container.format.name != "webp_pipe":
        return None
    try:
        with open(local_name(path), "rb") as file:
            head = file.read(21)
    except OSError:
        return None
    # RIFF, its length, WEBP, then an extended header (VP8X) whose flags say "animation"
    if head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) == 21 and head[20] & 2:
        return f"an animated WebP, which the FFmpeg in PyAV cannot decode: {WEBP_HINT}"
    return None


# WebM's transparency (Matroska AlphaMode 1): a second VP8/VP9 picture per block, which
# FFmpeg's own decoders ignore and libvpx's decode (as `ffmpeg -c:v libvpx-vp9 -i` does).
ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


def alpha_decoder(stream: av.video.stream.VideoStream) -> str | None:
    """The decoder that reads ``stream``'s alpha where FFmpeg's own does not (libvpx's, for
    a WebM VP8/VP9 stream with alpha), else None."""
    name = ALPHA_DECODERS.get(stream.codec_context.name)
    alpha = any(k.lower() == "alpha_mode" and v.strip() == "1" for k, v in stream.metadata.items())
    return name if name is not None and alpha else None


def is_transparent(stream: av.video.stream.VideoStream) -> bool:
    """Has ``stream`` an alpha channel: a pixel format with alpha, or WebM's alpha?"""
    pix_fmt = stream.codec_context.pix_fmt
    return alpha_decoder(stream) is not None or (pix_fmt is not None and format_has_alpha(pix_fmt))


def nominal_rate(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Fraction | None:
    """The stream's frame rate: the container's average, except in a raw elementary stream
    (``.h264``, ``.hevc``, ``.m2v``: no timestamps, frames timed one interval apart), whose
    demuxer assumes 25 fps: there the codec's own timing comes first (the SPS's VUI, the
    MPEG-2 sequence header: FFmpeg's ``r_frame_rate``), as ffprobe reports it. An average
    above ``MAX_PLAUSIBLE_FPS`` is a time base (PyAV's for raw DV: 60000), not a rate: the
    next plausible of FFmpeg's guesses is taken."""
    if container.format.flags & AVFMT_NOTIMESTAMPS:
        guessed = stream.guessed_rate
        if guessed and 0 < guessed <= MAX_PLAUSIBLE_FPS:
            return guessed
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate <= MAX_PLAUSIBLE_FPS:
            return rate
    return stream.average_rate or stream.guessed_rate or stream.base_rate


def assumed_rate(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Fraction | None:
    """The frame rate FFmpeg assumes for a stream that holds no timestamps and whose codec
    declares no rate (raw MJPEG, which is JPEGs back to back; raw H.264 without timing in
    its SPS): its 25 frames/s, which times every frame; None where the file says."""
    raw = bool(container.format.flags & AVFMT_NOTIMESTAMPS) or any(
        name.endswith("_pipe") for name in container.format.name.split(",")
    )
    if not raw or stream.codec_context.framerate:
        return None
    return nominal_rate(container, stream)


def stream_start(stream: av.video.stream.VideoStream) -> float:
    """Where the stream's time starts (1.4 s in a typical MPEG-TS), in seconds."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def time_origin(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float:
    """The time that counts as 0 s, as players count: zero in MP4/MOV and Matroska/WebM,
    whose timeline starts at zero (a late first frame is a delay players show: kept); the
    file's start in other formats, whose timestamps count from an arbitrary origin (1.4 s in
    a typical MPEG-TS): the earliest stream's start, as FFmpeg works it out, so a picture
    that starts after its sound (0.6 s, say, in a broadcast recording or an FLV) keeps that
    delay as mpv, VLC and ffmpeg show it. A stream that starts before zero starts at 0 s
    everywhere."""
    start = stream_start(stream)
    if DELAY_KEEPING_FORMATS & set(container.format.name.split(",")):
        return min(start, 0.0)
    if container.start_time is None:
        return start
    return min(start, container.start_time / 1_000_000)


def seek_offset(path: Path | str) -> float:
    """What to add to a frame time of ``path`` to seek there with ``ffmpeg -ss`` before
    ``-i``: ffmpeg counts from the container's start (its earliest stream's), times here
    from ``time_origin`` (0 s in MP4/Matroska: -1.075 for a picture that starts 1.075 s
    late, and no audio earlier; 0 in an MPEG-TS, which counts from the file's start too)."""
    path = Path(path)
    with open_container(path) as container:
        stream = the_video_stream(container, path)
        start = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        return time_origin(container, stream) - start


def picture_end(path: Path | str, interval: float, after: float = 0.0) -> float | None:
    """Where ``path``'s picture ends on its frame times (``time_origin``'s): its latest
    video packet's presentation time plus that packet's duration, ``interval`` where it
    gives none. A variable-rate MP4 stores no duration for its last sample: its header's
    duration is where that frame begins, and a cut to it leaves the frame out. Read from
    the keyframe before ``after`` (s, on those times: cheap however long the file), or
    from the start where the demuxer cannot seek there. None where no packet says."""
    path = Path(path)
    with open_container(path) as container:
        stream = the_video_stream(container, path)
        origin = time_origin(container, stream)
        if after > 0 and stream.time_base is not None:
            try:
                container.seek(int((after + origin) / stream.time_base), stream=stream,
                               backward=True)  # fmt: skip
            except av.FFmpegError:
                container.seek(0)
        end = packets_end(container, stream, unknown=interval)
    return None if end is None else end - origin


def disable_generated_pts(container: av.container.InputContainer) -> None:
    """Read packets as ffprobe does: PyAV asks libavformat to invent missing pts
    (``AVFMT_FLAG_GENPTS``), which guesses wrong where exact mode cannot plan (packed
    MPEG-4 B-frames, H.264 in AVI); without it the decoder's release dts times frames."""
    container.flags = container.flags & ~AVFMT_FLAG_GENPTS


def stores_no_order(path: Path | str, packets: int = 240) -> bool:
    """Does ``path`` store no presentation time for frames of a codec that reorders them
    (B-frames in AVI, MPEG-PS, a raw H.264 stream)? Its first ``packets`` video packets are
    read, libavformat inventing none. A stream copy into MP4 then takes each frame's decode
    time for its presentation time: its frames show out of order."""
    path = Path(path)
    with open_container(path) as container:
        stream = the_video_stream(container, path)
        if not stream.codec_context.has_b_frames:
            return False
        disable_generated_pts(container)
        try:
            for count, packet in enumerate(container.demux(stream)):
                if packet.size and packet.pts is None:
                    return True
                if count >= packets:
                    break
        except av.FFmpegError:
            pass
    return False


def packet_positions(path: Path | str, start: float, end: float, beyond: int = 16) -> list[float]:
    """When the video frames of ``path`` from the keyframe before ``start`` to ``beyond``
    packets past ``end`` are shown, sorted, in seconds on ffmpeg's seek timeline (packet
    time less the container's start: ``-ss`` positions); packets without a time are left
    out. Read from a seek: cheap however long the file."""
    path = Path(path)
    positions: list[float] = []
    with open_container(path) as container:
        stream = the_video_stream(container, path)
        base = stream.time_base
        if base is None:
            return positions
        origin = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        late = 0
        try:
            container.seek(int((start + origin) / base), stream=stream, backward=True)
            for packet in container.demux(stream):
                if not packet.size or packet.pts is None:
                    continue
                position = float(packet.pts * base) - origin
                positions.append(position)
                late += position >= end
                if late > beyond:
                    break
        except av.FFmpegError:
            pass
    return sorted(positions)


class Clock:
    """One stream's timestamps in seconds from the time origin ``start``, as players (and
    OpenCV) count (``seconds``: ``max(0.0, float(ts * time_base) - start)``), and durations
    (``span``: ``float(ticks * time_base)``).

    In integer arithmetic: ``ts * num / den`` (int true division, correctly rounded) is the
    very float ``float(ts * Fraction(num, den))`` is, without the ``Fraction``s (PyAV builds
    a new one on every ``packet.time_base`` read, and a product two more, per packet). PyAV
    stamps every packet it demuxes with its stream's time base, so the stream's, read once,
    times the stream's packets."""

    __slots__ = ("_den", "_num", "_start", "time_base")

    def __init__(self, time_base: Fraction | None, start: float) -> None:
        self.time_base = time_base
        # (None, None) where a stream had no time base: ``ts * None`` fails as before
        self._num = time_base.numerator if time_base is not None else None
        self._den = time_base.denominator if time_base is not None else None
        self._start = start

    def seconds(self, timestamp: int) -> float:
        return max(0.0, self.offset(timestamp))

    def offset(self, timestamp: int) -> float:
        """``timestamp``'s seconds from the origin, negative before it (not clamped: a clock
        started again may start before the file's start)."""
        return timestamp * self._num / self._den - self._start

    def span(self, ticks: int) -> float:
        return ticks * self._num / self._den


@dataclass(frozen=True)
class Packets:
    """The demux pass: presentation times (s) of all frames and of keyframes, sorted.

    Held for the whole decode, so packed: 8 bytes a time (``array``), where Python floats
    in lists and tuples took about 100 bytes a packet (a 48-hour 60 fps recording holds
    ten million)."""

    times: array[float]
    keyframe_times: array[float]
    complete: bool  # every packet with data had a pts, and demuxing met no error
    order: array[float] = field(default_factory=lambda: array("d"))  # times, decode order
    keys: bytes = b""  # 1 where ``order``'s packet is a keyframe
    discarded: int = 0  # packets an edit list cuts (decoded as references, never shown)
    # Packet times name the frames decoding gives (so exact mode may plan with them): not
    # in packed MPEG-4 B-frames (one packet, two pictures; N-VOP placeholders) nor where the
    # container stores no pts and the codec reorders (H.264 with B-frames in AVI or ASF).
    plannable: bool = True
    # Which packet timestamp is a frame's time: "pts", or "dts" where the container stores
    # none and the codec does not reorder (AVI, ASF), as ffprobe times it; libavformat's
    # generated pts (PyAV asks for them) are one frame late there for H.264.
    clock: str = "pts"
    # MPEG-TS/PS: where the clock started again, the first packet's dts on the new clock
    # (s, by the ``Clock``'s ``offset``: negative where it starts before the file), in file
    # order: confirmed by the packet after it (a lone packet timed far back or far ahead is
    # a damaged timestamp, not a reset; ``off_the_clock``).
    resets: tuple[float, ...] = ()
    # (time, where its bytes end in the file) of the last timed packet read: a cut-off
    # file's torn frame, where the file ends there (``VideoReader``); None: not known.
    last: tuple[float, int] | None = None
    # A stream that starts mid-GOP: its first keyframe's time, the packets shown before it
    # left out (``DROPS_UNREFERENCED``'s decoders give them no frame). None: none left out.
    unshown_before: float | None = None
    # A packet after a keyframe (decode order) is shown before it: an open GOP's leading
    # picture (``--keyframes`` drains the decoder after each keyframe there).
    open_gop: bool = False
    # Where the packets the demuxer flagged corrupt start in the file: data lost on the way
    # (an MPEG-TS whose continuity counters skip, as a camera's or a broadcast's lost packets
    # leave it). Not the last one read (a file's end cuts it short: the tail the header's
    # length or ``torn_end`` reports), nor one just before a clock reset (recordings joined
    # with ``cat``: the second's counters start again, and nothing is lost).
    corrupt: frozenset[int] = frozenset()
    # The time of the packet a cut-off file's end tore (the last read, flagged corrupt:
    # FFmpeg reads what is left of it), None where none. Whether it gives a frame is its
    # decoder's to say (a cut H.264 packet in an MP4 gives none; in an MPEG-TS, a part), so
    # every mode decodes it, and it moves the video's end only where it gives one.
    torn: float | None = None
    # An MP4/MOV edit list's end (s, from zero: its empty edits, a delay, included), and how
    # many joins of media edits it shows (``edit_list``): None and 0 where it has none.
    edit_end: float | None = None
    joins: int = 0

    @property
    def generated_pts(self) -> bool:
        """Read packets with PyAV's generated pts? Only where they name frames right."""
        return self.plannable and self.clock == "pts"


# A clock reset or jump ahead is confirmed on the new clock's second packet (its first: a
# keyframe, where a recording was joined on); the packet FFmpeg flags where joined
# recordings' continuity counters start again is among the few before it.
JOIN_PACKETS = 4


def off_the_clock(time: float, latest: float) -> bool:
    """Is ``time`` (s) on another clock than ``latest`` (the latest time on the current one;
    -inf: none yet), in a format whose clock may start again: more than ``RESET_BACK_S``
    before it, or more than ``RESET_FORWARD_S`` after it?"""
    return math.isfinite(latest) and not latest - RESET_BACK_S <= time <= latest + RESET_FORWARD_S


class ResetWatch:
    """The demux pass's watch, packet by packet (dts, decode order), for a clock that starts
    again in MPEG-TS/PS. Two packets in a row off the clock (``off_the_clock``) are a reset,
    at the first (``resets``); a lone one is a damaged timestamp. A packet ahead of the
    clock by more than ``RESET_BACK_S`` but not off it (a gap, or damage) moves the clock
    only once the next packet follows it: a damaged timestamp up to 10 s ahead made the
    packets after it look like a reset back, and moved the timeline on by its error."""

    def __init__(self) -> None:
        self.latest = -math.inf  # on the current clock
        self.candidate: float | None = None  # off the clock; a reset if the next is too
        self.ahead: float | None = None  # ahead; the clock's if the next follows it
        self.resets: list[float] = []
        self.jumps = 0  # resets and jumps ahead confirmed: where a joined recording starts

    def saw(self, dts: float) -> bool:
        """Take the next packet's ``dts`` (s); True where it confirms a reset."""
        if self.ahead is not None and dts >= self.ahead - RESET_BACK_S:
            self.latest = max(self.latest, self.ahead)
            self.jumps += 1
        self.ahead = None
        if not off_the_clock(dts, self.latest):
            self.candidate = None
            if math.isfinite(self.latest) and dts > self.latest + RESET_BACK_S:
                self.ahead = dts
            else:
                self.latest = max(self.latest, dts)
            return False
        if self.candidate is None:
            self.candidate = dts
            return False
        self.resets.append(self.candidate)
        self.jumps += 1
        self.candidate, self.latest = None, max(self.candidate, dts)
        return True


def demux_times(path: Path, start: float) -> Packets:
    """Read every packet's pts without decoding (cheap): the plan for the decode pass."""
    order = array("d")  # each packet's time, decode order
    keys = bytearray()
    keyframes = array("d")
    discarded = read = 0
    corrupt: dict[int, int] = {}  # flagged packets: file position → rank in decode order
    torn_read = -1  # the last packet read, where it was flagged corrupt
    torn: float | None = None  # its time
    last_key = False  # the packet before was a keyframe
    complete = True
    with open_container(path) as container:
        stream = the_video_stream(container, path)
        codec = stream.codec_context.name
        reorders = bool(stream.codec_context.has_b_frames)
        # Where the container stores no pts (AVI, ASF), libavformat infers them from decode
        # order: right for MPEG-4 Part 2's B-frames (unless packed: checked packet by
        # packet below); other codecs' frames are timed by their dts, and with B-frames
        # (H.264 in AVI) packets name no frame: every frame is decoded.
        no_pts = bool(
            NO_PTS_FORMATS & set(container.format.name.split(","))
            or container.format.flags & AVFMT_NOTIMESTAMPS
        )
        clock = "dts" if no_pts and not (codec == "mpeg4" and reorders) else "pts"
        plannable = not (no_pts and reorders and codec != "mpeg4")
        if clock == "dts" or not plannable:
            disable_generated_pts(container)
        timing = Clock(stream.time_base, start)
        seconds = timing.seconds
        in_decode_order = True  # every packet's pts its dts
        watch = ResetWatch() if container.format.flags & AVFMT_TS_DISCONT else None
        edits = (
            edit_list(str(path), stream.id)
            if EDIT_LIST_FORMATS & set(container.format.name.split(","))
            else None
        )
        joins = max(0, edits.media_edits - 1) if edits else 0
        # Several media edits (an edit made without re-encoding): FFmpeg joins the parts
        # as one stream, the keyframe each starts from sent again, and its decoder may give
        # no frame for packets there (HEVC's open GOPs): packet times name frames only once
        # decoded, so every frame is decoded (as where an MPEG-TS clock starts again).
        plannable = plannable and not joins
        last: tuple[float, int] | None = None
        group_start, open_gop = -math.inf, False  # the latest keyframe's time
        held_key = False  # an edit list hides a keyframe before the first one shown
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                read += 1
                torn_read, torn = -1, None
                if packet.is_corrupt and packet.pos is not None:
                    corrupt[packet.pos] = read
                    torn_read = packet.pos
                if codec == "mpeg4" and plannable and not _one_picture(bytes(packet)):
                    plannable = False
                timestamp = packet.dts if clock == "dts" else packet.pts
                if packet.pts != packet.dts:
                    in_decode_order = False
                # (a new clock may start before 0; packet times name frames once decoded)
                jumps = watch.jumps if watch else 0
                if watch and packet.dts is not None and watch.saw(timing.offset(packet.dts)):
                    plannable = False
                if watch and watch.jumps > jumps and last_key:
                    # (a new clock that starts on a keyframe: a recording joined on, whose
                    # counters start again; packets lost mid-stream leave a gap too, but
                    # the packets after it predict from what was lost)
                    for pos in [p for p, rank in corrupt.items() if rank >= read - JOIN_PACKETS]:
                        del corrupt[pos]
                last_key = bool(packet.is_keyframe)
                if timestamp is None:
                    complete = False
                    continue
                if packet.is_discard:  # before an edit list's start (a clip cut with -c copy)
                    discarded += 1
                    # (its keyframe is in the file: the frames shown after it decode)
                    held_key = held_key or (bool(packet.is_keyframe) and group_start == -math.inf)
                    continue
                time = seconds(timestamp)
                order.append(time)
                keys.append(bool(packet.is_keyframe))
                if packet.is_keyframe:
                    group_start = time
                elif time < group_start:
                    open_gop = True
                known = packet.pos is not None and packet.pos >= 0
                last = (time, packet.pos + packet.size) if known else None
                torn = time if packet.is_corrupt else None
                if packet.is_keyframe and (codec != "mpeg4" or packet.size > N_VOP_MAX_BYTES):
                    keyframes.append(time)
        except av.FFmpegError:
            complete = False
    # (the packet a cut-off file's end tears is flagged too: that is the tail the
    # header's length or ``torn_end`` reports, not data lost on the way)
    corrupt.pop(torn_read, None)
    unshown_before = None
    if codec in DROPS_UNREFERENCED and not held_key:
        # (a stream copy cut between keyframes: the edit list hides the keyframe the first
        # frames shown predict from, but the file holds it, and they decode)
        unshown = _before_the_first_keyframe(order, keys)
        if unshown:
            unshown_before = order[keys.find(1)]
            order = array("d", (t for i, t in enumerate(order) if i not in unshown))
            keys = bytearray(k for i, k in enumerate(keys) if i not in unshown)
    times, keyframes = packed_sorted(order), packed_sorted(keyframes)
    if any(a == b for a, b in itertools.pairwise(times)) or (
        reorders and in_decode_order and clock == "pts" and len(times) > 1
    ):
        # Packet times that name no frame: two packets at one time, or a reordering codec
        # whose pts are its dts (a time base coarser than the frame rate: FFmpeg's muxer
        # made them so). FFmpeg's best effort then times frames by their dts, which only
        # decoding every frame shows.
        plannable = False
    return Packets(
        times, keyframes, complete, order, bytes(keys), discarded, plannable, clock,
        tuple(watch.resets if watch else ()), last, unshown_before, open_gop,
        frozenset(corrupt), torn, edits.end if edits else None, joins,
    )  # fmt: skip


def _before_the_first_keyframe(order: array[float], keys: bytearray) -> set[int]:
    """Of a stream that starts after a keyframe (an MPEG-TS recording or a ``dd`` cut
    mid-GOP), the packets (decode-order positions) shown before its first keyframe: those
    decoded before it, and an open GOP's leading pictures after it. They predict from
    frames the file does not hold, and the decoders of ``DROPS_UNREFERENCED`` give no frame
    for them (as ffprobe lists none): planned as frames, they broke exact mode's plan, so
    a video was decoded again, every frame, twice, and ``--keyframes`` counted them in its
    frame numbers."""
    first = keys.find(1)
    if first < 0:
        return set()
    key_time = order[first]
    after = keys.find(1, first + 1)
    end = len(order) if after < 0 else after
    return set(range(first)) | {i for i in range(first + 1, end) if order[i] < key_time}


def packed_sorted(times: array[float], unique: bool = False) -> array[float]:
    """``times`` sorted (``unique``: each once), without a Python float per element on the
    way."""
    values = np.frombuffer(times, dtype=np.float64)
    return array("d", (np.unique(values) if unique else np.sort(values)).tobytes())


def _one_picture(data: bytes) -> bool:
    """Does an MPEG-4 Part 2 packet hold exactly one coded picture? Not a packed B-frame
    chunk (two VOPs: XviD/DivX "packed bitstream") nor an N-VOP placeholder (a bare header)."""
    return data.count(VOP_START_CODE) == 1 and len(data) > N_VOP_MAX_BYTES


def frames_from_duration(stream: av.video.stream.VideoStream, rate: float | None) -> int:
    length = _header_length(stream)
    if length is None or not rate:
        return 0
    return max(0, round(length * float(rate)))


def ivf_count_is_length(stream: av.video.stream.VideoStream, end: float, rate: float) -> bool:
    """Is an IVF file's header number its length in the stream's time base, not a frame
    count? The header has one field for it: libvpx's and aomenc's writers, and FFmpeg 9's,
    put the frame count there, FFmpeg 5.1's muxer the duration in time-base units (4000 for
    4 s of 30 fps VP9 copied from WebM), and FFmpeg 8 reads it as both (``stream.frames``
    and ``stream.duration``). Read as a length, it is one where the frames decoded, ending
    at ``end``, do not go past it (as a count's length it would be far too short: 120
    frames in milliseconds); a count otherwise. Where the time base is the frame interval,
    the two agree."""
    if "ivf" not in stream.container.format.name.split(","):
        return False
    if not stream.frames or stream.time_base is None or rate <= 0:
        return False
    length = float(stream.frames * stream.time_base)
    return length >= end - TAIL_TOLERANCE_FRAMES / rate


def _header_length(stream: av.video.stream.VideoStream) -> float | None:
    """How long the header says the stream lasts from its first frame, in seconds, if it
    says: the stream's duration, or, in Matroska/WebM (which stores none per stream), the
    ``DURATION`` tag FFmpeg's and mkvmerge's muxers write per track (``DURATION-eng`` as
    FFmpeg reads mkvmerge's), which counts from the file's zero. (A Matroska stream's own
    duration is only ever FFmpeg's estimate from the bitrate, where the file states no
    length at all: a live or unfinished recording. It is no header's.)"""
    names = stream.container.format.name.split(",")
    matroska = "matroska" in names
    if stream.duration is not None and stream.time_base is not None and not matroska:
        return float(stream.duration * stream.time_base)
    if "asf" in names:  # (a cut-off ASF file: FFmpeg drops its header's length)
        return asf_stated_length(stream.container.name)
    for name, value in (stream.metadata or {}).items():
        if name.upper() == "DURATION" or name.upper().startswith("DURATION-"):
            end = _clock_seconds(value)
            if end is not None:
                return max(0.0, end - stream_start(stream))
    return None


def stated_end(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    delay: float,
    origin: float,
    edit_end: float | None = None,
) -> float | None:
    """Where the header says the picture ends, on the frames' timeline (``delay``: a kept
    late start; ``origin``: where times count from; ``edit_end``: an MP4/MOV edit list's
    end): the stream's length, else the file's duration; None where neither is stated. For
    a run that stops before the end (``--max-frames``): never said to go on past it."""
    length = _header_length(stream)
    if length is not None:
        return min(delay + length, math.inf if edit_end is None else edit_end)
    if container.duration is None:
        return None
    return (container.start_time or 0) / 1_000_000 + container.duration / 1_000_000 - origin


def _clock_seconds(text: str) -> float | None:
    """``HH:MM:SS.fraction`` (Matroska's tag form) in seconds; None if it is not that."""
    match = re.fullmatch(r"\s*(\d+):([0-5]?\d):([0-5]?\d(?:\.\d*)?)\s*", text)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def missing_tail(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    stats: VideoStats,
    discarded: int,
    delay: float,
    origin: float,
    edit_end: float | None = None,
) -> int:
    """Frames the header promises after the last decodable frame's end (``delay``: a kept
    late start, where the header's frames begin; ``origin``: where times count from;
    ``edit_end``: an MP4/MOV edit list's end, ``Packets.edit_end``). Where the header's
    length is the file's (ASF), only if every other stream ends short of it as well.

    Compares times, not frame counts: a variable-frame-rate AVI's header counts the
    ticks of its rate (444 where 68 frames are stored), which ends where the last frame
    does; a truncated file's header ends later. (AVI's ``duration`` without an index is
    a guess from the file size, so the frame count comes first.)
    """
    if stats.nominal_fps <= 0 or container.format.flags & AVFMT_TS_DISCONT:
        # (MPEG-TS/PS state no length: FFmpeg's estimate for a stream with few packets is
        # the file's, its sound's — 869,934 frames "lost" of one still over 10 s of sound)
        return 0
    length = _header_length(stream)
    if stream.frames and not ivf_count_is_length(stream, stats.duration, stats.nominal_fps):
        promised = delay + (stream.frames - discarded) / stats.nominal_fps
        if edit_end is not None:
            # An edit list that cuts the media (a trim or a cut made without re-encoding)
            # shows fewer frames than the track holds: the count is the media's, the edit
            # list's end what is shown. (Not ``delay`` + FFmpeg's track duration: that is
            # the edits' sum, the delay in it, where shorter than the media.)
            promised = min(promised, edit_end)
        elif length is not None and EDIT_LIST_FORMATS & set(container.format.name.split(",")):
            promised = min(promised, delay + length)
    elif length is not None:
        promised = delay + length
    else:
        return 0
    gap = (promised - stats.duration) * stats.nominal_fps
    if gap <= TAIL_TOLERANCE_FRAMES:
        return 0
    tolerance = TAIL_TOLERANCE_FRAMES / stats.nominal_fps
    if FILE_LENGTH_FORMATS & set(container.format.name.split(",")) and _others_reach(
        container, stream, promised - tolerance, origin
    ):
        return 0
    return round(gap)


def missing_file_tail(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    stats: VideoStats,
    origin: float,
) -> int:
    """Frames lost from the end of a file whose streams state no length, estimated from
    the file's duration, which the header holds: a Matroska/WebM file's tracks (mkvmerge
    writes its ``DURATION`` tags after the last cluster: a cut-off download loses them), an
    FLV (its onMetaData duration). Where the file has other streams, only if every one of
    them ends short of it as well (a video track may end before its audio)."""
    names = set(container.format.name.split(","))
    if (
        not FILE_DURATION_FORMATS & names
        or container.duration is None
        or stats.nominal_fps <= 0
        or _header_length(stream) is not None
        or ("matroska" in names and not matroska_states_duration(container.name))
    ):  # (a live or unfinished Matroska file: FFmpeg's duration is a bitrate estimate)
        return 0
    if "flv" in container.format.name.split(","):
        # FLV's onMetaData duration is where its last frame ends on the file's timestamps
        # (FFmpeg's muxer: 4.08 s for 4 s of H.264 whose B-frames put its first frame at
        # 0.08 s), not a length from the first.
        end = container.duration / 1_000_000 - origin
    else:
        end = (container.start_time or 0) / 1_000_000 + container.duration / 1_000_000 - origin
    tolerance = TAIL_TOLERANCE_FRAMES / stats.nominal_fps
    if end - stats.duration <= tolerance:
        return 0
    if _others_reach(container, stream, end - tolerance, origin):
        return 0
    return round((end - stats.duration) * stats.nominal_fps)


def fragmented_mp4(container: av.container.InputContainer) -> bool:
    """Is the file an MP4/MOV of movie fragments (``moof`` boxes: DASH/CMAF segments joined,
    a live recording, ``-movflags frag_keyframe``)? FFmpeg's duration for its tracks is then
    where the last fragment ends on the timeline from zero (each fragment states its start,
    ``tfdt``), not a length from the track's first frame: a live recording whose first
    fragment starts at 100 s, 4 s long, lasts 104 s to it."""
    if not EDIT_LIST_FORMATS & set(container.format.name.split(",")):
        return False
    try:
        with open(container.name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            # (the first fragment follows the index: a few boxes in)
            boxes = itertools.islice(mp4_boxes(handle, size), 1000)
            return any(kind == b"moof" for kind, _, _ in boxes)
    except OSError:
        return False


def held_end(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    stats: VideoStats,
    origin: float,
) -> float | None:
    """Where a player stops showing the video's last picture, when the file's sound goes on
    after it by more than ``HELD_PICTURE_S``: players hold the last picture to the sound's
    end (a song over one still picture: one frame, and a minute of sound). The latest end
    the header states for an audio track, on the video's timeline (a timecode, telemetry,
    chapter or subtitle track is not shown: not counted); only in ``TRACK_LENGTH_FORMATS``.
    ``None`` where no sound goes on past the video."""
    if not TRACK_LENGTH_FORMATS & set(container.format.name.split(",")):
        return None
    fragments = fragmented_mp4(container)  # (a length there is an end: from zero)
    ends = [_sound_end(container, sound, fragments) for sound in container.streams.audio]
    end = max((end - origin for end in ends if end is not None), default=None)
    return end if end is not None and end - stats.duration > HELD_PICTURE_S else None


def _sound_end(
    container: av.container.InputContainer, sound: av.audio.stream.AudioStream, fragments: bool
) -> float | None:
    """Where the header says the audio track ``sound`` ends, on the timeline from zero
    (``fragments``: the file is a fragmented MP4, whose lengths are ends).
    Where an MP4/MOV track has an edit list, no later than its end (a delay, an empty first
    edit, is both FFmpeg's start for the track and part of its length, the edits' sum,
    where they show less than the media: a sound delayed 1 s and trimmed to 5 s ended at
    7 s, not 6, as ffprobe's and ffmpeg's ended it; and AAC's priming, which a first edit
    skips, is in the media's length)."""
    length = _header_length(sound)
    if length is None:
        return None
    if fragments:
        return length
    end = stream_start(sound) + length
    if EDIT_LIST_FORMATS & set(container.format.name.split(",")):
        edits = edit_list(container.name, sound.id)
        if edits is not None and edits.end is not None and edits.end > 0:
            end = min(end, edits.end)
    return end


def _others_reach(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    time: float,
    origin: float,
) -> bool:
    """Does a stream other than ``stream`` end at ``time`` or later (the file's stated length
    is theirs, not a cut)? False where there is no other stream."""
    others = [s.index for s in container.streams if s.index != stream.index]
    return bool(others) and _streams_end(container.name, others, origin) >= time


def _streams_end(path: str, indices: list[int], origin: float) -> float:
    """Where the latest packet of the streams ``indices`` of ``path`` ends (a demux pass)."""
    latest = -math.inf
    with open_container(Path(path)) as container:
        streams = [container.streams[i] for i in indices]
        try:
            for packet in container.demux(*streams):
                if packet.pts is None or packet.time_base is None:
                    continue
                ticks = packet.pts + (packet.duration or 0)
                latest = max(latest, float(ticks * packet.time_base) - origin)
        except av.FFmpegError:
            pass  # (a damaged end: what was read counts)
    return latest
