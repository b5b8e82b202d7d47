"""A library moved to another path keeps its captions (``vidcap.moved``).

Captioned under one path, then moved (another disk, a container, a machine that mounts the
share elsewhere): a rerun into the same folder used to caption every video again under a
new name. Now a done video whose file is gone from its recorded path is taken over by the
input with its size and SHA-256, and its outputs are rewritten to name the new path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.cli import obeying_permissions, run_main
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.folder import open_folder

pytestmark = pytest.mark.heavy  # (each test captions a library, two or three times)

FORMATS = ("jsonl", "srt", "vtt", "scenes.jsonl")
FRAMES = {"copied": 3, "edited": 4, "emptied": 5}  # (bytes alike would be one video moved)


def clip(folder: Path, name: str, frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(name, "libx264", ".mp4", constant_rate(frames, Fraction(10)))
    return write_video(folder / f"{name}.mp4", spec)


def caption(source: Path, out: Path, *more: object) -> str:
    """``vidcap caption`` of a folder, every frame, shots, every format: its stderr."""
    result = run_main(
        "caption", source, "--out", out, "--model", "tiny", "--every-n", "1", "--scenes",
        "--format", "jsonl,srt,vtt,parquet", *more,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def outputs(out: Path) -> dict[str, dict[str, str]]:
    """Each video's per-video files, by the source they name (output names may differ)."""
    return {
        v["video"]: {fmt: (out / f"{v['name']}.{fmt}").read_text() for fmt in FORMATS}
        for v in summary(out)["videos"]
    }


def parquet_rows(out: Path) -> list[dict]:
    """The shards' rows, each checked to name its video's output name, then without it (a
    moved video keeps the name its old path had, hashed or not)."""
    names = {
        v["video"]: v["name"] for v in json.loads((out / "summary.json").read_text())["videos"]
    }
    rows = pq.read_table(out / "parquet").to_pylist()
    assert all(row.pop("name") == names[row["video"]] for row in rows)
    return sorted(rows, key=lambda row: (row["video"], row["frame"]))


