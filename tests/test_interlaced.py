"""Interlaced video (1080i/576i broadcast, DV, DVD): every picture vidcap makes of a frame
is its first field, the moment at the frame's time. Made from 50 progressive numbered
frames a second, interlaced two by two, so each field carries the number of the moment
it shows: moment 2k is numbered k + 1, moment 2k + 1 every bit of it inverted (a woven
frame reads as neither)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from tests.support.videos import encode_with_ffmpeg, frame_number, numbered_frame
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

MPEG2 = ["-c:v", "mpeg2video", "-flags", "+ildct+ilme", "-q:v", "2", "-g", "6"]
# name: (size, arguments) — each frame k weaves the moments 2k and 2k + 1, the first field
# (the top one in TFF, the bottom one in BFF and in PAL DV) showing 2k.
INTERLACED = {
    "tff.mpg": ((192, 256), ["-vf", "tinterlace=mode=interleave_top,setfield=tff", *MPEG2]),
    "bff.mpg": ((192, 256), ["-vf", "tinterlace=mode=interleave_bottom,setfield=bff", *MPEG2]),
    "pal.dv": ((576, 720), ["-vf", "tinterlace=mode=interleave_bottom,setfield=bff",
                            "-target", "pal-dv"]),
}  # fmt: skip


FIRST = [k + 1 for k in range(12)]  # the number of each frame's first moment


def moments(width: int) -> list[int]:
    """The numbers of the 24 moments, two per interlaced frame."""
    inverted = (1 << width // 16) - 1
    return [n for k in FIRST for n in (k, k ^ inverted)]


def encode(path: Path, size: tuple[int, int], arguments: list[str]) -> Path:
    """The 24 moments at 50 frames a second, encoded with ``arguments`` (the ffmpeg binary)."""
    data = b"".join(numbered_frame(n, size).tobytes() for n in moments(size[1]))
    height, width = size
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt",
         "rgb24", "-s", f"{width}x{height}", "-r", "50", "-i", "-", *arguments, str(path)],
        input=data, check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def interlaced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("interlaced")
    return {
        name: encode(folder / name, size, arguments)
        for name, (size, arguments) in INTERLACED.items()
    }


def woven_numbers(path: Path) -> list[int]:
    """What the numbers read as from the woven frames (the case exists: not the moments)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert all(f.interlaced_frame for f in frames)
    return [frame_number(f.to_ndarray(format="rgb24")) for f in frames]


@pytest.mark.parametrize("name", list(INTERLACED))
@pytest.mark.parametrize("mode", ["all", "exact"])
def test_every_picture_of_an_interlaced_frame_is_its_first_field(
    interlaced: dict[str, Path], name: str, mode: str
) -> None:
    """Regression: the woven frame went to the model, the thumbnails and ``frames()``: both
    moments at once, the numbers of two moments mixed line by line (a double image at the
    model's size). Each now shows the moment at the frame's time."""
    path = interlaced[name]
    assert not set(woven_numbers(path)) & set(FIRST)
    with VideoReader(path) as reader:
        samples = list(reader.samples(SamplingSettings(every_n=1, mode=mode)))
    assert [round(s.time, 3) for s in samples] == [round(k * 0.04, 3) for k in range(12)]
    assert [frame_number(s.shown().rgb) for s in samples] == FIRST
    height, width = samples[0].av_frame.height, samples[0].av_frame.width
    assert samples[0].shown().rgb.shape == (height, width, 3)  # a field, shown full height
    if name != "pal.dv":  # (square pixels: the thumbnail has the stored frame's geometry)
        assert [frame_number(s.picture(height)) for s in samples] == FIRST


def test_the_model_sees_the_first_moment_not_a_double_image(interlaced: dict[str, Path]) -> None:
    """At the model's size, the first field is the moment at the frame's time: closer to
    that moment's own progressive picture than the woven frame is, by far."""
    path = interlaced["tff.mpg"]
    truth = encode(path.with_name("truth.mkv"), (192, 256), ["-c:v", "ffv1"])
    with VideoReader(truth) as reader:
        shots = [f.for_model((224, 224)).rgb.astype(int) for f in reader.samples(EVERY)]
    with VideoReader(path) as reader:
        samples = list(reader.samples(EVERY))
    field = [np.abs(s.for_model((224, 224)).rgb - shots[2 * k]).mean() for k, s in
             enumerate(samples)]  # fmt: skip
    woven = []
    for k, sample in enumerate(samples):
        rgb = sample.av_frame.reformat(width=224, height=224, format="rgb24", interpolation="AREA")
        woven.append(np.abs(rgb.to_ndarray().astype(int) - shots[2 * k]).mean())
    assert np.mean(field) * 2 < np.mean(woven)


EVERY = SamplingSettings(every_n=1)


def test_a_progressive_frame_is_not_split(tmp_path: Path) -> None:
    path = encode_with_ffmpeg(tmp_path / "p.mp4", 6, "25", ["-c:v", "libx264", "-qp", "0"])
    with VideoReader(path) as reader:
        samples = list(reader.samples(EVERY))
    assert not any(s.av_frame.interlaced_frame for s in samples)
    for sample in samples:
        whole = sample.av_frame.to_ndarray(format="rgb24")
        assert np.array_equal(sample.shown().rgb, whole)


@pytest.mark.parametrize("name", list(INTERLACED))
def test_a_precise_clip_of_an_interlaced_source_stays_interlaced(
    interlaced: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """Regression: ``vidcap clips --precise`` re-encoded an interlaced source as progressive
    frames — the two moments woven into each, flagged progressive, so no player would
    deinterlace them (combing in every moving clip). The clip is now coded interlaced, each
    frame's field order kept: its first fields are the source's moments."""
    from vidcap.clips import export_clips
    from vidcap.mask import Segment

    [clip] = export_clips(interlaced[name], [Segment(0.08, 0.4)], tmp_path, precise=True)
    with VideoReader(tmp_path / clip.path) as reader:
        samples = list(reader.samples(EVERY))
    assert all(s.av_frame.interlaced_frame for s in samples)
    assert [frame_number(s.shown().rgb) for s in samples] == FIRST[2:10]
