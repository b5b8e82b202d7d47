"""summary.json as the folder's index: ``open_folder`` (search, report, export) reads the one
file instead of every resume record while it lists every record as it is now, and
``write_summary`` reads again only the records changed since the last summary. Each kind of
change a folder meets must be seen: the videos are compared with those read record by
record."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import vidcap.folder
import vidcap.records
from tests.support.folders import KEY, FakeVideo, write_folder
from vidcap.folder import FolderVideo, open_folder
from vidcap.jobs import VideoResult
from vidcap.records import READ_STAMP, SUMMARY, write_record, write_summary

NAMES = ("alpha", "beta", "gamma", "delta", "epsilon")


@pytest.fixture
def out(tmp_path: Path) -> Path:
    videos = [FakeVideo(name, ("a red car", "a dog on a beach")) for name in NAMES]
    videos.append(FakeVideo("broken", error="videos/broken.mp4: moov atom not found"))
    return write_folder(tmp_path / "out", videos)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The names of the records read one by one (the real reader, counted)."""
    names: list[str] = []
    real = vidcap.records.read_record

    def counted(out_dir: Path, name: str):
        names.append(name)
        return real(out_dir, name)

    monkeypatch.setattr(vidcap.records, "read_record", counted)
    monkeypatch.setattr(vidcap.folder, "read_record", counted)
    return names


def facts(videos: list[FolderVideo]) -> list[dict]:
    return [dataclasses.asdict(video) for video in videos]


def from_records(out: Path) -> list[dict]:
    """The folder's videos read record by record (summary.json set aside)."""
    aside = out.parent / "summary.aside"
    shutil.move(out / SUMMARY, aside)
    try:
        return facts(open_folder(out))
    finally:
        shutil.move(aside, out / SUMMARY)


def record(out: Path, name: str, frames: int, status: str = "done") -> None:
    result = VideoResult(video=f"videos/{name}.mp4", name=name, status=status, frames=frames,
                         duration=float(frames), key=KEY, model="tiny")  # fmt: skip
    identity = {"path": f"videos/{name}.mp4", "size": 1, "mtime_ns": 1}
    write_record(out, name, KEY, identity, result.__dict__, {})


def test_a_current_summary_is_read_instead_of_every_record(out: Path, reads: list[str]) -> None:
    videos = facts(open_folder(out))
    assert reads == []
    assert videos == from_records(out) and len(videos) == 6
    assert isinstance(json.loads((out / SUMMARY).read_text())[READ_STAMP], int)


def change_in_place(out: Path) -> None:  # another result, the same file (an editor's save)
    path = out / ".vidcap" / "beta.json"
    data = json.loads(path.read_text())
    data["result"]["frames"] = 99
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write(json.dumps(data))
        handle.truncate()


def rename_inside(out: Path) -> None:  # a record whose result names another video
    path = out / ".vidcap" / "gamma.json"
    data = json.loads(path.read_text())
    data["result"]["name"] = "renamed"
    path.write_text(json.dumps(data))


def swap_names(out: Path) -> None:  # alpha's record names beta's video, and beta's alpha's
    paths = [out / ".vidcap" / f"{name}.json" for name in ("alpha", "beta")]
    data = [json.loads(path.read_text()) for path in paths]
    data[0]["result"]["name"], data[1]["result"]["name"] = "beta", "alpha"
    for path, record_data in zip(paths, data, strict=True):
        path.write_text(json.dumps(record_data))


def old_summary(out: Path) -> None:  # written by a version that did not say when
    data = json.loads((out / SUMMARY).read_text())
    del data[READ_STAMP]
    data["videos"][0]["frames"] = 1234  # (what it says is not taken)
    (out / SUMMARY).write_text(json.dumps(data))


CHANGES = {
    "a record rewritten": lambda out: record(out, "alpha", 7, "failed"),
    "a record changed in place": change_in_place,
    "a record removed": lambda out: (out / ".vidcap" / "delta.json").unlink(),
    "a record added": lambda out: record(out, "zeta", 3),
    "a record garbled": lambda out: (out / ".vidcap" / "epsilon.json").write_text("{not json"),
    "a record naming another video": rename_inside,
    "two records naming each other's videos": swap_names,
    "summary.json garbled": lambda out: (out / SUMMARY).write_text('{"videos": ['),
    "summary.json of an older version": old_summary,
    "summary.json removed": lambda out: (out / SUMMARY).unlink(),
}


