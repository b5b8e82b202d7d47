"""Frame sampling on videos the tests encode, checked against the truth they were encoded with."""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.videos import (
    FFPROBE,
    SPECS,
    VideoSpec,
    check_cut_off_files,
    concealed_damage,
    constant_rate,
    encode_with_ffmpeg,
    ffmpeg_has_encoder,
    ffprobe_frames,
    frame_colour,
    frame_number,
    probe_frames,
    probe_times,
    with_edit_list,
    write_video,
)
from vidcap import container
from vidcap.container import Clock, demux_times
from vidcap.decode import Decoded, Ended, decode_events
from vidcap.errors import UsageError, VideoError
from vidcap.frame_order import BestEffort, Reorder
from vidcap.inputs import expand_inputs
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader


def read(path: Path, sampling: SamplingSettings) -> list:
    with VideoReader(path) as reader:
        return list(reader.frames(sampling))


NAMES = [s.name for s in SPECS]
B_FRAME_VIDEOS = ["h264-mp4", "h264-mkv", "ntsc-mp4", "mpeg4-bframes-avi", "mpeg4-noindex-avi"]
# Packets that name no frame (H.264 with B-frames in AVI): every frame is decoded, and
# the demux pass's sample count, for progress bars, may be one off.
UNPLANNED = {"h264-bframes-avi", "h264-bframes-asf"}
NO_FFPROBE = "ffprobe is not installed (apt-get install ffmpeg); the PyAV-based checks still ran"


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
        estimate = exact.estimated_samples(sampling)
        assert estimate is not None
        assert abs(estimate - len(frames)) <= (1 if name in UNPLANNED else 0)
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
    # Declared durations that are guesses: a VFR file's muxer's; MPEG-PS's, from the bitrate;
    # a late start's is counted with or without the delay, by FFmpeg version.
    if not name.startswith(("vfr", "late")) and spec.suffix != ".mpg":
        with av.open(str(path)) as container:  # ffprobe's duration: the container's
            declared = container.duration / 1e6
        # AVI with B-frames: its header counts frames, not the decoder delay ASF's counts
        delay = spec.shown_times[0] - spec.times[0] if spec.suffix == ".avi" else 0.0
        assert abs(reader.stats.duration - delay - declared) <= 1 / float(spec.rate) + 1e-6


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


@pytest.mark.parametrize("mode", ["exact", "all"])
def test_keyframes_of_an_intra_refresh_capture_with_no_keyframe_take_its_first_frame(
    tmp_path: Path, mode: str
) -> None:
    """Regression: an intra-refresh H.264 stream cut in its middle (a broadcast or
    low-latency capture: no IDR in the file) has packets flagged keyframes (its recovery
    points) but no frame its decoder flags one, and ffprobe lists none; decoded alone they
    give nothing, and ``--keyframes`` failed the video, "no decodable frames". As where no
    packet is flagged, the first frame stands for them."""
    import av

    whole = encode_with_ffmpeg(
        tmp_path / "ir.ts",
        90,
        "30",
        ["-c:v", "libx264", "-x264-params", "keyint=30:intra-refresh=1:bframes=0:scenecut=0"],
    )
    with av.open(str(whole)) as container:
        flagged = [p.pos for p in container.demux(video=0) if p.is_keyframe and p.pos]
    assert len(flagged) >= 3, flagged  # the IDR, then recovery points
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"  # from between the two recovery points, on a TS packet
    cut.write_bytes(data[(flagged[1] + flagged[2]) // 2 // 188 * 188 :])
    listed = ffprobe_frames(cut)
    assert listed and not any(key for _, key in listed)
    with VideoReader(cut) as reader:
        everything = list(reader.frames(SamplingSettings(every_n=1)))
    with VideoReader(cut) as reader:
        keyframes = list(reader.frames(SamplingSettings(keyframes=True, mode=mode)))
    assert [(f.index, f.time) for f in keyframes] == [(0, pytest.approx(listed[0][0]))]
    assert np.array_equal(keyframes[0].rgb, everything[0].rgb)
    assert reader.stats.lost_frames == 0
    assert reader.stats.duration == pytest.approx(everything[-1].time + 1 / 30, abs=1e-3)


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


def stream_copy_cut(generated_videos, tmp_path: Path) -> Path:
    """``ffmpeg -ss 1.3 -t 3 -c copy`` of the H.264 MP4 (a keyframe every 12 frames): a clip
    cut between keyframes, its edit list hiding the keyframe its first frames predict from."""
    import subprocess

    import imageio_ffmpeg

    source, _ = generated_videos["h264-gop-mp4"]
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", "1.3", "-i", str(source),
         "-t", "3", "-c", "copy", str(cut)],
        check=True,
    )  # fmt: skip
    return cut


def test_a_clip_cut_with_stream_copy_has_no_false_warning_and_true_indices(
    generated_videos, tmp_path: Path, caplog
) -> None:
    """Regression: an MP4 cut with ``ffmpeg -ss … -c copy`` keeps packets its edit list
    hides (decoded as references, never shown); they were counted as frames, so indices
    ran 0, 44, 74… and a corruption warning named 11 frames that never existed."""
    cut = stream_copy_cut(generated_videos, tmp_path)
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


def test_a_clip_cut_between_keyframes_numbers_its_keyframes_as_ffprobe_does(
    generated_videos, tmp_path: Path
) -> None:
    """Regression: a clip cut with ``ffmpeg -ss … -c copy`` between keyframes shows frames
    before its first shown keyframe that predict from the keyframe its edit list hides (in
    the file, decoded, never shown). The demux pass took them for a stream that starts
    mid-GOP (frames that do not decode) and left them out: ``--keyframes`` numbered its
    keyframes as many frames low (frames 0, 3, 11… where ffprobe lists 1, 4, 12…), and
    ``exact`` decoded the whole video again, its plan broken by frames it did not expect."""
    cut = stream_copy_cut(generated_videos, tmp_path)
    truth = probe_frames(cut)
    assert not truth[0][1] and any(key for _, key in truth)  # shown keyframes, not first
    for sampling in (MORE_MODES["keyframes"], MORE_MODES["all-keyframes"]):
        assert_samples(cut, truth, sampling)
    reader = assert_samples(cut, truth, MORE_MODES["exact-fps1"])
    assert reader.stats.decoded_frames < len(truth)  # skipped frames: the plan held


# --- the frames ffprobe lists, in every mode (#16) ---------------------------------------

# (``all`` against ``exact``: test_exact_mode_gives_the_frames_of_decoding_everything)
MODES = {
    "exact-fps1": SamplingSettings(fps=1.0),
    "keyframes": SamplingSettings(keyframes=True),
    "every-n-1": SamplingSettings(every_n=1),
}
MORE_MODES = {
    **MODES,
    "all-fps1": SamplingSettings(fps=1.0, mode="all"),
    "exact-fps3": SamplingSettings(fps=3.0),
    "all-keyframes": SamplingSettings(keyframes=True, mode="all"),
    "every-n-4": SamplingSettings(every_n=4),
}


@functools.cache
def truth_frames(path: Path) -> list[tuple[float, bool]]:
    return probe_frames(path)


def expected_samples(
    frames: list[tuple[float, bool]], sampling: SamplingSettings
) -> list[tuple[int, float]]:
    """What ``sampling`` must take from a frame list in presentation order (ffprobe's):
    (index, time) of every keyframe, every N-th frame, or the first frame at or after
    each 1/F s tick."""
    if sampling.keyframes:
        return [(i, t) for i, (t, key) in enumerate(frames) if key]
    if sampling.every_n is not None:
        return [(i, frames[i][0]) for i in range(0, len(frames), sampling.every_n)]
    step, due, taken = 1.0 / float(sampling.fps or 1.0), 0.0, []
    for i, (time, _) in enumerate(frames):
        if time + 1e-6 >= due:
            taken.append((i, time))
            due = (math.floor(time / step + 1e-6) + 1) * step
    return taken


def assert_samples(path: Path, truth: list[tuple[float, bool]], sampling: SamplingSettings):
    with VideoReader(path) as reader:
        frames = [(f.index, f.time) for f in reader.frames(sampling)]
    want = expected_samples(truth, sampling)
    assert [i for i, _ in frames] == [i for i, _ in want]
    assert [t for _, t in frames] == pytest.approx([t for _, t in want], abs=1e-6)
    return reader


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("name", NAMES)
def test_every_mode_takes_the_frames_ffprobe_lists(generated_videos, name: str, mode) -> None:
    """Ground truth without ffprobe: every frame decoded with plain PyAV, timed by FFmpeg's
    best-effort rule (``probe_frames``); each mode samples from that list."""
    path, spec = generated_videos[name]
    truth = truth_frames(path)
    assert [t for t, _ in truth] == pytest.approx(list(spec.shown_times), abs=1e-6)
    assert_samples(path, truth, mode)


@pytest.mark.skipif(FFPROBE is None, reason=NO_FFPROBE)
@pytest.mark.parametrize("name", NAMES)
def test_times_and_keyframes_are_ffprobes(generated_videos, name: str) -> None:
    path, _ = generated_videos[name]
    frames = ffprobe_frames(path)
    assert frames == [(pytest.approx(t, abs=1e-6), k) for t, k in truth_frames(path)]
    assert_samples(path, frames, MORE_MODES["exact-fps3"])


# --- times as players show them: late starts (#16.3) -------------------------------------


