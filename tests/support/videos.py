"""Test videos generated with PyAV, each described by the truth it was encoded with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class VideoSpec:
    """What a generated test video holds: container, codec, and each frame's pts (s).

    ``b_frames``: the encoder's B-frame limit (0: codec default); ``index``: False strips
    an AVI's ``idx1`` index, as some cameras and cut-off downloads leave it.

    As phones and broadcasters store pictures: ``rotation`` (a display matrix turning the
    stored pixels by that many degrees anticlockwise; ``size`` is then the size *shown*,
    the pixels are stored turned back, with a red ``MARKER`` at the shown top-left),
    ``sar`` (non-square pixels), ``transfer`` ("smpte2084": 10-bit HEVC in PQ/BT.2020 whose
    frames a BT.2408 SDR rendering shows at ``frame_colour``).
    """

    name: str
    codec: str
    suffix: str
    times: tuple[float, ...]
    rate: Fraction = Fraction(10)
    size: tuple[int, int] = (96, 128)  # (height, width)
    b_frames: int = 0
    index: bool = True
    gop: int = 0  # frames between keyframes (0: the encoder's default)
    x264_params: str = ""  # e.g. "open-gop=1"
    rotation: int = 0  # display rotation, degrees anticlockwise (90: a portrait phone video)
    sar: Fraction | None = None  # sample aspect ratio (16/11: PAL 16:9 anamorphic)
    transfer: str = ""  # "smpte2084": 10-bit PQ BT.2020 (HDR)

    @property
    def stored_size(self) -> tuple[int, int]:
        """(height, width) of the stored pixels: ``size`` turned back by the rotation."""
        return self.size[::-1] if self.rotation % 180 else self.size

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) a player shows: non-square pixels widen (or heighten) the picture."""
        height, width = self.size
        if self.sar and self.sar > 1:
            width = round(width * self.sar)
        elif self.sar:
            height = round(height / self.sar)
        return width, height

    @property
    def shown_times(self) -> tuple[float, ...]:
        """The pts FFmpeg (and ffprobe) reports. AVI stores no pts: with B-frames the
        decoder's one-frame delay shows every frame one interval late."""
        if self.suffix == ".avi" and self.b_frames:
            return tuple(round(t + 1 / float(self.rate), 9) for t in self.times)
        return self.times

    @property
    def duration(self) -> float:
        """The end of the last frame: its shown pts plus one frame interval."""
        return self.shown_times[-1] + 1 / float(self.rate)


def constant_rate(n: int, rate: Fraction) -> tuple[float, ...]:
    return tuple(float(i / rate) for i in range(n))


def frame_colour(index: int) -> np.ndarray:
    """A frame whose mean grey level encodes its index (readable back after lossy codecs)."""
    return np.array([(index * 37) % 200 + 30] * 3, dtype=np.uint8)


MARKER = np.array([255, 0, 0], dtype=np.uint8)  # top-left of a rotated spec's shown frames


