"""Open a video with PyAV (FFmpeg) and sample frames with their true timestamps.

A first pass only demuxes (no decoding, a few ms: ``vidcap.container``) and lists every
packet's presentation time. It gives each frame its index (rank in presentation order), the video's end, and
the frames the sampling needs — where packet times can be trusted to name frames (not in
packed MPEG-4 B-frames, nor in H.264 with B-frames inside AVI: there every frame is
decoded). The second pass decodes as little as the mode allows:

- ``exact`` (default): reference frames plus the non-reference frames a tick needs, and
  nothing between a keyframe group's last needed frame and the next keyframe; the same
  frames, times and pixels as decoding everything;
- ``all``: decode every frame (the slow reference ``exact`` is tested against);
- ``SamplingSettings.keyframes``: decode keyframes only.

A frame's time is FFmpeg's best-effort timestamp (what ffprobe reports as
``best_effort_timestamp``: the frame's pts, or the decoder's release dts where pts have
proved wrong more often), never index ÷ nominal fps; frames leave in presentation order (a
small reorder buffer absorbs a damaged stream's late frames). Times count from zero in
MP4/MOV and Matroska/WebM (a late start is kept, as players show it) and from the file's
start elsewhere (MPEG-TS/PS timestamps have an arbitrary origin). The duration is the end
of the last frame: its time plus one frame interval, as ffprobe counts it.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from array import array
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path

import av

from vidcap.container import (
    ALPHA_DECODERS,
    AVFMT_TS_DISCONT,
    MAX_PLAUSIBLE_FPS,
    Clock,
    Packets,
    alpha_decoder,
    assumed_rate,
    demux_times,
    disable_generated_pts,
    fragmented_mp4,
    frames_from_duration,
    held_end,
    ivf_count_is_length,
    missing_file_tail,
    missing_tail,
    nominal_rate,
    off_the_clock,
    open_container,
    other_video_streams,
    stated_end,
    stream_start,
    the_video_stream,
    time_origin,
    undecodable_why,
    video_stream,
)
from vidcap.decoded import DecodedFrame, VideoStats
from vidcap.errors import VideoError
from vidcap.ffmpeg import not_a_video_file
from vidcap.frame_order import BestEffort, Reorder, Sent, time_key
from vidcap.frames import Frame
from vidcap.picture import (
    Picture,
)
from vidcap.sampling import (
    PTS_EPSILON,
    holds,
    needed_times,
    selector,
    tick_tolerance,
    ticks,
    unneeded_times,
)
from vidcap.settings import SamplingSettings
from vidcap.torn import torn_end
from vidcap.wording import counted

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".mpg", ".mpeg",
     ".ts", ".mts", ".m2ts", ".3gp", ".3g2", ".ogv", ".vob", ".divx", ".f4v", ".mxf", ".dv",
     ".ivf", ".h264", ".264", ".hevc", ".h265", ".265", ".m2v", ".gif", ".rm", ".rmvb",
     ".qt", ".mod", ".tod", ".m2t", ".nut", ".mjpeg", ".mjpg", ".y4m", ".dvr-ms", ".wtv"}
)  # fmt: skip

RESET_MATCH_S = 2.0  # a frame's pts to the reset's first dts (B-frame delay, rounding)
AV_PICTURE_TYPE_NONE, AV_PICTURE_TYPE_I, AV_PICTURE_TYPE_B = 0, 1, 3  # a decoded frame's
# picture type (libavutil's AVPictureType; NONE: its decoder says nothing of it)
SAME_TIME_S = 1e-4  # two frames this close in time are shown at one time (10,000 frames/s)


def restarted_duration(path: Path | str) -> float | None:
    """The duration of a video whose clock starts again (``VideoReader.clock_restarts``), on
    the timeline that goes on (every frame decoded, none converted); None where the clock
    never starts again (the container's duration holds)."""
    with VideoReader(path) as reader:
        if not reader.clock_restarts():
            return None
        for _ in reader.decoded_frames():
            pass
        return round(reader.stats.duration, 6)  # (the sum of two clocks' floats: 4.99999…)


# Decoders whose frames carry no key flag (libvpx's wrapper): one frame a packet, the packet's.
_PACKET_KEYED = frozenset(ALPHA_DECODERS.values())


def decoder_for(stream: av.video.stream.VideoStream) -> av.CodecContext:
    """The decoder for ``stream``: its own, or libvpx's for a WebM with an alpha channel."""
    codec = stream.codec_context
    name = alpha_decoder(stream)
    if name is None:
        return codec
    if name not in av.codecs_available:
        log.warning("this PyAV has no %s decoder: the video's transparency is not seen", name)
        return codec
    decoder = av.CodecContext.create(name, "r")
    decoder.width, decoder.height = codec.width, codec.height
    if codec.extradata:
        decoder.extradata = codec.extradata
    return decoder


# Every frame decoded, nothing skipped: ``decoded_frames`` (scene detection).
_EVERY_FRAME = SamplingSettings(every_n=1, mode="all")


def _first_frame_only(sampling: SamplingSettings, packets: Packets) -> SamplingSettings:
    """``sampling`` taking the first frame alone, for ``--keyframes`` where no frame shown is
    a keyframe; every frame decoded (``all``) and read to the end, as every mode is, for the
    video's duration and lost frames (stopping after the first ended the video there)."""
    return replace(sampling, keyframes=False, fps=None, every_n=len(packets.times) + 1, mode="all")


class VideoReader:
    """One open video. Iterate ``frames(sampling)`` once; ``stats`` is complete afterwards.

    ``threads``: decoder threads (0: FFmpeg picks one per core). A pool of N decoder
    processes does best with 1 each.
    """

    def __init__(self, path: Path | str, threads: int = 0) -> None:
        self.path = Path(path)
        if (reason := not_a_video_file(self.path)) is not None:
            raise VideoError(f"{self.path}: {reason}")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file")
        self._container = open_container(self.path)
        try:
            self._stream = the_video_stream(self._container, self.path)
        except VideoError:
            self._container.close()
            raise
        self._open_decoder()
        self._start = time_origin(self._container, self._stream)
        # A kept late start (MP4/Matroska): the header's frame count starts there. (Not in
        # a fragmented MP4: its duration is where its last fragment ends, from zero.)
        self._delay = max(0.0, stream_start(self._stream) - self._start)
        if self._delay and fragmented_mp4(self._container):
            self._delay = 0.0
        self._picture = Picture(self._stream)  # rotation, SAR, HDR: what a player shows
        self._threads = threads
        self._one_thread = threads == 1  # decoding again after damage: on one thread
        self._decoded_all = False  # the last pass decoded every frame (for the warning)
        self._best_effort = BestEffort()
        self._reset_offset = 0.0  # seconds added after the clock started again (MPEG-TS/PS)
        self._resets_used = 0  # of the demux pass's resets, how many frames have met
        self._damaged = False  # decoding met errors, corrupt or disordered frames
        self._packets: Packets | None = None
        self._unneeded = array("d")  # sorted
        self._clock = Clock(self._stream.time_base, self._start)
        self._by_dts = False  # packets timed by their dts (set by the demux pass)
        self._torn: str | None = None  # what a cut-off file ends inside (``torn_end``)
        self._torn_key: float | None = None  # the time of the frame the cut tears
        self._torn_failed = False  # the packet the file's end tore gave no frame
        stream = self._stream
        rate = nominal_rate(self._container, stream)
        self.tick_tolerance = tick_tolerance(stream.time_base, float(rate or 0.0))
        self.stats = VideoStats(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            nominal_fps=float(rate or 0.0),
            expected_frames=stream.frames or frames_from_duration(stream, float(rate or 0.0)),
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def detector_rate(self) -> float:
        """The frame rate PySceneDetect's readers time this stream by (its PyAV backend's
        ``guessed_rate``, FFmpeg's ``r_frame_rate``, as OpenCV's reader has it too): the
        clock of a scene detector's shortest shot, in frames. Not the average rate: in
        variable-frame-rate video (a screen recording) that is lower, and shots PySceneDetect
        finds were merged. The nominal rate where FFmpeg guesses none or a time base."""
        guessed = self._stream.guessed_rate
        if guessed and 0 < guessed <= MAX_PLAUSIBLE_FPS:
            return float(guessed)
        return self.stats.nominal_fps

    def stated_end(self) -> float | None:
        """Where the header says the picture ends, in the frames' times (``container.stated_end``)."""
        edit_end = self._packets.edit_end if self._packets else None
        return stated_end(self._container, self._stream, self._delay, self._start, edit_end)

    def warn_if_untimed(self) -> None:
        """Say so when the file holds no times and its codec no frame rate (raw MJPEG, raw
        H.264 without timing): every time then rests on FFmpeg's assumed rate. A single
        picture (a still PNG or WebP given as a video) has no rate to get wrong: not warned."""
        rate = assumed_rate(self._container, self._stream)
        if rate is not None and len(self._demux().times) > 1:
            log.warning(
                "%s: a raw %s stream holds no timestamps and declares no frame rate: its times "
                "assume %s frames/s (FFmpeg's default); if it was recorded at another rate R, "
                "give it that rate first: ffmpeg -framerate R -i %s -c copy %s.mkv",
                self.path,
                self._stream.codec_context.name,
                f"{float(rate):g}",
                self.path.name,
                self.path.stem,
            )

    def warn_of_other_views(self) -> None:
        """Say so when the file holds more video than the stream captioned (a two-camera
        dashcam, a 360° camera's two lenses, a multi-angle recording): only the one a player
        shows is captioned (``video_stream``); covers are no video."""
        others = other_video_streams(self._container, self._stream)
        if not others:
            return
        log.warning(
            "%s: holds %d video streams; captioned #%d (%dx%d, the one a player shows), not %s; "
            "to caption another, copy it out first: ffmpeg -i %s -map 0:N -c copy %s-N.mkv",
            self.path,
            len(others) + 1,
            self._stream.index,
            self._stream.codec_context.width,
            self._stream.codec_context.height,
            ", ".join(
                f"#{s.index} ({s.codec_context.width}x{s.codec_context.height})" for s in others
            ),
            self.path.name,
            self.path.stem,
        )

    def estimated_samples(self, sampling: SamplingSettings) -> int | None:
        """How many frames ``sampling`` takes, for progress bars: exact unless frames fail or
        packets name no frames (H.264 with B-frames in AVI: may be one off)."""
        packets = self._demux()
        sampling = self._keyframes_or_first(sampling, packets)
        if sampling.keyframes:
            count = len(packets.keyframe_times)
        elif sampling.every_n is not None:
            count = math.ceil(len(packets.times) / sampling.every_n)
        else:
            interval = 1.0 / float(sampling.fps or 1.0)
            count = len(ticks(packets.times, interval, self.tick_tolerance))
        if not packets.complete and count == 0:
            return None
        return min(count, sampling.max_frames) if sampling.max_frames else count

    def frames(self, sampling: SamplingSettings) -> Iterator[Frame]:
        """The sampled frames (``samples``) as players show them, at their stored resolution."""
        for sample in self.samples(sampling):
            yield sample.shown()

    def samples(self, sampling: SamplingSettings) -> Iterator[DecodedFrame]:
        """Decode as little as ``sampling.mode`` allows, yielding sampled frames (true pts),
        not converted yet: ``DecodedFrame.for_model`` and ``picture`` scale them straight
        from the decoder's pixels; ``shown`` converts them whole.

        When ``exact`` skips whole stretches after a keyframe group's last needed frame, it
        checks what the decoder gives against the demux pass's plan: a frame the plan did not
        expect, or an expected one that never comes out (keyframe flags that are no random
        access points, as x264's periodic intra refresh writes) stops that and the video is
        decoded again, every frame, sending nothing twice. So does any sign of damage (a
        corrupt frame, a packet that does not decode, frames out of order) while any mode
        leaves frames undecoded: the frames it skipped may be lost too, which moves indices;
        and damage while decoding on several threads, on one thread then: FFmpeg's frame
        threads lose the frames in flight around an error (the last frames of a truncated
        MP4), so what is kept would depend on the machine's cores.
        """
        packets = self._demux()
        self._find_tear(packets)
        sampling = self._keyframes_or_first(sampling, packets)
        if not packets.generated_pts:  # frames timed as ffprobe times them
            disable_generated_pts(self._container)
        needed = needed_times(packets, sampling, self.tick_tolerance)
        # (with --max-frames the end is where reading stops: skipping ahead would move it)
        exact = sampling.mode == "exact" and not sampling.keyframes and not sampling.max_frames
        skipping = exact and bool(needed)
        self._unneeded = unneeded_times(packets, needed) if skipping and needed else array("d")
        sent = Sent()
        plan = {time_key(t) for t in needed} if skipping and needed else None
        if needed is not None and packets.torn is not None:
            # (decoded, not sampled: whether the torn packet gives a frame, which moves the
            # end, is its decoder's to say, as where every frame is decoded)
            needed = needed | {packets.torn}
            self._unneeded = unneeded_times(packets, needed)
        try:
            reached_end = yield from self._pass(sampling, packets, needed, plan, sent)
        except _PlanBroken as exc:
            reached_end = yield from self._again(exc, sampling, packets, sent)
        if sampling.keyframes and reached_end and not self.stats.sampled_frames:
            # Packets flagged keyframes whose frames the decoder flags none (the recovery
            # points of an intra-refresh stream cut in its middle, as a broadcast capture
            # starts: alone they decode to nothing): no frame shown is a keyframe, so the
            # first stands for them, as where no packet is flagged (``_keyframes_or_first``).
            why = _PlanBroken("no frame it shows is a keyframe")
            first = _first_frame_only(sampling, packets)
            reached_end = yield from self._again(why, first, packets, sent)
        self._finish(reached_end)

    def _keyframes_or_first(self, sampling: SamplingSettings, packets: Packets) -> SamplingSettings:
        """``--keyframes`` where no frame shown is a keyframe (a stream copy cut between two,
        whose edit list hides the keyframe it starts from): the first frame stands for them,
        rather than no sample and a failed video."""
        if not (sampling.keyframes and packets.complete and packets.times):
            return sampling
        if packets.keyframe_times:
            return sampling
        log.info("%s: no keyframe among the frames shown; sampling the first frame", self.path)
        return _first_frame_only(sampling, packets)

    def _again(
        self,
        why: _PlanBroken,
        sampling: SamplingSettings,
        packets: Packets,
        sent: Sent,
        every: bool = False,
    ) -> Generator[DecodedFrame, None, bool]:
        """The next pass: every frame, on one thread where the last met damage on several
        (a pass on one thread decoding every frame has nothing left to find); frames an
        earlier pass sent are not sent again."""
        while True:
            log.info("%s: %s; decoding it again, every frame", self.path, why)
            self._reopen()
            self._one_thread = self._one_thread or why.damage
            try:
                return (yield from self._pass(sampling, packets, None, None, sent, every=every))
            except _PlanBroken as again:
                if self._one_thread:
                    raise
                why = again

    def _find_tear(self, packets: Packets) -> None:
        """Is the file cut off inside one of its units (``torn_end``), and is its last
        packet the one torn, reaching the file's end? That packet's frame (a DV frame, a
        GIF image: decoded from what is there, the rest black or the previous picture) is
        then marked damaged, where its packet's time names it."""
        self._torn = torn_end(self._container)
        self._torn_key = None
        if self._torn is None or packets.last is None or not packets.plannable:
            return
        time, end = packets.last
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return
        if end >= size:
            self._torn_key = time_key(time)

    def _open_decoder(self) -> None:
        """The stream's decoder (``decoder_for``), and whether its frames take their key flag
        from their packet (libvpx's wrapper sets none)."""
        self._codec = decoder_for(self._stream)
        self._keyed_by_packet = self._codec.name in _PACKET_KEYED
        self._confirm_key = False  # the next frame must be a keyframe to its decoder (_decode)

    def clock_restarts(self) -> bool:
        """Does the stream's clock start again (MPEG-TS/PS: recordings joined, a reset in a
        broadcast)? Its timestamps then repeat: the timeline here goes on (``frames``), but
        the container's duration and a seek by timestamp do not."""
        if not self._container.format.flags & AVFMT_TS_DISCONT:
            return False
        return bool(self._demux().resets)

    def decoded_frames(self) -> Iterator[DecodedFrame]:
        """Every frame, decoded (nothing skipped, whatever the sampling), in presentation
        order, not converted: what scene detection (``vidcap.scenes``) needs to see. The
        same indices and times as ``frames``; ``stats`` is complete afterwards."""
        packets = self._demux()
        self._find_tear(packets)
        if not packets.generated_pts:  # frames timed as ffprobe times them (as ``samples``)
            disable_generated_pts(self._container)
        sent = Sent()
        try:
            reached_end = yield from self._pass(_EVERY_FRAME, packets, None, None, sent, every=True)
        except _PlanBroken as exc:  # (damage on several threads)
            reached_end = yield from self._again(exc, _EVERY_FRAME, packets, sent, every=True)
        self._finish(reached_end)

    def _pass(
        self,
        sampling: SamplingSettings,
        packets: Packets,
        needed: set[float] | None,
        plan: set[float] | None,
        sent: Sent,
        every: bool = False,
    ) -> Generator[DecodedFrame, None, bool]:
        """One decoding pass; True when it read to the end. ``plan``: the frame times the
        samples must be (checked, ``_PlanBroken`` when the decoder disagrees); ``sent``: what
        earlier passes sent (not sent again), added to. ``every``: yield every decoded frame as a
        ``DecodedFrame`` instead of the sampled ones."""
        stats = self.stats
        codec = self._codec
        ranked = needed is None or not packets.complete
        # Frame threads may hide damage (no error, no corrupt flag: a frame just missing),
        # which a pass that skips frames could not notice by counting: such a pass decodes
        # on slice threads only, which report it as one thread does. (The decoder pool
        # runs one thread per worker by default anyway.)
        codec.thread_type = "AUTO" if ranked else "SLICE"
        codec.thread_count = 1 if self._one_thread else self._threads
        threaded = not self._one_thread  # (0: one thread per core)
        self._decoded_all = needed is None
        # A second pass sends no frame earlier than one the first pass sent (order kept),
        # nor, of the frames at that time (a damaged stream may time two alike), as many
        # as it sent.
        sent_up_to, sent_there = sent.latest, sent.at_latest
        seen_there = 0  # frames at ``sent_up_to`` released in this pass
        came: set[float] = set()  # the plan's times sent in this pass
        take = selector(sampling, self.tick_tolerance)
        packet_keys = {time_key(t) for t in packets.keyframe_times} if sampling.keyframes else set()
        flags: bool | None = None  # does the decoder flag its keyframes
        expected = sorted(plan) if plan is not None else []
        position = 0
        last_index = -1
        shown = 0  # frames released in presentation order in this pass
        # Every frame decoded (``ranked``): a frame's index is its rank among the frames that
        # decode (as ffprobe lists them); otherwise its rank among the demux pass's packets.
        clock = self._clock
        tainted = False  # since a corrupt reference or lost frame, no clean keyframe yet
        failed = stats.failed_frames
        # Packets flagged corrupt (an MPEG-TS that lost packets): the stream is damaged from
        # the start, so it is decoded whole on one thread and a packet that gives no frame
        # is a frame lost; a frame released with such a packet, and those predicted from
        # it, are marked. (Nothing more per frame for a file without them.)
        lossy = bool(packets.corrupt)
        self._damaged = self._damaged or lossy
        previous: float | None = None  # the time of the frame before, in presentation order
        for packet, decoded, pts in self._in_order(self._decode(sampling, needed)):
            if decoded is None:  # skipped on purpose: still counts towards the video's end
                self._extend(pts, _packet_duration(packet, clock))
                continue
            if (
                stats.failed_frames > failed
                or (decoded.is_corrupt and decoded.pict_type != AV_PICTURE_TYPE_B)
                or (lossy and packet is not None and packet.pos in packets.corrupt)
            ):  # (frames after a corrupt B-frame do not predict from it: only it is marked)
                tainted, failed = True, stats.failed_frames
            elif decoded.key_frame and not decoded.is_corrupt:
                tainted = False
            stats.corrupt_frames += decoded.is_corrupt
            key = time_key(pts)
            damaged = tainted or decoded.is_corrupt or key == self._torn_key
            if (
                not ranked
                and packets.unshown_before is not None
                and pts < packets.unshown_before - PTS_EPSILON
            ):  # (a decoder that shows what predicts from frames the file does not hold)
                raise _PlanBroken(
                    f"a frame at {pts:.3f} s, before the first keyframe",
                    damage=decoded.is_corrupt or self._damaged,
                )
            if not ranked and (decoded.is_corrupt or self._damaged):
                # Frames not decoded may be lost too: indices and keyframes need them all.
                raise _PlanBroken(
                    f"a damaged stream (at {pts:.3f} s) while skipping frames", damage=True
                )
            if threaded and (decoded.is_corrupt or self._damaged):
                raise _PlanBroken(f"a damaged stream (at {pts:.3f} s) on several threads", True)
            if plan is not None:
                while position < len(expected) and expected[position] < key:
                    if expected[position] not in came:
                        raise _PlanBroken(f"the frame at {expected[position]:.3f} s never came out")
                    position += 1
            orientation, sar = self._picture.see(decoded)  # (a display matrix holds until the next)
            self._extend(pts, _frame_duration(decoded, packet, clock))
            if previous is not None and pts - previous < SAME_TIME_S:
                stats.first_same_time = pts if not stats.same_time_frames else stats.first_same_time
                stats.same_time_frames += 1
            previous = pts
            if ranked:
                index = shown
            else:
                index = bisect.bisect_left(packets.times, pts - PTS_EPSILON)
                # (the packet a cut tore, decoded before any frame after it is released:
                # where it gave none, it is no frame to rank them by)
                index -= self._torn_failed and pts > packets.torn
                if index == last_index:  # two frames with one timestamp: keep indices distinct
                    index += 1
            shown += 1
            last_index = index
            seen_there += key == sent_up_to
            # sent by an earlier pass (or lost by it, and too late to place now)
            done = key < sent_up_to or (key == sent_up_to and seen_there <= sent_there)
            if every:  # (scene detection: every frame, in presentation order)
                if not done:
                    sent.add(key)
                    yield DecodedFrame(index, pts, decoded, orientation, sar, damaged)
                continue
            if flags is None:  # (the stream's first frame is a keyframe: is it flagged?)
                flags = bool(decoded.key_frame) or decoded.pict_type != AV_PICTURE_TYPE_NONE
            if sampling.keyframes and not (decoded.key_frame or (not flags and key in packet_keys)):
                # (when every packet is decoded: no pts, or --decode-mode all; a decoder that
                # flags no frame, nor gives a picture type — QuickTime Animation, rpza, smc,
                # Microsoft Video 1, CineForm, Flash Screen Video — leaves it to the packets)
                continue
            if not take(index, pts) or done:
                continue
            if plan is not None:
                if key not in plan:
                    raise _PlanBroken(f"a frame at {pts:.3f} s that no tick asked for")
                came.add(key)
            stats.sampled_frames += 1
            sent.add(key)
            yield DecodedFrame(index, pts, decoded, orientation, sar, damaged)
            if sampling.max_frames is not None and stats.sampled_frames >= sampling.max_frames:
                return False
        missing = [t for t in expected[position:] if t not in came]
        if missing:
            raise _PlanBroken(f"the frame at {missing[0]:.3f} s never came out")
        if self._damaged and (threaded or not ranked):
            where = "on several threads" if ranked else "while skipping frames"
            raise _PlanBroken(f"a damaged stream (at its end) {where}", damage=True)
        stats.failed_frames += self._torn_failed  # (a frame lost, counted once the pass ends)
        held = stats.decoded_frames + self._torn_failed
        if threaded and ranked and packets.complete and held < len(packets.times):
            # Frame threads can lose frames with no error at all (a truncated MP4 on 3)
            raise _PlanBroken(
                f"{stats.decoded_frames} frames of {len(packets.times)} packets on several threads",
                damage=True,
            )
        if ranked and packets.complete and (self._damaged or packets.joins):
            # Every packet was sent and the stream showed damage, or joins edits (whose
            # joins FFmpeg's decoders may not decode across): a packet that gave no frame
            # is a frame lost (where nothing is wrong, one packet need not be one frame:
            # field pairs, placeholders).
            unaccounted = len(packets.times) - stats.decoded_frames
            stats.failed_frames = max(stats.failed_frames, unaccounted)
        return True

    def _in_order(
        self, decoded: Iterator[tuple[av.Packet, av.VideoFrame | None, float]]
    ) -> Iterator[tuple[av.Packet, av.VideoFrame | None, float]]:
        """(packet, frame, time) in presentation order; skipped packets (no frame, the
        packet's time) pass straight through.

        Each frame is timed on arrival (``_arrival_time``) and goes through a ``Reorder``
        buffer: a decoder that releases frames out of order (a damaged stream) loses none.
        """
        stats = self.stats
        buffer: Reorder[tuple[av.Packet, av.VideoFrame]] = Reorder()
        for packet, frame, skipped_time in decoded:
            if frame is None:
                yield packet, None, skipped_time
                continue
            time = self._arrival_time(frame, buffer.latest if stats.decoded_frames else None)
            stats.decoded_frames += 1
            if frame.is_corrupt or self._best_effort.faulty_pts or time < buffer.latest:
                self._damaged = True
            for released, (held_packet, held_frame) in buffer.push(time, (packet, frame)):
                yield held_packet, held_frame, released
        for released, (held_packet, held_frame) in buffer.drain():
            yield held_packet, held_frame, released
        stats.late_frames += buffer.late

    def _reopen(self) -> None:
        """A fresh container and decoder for a second pass; its counts start again."""
        self._container.close()
        self._container = open_container(self.path)
        self._stream = video_stream(self._container) or self._stream
        self._open_decoder()
        self._picture = Picture(self._stream)  # (from the first frame again)
        if not self._demux().generated_pts:
            disable_generated_pts(self._container)
        self._unneeded = array("d")
        self._clock = Clock(self._stream.time_base, self._start)
        self._best_effort = BestEffort()
        self._reset_offset = 0.0  # seconds added after the clock started again (MPEG-TS/PS)
        self._resets_used = 0  # of the demux pass's resets, how many frames have met
        self._damaged = False  # decoding met errors, corrupt or disordered frames
        self._torn_failed = False
        self.stats.decoded_frames = 0
        self.stats.corrupt_frames = 0
        self.stats.failed_frames = 0
        self.stats.late_frames = 0
        self.stats.same_time_frames = 0

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

    def _demux(self) -> Packets:
        if self._packets is None:
            self._packets = demux_times(self.path, self._start)
            self._by_dts = self._packets.clock == "dts"
        return self._packets

    # --- the decode pass --------------------------------------------------------------

    def _decode(
        self, sampling: SamplingSettings, needed: set[float] | None
    ) -> Iterator[tuple[av.Packet, av.VideoFrame | None, float]]:
        """(packet, frame, 0.0) per decoded frame; (packet, None, its time) per packet
        skipped on purpose (one whose time is known)."""
        codec = self._codec
        pending = False  # packets sent since the decoder was last drained
        jumped = False  # packets skipped since the last one sent
        self._confirm_key = False
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:
                    # The demuxer's last packet, or an empty one mid-stream: "show the
                    # previous picture again" (Theora's duplicate frames, an AVI's null
                    # chunk). Not a frame ffprobe lists; sent, it would drain the decoder.
                    continue
                # How the decoder treats the packet: its skip_frame value, or None: not sent.
                time = None  # (the packet's, once needed)
                if needed is None:
                    skip = "DEFAULT"
                elif sampling.keyframes and (packet.is_keyframe or not needed):
                    skip = "DEFAULT" if packet.is_keyframe else None
                else:
                    time = self._packet_time(packet)
                    if time in needed:
                        skip = "DEFAULT"
                    elif time is not None and holds(self._unneeded, time):
                        skip = None
                    else:
                        skip = "NONREF"
                if skip is None:
                    if pending and (not sampling.keyframes or self._packets.open_gop):
                        # Jumping to a later keyframe: drain what the decoder holds back
                        # for reordering first, or it comes out after the next group's
                        # frames (FFmpeg's H.264 decoder does so after non-IDR keyframes;
                        # with --keyframes in an open GOP it held all but 3 of 10 back and
                        # flagged damage, so every frame was decoded again; in a closed
                        # GOP, --keyframes needs no drain: 15 % more time with one).
                        yield from self._decode_packet(None)
                        codec.flush_buffers()
                        self._best_effort.reset()  # as flushing resets FFmpeg's
                        pending = False
                    if time is None:  # (--keyframes: not timed yet)
                        time = self._packet_time(packet)
                    if time is not None and not packet.is_discard:
                        # (a packet an edit list hides is no frame: it does not move the end)
                        yield packet, None, time
                    jumped = True
                    continue
                if jumped:  # (a keyframe flag is the demuxer's: after a jump, the decoder
                    # must agree)
                    self._confirm_key = self._confirm_key or not sampling.keyframes
                    jumped = False
                codec.skip_frame = skip
                pending = True
                yield from self._decode_packet(packet)
        except av.FFmpegError as exc:  # a damaged container: keep what was read
            log.debug("%s: demuxing stopped: %s", self.path, exc)
        yield from self._decode_packet(None)

    def _packet_time(self, packet: av.Packet) -> float | None:
        """The time of the frame ``packet`` holds (by the demux pass's clock), if known."""
        timestamp = packet.dts if self._by_dts else packet.pts
        return None if timestamp is None else self._clock.seconds(timestamp)

    def _arrival_time(self, frame: av.VideoFrame, previous: float | None) -> float:
        """A decoded frame's time: FFmpeg's best-effort timestamp (``BestEffort``), or,
        where the decoder gives none, one frame interval after ``previous`` (the latest
        frame before it; None: this is the first).

        In MPEG-TS/PS (``AVFMT_TS_DISCONT``), a clock that starts again (recordings joined
        byte for byte, a reset or a splice in a broadcast) is a discontinuity, not damage:
        the first frame of a reset the demux pass found (more than ``RESET_BACK_S`` before
        the latest, or more than ``RESET_FORWARD_S`` after it: ``off_the_clock``) goes on
        one interval after the latest, and so do the frames after it, as the ffmpeg command
        does."""
        stats = self.stats
        step = 1.0 / stats.nominal_fps if stats.nominal_fps > 0 else 0.0
        timestamp = self._best_effort(frame.pts, getattr(frame, "dts", None))
        time_base = frame.time_base or self._clock.time_base  # drained: the stream's base
        if timestamp is None or time_base is None:  # no timestamp: one interval on
            return 0.0 if previous is None else previous + step
        seconds = timestamp * time_base.numerator / time_base.denominator - self._start
        time = seconds + self._reset_offset
        if previous is not None and off_the_clock(time, previous) and self._reset_at(seconds):
            log.info(
                "%s: the clock starts again at %.3f s; the timeline goes on", self.path, previous
            )
            self._reset_offset += previous + step - time
            time = previous + step
        return max(0.0, time)

    def _reset_at(self, seconds: float) -> bool:
        """Is a frame at ``seconds`` (its own clock) the first of a reset the demux pass
        found (within ``RESET_MATCH_S`` of the new clock's first packet)? Each reset once."""
        resets = self._packets.resets if self._packets else ()
        for index in range(self._resets_used, len(resets)):
            if abs(seconds - resets[index]) <= RESET_MATCH_S:
                self._resets_used = index + 1
                return True
        return False

    def _decode_packet(
        self, packet: av.Packet | None
    ) -> Iterator[tuple[av.Packet, av.VideoFrame | None, float]]:
        try:
            frames = self._codec.decode(packet)
        except av.FFmpegError as exc:
            log.debug("%s: a packet did not decode: %s", self.path, exc)
            if self._is_torn(packet):  # (the file's end: nothing decodes after it)
                self._torn_failed = True
                return
            self.stats.failed_frames += 1
            self._damaged = True
            return
        for frame in frames:
            if self._keyed_by_packet and packet is not None and packet.is_keyframe:
                frame.key_frame = True  # (libvpx's wrapper leaves it unset; one frame a packet)
            if self._confirm_key and frame.pict_type != AV_PICTURE_TYPE_B:
                # The first frame after packets skipped must be one that predicts from no
                # earlier frame. Flags on every packet of a codec that predicts (H.261,
                # MPEG-4 Part 2 in a MOV without its sync-sample table, Apple's rpza):
                # decoded after a jump, frames showed other frames' pictures, or grey.
                self._confirm_key = False
                if not self._confirmed(frame):
                    raise _PlanBroken(
                        f"a frame after skipped ones (at {frame.time or 0:.3f} s) is no keyframe "
                        "to its decoder, though its packet says it is"
                    )
            self._picture.arrived(frame, self._codec)
            yield packet, frame, 0.0

    def _is_torn(self, packet: av.Packet | None) -> bool:
        """Is ``packet`` the one a cut-off file's end tore (``Packets.torn``)?"""
        torn = self._packets.torn if self._packets else None
        return torn is not None and packet is not None and self._packet_time(packet) == torn

    def _confirmed(self, frame: av.VideoFrame) -> bool:
        """Is ``frame``, decoded from a packet flagged a keyframe after a jump, one to its
        decoder too (flagged, or an I-picture)? A decoder that says nothing of any frame
        (no flag, no picture type: QuickTime Animation, Microsoft Video 1, Flash Screen
        Video, CineForm, rpza) leaves it to the packets, unless the codec predicts and
        every packet is flagged (rpza's, Cinepak's encoders flag them all): flags that
        tell nothing."""
        if frame.key_frame or frame.pict_type == AV_PICTURE_TYPE_I:
            return True
        if frame.pict_type != AV_PICTURE_TYPE_NONE:  # (P: the decoder says it predicts)
            return False
        packets = self._packets
        every = packets is not None and len(packets.keyframe_times) >= len(packets.times)
        return self._codec.codec.intra_only or not every

    def _finish(self, reached_end: bool) -> None:
        """Fail a video with no frame; warn once about frames that really failed."""
        stats = self.stats
        if stats.decoded_frames == 0:
            why = undecodable_why(self._container, self.path)
            raise VideoError(f"{self.path}: {why or 'no decodable frames'}")
        if not reached_end:
            stats.stopped_early = True
            return
        discarded = self._packets.discarded if self._packets else 0
        if ivf_count_is_length(self._stream, stats.duration, stats.nominal_fps):
            stats.expected_frames = frames_from_duration(self._stream, stats.nominal_fps)
        stats.expected_frames = max(0, stats.expected_frames - discarded)
        edit_end = self._packets.edit_end if self._packets else None
        stats.failed_frames += missing_tail(
            self._container, self._stream, stats, discarded, self._delay, self._start, edit_end
        ) or missing_file_tail(self._container, self._stream, stats, self._start)
        torn = self._torn  # its end is missing: how much, it never says
        if torn is not None:
            log.warning(
                "%s: ends inside %s: the file is cut off (an interrupted download or "
                "recording?) and its end is missing; the format does not say how much, so at "
                "least one frame is counted lost%s",
                self.path,
                torn,
                "; a sample of the frame it tears is marked damaged"
                if self._torn_key is not None and not self._torn_failed
                else "",
            )
            stats.failed_frames = max(stats.failed_frames, 1)
        if stats.same_time_frames:
            log.warning(
                "%s: %s the time of the frame before (%s): its timeline is lost there (a "
                "badly joined or damaged file), and samples there share those times",
                self.path,
                "1 frame has"
                if stats.same_time_frames == 1
                else f"{stats.same_time_frames} frames have",
                f"first at {stats.first_same_time:.3f} s",
            )
        if stats.corrupt_frames:
            log.warning(
                "%s: %s decoded with errors the decoder concealed (corrupt stream); "
                "samples that may show it are marked damaged",
                self.path,
                counted(stats.corrupt_frames, "frame"),
            )
        corrupt = len(self._packets.corrupt) if self._packets else 0
        if corrupt:
            log.warning(
                "%s: %s of its video arrived damaged (data lost in recording or "
                "transmission: gaps in the stream); samples that may show it are marked damaged",
                self.path,
                counted(corrupt, "packet"),
            )
        if not (stats.failed_frames or torn):
            held_to = held_end(self._container, self._stream, stats, self._start)
            if held_to is not None:  # the last picture stays on screen while the sound goes on
                log.info("%s: the sound goes on to %.3f s: last picture held", self.path, held_to)
                stats.duration = held_to
        if stats.failed_frames or stats.late_frames:
            lost = stats.failed_frames + stats.late_frames
            kept = stats.decoded_frames - stats.late_frames
            # (where frames were skipped, the demux pass counted what the file holds, less
            # the packet its end tore where that gave no frame)
            held = kept
            if not self._decoded_all and self._packets is not None:
                held = len(self._packets.times) - self._torn_failed
            if stats.expected_frames > held:
                # (a truncated last packet fails to decode and is missing from the tail)
                lost = min(lost, stats.expected_frames - held)
            total = max(stats.expected_frames, held + lost)
            stats.lost_frames = lost
            if self._packets is not None and self._packets.joins and not stats.late_frames:
                self._warn_joins_lost(lost, kept)
                return
            log.warning(
                "%s: %d of %d frames could not be decoded%s (corrupt or truncated stream); %s",
                self.path,
                lost,
                total,
                " or came out too far out of order" if stats.late_frames else "",
                # (frames left undecoded on purpose are no count of what decodes)
                f"kept the {kept} that decoded{' in order' if stats.late_frames else ''}"
                if self._decoded_all
                else "kept every frame that decoded",
            )

    def _warn_joins_lost(self, lost: int, kept: int) -> None:
        """The one warning where frames are lost in a file whose edit list joins parts of
        its stream (``Packets.joins``): FFmpeg joins them as one stream, and its decoder
        (HEVC's, with open GOPs or B-frames) loses frames where they join; the file itself
        is whole, and ffmpeg and ffprobe lose them too."""
        log.warning(
            "%s: %d of %d frames could not be decoded where its edit list joins %d parts "
            "of its stream (edited without re-encoding): FFmpeg's %s decoder cannot decode "
            "across such joins, and ffmpeg and ffprobe lose them too; kept the %d that decoded",
            self.path,
            lost,
            lost + kept,
            self._packets.joins + 1 if self._packets else 2,
            self._stream.codec_context.name,
            kept,
        )


class _PlanBroken(Exception):
    """The decoder's frames disagree with the demux pass's plan, or a pass met damage where
    it cannot keep every frame (see ``VideoReader.frames``); ``damage``: the latter."""

    def __init__(self, message: str, damage: bool = False) -> None:
        super().__init__(message)
        self.damage = damage


def _frame_duration(frame: av.VideoFrame, packet: av.Packet | None, clock: Clock) -> float:
    """One frame interval as ffprobe counts it: the frame's (else its packet's) duration."""
    duration = getattr(frame, "duration", None) or 0
    if duration:
        time_base = frame.time_base or clock.time_base  # drained: the stream's base
        if time_base is not None:
            return duration * time_base.numerator / time_base.denominator
    return _packet_duration(packet, clock)


def _packet_duration(packet: av.Packet | None, clock: Clock) -> float:
    """``packet``'s duration in seconds (``clock``: its stream's), 0.0 where unknown."""
    if packet is None or not packet.size or not packet.duration:
        return 0.0
    return clock.span(packet.duration)
