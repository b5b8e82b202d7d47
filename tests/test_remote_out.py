"""``--out`` as an fsspec URL: fsspec's in-memory filesystem, a real one, in this process."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from fractions import Fraction
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from tests.support.cli import run_main
from tests.support.servers import free_port
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap import remote_out
from vidcap.cli import main
from vidcap.errors import UploadFailed
from vidcap.outputs import telling, write_atomic
from vidcap.remote_out import StagedFolder, output_folder

SAMPLES = Path(__file__).resolve().parent.parent / "sample_videos"


def _caption(out: str) -> int:
    return main(
        ["caption", str(SAMPLES / "shapes.mp4"), str(SAMPLES / "subject.mp4"), "--out", out]
        + ["--format", "jsonl,srt,parquet", "--model", "tiny", "--device", "cpu", "--quiet"]
    )


@pytest.mark.heavy
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
    # (regression: the page was titled by the staging folder, "vidcap-out-…")
    assert b'"title": "run"' in fs.cat_file(f"{root}/index.html")

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


@pytest.mark.heavy
def test_thumbnails_staged_as_they_come_are_never_uploaded(tmp_path: Path, monkeypatch) -> None:
    """Regression: a sync during a run uploaded what it found in the folder, the thumbnails
    of a video being captioned too (staged in ``.vidcap/thumbs/<name>.part/``, renamed into
    ``thumbs/`` at its commit): they stayed there, and every rerun downloaded them with the
    records. Nothing staged is uploaded now, and what an earlier version left is removed."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/.vidcap/thumbs/old.part/000000.jpg", b"left by an earlier version")
    video = write_video(
        tmp_path / "long.mp4",
        VideoSpec("long", "libx264", ".mp4", constant_rate(150, Fraction(25))),
    )
    monkeypatch.setattr("vidcap.remote_out.SYNC_SECONDS", 0.01)  # (many syncs mid-video)
    assert main(["caption", str(video), "--every-n", "1", "--out", url, "--model", "tiny",
                 "--quiet"]) == 0  # fmt: skip
    files = [path.removeprefix(f"{root}/") for path in fs.find(root)]
    assert not [rel for rel in files if rel.startswith(".vidcap/thumbs/long")], files
    assert not [rel for rel in files if rel.startswith(".vidcap/thumbs")], files  # (removed)
    assert sum(rel.startswith("thumbs/long/") for rel in files) == 150
    # (each whole: one uploaded at a sync left an empty placeholder here, never sent there)
    assert all(fs.size(f"{root}/{rel}") > 0 for rel in files if rel.startswith("thumbs/"))


