"""Parquet shards through the real Committer: rows, metadata, shard size, resume per shard."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.videos import read_jsonl
from vidcap.commit import STATE_DIR, Committer, RunSettings, plan
from vidcap.errors import UsageError
from vidcap.outputs import CaptionedFrame
from vidcap.parquet import SHARD_DIR, ParquetShardWriter, run_writers_for

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"


def _sources(tmp_path: Path, n: int) -> list[str]:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"v{i}.mp4"
        path.write_bytes(b"not decoded here")
        paths.append(str(path))
    return paths


def _feed(committer: Committer, job_id: int, frames: int) -> None:
    for index in reversed(range(frames)):  # out of order, and one duplicate
        committer.frame(job_id, CaptionedFrame(index * 10, index * 1.0, f"caption {index}"))
    committer.frame(job_id, CaptionedFrame(0, 0.0, "caption 0"))
    committer.end(job_id, frames, frames * 1.0)


def test_shards_rows_metadata_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("parquet",))
    sources = _sources(tmp_path, 3)
    metadata = [{"clip_id": 1, "tag": "a"}, {"clip_id": 2}, {"clip_id": 3, "tag": "c"}]
    jobs, resumed = plan(sources, settings, metadata)
    assert (len(jobs), resumed) == (3, [])

    committer = Committer(settings, jobs, run_writers_for(settings, metadata, shard_rows=4))
    _feed(committer, 0, 3)
    assert not (out / SHARD_DIR).exists()  # 3 rows < 4: buffered, not yet durable
    assert not (out / STATE_DIR / "v0.json").exists()
    _feed(committer, 1, 2)  # 5 rows → shard 0 (videos 0 and 1), records written
    assert (out / STATE_DIR / "v0.json").exists() and (out / STATE_DIR / "v1.json").exists()
    _feed(committer, 2, 1)
    results = committer.close(1.0)
    assert [r.status for r in results] == ["done"] * 3

    shards = sorted((out / SHARD_DIR).iterdir())
    assert [len(pq.read_table(s)) for s in shards] == [5, 1]
    assert not list(out.glob("*.jsonl"))  # parquet alone: no per-video files
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert rows[0] == {
        "video": sources[0],
        "frame": 0,
        "time": 0.0,
        "caption": "caption 0",
        "clip_id": 1,
        "tag": "a",
        "key": settings.key(),
    }
    assert [(r["video"], r["frame"]) for r in rows] == [
        (sources[0], 0), (sources[0], 10), (sources[0], 20),
        (sources[1], 0), (sources[1], 10), (sources[2], 0),
    ]  # fmt: skip
    assert rows[3]["tag"] is None

    todo, resumed = plan(sources, settings, metadata)
    assert (todo, len(resumed)) == ([], 3)


def test_unfinished_shard_leaves_nothing_and_is_redone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("jsonl", "parquet"))
    sources = _sources(tmp_path, 2)
    jobs, _ = plan(sources, settings)
    committer = Committer(settings, jobs, run_writers_for(settings, shard_rows=3))
    _feed(committer, 0, 3)  # a shard
    _feed(committer, 1, 2)  # buffered; the run "dies" before close
    assert (out / "v1.jsonl").exists()  # per-video file written, but no record
    assert not (out / STATE_DIR / "v1.json").exists()
    assert [p.name.startswith("part-") for p in (out / SHARD_DIR).iterdir()] == [True]

    todo, resumed = plan(sources, settings)
    assert [j.source for j in todo] == [sources[1]]
    assert [r.video for r in resumed] == [sources[0]]
    committer = Committer(settings, todo, run_writers_for(settings))
    _feed(committer, 0, 2)
    committer.close(1.0)
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert sorted((r["video"], r["frame"]) for r in rows) == sorted(
        [(sources[0], i * 10) for i in range(3)] + [(sources[1], i * 10) for i in range(2)]
    )


def test_no_parquet_no_writer_and_validation(tmp_path: Path) -> None:
    assert run_writers_for(RunSettings(out_dir=tmp_path)) == []
    with pytest.raises(UsageError, match=r"--shard-rows must be >= 1, got 0"):
        ParquetShardWriter(tmp_path, "k", shard_rows=0)


@pytest.mark.slow
def test_cli_embedded_list_files_to_parquet(generated_videos, tmp_path: Path) -> None:
    """``vidcap caption`` (embedded engine): a .parquet and a .txt list → Parquet shards."""
    h264, _ = generated_videos["h264-mp4"]
    vfr, _ = generated_videos["vfr-mp4"]
    listing = tmp_path / "clips.parquet"
    pq.write_table(
        pa.table({"path": [str(h264), str(vfr)], "clip_id": [11, 12], "tag": ["a", None]}),
        listing,
    )
    (tmp_path / "more.txt").write_text(f"file://{SAMPLE}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vidcap", "caption", str(listing), str(tmp_path / "more.txt")]
    command += ["--out", str(out), "--format", "parquet,jsonl", "--shard-rows", "5"]
    command += ["--model", "tiny", "--device", "cpu", "--quiet"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert {r["video"] for r in rows} == {str(h264), str(vfr), str(SAMPLE)}
    for row in rows:
        expected = {str(h264): (11, "a"), str(vfr): (12, None), str(SAMPLE): (None, None)}
        assert (row["clip_id"], row["tag"]) == expected[row["video"]]
    for name, video in (("h264-mp4", h264), ("vfr-mp4", vfr), ("shapes", SAMPLE)):
        ours = sorted(
            (r["frame"], r["time"], r["caption"]) for r in rows if r["video"] == str(video)
        )
        assert ours == [
            (f["frame"], f["time"], f["caption"]) for f in read_jsonl(out / f"{name}.jsonl")
        ]
    assert json.loads((out / STATE_DIR / "h264-mp4.json").read_text())["metadata"] == {
        "clip_id": 11,
        "tag": "a",
    }

    shards = sorted((out / SHARD_DIR).iterdir())
    assert len(shards) > 1
    again = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted((out / SHARD_DIR).iterdir()) == shards  # all resumed: no new shard
