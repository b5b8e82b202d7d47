"""Damage marks travel with the caption rows: wherever rows are read (JSONL or Parquet),
``vidcap search``, the page and the export see them even when the video's record does not
list them; and a ``vidcap mask`` report's per-segment counts reach the page's mask track
and the export's segments."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.folders import KEY, FakeVideo, source_of, write_folder
from tests.support.page import videos_of
from vidcap.cli import main
from vidcap.export import export_fiftyone
from vidcap.folder import open_folder, read_captions
from vidcap.outputs import render_jsonl
from vidcap.report import write_report
from vidcap.search import search

# frames 0, 10, … 50 at 1 s apart; damaged: 10 (matches "red car"), 20 (does not)
CAPTIONS = ("a red car", "a red car", "a dog", "a red car", "a red car", "a red car")
MARKED = FakeVideo("glitch", CAPTIONS, damaged=(10, 20))


def frame_attrs(target: Path, name: str) -> dict[str, list[str]]:
    document = json.loads((target / "labels" / f"{name}.json").read_text())
    return {
        number: [a["name"] for a in frame["attrs"]["attrs"]]
        for number, frame in document["frames"].items()
    }


@pytest.fixture(params=["jsonl", "parquet"])
def rows_only(request, tmp_path: Path) -> Path:
    """A folder whose record of ``glitch`` lists no damaged frames (written by another tool,
    or a record rebuilt from the summary) while its caption rows mark frames 10 and 20."""
    out = write_folder(tmp_path / "out", [replace(MARKED, damaged=())], formats=("jsonl",))
    source = source_of(out, MARKED)
    if request.param == "jsonl":
        (out / "glitch.jsonl").write_text(render_jsonl(source, MARKED.frames), encoding="utf-8")
    else:
        pytest.importorskip("pyarrow")
        from vidcap.jobs import VideoJob
        from vidcap.parquet import ParquetShardWriter

        (out / "glitch.jsonl").unlink()
        writer = ParquetShardWriter(out, KEY)
        writer.add(VideoJob(0, source, MARKED.name, {"path": source}), MARKED.frames)
        writer.close()
    [video] = open_folder(out)
    assert video.damaged_frames == ()
    return out


def test_the_rows_marks_reach_search_the_page_and_the_export(rows_only: Path, tmp_path) -> None:
    [read] = read_captions(open_folder(rows_only))
    assert [f.index for f in read.frames if f.damaged] == [10, 20]
    assert read.damaged() == {10, 20}
    found = {m.start: m.damaged for m in search([rows_only], ["red car"])}
    assert found == {0.0: 1, 3.0: 0}
    write_report(rows_only)
    assert videos_of(rows_only)["glitch"]["dm"] == [10, 20]
    export_fiftyone(rows_only, tmp_path / "fo")
    marked = {
        n for n, names in frame_attrs(tmp_path / "fo", "glitch").items() if "damaged" in names
    }
    assert marked == {"11", "21"}  # (FiftyOne counts frames from 1)


def test_a_mask_reports_counts_reach_the_page_and_the_export(tmp_path: Path) -> None:
    out = write_folder(tmp_path / "out", [MARKED], formats=("jsonl",))
    mask = ["mask", str(out / "glitch.jsonl"), "--query", "red car"]
    assert main([*mask, "--out", str(out / "glitch.mask.json"), "--quiet"]) == 0
    report = json.loads((out / "glitch.mask.json").read_text())
    assert [(s["start"], s["end"], s["damaged"]) for s in report["segments"]] == [
        (0.0, 2.0, 1),
        (3.0, 6.0, 0),
    ]
    write_report(out)
    assert videos_of(out)["glitch"]["mk"]["seg"] == [[0.0, 2.0, 2, 1], [3.0, 6.0, 3, 0]]
    export_fiftyone(out, tmp_path / "fo", queries=["red car"])
    document = json.loads((tmp_path / "fo" / "labels" / "glitch.json").read_text())
    segments = [e for e in document["events"]["events"] if e["name"] == "segments"]
    counts = [[a["value"] for a in e["attrs"]["attrs"] if a["name"] == "damaged"] for e in segments]
    # the mask report's two segments, then the same two found for the query "red car"
    assert [e["label"] for e in segments] == ["red car"] * 4
    assert counts == [[1], [], [1], []]