def test_a_sync_uploads_what_was_put_in_place_and_the_journals(tmp_path: Path) -> None:
    """A sync does not read the whole staging folder (a library of a million videos holds
    millions of files): it uploads the outputs put in place since the last one (each tells:
    ``outputs.telling``) and the journals, which grow in place. The last push, at the end
    of a run, reads every file. A done video's thumbnails come down as their folder alone."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/thumbs/done/000000.jpg", b"jpeg")
    fs.pipe_file(f"{root}/done.jsonl", b'{"caption": "a dog"}\n')
    staged = StagedFolder(url)
    try:
        staged.pull()
        local = staged.local
        assert (local / "thumbs" / "done").is_dir() and not any((local / "thumbs").rglob("*.*"))
        assert (local / "done.jsonl").stat().st_size == 0  # (a placeholder)
        with telling(staged.told):
            write_atomic(local / "new.jsonl", "captions\n")
            (local / "behind.txt").write_text("written without telling")
            (local / ".vidcap" / "journal").mkdir(parents=True)
            (local / ".vidcap" / "journal" / "new.jsonl").write_text("header\n")
        assert staged.push() == 2
        assert fs.cat_file(f"{root}/new.jsonl") == b"captions\n"
        assert fs.cat_file(f"{root}/.vidcap/journal/new.jsonl") == b"header\n"
        assert not fs.exists(f"{root}/behind.txt")
        with open(local / ".vidcap" / "journal" / "new.jsonl", "a") as journal:
            journal.write("a caption\n")
        assert staged.push() == 1  # (the journal grew)
        assert staged.push(everything=True) == 1
        assert fs.cat_file(f"{root}/behind.txt") == b"written without telling"
        assert fs.cat_file(f"{root}/thumbs/done/000000.jpg") == b"jpeg"  # (never replaced)
    finally:
        staged.close()


@pytest.mark.heavy
def test_a_url_to_a_file_system_with_folders_gets_them_made(tmp_path: Path) -> None:
    """Regression: on a file system with folders (``local://``, ``sftp://``, ``hdfs://``:
    fsspec makes none for a file put, unlike an object store), every upload into a folder
    not there yet failed, and the run ended with its outputs left in the staging folder."""
    url = f"local://{tmp_path}/remote"
    assert _caption(url) == 0
    assert _caption(str(tmp_path / "local")) == 0

    def files(folder: Path) -> list[str]:  # (shards and page data: named by time, content)
        found = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        return sorted(re.sub(r"^(parquet|report)/[^/]*-[^/]*$", r"\1/…", n) for n in found)

    made = files(tmp_path / "local")
    made.remove(".vidcap/run.lock")
    assert made == files(tmp_path / "remote")
    for name in ("shapes.jsonl", "thumbs/shapes/000000.jpg", ".vidcap/subject.json"):
        assert (tmp_path / "remote" / name).is_file(), name


def test_a_journal_growing_while_it_is_uploaded_is_sent_again(monkeypatch) -> None:
    """A caption appended to a journal while a sync uploads it (the run goes on meanwhile)
    is in the remote copy after the next sync: a file is marked sent as it was before it
    went, not as it is after."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    staged = StagedFolder(url)
    try:
        staged.pull()
        journal = staged.local / ".vidcap" / "journal" / "clip.jsonl"
        journal.parent.mkdir(parents=True)
        journal.write_text("header\n")
        put = staged.fs.put_file

        def put_while_it_grows(local: str, remote: str, **kwargs) -> None:
            put(local, remote, **kwargs)
            with open(journal, "a") as grows:  # (the run's thread, meanwhile)
                grows.write("a caption\n")

        monkeypatch.setattr(staged.fs, "put_file", put_while_it_grows)
        assert staged.push() == 1
        monkeypatch.setattr(staged.fs, "put_file", put)
        assert staged.push() == 1
        assert fs.cat_file(f"{root}/.vidcap/journal/clip.jsonl") == b"header\na caption\n"
    finally:
        staged.close()


def test_an_out_that_cannot_be_written_is_a_usage_error_before_any_video() -> None:
    """Regression: ``--out http://…`` (fsspec's HTTP file system reads, a plain web server
    takes no upload) or a host not there captioned every video, then failed to upload at
    the end (with a traceback, for a server's refusal). A file is written and removed
    before the run: where that fails, one line and exit 2."""
    for url in (f"http://127.0.0.1:{free_port()}/captions", "memory://"):
        result = run_main("caption", SAMPLES / "shapes.mp4", "--out", url, "--model", "tiny")
        if url == "memory://":  # (a writable one, as a control)
            assert result.returncode == 0, result.stderr
            continue
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"vidcap: error: --out {url}: cannot write there (")
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_an_upload_failing_at_the_end_says_where_the_outputs_are(monkeypatch) -> None:
    """The last push fails (the bucket's permissions changed mid-run): one line that names
    the staging folder the outputs are left in, exit 1; that folder holds them."""

    def refused(self, local: str, remote: str, **kwargs) -> None:
        raise PermissionError(13, "Access Denied")

    monkeypatch.setattr(MemoryFileSystem, "put_file", refused)
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    result = run_main("caption", SAMPLES / "shapes.mp4", "--out", url, "--model", "tiny",
                      "--quiet")  # fmt: skip
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"vidcap: error: uploading to {url} failed ([Errno 13] Access Denied)")
    left = Path(line.rsplit("the outputs are left in ", 1)[1])
    try:
        assert (left / "shapes.jsonl").stat().st_size > 0
    finally:
        shutil.rmtree(left)


