"""Per-video outputs (JSONL, SRT, WebVTT), checked by parsing the files back with real
parsers."""

from __future__ import annotations

import errno
import json
import re
import resource
import signal
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
import srt
import webvtt

from tests.support.videos import read_jsonl
from vidcap import outputs
from vidcap.outputs import (
    VIDEO_FORMATS,
    CaptionedFrame,
    frame_row,
    merge_cues,
    part_path,
    write_atomic,
    write_video_outputs,
)

FRAMES = [
    CaptionedFrame(0, 0.0, "a red circle on a white background"),
    CaptionedFrame(10, 1.0, "a red circle on a white background"),
    CaptionedFrame(20, 2.0, "a blue star on a black background"),
    CaptionedFrame(30, 3.0, ""),
    CaptionedFrame(40, 4.0, "a green square on a gray background"),
]


def test_merge_cues_spans_until_next_different_caption() -> None:
    cues = merge_cues(FRAMES, end_time=5.5)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.0, 2.0, FRAMES[0].caption),
        (2.0, 3.0, FRAMES[2].caption),
        (4.0, 5.5, FRAMES[4].caption),
    ]


def test_merge_cues_edge_cases() -> None:
    assert merge_cues([], 3.0) == []
    # a cue that would end where it starts (an end time that is wrong, or under a
    # millisecond) is dropped: no zero-length cue
    assert merge_cues([CaptionedFrame(0, 1.5, "x")], end_time=1.0) == []
    assert merge_cues([CaptionedFrame(0, 1.0, "x")], end_time=1.0004) == []


def test_srt_and_vtt_parse_back(tmp_path: Path) -> None:
    base = tmp_path / "clip"
    write_video_outputs(base, "clip.mp4", FRAMES, 5.5, ("srt", "vtt"))
    subs = list(srt.parse((tmp_path / "clip.srt").read_text()))
    assert [(s.start, s.end, s.content) for s in subs] == [
        (timedelta(0), timedelta(seconds=2), FRAMES[0].caption),
        (timedelta(seconds=2), timedelta(seconds=3), FRAMES[2].caption),
        (timedelta(seconds=4), timedelta(seconds=5.5), FRAMES[4].caption),
    ]
    vtt = webvtt.read(str(tmp_path / "clip.vtt"))
    assert [(c.start, c.end, c.text) for c in vtt] == [
        ("00:00:00.000", "00:00:02.000", FRAMES[0].caption),
        ("00:00:02.000", "00:00:03.000", FRAMES[2].caption),
        ("00:00:04.000", "00:00:05.500", FRAMES[4].caption),
    ]
    assert not list(tmp_path.glob("*.part"))


def test_long_times_format_hours(tmp_path: Path) -> None:
    frames = [CaptionedFrame(0, 3723.25, "late")]
    write_video_outputs(tmp_path / "long", "long.mp4", frames, 3724.0, ("vtt", "srt"))
    assert "01:02:03.250 --> 01:02:04.000" in (tmp_path / "long.vtt").read_text()
    assert "01:02:03,250 --> 01:02:04,000" in (tmp_path / "long.srt").read_text()


def test_jsonl_rows(tmp_path: Path) -> None:
    frames = [FRAMES[0], CaptionedFrame(20, 2.00000049, FRAMES[2].caption)]
    [target] = write_video_outputs(tmp_path / "v", "in/v.mp4", frames, 3.0, ("jsonl",))
    assert target == tmp_path / "v.jsonl"
    assert read_jsonl(target) == [
        {"video": "in/v.mp4", "frame": 0, "time": 0.0, "caption": FRAMES[0].caption,
         "damaged": False},
        {"video": "in/v.mp4", "frame": 20, "time": 2.0, "caption": FRAMES[2].caption,
         "damaged": False},
    ]  # fmt: skip
    assert read_jsonl(target) == [frame_row("in/v.mp4", f) for f in frames]


def test_unicode_captions_round_trip(tmp_path: Path) -> None:
    frames = [CaptionedFrame(0, 0.0, "Путин — café")]
    [target] = write_video_outputs(tmp_path / "u", "ü.mp4", frames, 1.0, ("jsonl",))
    assert "Путин — café" in target.read_text(encoding="utf-8")  # not \u escapes
    assert read_jsonl(target)[0] == {"video": "ü.mp4", "frame": 0, "time": 0.0,
                                     "caption": "Путин — café", "damaged": False}  # fmt: skip


