"""Frame sampling on videos the tests encode, checked against the truth they were encoded with."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from videos import SPECS, VideoSpec, constant_rate, frame_colour, probe_times, write_video

from vidcap.errors import UsageError, VideoError
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader, find_videos


def read(path: Path, sampling: SamplingSettings) -> list:
    with VideoReader(path) as reader:
        return list(reader.frames(sampling))


@pytest.mark.parametrize("name", [s.name for s in SPECS])
def test_every_frame_has_true_pts_and_pixels(generated_videos, name: str) -> None:
    path, spec = generated_videos[name]
    frames = read(path, SamplingSettings(every_n=1))
    assert [f.index for f in frames] == list(range(len(spec.times)))
    assert [f.pts_seconds for f in frames] == pytest.approx(list(spec.times), abs=1e-3)
    assert [f.pts_seconds for f in frames] == pytest.approx(probe_times(path), abs=1e-6)
    for frame in frames:
        assert frame.rgb.shape == (*spec.size, 3)
        grey = float(frame.rgb.mean())
        assert grey == pytest.approx(float(frame_colour(frame.index)[0]), abs=12)


def test_fps_sampling_takes_first_frame_at_or_after_each_tick(generated_videos) -> None:
    path, _ = generated_videos["h264-mp4"]  # 10 fps, 30 frames
    frames = read(path, SamplingSettings(fps=2.0))
    assert [f.index for f in frames] == [0, 5, 10, 15, 20, 25]


def test_fps_sampling_on_29_97(generated_videos) -> None:
    path, spec = generated_videos["ntsc-mp4"]
    frames = read(path, SamplingSettings(fps=1.0))
    expected = [0, 30, 60]  # 30 * 1001/30000 = 1.001 s is the first frame at or after 1 s
    assert [f.index for f in frames] == expected
    assert [f.pts_seconds for f in frames] == pytest.approx([spec.times[i] for i in expected])


def test_fps_sampling_on_variable_frame_rate(generated_videos) -> None:
    path, _ = generated_videos["vfr-mp4"]
    frames = read(path, SamplingSettings(fps=1.0))
    # ticks 0, 1, 2, 3 s → first frames at or after them: 0.0, 1.2, 2.0, 3.1
    assert [f.pts_seconds for f in frames] == pytest.approx([0.0, 1.2, 2.0, 3.1], abs=1e-3)


def test_every_n_and_max_frames(generated_videos) -> None:
    path, _ = generated_videos["mpeg4-avi"]
    assert [f.index for f in read(path, SamplingSettings(every_n=7))] == [0, 7, 14, 21, 28]
    assert [f.index for f in read(path, SamplingSettings(fps=5, max_frames=3))] == [0, 2, 4]


def test_duration_is_last_pts_plus_one_frame(generated_videos) -> None:
    path, spec = generated_videos["ntsc-mp4"]
    with VideoReader(path) as reader:
        list(reader.frames(SamplingSettings()))
    assert reader.stats.duration == pytest.approx(spec.duration, abs=1e-3)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"hello, this is text and not a video\n" * 20, "not a decodable video"),
        (np.random.default_rng(1).bytes(50_000), "not a decodable video"),
    ],
    ids=["empty", "text", "random-bytes"],
)
def test_non_videos_fail_with_one_line_reason(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=message) as info:
        read(path, SamplingSettings())
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="no such file"):
        VideoReader(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="is a folder"):
        VideoReader(tmp_path)


def long_video(
    tmp_path: Path, name: str, codec: str, suffix: str, n: int = 60
) -> tuple[Path, VideoSpec]:
    spec = VideoSpec(name, codec, suffix, constant_rate(n, Fraction(10)), size=(120, 160))
    return write_video(tmp_path / f"{name}{suffix}", spec), spec


def test_truncated_stream_keeps_decodable_frames_and_warns_once(tmp_path: Path, caplog) -> None:
    path, spec = long_video(tmp_path, "whole", "mpeg4", ".avi")
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        frames = read(cut, SamplingSettings(every_n=1))
    assert 0 < len(frames) < len(spec.times)
    assert [f.pts_seconds for f in frames] == pytest.approx(list(spec.times[: len(frames)]))
    warnings = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{len(spec.times) - len(frames)} of {len(spec.times)}" in warnings[0].getMessage()


def test_corrupt_middle_keeps_frames_on_both_sides(tmp_path: Path, caplog) -> None:
    path, spec = long_video(tmp_path, "whole", "mpeg4", ".avi", n=100)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    bad = tmp_path / "corrupt.avi"
    bad.write_bytes(bytes(data))
    frames = read(bad, SamplingSettings(every_n=1))
    times = [f.pts_seconds for f in frames]
    assert times[0] == 0.0
    assert times[-1] > spec.times[len(spec.times) // 2]  # decoding went on past the damage
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fps": 0}, "--fps"),
        ({"fps": -1.0}, "--fps"),
        ({"every_n": 0}, "--every-n"),
        ({"max_frames": 0}, "--max-frames"),
    ],
)
def test_bad_sampling_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SamplingSettings(**kwargs)


def test_find_videos_recurses_and_filters(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/one.mp4", "a/b/two.MKV", "a/notes.txt", "three.avi"]:
        (tmp_path / name).write_bytes(b"x")
    found = find_videos([tmp_path / "a", tmp_path / "three.avi"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/b/two.MKV",
        "a/one.mp4",
        "three.avi",
    ]
