"""MP4/MOV edit lists of several entries (an empty first edit, two parts of the media joined,
as editors and QuickTime save an edit made without re-encoding): every mode gives the frames
FFmpeg shows, numbered as it numbers them, and warns only of what is really lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.videos import (
    FFPROBE,
    encode_with_ffmpeg,
    ffmpeg_has_encoder,
    ffprobe_frames,
    frame_number,
    with_edit_list,
)
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

MODES = {
    "exact-fps1": SamplingSettings(fps=1.0),
    "all-fps1": SamplingSettings(fps=1.0, mode="all"),
    "exact-fps3": SamplingSettings(fps=3.0),
    "every-n-7": SamplingSettings(every_n=7, fps=None),
    "keyframes": SamplingSettings(keyframes=True),
    "every-n-1": SamplingSettings(every_n=1, fps=None),
}


def _every_mode(path: Path, caplog) -> tuple[list[tuple[int, float, int, bool]], dict]:
    """Every frame as ``decoded_frames`` gives it (index, time, number, keyframe), and per
    mode: its samples, duration, lost frames and warnings."""
    with VideoReader(path) as reader:
        every = [
            (f.index, round(f.time, 6), frame_number(f.shown().rgb), bool(f.av_frame.key_frame))
            for f in reader.decoded_frames()
        ]
    runs = {}
    for name, sampling in MODES.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vidcap"), VideoReader(path) as reader:
            got = [
                (f.index, round(f.time, 6), frame_number(f.rgb)) for f in reader.frames(sampling)
            ]
            stats = reader.stats
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        runs[name] = (got, round(stats.duration, 6), stats.lost_frames, warnings)
    return every, runs


def _check_modes_agree(every: list, runs: dict) -> None:
    """Each mode's samples are frames of ``every`` (the same index, time and picture), its
    keyframes are ``every``'s, and every mode ends and counts alike."""
    by_index = {index: (index, time, number) for index, time, number, _ in every}
    for name, (got, _, _, _) in runs.items():
        assert all(by_index.get(sample[0]) == sample for sample in got), (name, got)
    keys = [(i, t, n) for i, t, n, key in every if key]
    assert runs["keyframes"][0] == keys
    assert runs["every-n-1"][0] == [(i, t, n) for i, t, n, _ in every]
    assert len({(duration, lost) for _, duration, lost, _ in runs.values()}) == 1, runs


@pytest.mark.parametrize(
    ("edits", "shown", "start"),
    [
        # a delay, then two parts of the media (the second from mid-GOP)
        ([(None, 0.5), (1.0, 2.0), (3.5, 1.5)], [*range(10, 30), *range(35, 50)], 0.5),
        ([(None, 1.0), (0.0, 5.0)], list(range(50)), 1.0),  # a delay, the end trimmed
        ([(None, 0.5), (1.0, 2.0)], list(range(10, 30)), 0.5),  # a delay, a part of it
    ],
)
def test_an_edit_list_with_a_delay_that_cuts_the_media_loses_nothing(
    tmp_path: Path, caplog, edits: list, shown: list[int], start: float
) -> None:
    """Regression: an MP4 whose edit list starts with an empty edit (a delay) and shows less
    than the media holds was said to have lost frames ("3 of 166 frames could not be
    decoded", "5 of 179" for a trimmed end): the end promised was the delay plus FFmpeg's
    track duration, which there is the edits' sum, the delay already in it. Every mode now
    gives FFmpeg's frames with no warning, numbered as ffprobe numbers them."""
    args = ["-c:v", "libx264", "-bf", "0", "-g", "10", "-sc_threshold", "0"]
    whole = encode_with_ffmpeg(tmp_path / "whole.mp4", 60, "10", args)
    edited = with_edit_list(whole, tmp_path / "edited.mp4", edits)
    every, runs = _every_mode(edited, caplog)
    assert [n for _, _, n, _ in every] == shown
    assert [t for _, t, _, _ in every] == [round(start + 0.1 * i, 6) for i in range(len(shown))]
    _check_modes_agree(every, runs)
    for _, duration, lost, warnings in runs.values():
        assert (duration, lost, warnings) == (round(start + 0.1 * len(shown), 6), 0, [])
    if FFPROBE:
        assert [t for _, t, _, _ in every] == [round(t, 6) for t, _ in ffprobe_frames(edited)]


@pytest.mark.skipif(not ffmpeg_has_encoder("libx265"), reason="needs libx265")
@pytest.mark.parametrize(
    ("x265", "edits"),
    [
        # the second part starts on the keyframe that follows the first part's end: FFmpeg
        # sends that keyframe twice, and its HEVC decoder gives no frame for the second
        ("bframes=0", [(0.0, 1.5), (2.0, 2.0)]),
        # B-frames over the join: FFmpeg 8's decoder loses the second part's first GOP
        ("bframes=3", [(None, 0.1), (0.5, 2.0), (3.0, 2.0)]),
    ],
)
def test_hevc_edits_joined_are_numbered_as_ffmpeg_decodes_them(
    tmp_path: Path, caplog, x265: str, edits: list
) -> None:
    """Regression: in an HEVC MOV whose edit list joins two parts of the media,
    ``--keyframes`` numbered the second part's keyframe one higher than ffprobe (it ranked
    frames by packets, and FFmpeg's decoder gives no frame for one of them), and the frames
    lost at the join were said to be a corrupt or truncated stream. Every mode now decodes
    such a file whole and gives the same frames; one warning names the join."""
    params = f"log-level=error:keyint=10:min-keyint=10:scenecut=0:{x265}"
    args = ["-c:v", "libx265", "-x265-params", params, "-tag:v", "hvc1", "-pix_fmt", "yuv420p"]
    whole = encode_with_ffmpeg(tmp_path / "whole.mov", 60, "10", args)
    edited = with_edit_list(whole, tmp_path / "edited.mov", edits)
    every, runs = _every_mode(edited, caplog)
    _check_modes_agree(every, runs)
    _, _, lost, warnings = runs["exact-fps1"]
    # (PyAV's FFmpeg 8 loses frames at both joins; a later FFmpeg that decodes across them
    # loses none, and then nothing is said: the modes agree either way)
    lost_said = [w for w in warnings if "could not be decoded" in w]
    assert len(lost_said) == (1 if lost else 0), warnings
    if lost:
        assert "where its edit list joins 2 parts of its stream" in lost_said[0]
        assert "corrupt" not in lost_said[0]
    if FFPROBE and x265 == "bframes=0":  # (ffprobe 5.1 decodes B-frames there otherwise)
        assert [i for i, _, _, key in every if key] == [
            i for i, (_, key) in enumerate(ffprobe_frames(edited)) if key
        ]
