"""Where a video's time counts from, and what its header promises, in the containers whose
timestamps start anywhere (MPEG-TS/PS, FLV, NUT) or whose header states one length for
every stream (ASF, FLV), and Theora's duplicate-frame packets — checked against the ffmpeg
command's own timeline, not against vidcap's rule restated."""

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
    cut_off_said,
    encode_with_ffmpeg,
    ffprobe_frames,
    frame_number,
    numbered_frame,
)
from vidcap.clips import export_clips
from vidcap.mask import Segment
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

EVERY = SamplingSettings(every_n=1)
LEAD = 0.6  # the sound starts this long before the picture
SOUND = ["-f", "lavfi", "-i", "sine=duration=5", "-map", "0:v", "-map", "1:a"]
DELAYED = ["-vf", f"setpts=PTS+{LEAD}/TB", "-fps_mode", "passthrough"]
# (name, video and audio codec arguments): the sound first, the picture 0.6 s later.
LATE_PICTURES = [
    ("late.ts", ["-c:v", "libx264", "-bf", "2", "-g", "10", "-c:a", "aac"]),
    ("late.mpg", ["-c:v", "mpeg2video", "-g", "10", "-c:a", "mp2", "-f", "vob"]),
    ("late.flv", ["-c:v", "libx264", "-g", "10", "-c:a", "aac"]),
    ("late.nut", ["-c:v", "mpeg4", "-g", "10", "-c:a", "pcm_s16le"]),
]


def ffmpeg_timeline(path: Path) -> list[float]:
    """Each video frame's time as the ffmpeg command sees it when it reads the picture and
    the sound (its ``showinfo`` filter): the timeline a transcode, a burnt-in subtitle and
    a player keep."""
    result = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-map", "0:v:0",
         "-map", "0:a:0", "-vf", "showinfo", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if "showinfo" in line and " n:" in line]
    return [float(re.search(r"pts_time:\s*([-\d.e]+)", line).group(1)) for line in lines]


@pytest.fixture(scope="module")
def late_pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("late")
    return {
        name: encode_with_ffmpeg(folder / name, 50, "25", [*SOUND, *DELAYED, *codecs])
        for name, codecs in LATE_PICTURES
    }


@pytest.mark.parametrize("name", [name for name, _ in LATE_PICTURES])
@pytest.mark.parametrize("mode", ["all", "exact"])
def test_a_picture_that_starts_after_its_sound_keeps_its_delay(
    late_pictures: dict[str, Path], name: str, mode: str
) -> None:
    """Regression: an MPEG-TS/PS, FLV or NUT whose sound starts before its picture (a
    broadcast recording, an RTMP capture) was timed from the picture's first frame, so
    every caption and subtitle ran early by the gap (0.6 s here) against the player and
    against ffmpeg. Times now count from the file's start, as ffmpeg counts."""
    path = late_pictures[name]
    want = ffmpeg_timeline(path)
    assert len(want) == 50 and want[0] == pytest.approx(LEAD, abs=0.03)  # the case exists
    with VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(every_n=1, mode=mode)))
    assert [f.time for f in frames] == pytest.approx(want, abs=1e-5)
    assert [frame_number(f.rgb) for f in frames] == list(range(50))
    assert reader.stats.duration == pytest.approx(want[-1] + 0.04, abs=1e-5)
    assert reader.stats.failed_frames == 0
    with VideoReader(path) as reader:  # sampled: the first tick's frame is the first frame
        ticks = [(f.index, f.time) for f in reader.frames(SamplingSettings(fps=1.0, mode=mode))]
    assert [i for i, _ in ticks] == [0, 10, 35]


@pytest.mark.parametrize("precise", [False, True])
def test_clips_of_a_late_picture_hold_the_frames_timed_there(
    late_pictures: dict[str, Path], tmp_path: Path, precise: bool
) -> None:
    """A clip cut where vidcap timed its frames (as ``vidcap mask`` gives segments: from
    one sampled frame's time to another's) holds those frames: ffmpeg's seek counts from
    the file's start too."""
    path = late_pictures["late.ts"]
    with VideoReader(path) as reader:
        timeline = [(f.time, frame_number(f.rgb)) for f in reader.frames(EVERY)]
    segment = Segment(timeline[10][0], timeline[30][0])  # 1.023 s to 1.823 s
    [clip] = export_clips(path, [segment], tmp_path, precise=precise)
    with VideoReader(tmp_path / clip.path) as reader:
        got = [frame_number(f.rgb) for f in reader.frames(EVERY)]
    assert got[:20] == list(range(10, 30))  # a stream copy may run on to a packet boundary
    assert precise is False or got == list(range(10, 30))


