"""Open a video with PyAV (FFmpeg) and sample frames with their true timestamps.

A first pass only demuxes (no decoding, a few ms) and lists every packet's presentation
time. It gives each frame its index (rank in presentation order), the video's end, and
the frames the sampling needs. The second pass decodes as little as the mode allows:

- ``exact`` (default): reference frames plus the non-reference frames a tick needs, and
  nothing between a keyframe group's last needed frame and the next keyframe; the same
  frames, times and pixels as decoding everything;
- ``all``: decode every frame (the slow reference ``exact`` is tested against);
- ``SamplingSettings.keyframes``: decode keyframes only.

Timestamps are each frame's pts as FFmpeg reports it (what ffprobe shows), never
index ÷ nominal fps; the duration is the end of the last frame: its pts plus its packet
duration (one frame interval), as ffprobe counts it.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from vidcap.errors import VideoError
from vidcap.frames import Frame
from vidcap.picture import Orientation, Picture, display_size, to_sdr_rgb
from vidcap.settings import SamplingSettings

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".mpg", ".mpeg",
     ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".vob", ".divx"}
)  # fmt: skip

PTS_EPSILON = 1e-6
# Frames missing at the end count as failed only beyond this many frame intervals.
TAIL_TOLERANCE_FRAMES = 1.5


@dataclass
class VideoStats:
    """What decoding one video found; complete once ``frames()`` has been iterated.

    ``failed_frames``: frames that really did not decode (decoder errors, or a stream
    that ends before its header's duration) — never frames a header merely over-counts.
    """

    width: int = 0
    height: int = 0
    nominal_fps: float = 0.0
    expected_frames: int = 0
    decoded_frames: int = 0
    sampled_frames: int = 0
    failed_frames: int = 0
    last_pts: float = 0.0
    # End of the last frame: its pts plus one frame interval (as ffprobe counts it).
    duration: float = 0.0


@dataclass(frozen=True)
class _Packets:
    """The demux pass: presentation times (s) of all frames and of keyframes, sorted."""

    times: list[float]
    keyframe_times: list[float]
    complete: bool  # every packet with data had a pts, and demuxing met no error
    order: tuple[tuple[float, bool], ...] = ()  # (time, keyframe) of each packet, decode order
    discarded: int = 0  # packets an edit list cuts (decoded as references, never shown)


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame as ``VideoReader.decoded_frames`` gives it: its index and time (as
    ``frames`` gives them), the decoder's frame (stored pixels, not converted yet) and the
    orientation a player shows it at. ``shown()`` converts it as ``frames`` would."""

    index: int
    time: float
    av_frame: av.VideoFrame
    orientation: Orientation
    sar: Fraction | None

    def shown(self) -> Frame:
        """The frame as a player shows it: upright SDR RGB, with its display size."""
        frame = self.av_frame
        rgb = self.orientation.apply(to_sdr_rgb(frame))
        shown = display_size(frame.width, frame.height, self.sar, self.orientation)
        return Frame(index=self.index, time=self.time, rgb=rgb, display_size=shown)


# Every frame decoded, nothing skipped: ``decoded_frames`` (scene detection).
_EVERY_FRAME = SamplingSettings(every_n=1, mode="all")


class VideoReader:
    """One open video. Iterate ``frames(sampling)`` once; ``stats`` is complete afterwards.

    ``threads``: decoder threads (0: FFmpeg picks one per core). A pool of N decoder
    processes does best with 1 each.
    """

    def __init__(self, path: Path | str, threads: int = 0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file")
        self._container = _open(self.path)
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        self._start = _stream_start(self._stream)
        self._picture = Picture(self._stream)  # rotation, SAR, HDR: what a player shows
        self._threads = threads
        self._packets: _Packets | None = None
        self._unneeded: set[float] = set()
        stream = self._stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.stats = VideoStats(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            nominal_fps=float(rate or 0.0),
            expected_frames=stream.frames or _frames_from_duration(stream, rate),
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def estimated_samples(self, sampling: SamplingSettings) -> int | None:
        """How many frames ``sampling`` takes (exact unless frames fail), for progress bars."""
        packets = self._demux()
        if sampling.keyframes:
            count = len(packets.keyframe_times)
        elif sampling.every_n is not None:
            count = math.ceil(len(packets.times) / sampling.every_n)
        else:
            count = len(_ticks(packets.times, 1.0 / float(sampling.fps or 1.0)))
        if not packets.complete and count == 0:
            return None
        return min(count, sampling.max_frames) if sampling.max_frames else count

    def frames(self, sampling: SamplingSettings) -> Iterator[Frame]:
        """Decode as little as ``sampling.mode`` allows, yielding sampled frames (RGB, true pts).

        When ``exact`` skips whole stretches after a keyframe group's last needed frame, it
        checks what the decoder gives against the demux pass's plan: a frame the plan did not
        expect, a corrupt frame, or an expected one that never comes out (keyframe flags that
        are no random access points, as x264's periodic intra refresh writes) stops that and
        the video is decoded again without skipping stretches, from where it went wrong.
        """
        packets = self._demux()
        needed = _needed_times(packets, sampling)
        # (with --max-frames the end is where reading stops: skipping ahead would move it)
        exact = sampling.mode == "exact" and not sampling.keyframes and not sampling.max_frames
        skipping = exact and bool(needed)
        self._unneeded = _unneeded_times(packets, needed) if skipping and needed else set()
        yielded: set[float] = set()
        plan = {_key(t) for t in needed} if skipping and needed else None
        try:
            reached_end = yield from self._pass(sampling, packets, needed, plan, yielded)
        except _PlanBroken as exc:
            log.info("%s: %s; decoding it again without skipping", self.path, exc)
            self._reopen()
            reached_end = yield from self._pass(sampling, packets, needed, None, yielded)
        self._finish(reached_end)

    def decoded_frames(self) -> Iterator[DecodedFrame]:
        """Every frame, decoded (nothing skipped, whatever the sampling), in presentation
        order, not converted: what scene detection (``vidcap.scenes``) needs to see. The
        same indices and times as ``frames``; ``stats`` is complete afterwards."""
        packets = self._demux()
        reached_end = yield from self._pass(_EVERY_FRAME, packets, None, None, set(), every=True)
        self._finish(reached_end)

    def _pass(
        self,
        sampling: SamplingSettings,
        packets: _Packets,
        needed: set[float] | None,
        plan: set[float] | None,
        yielded: set[float],
        every: bool = False,
    ) -> Generator[Frame | DecodedFrame, None, bool]:
        """One decoding pass; True when it read to the end. ``plan``: the frame times the
        samples must be (checked, ``_PlanBroken`` when the decoder disagrees); ``yielded``:
        times already sent (a second pass does not send them again). ``every``: yield every
        decoded frame as a ``DecodedFrame`` instead of the sampled ones."""
        stats = self.stats
        codec = self._stream.codec_context
        codec.thread_type = "AUTO"
        codec.thread_count = self._threads
        take = _selector(sampling)
        expected = sorted(plan) if plan is not None else []
        position = 0
        last_index = -1
        for packet, decoded in self._decode(sampling, needed):
            if decoded is None:  # skipped on purpose: still counts towards the video's end
                self._extend(self._seconds(packet.pts, packet.time_base), _packet_duration(packet))
                continue
            pts = self._frame_time(decoded)
            if plan is not None:
                if decoded.is_corrupt:
                    raise _PlanBroken(f"a corrupt frame at {pts:.3f} s after skipping")
                while position < len(expected) and expected[position] < _key(pts):
                    if expected[position] not in yielded:
                        raise _PlanBroken(f"the frame at {expected[position]:.3f} s never came out")
                    position += 1
            stats.decoded_frames += 1
            orientation = self._picture.see(decoded)  # a display matrix holds until the next one
            self._extend(pts, _frame_duration(decoded, packet))
            if packets.complete:
                index = bisect.bisect_left(packets.times, pts - PTS_EPSILON)
            else:
                index = stats.decoded_frames - 1
            if index == last_index:  # two frames with one timestamp: keep indices distinct
                index += 1
            last_index = index
            if every:  # (scene detection: every frame, in presentation order)
                yield DecodedFrame(index, pts, decoded, orientation, self._picture.sar)
                continue
            if sampling.keyframes and not decoded.key_frame:
                continue  # (when every packet is decoded: no pts, or --decode-mode all)
            if not take(index, pts) or _key(pts) in yielded:
                continue
            if plan is not None and _key(pts) not in plan:
                raise _PlanBroken(f"a frame at {pts:.3f} s that no tick asked for")
            stats.sampled_frames += 1
            yielded.add(_key(pts))
            rgb, shown = self._picture.show(decoded)
            yield Frame(index=index, time=pts, rgb=rgb, display_size=shown)
            if sampling.max_frames is not None and stats.sampled_frames >= sampling.max_frames:
                return False
        missing = [t for t in expected[position:] if t not in yielded]
        if missing:
            raise _PlanBroken(f"the frame at {missing[0]:.3f} s never came out")
        return True

    def _reopen(self) -> None:
        """A fresh container and decoder for a second pass; its counts start again."""
        self._container.close()
        self._container = _open(self.path)
        self._stream = self._container.streams.video[0]
        self._unneeded = set()
        self.stats.decoded_frames = 0
        self.stats.failed_frames = 0

    def _extend(self, pts: float, duration: float) -> None:
        """A frame at ``pts`` lasting ``duration`` (0: unknown) exists: move the end.

        Only the last frame in presentation order sets the end: in a stream with B-frames
        a packet's duration is its decode-time step, not its frame's display time.
        """
        stats = self.stats
        if pts < stats.last_pts:
            return
        if duration <= 0:
            duration = 1.0 / stats.nominal_fps if stats.nominal_fps > 0 else 0.0
        stats.last_pts = pts
        stats.duration = pts + duration

    # --- the demux pass ---------------------------------------------------------------

    def _demux(self) -> _Packets:
        if self._packets is None:
            self._packets = _demux_times(self.path, self._start)
        return self._packets

    # --- the decode pass --------------------------------------------------------------

    def _decode(
        self, sampling: SamplingSettings, needed: set[float] | None
    ) -> Iterator[tuple[av.Packet, av.VideoFrame | None]]:
        """(packet, frame) per decoded frame; (packet, None) per packet skipped on purpose."""
        codec = self._stream.codec_context
        flushed = False
        pending = False  # packets sent since the decoder was last drained
        try:
            for packet in self._container.demux(self._stream):
                flushed = packet.size == 0
                skip = self._skip(packet, sampling, needed)
                if skip is None:
                    if pending and not sampling.keyframes:
                        # Jumping to a later keyframe: drain what the decoder holds back
                        # for reordering first, or it comes out after the next group's
                        # frames (FFmpeg's H.264 decoder does so after non-IDR keyframes).
                        yield from self._decode_packet(None)
                        codec.flush_buffers()
                        pending = False
                    if packet.pts is not None:
                        yield packet, None
                    continue
                codec.skip_frame = skip
                pending = packet.size > 0
                yield from self._decode_packet(packet)
        except av.FFmpegError as exc:  # a damaged container: keep what was read
            log.debug("%s: demuxing stopped: %s", self.path, exc)
        if not flushed:
            yield from self._decode_packet(None)

    def _seconds(self, pts: int, time_base: Fraction) -> float:
        return _to_seconds(pts, time_base, self._start)

    def _frame_time(self, frame: av.VideoFrame) -> float:
        if frame.time_base is None and frame.pts is not None:  # drained: the stream's base
            frame.time_base = self._stream.time_base
        if frame.pts is None or frame.time_base is None:  # no timestamp: one interval on
            stats = self.stats
            step = 1.0 / stats.nominal_fps if stats.nominal_fps > 0 else 0.0
            return stats.last_pts + (step if stats.decoded_frames else 0.0)
        return self._seconds(frame.pts, frame.time_base)

    def _skip(
        self, packet: av.Packet, sampling: SamplingSettings, needed: set[float] | None
    ) -> str | None:
        """How the decoder treats ``packet``: its ``skip_frame`` value, or None: do not send it."""
        if packet.size == 0 or needed is None:
            return "DEFAULT"
        if sampling.keyframes:
            return "DEFAULT" if packet.is_keyframe else None
        time = self._seconds(packet.pts, packet.time_base) if packet.pts is not None else None
        if time in needed:
            return "DEFAULT"
        if time in self._unneeded:
            return None
        return "NONREF"

    def _decode_packet(
        self, packet: av.Packet | None
    ) -> Iterator[tuple[av.Packet, av.VideoFrame | None]]:
        try:
            frames = self._stream.codec_context.decode(packet)
        except av.FFmpegError as exc:
            log.debug("%s: a packet did not decode: %s", self.path, exc)
            self.stats.failed_frames += 1
            return
        for frame in frames:
            yield packet, frame

    def _finish(self, reached_end: bool) -> None:
        """Fail a video with no frame; warn once about frames that really failed."""
        stats = self.stats
        if stats.decoded_frames == 0:
            raise VideoError(f"{self.path}: no decodable frames")
        if not reached_end:
            return
        discarded = self._packets.discarded if self._packets else 0
        stats.expected_frames = max(0, stats.expected_frames - discarded)
        stats.failed_frames += _missing_tail(self._stream, stats, discarded)
        if stats.failed_frames:
            total = max(stats.expected_frames, stats.decoded_frames + stats.failed_frames)
            log.warning(
                "%s: %d of %d frames could not be decoded (corrupt or truncated stream); "
                "kept the %d that decoded",
                self.path,
                stats.failed_frames,
                total,
                stats.decoded_frames,
            )


class _PlanBroken(Exception):
    """The decoder's frames disagree with the demux pass's plan (see ``VideoReader.frames``)."""


def _key(seconds: float) -> float:
    """A frame time as a set key: packet and frame times of one frame agree to the µs."""
    return round(seconds, 6)


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(
            f"{path}: not a decodable video (FFmpeg cannot open it: {exc.strerror or exc})"
        ) from exc


def _frames_from_duration(stream: av.video.stream.VideoStream, rate: object) -> int:
    if stream.duration is None or stream.time_base is None or not rate:
        return 0
    return max(0, round(float(stream.duration * stream.time_base * rate)))


def _stream_start(stream: av.video.stream.VideoStream) -> float:
    """Where the stream's time starts (1.4 s in a typical MPEG-TS); times count from here."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _to_seconds(pts: int, time_base: Fraction, start: float) -> float:
    """A timestamp in seconds from the stream's start, as players (and OpenCV) count."""
    return max(0.0, float(pts * time_base) - start)


def _demux_times(path: Path, start: float) -> _Packets:
    """Read every packet's pts without decoding (cheap): the plan for the decode pass."""
    times: list[float] = []
    keyframes: list[float] = []
    order: list[tuple[float, bool]] = []
    discarded = 0
    complete = True
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    complete = False
                    continue
                if packet.is_discard:  # before an edit list's start (a clip cut with -c copy)
                    discarded += 1
                    continue
                time = _to_seconds(packet.pts, packet.time_base, start)
                times.append(time)
                order.append((time, bool(packet.is_keyframe)))
                if packet.is_keyframe:
                    keyframes.append(time)
        except av.FFmpegError:
            complete = False
    times.sort()
    keyframes.sort()
    return _Packets(times, keyframes, complete, tuple(order), discarded)


def _ticks(times: list[float], interval: float) -> list[float]:
    """The frames ``--fps`` takes: the first frame at or after each tick of the grid."""
    take = _grid_selector(interval)
    return [t for t in times if take(t)]


def _needed_times(packets: _Packets, sampling: SamplingSettings) -> set[float] | None:
    """Times whose packets ``exact`` mode must decode fully; None: decode everything."""
    if sampling.mode == "all" or not packets.complete:
        return None
    if sampling.keyframes:
        return set()
    if sampling.every_n is not None:
        return set(packets.times[:: sampling.every_n])
    return set(_ticks(packets.times, 1.0 / float(sampling.fps or 1.0)))


def _unneeded_times(packets: _Packets, needed: set[float]) -> set[float]:
    """Packets ``exact`` mode need not even send to the decoder.

    Split the stream at keyframes (decode order). Within a group, nothing after its last
    needed frame (decode order) is referenced by a needed frame: references always come
    earlier in decode order, and the next group starts from its own keyframe. The one
    exception is an open GOP, whose leading pictures (after the next keyframe in decode
    order, before it in presentation order) may reference this group: when one of those is
    needed, this group is decoded as usual.
    """
    groups: list[list[float]] = []
    leading: list[bool] = []  # does the group hold a needed leading picture?
    for time, key in packets.order:
        if key or not groups:
            groups.append([])
            leading.append(False)
            key_time = time
        elif time < key_time and time in needed:
            leading[-1] = True
        groups[-1].append(time)
    unneeded: set[float] = set()
    for i, group in enumerate(groups):
        if i + 1 < len(groups) and leading[i + 1]:
            continue
        last = max((j for j, t in enumerate(group) if t in needed), default=-1)
        unneeded.update(group[last + 1 :])
    return unneeded - needed


def _frame_duration(frame: av.VideoFrame, packet: av.Packet) -> float:
    """One frame interval as ffprobe counts it: the frame's (else its packet's) duration."""
    duration = getattr(frame, "duration", None) or 0
    if duration and frame.time_base is not None:
        return float(duration * frame.time_base)
    return _packet_duration(packet)


def _packet_duration(packet: av.Packet | None) -> float:
    if packet is None or not packet.size or not packet.duration:
        return 0.0
    return float(packet.duration * packet.time_base)


def _missing_tail(stream: av.video.stream.VideoStream, stats: VideoStats, discarded: int) -> int:
    """Frames the header promises after the last decodable frame's end.

    Compares times, not frame counts: a variable-frame-rate AVI's header counts the
    ticks of its rate (444 where 68 frames are stored), which ends where the last frame
    does; a truncated file's header ends later. (AVI's ``duration`` without an index is
    a guess from the file size, so the frame count comes first.)
    """
    if stats.nominal_fps <= 0:
        return 0
    if stream.frames:
        promised = (stream.frames - discarded) / stats.nominal_fps
    elif stream.duration is not None and stream.time_base is not None:
        promised = float(stream.duration * stream.time_base)
    else:
        return 0
    gap = (promised - stats.duration) * stats.nominal_fps
    return round(gap) if gap > TAIL_TOLERANCE_FRAMES else 0


def _selector(sampling: SamplingSettings) -> Callable[[int, float], bool]:
    """A predicate (index, pts) → take this frame? Frames come in presentation order."""
    if sampling.keyframes:
        return lambda index, pts: True
    if sampling.every_n is not None:
        take_index = _grid_selector(sampling.every_n)
        return lambda index, pts: take_index(index)
    take_time = _grid_selector(1.0 / float(sampling.fps or 1.0))
    return lambda index, pts: take_time(pts)


def _grid_selector(step: float) -> Callable[[float], bool]:
    """Take the first position at or after each multiple of ``step``; skip the rest."""
    next_due = 0.0

    def take(position: float) -> bool:
        nonlocal next_due
        if position + PTS_EPSILON < next_due:
            return False
        # The next sample is due at the first grid point after this one.
        next_due = (math.floor(position / step + PTS_EPSILON) + 1) * step
        return True

    return take
