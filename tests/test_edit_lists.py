"""MP4/MOV edit lists of several entries (an empty first edit, two parts of the media joined,
as editors and QuickTime save an edit made without re-encoding): every mode gives the frames
FFmpeg shows, numbered as it numbers them, and warns only of what is really lost."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from tests.support.cli import run_main
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


# A 4 s picture and 10 s of sound (input 1: the MP4/MOV's second track).
WITH_SOUND = ["-f", "lavfi", "-i", "sine=duration=10", "-c:v", "libx264", "-c:a", "aac"]


def sound_end(path: Path) -> float:
    """Where the ffmpeg command's sound ends (its ``ashowinfo`` filter: the last audio
    frame's time plus its samples): where a player stops holding the last picture."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:a:0",
         "-af", "ashowinfo", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    last = [line for line in result.stderr.splitlines() if "ashowinfo" in line][-1]
    field = {name: re.search(rf"\b{name}:\s*([-\d.e]+)", last).group(1)  # type: ignore[union-attr]
             for name in ("pts_time", "nb_samples", "rate")}  # fmt: skip
    return float(field["pts_time"]) + int(field["nb_samples"]) / int(field["rate"])


def delayed_sound(folder: Path, suffix: str, edits: list) -> Path:
    """100 frames at 25 fps over 10 s of sound whose track has the edit list ``edits``."""
    whole = encode_with_ffmpeg(folder / f"whole{suffix}", 100, "25", WITH_SOUND)
    return with_edit_list(whole, folder / f"edited{suffix}", edits, track=1)


@pytest.mark.parametrize(
    ("suffix", "edits", "end"),
    [
        (".mp4", [(None, 1.0), (0.0, 5.0)], 6.0),  # delayed 1 s, its end trimmed
        (".mov", [(None, 1.0), (2.0, 5.0)], 6.0),  # delayed, a part from 2 s
        (".mp4", [(None, 0.5), (0.0, 2.0), (None, 1.0), (4.0, 3.0)], 6.5),  # two gaps
        # delayed, whole: AAC's priming, which the edit skips, is in FFmpeg's length
        (".mp4", [(None, 1.0), (0.0, 10.0)], 11.0),
    ],
)
def test_a_delayed_sound_holds_the_picture_to_its_edit_lists_end(
    tmp_path: Path, suffix: str, edits: list, end: float
) -> None:
    """Regression: where an MP4/MOV's sound starts late (an empty first edit) and goes on
    after the picture, the video ended where FFmpeg's track start plus its track length
    put it: the delay counted twice where the edit list shows less than the media (7 s
    for a sound delayed 1 s and trimmed to 5 s, which ffmpeg plays to 6 s), and AAC's
    priming counted (11.023 s for 11 s). The end is no later than the edit list's."""
    edited = delayed_sound(tmp_path, suffix, edits)
    assert sound_end(edited) == pytest.approx(end, abs=0.03)  # (AAC frames: 23 ms)
    with VideoReader(edited) as reader:
        frames = list(reader.frames(SamplingSettings(fps=1.0)))
    assert len(frames) == 4 and reader.stats.failed_frames == 0
    assert reader.stats.duration == pytest.approx(end, abs=1e-3)


@pytest.mark.heavy
def test_a_delayed_sounds_end_ends_the_last_cue_and_scene(tmp_path: Path) -> None:
    """The last subtitle cue, the last scene and the summary end where the delayed, trimmed
    sound does (6 s), not a delay later."""
    edited = delayed_sound(tmp_path, ".mp4", [(None, 1.0), (0.0, 5.0)])
    out = tmp_path / "out"
    result = run_main("caption", edited, "--model", "tiny", "--out", out, "--scenes", "--quiet")
    assert result.returncode == 0, result.stderr
    cues = [line for line in (out / "edited.srt").read_text().splitlines() if "-->" in line]
    assert cues[-1].endswith("--> 00:00:06,000"), cues
    scenes = (out / "edited.scenes.jsonl").read_text().splitlines()
    assert json.loads(scenes[-1])["end"] == pytest.approx(6.0, abs=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["duration"] == pytest.approx(6.0, abs=1e-3)


def test_a_fragmented_mp4_whose_edit_lasts_to_the_end_states_its_length(tmp_path: Path) -> None:
    """Round 62 review: a fragmented MP4 whose edit list's one edit has a duration of 0 (the
    media to its end: ``-movflags delay_moov``, CMAF, written before its length is known)
    was read as ending at 0 s, so a ``--max-frames`` run's last cue ran past the video's end
    (3.5 s of video, ``--fps 1 --max-frames 4``: to 4 s, where the header says 3.5)."""
    import struct

    args = ["-c:v", "libx264", "-bf", "2", "-g", "10", "-movflags", "frag_keyframe+delay_moov"]
    path = encode_with_ffmpeg(tmp_path / "frag.mp4", 35, "10", args)
    data = bytearray(path.read_bytes())
    # (its one entry's duration set to 0 here, whatever a later FFmpeg writes there)
    at = data.index(b"elst") - 4
    version = data[at + 8]
    data[at + 16 : at + (24 if version else 20)] = bytes(8 if version else 4)
    assert struct.unpack(">I", data[at + 12 : at + 16]) == (1,)
    path.write_bytes(data)
    with VideoReader(path) as reader:
        samples = [f.time for f in reader.frames(SamplingSettings(fps=1.0, max_frames=4))]
        assert samples == pytest.approx([0.0, 1.0, 2.0, 3.0])
        assert reader.stated_end() == pytest.approx(3.5)