def write_frames(path: Path, numbers: list[int], args: list[str]) -> Path:
    """Encode the ``numbered_frame`` of each of ``numbers`` at 25 fps, repeats included."""
    data = b"".join(numbered_frame(n).tobytes() for n in numbers)
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt",
         "rgb24", "-s", "128x96", "-r", "25", "-i", "-", *args, str(path)],
        input=data, check=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("mode", ["all", "exact"])
def test_theora_duplicate_frames_are_not_damage(tmp_path: Path, caplog, mode: str) -> None:
    """Regression: Theora stores a picture repeated unchanged as an empty packet ("show the
    previous picture again"; ffprobe lists no frame for it). vidcap sent it to the decoder,
    which took it as the end of the stream and failed; each counted as a frame that could
    not be decoded, the video marked damaged (3 of 115 in a clip whose first frame is
    held for 0.6 s). Now skipped, as the ffmpeg command skips it."""
    numbers = [0, 0, 0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 8, 9]
    path = write_frames(tmp_path / "held.ogv", numbers, ["-c:v", "libtheora", "-q:v", "7"])
    truth = ffprobe_frames(path)
    assert len(truth) < len(numbers)  # the repeats are empty packets: the case exists
    with caplog.at_level(logging.WARNING), VideoReader(path) as reader:
        frames = list(reader.frames(SamplingSettings(every_n=1, mode=mode)))
    assert [f.time for f in frames] == pytest.approx([t for t, _ in truth], abs=1e-6)
    shown = [frame_number(f.rgb) for f in frames]
    assert shown == sorted(shown) and set(shown) == set(numbers)
    assert reader.stats.failed_frames == 0 and not any(f.damaged for f in frames)
    assert reader.stats.duration == pytest.approx(len(numbers) / 25, abs=1e-6)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_asf_picture_shorter_than_its_sound_is_whole(tmp_path: Path, caplog) -> None:
    """Regression: ASF states one length, the file's, for every stream (FFmpeg gives each
    stream the file's play duration): a WMV whose sound lasts 1 s longer than its picture
    was warned about as 25 frames "could not be decoded" and its samples marked damaged."""
    path = encode_with_ffmpeg(
        tmp_path / "short.wmv", 50, "25", [*SOUND[:4], "-map", "0:v", "-map", "1:a",
                                           "-c:v", "wmv2", "-c:a", "wmav2"]
    )  # fmt: skip
    with caplog.at_level(logging.WARNING), VideoReader(path) as reader:
        frames = list(reader.frames(EVERY))
    assert len(frames) == 50 and reader.stats.failed_frames == 0
    assert not any(f.damaged for f in frames)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_cut_off_flv_says_how_much_is_missing(tmp_path: Path, caplog) -> None:
    """Regression: an FLV states its length once, for the file (onMetaData, which FFmpeg's
    muxer writes at the end and a cut-off download keeps), none per stream: a download cut
    at half its length lost its second half with, at most, "1 frame could not be
    decoded" (the torn last one)."""
    path = encode_with_ffmpeg(tmp_path / "whole.flv", 100, "25", ["-c:v", "libx264", "-g", "10"])
    with VideoReader(path) as reader:
        assert len(list(reader.frames(EVERY))) == 100 and reader.stats.failed_frames == 0
    cut = tmp_path / "cut.flv"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING), VideoReader(cut) as reader:
        frames = list(reader.frames(EVERY))
    assert 10 < len(frames) < 100
    assert reader.stats.failed_frames == pytest.approx(100 - len(frames), abs=2)
    assert "cut.flv" in caplog.text


