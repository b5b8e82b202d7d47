"""Keyframe flags the demuxer gives and the decoder does not confirm: frames of codecs that
predict from earlier frames, every packet flagged a keyframe (H.261, Apple's rpza, MPEG-4
Part 2 in a MOV without its sync-sample table); and decoders that flag no frame at all
(QuickTime Animation), where the packets' flags are the keyframes. Made by ffmpeg here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.videos import FFPROBE
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

MOVING = ["-f", "lavfi", "-i", "testsrc2=s=176x144:r=10:d=6"]
pytestmark = pytest.mark.skipif(
    FFPROBE is None, reason="ffmpeg is not installed (apt-get install ffmpeg): it makes the videos"
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=120)


def frames(path: Path, sampling: SamplingSettings) -> list[tuple[int, float, np.ndarray]]:
    with VideoReader(path) as reader:
        return [(f.index, f.time, f.rgb) for f in reader.frames(sampling)]


def predicting(tmp_path: Path, kind: str) -> Path:
    if kind == "h261":
        ffmpeg(*MOVING, "-c:v", "h261", str(tmp_path / "v.avi"))
        return tmp_path / "v.avi"
    if kind == "rpza":
        ffmpeg(*MOVING, "-c:v", "rpza", str(tmp_path / "v.mov"))
        return tmp_path / "v.mov"
    ffmpeg(*MOVING, "-c:v", "mpeg4", "-bf", "0", "-g", "30", str(tmp_path / "s.mov"))
    data = (tmp_path / "s.mov").read_bytes()
    assert data.count(b"stss") == 1  # (its sync-sample table, renamed away: every sample
    (tmp_path / "v.mov").write_bytes(data.replace(b"stss", b"free"))  # a keyframe then)
    return tmp_path / "v.mov"


@pytest.mark.parametrize("kind", ["h261", "rpza", "mpeg4-mov-without-stss"])
@pytest.mark.parametrize("sampling", [SamplingSettings(fps=1.0), SamplingSettings(every_n=7)])
def test_exact_mode_shows_the_pictures_decoding_everything_shows(
    tmp_path: Path, kind: str, sampling: SamplingSettings
) -> None:
    """Regression: the default mode skipped to packets flagged keyframes and decoded
    frames predicted from frames it had not decoded: the frame at 2 s showed the picture of
    0.4 s (H.261, rpza) or grey (MPEG-4), with no warning. Decoded after a jump, a frame
    its decoder does not call a keyframe (nor intra-coded) sends the video to be decoded
    again, every frame."""
    path = predicting(tmp_path, kind)
    exact = frames(path, sampling)
    every = frames(path, SamplingSettings(fps=sampling.fps, every_n=sampling.every_n, mode="all"))
    assert [(i, t) for i, t, _ in exact] == [(i, t) for i, t, _ in every] and len(exact) >= 6
    for (index, _, shown), (_, _, right) in zip(exact, every, strict=True):
        assert np.array_equal(shown, right), index


@pytest.mark.parametrize("codec", ["qtrle", "smc"])
def test_keyframes_of_a_decoder_that_flags_none_are_its_packets(tmp_path: Path, codec: str) -> None:
    """Regression: ``--keyframes`` gave 0 frames, the video "done", where the decoder sets
    no frame's key flag nor picture type (QuickTime Animation, smc, rpza, Microsoft Video
    1, CineForm, Flash Screen Video): such frames take their packet's flag."""
    path = tmp_path / "v.mov"
    ffmpeg(*MOVING, "-c:v", codec, "-pix_fmt", "rgb24" if codec == "qtrle" else "pal8", str(path))
    flagged = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    keys = [float(line.split(",")[0]) for line in flagged if line.split(",")[1].startswith("K")]
    assert 1 < len(keys) < 60  # (a keyframe now and then, as the encoder's GOP)
    times = [t for _, t, _ in frames(path, SamplingSettings(keyframes=True))]
    assert times == pytest.approx(keys, abs=1e-6)


@pytest.mark.parametrize("codec", ["qtrle", "msvideo1"])
def test_a_decoder_that_flags_nothing_still_skips_to_flagged_keyframes(
    tmp_path: Path, codec: str
) -> None:
    """Where the packets' flags tell keyframes from the rest (QuickTime Animation, Microsoft
    Video 1: a keyframe every 25 frames here), a decoder that flags no frame leaves it to
    them: ``exact`` skips to them, not decoding everything (the check above first sent such
    files to be decoded again, every frame), and its pictures are decoding everything's."""
    path = tmp_path / ("v.mov" if codec == "qtrle" else "v.avi")
    pixels = ["-pix_fmt", "rgb24" if codec == "qtrle" else "rgb555le"]
    ffmpeg(*MOVING, "-c:v", codec, "-g", "25", *pixels, str(path))
    with VideoReader(path) as reader:
        exact = [(f.index, f.time, f.rgb) for f in reader.frames(SamplingSettings(fps=1.0))]
        decoded = reader.stats.decoded_frames
    every = frames(path, SamplingSettings(fps=1.0, mode="all"))
    assert [(i, t) for i, t, _ in exact] == [(i, t) for i, t, _ in every] and len(exact) == 6
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(exact, every, strict=True))
    assert decoded < 60, decoded  # (of 60 frames)
