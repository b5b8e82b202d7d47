"""Frame sampling on videos the tests encode, checked against the truth they were encoded with."""

from __future__ import annotations

import logging
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.videos import (
    SPECS,
    VideoSpec,
    constant_rate,
    frame_colour,
    probe_times,
    write_video,
)
from vidcap.errors import UsageError, VideoError
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader


def read(path: Path, sampling: SamplingSettings) -> list:
    with VideoReader(path) as reader:
        return list(reader.frames(sampling))


NAMES = [s.name for s in SPECS]
B_FRAME_VIDEOS = ["h264-mp4", "h264-mkv", "ntsc-mp4", "mpeg4-bframes-avi", "mpeg4-noindex-avi"]


@pytest.mark.parametrize("name", NAMES)
def test_every_frame_has_true_pts_and_pixels(generated_videos, name: str) -> None:
    path, spec = generated_videos[name]
    frames = read(path, SamplingSettings(every_n=1, mode="all"))
    assert [f.index for f in frames] == list(range(len(spec.times)))
    assert [f.time for f in frames] == pytest.approx(list(spec.shown_times), abs=1e-3)
    assert [f.time for f in frames] == pytest.approx(probe_times(path), abs=1e-6)
    for frame in frames:
        assert frame.rgb.shape == (*spec.size, 3)
        grey = float(frame.rgb.mean())
        assert grey == pytest.approx(float(frame_colour(frame.index)[0]), abs=12)


SAMPLINGS = {
    "fps1": SamplingSettings(fps=1.0),
    "fps3": SamplingSettings(fps=3.0),
    "fps7.5": SamplingSettings(fps=7.5),
    "every4": SamplingSettings(every_n=4),
    "max2": SamplingSettings(fps=2.0, max_frames=2),
}


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
@pytest.mark.parametrize("name", NAMES)
def test_exact_mode_gives_the_frames_of_decoding_everything(
    generated_videos, name: str, sampling: SamplingSettings
) -> None:
    path, _ = generated_videos[name]
    with VideoReader(path) as everything:
        reference = list(everything.frames(replace(sampling, mode="all")))
    with VideoReader(path) as exact:
        frames = list(exact.frames(replace(sampling, mode="exact")))
        assert exact.estimated_samples(sampling) == len(frames)
    assert [(f.index, f.time) for f in frames] == [(f.index, f.time) for f in reference]
    for ours, theirs in zip(frames, reference, strict=True):
        assert np.array_equal(ours.rgb, theirs.rgb)
    assert exact.stats.decoded_frames <= everything.stats.decoded_frames
    assert exact.stats.duration == everything.stats.duration


@pytest.mark.parametrize("name", B_FRAME_VIDEOS)
def test_exact_mode_skips_frames_no_tick_needs(generated_videos, name: str) -> None:
    path, spec = generated_videos[name]
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0)))
    assert len(frames) == int(spec.shown_times[-1]) + 1  # one per whole second
    assert reader.stats.decoded_frames < len(spec.times)


def test_exact_mode_decodes_fewer_frames(generated_videos) -> None:
    path, _ = generated_videos["h264-mp4"]
    decoded = {}
    for mode in ("all", "exact"):
        with VideoReader(path) as reader:
            list(reader.frames(SamplingSettings(fps=3.0, mode=mode)))
        decoded[mode] = reader.stats.decoded_frames
    assert decoded["exact"] < decoded["all"]


@pytest.mark.parametrize(
    "name", ["h264-gop-mp4", "h264-opengop-mkv", "mpeg4-gop-avi", "h264-gop-ts"]
)
def test_exact_mode_skips_what_follows_a_gops_last_tick(generated_videos, name: str) -> None:
    """With keyframes every 0.8 s and ticks every 2 s, the frames between a tick and the
    next keyframe are never sent to the decoder; the samples are those of decoding all."""
    path, _ = generated_videos[name]
    runs = {}
    for mode in ("all", "exact"):
        with VideoReader(path) as reader:
            runs[mode] = list(reader.frames(SamplingSettings(fps=0.5, mode=mode)))
        runs[mode + "_decoded"] = reader.stats.decoded_frames
    assert [(f.index, f.time) for f in runs["exact"]] == [(f.index, f.time) for f in runs["all"]]
    for ours, theirs in zip(runs["exact"], runs["all"], strict=True):
        assert np.array_equal(ours.rgb, theirs.rgb)
    assert runs["exact_decoded"] <= runs["all_decoded"] // 2


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0) if f.key_frame]


