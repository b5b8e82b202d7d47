"""An output folder from elsewhere may hold anything under an output's name: a FIFO, a link
to ``/dev/zero``, a folder. Every command that reads a folder back passes such a file over
(``vidcap.regular``) instead of waiting on it forever or reading without end.

Each command runs in a daemon thread joined with a time limit: a regression shows as a
failed test, not a hung suite.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.folders import library, write_folder
from vidcap.cli import main
from vidcap.folder import open_folder, read_captions

LIMIT_S = 60


def finishes(call: Callable[[], object]) -> object:
    """``call()``'s value; fails the test if it has not returned within ``LIMIT_S``."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(LIMIT_S)
    assert not thread.is_alive(), "still reading after a minute: it waits on the file"
    assert box, "raised (see the thread's traceback above)"
    return box[0]


def plant(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "out", library())


@pytest.mark.parametrize("kind", ["fifo", "zero", "folder"])
def test_a_planted_record_or_summary_is_passed_over(folder: Path, kind: str, capsys) -> None:
    names = sorted(p.stem for p in (folder / ".vidcap").glob("*.json"))
    plant(folder / ".vidcap" / "street.json", kind)  # the record of a video with red cars
    plant(folder / "summary.json", kind)
    videos = finishes(lambda: open_folder(folder))
    assert sorted(v.name for v in videos) == [name for name in names if name != "street"]
    assert finishes(lambda: main(["search", str(folder), "red car", "--json"])) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["videos"] == len(names) - 1 and found["moments"]
    assert all(moment["name"] != "street" for moment in found["moments"])
    assert finishes(lambda: main(["report", str(folder)])) == 0
    assert (folder / "index.html").is_file()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_planted_captions_are_a_video_not_read(folder: Path, kind: str) -> None:
    videos = finishes(lambda: open_folder(folder))
    plant(folder / f"{videos[0].name}.jsonl", kind)
    reads = finishes(lambda: list(read_captions(videos)))
    problems = {read.video.name: read.problem for read in reads}
    assert f"{videos[0].name}.jsonl" in problems[videos[0].name]
    assert all(problems[v.name] is None for v in videos[1:])


def test_planted_files_in_the_page_and_shard_folders_are_passed_over(folder: Path) -> None:
    assert finishes(lambda: main(["report", str(folder)])) == 0
    shards = folder / "report"
    for data in sorted(p for p in shards.rglob("*.js") if p.is_file())[:2]:
        plant(data, "fifo")  # a page's data file the rebuild compares with what it writes
    (folder / "parquet").mkdir()
    plant(folder / "parquet" / "part-00000.parquet", "fifo")
    assert finishes(lambda: main(["report", str(folder)])) == 0
    shutil.rmtree(folder / "parquet")


SHAPES = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"
ANOTHER_USER = 4242