@pytest.mark.parametrize("change", CHANGES)
def test_every_change_since_the_summary_is_seen(out: Path, change: str) -> None:
    """Each change is seen by the folder's reader, and by the next two summaries (the
    second made from the first where it may): both equal one written from scratch."""
    CHANGES[change](out)
    if (out / SUMMARY).exists():
        assert facts(open_folder(out)) == from_records(out)
    else:
        assert [v.name for v in open_folder(out)] == sorted(NAMES + ("broken",))
    later = [write_summary(out, [], 0, 1.0)["videos"] for _ in range(2)]
    assert facts(open_folder(out)) == from_records(out)
    (out / SUMMARY).unlink()
    scratch = write_summary(out, [], 0, 1.0)["videos"]
    assert later == [scratch, scratch]
    assert facts(open_folder(out)) == from_records(out)


def test_a_copied_folder_reads_its_records_and_the_same_videos(
    out: Path, tmp_path: Path, reads: list[str]
) -> None:
    """A copy's files all changed after its summary was written (change times are never
    copied): its records are read, and they give the same videos."""
    copy = Path(shutil.copytree(out, tmp_path / "copy"))
    assert [{**v, "folder": None} for v in facts(open_folder(copy))] == [
        {**v, "folder": None} for v in facts(open_folder(out))
    ]
    assert len(reads) == 6


def test_a_later_summary_reads_only_the_changed_records_and_equals_one_from_scratch(
    out: Path, reads: list[str]
) -> None:
    record(out, "beta", 42)  # changed
    record(out, "zeta", 3)  # new
    (out / ".vidcap" / "delta.json").unlink()  # gone
    summary = write_summary(out, [], 0, 1.0)
    assert sorted(reads) == ["beta", "zeta"]
    again = write_summary(out, [], 0, 1.0)  # nothing changed since: nothing read
    assert sorted(reads) == ["beta", "zeta"]
    (out / SUMMARY).unlink()
    scratch = write_summary(out, [], 0, 1.0)
    assert len(reads) == 2 + 6
    for data in (summary, again):
        assert data["videos"] == scratch["videos"] and data["totals"] == scratch["totals"]
    assert [v["name"] for v in scratch["videos"]] == sorted({*NAMES, "broken", "zeta"} - {"delta"})
    assert next(v for v in scratch["videos"] if v["name"] == "beta")["frames"] == 42


def test_a_folder_whose_summary_cannot_be_read_says_so(out: Path, caplog) -> None:
    """Regression: a folder copied without its ``.vidcap/`` whose ``summary.json`` is
    damaged (cut off in the copy) showed "0 videos" in the page, search and export without
    a word. The unreadable summary is named."""
    shutil.rmtree(out / vidcap.records.STATE_DIR)
    summary = out / SUMMARY
    summary.write_text(summary.read_text()[:40])
    assert open_folder(out) == []
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"{summary} cannot be read (") and warning.endswith(
        "): no video of it is listed"
    )


@pytest.mark.parametrize("text", ["[1, 2, 3]", '{"videos": {"t1": {}}}', '"videos"'])
def test_a_folder_whose_summary_is_another_shape_says_so(out: Path, caplog, text: str) -> None:
    """Regression: a ``summary.json`` that is JSON but not a vidcap summary (a list, a
    ``"videos"`` object) listed 0 videos in search, the page and export without a word."""
    shutil.rmtree(out / vidcap.records.STATE_DIR)
    summary = out / SUMMARY
    summary.write_text(text)
    assert open_folder(out) == []
    assert [r.getMessage() for r in caplog.records] == [
        f"{summary} is no vidcap summary (no list of videos): no video of it is listed"
    ]