@pytest.mark.parametrize("name", ["late-mp4", "late-mkv", "late-webm"])
@pytest.mark.parametrize("mode", ["exact", "all"])
def test_a_late_start_is_kept_where_the_container_starts_at_zero(
    generated_videos, name: str, mode: str
) -> None:
    """An MP4 whose edit list starts with an empty edit (ffprobe: start_time=1.075) and
    Matroska/WebM whose first block is at 1.075 s: the picture starts 1.075 s in, as a
    player shows it; the last frame ends at 4.075 s, not 3.0."""
    path, _ = generated_videos[name]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.start_time * stream.time_base) == pytest.approx(1.075)
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0, mode=mode)))
    assert [(f.index, f.time) for f in frames] == [(0, 1.075), (10, 2.075), (20, 3.075)]
    assert reader.stats.duration == pytest.approx(4.075)
    assert reader.stats.failed_frames == 0


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_stream_delayed_with_itsoffset_starts_late(
    generated_videos, tmp_path: Path, suffix: str
) -> None:
    """The case from #16: ``ffmpeg -itsoffset 1.075 -i in.mp4 -c copy late.mp4`` (an edit
    list with an initial empty edit; ffprobe: start_time=1.075, first frame at 1.075)."""
    import subprocess

    import imageio_ffmpeg

    source, spec = generated_videos["h264-mp4"]
    late = tmp_path / f"late{suffix}"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-itsoffset", "1.075", "-i",
         str(source), "-c", "copy", str(late)],
        check=True,
    )  # fmt: skip
    truth = probe_times(late)
    assert truth == pytest.approx([1.075 + t for t in spec.times], abs=1e-3)
    if FFPROBE:
        assert [t for t, _ in ffprobe_frames(late)] == pytest.approx(truth, abs=1e-6)
    with VideoReader(late) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0)))
    assert [f.time for f in frames] == pytest.approx([truth[0], truth[10], truth[20]], abs=1e-6)
    assert reader.stats.duration == pytest.approx(truth[-1] + 0.1, abs=1e-3)


@pytest.mark.parametrize("name", ["late-ts", "h264-ts", "mpeg2-mpg"])
def test_mpeg_ts_and_ps_count_from_their_first_frame(generated_videos, name: str) -> None:
    """MPEG-TS/PS timestamps start anywhere (1.4 s, 2.5 s): the first frame is at 0 s."""
    path, spec = generated_videos[name]
    with av.open(str(path)) as container:
        assert container.streams.video[0].start_time > 0
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0)))
    assert frames[0].time == 0.0
    assert reader.stats.duration == pytest.approx(spec.shown_times[-1] + 1 / float(spec.rate))


# --- decoder-level rules -----------------------------------------------------------------


def test_best_effort_takes_dts_once_pts_go_wrong_more_often() -> None:
    """FFmpeg's guess_correct_pts on a packed XviD AVI read by FFmpeg 8 with generated pts:
    pts 3, 4, 6, 5, 7, 9, 8 (packed pairs swapped), release dts 3, 4, 5, 6, 7, 8, 9."""
    guess = BestEffort()
    pts, dts = [3, 4, 6, 5, 7, 9, 8, None], [3, 4, 5, 6, 7, 8, 9, None]
    assert [guess(p, d) for p, d in zip(pts, dts, strict=True)] == [3, 4, 6, 6, 7, 8, 9, None]
    guess.reset()  # (a decoder flush resets it)
    assert [guess(p, None) for p in (5, 4)] == [5, 4]  # no dts: the pts, right or wrong


def test_the_clock_gives_the_floats_fractions_give() -> None:
    """Packet times in integer arithmetic are bit for bit what ``Fraction`` products give
    (the code before it computed ``float(ts * time_base)`` per packet)."""
    rng = np.random.default_rng(16)
    bases = [Fraction(1, 90000), Fraction(1001, 30000), Fraction(1, 1000), Fraction(1, 12800),
             Fraction(1, 15360), Fraction(1, 24000), Fraction(1, 1200000), Fraction(1, 25),
             Fraction(100, 2997), Fraction(1, 3)]  # fmt: skip
    starts = [0.0, 1.4, 1.075, -0.1, 2.5, 1 / 3, 1e-7]
    stamps = [0, 1, -1, 2**33 - 1, 2**62, -(2**40)] + [int(x) for x in rng.integers(-9e5, 9e9, 300)]
    for time_base, start, ts in itertools.product(bases, starts, stamps):
        clock = Clock(time_base, start)
        assert clock.seconds(ts).hex() == max(0.0, float(ts * time_base) - start).hex()
        assert clock.span(ts).hex() == float(ts * time_base).hex()
    with pytest.raises(TypeError):  # no time base: fails as the Fraction product did
        Clock(None, 0.0).seconds(5)


def test_the_reorder_buffer_releases_in_time_order_and_counts_what_it_cannot_place() -> None:
    buffer: Reorder[str] = Reorder()
    arrivals = [(0.0, "a"), (1.0, "b"), (3.0, "d"), (2.0, "c"), (4.0, "e"), (4.0, "e2")]
    out = [item for t, i in arrivals for item in buffer.push(t, i)] + list(buffer.drain())
    assert [item for _, item in out] == ["a", "b", "c", "d", "e", "e2"]
    assert buffer.late == 0
    # Far out of order: what arrives after 16 later frames already left cannot be placed.
    deep: Reorder[int] = Reorder()
    times = [float(t) for t in range(1, 40)] + [0.5, 38.5]
    out = [item for t in times for item in deep.push(t, int(t * 10))] + list(deep.drain())
    assert [t for t, _ in out] == sorted(t for t in times if t != 0.5)
    assert deep.late == 1


# --- XviD/DivX AVIs with packed B-frames (#16.1) -----------------------------------------

XVID = "libxvid"


