"""Frames as players show them (#16): rotation, display shape, 10-bit and HDR.

Files are made the way phones and broadcasters store them — landscape pixels plus a display
matrix (``ffmpeg -display_rotation``, FFmpeg ≥ 6: imageio-ffmpeg's binary), an H.264
display-orientation message, 704×576 at 16:11, 10-bit HEVC in PQ and HLG — and the frame
the model receives (through ``decode_events``, which every path drives) is checked against
the upright picture, FFmpeg's own player output and the SDR original.
"""

from __future__ import annotations

import gc
import io
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from tests.support.videos import MARKER, frame_colour, pq_code, shown_frame
from vidcap import picture
from vidcap.clips import export_clips
from vidcap.decode import Decoded, decode_events, encode_event, read_event
from vidcap.frames import Frame, resize_for_model
from vidcap.mask import Segment
from vidcap.picture import (
    UPRIGHT,
    Orientation,
    display_image,
    display_size,
    frame_display_matrix,
    to_sdr_rgb,
)
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()  # FFmpeg 9: -display_rotation, zscale, libx265
MODEL = (48, 48)  # (height, width) the model receives here
EVERY = SamplingSettings(every_n=1)
SIZE = (96, 128)  # (height, width) stored


def scene(height: int = SIZE[0], width: int = SIZE[1]) -> np.ndarray:
    """An asymmetric picture: grey, red top-left, blue bottom-right, a green stripe on top."""
    rgb = np.full((height, width, 3), 110, dtype=np.uint8)
    rgb[: height // 3, : width // 4] = (230, 30, 30)
    rgb[-height // 4 :, -width // 3 :] = (30, 30, 230)
    rgb[:4, width // 4 :] = (30, 200, 30)
    return rgb


def encode(
    path: Path,
    rgb: np.ndarray,
    frames: int = 10,
    codec: str = "libx264",
    sar: Fraction | None = None,
    rate: int = 10,
) -> Path:
    """``frames`` copies of ``rgb`` at ``rate`` fps, 8-bit 4:2:0, with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = rgb.shape[:2]
        stream.pix_fmt = "yuv420p"
        if sar:
            stream.codec_context.sample_aspect_ratio = sar
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def ffmpeg(*args: str) -> None:
    """Run imageio-ffmpeg's binary (FFmpeg 9 with imageio-ffmpeg 0.8; needs FFmpeg >= 6)."""
    version = imageio_ffmpeg.get_ffmpeg_version()
    major = re.match(r"n?(\d+)\.", version)
    if major and int(major.group(1)) < 6:
        pytest.skip(f"imageio-ffmpeg's FFmpeg {version} has no -display_rotation (FFmpeg >= 6)")
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True)


def model_frames(path: Path, sampling: SamplingSettings = EVERY) -> list[Frame]:
    """What the model receives for ``path``: ``decode_events``' frames."""
    events = list(decode_events(0, str(path), sampling, MODEL))
    assert not any(type(e).__name__ == "Failed" for e in events), events
    return [e.frame for e in events if isinstance(e, Decoded)]


def full_frames(path: Path, sampling: SamplingSettings = EVERY) -> list[Frame]:
    with VideoReader(path) as reader:
        return list(reader.frames(sampling))


def player_frames(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as FFmpeg's own player logic shows it (autorotated), RGB."""
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Landscape pixels, no display matrix: what phones store."""
    return encode(tmp_path_factory.mktemp("picture") / "stored.mp4", scene())


# --- rotation ---------------------------------------------------------------------------

# ffmpeg input options → the upright picture of the stored pixels ``s``
ROTATIONS = {
    "90": (["-display_rotation", "90"], lambda s: np.rot90(s, 1)),  # anticlockwise
    "180": (["-display_rotation", "180"], lambda s: np.rot90(s, 2)),
    "270": (["-display_rotation", "270"], lambda s: np.rot90(s, 3)),
    "-90": (["-display_rotation", "-90"], lambda s: np.rot90(s, -1)),
    "hflip": (["-display_hflip"], lambda s: s[:, ::-1]),
    "vflip": (["-display_vflip"], lambda s: s[::-1]),
    "90+hflip": (["-display_rotation", "90", "-display_hflip"], lambda s: np.rot90(s, 1)[:, ::-1]),
}


@pytest.mark.parametrize("name", ROTATIONS)
def test_phone_rotation_reaches_the_model_upright(stored: Path, tmp_path: Path, name: str) -> None:
    options, turn = ROTATIONS[name]
    path = tmp_path / f"rotated{name}.mp4"
    ffmpeg(*options, "-i", str(stored), "-c", "copy", str(path))
    upright = np.ascontiguousarray(turn(scene()))
    frames = model_frames(path)
    assert len(frames) == 10
    for frame in frames:
        assert frame.rgb.shape == (*MODEL, 3)
        assert frame.display_size == (upright.shape[1], upright.shape[0])
        assert difference(frame.rgb, resize_for_model(upright, MODEL)) < 4
        assert difference(frame.rgb, resize_for_model(scene(), MODEL)) > 20  # not as stored
    # Full size: the pixels FFmpeg's player logic shows, exactly.
    [first] = full_frames(path, SamplingSettings(every_n=1, max_frames=1))
    shown = player_frames(path, upright.shape[1], upright.shape[0])
    assert first.rgb.shape == upright.shape
    assert difference(first.rgb, shown[0]) < 0.5


def test_an_h264_display_orientation_message_holds_for_the_frames_after_it(
    stored: Path, tmp_path: Path
) -> None:
    """Per-frame side data: the SEI is on the first frame only; FFmpeg keeps it for the
    frames that follow, and so does vidcap, in every mode."""
    path = tmp_path / "sei.mp4"
    ffmpeg("-i", str(stored), "-c", "copy", "-bsf:v",
           "h264_metadata=display_orientation=insert:rotate=90", str(path))  # fmt: skip
    with av.open(str(path)) as container:
        matrices = [frame_display_matrix(f) for f in container.decode(video=0)]
    assert matrices[0] is not None and matrices[1:] == [None] * 9  # per frame, not per stream
    upright = np.rot90(scene(), 1)
    shown = player_frames(path, SIZE[0], SIZE[1])
    assert len(shown) == 10
    for sampling in (EVERY, SamplingSettings(fps=3.0), SamplingSettings(every_n=3, mode="all")):
        frames = full_frames(path, sampling)
        assert frames
        for frame in frames:
            assert frame.rgb.shape == upright.shape, (sampling, frame.index)
            assert difference(frame.rgb, shown[frame.index]) < 0.5


def test_orientation_from_every_display_matrix() -> None:
    """The eight orientations, as FFmpeg's ``av_display_rotation_set`` and
    ``av_display_matrix_flip`` write them, against NumPy's turns of a 2×3 picture."""
    picture = np.arange(2 * 3 * 1, dtype=np.uint8).reshape(2, 3, 1)
    one = 1 << 16
    cases = {
        (one, 0, 0, one): picture,
        (0, -one, one, 0): np.rot90(picture, 1),  # 90° anticlockwise
        (-one, 0, 0, -one): np.rot90(picture, 2),
        (0, one, -one, 0): np.rot90(picture, -1),
        (-one, 0, 0, one): picture[:, ::-1],
        (one, 0, 0, -one): picture[::-1],
        (0, -one, -one, 0): np.rot90(picture, 1)[:, ::-1],
        (0, one, one, 0): np.rot90(picture, 1)[::-1],
    }
    seen = set()
    for (a, b, c, d), expected in cases.items():
        orientation = Orientation.from_display_matrix((a, b, 0, c, d, 0, 0, 0, 1 << 30))
        seen.add(orientation)
        assert np.array_equal(orientation.apply(picture), expected), (a, b, c, d)
        assert orientation.apply(picture).flags.c_contiguous
        assert orientation.size(3, 2) == (expected.shape[1], expected.shape[0])
    assert len(seen) == 8
    # 45° is shown at the nearest quarter turn (players rotate freely; nothing does here)
    tilted = Orientation.from_display_matrix((46341, -46340, 0, 46340, 46341, 0, 0, 0, 1 << 30))
    assert tilted in seen
    assert UPRIGHT.apply(picture) is picture


def test_the_generated_portrait_spec_is_upright(generated_videos) -> None:
    """The portrait phone spec of the end-to-end set: the red marker is at the top-left of
    what the model receives, and the display size is portrait."""
    path, spec = generated_videos["h264-portrait-mp4"]
    frames = model_frames(path, SamplingSettings(fps=2.0))
    assert frames
    for frame in frames:
        assert frame.display_size == spec.display_size == (96, 128)
        expected = resize_for_model(shown_frame(spec, frame.index), MODEL)
        assert difference(frame.rgb, expected) < 4
        corner = frame.rgb[: MODEL[0] // 10, : MODEL[1] // 10].reshape(-1, 3).mean(axis=0)
        assert difference(corner, MARKER) < 20


def test_decoded_frames_are_freed_once_done_with(generated_videos) -> None:
    """Regression: read through PyAV's ``frame.side_data`` (which caches a container pointing
    back at the frame: a reference cycle), every decoded frame and its decoder buffer lived
    until the next garbage collection, and the decoder allocated fresh buffers (+10 %)."""
    path, _ = generated_videos["h264-portrait-mp4"]  # (a display matrix on each of 20 frames)
    gc.collect()
    gc.disable()
    try:
        # (frames other tests' pixels still point into, e.g. model-sized samples, stay)
        before = sum(type(o) is av.VideoFrame for o in gc.get_objects())
        with VideoReader(path) as reader:
            frames = [frame.index for frame in reader.frames(EVERY)]
        alive = sum(type(o) is av.VideoFrame for o in gc.get_objects()) - before
    finally:
        gc.enable()
    assert len(frames) == 20
    assert alive <= 2, f"{alive} decoded frames still held after decoding"


# --- display shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "sar", "shown"),
    [
        ((576, 704), Fraction(16, 11), (1024, 576)),  # PAL 16:9 anamorphic (DVB, DV)
        ((480, 720), Fraction(8, 9), (720, 540)),  # NTSC 4:3 DV: pixels taller than wide
    ],
)
def test_non_square_pixels_give_the_display_size(
    tmp_path: Path, size: tuple[int, int], sar: Fraction, shown: tuple[int, int]
) -> None:
    path = encode(tmp_path / "sd.mpg", scene(*size), 2, "mpeg2video", sar, rate=25)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.sample_aspect_ratio == sar  # what ffprobe reports
        assert stream.display_aspect_ratio == Fraction(*shown)
    frames = model_frames(path)
    assert [f.display_size for f in frames] == [shown, shown]
    assert frames[0].rgb.shape == (*MODEL, 3)  # the model input ignores it (squashed anyway)
    picture = display_image(frames[0].rgb, frames[0].display_size, 144)
    assert picture.shape == (144, round(144 * shown[0] / shown[1]), 3)


@pytest.mark.heavy
def test_an_aspect_ratio_that_changes_mid_stream_is_followed(tmp_path: Path) -> None:
    """Regression: a broadcast recording switching from 4:3 to 16:9 (the same 720×576
    pixels, a new sample aspect ratio from the next IDR on) showed every frame at its first
    shape. Each frame is shown at its own sequence's aspect ratio (ffprobe -show_frames'
    per frame), in both modes and in scene detection's pass; a container's own aspect
    ratio (MP4 ``pasp``) holds for every frame."""
    parts = []
    for number, sar in enumerate(("16/15", "64/45")):  # PAL 4:3, then PAL 16:9
        parts.append(tmp_path / f"{number}.ts")
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=720x576:rate=25", "-t", "2", "-vf",
               f"setsar={sar}", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-g", "25",
               "-output_ts_offset", str(2.08 * number), "-f", "mpegts", str(parts[-1]))  # fmt: skip
    joined = tmp_path / "dvb.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    narrow, wide = (768, 576), (1024, 576)
    for mode in ("exact", "all"):
        frames = full_frames(joined, SamplingSettings(fps=1.0, mode=mode))
        assert [(round(f.time, 2), f.display_size) for f in frames] == [
            (0.0, narrow), (1.0, narrow), (2.0, wide), (3.0, wide)
        ]  # fmt: skip
    with VideoReader(joined) as reader:
        shapes = [(round(f.time, 2), f.display_size) for f in reader.decoded_frames()]
    # the last 4:3 frames leave the decoder after the 16:9 header is read: still 4:3
    assert len(shapes) == 100 and shapes[48:52] == [
        (1.92, narrow), (1.96, narrow), (2.0, wide), (2.04, wide)
    ]  # fmt: skip
    assert {shape for _, shape in shapes[:50]} == {narrow}
    assert {shape for _, shape in shapes[50:]} == {wide}
    # the same stream in an MP4 whose `pasp` says 16:9 throughout: the container's holds
    stated = tmp_path / "stated.mp4"
    ffmpeg("-i", str(joined), "-c", "copy", "-aspect", "16:9", str(stated))
    with av.open(str(stated)) as container:
        stream = container.streams.video[0]
        assert stream.sample_aspect_ratio == Fraction(64, 45)
        assert stream.codec_context.sample_aspect_ratio == Fraction(16, 15)
    assert {f.display_size for f in full_frames(stated)} == {wide}


def test_display_size_rules() -> None:
    turned = Orientation(transpose=True, flip_y=True)
    assert display_size(704, 576, Fraction(16, 11)) == (1024, 576)
    assert display_size(704, 576, Fraction(16, 11), turned) == (576, 1024)
    assert display_size(720, 480, Fraction(8, 9)) == (720, 540)
    assert display_size(1280, 720, None) == display_size(1280, 720, Fraction(1)) == (1280, 720)
    assert display_size(1280, 720, Fraction(0, 1)) == (1280, 720)  # "unknown" in FFmpeg
    assert display_image(np.zeros((224, 224, 3), np.uint8), (96, 128), 64).shape == (64, 48, 3)
    same = np.zeros((64, 48, 3), np.uint8)
    assert display_image(same, (96, 128), 64) is not None
    with pytest.raises(ValueError, match="bad size"):
        display_image(same, (0, 128), 64)


def test_frames_carry_their_display_size_through_the_event_encoding() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert Frame(0, 0.0, rgb).display_size == (6, 4)  # default: the pixels' own shape
    with pytest.raises(ValueError, match="display_size"):
        Frame(0, 0.0, rgb, display_size=(0, 4))
    event = Decoded(2, Frame(5, 0.5, rgb, display_size=(1024, 576)))
    back = read_event(io.BytesIO(encode_event(event)))
    assert isinstance(back, Decoded) and back.frame.display_size == (1024, 576)
    assert np.array_equal(back.frame.rgb, rgb) and back.frame.index == 5


# --- colour: 8-bit unchanged, 10-bit, HDR -----------------------------------------------


@pytest.mark.parametrize("name", ["h264-mp4", "mpeg4-avi", "vp9-webm", "cinepak-mov", "mpeg2-mpg"])
def test_ordinary_8bit_frames_are_byte_identical_to_a_plain_conversion(
    generated_videos, name: str
) -> None:
    path, spec = generated_videos[name]
    with av.open(str(path)) as container:
        plain = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    frames = full_frames(path, SamplingSettings(every_n=1, mode="all"))
    assert len(frames) == len(plain)
    for frame in frames:
        assert np.array_equal(frame.rgb, plain[frame.index])
        assert frame.display_size == (spec.size[1], spec.size[0])


def test_ten_bit_sdr_converts_like_eight_bit(tmp_path: Path) -> None:
    """10-bit SDR HEVC: swscale scales the depth (no colour mapping, the same call as for
    8-bit); the picture is the 8-bit file's within rounding."""
    source = encode(tmp_path / "sdr.mp4", scene(), frames=2)
    path = tmp_path / "sdr10.mp4"
    ffmpeg("-i", str(source), "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
           "-x265-params", "log-level=error:crf=4", str(path))  # fmt: skip
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0))
        assert decoded.format.name == "yuv420p10le"
        plain = decoded.to_ndarray(format="rgb24")
    [frame, _] = full_frames(path)
    assert np.array_equal(frame.rgb, plain)
    assert difference(frame.rgb, full_frames(source)[0].rgb) < 2


