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