@pytest.fixture(scope="module")
def packed_avis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """AVIs as XviD writes them with B-frames: "packed bitstream" (a P- and a B-frame in one
    chunk, then a 7-byte N-VOP placeholder chunk), made with FFmpeg's libxvid; one damaged."""
    if not ffmpeg_has_encoder(XVID):
        pytest.skip("imageio-ffmpeg's ffmpeg has no libxvid encoder to write packed B-frames")
    folder = tmp_path_factory.mktemp("packed")
    videos = {
        f"xvid-bf{bf}": encode_with_ffmpeg(
            folder / f"xvid-bf{bf}.avi", 96, "24000/1001",
            ["-c:v", XVID, "-bf", str(bf), "-g", "24", "-q:v", "5"] + tag,
        )
        for bf, tag in ((1, []), (2, ["-vtag", "DIVX"]))
    }  # fmt: skip
    data = bytearray(videos["xvid-bf2"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes(200)
    videos["xvid-damaged"] = folder / "xvid-damaged.avi"
    videos["xvid-damaged"].write_bytes(bytes(data))
    return videos


@pytest.mark.parametrize("mode", MORE_MODES.values(), ids=MORE_MODES.keys())
@pytest.mark.parametrize("name", ["xvid-bf1", "xvid-bf2", "xvid-damaged"])
def test_packed_b_frames_give_the_frames_ffprobe_lists(packed_avis, name: str, mode) -> None:
    """Regression: exact mode mapped packets to frames by packet pts — on packed chunks
    that took frames 121/145/… where ffprobe's first frames at or after the ticks are
    119/143/…, and on a damaged one two frames for one tick."""
    path = packed_avis[name]
    truth = truth_frames(path)
    reader = assert_samples(path, truth, mode)
    if not mode.keyframes:
        assert reader.stats.decoded_frames == len(truth)


@pytest.mark.parametrize("name", ["xvid-bf1", "xvid-bf2"])
def test_packed_b_frames_come_out_in_order_and_whole(packed_avis, name: str) -> None:
    path = packed_avis[name]
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(every_n=1)))
    numbers = [frame_number(f.rgb) for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    times = [f.time for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    step = 1001 / 24000
    assert np.diff(times) == pytest.approx([step] * (len(times) - 1), abs=1e-6)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert reader.stats.failed_frames == reader.stats.late_frames == 0


@pytest.mark.skipif(FFPROBE is None, reason=NO_FFPROBE)
@pytest.mark.parametrize("name", ["xvid-bf1", "xvid-bf2", "xvid-damaged"])
def test_packed_b_frames_are_timed_as_ffprobe_times_them(packed_avis, name: str) -> None:
    path = packed_avis[name]
    frames = ffprobe_frames(path)
    assert frames == [(pytest.approx(t, abs=1e-6), k) for t, k in truth_frames(path)]
    for mode in MORE_MODES.values():
        assert_samples(path, frames, mode)


# --- ASF: Windows Media Center's DVR-MS recordings of MPEG-2 ---------------------------


@pytest.fixture(scope="module")
def dvr_ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MPEG-2 with B-frames in ASF, as Windows Media Center recorded TV (``.dvr-ms``)."""
    path = tmp_path_factory.mktemp("dvr-ms") / "recording.dvr-ms"
    return encode_with_ffmpeg(path, 60, "25", ["-c:v", "mpeg2video", "-bf", "2", "-f", "asf"])


@pytest.mark.parametrize("mode", MORE_MODES.values(), ids=MORE_MODES.keys())
def test_mpeg2_in_asf_is_timed_as_ffprobe_times_it(dvr_ms: Path, mode) -> None:
    """Regression: ASF stores no pts for B-frames, and the ones libavformat made up gave
    two frames one time (0.16 s twice), so a tick could take the wrong frame of the two."""
    truth = truth_frames(dvr_ms)
    assert len({t for t, _ in truth}) == len(truth) == 60
    assert_samples(dvr_ms, truth, mode)


def test_mpeg2_in_asf_comes_out_in_order_and_whole_and_folders_find_it(dvr_ms: Path) -> None:
    with VideoReader(dvr_ms) as reader:
        frames = list(reader.frames(SamplingSettings(every_n=1)))
    assert [frame_number(f.rgb) for f in frames] == list(range(60))
    times = [f.time for f in frames]
    assert times == sorted(times) and len(set(times)) == 60
    assert [video.source for video in expand_inputs([dvr_ms.parent])] == [str(dvr_ms)]


@pytest.mark.skipif(FFPROBE is None, reason=NO_FFPROBE)
def test_mpeg2_in_asf_times_are_ffprobes(dvr_ms: Path) -> None:
    frames = ffprobe_frames(dvr_ms)
    assert frames == [(pytest.approx(t, abs=1e-6), k) for t, k in truth_frames(dvr_ms)]


# --- a damaged H.264 stream whose decoder releases frames out of order (#16.1) ------------


@pytest.fixture(scope="module")
def damaged_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 (x264, B-frames, an IDR every second) whose second IDR has a damaged slice
    header: FFmpeg's decoder then releases frames out of order (pts 94, 97, 98, 95, 99),
    as on real files with a corrupt IDR frame. The damage is searched for (a few bytes
    tried), so the test does not hang on one encoder version's exact bitstream."""
    folder = tmp_path_factory.mktemp("damaged")
    source = encode_with_ffmpeg(
        folder / "whole.mp4", 144, "24000/1001",
        ["-c:v", "libx264", "-bf", "3", "-g", "24", "-pix_fmt", "yuv420p"],
    )  # fmt: skip
    with av.open(str(source)) as container:
        keys = [p.pos for p in container.demux(video=0) if p.is_keyframe and p.size]
    whole = source.read_bytes()
    for offset, value in itertools.product(range(5, 12), (153, 204, 255, 51, 102)):
        data = bytearray(whole)
        data[keys[2] + offset] = value
        damaged = folder / "damaged.mp4"
        damaged.write_bytes(bytes(data))
        if released_out_of_order(damaged):
            return damaged
    pytest.skip("no damage tried made this FFmpeg release frames out of order")


def released_out_of_order(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"
            pts = [f.pts for f in container.decode(stream) if f.pts is not None]
    except av.FFmpegError:
        return False
    return any(b < a for a, b in itertools.pairwise(pts))


@pytest.mark.parametrize("mode", MORE_MODES.values(), ids=MORE_MODES.keys())
def test_a_damaged_h264_stream_keeps_every_frame_in_order(damaged_h264: Path, mode) -> None:
    """Regression: the frames the decoder released late were dropped (``--every-n 1`` wrote
    224 of 455 decoded frames, no warning), ``--fps 1`` skipped the first frame at or after
    a tick, and indices ran ahead of ffprobe's."""
    truth = truth_frames(damaged_h264)
    reader = assert_samples(damaged_h264, truth, mode)
    if mode.every_n == 1:
        assert reader.stats.sampled_frames == len(truth) == reader.stats.decoded_frames


def test_a_damaged_h264_stream_warns_once_about_what_is_lost(damaged_h264: Path, caplog) -> None:
    with av.open(str(damaged_h264)) as container:
        packets = sum(1 for p in container.demux(video=0) if p.size)
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        with VideoReader(damaged_h264) as reader:
            frames = list(reader.frames(SamplingSettings(every_n=1)))
    times = [f.time for f in frames]
    assert times == sorted(times)
    assert [f.index for f in frames] == list(range(len(frames)))
    lost = packets - len(frames)
    warnings = [r.getMessage() for r in caplog.records if "could not be decoded" in r.getMessage()]
    if lost:
        assert len(warnings) == 1 and f"{lost} of {packets} frames" in warnings[0]
    else:
        assert not warnings


def test_the_decode_stage_gives_the_same_frames(packed_avis, damaged_h264: Path) -> None:
    """``decode_events``, which every executor drives, sends what the reader takes."""
    sampling = SamplingSettings(fps=2.0)
    for path in (packed_avis["xvid-bf2"], damaged_h264):
        events = list(decode_events(0, str(path), sampling, (32, 32)))
        with VideoReader(path) as reader:
            frames = list(reader.frames(sampling))
        assert [(e.frame.index, e.frame.time) for e in events if isinstance(e, Decoded)] == [
            (f.index, f.time) for f in frames
        ]
        assert isinstance(events[-1], Ended)
        assert events[-1].duration == reader.stats.duration


@pytest.mark.parametrize("scenes", [False, True])
@pytest.mark.parametrize("name", ["late-mp4", "late-mkv", "h264-mp4"])
def test_a_clip_begins_at_the_frame_its_time_names(
    generated_videos, tmp_path: Path, name: str, scenes: bool
) -> None:
    """``vidcap clips`` seeks with ffmpeg, which counts from the container's start: a late
    start kept in frame times is taken off again, so the clip from a frame's time starts at
    that frame (not 1.075 s later); per segment and per scene (``--scenes``) alike."""
    from vidcap.clips import export_clips, export_scene_clips
    from vidcap.mask import Segment

    path, spec = generated_videos[name]
    start = spec.shown_times[10]
    out = tmp_path / "clips"
    if scenes:
        row = {
            "video": str(path),
            "scene": 1,
            "start": start,
            "end": start + 0.5,
            "caption": "",
            "captions": [],
        }
        [clip] = export_scene_clips(path, [row], out, precise=True)
    else:
        [clip] = export_clips(path, [Segment(start, start + 0.5)], out, precise=True)
    assert (clip.start, clip.end) == (start, start + 0.5)
    with av.open(str(tmp_path / "clips" / clip.path)) as container:
        shown = [f.to_ndarray(format="rgb24").mean() for f in container.decode(video=0)]
    # frames 10-14, each within 3 grey levels (11 frames later is only 7 levels off)
    expected = [float(frame_colour(i)[0]) for i in range(10, 15)]
    assert shown == pytest.approx(expected, abs=3)


# --- what the sweep of files made with the ffmpeg command found (outside the SPECS) -------


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A faststart H.264 MP4 (3 B-frames, 120 frames) cut at 70 % of its bytes."""
    folder = tmp_path_factory.mktemp("truncated")
    whole = encode_with_ffmpeg(
        folder / "whole.mp4", 120, "30",
        ["-c:v", "libx264", "-preset", "veryfast", "-bf", "3", "-g", "30",
         "-movflags", "+faststart"],
        size=(240, 320),
    )  # fmt: skip
    data = whole.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 7 // 10])
    return truncated


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingSettings(every_n=1, mode="all"),
        SamplingSettings(every_n=1),
        SamplingSettings(fps=3.0),
        SamplingSettings(keyframes=True),
    ],
    ids=["all", "exact-every-frame", "exact-fps3", "keyframes"],
)
def test_a_truncated_stream_keeps_the_same_frames_on_any_number_of_threads(
    truncated_mp4: Path, sampling: SamplingSettings, caplog
) -> None:
    """Regression: FFmpeg's frame threads lose the frames in flight around an error (here
    the last 2 of a truncated MP4), so what was kept depended on the machine's cores (one
    decoder process on a 2-core machine: 2 threads). Damage met on several threads is
    decoded again on one."""
    kept = []
    for threads in (1, 2, 0):
        with caplog.at_level(logging.WARNING, logger="vidcap.video"):
            caplog.clear()
            with VideoReader(truncated_mp4, threads=threads) as reader:
                kept.append([(f.index, f.time) for f in reader.frames(sampling)])
        [warning] = [r.getMessage() for r in caplog.records if "could not be" in r.getMessage()]
    assert kept[0] == kept[1] == kept[2]
    if sampling.every_n == 1 and FFPROBE:
        shown = [t for t, _ in ffprobe_frames(truncated_mp4)]  # (65 frames)
        assert [t for _, t in kept[0]] == pytest.approx(shown, abs=1e-6)
        assert [i for i, _ in kept[0]] == list(range(len(shown)))
        # the header's 120 frames, each counted once (the truncated last packet is also
        # the start of the missing tail)
        assert f"{120 - len(shown)} of 120 frames could not be decoded" in warning
        if sampling.mode == "all":
            assert f"kept the {len(shown)} that decoded" in warning
    if sampling.mode == "exact" and sampling.every_n != 1:
        assert "kept every frame that decoded" in warning  # not the count of samples


def test_scene_frames_of_a_truncated_stream_do_not_depend_on_threads(truncated_mp4: Path) -> None:
    times = []
    for threads in (1, 2):
        with VideoReader(truncated_mp4, threads=threads) as reader:
            times.append([(f.index, f.time) for f in reader.decoded_frames()])
    assert times[0] == times[1] and times[0]


def test_packet_times_that_are_decode_times_are_not_planned_with(tmp_path: Path) -> None:
    """Regression: a time base coarser than the frame rate (``-video_track_timescale 7``)
    makes FFmpeg's MOV muxer write B-frames' pts equal to their dts; FFmpeg's best effort
    then times frames by dts. ``exact --keyframes`` took the keyframes' pts (30 at 4.29 s,
    not 4.57 s as ffprobe and decoding everything say)."""
    path = encode_with_ffmpeg(
        tmp_path / "coarse.mov", 90, "30",
        ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30",
         "-video_track_timescale", "7"],
    )  # fmt: skip
    keyframes = [(i, t) for i, (t, key) in enumerate(probe_frames(path)) if key]
    assert len(keyframes) == 3
    for sampling in (SamplingSettings(keyframes=True), SamplingSettings(fps=1.0)):
        got = {}
        for mode in ("exact", "all"):
            with VideoReader(path) as reader:
                got[mode] = [(f.index, f.time) for f in reader.frames(replace(sampling, mode=mode))]
        assert got["exact"] == got["all"]
    assert [i for i, _ in got["exact"]] != []  # (fps 1: ticks exist)
    with VideoReader(path) as reader:
        frames = [(f.index, f.time) for f in reader.frames(SamplingSettings(keyframes=True))]
    assert frames == [(i, pytest.approx(t, abs=1e-6)) for i, t in keyframes]


def matroska(folder: Path, name: str, *, audio: float | None = None, tags: bool = True) -> Path:
    """100 frames at 25 fps (4 s) in Matroska (``.mkv``: H.264) or WebM (``.webm``: VP8),
    with ``audio`` seconds of sound beside them; ``tags=False``: as mkvmerge's file looks
    once a download cut it off (its per-track ``DURATION`` tags sit after the last
    cluster), the segment's duration the only length in the header."""
    video = ["-c:v", "libx264", "-g", "25"] if name.endswith(".mkv") else ["-c:v", "libvpx"]
    sound = ["-c:a", "libopus" if name.endswith(".webm") else "aac"]
    extra = ["-f", "lavfi", "-i", f"sine=duration={audio}", *sound] if audio else []
    path = encode_with_ffmpeg(folder / name, 100, "25", [*extra, *video], size=(120, 160))
    if not tags:  # renamed: FFmpeg reads a tag vidcap does not know
        data = path.read_bytes()
        assert data.count(b"DURATION") == (2 if audio else 1)
        path.write_bytes(data.replace(b"DURATION", b"XURATION"))
    return path