@pytest.mark.heavy
def test_an_ogg_file_cut_inside_a_page_warns(tmp_path: Path, caplog) -> None:
    """Regression: a cut-off Ogg download (Theora, as Wikimedia Commons serves video) lost
    its tail with no word: Ogg states no length. A file that ends inside a page is cut off:
    warned in every mode, at least one frame counted lost. A whole file, one with bytes
    after its last page, and a cut on a page boundary (the limit, documented) are not."""
    codecs = ["-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis", "-shortest"]
    whole = write_frames(tmp_path / "whole.ogv", list(range(100)), [*SOUND, *codecs])
    data = whole.read_bytes()
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    boundary = max(p for p in pages if p < len(data) * 6 // 10)
    files = {  # name: is it cut inside a page?
        "whole": (data, False),
        "tagged": (data + b"TAG" + bytes(125), False),
        "cut inside a page": (data[: boundary + 100], True),
        "cut in a page header": (data[: boundary + 20], True),
        "cut on a boundary": (data[:boundary], False),
    }
    for label, (content, cut) in files.items():
        path = tmp_path / f"{label}.ogv"
        path.write_bytes(content)
        for sampling in (SamplingSettings(fps=1.0), EVERY):
            said, lost = cut_off_said(path, sampling, "Ogg page", caplog)
            assert len(said) == int(cut), (label, sampling, said)
            assert (lost >= 1) == cut or label == "cut on a boundary"


@pytest.mark.parametrize(
    ("name", "codecs"),
    [
        ("still.mp4", ["-c:v", "libx264", "-c:a", "aac"]),
        ("still.mkv", ["-c:v", "libx264", "-c:a", "aac"]),
        ("still.webm", ["-c:v", "libvpx-vp9", "-c:a", "libopus"]),
    ],
)
@pytest.mark.heavy
def test_a_picture_held_while_the_sound_goes_on_lasts_to_the_sounds_end(
    tmp_path: Path, name: str, codecs: list[str]
) -> None:
    """Regression: a song over one still picture (one frame, then 6 s of sound: players
    hold the picture to the end) was a video of 0.04 s: its caption's subtitle cue lasted
    40 ms and its summary said 0.04 s. Its end is where the sound ends; sound that merely
    outlasts the picture by a few tens of milliseconds (AAC's padding) changes nothing."""
    still = encode_with_ffmpeg(
        tmp_path / name, 1, "25", ["-f", "lavfi", "-i", "sine=duration=6", *codecs]
    )
    out = tmp_path / "out"
    result = run_main("caption", still, "--model", "tiny", "--out", out, "--scenes", "--quiet")
    assert result.returncode == 0, result.stderr
    stem = still.stem
    cue = (out / f"{stem}.srt").read_text().splitlines()[1]  # 00:00:00,000 --> 00:00:06,0xx
    assert re.fullmatch(r"00:00:00,0\d\d --> 00:00:06,0[0-2]\d", cue), cue
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["duration"] == pytest.approx(6.0, abs=0.03)
    scenes = [json.loads(line) for line in (out / f"{stem}.scenes.jsonl").read_text().splitlines()]
    assert scenes[-1]["end"] == pytest.approx(6.0, abs=0.03)
    padded = encode_with_ffmpeg(tmp_path / f"padded{still.suffix}", 25, "25", [
        "-f", "lavfi", "-i", "sine=duration=1.5", *codecs])  # fmt: skip
    with VideoReader(padded) as reader:
        list(reader.frames(EVERY))
    assert reader.stats.duration == pytest.approx(1.0, abs=0.03)  # not held: 0.5 s of sound
    subtitles = tmp_path / "late.srt"  # a track nobody hears or sees without the picture
    subtitles.write_text("1\n00:00:00,000 --> 00:00:06,000\nhello\n")
    titled = encode_with_ffmpeg(tmp_path / f"titled{still.suffix}", 25, "25", [
        "-i", str(subtitles), *codecs[:2], "-c:s", "mov_text" if name.endswith("mp4") else "webvtt"
        if name.endswith("webm") else "srt"])  # fmt: skip
    with VideoReader(titled) as reader:
        list(reader.frames(EVERY))
    assert reader.stats.duration == pytest.approx(1.0, abs=0.03)  # only sound holds a picture
