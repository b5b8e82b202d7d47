"""Parquet shards through the real Committer: rows, metadata, shard size, resume per shard."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.cli import run_main
from tests.support.videos import read_jsonl
from vidcap.commit import Committer
from vidcap.errors import UsageError
from vidcap.folder import open_folder, read_captions
from vidcap.jobs import RunSettings, VideoJob
from vidcap.outputs import CaptionedFrame
from vidcap.parquet import SHARD_DIR, ParquetShardWriter, run_writers_for
from vidcap.plan import plan
from vidcap.records import STATE_DIR

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


def read_back(out: Path) -> list:
    """The folder's videos with their captions, as ``vidcap search`` and the page read them
    (no JSONL here: from the shards)."""
    return list(read_captions(open_folder(out)))


def _feed(committer: Committer, job_id: int, frames: int) -> None:
    for index in reversed(range(frames)):  # out of order, and one duplicate
        committer.frame(job_id, CaptionedFrame(index * 10, index * 1.0, f"caption {index}"))
    committer.frame(job_id, CaptionedFrame(0, 0.0, "caption 0"))
    committer.end(job_id, frames, frames * 1.0)


def test_shards_rows_metadata_and_resume(tmp_path: Path, caplog) -> None:
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
        "name": "v0",
        "frame": 0,
        "time": 0.0,
        "caption": "caption 0",
        "damaged": False,
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
    # Regression (an outside-in round): a list edited since (a value changed, a column
    # added) was resumed as it was, its rows keeping the old values where a fresh run
    # writes the new. Now such a video is captioned again, said in one line; the columns
    # in another order, or the inputs named without a list, are the same values.
    edited = [{"tag": "a", "clip_id": 1}, {"clip_id": 2, "tag": "new"}, {"clip_id": 3, "tag": "c"}]
    with caplog.at_level(logging.WARNING, logger="vidcap.plan"):
        todo, resumed = plan(sources, settings, edited)
    assert [j.source for j in todo] == [sources[1]] and len(resumed) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "1 video done before is captioned again: its list row gives other values than its "
        "Parquet rows hold (its other columns, edited or added since)"
    ]
    assert plan(sources, settings)[0] == []


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

    # A shard the run was writing when SIGKILLed (a hidden .part, never renamed in): it
    # stayed for good (regression); the next run to write a shard removes it.
    killed = out / SHARD_DIR / ".part-20261207T000000-dead00-00000.parquet.part"
    killed.write_bytes(b"half a shard")
    todo, resumed = plan(sources, settings)
    assert [j.source for j in todo] == [sources[1]]
    assert [r.video for r in resumed] == [sources[0]]
    writers = run_writers_for(settings)
    assert killed.exists()  # (not when the writer is made: before the run holds the folder)
    committer = Committer(settings, todo, writers)
    _feed(committer, 0, 2)
    committer.close(1.0)
    assert not killed.exists()
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert sorted((r["video"], r["frame"]) for r in rows) == sorted(
        [(sources[0], i * 10) for i in range(3)] + [(sources[1], i * 10) for i in range(2)]
    )


def test_no_parquet_no_writer_and_validation(tmp_path: Path) -> None:
    assert run_writers_for(RunSettings(out_dir=tmp_path)) == []
    (tmp_path / SHARD_DIR).mkdir()
    (tmp_path / SHARD_DIR / "part-remote-00000.parquet").touch()  # (a placeholder: no rows)
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
    command = ["caption", str(listing), str(tmp_path / "more.txt")]
    command += ["--out", str(out), "--format", "parquet,jsonl", "--shard-rows", "5"]
    command += ["--model", "tiny", "--device", "cpu", "--quiet"]
    result = run_main(*command)
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
    again = run_main(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted((out / SHARD_DIR).iterdir()) == shards  # all resumed: no new shard


def _rows_by_video(out: Path) -> list[tuple[str, int, str]]:
    return sorted(
        (r["video"], r["frame"], r["key"]) for r in pq.read_table(out / SHARD_DIR).to_pylist()
    )


def _parquet_run(out: Path, sources: list[str], frames: Callable[[VideoJob], int]) -> RunSettings:
    """A ``--format parquet`` run over ``sources``, each given ``frames(job)`` frames."""
    settings = RunSettings(out_dir=out, formats=("parquet",))
    jobs, _ = plan(sources, settings)
    committer = Committer(settings, jobs, run_writers_for(settings))
    for job in jobs:
        _feed(committer, job.id, frames(job))
    committer.close(1.0)
    return settings


def test_a_format_change_replaces_the_videos_earlier_rows(tmp_path: Path) -> None:
    """Regression (#16.8): parquet → parquet,jsonl redid every video and left its earlier
    rows beside the new ones (two rows a frame, while summary.json counted one)."""
    out = tmp_path / "out"
    sources = _sources(tmp_path, 3)
    first = _parquet_run(out, sources, lambda job: 2 + job.id)
    [earlier_shard] = (out / SHARD_DIR).iterdir()
    placeholder = out / SHARD_DIR / "part-remote-00000.parquet"  # see vidcap.remote_out
    placeholder.touch()

    second = RunSettings(out_dir=out, formats=("parquet", "jsonl"))
    jobs, resumed = plan(sources[:2], second)  # v2 is not in this run: its rows stay
    assert (len(jobs), resumed) == (2, [])
    committer = Committer(second, jobs, run_writers_for(second, shard_rows=2))
    for job in jobs:
        _feed(committer, job.id, 2 + job.id)
    results = committer.close(1.0)
    assert placeholder.is_file() and placeholder.stat().st_size == 0  # left alone
    placeholder.unlink()

    assert _rows_by_video(out) == sorted(
        [(sources[0], i * 10, second.key()) for i in range(2)]
        + [(sources[1], i * 10, second.key()) for i in range(3)]
        + [(sources[2], i * 10, first.key()) for i in range(4)]
    )
    assert sum(r.frames for r in results) == 5 and (out / "v0.jsonl").is_file()
    assert pq.read_table(earlier_shard).column("video").to_pylist() == [sources[2]] * 4
    assert not list((out / SHARD_DIR).glob(".*"))  # no .part left

    third = RunSettings(out_dir=out, formats=("parquet",), model="another")
    jobs, _ = plan(sources[2:], third)
    committer = Committer(third, jobs, run_writers_for(third))
    _feed(committer, jobs[0].id, 4)
    committer.close(1.0)
    assert not earlier_shard.exists()  # nothing left in it: removed
    assert len(_rows_by_video(out)) == 2 + 3 + 4


def test_a_run_without_parquet_removes_the_rows_of_the_videos_it_redoes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a video redone by a run without --format parquet (other settings,
    ``--format jsonl``) kept its earlier rows in the shards, captions its JSONL no longer
    has (two answers to one question for a reader of the shards). They are removed, a
    batch of videos at a time, each record waiting for its batch (a new video's waits for
    nothing); the rows of videos not redone stay, and no shard is written."""
    monkeypatch.setattr("vidcap.parquet.DROP_BATCH_VIDEOS", 2)
    out = tmp_path / "out"
    sources = _sources(tmp_path, 4)
    first = _parquet_run(out, sources, lambda job: 2)
    [shard] = (out / SHARD_DIR).iterdir()

    def key(name: str) -> str:
        return json.loads((out / STATE_DIR / f"{name}.json").read_text())["key"]

    second = RunSettings(out_dir=out, formats=("jsonl",), model="another")
    [writer] = run_writers_for(second)
    assert not writer.rows
    new = _sources(tmp_path, 5)[4]  # (a video no shard holds: its record waits for nothing)
    jobs, _ = plan([*sources[:3], new], second)  # v3 is not in this run: its rows stay
    committer = Committer(second, jobs, [writer])
    _feed(committer, jobs[3].id, 2)
    assert key("v4") == second.key()

    _feed(committer, jobs[0].id, 3)
    assert key("v0") == first.key()  # (its new record waits for its batch)
    _feed(committer, jobs[1].id, 3)
    assert key("v0") == key("v1") == second.key()
    assert _rows_by_video(out) == sorted(
        (source, i * 10, first.key()) for source in sources[2:] for i in range(2)
    )
    _feed(committer, jobs[2].id, 3)
    committer.close(1.0)
    assert [p.name for p in (out / SHARD_DIR).iterdir()] == [shard.name]  # (none written)
    assert _rows_by_video(out) == [(sources[3], i * 10, first.key()) for i in range(2)]
    assert (out / "v0.jsonl").is_file()


@pytest.mark.parametrize("older", [False, True], ids=["shard", "shard-without-name"])
def test_a_video_redone_after_its_record_was_lost_has_its_rows_once(
    tmp_path: Path, older: bool
) -> None:
    """A run killed between a shard's rename and the records: the rerun redoes those videos
    and their rows from the killed run go. ``older``: the shard an older vidcap wrote,
    without the ``name`` column: its rows go by ``video``."""
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("parquet",))
    sources = _sources(tmp_path, 2)
    jobs, _ = plan(sources, settings)
    committer = Committer(settings, jobs, run_writers_for(settings))
    _feed(committer, 0, 3)
    _feed(committer, 1, 2)
    committer.close(1.0)
    (out / STATE_DIR / "v1.json").unlink()  # as if killed before v1's record
    if older:
        [shard] = (out / SHARD_DIR).iterdir()
        pq.write_table(pq.read_table(shard).drop_columns(["name"]), shard)

    jobs, resumed = plan(sources, settings)
    assert [j.source for j in jobs] == [sources[1]] and len(resumed) == 1
    committer = Committer(settings, jobs, run_writers_for(settings))
    _feed(committer, jobs[0].id, 2)
    committer.close(1.0)
    assert _rows_by_video(out) == sorted(
        [(sources[0], i * 10, settings.key()) for i in range(3)]
        + [(sources[1], i * 10, settings.key()) for i in range(2)]
    )