def cut(path: Path, share: float = 0.6) -> Path:
    data = path.read_bytes()
    short = path.with_name(f"cut-{path.name}")
    short.write_bytes(data[: int(len(data) * share)])
    return short


@pytest.mark.parametrize(
    ("name", "audio", "tags"),
    [
        ("tagged.mkv", 4.0, True),
        ("untagged.mkv", 4.0, False),
        ("untagged-video-only.mkv", None, False),
        ("tagged.webm", 4.0, True),
        ("untagged.webm", None, False),
    ],
)
@pytest.mark.heavy
def test_a_cut_off_matroska_file_warns(
    tmp_path: Path, caplog, name: str, audio: float | None, tags: bool
) -> None:
    """Regression: a Matroska/WebM file cut off (an interrupted download) gave its first
    frames and no warning: its tracks state no frame count, and the lengths it does state
    (FFmpeg's per-track ``DURATION`` tags, the segment's duration) were not read."""
    whole = matroska(tmp_path, name, audio=audio, tags=tags)
    for sampling in (SamplingSettings(every_n=1, mode="all"), SamplingSettings(fps=1.0)):
        with caplog.at_level(logging.WARNING, logger="vidcap.video"):
            caplog.clear()
            assert len(read(whole, sampling)) in (100, 4)
        assert not [r for r in caplog.records if "could not be" in r.getMessage()]
    short = cut(whole)
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        caplog.clear()
        with VideoReader(short) as reader:
            kept = len(list(reader.frames(SamplingSettings(every_n=1, mode="all"))))
        [warning] = [r.getMessage() for r in caplog.records if "could not be" in r.getMessage()]
    assert 0 < kept < 90
    assert reader.stats.failed_frames == pytest.approx(100 - kept, abs=1)
    assert f"of {100 if tags else reader.stats.failed_frames + kept} frames" in warning
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):  # skipping frames too
        caplog.clear()
        read(short, SamplingSettings(fps=1.0))
        [warning] = [r.getMessage() for r in caplog.records if "could not be" in r.getMessage()]
    assert "kept every frame that decoded" in warning


@pytest.mark.parametrize("packet", [188, 192])  # MPEG-TS; M2TS (Blu-ray, AVCHD cameras)
def test_a_transport_stream_cut_inside_a_packet_warns(tmp_path: Path, caplog, packet: int) -> None:
    """Regression: a cut-off MPEG-TS (an interrupted download) lost its tail with no word in
    the default mode: a TS states no length. A file that ends inside a packet is cut off:
    warned in every mode, and at least one frame counted lost (how many, it never says)."""
    name = "a.ts" if packet == 188 else "a.m2ts"
    whole = encode_with_ffmpeg(
        tmp_path / name, 100, "25",
        ["-c:v", "libx264", "-g", "25", "-f", "mpegts", "-mpegts_m2ts_mode", str(int(packet == 192))],
        size=(120, 160),
    )  # fmt: skip
    data = whole.read_bytes()
    assert len(data) % packet == 0
    boundary = len(data) * 6 // 10 // packet * packet
    files = {  # name: is it cut inside a packet?
        "whole": data,
        "begun mid-packet": bytes(77) + data,  # a capture that starts inside a packet
        "cut inside a packet": data[: boundary + 100],
        "cut on a boundary": data[:boundary],  # not seen: the limit, documented
    }
    for label, content in files.items():
        path = tmp_path / f"{label}{whole.suffix}"
        path.write_bytes(content)
        for sampling in (SamplingSettings(fps=1.0), SamplingSettings(every_n=1, mode="all")):
            with caplog.at_level(logging.WARNING, logger="vidcap.video"):
                caplog.clear()
                with VideoReader(path) as reader:
                    assert list(reader.frames(sampling))
            said = [r.getMessage() for r in caplog.records if "transport-stream" in r.getMessage()]
            if label == "cut inside a packet":
                assert len(said) == 1 and "cut off" in said[0], (label, sampling)
                assert reader.stats.lost_frames >= 1
            else:
                assert not said, (label, sampling)
                assert reader.stats.lost_frames == 0 or label == "cut on a boundary"


def unfinished_avi(data: bytes) -> bytes:
    """What an AVI recorder stopped by a crash or a lost battery leaves of ``data`` (a whole
    AVI from FFmpeg): the lengths of its RIFF chunk and 'movi' list and its frame counts
    still placeholders (as a killed ``ffmpeg`` leaves them), no index."""
    out = bytearray(data)
    movi = out.index(b"LIST", out.index(b"LIST") + 8)
    while out[movi + 8 : movi + 12] != b"movi":
        movi = out.index(b"LIST", movi + 4)
    end = movi + 8 + int.from_bytes(out[movi + 4 : movi + 8], "little")
    for field in (4, movi + 4):
        out[field : field + 4] = b"\xff" * 4
    for tag, offset in ((b"avih", 16), (b"strh", 32)):
        at = out.index(tag) + 8 + offset
        out[at : at + 4] = bytes(4)
    return bytes(out[:end])


def test_an_avi_cut_inside_its_frames_warns(tmp_path: Path, caplog) -> None:
    """Regression: an AVI whose recorder stopped before writing its lengths (a dashcam or
    a capture losing power mid-recording) kept its last, half-written frame with no word:
    its header counts no frames and it has no index, so nothing was missing by them. A
    file that ends inside a frame's chunk is cut off: warned in every mode, a frame counted
    lost; one that stops between chunks, or loses only part of its index, loses none."""
    whole = encode_with_ffmpeg(tmp_path / "w.avi", 50, "25", ["-c:v", "mjpeg"], size=(120, 160))
    data = whole.read_bytes()
    stopped = unfinished_avi(data)
    first = stopped.index(b"movi") + 4  # the first frame's chunk
    assert stopped[first : first + 4] == b"00dc"
    length = int.from_bytes(stopped[first + 4 : first + 8], "little")
    second = first + 8 + length + (length & 1)
    assert stopped[second : second + 4] == b"00dc"
    files = {  # name: does it end inside a frame?
        "whole": (data, False),
        "stopped between frames": (stopped, False),
        "stopped inside a frame": (stopped[: second + 8 + 100], True),
        "stopped inside a chunk header": (stopped[: second + 3], True),
        "index cut off": (data[:-40], False),
        "download cut inside a frame": (data[: second + 8 + 100], True),
    }
    check_cut_off_files(tmp_path, files, ".avi", "AVI chunk", caplog)