def test_a_moved_library_keeps_its_captions_and_its_outputs_name_the_new_path(
    tmp_path: Path, monkeypatch
) -> None:
    library, out = tmp_path / "library", tmp_path / "out"
    clip(library / "a", "clip", 3), clip(library / "b", "clip", 4), clip(library, "solo", 5)
    caption(library, out)
    first = summary(out)
    assert first["run"]["frames"] == 12
    names = sorted(v["name"] for v in first["videos"])  # two stems alike: hashed names
    assert names[0].startswith("clip-") and names[1].startswith("clip-") and names[2] == "solo"

    moved = tmp_path / "mounted-elsewhere"
    shutil.move(library, moved)
    records = {p.name: p.read_bytes() for p in (out / ".vidcap").glob("*.json")}
    monkeypatch.setattr("vidcap.inputs.SAID_READING", 1)  # (1 GiB: a wait worth a line)
    assert "reading 3 videos (0.0 GB) that no record names, of the size of captioned videos " \
        "whose file is gone, to compare their bytes (SHA-256)" in caption(moved, out)  # fmt: skip
    for name, data in records.items():  # stopped before the records: outputs already rewritten
        (out / ".vidcap" / name).write_bytes(data)
    said = caption(moved, out)
    assert "3 videos moved (the same bytes; their old paths are gone): their outputs now name " \
        "their new paths, and they are not captioned again" in said  # fmt: skip
    again = summary(out)
    assert again["run"]["frames"] == 0 and again["run"]["resumed"] == 3  # no model call
    assert sorted(v["name"] for v in again["videos"]) == names  # the names stay
    for video in again["videos"]:
        path = Path(video["identity"]["path"])
        assert path.parent in (moved, moved / "a", moved / "b") and video["video"] == str(path)
        assert video["identity"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert video["identity"]["mtime_ns"] == path.stat().st_mtime_ns
    assert [v.name for v in open_folder(out) if v.source_changed() is not None] == []

    # What a first run over the moved library writes: the same, byte for byte.
    fresh = tmp_path / "fresh"
    caption(moved, fresh)
    assert outputs(out) == outputs(fresh)
    assert parquet_rows(out) == parquet_rows(fresh)
    assert len(list((out / "parquet").glob("*.parquet"))) == 1  # the shard rewritten in place

    said = caption(moved, out)  # each name now held by its new path: nothing to read or do
    assert "videos moved" not in said and "reading" not in said
    assert summary(out)["run"]["resumed"] == 3 and summary(out)["run"]["frames"] == 0


def test_a_moved_video_whose_text_another_video_shares_keeps_its_rows(
    tmp_path: Path, monkeypatch
) -> None:
    """Regression: ``clip.mp4`` captioned from two working directories is two videos with
    one ``video`` text. When one of them moved, its Parquet rows were counted by that text
    (both videos' rows: never its frame count), so they did not check and it was captioned
    again. They are found by its name now, and only they are renamed."""
    out = tmp_path / "out"
    clip(tmp_path / "a", "clip", 3), clip(tmp_path / "b", "clip", 4)
    for folder in ("a", "b"):
        monkeypatch.chdir(tmp_path / folder)
        caption(Path("clip.mp4"), out)
    named = {v["identity"]["path"]: v["name"] for v in summary(out)["videos"]}
    stays = named[str(tmp_path / "b" / "clip.mp4")]
    assert named[str(tmp_path / "a" / "clip.mp4")] == "clip" and stays.startswith("clip-")
    shutil.move(tmp_path / "a", tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    said = caption(Path("c/clip.mp4"), out)
    assert "1 video moved (the same bytes; its old path is gone)" in said, said
    assert summary(out)["run"]["frames"] == 0  # no model call
    rows = pq.read_table(out / "parquet").to_pylist()
    assert Counter((r["name"], r["video"]) for r in rows) == {
        ("clip", "c/clip.mp4"): 3,
        (stays, "clip.mp4"): 4,
    }


def test_a_moved_library_keeps_its_rows_in_a_shard_from_before_the_name_column(
    tmp_path: Path,
) -> None:
    """A shard an older vidcap wrote has no ``name`` column: a moved video's rows there are
    found, and renamed, by its old text."""
    library, out = tmp_path / "library", tmp_path / "out"
    clip(library, "one", 3), clip(library, "two", 4)
    caption(library, out)
    [shard] = (out / "parquet").glob("*.parquet")
    pq.write_table(pq.read_table(shard).drop_columns(["name"]), shard)
    shutil.move(library, tmp_path / "moved")
    said = caption(tmp_path / "moved", out)
    assert "2 videos moved" in said and summary(out)["run"]["frames"] == 0, said
    rows = pq.read_table(out / "parquet").to_pylist()
    assert Counter(r["video"] for r in rows) == {
        str(tmp_path / "moved" / "one.mp4"): 3,
        str(tmp_path / "moved" / "two.mp4"): 4,
    }


def test_a_copy_other_bytes_or_outputs_not_there_are_captioned_again(tmp_path: Path) -> None:
    """The old path still there (a copy: another video), other bytes at the same size, or
    outputs that do not check (a JSONL file emptied, which a rewrite would have kept
    empty): captioned again, Parquet rows once each."""
    library, out = tmp_path / "library", tmp_path / "out"
    copied, edited, emptied = (clip(library, name, count) for name, count in FRAMES.items())
    caption(library, out)

    moved = tmp_path / "moved"
    shutil.copytree(library, moved)
    for path in (edited, emptied):
        path.unlink()
    data = (moved / "edited.mp4").read_bytes()
    at = data.index(b"x264 - core") + len("x264 - ")  # the encoder's note: it still decodes
    (moved / "edited.mp4").write_bytes(data[:at] + b"C" + data[at + 1 :])
    (out / "emptied.jsonl").write_text("")

    said = caption(moved, out)
    assert " moved (" not in said
    run = summary(out)["run"]
    assert run["frames"] == 12 and run["resumed"] == 0
    names = {v["video"]: v["name"] for v in summary(out)["videos"]}
    assert names[str(moved / "emptied.mp4")] == "emptied"  # its name: its record's file is gone
    assert names[str(moved / "copied.mp4")].startswith("copied-")  # the original is still there
    assert names[str(moved / "edited.mp4")].startswith("edited-")
    rows = [json.loads(line) for line in (out / "emptied.jsonl").read_text().splitlines()]
    assert [row["video"] for row in rows] == [str(moved / "emptied.mp4")] * 5
    by_video: dict[str, int] = {}
    for row in parquet_rows(out):
        by_video[row["video"]] = by_video.get(row["video"], 0) + 1
    assert by_video == {
        str(copied): 3, str(edited): 4,  # records of these files are still in the folder
        **{str(moved / f"{name}.mp4"): count for name, count in FRAMES.items()},
    }  # fmt: skip


def test_a_summary_garbled_by_hand_is_no_reason_to_fail(tmp_path: Path) -> None:
    """The folder's index (``summary.json``) is read to find moved files; an identity in it
    that is no mapping (a folder from elsewhere) names no file, and the run goes on."""
    out = tmp_path / "out"
    caption(clip(tmp_path / "a", "first", 3).parent, out)
    data = json.loads((out / "summary.json").read_text())
    data["videos"][0]["identity"] = ["not", "a", "mapping"]
    (out / "summary.json").write_text(json.dumps(data))
    shutil.move(tmp_path / "a", tmp_path / "b")
    caption(tmp_path / "b", out)
    assert summary(out)["run"]["frames"] == 3  # nothing named it: captioned again


def test_a_moved_video_in_a_remote_folder_is_captioned_again_never_emptied(
    tmp_path: Path,
) -> None:
    """A remote ``--out`` is staged with empty placeholders for its outputs, and its
    Parquet shards are not downloaded: their rows cannot be counted or renamed, so a moved
    video there is captioned again (its JSONL downloaded, found right, and never uploaded
    half-rewritten)."""
    import uuid

    import fsspec

    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    caption(clip(tmp_path / "a", "v", 3).parent, url)
    shutil.move(tmp_path / "a", tmp_path / "b")
    caption(tmp_path / "b", url)
    rows = [json.loads(line) for line in fs.cat_file(f"{root}/v.jsonl").decode().splitlines()]
    assert [row["video"] for row in rows] == [str(tmp_path / "b" / "v.mp4")] * 3
    assert json.loads(fs.cat_file(f"{root}/summary.json"))["run"]["frames"] == 3


def test_a_moved_video_in_a_remote_folder_keeps_its_captions_where_its_rows_can_be_read(
    tmp_path: Path,
) -> None:
    """Without Parquet, a remote folder's rows are the JSONL files: downloaded from their
    placeholders, rewritten and uploaded again, as a local run writes them."""
    import uuid

    import fsspec

    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    jsonl_only = ("--format", "jsonl,srt,vtt")
    caption(clip(tmp_path / "a", "v", 3).parent, url, *jsonl_only)
    shutil.move(tmp_path / "a", tmp_path / "b")
    said = caption(tmp_path / "b", url, *jsonl_only)
    assert "1 video moved (the same bytes; its old path is gone)" in said
    assert json.loads(fs.cat_file(f"{root}/summary.json"))["run"]["frames"] == 0
    caption(tmp_path / "b", tmp_path / "fresh", *jsonl_only)
    for name in ("v.jsonl", "v.scenes.jsonl", "v.srt", "v.vtt"):
        assert fs.cat_file(f"{root}/{name}") == (tmp_path / "fresh" / name).read_bytes(), name


def test_a_file_replaced_by_a_link_to_another_gives_that_one_its_name(tmp_path: Path) -> None:
    """Regression: ``v.mp4`` captioned, then replaced by a link to another video (``ln -sf``,
    a deduplicating sync): the rerun captioned the new file as ``v-<hash>`` and kept the old
    captions done beside it, both naming ``v.mp4`` — search found the old file's moments at
    that path, and the page played the new file under them."""
    library, pool, out = tmp_path / "library", tmp_path / "pool", tmp_path / "out"
    old = clip(library, "v", 3)
    other = clip(pool, "other", 5)
    caption(library, out)
    old.unlink()
    old.symlink_to(other)
    caption(library, out)
    [video] = summary(out)["videos"]
    assert (video["name"], video["video"], video["frames"]) == ("v", str(old), 5)
    assert sorted(p.name for p in (out / ".vidcap").glob("*.json")) == ["v.json"]
    rows = [json.loads(line) for line in (out / "v.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and {row["video"] for row in rows} == {str(old)}
    assert len(list((out / "thumbs" / "v").glob("*.jpg"))) == 5


def test_a_video_that_fails_when_redone_keeps_no_outputs_of_before(tmp_path: Path) -> None:
    """Regression: a captioned file cut short (or edited, then failing) failed on the rerun
    but kept its old captions, subtitles and thumbnails under their names: the page played
    the old subtitles over the file as it is, and a glob of ``*.jsonl`` found captions its
    record no longer vouched for. So did its rows in the Parquet shards."""
    library, out = tmp_path / "library", tmp_path / "out"
    cut, kept = clip(library, "cut", 3), clip(library, "kept", 4)
    caption(library, out)
    assert Counter(pq.read_table(out / "parquet").column("name").to_pylist()) == {
        "cut": 3,
        "kept": 4,
    }
    with cut.open("r+b") as file:
        file.truncate(300)
    result = run_main("caption", library, "--out", out, "--model", "tiny", "--every-n", "1",
                      "--scenes", "--format", "jsonl,srt,vtt,parquet")  # fmt: skip
    assert result.returncode == 1
    assert (
        "cut.mp4: the outputs of its earlier captioning are removed (3 rows in parquet/, cut.jsonl"
        in result.stderr
    )
    assert sorted(p.name for p in out.glob("cut*")) == []
    assert Counter(pq.read_table(out / "parquet").column("name").to_pylist()) == {"kept": 4}
    assert not (out / "thumbs" / "cut").exists()
    assert {p.name for p in out.glob("kept*")} == {f"kept.{fmt}" for fmt in FORMATS}
    videos = {v["name"]: v for v in summary(out)["videos"]}
    assert videos["cut"]["status"] == "failed" and videos["kept"]["status"] == "done"
    assert str(kept) == videos["kept"]["video"]


def test_a_video_that_fails_when_redone_for_a_missing_output_keeps_the_others(
    tmp_path: Path,
) -> None:
    """The review of the fix above: a video redone with its bytes and settings unchanged (an
    output removed) that fails for a reason of the moment (here its file unreadable to the
    run; a server gone, a timeout alike) keeps the outputs it has: they are still its own."""
    import subprocess
    import sys

    library, out = tmp_path / "library", tmp_path / "out"
    video = clip(library, "v", 3)
    caption(library, out)
    (out / "v.srt").unlink()
    video.chmod(0)  # (its size and modification time as recorded)
    command = obeying_permissions([
        sys.executable, "-m", "vidcap", "caption", str(library), "--out", str(out),
        "--model", "tiny", "--every-n", "1", "--scenes", "--format", "jsonl,srt,vtt,parquet",
    ])  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "cannot read it (Permission denied)" in result.stderr
    assert "earlier captioning are removed" not in result.stderr
    assert {p.name for p in out.glob("v.*")} == {"v.jsonl", "v.vtt", "v.scenes.jsonl"}
    assert (out / "thumbs" / "v").is_dir()


@pytest.mark.heavy
def test_a_failed_video_whose_file_was_deleted_is_no_longer_listed(tmp_path: Path) -> None:
    """Regression (an outside-in round): a broken download that failed, then deleted,
    stayed "failed" in summary.json's totals and on the page after every later run: its
    record, which holds only the error, is removed by the next run. One still there is
    still failed (and tried again)."""
    library = tmp_path / "lib"
    library.mkdir()
    write_video(library / "good.mp4", VideoSpec("good", "libx264", ".mp4", constant_rate(4, 10)))
    (library / "broken.mp4").write_bytes(b"not a video")
    (library / "kept.mp4").write_bytes(b"not a video either")
    out = tmp_path / "out"
    args = ("--out", out, "--model", "tiny", "--quiet")
    assert run_main("caption", library, *args).returncode == 1
    (library / "broken.mp4").unlink()
    assert run_main("caption", library, *args).returncode == 1  # (kept.mp4 fails again)
    summary = json.loads((out / "summary.json").read_text())
    assert {v["name"]: v["status"] for v in summary["videos"]} == {"good": "done", "kept": "failed"}
    assert summary["totals"]["failed"] == 1
    assert not (out / ".vidcap" / "broken.json").exists()