@pytest.mark.parametrize("name", ["h264-mp4", "ntsc-mp4", "mpeg4-bframes-avi", "vp9-webm"])
def test_keyframes_mode_takes_every_keyframe_at_its_true_pts(generated_videos, name: str) -> None:
    path, spec = generated_videos[name]
    with VideoReader(path) as reader:
        assert reader.estimated_samples(SamplingSettings(keyframes=True)) == len(
            keyframe_times(path)
        )
        frames = list(reader.frames(SamplingSettings(keyframes=True)))
    assert [f.time for f in frames] == pytest.approx(keyframe_times(path), abs=1e-6)
    assert [f.time for f in frames] == pytest.approx(
        [spec.shown_times[f.index] for f in frames], abs=1e-6
    )
    assert reader.stats.decoded_frames == len(frames)
    assert reader.stats.duration == pytest.approx(spec.duration, abs=1e-6)


def test_fps_sampling_takes_first_frame_at_or_after_each_tick(generated_videos) -> None:
    path, _ = generated_videos["h264-mp4"]  # 10 fps, 30 frames
    frames = read(path, SamplingSettings(fps=2.0))
    assert [f.index for f in frames] == [0, 5, 10, 15, 20, 25]


def test_fps_sampling_on_29_97(generated_videos) -> None:
    path, spec = generated_videos["ntsc-mp4"]
    frames = read(path, SamplingSettings(fps=1.0))
    expected = [0, 30, 60]  # 30 * 1001/30000 = 1.001 s is the first frame at or after 1 s
    assert [f.index for f in frames] == expected
    assert [f.time for f in frames] == pytest.approx([spec.times[i] for i in expected])


def test_fps_sampling_on_variable_frame_rate(generated_videos) -> None:
    path, _ = generated_videos["vfr-mp4"]
    frames = read(path, SamplingSettings(fps=1.0))
    # ticks 0, 1, 2, 3 s → first frames at or after them: 0.0, 1.2, 2.0, 3.1
    assert [f.time for f in frames] == pytest.approx([0.0, 1.2, 2.0, 3.1], abs=1e-3)


def test_every_n_and_max_frames(generated_videos) -> None:
    path, _ = generated_videos["mpeg4-avi"]
    assert [f.index for f in read(path, SamplingSettings(every_n=7))] == [0, 7, 14, 21, 28]
    assert [f.index for f in read(path, SamplingSettings(fps=5, max_frames=3))] == [0, 2, 4]