def test_a_matroska_file_without_a_duration_is_judged_by_its_clusters(
    tmp_path: Path, caplog
) -> None:
    """Regression: a Matroska file that states no duration (written live, as a streaming
    recorder or ``-live 1`` writes it; or unfinished, as a crashed OBS leaves it) with PCM
    sound got FFmpeg's duration estimate from the bitrate (9.1 s for 4 s), and a whole file
    was said to have lost 128 of 228 frames. Without a stated duration no tail is counted
    from the estimate; a file that ends inside a Cluster is cut off, warned and a frame
    counted lost; one cut after its last Cluster loses none."""
    import subprocess

    import imageio_ffmpeg

    from vidcap.torn import matroska_states_duration

    live = tmp_path / "live.mkv"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine", "-t", "4", "-c:v",
         "mjpeg", "-c:a", "pcm_s16le", "-f", "matroska", "-live", "1", str(live)],
        check=True,
    )  # fmt: skip
    whole = encode_with_ffmpeg(tmp_path / "w.mkv", 50, "25", ["-c:v", "mjpeg"], size=(120, 160))
    assert not matroska_states_duration(str(live)) and matroska_states_duration(str(whole))
    data = live.read_bytes()
    cues = whole.read_bytes().rfind(b"\x1c\x53\xbb\x6b")  # the index after the last Cluster
    assert cues > 0
    files = {  # name: (content, does it end inside a Cluster?)
        "live, whole": (data, False),
        "live, cut in a cluster": (data[: len(data) * 6 // 10], True),
        "whole": (whole.read_bytes(), False),
        "index cut off": (whole.read_bytes()[: cues + 20], False),
    }
    check_cut_off_files(tmp_path, files, ".mkv", "Matroska cluster", caplog)


def test_one_still_over_sound_in_mpeg_ts_loses_no_frame(tmp_path: Path, caplog) -> None:
    """Regression (an outside-in round): one H.264 frame over 10 s of sound in MPEG-TS was
    said to have lost 869,934 of 875,624 frames, and recorded damaged: MPEG-TS states no
    length, and FFmpeg's estimate for a stream of one packet is the file's (its sound's),
    times a rate it guessed from the 90 kHz clock. No tail is counted from it."""
    import subprocess

    import imageio_ffmpeg

    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y"]
    one, sound, still = tmp_path / "one.mp4", tmp_path / "sine.m4a", tmp_path / "still.ts"
    for args in (
        ["-f", "lavfi", "-i", "color=red:size=64x64:rate=25", "-frames:v", "1", "-c:v",
         "libx264", str(one)],
        ["-f", "lavfi", "-i", "sine=duration=10", "-c:a", "aac", str(sound)],
        ["-i", str(one), "-i", str(sound), "-map", "0:v", "-map", "1:a", "-c", "copy", "-f",
         "mpegts", str(still)],  # (a remux: FFmpeg then guesses 90,000 frames/s)
    ):  # fmt: skip
        subprocess.run([*ffmpeg, *args], check=True)
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        with VideoReader(still) as reader:
            frames = list(reader.frames(SamplingSettings(fps=1.0)))
    assert len(frames) == 1 and reader.stats.lost_frames == 0
    assert not [r for r in caplog.records if "could not be" in r.getMessage()]


def test_a_matroska_video_track_shorter_than_its_audio_is_whole(tmp_path: Path, caplog) -> None:
    """The segment's duration covers every track: where the video (4 s) ends before the
    sound (6 s), nothing is missing; once the file is cut off, every track ends early."""
    whole = matroska(tmp_path, "short-video.mkv", audio=6.0, tags=False)
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        assert len(read(whole, SamplingSettings(every_n=1))) == 100
    assert not [r for r in caplog.records if "could not be" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        read(cut(whole, 0.4), SamplingSettings(every_n=1))
    assert [r for r in caplog.records if "could not be" in r.getMessage()]


def with_cover(folder: Path, video: Path, name: str, *, first: bool) -> Path:
    """``video`` with a 300×300 JPEG cover beside it (``ffmpeg -disposition attached_pic``):
    FFmpeg's Matroska muxer keeps the cover as an ordinary video track, flagged neither
    attached picture nor default, first when ``first``."""
    import subprocess

    import cv2
    import imageio_ffmpeg

    cover = folder / "cover.jpg"
    cv2.imwrite(str(cover), np.full((300, 300, 3), (0, 0, 255), np.uint8))
    inputs = [cover, video] if first else [video, cover]
    out = folder / name
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(inputs[0]), "-i",
         str(inputs[1]), "-map", "0", "-map", "1", "-c", "copy",
         f"-disposition:v:{0 if first else 1}", "attached_pic", str(out)],
        check=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["cover-first.mkv", "cover-last.mkv", "cover-first.mp4"])
def test_a_cover_picture_is_not_the_video(generated_videos, tmp_path: Path, name: str) -> None:
    """Regression: a Matroska file whose first video track is its cover (how FFmpeg stores
    ``-disposition attached_pic`` there) was captioned as a one-frame video of the cover.
    The video is the track a player shows; clips cut it too."""
    from vidcap.clips import export_clips
    from vidcap.ffmpeg import probe
    from vidcap.mask import Segment

    source, spec = generated_videos["h264-mp4"]
    path = with_cover(tmp_path, source, name, first=name.startswith("cover-first"))
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 2
    frames = read(path, SamplingSettings(every_n=1))
    assert [f.time for f in frames] == pytest.approx(list(spec.times), abs=1e-6)
    assert frames[0].rgb.shape[:2] == spec.display_size[::-1]
    info = probe(path)
    assert (info.width, info.height) == spec.display_size
    [clip] = export_clips(path, [Segment(0.0, 1.0)], tmp_path / "clips")
    assert probe(tmp_path / "clips" / clip.path).width == spec.display_size[0]


def test_an_mp4_without_its_index_is_named_unfinished(tmp_path: Path) -> None:
    """Regression: an MP4 whose index ('moov' box) never came (a recording stopped by a
    crash or a pulled battery: the recorder writes it last) or was cut off (a download
    that did not finish) failed as "Invalid data found when processing input"; the line
    now says what the file is. Other undecodable files keep FFmpeg's reason."""
    whole = encode_with_ffmpeg(tmp_path / "whole.mp4", 50, "25", ["-c:v", "libx264"])
    data = whole.read_bytes()
    boxes, at = {}, 0
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        boxes[data[at + 4 : at + 8].decode()] = data[at : at + length]
        at += length
    assert list(boxes) == ["ftyp", "free", "mdat", "moov"]  # FFmpeg's plain MP4
    # what a killed recorder leaves: the pictures, their box's length never written
    killed = tmp_path / "killed.mp4"
    killed.write_bytes(boxes["ftyp"] + b"\0\0\0\0mdat" + boxes["mdat"][8:])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: -len(boxes["moov"]) // 2])
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(b"not a video" * 100)
    with pytest.raises(
        VideoError,
        match=r"killed\.mp4: not a decodable video \(an MP4 without "
        r"its index \('moov' box, written last\): a recording never finished",
    ):
        VideoReader(killed)
    with pytest.raises(
        VideoError,
        match=r"cut\.mp4: not a decodable video \(an MP4 cut off in "
        r"its index \('moov' box\): a copy or download that did not finish\)$",
    ):
        VideoReader(cut)
    with pytest.raises(
        VideoError,
        match=r"noise\.mp4: not a decodable video \(FFmpeg cannot "
        r"open it: Invalid data found when processing input\)$",
    ):
        VideoReader(noise)


@pytest.mark.skipif(not ffmpeg_has_encoder("libwebp_anim"), reason="needs libwebp_anim")
def test_an_animated_webp_says_what_it_is(tmp_path: Path) -> None:
    """Regression: an animated WebP (a sticker or meme in a scraped folder) failed as "no
    decodable frames": PyAV's FFmpeg reads it as a still-image sequence and decodes none of
    its frames. The line now names it and how to convert it; a still WebP is one frame."""
    animated = encode_with_ffmpeg(tmp_path / "moving.webp", 10, "10", ["-c:v", "libwebp_anim"])
    still = encode_with_ffmpeg(tmp_path / "still.webp", 1, "10", ["-c:v", "libwebp"])
    with pytest.raises(VideoError, match=r"moving\.webp: an animated WebP, .*ffmpeg -i IN\.webp"):
        read(animated, SamplingSettings(every_n=1))
    # Regression: the hint's one command, ffmpeg's, fails on FFmpeg 5–8; Pillow's works
    import subprocess
    import sys

    from vidcap.container import WEBP_CONVERT

    code = WEBP_CONVERT.replace("IN.webp", str(animated)).replace(
        "OUT.gif", str(tmp_path / "o.gif")
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert len(read(tmp_path / "o.gif", SamplingSettings(every_n=1))) == 10
    [frame] = read(still, SamplingSettings(every_n=1))
    assert frame.rgb.shape == (96, 128, 3)
    noise = tmp_path / "noise.webp"  # the same header, cut short: no word about animation
    noise.write_bytes(animated.read_bytes()[:16])
    with pytest.raises(VideoError) as failed:
        read(noise, SamplingSettings(every_n=1))
    assert str(failed.value).endswith("noise.webp: no decodable frames")


@pytest.mark.parametrize(
    ("edits", "shown"),
    [
        ([(0.0, 1.0), (2.0, 1.0)], [*range(10), *range(20, 30)]),  # a cut in the middle
        ([(0.0, 2.5)], list(range(25))),  # the end trimmed
    ],
)
def test_an_edit_list_that_cuts_the_media_loses_nothing(
    tmp_path: Path, caplog, edits: list, shown: list[int]
) -> None:
    """Regression: an MP4 whose edit list shows less than its track holds (a trim, or a
    cut made without re-encoding, as QuickTime and phones' editors save them) was said to
    have lost the frames it does not show ("18 of 38 frames could not be decoded") and
    marked damaged. The frames shown are those FFmpeg shows, at its times, in every mode;
    nothing is lost; a truncated MP4 is still found out."""
    import logging

    args = ["-c:v", "libx264", "-bf", "0", "-g", "10"]  # (a keyframe a second)
    whole = encode_with_ffmpeg(tmp_path / "whole.mp4", 40, "10", args)
    edited = with_edit_list(whole, tmp_path / "edited.mp4", edits)
    times = [round(0.1 * i, 6) for i in range(len(shown))]
    for mode in ("exact", "all"):
        with caplog.at_level(logging.WARNING, logger="vidcap"):
            caplog.clear()
            with VideoReader(edited) as reader:
                frames = list(reader.frames(SamplingSettings(every_n=1, mode=mode)))
                lost = reader.stats.lost_frames
        assert [round(f.time, 6) for f in frames] == times
        assert [frame_number(f.rgb) for f in frames] == shown
        assert lost == 0 and not caplog.records
    if FFPROBE:
        assert [round(t, 6) for t, _ in ffprobe_frames(edited)] == times
    cut = tmp_path / "cut.mp4"  # (the index first, the pictures cut off: still counted)
    faststart = encode_with_ffmpeg(
        tmp_path / "fast.mp4", 40, "10", ["-c:v", "libx264", "-movflags", "+faststart"]
    )
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    with VideoReader(cut) as reader:
        list(reader.frames(SamplingSettings(every_n=1, mode="all")))
        assert reader.stats.lost_frames > 10


def test_keyframes_of_an_edit_list_that_cuts_the_media_end_where_it_ends(tmp_path: Path) -> None:
    """Regression: ``--keyframes`` counted the packets an edit list hides (a cut in the
    middle: media 0-1 s and 2-3 s shown) towards the video's end, where every other mode
    does not: its duration (the last cue's end, ``summary.json``) was 3.0 s, not 2.0."""
    args = ["-c:v", "libx264", "-bf", "0", "-g", "10"]  # (a keyframe a second)
    whole = encode_with_ffmpeg(tmp_path / "whole.mp4", 40, "10", args)
    edited = with_edit_list(whole, tmp_path / "edited.mp4", [(0.0, 1.0), (2.0, 1.0)])
    ends = {}
    for name, sampling in MORE_MODES.items():
        with VideoReader(edited) as reader:
            list(reader.frames(sampling))
            ends[name] = round(reader.stats.duration, 6)
    assert ends == dict.fromkeys(MORE_MODES, 2.0)


def _fragments_shifted(source: Path, path: Path, seconds: float) -> Path:
    """``source`` (a fragmented MP4) with every fragment's start (``tfdt``) ``seconds``
    later, as a live recording joined after its start holds them."""
    import struct

    data = bytearray(source.read_bytes())
    scales: dict[int, int] = {}
    track = 0

    def walk(start: int, end: int) -> None:
        nonlocal track
        at = start
        while at + 8 <= end:
            size, kind = struct.unpack(">I4s", data[at : at + 8])
            version = data[at + 8]
            if kind in (b"moov", b"trak", b"mdia", b"moof", b"traf"):
                walk(at + 8, at + size)
            elif kind == b"tkhd":
                track = struct.unpack_from(">I", data, at + (20 if version == 0 else 28))[0]
            elif kind == b"mdhd":
                scales[track] = struct.unpack_from(">I", data, at + (20 if version == 0 else 28))[0]
            elif kind == b"tfhd":
                track = struct.unpack_from(">I", data, at + 12)[0]
            elif kind == b"tfdt":
                form = ">Q" if version == 1 else ">I"
                base = struct.unpack_from(form, data, at + 12)[0]
                struct.pack_into(form, data, at + 12, base + round(seconds * scales[track]))
            at += size

    walk(0, len(data))
    path.write_bytes(bytes(data))
    return path


def test_a_fragmented_mp4_that_starts_late_has_lost_nothing(tmp_path: Path, caplog) -> None:
    """Regression: a fragmented MP4 whose first fragment starts at 100 s (a live stream
    recorded from the middle, DASH/CMAF segments joined) was said to have lost 2500 of its
    "2600" frames, and its duration would have run to 204 s where its sound ends: FFmpeg's
    duration for a fragmented track is where it ends (104 s), not a length from its first
    frame, and it was added to that first frame's 100 s."""
    args = [
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
        "-c:v", "libx264", "-g", "10", "-bf", "0", "-c:a", "aac",
        "-movflags", "frag_keyframe+empty_moov+default_base_moof",
    ]  # fmt: skip
    fragmented = encode_with_ffmpeg(tmp_path / "fragmented.mp4", 40, "10", args)
    late = _fragments_shifted(fragmented, tmp_path / "late.mp4", 100.0)
    truth = probe_frames(late)
    assert truth[0][0] == pytest.approx(100.0, abs=1e-6)  # (the delay is kept, as ffprobe's)
    for sampling in (MORE_MODES["exact-fps1"], MORE_MODES["all-fps1"], MORE_MODES["keyframes"]):
        with caplog.at_level(logging.WARNING, logger="vidcap"):
            caplog.clear()
            reader = assert_samples(late, truth, sampling)
        assert reader.stats.lost_frames == 0 and not caplog.records
        assert reader.stats.duration == pytest.approx(truth[-1][0] + 0.1, abs=1e-3)


def test_a_song_with_artwork_is_no_video(tmp_path: Path) -> None:
    """Regression: an MP4 of sound whose one picture is its cover (a song, a podcast with
    artwork, in a folder of videos) was captioned as a one-frame video and warned that
    269,999 of its 270,000 frames "could not be decoded". It is no video: one clear line,
    from decoding, probing and clips alike."""
    import subprocess

    import cv2
    import imageio_ffmpeg

    from vidcap.clips import export_clips
    from vidcap.ffmpeg import probe
    from vidcap.mask import Segment

    cover = tmp_path / "cover.jpg"
    cv2.imwrite(str(cover), np.full((64, 64, 3), (0, 0, 255), np.uint8))
    song = tmp_path / "song.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=3",
         "-i", str(cover), "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "copy",
         "-disposition:v", "attached_pic", str(song)],
        check=True,
    )  # fmt: skip
    with av.open(str(song)) as container:
        [picture] = container.streams.video  # the cover: FFmpeg sees one video stream
        assert int(picture.disposition) & 0x400  # AV_DISPOSITION_ATTACHED_PIC
    message = rf"^{song}: no video stream, only a cover picture \(audio with artwork\)$"
    with pytest.raises(VideoError, match=message):
        VideoReader(song)
    with pytest.raises(VideoError, match=message):
        probe(song)
    with pytest.raises(VideoError, match=message):
        export_clips(song, [Segment(0.0, 1.0)], tmp_path / "clips")


