"""Test videos generated with PyAV, each described by the truth it was encoded with."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
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
    an AVI's ``idx1`` index, as some cameras and cut-off downloads leave it; ``codec_tag``:
    the FourCC written (``XVID``, ``DIVX``: how XviD/DivX AVIs label MPEG-4 Part 2).

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
    codec_tag: str = ""
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
        """The times ffprobe reports (best_effort_timestamp), counted as vidcap counts them.

        MPEG-TS/PS count from the first frame (their origin is arbitrary); MP4 and Matroska
        keep a late start. AVI and ASF store no pts: with B-frames each frame comes out when the
        decoder releases it, its reorder delay late (one frame for MPEG-4 Part 2, two for
        x264's B-pyramid)."""
        times = self.times
        if self.suffix in (".ts", ".mpg") and times[0]:
            times = tuple(round(t - self.times[0], 9) for t in times)
        if self.suffix in (".avi", ".asf") and self.b_frames:
            delay = AVI_DECODER_DELAY[self.codec] / float(self.rate)
            times = tuple(round(t + delay, 9) for t in times)
        return times

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


def numbered_frame(index: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A textured frame (so encoders predict from other frames and use B-frames) carrying
    ``index`` in a row of black/white 16-pixel blocks along its bottom edge."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (x * 2 + index * 3) % 256
    rgb[..., 1] = (y * 2) % 256
    rgb[..., 2] = 128
    for bit in range(width // 16):
        rgb[height - 16 :, bit * 16 : (bit + 1) * 16] = 255 if index >> bit & 1 else 0
    return rgb


def frame_number(rgb: np.ndarray) -> int:
    """The index ``numbered_frame`` wrote into ``rgb`` (read from the blocks' centres)."""
    height, width = rgb.shape[:2]
    return sum(
        1 << bit
        for bit in range(width // 16)
        if rgb[height - 12 : height - 4, bit * 16 + 4 : bit * 16 + 12].mean() > 128
    )


def clip(
    folder: Path, name: str, frames: int, codec: str = "libx264", suffix: str = ".mp4"
) -> Path:
    """``frames`` frames at 10 fps, ``folder/name.suffix``: the grey test picture of ``VideoSpec``."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(name, codec, suffix, constant_rate(frames, Fraction(10)))
    return write_video(folder / f"{name}{suffix}", spec)


def magenta_clip(path: Path, frames: int) -> Path:
    """A saturated magenta clip: no frame of ``clip``'s grey videos looks like it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 96, 128, "yuv420p"
        for i in range(frames):
            rgb = np.zeros((96, 128, 3), dtype=np.uint8)
            rgb[..., 0] = rgb[..., 2] = 230
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def encode_with_ffmpeg(
    path: Path,
    frames: int,
    rate: str,
    args: list[str],
    size: tuple[int, int] = (96, 128),
    first: int = 0,
) -> Path:
    """Encode ``numbered_frame(first … first+frames-1)`` at ``rate`` with the ffmpeg binary
    (imageio-ffmpeg's: it has encoders PyAV lacks, such as libxvid) and ``args``."""
    import imageio_ffmpeg

    height, width = size
    data = b"".join(numbered_frame(first + i, size).tobytes() for i in range(frames))
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", rate, "-i", "-", *args,
         str(path)],
        input=data, check=True,
    )  # fmt: skip
    return path


def ffmpeg_has_encoder(name: str) -> bool:
    """Does imageio-ffmpeg's ffmpeg binary have the encoder ``name`` (e.g. libxvid)?"""
    import imageio_ffmpeg

    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-encoders"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return any(line.split()[1:2] == [name] for line in result.stdout.splitlines())


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
        if spec.codec_tag:
            stream.codec_tag = spec.codec_tag
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


def with_edit_list(
    source: Path, path: Path, edits: list[tuple[float | None, float]], track: int | None = None
) -> Path:
    """``source`` (an MP4/MOV, its index after its media, as FFmpeg writes it) with an edit
    list of ``edits`` in its one track, or in its ``track``-th (from 0), each (media start,
    length) in seconds, shown one after the other (a start of None: an empty edit, a
    delay): what a trim or a cut made without re-encoding leaves (QuickTime, a phone's
    editor). Media starts are presentation times: the delay of the edit FFmpeg wrote (a
    B-frame delay) is added to each. Written as a new ``edts`` box in the track; ``moov``
    and ``trak`` resized, the track's and the movie's lengths set."""
    import struct

    data = bytearray(source.read_bytes())
    boxes: list[tuple[int, int, bytes]] = []

    def walk(start: int, end: int) -> None:
        at = start
        while at < end:
            size, kind = struct.unpack(">I4s", data[at : at + 8])
            boxes.append((at, size, kind))
            if kind in (b"moov", b"trak", b"mdia", b"edts"):
                walk(at + 8, at + size)
            at += size

    walk(0, len(data))
    kinds = [kind for _, _, kind in boxes]
    assert kinds.index(b"mdat") < kinds.index(b"moov")
    assert track is not None or kinds.count(b"trak") == 1
    trak = [(at, size) for at, size, kind in boxes if kind == b"trak"][track or 0]
    offsets = {
        kind: (at, size)
        for at, size, kind in boxes
        if kind in (b"moov", b"mvhd") or trak[0] <= at < trak[0] + trak[1]
    }
    movie_scale = struct.unpack(">I", data[offsets[b"mvhd"][0] + 20 : offsets[b"mvhd"][0] + 24])[0]
    media_scale = struct.unpack(">I", data[offsets[b"mdhd"][0] + 20 : offsets[b"mdhd"][0] + 24])[0]
    delay = 0
    if b"elst" in offsets:  # (version 0: the first entry's media time, from byte 20)
        delay = max(
            0, struct.unpack(">i", data[offsets[b"elst"][0] + 20 : offsets[b"elst"][0] + 24])[0]
        )
    entries = b"".join(
        struct.pack(
            ">IiI",
            round(length * movie_scale),
            -1 if start is None else round(start * media_scale) + delay,
            1 << 16,
        )
        for start, length in edits
    )
    elst = struct.pack(">I4sII", 16 + len(entries), b"elst", 0, len(edits)) + entries
    # (the track lasts as long as its edits, the movie as its longest track: as editors
    # write them; version 0 boxes, FFmpeg's)
    shown = round(sum(length for _, length in edits) * movie_scale)
    struct.pack_into(">I", data, offsets[b"tkhd"][0] + 28, shown)
    lengths = [struct.unpack_from(">I", data, at + 28)[0] for at, _, k in boxes if k == b"tkhd"]
    struct.pack_into(">I", data, offsets[b"mvhd"][0] + 24, max(lengths))
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    if b"edts" in offsets:
        at, size = offsets[b"edts"]
        data[at : at + size] = edts
        grown = len(edts) - size
    else:
        at, size = offsets[b"tkhd"]
        data[at + size : at + size] = edts
        grown = len(edts)
    for kind in (b"moov", b"trak"):
        at, size = offsets[kind]
        struct.pack_into(">I", data, at, size + grown)
    path.write_bytes(bytes(data))
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
    """Every frame's time as ffprobe reports it, in presentation order (``probe_frames``)."""
    return [time for time, _ in probe_frames(path)]


def probe_frames(path: Path) -> list[tuple[float, bool]]:
    """(time, keyframe) of every frame as ffprobe lists it, in presentation order.

    Decodes everything with PyAV, reading packets as ffprobe does (no generated pts), each
    frame at FFmpeg's ``best_effort_timestamp`` (``guess_correct_pts``), a frame without
    one a frame interval after the one before. Counted from 0 s in MP4/MOV/Matroska (a
    late start kept), from the file's start elsewhere (its earliest stream's: an MPEG-TS
    starts at 1.4 s; players show 0).
    """
    with av.open(str(path)) as container:
        container.flags &= ~0x0001  # AVFMT_FLAG_GENPTS, which PyAV sets and ffprobe does not
        stream = container.streams.video[0]
        start = float((stream.start_time or 0) * stream.time_base)
        if {"mov", "mp4", "matroska", "webm"} & set(container.format.name.split(",")):
            start = min(start, 0.0)
        elif container.start_time is not None:
            start = min(start, container.start_time / 1_000_000)
        rate = stream.average_rate or stream.guessed_rate
        faulty_pts = faulty_dts = 0
        last_pts = last_dts = None
        times: list[float] = []
        keys: list[bool] = []
        for frame in container.decode(stream):
            keys.append(bool(frame.key_frame))
            pts, dts = frame.pts, frame.dts
            if dts is not None:
                faulty_dts += last_dts is not None and dts <= last_dts
                last_dts = dts
            elif pts is not None:
                last_dts = pts
            if pts is not None:
                faulty_pts += last_pts is not None and pts <= last_pts
                last_pts = pts
            elif dts is not None:
                last_pts = dts
            best = pts if pts is not None and (faulty_pts <= faulty_dts or dts is None) else dts
            if best is None:
                times.append(times[-1] + 1 / float(rate) if times else 0.0)
            else:
                times.append(max(0.0, float(best * stream.time_base) - start))
        return sorted(zip(times, keys, strict=True), key=lambda frame: frame[0])


FFPROBE = shutil.which("ffprobe")


def ffprobe_frames(path: Path) -> list[tuple[float, bool]]:
    """``probe_frames`` from ffprobe itself (``best_effort_timestamp_time`` and
    ``key_frame`` of each frame), counted the same way; frames without a timestamp are a
    frame interval after the one before."""
    entries = (
        "frame=best_effort_timestamp_time,key_frame:stream=start_time,avg_frame_rate,r_frame_rate"
    )
    result = subprocess.run(
        [FFPROBE or "ffprobe", "-v", "error", "-select_streams", "v:0", "-show_frames",
         "-show_entries", f"{entries}:format=format_name,start_time", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    probe = json.loads(result.stdout)
    stream = probe["streams"][0]
    start = float(stream["start_time"]) if stream.get("start_time", "N/A") != "N/A" else 0.0
    if {"mov", "mp4", "matroska", "webm"} & set(probe["format"]["format_name"].split(",")):
        start = min(start, 0.0)
    elif probe["format"].get("start_time", "N/A") != "N/A":
        start = min(start, float(probe["format"]["start_time"]))
    rate = stream["avg_frame_rate"] if stream["avg_frame_rate"] != "0/0" else stream["r_frame_rate"]
    interval = 1 / float(Fraction(rate))
    frames: list[tuple[float, bool]] = []
    for frame in probe["frames"]:
        best = frame.get("best_effort_timestamp_time")
        if best is None:
            time = frames[-1][0] + interval if frames else 0.0
        else:
            time = max(0.0, float(best) - start)
        frames.append((time, bool(frame["key_frame"])))
    return sorted(frames, key=lambda frame: frame[0])


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a caption JSONL output, as written."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# AVI and ASF store no pts: with B-frames, frames come out this many frame intervals late.
AVI_DECODER_DELAY = {"mpeg4": 1, "libx264": 2}
NTSC = Fraction(30000, 1001)
# A picture that starts 1.075 s into the presentation (an MP4 edit list's empty edit).
LATE_TIMES = tuple(round(1.075 + t, 9) for t in constant_rate(30, Fraction(10)))
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
    # MPEG-4 Part 2 with B-frames labelled as XviD and DivX write them (FFmpeg's encoder:
    # unpacked; packed ones come from libxvid, see tests/test_video.py).
    VideoSpec("xvid-tag-avi", "mpeg4", ".avi", constant_rate(30, Fraction(10)), b_frames=2,
              codec_tag="XVID"),
    VideoSpec("divx-tag-avi", "mpeg4", ".avi", constant_rate(30, Fraction(10)), b_frames=2,
              codec_tag="DIVX", gop=8),
    # H.264 in AVI, which stores no pts: without B-frames, and with them (every frame is
    # decoded and timed as ffprobe times it: two frames late).
    VideoSpec("h264-avi", "libx264", ".avi", constant_rate(30, Fraction(10)),
              x264_params="bframes=0"),
    VideoSpec("h264-bframes-avi", "libx264", ".avi", constant_rate(30, Fraction(10)),
              b_frames=2),
    # ASF (WMV; Windows Media Center's DVR-MS) stores no pts for B-frames either: timed as
    # in AVI, never by pts libavformat makes up (tests/test_video.py: MPEG-2 in DVR-MS).
    VideoSpec("h264-bframes-asf", "libx264", ".asf", constant_rate(30, Fraction(10)),
              b_frames=2),
    # Late starts: kept where the container's timeline starts at zero (MP4 with an edit
    # list's empty edit, Matroska, WebM); an MPEG-TS counts from its first frame.
    VideoSpec("late-mp4", "libx264", ".mp4", LATE_TIMES),
    VideoSpec("late-mkv", "libx264", ".mkv", LATE_TIMES),
    VideoSpec("late-webm", "libvpx-vp9", ".webm", LATE_TIMES),
    VideoSpec("late-ts", "libx264", ".ts", tuple(2.5 + t for t in constant_rate(30, Fraction(10)))),
]  # fmt: skip


def concealed_only(path: Path) -> list[tuple[float, bool, bool, bool]] | None:
    """(time, corrupt, keyframe, B-frame) of every frame of ``path`` in presentation order,
    decoded on one thread, if some frame decoded with concealed errors and no packet failed."""
    frames, failed = [], False
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for packet in container.demux(stream):
            try:
                frames += [(f.time, f.is_corrupt, f.key_frame, f.pict_type == 3)
                           for f in packet.decode()]  # fmt: skip
            except av.FFmpegError:
                failed = True
    return sorted(frames) if any(f[1] for f in frames) and not failed else None


def concealed_damage(
    damaged: Path, source: Path | None = None
) -> tuple[Path, list[tuple[float, bool, bool, bool]]] | None:
    """``source`` (default: 120 frames of H.264 at 24 fps, B-frames, a keyframe a second,
    written beside ``damaged``) with a few random bytes written into its middle, as
    ``damaged``: the first of a few tries whose damage the decoder conceals (corrupt frames,
    no packet failing), with ``concealed_only``'s frames; None if none does."""
    import random

    if source is None:
        source = encode_with_ffmpeg(
            damaged.with_name(f"clean-{damaged.name}"), 120, "24",
            ["-c:v", "libx264", "-bf", "2", "-g", "24", "-pix_fmt", "yuv420p"], size=(240, 320),
        )  # fmt: skip
    whole = source.read_bytes()
    for seed, size in itertools.product(range(6), (16, 48)):
        data = bytearray(whole)
        rng = random.Random(seed)
        at = int(len(data) * 0.55)
        data[at : at + size] = bytes(rng.getrandbits(8) for _ in range(size))
        damaged.write_bytes(bytes(data))
        truth = concealed_only(damaged)
        if truth:
            return damaged, truth
    return None


def cut_off_said(path: Path, sampling: object, phrase: str, caplog) -> tuple[list[str], int]:
    """Read every sample of ``path``: the warnings that name ``phrase`` (a cut-off file's
    unit, "Ogg page", "AVI chunk"), and the frames counted lost."""
    import logging

    from vidcap.video import VideoReader

    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        caplog.clear()
        with VideoReader(path) as reader:
            assert list(reader.frames(sampling))
    said = [r.getMessage() for r in caplog.records if phrase in r.getMessage()]
    return said, reader.stats.lost_frames


def check_cut_off_files(
    folder: Path, files: dict[str, tuple[bytes, bool]], suffix: str, phrase: str, caplog
) -> None:
    """Write each of ``files`` (label: its bytes, does it end inside a unit?) into
    ``folder`` and read it sampled two ways: a cut-off one warns once with ``phrase`` and
    counts a frame lost, a whole one neither."""
    from vidcap.settings import SamplingSettings

    for label, (content, cut) in files.items():
        path = folder / f"{label}{suffix}"
        path.write_bytes(content)
        for sampling in (SamplingSettings(fps=1.0), SamplingSettings(every_n=1, mode="all")):
            said, lost = cut_off_said(path, sampling, phrase, caplog)
            assert len(said) == int(cut), (label, sampling, said)
            assert (lost >= 1) == cut, (label, sampling, lost)