@pytest.mark.parametrize("mode", ["exact", "all"])
@pytest.mark.parametrize("name", NAMES)
def test_duration_is_the_end_of_the_last_frame(generated_videos, name: str, mode: str) -> None:
    """Regression (#12.1): a B-frame AVI's last frame comes out of the decoder without a
    timestamp; OpenCV read it as 0 s, so the duration was one frame (0.033 s of 9 s)."""
    path, spec = generated_videos[name]
    with VideoReader(path) as reader:
        list(reader.frames(SamplingSettings(mode=mode)))
    assert reader.stats.duration == pytest.approx(spec.duration, abs=1e-6)
    # Declared durations that are guesses: a VFR file's muxer's; MPEG-PS's, from the bitrate.
    if not name.startswith("vfr") and spec.suffix != ".mpg":
        with av.open(str(path)) as container:  # ffprobe's duration: the container's
            declared = container.duration / 1e6
        assert abs(reader.stats.duration - declared) <= 1 / float(spec.rate) + 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_no_corruption_warning_for_whole_videos(generated_videos, name: str, caplog) -> None:
    """Regression (#12.3): a variable-frame-rate AVI's header counts 316 frames where 12
    are stored, all decodable; that was reported as 304 frames that could not be decoded."""
    path, spec = generated_videos[name]
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        with VideoReader(path) as reader:
            frames = list(reader.frames(SamplingSettings(every_n=1)))
    assert len(frames) == len(spec.times)
    assert not [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert reader.stats.failed_frames == 0


def test_a_vfr_avi_header_counts_ticks_not_frames(generated_videos) -> None:
    path, spec = generated_videos["vfr-avi"]
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0, mode="all")))
    assert reader.stats.expected_frames == 316
    assert reader.stats.decoded_frames == len(spec.times) == 12
    assert [f.time for f in frames] == pytest.approx([0.0, 1.2, 2.0, 3.1], abs=1e-6)


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
    assert [f.time for f in frames] == pytest.approx(list(spec.times[: len(frames)]))
    warnings = [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{len(spec.times) - len(frames)} of {len(spec.times)}" in warnings[0].getMessage()
    assert reader_failed(cut) == len(spec.times) - len(frames)


def reader_failed(path: Path) -> int:
    with VideoReader(path) as reader:
        list(reader.frames(SamplingSettings(every_n=1)))
    return reader.stats.failed_frames


def test_corrupt_middle_keeps_frames_on_both_sides(tmp_path: Path, caplog) -> None:
    path, spec = long_video(tmp_path, "whole", "mpeg4", ".avi", n=100)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    bad = tmp_path / "corrupt.avi"
    bad.write_bytes(bytes(data))
    frames = read(bad, SamplingSettings(every_n=1))
    times = [f.time for f in frames]
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
        ({"mode": "quick"}, "unknown decode mode 'quick'; supported values are exact, all"),
        ({"keyframes": True, "every_n": 2}, "--keyframes .* cannot be combined with --every-n"),
    ],
)
def test_bad_sampling_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SamplingSettings(**kwargs)


def test_keyframe_flags_that_are_no_random_access_points_do_not_lose_frames(
    generated_videos,
) -> None:
    """Regression: x264's intra refresh flags recovery-point P-frames as keyframes; exact
    mode skipped to them, flushed, and the decoder gave nothing more (1 caption of 8)."""
    path, spec = generated_videos["h264-intrarefresh-mp4"]
    for fps in (1.0, 4.0):
        with VideoReader(path) as reader:
            exact = list(reader.frames(SamplingSettings(fps=fps)))
        with VideoReader(path) as reader:
            everything = list(reader.frames(SamplingSettings(fps=fps, mode="all")))
        assert [(f.index, f.time) for f in exact] == [(f.index, f.time) for f in everything]
        assert len(exact) == len(np.arange(0.0, spec.shown_times[-1] + 1e-9, 1 / fps))
        for ours, theirs in zip(exact, everything, strict=True):
            assert np.array_equal(ours.rgb, theirs.rgb)


def test_keyframes_mode_takes_only_keyframes_even_when_decoding_everything(
    generated_videos,
) -> None:
    path, _ = generated_videos["h264-gop-mp4"]
    with VideoReader(path) as reader:
        cheap = list(reader.frames(SamplingSettings(keyframes=True)))
    with VideoReader(path) as reader:
        full = list(reader.frames(SamplingSettings(keyframes=True, mode="all")))
    assert [f.time for f in cheap] == [f.time for f in full]
    assert 1 < len(full) < 60


def test_a_clip_cut_with_stream_copy_has_no_false_warning_and_true_indices(
    generated_videos, tmp_path: Path, caplog
) -> None:
    """Regression: an MP4 cut with ``ffmpeg -ss … -c copy`` keeps packets its edit list
    hides (decoded as references, never shown); they were counted as frames, so indices
    ran 0, 44, 74… and a corruption warning named 11 frames that never existed."""
    import subprocess

    import imageio_ffmpeg

    source, _ = generated_videos["h264-gop-mp4"]
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", "1.3", "-i", str(source),
         "-t", "3", "-c", "copy", str(cut)],
        check=True,
    )  # fmt: skip
    times = probe_times(cut)
    runs = {}
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        for mode in ("exact", "all"):
            with VideoReader(cut) as reader:
                runs[mode] = list(reader.frames(SamplingSettings(fps=1.0, mode=mode)))
    assert not [r for r in caplog.records if "could not be decoded" in r.getMessage()]
    assert [(f.index, f.time) for f in runs["exact"]] == [(f.index, f.time) for f in runs["all"]]
    for frame in runs["exact"]:
        assert frame.time == pytest.approx(times[frame.index], abs=1e-6)