def test_keyframes_of_a_cut_that_shows_no_keyframe_take_its_first_frame(tmp_path: Path) -> None:
    """Regression: ``--keyframes`` on a stream copy cut between two keyframes (its MP4 edit
    list hides the keyframe it starts from, so no frame shown is one) failed the video with
    "no decodable frames"; its first frame now stands for the keyframes it lacks, and the
    video still ends where its last frame does (it ended after the first)."""
    import subprocess

    import imageio_ffmpeg

    whole = encode_with_ffmpeg(
        tmp_path / "one-gop.mp4", 90, "30", ["-c:v", "libx264", "-g", "250", "-bf", "2"]
    )
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-ss", "1.5", "-i", str(whole),
         "-c", "copy", str(cut)],
        check=True,
    )  # fmt: skip
    if FFPROBE:
        assert not any(key for _, key in ffprobe_frames(cut))  # no keyframe is shown
    every = read(cut, SamplingSettings(every_n=1, mode="all"))
    with VideoReader(cut) as reader:
        assert reader.estimated_samples(SamplingSettings(keyframes=True)) == 1
        [first] = list(reader.frames(SamplingSettings(keyframes=True)))
    assert (first.index, first.time) == (every[0].index, every[0].time) == (0, 0.0)
    assert np.array_equal(first.rgb, every[0].rgb)
    assert frame_number(first.rgb) == frame_number(every[0].rgb) > 0  # not the hidden keyframe
    # The video lasts as long as in any mode (it ended one frame in: summary.json's duration
    # and the one cue 0.033 s long, where the clip lasts 1.5 s)
    from vidcap.decode import Ended, decode_events

    for sampling in (SamplingSettings(keyframes=True), SamplingSettings(fps=1.0)):
        [ended] = [
            event
            for event in decode_events(0, str(cut), sampling, (32, 32), digest=False)
            if isinstance(event, Ended)
        ]
        assert ended.duration == pytest.approx(every[-1].time + 1 / 30, abs=1e-3), sampling


@pytest.mark.parametrize(
    ("suffix", "codec", "rate"),
    [(".h264", "libx264", "30"), (".hevc", "libx265", "24000/1001"), (".m2v", "mpeg2video", "60")],
)
def test_a_raw_elementary_stream_is_timed_by_its_codec(
    tmp_path: Path, suffix: str, codec: str, rate: str
) -> None:
    """Regression: a raw stream (no container, no timestamps) was timed at the 25 fps its
    demuxer assumes, not at the rate its codec states (30 fps H.264: 8 s read as 9.6 s)."""
    extra = ["-x265-params", "log-level=error"] if codec == "libx265" else []
    path = encode_with_ffmpeg(tmp_path / f"raw{suffix}", 48, rate, ["-c:v", codec, *extra])
    step = 1 / float(Fraction(rate))
    with VideoReader(path) as reader:
        times = [f.time for f in reader.frames(SamplingSettings(every_n=1))]
    # (MPEG-2's parser times the first frame one interval in, as ffprobe shows it)
    assert times == pytest.approx([times[0] + i * step for i in range(48)], abs=1e-6)
    assert times[0] in (0.0, pytest.approx(step))
    assert reader.stats.duration == pytest.approx(times[-1] + step, abs=1e-3)
    if FFPROBE:
        assert [t for t, _ in ffprobe_frames(path)] == pytest.approx(times, abs=1e-4)


def test_a_timestamp_reset_in_mpeg_ts_continues_the_timeline(tmp_path: Path, caplog) -> None:
    """Regression: two MPEG-TS recordings joined byte for byte (``cat a.ts b.ts``: the
    second's clock starts again, as after a reset in a broadcast recording) kept the first
    part only: the second's frames, earlier in time, were dropped as "out of order". As the
    ffmpeg command does for MPEG-TS/PS, the timeline goes on one frame after the reset."""
    first = VideoSpec("a", "libx264", ".ts", constant_rate(30, Fraction(10)), size=(120, 160))
    second = VideoSpec("b", "libx264", ".ts", constant_rate(20, Fraction(10)), size=(90, 160))
    joined = tmp_path / "joined.ts"
    parts = [write_video(tmp_path / "a.ts", first), write_video(tmp_path / "b.ts", second)]
    joined.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        every = read(joined, SamplingSettings(every_n=1))
        sampled = read(joined, SamplingSettings(fps=1.0))
        keyframes = read(joined, SamplingSettings(keyframes=True))
    assert not [r for r in caplog.records if "could not be" in r.getMessage()]
    assert [f.time for f in every] == pytest.approx([i / 10 for i in range(50)], abs=1e-6)
    assert [f.index for f in every] == list(range(50))
    assert [f.rgb.shape[:2] for f in (every[29], every[30])] == [(120, 160), (90, 160)]
    assert [f.time for f in sampled] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1e-6)
    expected = [t for t, key in probe_frames(parts[0]) if key]
    expected += [3.0 + t for t, key in probe_frames(parts[1]) if key]
    assert [f.time for f in keyframes] == pytest.approx(expected, abs=1e-6)
    with VideoReader(joined) as reader:
        list(reader.frames(SamplingSettings(fps=1.0)))
    assert reader.stats.duration == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("offset", [3, 50], ids=["3s-earlier", "50s-earlier"])