def test_a_video_given_under_another_path_replaces_its_rows(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    [source] = _sources(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    other_path = "in/v0.mp4"  # the same file, relative
    first = RunSettings(out_dir=out, formats=("parquet",))
    jobs, _ = plan([source], first)
    committer = Committer(first, jobs, run_writers_for(first))
    _feed(committer, 0, 2)
    committer.close(1.0)
    second = RunSettings(out_dir=out, formats=("parquet",), model="another")
    jobs, _ = plan([other_path], second)
    assert jobs[0].name == "v0"
    committer = Committer(second, jobs, run_writers_for(second))
    _feed(committer, 0, 2)
    committer.close(1.0)
    assert _rows_by_video(out) == [(other_path, 0, second.key()), (other_path, 10, second.key())]


def test_two_files_given_by_one_relative_path_keep_their_rows_apart(
    tmp_path: Path, monkeypatch
) -> None:
    """``clip.mp4`` captioned from two working directories into one folder: two files, two
    output names, one ``video`` text. The second run's rows took the first's away (rows
    were told apart by ``video`` only); each row now names its output (``name``), and a
    row another video's record holds stays. Redoing one of them still replaces its own."""
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("parquet",))
    names = []
    for folder, frames in (("a", 3), ("b", 2)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.mp4").write_bytes(folder.encode() * 9)
        monkeypatch.chdir(tmp_path / folder)
        jobs, _ = plan(["clip.mp4"], settings)
        committer = Committer(settings, jobs, run_writers_for(settings))
        _feed(committer, 0, frames)
        committer.close(1.0)
        names.append(jobs[0].name)
    assert names[0] == "clip" and names[1].startswith("clip-")
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert sorted((r["name"], r["video"], r["frame"]) for r in rows) == sorted(
        [("clip", "clip.mp4", i * 10) for i in range(3)]
        + [(names[1], "clip.mp4", i * 10) for i in range(2)]
    )
    # and the folder's readers (search, the page, export) give each its own captions
    read = {r.video.name: ([f.index for f in r.frames], r.problem) for r in read_back(out)}
    assert read == {"clip": ([0, 10, 20], None), names[1]: ([0, 10], None)}
    other = RunSettings(out_dir=out, formats=("parquet",), model="another")
    jobs, _ = plan(["clip.mp4"], other)  # (in b) redone under other settings
    assert [j.name for j in jobs] == [names[1]]
    committer = Committer(other, jobs, run_writers_for(other))
    _feed(committer, 0, 4)
    committer.close(1.0)
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert sorted((r["name"], r["frame"], r["key"]) for r in rows) == sorted(
        [("clip", i * 10, settings.key()) for i in range(3)]
        + [(names[1], i * 10, other.key()) for i in range(4)]
    )
    read = {r.video.name: [f.index for f in r.frames] for r in read_back(out)}
    assert read == {"clip": [0, 10, 20], names[1]: [0, 10, 20, 30]}


def test_rows_a_killed_run_left_under_a_name_since_hashed_go(tmp_path: Path) -> None:
    """A run killed between a shard and the record: its rows name ``clip``. The rerun has
    another file of that stem too, so both are named by hash: the killed run's rows still
    go (by source: no record holds ``clip``), and no video is listed twice."""
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("parquet",))
    first, second = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(path.parent.name.encode() * 9)
    jobs, _ = plan([str(first)], settings)
    committer = Committer(settings, jobs, run_writers_for(settings))
    _feed(committer, 0, 3)
    committer.close(1.0)
    (out / STATE_DIR / "clip.json").unlink()  # as if killed before the record
    jobs, _ = plan([str(first), str(second)], settings)
    assert all(job.name.startswith("clip-") for job in jobs)
    committer = Committer(settings, jobs, run_writers_for(settings))
    _feed(committer, 0, 3)
    _feed(committer, 1, 2)
    committer.close(1.0)
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert sorted((r["name"], r["frame"]) for r in rows) == sorted(
        [(jobs[0].name, i * 10) for i in range(3)] + [(jobs[1].name, i * 10) for i in range(2)]
    )


@pytest.mark.heavy
def test_cli_format_change_leaves_one_row_per_frame(tmp_path: Path) -> None:
    """The CLI end to end: ``--format parquet``, then ``--format parquet,jsonl``."""
    out = tmp_path / "out"
    command = ["caption", str(SAMPLE), "--out", str(out)]
    command += ["--model", "tiny", "--quiet", "--fps", "0.5"]
    for formats in ("parquet", "parquet,jsonl"):
        result = run_main(*command, "--format", formats)
        assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = pq.read_table(out / SHARD_DIR).to_pylist()
    assert len(rows) == summary["totals"]["frames"] == len(read_jsonl(out / "shapes.jsonl")) > 0
    assert len({(r["video"], r["frame"]) for r in rows}) == len(rows)


def test_a_later_runs_columns_take_the_types_the_shards_hold(tmp_path: Path, caplog) -> None:
    """Regression: each run typed its metadata columns from its own lists, so a folder built
    by two runs (a CSV's text ``clip_id``, then a Parquet list's numbers) held ``clip_id``
    as text in one shard and int64 in the next: ``ray.data.read_parquet`` and
    ``pyarrow.unify_schemas`` refused the folder, ``read_table`` cast to the first shard's.
    A later run now writes a column as the shards hold it where it can (text: the value's
    JSON text; floats: whole numbers as floats), and warns, naming it, where it cannot."""
    out = tmp_path / "out"
    settings = RunSettings(out_dir=out, formats=("parquet",))
    sources = _sources(tmp_path, 3)
    runs = [
        [{"clip_id": "c1", "score": 0.5}],  # (a CSV's text; a Parquet list's floats)
        [{"clip_id": 4, "score": 2}],  # (a Parquet list's int64s)
        [{"clip_id": "c9", "score": "high"}],  # (text where the shards hold floats)
    ]
    for source, metadata in zip(sources, runs, strict=True):
        jobs, _ = plan([source], settings, metadata)
        committer = Committer(settings, jobs, run_writers_for(settings, metadata))
        _feed(committer, jobs[0].id, 2)
        committer.close(1.0)
    by_run = {pq.read_table(s).column("video")[0].as_py(): s for s in (out / SHARD_DIR).glob("*.parquet")}  # fmt: skip
    shards = [by_run[source] for source in sources]  # (in the runs' order)
    kinds = [(pq.read_schema(s).field("clip_id").type, pq.read_schema(s).field("score").type)
             for s in shards]  # fmt: skip
    assert kinds == [(pa.string(), pa.float64())] * 2 + [(pa.string(), pa.string())]
    assert pa.unify_schemas([pq.read_schema(s) for s in shards[:2]])  # (raised before)
    rows = pq.read_table(shards[1]).to_pylist()
    assert {(r["clip_id"], r["score"]) for r in rows} == {("4", 2.0)}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "the column 'score' is double in the shards there" in warned[0]