def plant_link(path: Path, target: Path) -> None:
    """A link to ``target`` at ``path``, made by another user (as in a shared folder)."""
    path.symlink_to(target)
    try:
        os.lchown(path, ANOTHER_USER, ANOTHER_USER)
    except PermissionError:
        pytest.skip("only root can give a link to another user here")


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_link_or_fifo_under_a_part_or_the_lock_is_replaced_never_written_through(
    tmp_path: Path, kind: str
) -> None:
    """Every file vidcap writes goes through a new ``.part`` (``outputs.create_new``). A
    link planted under a part's name in a shared folder (``summary.json.part`` →
    ``~/.bashrc``) had its target truncated and overwritten, and the output became the
    link; the run lock's link was written through too; a FIFO there hung the run. Now each
    is removed, its target untouched; so are an earlier export's."""
    victim = tmp_path / "victim"
    victim.write_text("a user's file\n")
    out, exported = tmp_path / "out", tmp_path / "exported"
    scripts = tmp_path / "scripts"  # a user's folder, linked as the page's data folder
    scripts.mkdir()
    (scripts / "data-1.js").write_text("a user's script\n")
    out.mkdir()
    plant_link(out / "report", scripts)
    planted = [
        out / "summary.json.part", out / "shapes.jsonl.part", out / "shapes.srt.part",
        out / "index.html.part", out / ".vidcap" / "run.lock", out / ".vidcap" / "shapes.json.part",
        exported / "data" / "shapes.mp4.part",
    ]  # fmt: skip
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(victim) if kind == "link" else os.mkfifo(path)
    earlier = {"type": "eta.core.datasets.LabeledVideoDataset", "index": []}
    (exported / "manifest.json").write_text(json.dumps(earlier) + "\n")  # an earlier export
    notes = tmp_path / "notes"  # a user's folder linked in place of the export's labels
    notes.mkdir()
    (notes / "todo.json").write_text("a user's file\n")
    plant_link(exported / "labels", notes)
    args = ["caption", str(SHAPES), "--out", str(out), "--model", "tiny", "--quiet"]
    assert finishes(lambda: main(args)) == 0
    args = ["export", str(out), "--to", "fiftyone", str(exported), "--copy-media"]
    assert finishes(lambda: main(args)) == 0
    assert victim.read_text() == "a user's file\n"
    assert [p.name for p in scripts.iterdir()] == ["data-1.js"]  # (stale data: removed)
    assert [p.name for p in notes.iterdir()] == ["todo.json"]  # (stale labels: removed)
    for path in planted:
        assert not path.is_symlink() and (not path.exists() or path.is_file()), path
    for folder in (out, exported):
        assert not [p for p in folder.rglob("*") if p.is_symlink()]
    assert json.loads((out / "summary.json").read_text())["totals"]["done"] == 1
    assert (exported / "data" / "shapes.mp4").read_bytes() == SHAPES.read_bytes()
    assert json.loads((exported / "labels" / "shapes.json").read_text())["frames"]


def test_a_link_in_place_of_the_state_or_shard_folder_is_replaced(tmp_path: Path) -> None:
    """``OUT/.vidcap`` and ``OUT/parquet`` are written into, renamed over and cleaned by a
    run: linked to a user's folder in a shared output folder, the run replaced a file there
    named as a record (``configs/shapes.json``). Now the link gives way to a folder of the
    run's own (``regular.own_folder``); the page's data folder likewise. A link of the
    user's own (``OUT/.vidcap`` on a faster disk) is followed, as before."""
    configs, tables = tmp_path / "configs", tmp_path / "tables"
    for folder in (configs, tables):
        folder.mkdir()
        (folder / "shapes.json").write_text("a user's file\n")
    out = tmp_path / "out"
    out.mkdir()
    plant_link(out / ".vidcap", configs)
    plant_link(out / "parquet", tables)
    (out / "thumbs").mkdir()
    plant_link(out / "thumbs" / "shapes", configs)  # a video's thumbnails: replaced whole
    args = ["caption", str(SHAPES), "--out", str(out), "--model", "tiny", "--quiet"]
    assert finishes(lambda: main([*args, "--format", "jsonl,parquet"])) == 0
    for folder in (configs, tables):
        assert [(p.name, p.read_text()) for p in folder.iterdir()] == [
            ("shapes.json", "a user's file\n")
        ]
    assert not (out / ".vidcap").is_symlink() and (out / ".vidcap" / "shapes.json").is_file()
    assert not (out / "parquet").is_symlink() and list((out / "parquet").glob("part-*.parquet"))
    assert not (out / "thumbs" / "shapes").is_symlink()
    assert len(list((out / "thumbs" / "shapes").glob("*.jpg"))) == 30
    mine = tmp_path / "mine"  # the same, linked by the user: followed, and resumed from
    mine.mkdir()
    (mine / ".vidcap").symlink_to(configs)
    shutil.copytree(out / ".vidcap", configs, dirs_exist_ok=True)
    shutil.copy(out / "shapes.jsonl", mine / "shapes.jsonl")
    for folder in ("thumbs", "parquet"):
        shutil.copytree(out / folder, mine / folder)
    again = [*args[:3], str(mine), *args[4:], "--format", "jsonl,parquet"]
    assert finishes(lambda: main(again)) == 0
    assert (mine / ".vidcap").is_symlink() and (configs / "shapes.json").is_file()
    summary = json.loads((mine / "summary.json").read_text())
    assert summary["run"]["resumed"] == 1
