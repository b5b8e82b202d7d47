"""Test videos generated with PyAV, each described by the truth it was encoded with."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True)
class VideoSpec:
    """What a generated test video holds: container, codec, and each frame's pts (s)."""

    name: str
    codec: str
    suffix: str
    times: tuple[float, ...]
    rate: Fraction = Fraction(10)
    size: tuple[int, int] = (96, 128)  # (height, width)

    @property
    def duration(self) -> float:
        return self.times[-1] + 1 / float(self.rate)


def constant_rate(n: int, rate: Fraction) -> tuple[float, ...]:
    return tuple(float(i / rate) for i in range(n))


def frame_colour(index: int) -> np.ndarray:
    """A frame whose mean grey level encodes its index (readable back after lossy codecs)."""
    return np.array([(index * 37) % 200 + 30] * 3, dtype=np.uint8)


def write_video(path: Path, spec: VideoSpec) -> Path:
    """Encode ``spec`` to ``path``; frame i has pts ``spec.times[i]``."""
    height, width = spec.size
    explicit_pts = spec.codec in ("libx264", "libvpx-vp9", "mpeg4")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(spec.codec, rate=spec.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "rgb24" if spec.codec == "cinepak" else "yuv420p"
        if explicit_pts and spec.suffix in (".mp4", ".mkv", ".webm"):
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
        for i, t in enumerate(spec.times):
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            rgb[:] = frame_colour(i)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if explicit_pts and spec.suffix in (".mp4", ".mkv", ".webm"):
                frame.pts = round(t / TIME_BASE)
                frame.time_base = TIME_BASE
            else:
                frame.pts = i
                frame.time_base = 1 / spec.rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def probe_times(path: Path) -> list[float]:
    """Every frame's presentation time as FFmpeg's demuxer reports it (ffprobe's view)."""
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


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
]