def test_every_jsonl_row_has_the_same_keys(tmp_path: Path) -> None:
    """A key only some rows had (``damaged``, ``same_as``) was lost or refused by readers
    that take the columns from the first rows or the first file: polars' ``read_ndjson``
    (its first 100 rows) dropped it, Hugging Face's ``load_dataset("json")`` failed on two
    files that differed. Every row has each key, with one type (``same_as`` null where
    captioned, with ``--skip-similar``)."""
    for same_as in (False, True):
        reused = 0 if same_as else None
        frames = [FRAMES[0], CaptionedFrame(10, 1.0, FRAMES[0].caption, reused, damaged=True)]
        write_video_outputs(tmp_path / "a", "a.mp4", frames, 2.0, ("jsonl",), same_as=same_as)
        write_video_outputs(tmp_path / "b", "b.mp4", frames[:1], 2.0, ("jsonl",), same_as=same_as)
        rows = read_jsonl(tmp_path / "a.jsonl") + read_jsonl(tmp_path / "b.jsonl")
        assert len({tuple(row) for row in rows}) == 1, rows
        assert [row["damaged"] for row in rows] == [False, True, False]
        if same_as:
            assert [row["same_as"] for row in rows] == [None, 0, None]


def test_write_atomic_replaces_whole(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert not part_path(path).exists()


def test_a_write_that_fails_names_its_file(tmp_path: Path) -> None:
    """A write or fsync that fails (a full disk) raises an error naming no file, so a run
    that could not write ``summary.json`` said only "vidcap: error: No space left on
    device". ``write_atomic`` names the file. (The kernel's own error: a file-size limit.)"""
    path = tmp_path / "summary.json"
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (else it kills)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, previous_limit[1]))
    try:
        with pytest.raises(OSError) as caught:
            outputs.write_atomic(path, "x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_signal)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(path)
    assert list(tmp_path.iterdir()) == []  # (no part left)


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_only_requested_formats_written(tmp_path: Path, fmt: str) -> None:
    write_video_outputs(tmp_path / "c", "c.mp4", FRAMES, 5.0, (fmt, "parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"c.{fmt}"]


def test_srt_and_vtt_round_times_down_the_same_way(tmp_path: Path) -> None:
    # 1.0009 s: SRT used to truncate to 1.000 while VTT rounded to 1.001
    frames = [CaptionedFrame(0, 0.0, "a"), CaptionedFrame(1, 1.0009, "b")]
    write_video_outputs(tmp_path / "r", "r.mp4", frames, 2.0005, ("srt", "vtt"))
    subs = list(srt.parse((tmp_path / "r.srt").read_text()))
    vtt = webvtt.read(str(tmp_path / "r.vtt"))
    assert [s.end for s in subs] == [timedelta(seconds=1), timedelta(seconds=2)]
    assert [c.end for c in vtt] == ["00:00:01.000", "00:00:02.000"]


def test_each_frames_time_is_inside_its_own_cue(tmp_path: Path) -> None:
    """Regression (an outside-in round): cue times were rounded to the nearest millisecond,
    so a 23.976 fps frame at 41.708 ms had its cue from 42 ms: a player (or ``ffmpeg -vf
    subtitles``) showed the caption before it on it, for 115 of 240 frames. Rounded down,
    each frame is inside its own cue."""
    rate = Fraction(24000, 1001)
    frames = [CaptionedFrame(i, round(float(i / rate), 6), f"c{i}") for i in range(240)]
    write_video_outputs(tmp_path / "f", "f.mp4", frames, float(240 / rate), ("srt", "vtt"))
    subs = list(srt.parse((tmp_path / "f.srt").read_text()))
    vtt = webvtt.read(str(tmp_path / "f.vtt"))
    for frame, sub, cue in zip(frames, subs, vtt, strict=True):
        assert sub.content == cue.text == frame.caption
        assert sub.start.total_seconds() <= frame.time < sub.end.total_seconds(), frame
        start, end = (
            srt.srt_timestamp_to_timedelta(t.replace(".", ",")) for t in (cue.start, cue.end)
        )
        assert start == sub.start and end == sub.end


def ffmpeg_as_srt(path: Path) -> str:
    """``path`` (an SRT or a WebVTT file) as FFmpeg reads it, written back as SRT; a file
    FFmpeg refuses fails the test with FFmpeg's error."""
    import subprocess

    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "srt", "-"]
    read = subprocess.run(command, capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    return read.stdout


def test_all_empty_captions_still_give_files_ffmpeg_opens(tmp_path: Path) -> None:
    frames = [CaptionedFrame(0, 0.0, ""), CaptionedFrame(10, 1.0, "  ")]
    write_video_outputs(tmp_path / "e", "e.mp4", frames, 2.0, ("srt", "vtt"))
    assert (tmp_path / "e.srt").stat().st_size > 0
    assert [s.content for s in srt.parse((tmp_path / "e.srt").read_text())] == [""]
    assert webvtt.read(str(tmp_path / "e.vtt")).captions == []
    for name in ("e.srt", "e.vtt"):
        ffmpeg_as_srt(tmp_path / name)  # (not refused)


def test_captions_with_markup_blank_lines_and_arrows_stay_one_cue_each(tmp_path: Path) -> None:
    """Regression: a caption holding a blank line or ``-->`` (a frame showing text, a
    prompt's answer, a server's reply) stopped the whole run with webvtt-py's ValueError
    traceback, and an SRT reader took a caption line holding a timing for a cue of its own.
    Each caption stays one cue, shown as written (WebVTT escapes its markup characters),
    as webvtt-py, srt and FFmpeg read the files back."""
    hostile = [
        "a dog\n\n00:00:05.000 --> 00:00:09.000\nfake cue",
        'a sign <b>reading</b> "A & B" -> here',
        "two lines\r\nof text\n\n\n",
    ]
    frames = [CaptionedFrame(i * 10, float(i), text) for i, text in enumerate(hostile)]
    write_video_outputs(tmp_path / "h", "h.mp4", frames, 3.0, ("srt", "vtt"))
    assert [s.content for s in srt.parse((tmp_path / "h.srt").read_text())] == [
        "a dog\n00:00:\u200b05.000 --\u200b> 00:00:\u200b09.000\nfake cue",
        'a sign <b>reading</b> "A & B" -> here',
        "two lines\nof text",
    ]
    assert [c.text for c in webvtt.read(str(tmp_path / "h.vtt"))] == [
        "a dog\n00:00:\u200b05.000 --&gt; 00:00:\u200b09.000\nfake cue",
        'a sign &lt;b&gt;reading&lt;/b&gt; "A &amp; B" -&gt; here',
        "two lines\nof text",
    ]
    for name in ("h.srt", "h.vtt"):  # FFmpeg reads three cues, the VTT's text unescaped
        read = ffmpeg_as_srt(tmp_path / name)
        cues = list(srt.parse(read))
        assert [c.start.total_seconds() for c in cues] == [0.0, 1.0, 2.0], (name, read)
    assert cues[1].content == 'a sign <b>reading</b> "A & B" -> here'


def test_captions_readers_took_apart_stay_one_cue_as_written(tmp_path: Path) -> None:
    """Regression (an outside-in round with hostile captions from a server): a NUL made
    FFmpeg drop every later cue (11 of 26 read); the ``srt`` package took ``-- >`` after a
    number for a cue of its own (one the model never said), and failed on a number above a
    line starting with a time; U+2028, form feeds and \\x1c…, which ``str.splitlines``
    breaks at, became line breaks. Each caption is one cue; its text comes back as written
    but for control characters (U+FFFD) and the zero-width spaces that keep it text."""
    hostile = [
        "see\n7\n00:00:10,000 -- > 00:00:11,000\nfake",
        "Chapter\n4\n00:00:08,000",
        "nul\x00byte",
        "ls\u2028ps\u2029end",
        "vt\x0b ff\x0c fs\x1c x",
        "after",
    ]
    frames = [CaptionedFrame(i * 10, float(i), text) for i, text in enumerate(hostile)]
    write_video_outputs(tmp_path / "h", "h.mp4", frames, 6.0, ("srt", "vtt"))
    shown = [
        "see\n7\n00:00:10,000 -- > 00:00:11,000\nfake",
        "Chapter\n4\n00:00:08,000",
        "nul\ufffdbyte",
        "ls\u2028ps\u2029end",
        "vt\ufffd ff\ufffd fs\ufffd x",
        "after",
    ]
    parsed = srt.parse((tmp_path / "h.srt").read_text(encoding="utf-8"))
    assert [s.content.replace("\u200b", "") for s in parsed] == shown
    for name in ("h.srt", "h.vtt"):
        read = ffmpeg_as_srt(tmp_path / name)
        # (its timing lines: FFmpeg's own SRT writer copies the VTT's text as it is)
        starts = re.findall(r"^(\d\d:\d\d:\d\d,\d{3}) --> ", read, re.MULTILINE)
        assert starts == [f"00:00:0{i},000" for i in range(6)], (name, read)


# pysubs2's rule (1.8): any line holding two times is a timing line, wherever they stand.
LAX_TIMES = {
    "srt": re.compile(r"(\d{1,2}):(\d{1,2}):(\d{1,2})[.,](\d{1,3})"),
    "vtt": re.compile(r"(\d{0,4}:)?(\d{2}):(\d{2})\.(\d{2,3})"),
}


def test_captions_holding_clock_times_stay_one_cue(tmp_path: Path) -> None:
    """Regression (outside-in round 62, the subtitles read with pysubs2): a caption line
    holding two clock times (a camera's clock, a prompt's answer) was a timing line to
    pysubs2, which reads a line with two times as one wherever they stand: 6 cues of 4
    from the SRT, 5 from the VTT, with times from the caption (12:30:45.5) and text lost.
    A zero-width space before a time's seconds keeps it text; the other readers still
    read one cue a caption, as written."""
    said = [
        "a camera clock 12:30:45.5 to 12:31:00.0",
        "from 00:01.500 to 00:02.500 seconds",
        "9:05:00,250 and 9:06:00,000",
        "plain",
    ]
    frames = [CaptionedFrame(i * 10, float(i), text) for i, text in enumerate(said)]
    write_video_outputs(tmp_path / "t", "t.mp4", frames, 4.0, ("srt", "vtt"))
    for fmt, times in LAX_TIMES.items():
        lines = (tmp_path / f"t.{fmt}").read_text(encoding="utf-8").splitlines()
        assert sum(len(times.findall(line)) == 2 for line in lines) == len(said), fmt
        read = ffmpeg_as_srt(tmp_path / f"t.{fmt}")
        cues = list(srt.parse(read))
        assert [c.content.replace("\u200b", "") for c in cues] == said, fmt
    assert [c.text.replace("\u200b", "") for c in webvtt.read(str(tmp_path / "t.vtt"))] == said


def test_every_format_renders_a_finished_video(tmp_path: Path) -> None:
    paths = write_video_outputs(tmp_path / "v", "v.mp4", FRAMES, 5.5, tuple(VIDEO_FORMATS))
    assert [p.name for p in paths] == ["v.jsonl", "v.srt", "v.vtt"]
    for path, (fmt, video_format) in zip(paths, VIDEO_FORMATS.items(), strict=True):
        assert path.read_text(encoding="utf-8") == video_format.render("v.mp4", FRAMES, 5.5), fmt


def test_a_failed_write_leaves_no_output(tmp_path: Path, monkeypatch) -> None:
    def failing_vtt(path: Path, text: str) -> None:
        if path.suffix == ".vtt":
            raise OSError("disk full")
        write_atomic(path, text)

    monkeypatch.setattr(outputs, "write_atomic", failing_vtt)
    with pytest.raises(OSError, match="disk full"):
        write_video_outputs(tmp_path / "v", "v.mp4", FRAMES, 5.5, ("jsonl", "srt", "vtt"))
    assert list(tmp_path.iterdir()) == []


def test_a_caption_holding_a_unicode_line_separator_is_one_jsonl_row(tmp_path: Path) -> None:
    """Regression (an outside-in round): JSON may hold U+2028 and U+2029 raw, but
    ``str.splitlines`` breaks lines there, so such a caption read as two rows of the
    ``.jsonl``. They are written escaped; the caption reads back as written."""
    captions = ["one\u2028two", "three\u2029four", "plain"]
    frames = [CaptionedFrame(i, float(i), text) for i, text in enumerate(captions)]
    write_video_outputs(tmp_path / "u", "u.mp4", frames, 3.0, ("jsonl",))
    text = (tmp_path / "u.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 3
    assert [json.loads(row)["caption"] for row in text.splitlines()] == captions
