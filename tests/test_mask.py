"""vidcap.mask and ``vidcap mask``: matching, mask strings, segments, reports, question mode."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidcap.backend import EmbeddedBackend
from vidcap.cli.mask import add_clips_parser, add_mask_parser, answers_path
from vidcap.cli.parser import OneLineParser
from vidcap.errors import UsageError
from vidcap.mask import (
    MaskSettings,
    Segment,
    VideoCaptions,
    ask_frames,
    build_report,
    frame_ends,
    is_yes,
    load_captions,
    mask_answers,
    mask_captions,
    mask_string,
    match_frames,
    records_jsonl,
    segments,
)
from vidcap.outputs import CaptionedFrame
from vidcap.settings import GenerationSettings, SamplingSettings
from vidcap.tiny.render import caption_at, read_truth, subject_ranges
from vidcap.video import VideoReader

SAMPLES = Path(__file__).resolve().parents[1] / "sample_videos"
SUBJECT = SAMPLES / "subject.mp4"
SUBJECT_TRUTH = SAMPLES / "subject.truth.json"


# --- helpers -----------------------------------------------------------------------------


def write_jsonl(path: Path, rows: Iterable[dict | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def truth_captions(step: float) -> list[dict]:
    """Caption JSONL rows of subject.mp4 as a perfect captioner would write them."""
    truth = read_truth(SUBJECT_TRUTH)
    end = truth[-1].end
    count = round(end / step)
    return [
        {"video": str(SUBJECT), "frame": round(i * step * 10), "time": i * step,
         "caption": caption_at(truth, i * step)}
        for i in range(count)
    ]  # fmt: skip


def records(times: Iterable[float], captions: Iterable[str], video: str = "v.mp4") -> VideoCaptions:
    frames = tuple(
        CaptionedFrame(i, t, c) for i, (t, c) in enumerate(zip(times, captions, strict=True))
    )
    return VideoCaptions(video, frames)


def iou(found: list[tuple[float, float]], truth: list[tuple[float, float]], end: float) -> float:
    """Intersection over union of two sets of [start, end) ranges, on a 1 ms grid."""
    grid = np.arange(0, end, 0.001)

    def cover(ranges: list[tuple[float, float]]) -> np.ndarray:
        mask = np.zeros(grid.shape, dtype=bool)
        for start, stop in ranges:
            mask |= (grid >= start) & (grid < stop)
        return mask

    a, b = cover(found), cover(truth)
    return float((a & b).sum() / max(1, (a | b).sum()))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="vidcap")  # (the CLI's: it records the flags given)
    subparsers = parser.add_subparsers(parser_class=OneLineParser)
    add_mask_parser(subparsers)
    add_clips_parser(subparsers)
    return parser.parse_args(argv)


def run_cli(argv: list[str]) -> int:
    args = parse(argv)
    return args.func(args)


@pytest.fixture
def subject_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "subject.jsonl", truth_captions(1.0))


# --- matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "caption", "expected"),
    [
        ("red", "a red circle", True),
        ("red", "a redo of it", False),
        ("red", "a bored square", False),
        ("RED", "a Red circle", True),
        ("red circle", "a red circle on a white background", True),
        ("red circle", "a red   circle", True),
        ("red  circle", "a red circle", True),
        ("red circle", "a red square and a blue circle", False),
        ("red circle", "a red circles", False),
        ("circle?", "is it a circle? yes", True),
        ("circle", "circle", True),
    ],
)
def test_plain_queries_match_whole_words_and_phrases(query, caption, expected) -> None:
    assert match_frames([caption], [query]) == [expected]


@pytest.mark.parametrize(
    ("query", "caption", "expected"),
    [
        (r"red\w*", "a redo of it", True),
        (r"^a (red|blue) circle", "a Blue circle on gray", True),
        (r"^a (red|blue) circle", "a green circle", False),
        ("red", "a bored square", True),  # a regex is taken as written: no word boundaries
    ],
)
def test_regex_queries(query, caption, expected) -> None:
    assert match_frames([caption], [query], regex=True) == [expected]


def test_overlapping_queries_are_or_ed() -> None:
    captions = ["a red circle", "a blue circle", "a red square", "a green star"]
    assert match_frames(captions, ["red circle", "circle"]) == [True, True, False, False]
    assert match_frames(captions, ["red", "circle"]) == [True, True, True, False]


def test_match_frames_takes_records_or_strings() -> None:
    recs = records([0, 1], ["a red circle", "a blue star"]).frames
    assert match_frames(recs, ["red"]) == match_frames([r.caption for r in recs], ["red"])


@pytest.mark.parametrize(
    ("queries", "regex", "message"),
    [
        (["red("], True, r"bad --regex query 'red\(': missing \)"),
        (["[a-"], True, "bad --regex query"),
        ([], False, "give at least one --query"),
        (["  "], False, "--query must not be empty"),
    ],
)
def test_bad_queries_are_usage_errors(queries, regex, message) -> None:
    with pytest.raises(UsageError, match=message):
        match_frames(["a red circle"], queries, regex=regex)


def test_is_yes() -> None:
    assert [is_yes(a) for a in ["yes", "Yes, he is.", " YES", "yes!"]] == [True] * 4
    assert [is_yes(a) for a in ["no", "yesterday", "", "maybe yes"]] == [False] * 4


def test_mask_string() -> None:
    assert mask_string([False, True, True, False]) == "0110"
    assert mask_string([]) == ""


# --- segments ----------------------------------------------------------------------------

TIMES = [float(t) for t in range(10)]


def flags_of(mask: str) -> list[bool]:
    return [c == "1" for c in mask]


def spans(found: list[Segment]) -> list[tuple[float, float, int]]:
    return [(s.start, s.end, s.frames) for s in found]


def test_no_match_gives_no_segments() -> None:
    assert segments(TIMES, flags_of("0000000000"), 10.0) == []


def test_whole_video_is_one_segment() -> None:
    assert spans(segments(TIMES, flags_of("1111111111"), 10.0)) == [(0.0, 10.0, 10)]


def test_segment_touching_the_end_ends_at_the_duration() -> None:
    assert spans(segments(TIMES, flags_of("0000000111"), 10.5)) == [(7.0, 10.5, 3)]


def test_without_duration_the_last_frame_lasts_a_median_interval() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.5]  # median gap 0.5
    assert spans(segments(times, flags_of("00011"))) == [(1.5, 3.0, 2)]
    assert frame_ends(times) == [0.5, 1.0, 1.5, 2.5, 3.0]


def test_each_frame_covers_until_the_next_frame_time() -> None:
    times = [0.0, 1.0, 4.0, 5.0]  # irregular sampling: frame 1 covers [1, 4)
    assert spans(segments(times, flags_of("0100"), 6.0)) == [(1.0, 4.0, 1)]


def test_merge_gap_closes_shorter_gaps_only() -> None:
    flags = flags_of("1100111001")  # gaps of 2 s and 2 s
    assert spans(segments(TIMES, flags, 10.0, merge_gap=2.0)) == [
        (0.0, 2.0, 2), (4.0, 7.0, 3), (9.0, 10.0, 1),
    ]  # fmt: skip
    assert spans(segments(TIMES, flags, 10.0, merge_gap=2.5)) == [(0.0, 10.0, 6)]


def test_min_duration_drops_short_segments_after_merging() -> None:
    flags = flags_of("1010000111")
    assert spans(segments(TIMES, flags, 10.0, min_duration=2.0)) == [(7.0, 10.0, 3)]
    assert spans(segments(TIMES, flags, 10.0, min_duration=3.0)) == [(7.0, 10.0, 3)]
    # merged first: [0, 1) + [2, 3) → [0, 3), long enough to stay
    merged = segments(TIMES, flags, 10.0, merge_gap=1.5, min_duration=3.0)
    assert spans(merged) == [(0.0, 3.0, 2), (7.0, 10.0, 3)]


def test_float_noise_does_not_flip_comparisons() -> None:
    times = [i * 0.1 for i in range(30)]  # 0.30000000000000004 and friends
    flags = flags_of("111" + "000" + "111" + "0" * 21)
    found = segments(times, flags, 3.0, merge_gap=0.3)
    assert len(found) == 2  # the gap is exactly 0.3 s: not shorter, not closed
    assert len(segments(times, flags, 3.0, merge_gap=0.300001)) == 1
    kept = segments(times, flags, 3.0, min_duration=0.3)
    assert len(kept) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"merge_gap": -1.0}, "--merge-gap must be a number of seconds >= 0, got -1.0"),
        ({"min_duration": -0.5}, "--min-duration must be a number of seconds >= 0"),
        ({"min_duration": float("nan")}, "--min-duration must be a number"),
        ({"duration": 0.0}, "--duration must be a number of seconds > 0"),
        ({"duration": -3.0}, "--duration must be a number of seconds > 0"),
        ({"duration": 5.0}, "--duration 5.0 is before the last frame's time 9.0"),
    ],
)
def test_bad_segment_settings(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        segments(TIMES, flags_of("0110000000"), **kwargs)


def test_single_frame_needs_a_duration() -> None:
    with pytest.raises(UsageError, match="single frame time; pass --duration"):
        segments([0.0], [True])
    assert spans(segments([0.0], [True], 4.0)) == [(0.0, 4.0, 1)]


def test_truth_captions_give_the_truth_ranges() -> None:
    truth = read_truth(SUBJECT_TRUTH)
    for step in (1.0, 0.5):
        rows = truth_captions(step)
        recs = records([r["time"] for r in rows], [r["caption"] for r in rows])
        found = segments(recs.times, match_frames(recs.frames, ["red circle"]))
        assert [(s.start, s.end) for s in found] == subject_ranges(truth)


# --- report ------------------------------------------------------------------------------


def test_report_shape_and_coverage() -> None:
    flags = flags_of("0011000111")
    report = build_report("v.mp4", TIMES, flags, MaskSettings(duration=10.0), queries=["red"])
    assert report["mask"] == "0011000111"
    assert report["segments"] == [
        {"start": 2.0, "end": 4.0, "frames": 2, "damaged": 0},
        {"start": 7.0, "end": 10.0, "frames": 3, "damaged": 0},
    ]
    assert report["coverage"] == 0.5
    assert report["settings"]["duration"] == 10.0
    assert report["settings"]["duration_source"] == "given"
    assert (report["video"], report["queries"], report["question"]) == ("v.mp4", ["red"], None)
    assert report["frames"] == 10


def test_report_infers_duration() -> None:
    report = build_report("v.mp4", TIMES, flags_of("1" * 10), MaskSettings())
    assert report["settings"]["duration"] == 10.0
    assert report["settings"]["duration_source"] == "inferred"
    assert report["coverage"] == 1.0


def test_mask_captions_on_the_subject_truth(subject_jsonl: Path) -> None:
    captions = load_captions(subject_jsonl)
    report = mask_captions(captions, ["red circle"], MaskSettings())
    assert report["mask"] == "0001111000011110000000011110001111"
    assert [(s["start"], s["end"]) for s in report["segments"]] == [
        (3.0, 7.0), (11.0, 15.0), (23.0, 27.0), (30.0, 34.0),
    ]  # fmt: skip
    assert report["coverage"] == pytest.approx(16 / 34, abs=1e-6)
    assert report["video"] == str(SUBJECT)


# --- loading captions --------------------------------------------------------------------


def test_load_captions_reads_the_contract(tmp_path: Path) -> None:
    rows = [{"video": "a.mp4", "frame": 3, "time": 0.1, "caption": "x"}, {"video": "a.mp4",
            "frame": 13, "time": 1.1, "caption": "y"}]  # fmt: skip
    path = write_jsonl(tmp_path / "a.jsonl", [*rows[:1], "", *rows[1:]])  # blank lines allowed
    assert load_captions(path) == VideoCaptions(
        "a.mp4", (CaptionedFrame(3, 0.1, "x"), CaptionedFrame(13, 1.1, "y"))
    )


def test_records_round_trip_through_jsonl(tmp_path: Path) -> None:
    recs = records([0.0, 0.5], ["yes", "no"])
    path = tmp_path / "answers.jsonl"
    path.write_text(records_jsonl(recs))
    assert load_captions(path) == recs


def test_a_folder_is_one_line_usage_error(tmp_path: Path) -> None:
    """Regression (#12.5): ``vidcap mask DIR`` said "no such file" (or failed deeper)."""
    for argv in (["--query", "red"], ["--question", "red?"]):
        with pytest.raises(UsageError, match=r"is a folder: mask takes one caption JSONL"):
            run_cli(["mask", str(tmp_path), *argv])
    with pytest.raises(UsageError, match=r"is a folder"):
        load_captions(tmp_path)


def test_cli_main_exits_2_with_one_line_for_a_folder(tmp_path: Path, capsys) -> None:
    from vidcap.cli import main

    assert main(["mask", str(tmp_path), "--query", "red"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err and "Traceback" not in err


GOOD = {"video": "a.mp4", "frame": 0, "time": 0.0, "caption": "a red circle"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json at all"], r"a\.jsonl:1: not a caption JSONL file \(Expecting value\)"),
        ([json.dumps(GOOD), "{broken"], r"a\.jsonl:2: not a caption JSONL file"),
        (["[1, 2]"], "a.jsonl:1: expected a JSON object per line, got list"),
        ([json.dumps({**GOOD, "time": -1.0})], "'time' must be a number of seconds >= 0, got -1.0"),
        ([json.dumps({**GOOD, "time": "3"})], "'time' must be a number of seconds >= 0, got '3'"),
        ([json.dumps({**GOOD, "time": True})], "'time' must be a number"),
        ([json.dumps({k: v for k, v in GOOD.items() if k != "time"})], "'time' must be a number"),
        ([json.dumps({**GOOD, "caption": None})], "'caption' must be a string, got None"),
        ([json.dumps({**GOOD, "frame": 1.5})], "'frame' must be a whole number, got 1.5"),
        ([json.dumps({**GOOD, "time": 2.0}), json.dumps({**GOOD, "time": 1.0})],
         r"a\.jsonl:2: time 1\.0 is before the previous frame's 2\.0"),
        ([json.dumps(GOOD), json.dumps({**GOOD, "video": "b.mp4", "time": 1.0})],
         r"holds captions of 2 videos \(a\.mp4, b\.mp4\); mask one video at a time"),
        ([], "no captions in the file"),
    ],
)  # fmt: skip
def test_bad_caption_files(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", lines)
    with pytest.raises(UsageError, match=message):
        load_captions(path)


def test_missing_and_binary_caption_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.jsonl: no such file"):
        load_captions(tmp_path / "nope.jsonl")
    binary = tmp_path / "video.jsonl"
    binary.write_bytes(b"\x00\x00\x00\x18ftypmp42\xff\xfe\x80")
    with pytest.raises(UsageError, match="not a caption JSONL file"):
        load_captions(binary)


# --- question mode -----------------------------------------------------------------------


@pytest.fixture
def tiny_backend(tiny_captioner) -> Iterator[EmbeddedBackend]:
    """The shipped tiny checkpoint, trained to answer "is there a <colour> <shape>?"."""
    backend = EmbeddedBackend(tiny_captioner)
    yield backend
    backend.close()


def solid(colour: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:] = colour
    return image


def write_red_blue_video(path: Path, red_seconds: set[int], seconds: int = 9) -> Path:
    """10 fps H.264: red in the given whole seconds, blue elsewhere."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * 10):
            rgb = solid((220, 30, 30) if i // 10 in red_seconds else (0, 0, 255))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_ask_frames_uses_the_question_prompt_and_keeps_order(tiny_backend, caplog) -> None:
    """The tiny model answers the question on subject.mp4: its segments are the truth's."""
    caplog.set_level("INFO", logger="vidcap")
    answers = ask_frames(
        SUBJECT, tiny_backend, " is there a red circle? ", SamplingSettings(fps=1.0), quiet=True
    )
    assert "asking 'Question: is there a red circle? Answer:'" in caplog.text
    assert answers.times == [float(t) for t in range(34)]
    assert [f.index for f in answers.frames] == [10 * t for t in range(34)]
    assert {f.caption for f in answers.frames} == {"yes", "no"}
    assert answers.duration == pytest.approx(34.0)
    report = mask_answers(answers, "is there a red circle?", MaskSettings(duration=34.0))
    truth = subject_ranges(read_truth(SUBJECT_TRUTH))
    assert [(s["start"], s["end"]) for s in report["segments"]] == truth
    assert report["mask"] == "0001111000011110000000011110001111"
    assert report["question"] == "is there a red circle?"
    assert report["settings"]["answer_rule"] == "starts with yes"
    other = ask_frames(SUBJECT, tiny_backend, "is there a green star?", SamplingSettings(fps=1.0))
    found = mask_answers(other, "green star?", MaskSettings(duration=34.0))["segments"]
    stars = subject_ranges(read_truth(SUBJECT_TRUTH), "green star")
    assert [(s["start"], s["end"]) for s in found] == stars != truth


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_question_mode_shows_progress_on_a_terminal_unless_quiet(
    tmp_path: Path, monkeypatch, quiet: bool, tiny_backend
) -> None:
    """Regression (#12.7): ``vidcap mask --question`` showed no progress and had no --quiet."""
    video = write_red_blue_video(tmp_path / "v.mp4", {1}, seconds=3)
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    ask_frames(video, tiny_backend, "red?", SamplingSettings(fps=1.0), quiet=quiet)
    shown = terminal.getvalue()
    assert ("/3 [" in shown and "frame/s" in shown) is not quiet


def test_empty_question_is_a_usage_error(tiny_backend) -> None:
    with pytest.raises(UsageError, match="--question must not be empty"):
        ask_frames("v.mp4", tiny_backend, "  ", sampling=SamplingSettings())


# --- the CLI -----------------------------------------------------------------------------


def test_cli_mask_prints_json(subject_jsonl: Path, capsys) -> None:
    assert run_cli(["mask", str(subject_jsonl), "--query", "red circle", "--merge-gap", "4.5",
                    "--min-duration", "4"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert [(s["start"], s["end"]) for s in report["segments"]] == [(3.0, 15.0), (23.0, 34.0)]
    assert report["settings"]["merge_gap"] == 4.5


def test_a_segment_counts_its_matching_frames_that_may_show_damage(tmp_path: Path, capsys) -> None:
    """A caption of a damaged picture may describe the damage, not the scene: each segment
    says how many of its matching frames the caption JSONL marks ``"damaged": true``."""
    captions = ["a red car", "a red car", "a dog", "a red car", "a red car", "a red car"]
    damaged = {1, 2, 4}  # two matches and a frame that does not match
    rows = [
        {"video": "v.mp4", "frame": i, "time": float(i), "caption": c}
        | ({"damaged": True} if i in damaged else {})
        for i, c in enumerate(captions)
    ]
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert run_cli(["mask", str(path), "--query", "red car"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["start"], s["end"], s["frames"], s["damaged"]) for s in report["segments"]] == [
        (0.0, 2.0, 2, 1), (3.0, 6.0, 3, 1),
    ]  # fmt: skip
    assert run_cli(["mask", str(path), "--query", "red car", "--merge-gap", "2"]) == 0
    [merged] = json.loads(capsys.readouterr().out)["segments"]
    assert (merged["frames"], merged["damaged"]) == (5, 2)  # frame 2 is no match


def test_cli_mask_writes_out_atomically(subject_jsonl: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "mask.json"
    run_cli(["mask", str(subject_jsonl), "--query", "green", "--query", "yellow star",
             "--duration", "34", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["queries"] == ["green", "yellow star"]
    assert report["mask"] == "0001111000000001111100000001111111"
    assert sorted(p.name for p in out.parent.iterdir()) == ["mask.json"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--query", "red", "--question", "red?"],
            "--query and --question cannot be used together: give one",
        ),
        ([], "give --query .* or --question"),
        (["--query", "x(", "--regex"], "bad --regex query"),
        (["--query", "red", "--merge-gap", "-2"], "--merge-gap must be a number of seconds >= 0"),
        (["--query", "red", "--min-duration", "nan"], "--min-duration must be a number"),
        (["--query", "red", "--duration", "-1"], "--duration must be a number of seconds > 0"),
        (["--question", "red?"], "--question asks a video, not a caption JSONL"),
        # Regressions: "give --query … or --question …" for an empty question; query mode's
        # --out where nothing can be written: exit 1, naming its own .part file
        (["--question", ""], "--question must not be empty"),
        (["--query", "red", "--out", "/proc/self/x.json"], r"--out /proc/self/x\.json: cannot"),
    ],
)
def test_cli_mask_usage_errors(subject_jsonl: Path, argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        run_cli(["mask", str(subject_jsonl), *argv])


def test_cli_mask_out_under_a_file_is_a_usage_error(subject_jsonl: Path, tmp_path: Path) -> None:
    """Regression: ``--out`` under a file raised the system's "File exists" after the work
    was done, with exit 1 (a folder: ``test_a_mask_out_that_is_a_folder_is_one_line…``)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"--out .*x\.json: .*file is a file, not a folder"):
        run_cli(["mask", str(subject_jsonl), "--query", "red", "--out",
                 str(tmp_path / "file" / "x.json")])  # fmt: skip
    assert (tmp_path / "file").read_text() == "x"


def test_a_question_too_long_is_said_as_a_question_not_a_prompt() -> None:
    """Regression (an outside-in round): a --question over 482 characters (its prompt,
    ``Question: … Answer:``, over 500) was refused as "prompt is longer than 500
    characters", naming neither the flag given nor the length it may have."""
    from vidcap.settings import PROMPT_CHARS_LIMIT, question_prompt

    assert len(question_prompt("x" * 482)) == PROMPT_CHARS_LIMIT
    with pytest.raises(UsageError, match="^--question is longer than 482 characters$"):
        run_cli(["mask", str(SUBJECT), "--question", "x" * 483])
    with pytest.raises(UsageError, match="^--prompt: prompt is longer than 500 characters$"):
        GenerationSettings(prompt="x" * 501)


def test_client_flags_without_a_server_are_refused_in_question_mode() -> None:
    """Regression (an outside-in round): ``mask --question`` took ``--prebatch 3``,
    ``--wire-format jpeg`` or ``--token`` without ``--server`` and ignored them; ``vidcap
    caption`` refuses them."""
    with pytest.raises(UsageError, match="^--prebatch applies to --server only$"):
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--prebatch", "3"])
    with pytest.raises(UsageError, match="^--wire-format and --token apply to --server only$"):
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--wire-format", "jpeg",
                 "--token", "abc"])  # fmt: skip
    with pytest.raises(UsageError, match="^--prebatch applies to --server only$"):  # its default
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--prebatch", "8"])
    # ... and the in-process model's flags with one (the server's own are used)
    with pytest.raises(UsageError, match="^--device is for the model in this process, not"):
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--server",
                 "http://127.0.0.1:9/caption", "--device", "cpu"])  # fmt: skip


def test_cli_query_on_a_video_points_to_question_mode() -> None:
    with pytest.raises(UsageError, match="is a video: --query searches a caption JSONL"):
        run_cli(["mask", str(SUBJECT), "--query", "red"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--regex"], "--regex applies to --query only"),
        (["--prompt", "Question: x Answer:"], "--prompt does not apply to --question"),
        (["--max-new-tokens", "0"], "max_new_tokens must be between 1 and"),
        (["--fps", "0"], "--fps must be a number > 0"),
        (["--fps", "2", "--every-n", "3"], "--fps and --every-n cannot be used together"),
        (["--keyframes", "--every-n", "3"], "--every-n and --keyframes cannot be used together"),
    ],
)
def test_cli_question_mode_usage_errors(monkeypatch, argv: list[str], message: str) -> None:
    monkeypatch.setattr("vidcap.cli.mask.build_backend", lambda args: pytest.fail("no model"))
    with pytest.raises(UsageError, match=message):
        run_cli(["mask", str(SUBJECT), "--question", "red?", *argv])


def test_cli_question_mode_missing_video(monkeypatch, tmp_path: Path) -> None:
    """A video named on the command line that is not there is a usage error (exit 2), as
    for ``vidcap caption`` and ``vidcap clips`` (it was exit 1)."""
    monkeypatch.setattr("vidcap.cli.mask.build_backend", lambda args: pytest.fail("no model"))
    with pytest.raises(UsageError, match=r"gone\.mp4: no such file"):
        run_cli(["mask", str(tmp_path / "gone.mp4"), "--question", "red?"])


def test_an_out_that_is_what_the_mask_reads_is_refused_before_anything(
    monkeypatch, tmp_path: Path
) -> None:
    """Regression: ``--out`` naming the video (question mode), the caption JSONL or the
    scenes file beside it (query mode) wrote the report over it: the input was lost."""
    monkeypatch.setattr("vidcap.cli.mask.build_backend", lambda args: pytest.fail("no model"))
    video = tmp_path / "victim.mp4"
    video.write_bytes(SUBJECT.read_bytes())
    captions = write_jsonl(tmp_path / "victim.jsonl", truth_captions(1.0))
    scenes = tmp_path / "victim.scenes.jsonl"
    scenes.write_text('{"scene": 1, "start": 0.0, "end": 34.0}\n')
    linked = tmp_path / "link.json"
    linked.symlink_to(captions)
    kept = {path: path.read_bytes() for path in (video, captions, scenes)}
    for argv in (
        [str(video), "--question", "red?", "--out", str(video)],
        [str(captions), "--query", "red", "--out", str(captions)],
        [str(captions), "--query", "red", "--out", str(tmp_path / "x" / ".." / "victim.jsonl")],
        [str(captions), "--query", "red", "--out", str(linked)],
        [str(captions), "--query", "red", "--out", str(scenes)],
    ):
        with pytest.raises(UsageError, match=r"--out .* which this command reads: choose another"):
            run_cli(["mask", *argv])
    assert {path: path.read_bytes() for path in kept} == kept


def test_question_mode_checks_it_can_write_before_the_model_runs(monkeypatch) -> None:
    """Regression: ``--out`` where nothing can be written failed after the model's pass over
    the whole video (hours on a real model), its answers lost."""
    monkeypatch.setattr("vidcap.cli.mask.build_backend", lambda args: pytest.fail("no model"))
    with pytest.raises(UsageError, match=r"--out /proc/self/x\.json: cannot write there"):
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--out", "/proc/self/x.json"])


def test_question_mode_keeps_its_answers_when_the_report_is_refused(tmp_path: Path) -> None:
    """Regression: a ``--duration`` before the last sample is found only once every frame is
    answered; the answers were dropped with the report. They are saved first, to re-mask."""
    out = tmp_path / "m.json"
    with pytest.raises(UsageError, match=r"--duration 2\.0 is before the last frame's time"):
        run_cli(["mask", str(SUBJECT), "--question", "red?", "--model", "tiny", "--quiet",
                 "--every-n", "50", "--duration", "2", "--out", str(out)])  # fmt: skip
    assert not out.exists()
    assert len(load_captions(answers_path(out)).frames) == 7  # frames 0, 50, …, 300 of 340


def test_query_mode_refuses_the_options_it_would_ignore(subject_jsonl: Path) -> None:
    """Regression: query mode took ``--fps``, ``--model``, ``--server``… and ignored them
    (the captions are already made), where ``--regex`` with ``--question`` is refused."""
    for extra, named in (
        (["--fps", "2"], "--fps applies"),
        (["--model", "tiny", "--every-n", "3"], "--every-n and --model apply"),
        (["--server", "http://127.0.0.1:9/predictions/vidcap"], "--server applies"),
    ):
        with pytest.raises(UsageError, match=f"{named} to --question only"):
            run_cli(["mask", str(subject_jsonl), "--query", "red", *extra])


def test_question_mode_settings_name_the_sampling_used(capsys) -> None:
    """Regression: the report's settings said ``"fps": 1.0`` for ``--every-n`` sampling."""
    run_cli(["mask", str(SUBJECT), "--question", "red?", "--model", "tiny", "--quiet",
             "--every-n", "100"])  # fmt: skip
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert (settings["fps"], settings["every_n"], settings["keyframes"]) == (None, 100, False)


@pytest.mark.parametrize("name", ["mpeg4-bframes-avi", "mpeg4-noindex-avi", "vfr-avi", "h264-mkv"])
def test_question_mode_duration_is_what_caption_writes(generated_videos, name: str, capsys) -> None:
    """Regression (#12.1): mask probed the container (9.0 s) while caption decoded (0.033 s);
    both now take the end of the last decodable frame from ``VideoReader``."""
    path, spec = generated_videos[name]
    run_cli(["mask", str(path), "--question", "red?", "--model", "tiny", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    with VideoReader(path) as reader:
        list(reader.frames(SamplingSettings()))
    assert report["settings"]["duration"] == round(reader.stats.duration, 6)
    assert report["settings"]["duration"] == pytest.approx(spec.duration, abs=1e-6)
    assert report["settings"]["duration_source"] == "decoded"


@pytest.mark.heavy
def test_mask_and_caption_agree_on_the_duration(generated_videos, tmp_path: Path, capsys) -> None:
    """#12.1: ``vidcap caption`` (summary.json, last cue) and ``vidcap mask`` give one duration."""
    from vidcap.cli import main

    names = ["mpeg4-bframes-avi", "vfr-avi"]
    paths = [generated_videos[name][0] for name in names]
    out = tmp_path / "captions"
    assert main(["caption", *map(str, paths), "--model", "tiny", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    captioned = {Path(v["video"]).name: v["duration"] for v in summary["videos"]}
    capsys.readouterr()
    for name, path in zip(names, paths, strict=True):
        run_cli(["mask", str(path), "--question", "red?", "--model", "tiny", "--quiet"])
        masked = json.loads(capsys.readouterr().out)["settings"]["duration"]
        assert masked == captioned[path.name] == pytest.approx(generated_videos[name][1].duration)


def test_answers_path() -> None:
    assert answers_path(Path("out/putin.json")) == Path("out/putin.answers.jsonl")


def test_cli_question_mode_with_the_pipeline(tmp_path: Path) -> None:
    """Real decoding and the tiny model through the CLI: the truth's exact ranges."""
    out = tmp_path / "subject.mask.json"
    run_cli(["mask", str(SUBJECT), "--question", "is there a red circle in this picture?",
             "--model", "tiny", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    truth = subject_ranges(read_truth(SUBJECT_TRUTH))
    assert [(s["start"], s["end"]) for s in report["segments"]] == truth
    assert report["settings"]["duration_source"] == "decoded"
    assert report["settings"]["duration"] == 34.0
    answers = load_captions(answers_path(out))
    assert len(answers.frames) == len(report["mask"]) == 34


# --- end to end with the tiny model ------------------------------------------------------


def decoded_subject(every: int) -> list[tuple[float, np.ndarray]]:
    av = pytest.importorskip("av")
    with av.open(str(SUBJECT)) as container:
        return [
            (float(frame.time), frame.to_ndarray(format="rgb24"))
            for i, frame in enumerate(container.decode(video=0))
            if i % every == 0
        ]


def test_tiny_model_captions_find_the_subject(tiny_captioner) -> None:
    """Caption subject.mp4 at 1 frame/s with the tiny model; segments vs truth: IoU >= 0.9."""
    frames = decoded_subject(every=10)
    captions = tiny_captioner.caption([rgb for _, rgb in frames])
    recs = VideoCaptions(str(SUBJECT), tuple(
        CaptionedFrame(i * 10, t, c) for i, ((t, _), c) in enumerate(zip(frames, captions, strict=True))
    ))  # fmt: skip
    truth = read_truth(SUBJECT_TRUTH)
    report = mask_captions(recs, ["red circle"], MaskSettings(duration=truth[-1].end))
    found = [(s["start"], s["end"]) for s in report["segments"]]
    assert iou(found, subject_ranges(truth), truth[-1].end) >= 0.9, (found, captions)


def test_a_mask_out_that_is_a_folder_is_one_line_and_leaves_no_part_file(
    subject_jsonl: Path, tmp_path: Path, capsys
) -> None:
    from vidcap.cli import main

    folder = tmp_path / "taken"
    folder.mkdir()
    assert main(["mask", str(subject_jsonl), "--query", "red", "--out", str(folder)]) == 2
    err = capsys.readouterr().err  # (was "Is a directory: …", exit 1, after the work)
    assert err == (
        f"vidcap: error: --out {folder} is a folder: give a file name (such as {folder}/out.json)\n"
    )
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.slow  # two runs of the tiny model over 120 frames
def test_question_mode_keeps_the_damage_the_decoder_saw(tmp_path: Path) -> None:
    """Question mode's answers JSONL marks ``"damaged": true`` on the frames ``vidcap
    caption`` marks (the same decoder), and its segments count them."""
    from tests.support.videos import concealed_damage, read_jsonl
    from vidcap.cli import main

    made = concealed_damage(tmp_path / "concealed.mp4")
    if made is None:
        pytest.skip("no damage this FFmpeg conceals")
    video, _ = made
    every = ["--model", "tiny", "--every-n", "1", "--quiet"]
    assert main(["caption", str(video), *every, "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "mask.json"
    assert main(["mask", str(video), "--question", "is it red?", *every, "--out", str(out)]) == 0
    captioned = read_jsonl(tmp_path / "out" / "concealed.jsonl")
    answered = read_jsonl(answers_path(out))
    marked = [row["frame"] for row in captioned if row.get("damaged")]
    assert marked and [row["frame"] for row in answered if row.get("damaged")] == marked
    report = json.loads(out.read_text())
    yes = {row["frame"] for row in answered if is_yes(row["caption"])}
    assert sum(s["damaged"] for s in report["segments"]) == len(yes & set(marked))


def test_remasking_takes_the_duration_the_video_was_decoded_to(tmp_path: Path, capsys) -> None:
    """Regression: ``vidcap mask`` of a caption JSONL, or of question mode's answers, added a
    median interval after the last sample (35.0 s for the 34 s subject.mp4 at ``--every-n
    25``), where question mode, ``vidcap search`` and the page take the decoded 34.0: the same
    settings gave other segments. It takes what the folder records, or the report beside
    the answers."""
    from vidcap.cli import main

    every = ["--every-n", "25", "--model", "tiny", "--quiet"]
    assert main(["caption", str(SUBJECT), *every, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    run_cli(["mask", str(tmp_path / "out" / "subject.jsonl"), "--query", "red circle"])
    report = json.loads(capsys.readouterr().out)
    assert (report["settings"]["duration"], report["settings"]["duration_source"]) == (
        34.0, "recorded")  # fmt: skip
    out = tmp_path / "q" / "s.json"
    run_cli(["mask", str(SUBJECT), "--question", "is there a red circle?", *every,
             "--out", str(out)])  # fmt: skip
    asked = json.loads(out.read_text())
    capsys.readouterr()
    run_cli(["mask", str(answers_path(out)), "--regex", "--query", r"^\s*yes\b"])
    again = json.loads(capsys.readouterr().out)
    assert again["settings"]["duration"] == asked["settings"]["duration"] == 34.0
    assert again["segments"] == asked["segments"] and again["coverage"] == asked["coverage"]
    # Regression: ``--out q/plain`` (no .json) writes q/plain.answers.jsonl, whose re-mask
    # looked for q/plain.json only and inferred a duration.
    plain = tmp_path / "q" / "plain"
    assert answers_path(plain) == plain.with_name("plain.answers.jsonl")
    out.rename(plain)
    answers_path(out).rename(answers_path(plain))
    run_cli(["mask", str(answers_path(plain)), "--regex", "--query", r"^\s*yes\b"])
    again = json.loads(capsys.readouterr().out)
    assert (again["settings"]["duration"], again["settings"]["duration_source"]) == (
        34.0, "recorded")  # fmt: skip


@pytest.mark.parametrize(
    ("sampling", "end"),
    [(["--every-n", "19"], 9.5), (["--fps", "1"], 5.0), (["--keyframes"], None)],
    ids=["every-n", "fps", "keyframes"],
)
@pytest.mark.heavy
def test_max_frames_ends_the_last_sample_where_the_next_would_be(
    sampling: list[str], end: float | None, tmp_path: Path, capsys
) -> None:
    """Regression: with ``--max-frames`` the duration was the end of whatever frame the
    decoder had reached when it stopped (18.8 s after the fifth keyframe at 7.0 s; 7.7 s
    after the fifth ``--every-n 19`` sample at 7.6 s: a 0.1 s last segment for a 1.9 s
    step), in the mask and in ``vidcap caption``'s summary and last cue alike. It is now
    where the next sample would be: the next ``--fps`` tick, else one median step on."""
    from vidcap.cli import main

    args = [*sampling, "--max-frames", "5", "--model", "tiny", "--quiet"]
    run_cli(["mask", str(SUBJECT), "--question", "red?", *args])
    settings = json.loads(capsys.readouterr().out)["settings"]
    assert main(["caption", str(SUBJECT), *args, "--out", str(tmp_path / "out")]) == 0
    captions = load_captions(tmp_path / "out" / "subject.jsonl")
    times = captions.times
    step = float(np.median(np.diff(times)))
    assert end is None or end == pytest.approx(times[-1] + step)
    [video] = json.loads((tmp_path / "out" / "summary.json").read_text())["videos"]
    assert settings["duration"] == pytest.approx(times[-1] + step) == video["duration"]


def test_max_frames_that_takes_the_last_sample_keeps_the_videos_end(tmp_path: Path) -> None:
    """Regression: ``--max-frames`` equal to the samples a video has (its last sample its
    M-th) ran one step past the end: 40.0 s for the 34 s subject.mp4 at ``--every-n 100
    --max-frames 4``. The end is never past where the header says the picture ends."""
    from vidcap.cli import main

    out = tmp_path / "out"
    args = ["--every-n", "100", "--max-frames", "4", "--model", "tiny", "--quiet"]
    assert main(["caption", str(SUBJECT), *args, "--out", str(out)]) == 0
    [video] = json.loads((out / "summary.json").read_text())["videos"]
    assert len(load_captions(out / "subject.jsonl").frames) == 4
    assert video["duration"] == 34.0


def test_mask_edges_found_in_review(tmp_path: Path, capsys, monkeypatch) -> None:
    """Review of round 50: a re-mask whose ``--out`` replaced the report beside the answers
    took no duration from it the next time (it said ``"recorded"``, only ``"decoded"`` was
    read); ``--out OUT/summary.json`` replaced the folder's summary, which query mode reads;
    and query mode refused a ``--model`` nobody gave where the working folder holds a folder
    named as the default model (its parsed default, an absolute path, was not the raw one)."""
    from vidcap.cli import main

    every = ["--every-n", "100", "--model", "tiny", "--quiet"]
    out = tmp_path / "q" / "p.json"
    run_cli(["mask", str(SUBJECT), "--question", "is there a red circle?", *every,
             "--out", str(out)])  # fmt: skip
    for _ in range(2):
        run_cli(["mask", str(answers_path(out)), "--regex", "--query", "^no", "--out", str(out)])
        settings = json.loads(out.read_text())["settings"]
        assert (settings["duration"], settings["duration_source"]) == (34.0, "recorded")
    folder = tmp_path / "out"
    assert main(["caption", str(SUBJECT), *every, "--out", str(folder)]) == 0
    with pytest.raises(UsageError, match="which this command reads"):
        run_cli(["mask", str(folder / "subject.jsonl"), "--query", "red",
                 "--out", str(folder / "summary.json")])  # fmt: skip
    (tmp_path / "cw" / "Salesforce" / "blip2-opt-2.7b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cw")
    capsys.readouterr()
    run_cli(["mask", str(folder / "subject.jsonl"), "--query", "red"])
    assert json.loads(capsys.readouterr().out)["frames"] == 4
