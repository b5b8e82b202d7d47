"""``--out`` as an fsspec URL: fsspec's in-memory filesystem, a real one, in this process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from vidcap.cli import main
from vidcap.remote_out import output_folder

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"


def _caption(out: str) -> int:
    return main(
        ["caption", str(SAMPLES / "shapes.mp4"), str(SAMPLES / "subject.mp4"), "--out", out]
        + ["--format", "jsonl,srt,parquet", "--model", "tiny", "--device", "cpu", "--quiet"]
    )


def test_cli_to_a_url_equals_a_local_run_and_resumes(tmp_path: Path) -> None:
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    assert _caption(url) == 0
    assert _caption(str(tmp_path / "local")) == 0

    for name in ("shapes.jsonl", "subject.jsonl", "shapes.srt"):
        assert fs.cat_file(f"{root}/{name}") == (tmp_path / "local" / name).read_bytes(), name
    record = json.loads(fs.cat_file(f"{root}/.vidcap/shapes.json"))
    local = json.loads((tmp_path / "local" / ".vidcap" / "shapes.json").read_text())
    assert record["result"].pop("seconds") >= 0 and local["result"].pop("seconds") >= 0
    assert record == local
    [shard] = fs.glob(f"{root}/parquet/*.parquet")
    with fs.open(shard, "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    assert len(rows) == sum(1 for _ in open(tmp_path / "local" / "shapes.jsonl")) + sum(
        1 for _ in open(tmp_path / "local" / "subject.jsonl")
    )
    assert not [p for p in fs.find(root) if p.endswith((".part", "run.lock"))]

    before = {path: info["created"] for path, info in fs.find(root, detail=True).items()}
    assert _caption(url) == 0  # everything resumed from the remote records
    summary = json.loads(fs.cat_file(f"{root}/summary.json"))
    assert summary["run"]["resumed"] == 2 and summary["totals"]["done"] == 2
    after = {path: info["created"] for path, info in fs.find(root, detail=True).items()}
    del before[f"{root}/summary.json"], after[f"{root}/summary.json"]
    assert after == before  # no output uploaded again, no shard added


def test_local_out_is_itself(tmp_path: Path) -> None:
    with output_folder(tmp_path / "x") as local:
        assert local == tmp_path / "x"
    with output_folder(f"file://{tmp_path}/y") as local:
        assert local == tmp_path / "y"