@pytest.mark.parametrize("mode", ["exact", "all"])
def test_a_reset_to_a_clock_before_the_files_start_continues_the_timeline(
    tmp_path: Path, caplog, offset: int, mode: str
) -> None:
    """Regression: where the second recording's clock starts before the first's start (its
    times negative from the file's start), the demux pass found the reset at 0 s, clamped,
    and the decode pass matched no frame to it within 2 s: 50 s before, every frame of the
    second was dropped as "could not be decoded"; 3 s before, the frame 2 s before was taken
    as the reset and every sample after the join showed the picture 29 frames on."""
    args = ["-c:v", "libx264", "-bf", "2", "-g", "10", "-f", "mpegts"]
    first = encode_with_ffmpeg(
        tmp_path / "a.ts", 30, "10", [*args, "-output_ts_offset", str(offset)]
    )
    second = encode_with_ffmpeg(tmp_path / "b.ts", 40, "10", args, first=30)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        every = read(joined, SamplingSettings(every_n=1, mode=mode))
        sampled = read(joined, SamplingSettings(fps=1.0, mode=mode))
    assert not [r for r in caplog.records if "could not be" in r.getMessage()]
    assert [frame_number(f.rgb) for f in every] == list(range(70))
    assert [f.time for f in every] == pytest.approx([i / 10 for i in range(70)], abs=1e-6)
    assert [frame_number(f.rgb) for f in sampled] == list(range(0, 70, 10))


SPLICES = {  # the second part's clock, from the first's start (the first is 3 s long)
    "97s-ahead": (100.0, True),  # a jump over the ffmpeg command's 10 s: closed
    "5s-ahead": (8.0, False),  # a gap under it: kept, as the ffmpeg command keeps it
    "0.4s-back": (2.6, True),  # back by more than 0.1 s: the clock started again
    "0.9s-back": (2.1, True),
}


@pytest.mark.parametrize("mode", ["exact", "all"])
@pytest.mark.parametrize("muxer", ["mpegts", "vob"])
@pytest.mark.parametrize("splice", SPLICES.values(), ids=SPLICES.keys())
def test_a_splice_in_mpeg_ts_or_ps_goes_on_as_the_ffmpeg_command_goes_on(
    tmp_path: Path, caplog, splice: tuple[float, bool], muxer: str, mode: str
) -> None:
    """Regression: two recordings joined byte for byte whose clocks do not meet (HLS
    segments across a discontinuity, a splice in a broadcast) were taken as a reset only
    where the second clock went back more than 1 s. Ahead by 97 s, the second part's
    frames were timed 97 s late (an SRT cue held over the gap, the duration 103 s for 6 s
    of video), with no warning; back by 0.4 s in MPEG-TS, frames of the two parts came out
    interleaved and 6 were dropped as "could not be decoded"; back by 0.9 s in MPEG-PS,
    exact mode sampled frames 99, 124, 149 where decoding every frame sampled 80, 105, 130.
    Now the clock starts again, as the ffmpeg command has it, where it goes back over 0.1 s
    or ahead over 10 s (its ``-dts_delta_threshold``); a smaller jump ahead is a gap."""
    offset, closed = splice
    args = ["-c:v", "mpeg2video", "-bf", "2", "-g", "10", "-f", muxer]
    suffix = ".ts" if muxer == "mpegts" else ".mpg"
    first = encode_with_ffmpeg(tmp_path / f"a{suffix}", 30, "10", args)
    second = encode_with_ffmpeg(
        tmp_path / f"b{suffix}", 30, "10", [*args, "-output_ts_offset", str(offset)], first=30
    )
    joined = tmp_path / f"joined{suffix}"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        every = read(joined, SamplingSettings(every_n=1, mode=mode))
        sampled = read(joined, SamplingSettings(fps=1.0, mode=mode))
    assert not caplog.records, caplog.text
    numbers = [frame_number(f.rgb) for f in every]
    if closed:
        expected = [i / 10 for i in range(60)]
        assert numbers == list(range(60))
    else:  # a gap kept: the file's own times, as ffprobe lists them (MPEG-PS's decoder, and
        expected = probe_times(joined)  # ffprobe's, lose the first part's last frame there)
        gap = max(b - a for a, b in itertools.pairwise(expected))
        assert numbers == sorted(numbers) and 4.5 < gap < 5.5
    assert [f.time for f in every] == pytest.approx(expected, abs=1e-6)
    ticks = range(math.floor(expected[-1]) + 1)  # --fps 1: the first frame at or after each
    wanted = sorted({next(i for i, t in enumerate(expected) if t >= s - 1e-6) for s in ticks})
    assert [f.index for f in sampled] == wanted
    assert [frame_number(f.rgb) for f in sampled] == [numbers[i] for i in wanted]
    keyframes = read(joined, SamplingSettings(keyframes=True))  # (the second part's first too)
    shown = {f.index: (round(f.time, 6), numbers[i]) for i, f in enumerate(every)}
    got = {f.index: (round(f.time, 6), frame_number(f.rgb)) for f in keyframes}
    assert got == {index: shown[index] for index in got} and 30 in [n for _, n in got.values()]
    with VideoReader(joined) as reader:
        list(reader.frames(SamplingSettings(fps=1.0, mode=mode)))
    assert reader.stats.duration == pytest.approx(expected[-1] + 0.1, abs=1e-6)


MID_GOP = {
    "h264": ["-c:v", "libx264", "-bf", "2", "-g", "30"],
    "h264-open-gop": ["-c:v", "libx264", "-bf", "3", "-g", "30", "-x264-params", "open-gop=1"],
    "hevc": ["-c:v", "libx265", "-bf", "4", "-g", "30", "-x265-params", "log-level=error"],
    "mpeg2": ["-c:v", "mpeg2video", "-bf", "2", "-g", "30"],
}


@pytest.mark.parametrize("args", MID_GOP.values(), ids=MID_GOP.keys())
@pytest.mark.heavy
def test_an_mpeg_ts_cut_mid_gop_is_sampled_once_and_numbered_as_ffprobe_lists_it(
    tmp_path: Path, caplog, args: list[str]
) -> None:
    """Regression: an MPEG-TS recording that starts mid-GOP (a broadcast capture, a ``dd``
    cut) holds packets shown before its first keyframe that decode to nothing. The demux
    pass planned them as frames: exact mode's plan broke at 0 s and the video was decoded
    again, every frame, twice (2-4 times the work of skipping), and ``--keyframes``
    numbered its frames past those packets (5, 69, … where ffprobe lists 0, 64, …). And
    ``--keyframes`` in an open GOP (cut or not) decoded every frame again."""
    if "libx265" in args and not ffmpeg_has_encoder("libx265"):
        pytest.skip("this ffmpeg has no libx265")
    whole = encode_with_ffmpeg(tmp_path / "whole.ts", 150, "30", [*args, "-f", "mpegts"])
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) // 188 // 7 * 188 :])  # a seventh in: mid-GOP
    truth = probe_frames(cut)  # (ffprobe 5.1's HEVC decoder shows 8 more: not PyAV's)
    with VideoReader(cut) as reader:
        every = [
            (f.index, round(f.time, 6), frame_number(f.rgb))
            for f in reader.frames(SamplingSettings(every_n=1))
        ]
    assert len(every) == len(truth) < 140  # (the packets before the first keyframe: no frame)
    assert [t for _, t, _ in every] == pytest.approx([t for t, _ in truth], abs=1e-4)
    for sampling in (
        SamplingSettings(fps=1.0),
        SamplingSettings(every_n=7),
        SamplingSettings(keyframes=True),
    ):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="vidcap.video"):
            got = [(f.index, round(f.time, 6), frame_number(f.rgb)) for f in read(cut, sampling)]
        assert got == [
            (f.index, round(f.time, 6), frame_number(f.rgb))
            for f in read(cut, replace(sampling, mode="all"))
        ], sampling
        assert set(got) <= set(every), sampling
        # (--keyframes in an open GOP: the decoder held the keyframes back and flagged damage
        # until it was drained at each jump, so every frame was decoded again)
        assert not [r for r in caplog.records if "decoding it again" in r.getMessage()]