def test_a_thumbnail_uploaded_at_a_sync_leaves_the_staging_folder(tmp_path: Path) -> None:
    """Regression: the staging folder held every thumbnail of the run until its end (5–15
    KB a sampled frame: gigabytes on a long run, in ``$TMPDIR``). A thumbnail uploaded at a
    sync now leaves an empty placeholder in its place (the page lists them by name), which
    the last push does not send over the uploaded one."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    staged = StagedFolder(url)
    try:
        staged.pull()
        thumbs = staged.local / "thumbs" / "v"
        thumbs.mkdir(parents=True)
        jpegs = {f"{i:06d}.jpg": bytes([i]) * 5000 for i in range(3)}
        for name, data in jpegs.items():
            (thumbs / name).write_bytes(data)
        with telling(staged.told):
            write_atomic(staged.local / "v.jsonl", "captions\n")
        staged.told(thumbs)
        assert staged.push() == 4
        for name, data in jpegs.items():
            assert fs.cat_file(f"{root}/thumbs/v/{name}") == data
            assert (thumbs / name).stat().st_size == 0  # (a placeholder, as named)
        assert (staged.local / "v.jsonl").read_text() == "captions\n"  # (captions stay)
        assert staged.push(everything=True) == 0
        for name, data in jpegs.items():
            assert fs.cat_file(f"{root}/thumbs/v/{name}") == data  # (not overwritten)
    finally:
        staged.close()


def test_a_failed_last_upload_leaves_no_placeholder_to_copy_over_an_upload(
    tmp_path: Path, monkeypatch
) -> None:
    """Where the last upload fails, the staging folder the message names holds the outputs
    but no empty placeholder: copying it to the remote folder (the way out the message
    points to) overwrites no uploaded thumbnail with an empty file."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    sent = MemoryFileSystem.put_file
    refusing = False

    def put_file(self, local: str, remote: str, **kwargs) -> None:
        if refusing:
            raise PermissionError(13, "Access Denied")
        sent(self, local, remote, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", put_file)
    with pytest.raises(UploadFailed) as failed:
        with output_folder(url) as local:
            thumbs = local / "thumbs" / "v"
            thumbs.mkdir(parents=True)
            (thumbs / "000000.jpg").write_bytes(b"jpeg" * 1000)
            staged = remote_out._staged[local]
            staged.told(thumbs)
            staged.push()  # (a sync: the thumbnail uploaded, a placeholder left)
            assert (thumbs / "000000.jpg").stat().st_size == 0
            (local / "v.jsonl").write_text("captions\n")
            refusing = True
    kept = Path(str(failed.value).rsplit(" are left in ", 1)[1])
    assert kept.name == local.name.replace("vidcap-out-", "vidcap-kept-out-")
    try:
        assert (kept / "v.jsonl").read_text() == "captions\n"
        assert not (kept / "thumbs" / "v" / "000000.jpg").exists()
        assert [p for p in kept.rglob("*") if p.is_file() and p.stat().st_size == 0] == []
        assert fs.cat_file(f"{root}/thumbs/v/000000.jpg") == b"jpeg" * 1000
    finally:
        shutil.rmtree(kept)


@pytest.mark.heavy
def test_a_redone_videos_files_of_formats_no_longer_written_go_there_too(
    tmp_path: Path,
) -> None:
    """A video redone in a remote folder with fewer formats (and --no-thumbs): its earlier
    .srt, .vtt, .scenes.jsonl and thumbnails are removed there as they are here, not left
    beside captions they no longer match."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    video = SAMPLES / "shapes.mp4"
    args = ["--out", url, "--model", "tiny", "--quiet"]
    assert (
        run_main("caption", video, *args, "--format", "jsonl,srt,vtt", "--scenes").returncode == 0
    )
    names = {path.removeprefix(f"{root}/") for path in fs.find(root)}
    assert {"shapes.srt", "shapes.vtt", "shapes.scenes.jsonl"} <= names
    assert any(name.startswith("thumbs/shapes/") for name in names)
    again = run_main("caption", video, *args, "--every-n", "90", "--format", "jsonl",
                     "--no-thumbs")  # fmt: skip
    assert again.returncode == 0, again.stderr
    names = {path.removeprefix(f"{root}/") for path in fs.find(root)}
    assert "shapes.jsonl" in names
    assert not {"shapes.srt", "shapes.vtt", "shapes.scenes.jsonl"} & names
    assert not any(name.startswith("thumbs/shapes/") for name in names)
    assert len(fs.cat_file(f"{root}/shapes.jsonl").splitlines()) == 4