def shown_frame(spec: VideoSpec, index: int) -> np.ndarray:
    """Frame ``index`` of ``spec`` as a player shows it (RGB, ``spec.size``)."""
    rgb = np.empty((*spec.size, 3), dtype=np.uint8)
    rgb[:] = frame_colour(index)
    if spec.rotation:
        rgb[: spec.size[0] // 8, : spec.size[1] // 8] = MARKER
    return rgb


def pq_code(grey: int) -> int:
    """The 10-bit limited-range PQ luma of an SDR grey level (BT.2408: SDR white at
    203 cd/m², the grey's light through BT.1886's 2.4 gamma)."""
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    light = ((grey / 255) ** 2.4 * 203 / 10000) ** m1
    return round(64 + 876 * ((c1 + c2 * light) / (1 + c3 * light)) ** m2)


def _stored_frame(spec: VideoSpec, index: int) -> av.VideoFrame:
    """Frame ``index`` of a rotated, anamorphic or HDR spec, as stored."""
    height, width = spec.stored_size
    if spec.transfer:  # uniform grey: luma only, neutral chroma
        planes = np.full((height * 3 // 2, width), 512, dtype=np.uint16)
        planes[:height] = pq_code(int(frame_colour(index)[0]))
        return av.VideoFrame.from_ndarray(planes, format="yuv420p10le")
    rgb = np.rot90(shown_frame(spec, index), -(spec.rotation // 90))
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def write_video(path: Path, spec: VideoSpec) -> Path:
    """Encode ``spec`` to ``path``; frame i has pts ``spec.times[i]``."""
    if spec.rotation or spec.sar or spec.transfer:
        return _write_picture_video(path, spec)
    height, width = spec.size
    fine_time_base = spec.codec in ("libx264", "libvpx-vp9", "mpeg4") and spec.suffix in (
        ".mp4", ".mkv", ".webm"
    )  # fmt: skip
    time_base = TIME_BASE if fine_time_base else 1 / spec.rate
    with av.open(str(path), "w") as container:
        stream = container.add_stream(spec.codec, rate=spec.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if spec.codec == "cinepak" else "yuv420p"
        if spec.b_frames:
            stream.codec_context.max_b_frames = spec.b_frames
        if spec.gop:
            stream.codec_context.gop_size = spec.gop
        if spec.x264_params:
            stream.codec_context.options = {"x264-params": spec.x264_params}
        if fine_time_base:
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
        for i, t in enumerate(spec.times):
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            rgb[:] = frame_colour(i)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if not spec.index:
        strip_avi_index(path)
    return path


def _write_picture_video(path: Path, spec: VideoSpec) -> Path:
    """``write_video`` for specs with a rotation, non-square pixels or HDR."""
    height, width = spec.stored_size
    time_base = 1 / spec.rate
    with av.open(str(path), "w") as container:
        stream = container.add_stream(spec.codec, rate=spec.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p10le" if spec.transfer else "yuv420p"
        if spec.rotation:
            stream.set_display_rotation(spec.rotation)
        if spec.sar:
            stream.codec_context.sample_aspect_ratio = spec.sar
        if spec.transfer:
            context = stream.codec_context
            context.color_trc, context.color_primaries, context.colorspace = 16, 9, 9
            context.color_range = 1  # limited (tv)
            context.options = {"x265-params": "log-level=error"}
        for i, t in enumerate(spec.times):
            frame = _stored_frame(spec, i)
            if spec.transfer:
                frame.color_trc, frame.color_primaries, frame.colorspace = 16, 9, 9
                frame.color_range = 1
            frame.pts = round(t / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def strip_avi_index(path: Path) -> None:
    """Rename an AVI's ``idx1`` chunk to ``JUNK``: FFmpeg then reads it without an index."""
    data = bytearray(path.read_bytes())
    at = data.rfind(b"idx1")
    if at < 0:
        raise ValueError(f"{path}: no idx1 chunk to strip")
    data[at : at + 4] = b"JUNK"
    path.write_bytes(bytes(data))


def probe_times(path: Path) -> list[float]:
    """Every frame's presentation time as FFmpeg's demuxer reports it (ffprobe's view),
    from the stream's start (an MPEG-TS starts at 1.4 s; players and OpenCV show 0)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = float((stream.start_time or 0) * stream.time_base)
        return [float(frame.time) - start for frame in container.decode(stream)]


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a caption JSONL output, as written."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


NTSC = Fraction(30000, 1001)
VFR_TIMES = (0.0, 0.1, 0.15, 0.5, 0.55, 1.2, 1.3, 2.0, 2.05, 2.5, 3.1, 3.15)

SPECS = [
    VideoSpec("h264-mp4", "libx264", ".mp4", constant_rate(30, Fraction(10))),
    VideoSpec("h264-mkv", "libx264", ".mkv", constant_rate(30, Fraction(10))),
    VideoSpec("mpeg4-avi", "mpeg4", ".avi", constant_rate(30, Fraction(10))),
    VideoSpec("msmpeg4-avi", "msmpeg4", ".avi", constant_rate(30, Fraction(10))),
    VideoSpec("cinepak-mov", "cinepak", ".mov", constant_rate(30, Fraction(10))),
    VideoSpec("vp9-webm", "libvpx-vp9", ".webm", constant_rate(30, Fraction(10))),
    VideoSpec("ntsc-mp4", "libx264", ".mp4", constant_rate(90, NTSC), rate=NTSC),
    VideoSpec("vfr-mp4", "libx264", ".mp4", VFR_TIMES, rate=Fraction(20)),
    VideoSpec("vfr-mkv", "libx264", ".mkv", VFR_TIMES, rate=Fraction(20)),
    # AVI as cameras and old encoders leave it: B-frames (no pts stored), no index, and
    # variable frame rate, whose header counts every tick of its rate (316 for 12 frames).
    VideoSpec("mpeg4-bframes-avi", "mpeg4", ".avi", constant_rate(30, Fraction(10)), b_frames=2),
    VideoSpec(
        "mpeg4-noindex-avi",
        "mpeg4",
        ".avi",
        constant_rate(30, Fraction(10)),
        b_frames=2,
        index=False,
    ),  # fmt: skip
    VideoSpec(
        "msmpeg4-noindex-avi", "msmpeg4", ".avi", constant_rate(30, Fraction(10)), index=False
    ),
    VideoSpec("vfr-avi", "mpeg4", ".avi", VFR_TIMES, rate=Fraction(100)),
    # Streams whose time starts late: MPEG-TS (1.4 s) and MPEG-PS with MPEG-2 B-frames.
    VideoSpec("h264-ts", "libx264", ".ts", constant_rate(30, Fraction(10))),
    VideoSpec("mpeg2-mpg", "mpeg2video", ".mpg", constant_rate(75, Fraction(25)), Fraction(25),
              b_frames=2),
    # Short GOPs, as streaming encodes use (-g 2 s): exact mode skips what follows a GOP's
    # last needed frame. Closed GOPs, an open-GOP x264 stream, MPEG-4 in AVI and MPEG-TS.
    VideoSpec("h264-gop-mp4", "libx264", ".mp4", constant_rate(60, Fraction(10)), gop=8,
              b_frames=3),
    VideoSpec("h264-opengop-mkv", "libx264", ".mkv", constant_rate(60, Fraction(10)), gop=8,
              b_frames=3, x264_params="open-gop=1"),
    VideoSpec("mpeg4-gop-avi", "mpeg4", ".avi", constant_rate(60, Fraction(10)), gop=8,
              b_frames=2),
    VideoSpec("h264-gop-ts", "libx264", ".ts", constant_rate(60, Fraction(10)), gop=8,
              b_frames=3),
    # x264's periodic intra refresh: recovery-point P-frames flagged as keyframes, which
    # cannot start decoding (exact mode must notice and decode again without skipping).
    VideoSpec("h264-intrarefresh-mp4", "libx264", ".mp4", constant_rate(60, Fraction(10)),
              gop=8, x264_params="intra-refresh=1:bframes=0"),
    # As phones and broadcasters store pictures: a portrait phone video (landscape pixels
    # and a 90° display matrix), SD anamorphic (16:11 pixels), 10-bit HEVC in PQ (HDR).
    VideoSpec("h264-portrait-mp4", "libx264", ".mp4", constant_rate(20, Fraction(10)),
              size=(128, 96), rotation=90),
    VideoSpec("h264-anamorphic-mkv", "libx264", ".mkv", constant_rate(20, Fraction(10)),
              size=(72, 88), sar=Fraction(16, 11)),
    VideoSpec("hevc-pq-mp4", "libx265", ".mp4", constant_rate(20, Fraction(10)),
              transfer="smpte2084"),
]  # fmt: skip