def test_a_decoder_that_shows_frames_before_the_first_keyframe_is_followed(
    tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a decoder does show pictures predicted from frames the file does not hold
    (MPEG-4 Part 2's, damaged), a plan that left them out is not kept: the frames the
    decoder gives are sampled, as when every frame is decoded."""
    whole = encode_with_ffmpeg(
        tmp_path / "whole.ts", 150, "30", ["-c:v", "mpeg4", "-bf", "2", "-g", "30", "-f", "mpegts"]
    )
    data = whole.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[len(data) // 188 // 7 * 188 :])
    monkeypatch.setattr(container, "DROPS_UNREFERENCED", frozenset({"mpeg4"}))
    with av.open(str(cut)) as opened:  # (times from the file's start, as the reader's)
        start = opened.start_time / 1_000_000
    first_key = demux_times(cut, start).unshown_before  # (the plan leaves them out)
    assert first_key
    sampling = SamplingSettings(fps=3.0)
    with caplog.at_level(logging.INFO, logger="vidcap.video"):
        got = [(f.index, round(f.time, 6)) for f in read(cut, sampling)]
    assert "before the first keyframe" in caplog.text
    expected = [(f.index, round(f.time, 6)) for f in read(cut, replace(sampling, mode="all"))]
    assert got == expected and got[0][1] < first_key


def pes_timestamp(marker: int, ticks: int) -> bytes:
    """A PES header's 5-byte PTS/DTS field (``marker``: 0b0010, 0b0011 or 0b0001)."""
    return bytes(
        [
            (marker << 4) | ((ticks >> 29) & 0x0E) | 1,
            (ticks >> 22) & 0xFF,
            ((ticks >> 14) & 0xFE) | 1,
            (ticks >> 7) & 0xFF,
            ((ticks << 1) & 0xFE) | 1,
        ]
    )


def retime_video_pes(data: bytearray, which: int, ticks: int) -> None:
    """Write ``ticks`` (90 kHz) into the PTS (and DTS) of the ``which``-th video PES of an
    MPEG-TS: a timestamp damaged in transmission (PES headers carry no checksum)."""
    found = 0
    for start in range(0, len(data) - 188 + 1, 188):
        packet = data[start : start + 188]
        if packet[0] != 0x47 or not packet[1] & 0x40:  # sync byte; payload unit start
            continue
        payload = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)  # past any adaptation field
        if packet[payload : payload + 4] != b"\x00\x00\x01\xe0":
            continue
        if found == which:
            flags = packet[payload + 7] >> 6
            field = start + payload + 9
            data[field : field + 5] = pes_timestamp(0b0011 if flags == 3 else 0b0010, ticks)
            if flags == 3:
                data[field + 5 : field + 10] = pes_timestamp(0b0001, ticks)
            return
        found += 1
    raise AssertionError(f"no video PES number {which}")


@pytest.mark.parametrize("ahead", [False, True], ids=["back", "7s-ahead"])
def test_one_damaged_timestamp_in_mpeg_ts_is_no_reset(tmp_path: Path, caplog, ahead: bool) -> None:
    """A lone packet timed far back (a damaged PES timestamp) is not the clock starting
    again: the frames after it keep their times (only a reset the next packet confirms
    moves the timeline on). Regression: one timed 7 s ahead (within the 10 s a gap may be)
    was taken as the clock's, the packets after it as a reset back, and every frame after
    it was timed 7 s late; now the clock follows a packet ahead only where the next does."""
    spec = VideoSpec("a", "libx264", ".ts", constant_rate(40, Fraction(10)), size=(120, 160))
    path = write_video(tmp_path / "a.ts", spec)
    with av.open(str(path)) as opened:
        start = opened.streams.video[0].start_time  # (90 kHz ticks)
    data = bytearray(path.read_bytes())
    # frame 30 (3.0 s after the start) at the start, or 10 s after it
    retime_video_pes(data, 30, start + 90_000 * 10 if ahead else 0)
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="vidcap.video"):
        frames = read(damaged, SamplingSettings(every_n=1, mode="all"))
    assert not [r for r in caplog.records if "clock starts again" in r.getMessage()]
    times = [f.time for f in frames]
    kept = [t for t in times if t < 3.95]  # (ahead: the damaged frame at its own time, last)
    assert times == sorted(times) and kept[-1] == pytest.approx(3.9, abs=1e-6)
    assert len(kept) >= 38  # the damaged frame (and at most one beside it) lost, no more
    assert {round(t * 10) for t in kept} <= set(range(40))
    assert all(abs(t * 10 - round(t * 10)) < 1e-6 for t in kept)
    assert len(times) - len(kept) <= ahead


KEYFRAMES = SamplingSettings(keyframes=True)


@pytest.mark.heavy
def test_frames_after_concealed_damage_are_marked_until_the_next_clean_keyframe(
    tmp_path: Path, caplog
) -> None:
    """Regression: frames that decoded with errors the decoder concealed (FFmpeg's corrupt
    flag), and the frames after them that predict from them, were captioned as clean with
    no warning. Now each sample says whether its picture may show damage: a corrupt frame,
    and after a corrupt I- or P-frame (or one lost) every frame to the next clean keyframe.
    The same in every mode. The damage is searched for (a few tried) so that it is
    concealed, with no packet failing outright."""
    found = concealed_damage(tmp_path / "damaged.mp4")
    if found is None:
        pytest.skip("no damage tried was concealed without a packet failing")
    damaged, truth = found
    expected, tainted = [], False
    for _, corrupt, key, b_frame in truth:
        if corrupt and not b_frame:
            tainted = True
        elif key and not corrupt:
            tainted = False
        expected.append(tainted or corrupt)
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        every = read(damaged, SamplingSettings(every_n=1, mode="all"))
    [warning] = [r.getMessage() for r in caplog.records if "concealed" in r.getMessage()]
    corrupt = sum(f[1] for f in truth)
    assert f"{corrupt} {'frame' if corrupt == 1 else 'frames'} decoded with errors" in warning
    assert [f.damaged for f in every] == expected
    assert 0 < sum(expected) < len(expected)
    by_index = {f.index: f.damaged for f in every}
    for sampling in (SamplingSettings(fps=2.0), SamplingSettings(every_n=1), KEYFRAMES):
        for frame in read(damaged, sampling):  # exact, skipping what it can, agrees
            assert frame.damaged == by_index[frame.index], (sampling, frame.index)
    clean = tmp_path / "clean-damaged.mp4"
    assert not any(f.damaged for f in read(clean, SamplingSettings(every_n=1)))


@pytest.mark.parametrize(
    ("suffix", "rate", "args"),
    [
        (".mkv", "30", ["-c:v", "libx264", "-preset", "ultrafast"]),  # milliseconds
        (".webm", "30", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]),
        (".mov", "30000/1001", ["-c:v", "libx264", "-video_track_timescale", "600"]),
        (".avi", "30000/1001", ["-c:v", "mpeg4"]),  # a clock that counts frames: exact
    ],
)
def test_fps_ticks_meet_frames_their_container_stamped_just_before(
    tmp_path: Path, suffix: str, rate: str, args: list[str]
) -> None:
    """Regression: a container that stamps times on a coarse clock rounds each frame's
    time to it — Matroska and WebM count milliseconds, so 30 fps frame 10, due at
    333.33 ms, is stamped 333 — and ``--fps 3`` took it as before the tick at 333.33: it
    sampled frames 0, 11, 20, 30, 41…, and ``--fps 30`` lost a third of the frames (80 of
    120). A frame within half a step of the container's clock before a tick is at it."""
    source = encode_with_ffmpeg(tmp_path / f"v{suffix}", 60, rate, args)
    native = float(Fraction(rate))
    for fps, step in ((native, 1), (native / 10, 10), (native / 3, 3), (native / 7, 7)):
        for mode in ("exact", "all"):
            sampling = SamplingSettings(fps=fps, mode=mode)
            with VideoReader(source) as reader:
                estimated = reader.estimated_samples(sampling)
                got = [frame_number(f.rgb) for f in reader.frames(sampling)]
            assert got == list(range(0, 60, step)), (fps, mode, got)
            assert estimated == len(got), (fps, mode)


def test_frames_a_broken_join_stamps_with_one_time_are_warned_of(tmp_path: Path, caplog) -> None:
    """Regression: two MPEG-TS recordings joined with ``-copyts -c copy`` into Matroska (the
    muxer clamps the second one's timestamps, going back, to the last time it wrote) gave
    some 50 frames one time each, 3.36 s, and vidcap wrote 50 samples at 3.36 s without a
    word. The timeline cannot be had back; it now says so, once. A clean join: no word."""
    import subprocess

    parts = []
    for name, source in (("a", "testsrc2"), ("b", "testsrc")):
        parts.append(tmp_path / f"{name}.ts")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"{source}=size=96x64:rate=25:duration=2",
             "-c:v", "libx264", "-f", "mpegts", str(parts[-1])],
            check=True,
        )  # fmt: skip
    joined = f"concat:{parts[0]}|{parts[1]}"
    for copyts, name in ((["-copyts"], "broken.mkv"), ([], "clean.mkv")):
        subprocess.run(
            ["ffmpeg", "-v", "quiet", *copyts, "-i", joined, "-c", "copy", str(tmp_path / name)],
            check=True,
        )  # fmt: skip
    times = probe_times(tmp_path / "broken.mkv")
    if len(set(times)) > len(times) - 10:
        pytest.skip("this FFmpeg's muxer left the joined timestamps apart")
    for name, warned in (("broken.mkv", True), ("clean.mkv", False)):
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="vidcap"),
            VideoReader(tmp_path / name) as reader,
        ):
            frames = list(reader.frames(SamplingSettings(every_n=1)))
        said = [
            r.getMessage() for r in caplog.records if "time of the frame before" in r.getMessage()
        ]
        assert len(frames) == 100
        if not warned:
            assert said == []
            continue
        shared = len(times) - len(set(times))  # (ffprobe's times: the same shared ones)
        [line] = said
        assert line.startswith(f"{tmp_path / name}: {shared} frames have the time of the frame ")
        assert line.endswith(
            "its timeline is lost there (a badly joined or damaged file), and samples there "
            "share those times"
        )