def test_a_name_that_is_no_output_name_is_never_joined_to_a_path(
    out: Path, tmp_path: Path, caplog
) -> None:
    """Regression: a folder's video names were taken from its ``summary.json`` as they were
    and joined to paths: a folder from elsewhere (a shared captions dataset) naming a video
    ``../victim/owned`` made ``vidcap export`` write its labels outside the export (and
    read captions, thumbnails from outside the folder). Such names are passed over, with a
    warning; the other videos are read as before."""
    from tests.support.cli import run_main

    shutil.rmtree(out / vidcap.records.STATE_DIR)  # (a folder copied without its records)
    summary = json.loads((out / SUMMARY).read_text())
    good = summary["videos"][0]
    victim = tmp_path / "victim"
    bad = [f"{victim}/owned", "../victim/owned", "..", "a\0b"]
    summary["videos"] += [{**good, "name": name} for name in bad]
    (out / SUMMARY).write_text(json.dumps(summary))
    victim.mkdir()  # captions where the absolute name reads them
    shutil.copy(out / f"{good['name']}.jsonl", victim / "owned.jsonl")
    assert [v.name for v in open_folder(out)] == sorted([*NAMES, "broken"])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(bad) and all("not an output name" in m for m in said)
    target = tmp_path / "export"
    result = run_main("export", out, "--to", "fiftyone", target)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["owned.jsonl"]  # no owned.json
    assert sorted(p.stem for p in (target / "labels").glob("*.json")) == sorted(NAMES)


def test_json_nested_too_deep_is_malformed_json_not_a_traceback(
    out: Path, tmp_path: Path, capsys
) -> None:
    """Regression: a ``summary.json``, a record, a caption file or a segments file nested
    deeper than the parser's recursion limit (``[[[…``, 200 KB; broken or hostile: a
    folder from elsewhere may hold anything) ended ``vidcap report``, ``search``,
    ``export``, ``mask`` and ``clips`` with a RecursionError traceback. It is malformed
    JSON like any other: the summary is passed over (the records read instead), a record
    is no record, a caption or segments file is one line and exit 2."""
    from vidcap.cli import main
    from vidcap.jsontext import loads

    deep = "[" * 200_000
    with pytest.raises(json.JSONDecodeError, match="nested too deep"):
        loads(deep)
    (out / SUMMARY).write_text(deep)
    names = [video.name for video in open_folder(out)]
    assert names and all(isinstance(name, str) for name in names)
    assert main(["report", str(out)]) == 0
    assert main(["search", str(out), "red"]) == 0
    record = next((out / ".vidcap").glob("*.json"))
    record.write_text('{"a":' * 200_000)
    assert main(["report", str(out)]) == 0  # that video is not listed; the others are
    assert len(list(open_folder(out))) == len(names) - 1
    captions = next(out.glob("*.jsonl"))
    captions.write_text(deep + "\n")
    assert main(["mask", str(captions), "--query", "red"]) == 2
    segments = tmp_path / "deep.json"
    segments.write_text(deep)
    sample = Path(__file__).resolve().parents[1] / "sample_videos" / "shapes.mp4"
    assert main(["clips", str(sample), str(segments), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RecursionError" not in err
    assert "not a caption JSONL file (nested too deep)" in err
    assert "not a segments JSON file (nested too deep" in err


@pytest.mark.parametrize(
    "change",
    [
        {"frames": "many"},
        {"duration": "long"},
        {"status": 5},
        {"damaged_frames": "zz"},
        {"lost_frames": {"a": 1}},
        {"name": ["x"]},
        {"duration": float("inf")},
    ],  # fmt: skip
)
def test_a_record_not_as_vidcap_writes_it_is_no_record(out: Path, change: dict, capsys) -> None:
    """Regression: a resume record whose frame count was a string (a folder from elsewhere,
    a hand edit) ended every later run at its summary with a TypeError traceback, after
    captioning. Such a record (or summary entry) is unreadable: its video is not listed
    (and a run redoes it); the summary is read from the records."""
    from vidcap.cli import main
    from vidcap.records import read_record

    record_file = sorted((out / ".vidcap").glob("*.json"))[0]
    record = json.loads(record_file.read_text())
    record["result"].update(change)
    record_file.write_text(json.dumps(record))
    assert read_record(out, record_file.stem) is None
    write_summary(out, [], 0, 1.0)  # the whole folder's totals: no TypeError
    assert record_file.stem not in [video.name for video in open_folder(out)]
    summary = json.loads((out / SUMMARY).read_text())
    summary["videos"][0].update(change)  # and a summary entry so: the records are read
    (out / SUMMARY).write_text(json.dumps(summary))
    assert vidcap.records.summary_videos(out) is None
    assert main(["report", str(out)]) == 0
    assert "Traceback" not in capsys.readouterr().err