@pytest.mark.heavy
def test_generated_pq_spec_shows_its_sdr_greys(generated_videos) -> None:
    """The HDR spec of the end-to-end set: greys stored in PQ at BT.2408 levels come out as
    those greys; converting the 10-bit PQ straight to RGB (before #16) is washed out."""
    path, spec = generated_videos["hevc-pq-mp4"]
    frames = full_frames(path)
    assert len(frames) == len(spec.times)
    with av.open(str(path)) as container:
        straight = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    for frame in frames:
        assert abs(float(frame.rgb.mean()) - frame_colour(frame.index)[0]) < 3, frame.index
    washed = [abs(float(straight[i].mean()) - frame_colour(i)[0]) for i in range(len(frames))]
    assert max(washed) > 30  # dark greys lifted, whites dimmed


def colour_chart(height: int = SIZE[0], width: int = SIZE[1]) -> np.ndarray:
    """A grey ramp above six colour patches (inside BT.709's gamut)."""
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[: height // 2] = np.linspace(16, 240, width, dtype=np.uint8)[None, :, None]
    colours = [(180, 40, 40), (40, 160, 40), (40, 40, 180), (200, 180, 60), (60, 170, 190),
               (170, 60, 160)]  # fmt: skip
    for i, colour in enumerate(colours):
        rgb[height // 2 :, i * width // 6 : (i + 1) * width // 6] = colour
    return rgb


@pytest.mark.parametrize(
    "transfer",
    [
        "smpte2084",  # shares its swscale context with the hevc-pq-mp4 spec's frames
        # HLG builds tone-mapping tables of its own (~3 s, once a process): in make test
        pytest.param("arib-std-b67", marks=pytest.mark.slow),
    ],
)
def test_hdr_is_tone_mapped_to_its_sdr_look(tmp_path: Path, transfer: str) -> None:
    """PQ and HLG 10-bit HEVC made from an SDR chart by zscale (zimg: SDR white at HDR
    reference white, 203 cd/m², as BT.2408 says): the frames vidcap gives have the chart's
    brightness and contrast; a straight conversion is washed out."""
    chart = colour_chart()
    source = encode(tmp_path / "chart.mp4", chart, frames=2)
    path = tmp_path / f"{transfer}.mp4"
    ffmpeg("-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
           "-i", str(source),
           "-vf", f"zscale=t={transfer}:p=bt2020:m=bt2020nc:npl=203,format=yuv420p10le",
           "-c:v", "libx265", "-x265-params", "log-level=error:crf=6",
           "-color_primaries", "bt2020", "-color_trc", transfer, "-colorspace", "bt2020nc",
           str(path))  # fmt: skip
    with av.open(str(path)) as container:
        straight = next(container.decode(video=0)).to_ndarray(format="rgb24")
    [frame, _] = model_frames(path)
    expected = resize_for_model(chart, MODEL)
    ours, washed = (
        difference(frame.rgb, expected),
        difference(resize_for_model(straight, MODEL), expected),
    )
    assert ours < 10 and ours < washed / 2, (ours, washed)
    assert float(frame.rgb.std()) == pytest.approx(float(expected.std()), rel=0.15)
    assert float(straight.std()) < 0.8 * float(chart.std())  # what #16 reported: washed out


# --- clips ------------------------------------------------------------------------------


def test_clips_keep_or_apply_the_rotation(stored: Path, tmp_path: Path) -> None:
    """Stream copy keeps the display matrix (players turn the clip), a precise re-encode
    turns the pixels (ffmpeg's autorotate) and drops it: both play upright."""
    long = encode(tmp_path / "long.mp4", scene(), frames=30)
    path = tmp_path / "portrait.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(long), "-c", "copy", str(path))
    upright = np.rot90(scene(), 1)
    for precise in (False, True):
        [clip] = export_clips(path, [Segment(1.0, 2.0)], tmp_path / f"out{precise}", precise)
        clip_path = tmp_path / f"out{precise}" / clip.path
        with av.open(str(clip_path)) as container:
            first = next(container.decode(video=0))
            matrix, stored_size = frame_display_matrix(first), (first.width, first.height)
        with VideoReader(clip_path) as reader:  # the clip's first frame as vidcap shows it
            shown_first = next(iter(reader.frames(SamplingSettings(fps=None, every_n=1))))
        rgb, shown = shown_first.rgb, shown_first.display_size
        if precise:
            assert matrix is None and stored_size == (SIZE[0], SIZE[1])  # turned pixels
        else:
            assert matrix is not None and stored_size == (SIZE[1], SIZE[0])  # flag kept
        assert shown == (SIZE[0], SIZE[1])
        assert difference(rgb, upright) < 4, precise
        assert model_frames(clip_path)[0].display_size == (SIZE[0], SIZE[1])


def test_clips_keep_non_square_pixels(tmp_path: Path) -> None:
    path = encode(tmp_path / "sd.mp4", scene(72, 88), frames=30, sar=Fraction(16, 11))
    for precise in (False, True):
        [clip] = export_clips(path, [Segment(1.0, 2.0)], tmp_path / f"out{precise}", precise)
        [frame, *_] = model_frames(tmp_path / f"out{precise}" / clip.path)
        assert frame.display_size == (128, 72), precise


def test_pq_without_primaries_is_taken_as_bt2020(generated_videos) -> None:
    path, _ = generated_videos["hevc-pq-mp4"]
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    tagged = to_sdr_rgb(frame)
    frame.color_primaries = frame.colorspace = 2  # unspecified
    assert np.array_equal(to_sdr_rgb(frame), tagged)
    assert abs(float(tagged.mean()) - frame_colour(0)[0]) < 3


def test_without_colour_mapping_hdr_is_converted_plainly_with_one_warning(
    monkeypatch, caplog
) -> None:
    """A PyAV whose FFmpeg is older than 8 cannot tone-map: say so once, still convert."""
    mapping = picture._ColourMapping()
    monkeypatch.setattr(mapping, "_unsupported", "PyAV's FFmpeg has libswscale 8.3")
    height, width = SIZE
    planes = np.full((height * 3 // 2, width), 512, dtype=np.uint16)
    planes[:height] = pq_code(128)
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p10le")
    frame.color_trc, frame.color_primaries, frame.colorspace = 16, 9, 9
    with caplog.at_level("WARNING", logger="vidcap.picture"):
        first, second = mapping.map(frame), mapping.map(frame)
    assert np.array_equal(first, frame.to_ndarray(format="rgb24"))
    assert np.array_equal(second, first)
    [record] = caplog.records
    assert "libswscale 8.3" in record.getMessage() and "without tone mapping" in record.getMessage()


class _UnnamedSideData:
    """A frame whose side data PyAV cannot list (a type newer than its enum)."""

    def __init__(self, rotation: int) -> None:
        self.rotation = rotation

    @property
    def side_data(self) -> list:
        raise ValueError("12345 is not a valid Type")


@pytest.mark.parametrize("rotation", [90, 180, -180, -90])
def test_unnamed_side_data_still_gives_the_turn(
    stored: Path, tmp_path: Path, rotation: int
) -> None:
    path = tmp_path / "turned.mp4"
    ffmpeg("-display_rotation", str(rotation), "-i", str(stored), "-c", "copy", str(path))
    with av.open(str(path)) as container:
        real = frame_display_matrix(next(container.decode(video=0)))
    assert frame_display_matrix(_UnnamedSideData(rotation)) == real
    assert frame_display_matrix(_UnnamedSideData(0)) is None
