"""One run at a time in a remote ``--out`` folder (``vidcap.remote_lease``), on fsspec's
in-memory file system, a real one, in this process."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from tests.support.cli import run_main
from tests.support.servers import free_port
from vidcap import remote_out
from vidcap.remote_lease import LEASE, LeaseLost
from vidcap.remote_out import StagedFolder, output_folder

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"


def caption(url: str):
    return run_main("caption", SAMPLE, "--out", url, "--model", "tiny", "--max-frames", "2",
                    "--quiet")  # fmt: skip


@pytest.fixture
def url() -> str:
    return f"memory://vidcap-{uuid.uuid4().hex}/run"


def test_a_second_run_into_a_folder_in_use_stops_in_one_line(url: str) -> None:
    """Regression: two runs into one remote folder (a list split across two machines) each
    rewrote ``summary.json`` and the page from what it knew, so the folder's index lacked
    the other run's videos. The second now stops before it begins; once the first ends,
    it runs."""
    fs, root = fsspec.core.url_to_fs(url)
    first = StagedFolder(url)
    first.pull()  # (a run under way: it holds the lease)
    try:
        held = json.loads(fs.cat_file(f"{root}/{LEASE}"))
        first.lease.renew()  # (at each sync)
        assert json.loads(fs.cat_file(f"{root}/{LEASE}"))["renewed"] >= held["renewed"]
        result = caption(url)
        assert result.returncode == 2
        [line] = result.stderr.splitlines()
        assert line.startswith(
            f"vidcap: error: --out {url}: another run is writing there (on "
            f"{socket.gethostname()}, process {held['pid']}, since {held['started']}; renewed "
        ), line
        assert "one run at a time in an output folder" in line
        assert not fs.exists(f"{root}/summary.json")  # (nothing captioned, nothing written)
    finally:
        first.lease.release()
        first.close()
    assert not fs.exists(f"{root}/{LEASE}")
    result = caption(url)
    assert result.returncode == 0, result.stderr
    assert fs.exists(f"{root}/summary.json") and not fs.exists(f"{root}/{LEASE}")


def test_a_lease_not_renewed_or_of_a_process_gone_is_taken_over(url: str) -> None:
    """A run killed (its machine gone) leaves its lease: one not renewed for ``STALE_S`` is
    taken over, and one whose process is gone from this machine at once (the rerun after a
    kill), each with a warning. Another machine's fresh lease is not."""
    fs, root = fsspec.core.url_to_fs(url)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    leases = {
        "gone": {"host": socket.gethostname(), "pid": ended.pid, "renewed": time.time()},
        "stale": {"host": "elsewhere", "pid": 1, "renewed": time.time() - 400},
        "fresh": {"host": "elsewhere", "pid": 1, "renewed": time.time()},
    }
    for name, lease in leases.items():
        fs.pipe_file(f"{root}/{LEASE}", json.dumps({"owner": name, **lease}).encode())
        result = caption(url)
        if name == "fresh":
            assert result.returncode == 2 and "another run is writing there" in result.stderr
            continue
        assert result.returncode == 0, result.stderr
        assert (
            f"vidcap: WARNING: --out {url}: the lease of a run that stopped (on "
            f"{lease['host']}, process {lease['pid']}, since ?) taken over" in result.stderr
        )
        assert not fs.exists(f"{root}/{LEASE}")  # (and released at the end)


def _kept(message: str) -> Path:
    """The folder a message says this run's outputs are left in (removed by the caller)."""
    return Path(message.rsplit(" are left in ", 1)[1])


def test_a_run_taken_over_while_it_stalled_uploads_nothing_more(url: str, monkeypatch) -> None:
    """Regression: a run paused past ``STALE_S`` (``kill -STOP``, a frozen VM) came back
    after another run had taken its stale lease over, wrote the lease as its own again at
    its next sync and, at its end, its ``summary.json`` and page over the other run's (the
    folder's index then lacked the other run's videos). It now finds the lease another's:
    a warning at the sync, nothing more uploaded, and its end an error naming the folder its
    outputs are kept in; the other run's lease and summary are left as they are."""
    monkeypatch.setattr(remote_out, "SYNC_SECONDS", 0.05)
    fs, root = fsspec.core.url_to_fs(url)
    theirs = {"owner": "b", "host": "elsewhere", "pid": 7, "started": "then",
              "renewed": time.time()}  # fmt: skip
    with pytest.raises(LeaseLost) as lost, output_folder(url) as local:
        (local / "mine.jsonl").write_text("caption\n")
        fs.pipe_file(f"{root}/{LEASE}", json.dumps(theirs).encode())  # (the other run took it)
        fs.pipe_file(f"{root}/summary.json", b'{"theirs": true}')
        staged = remote_out._staged[local]
        deadline = time.monotonic() + 10
        while staged.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert staged.lost is not None  # (seen at a sync, not only at the end)
        staged.told(local / "mine.jsonl")
        (local / "summary.json").write_text('{"mine": true}')
    message = str(lost.value)
    assert message.startswith(
        f"--out {url}: another run took the folder over (on elsewhere, process 7, since then)"
    ), message
    kept = _kept(message)
    try:
        assert (kept / "mine.jsonl").read_text() == "caption\n"
        assert kept.name.startswith("vidcap-kept-out-")  # (no later run sweeps it away)
    finally:
        shutil.rmtree(kept)
    assert fs.cat_file(f"{root}/summary.json") == b'{"theirs": true}'
    assert json.loads(fs.cat_file(f"{root}/{LEASE}"))["owner"] == "b"
    assert not fs.exists(f"{root}/mine.jsonl")


def test_a_remote_folder_removed_mid_run_is_not_claimed_to_hold_the_outputs(url: str) -> None:
    """Regression: the remote folder deleted mid-run: the run re-created its lease, uploaded
    a summary and a page listing videos whose files were gone, and said they were there
    (exit 0). Its lease gone, it now uploads nothing and says where its outputs are."""
    fs, root = fsspec.core.url_to_fs(url)
    with pytest.raises(LeaseLost) as lost, output_folder(url) as local:
        (local / "v.jsonl").write_text("caption\n")
        fs.rm(root, recursive=True)
    assert "this run's lease (.vidcap/run-lease.json) is gone from there" in str(lost.value)
    shutil.rmtree(_kept(str(lost.value)))
    assert not fs.exists(root)


def test_a_folder_kept_after_a_failed_upload_outlives_a_rerun_taking_its_lease_over(
    url: str, tmp_path: Path
) -> None:
    """Regression: where the last upload failed the message named the folder holding the
    outputs, and the rerun, taking over the lease that still named it, removed it (an INFO
    line): the outputs the user was told to copy were gone. A kept folder is renamed out of
    what reruns remove."""
    fs, root = fsspec.core.url_to_fs(url)
    staged = StagedFolder(url)
    staged.pull()
    (staged.local / "v.jsonl").write_text("caption\n")
    kept = staged.keep()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    lease = {"owner": "x", "host": socket.gethostname(), "pid": ended.pid,
             "renewed": time.time(), "staging": str(kept)}  # fmt: skip
    fs.pipe_file(f"{root}/{LEASE}", json.dumps(lease).encode())
    try:
        result = caption(url)
        assert result.returncode == 0, result.stderr
        assert (kept / "v.jsonl").read_text() == "caption\n"
    finally:
        shutil.rmtree(kept)


def test_an_out_url_password_is_never_printed(tmp_path: Path) -> None:
    """Regression: an ``--out`` URL's password was printed in the run's last line, its
    progress lines (``-v``) and its errors (an input URL's never was)."""
    url = f"memory://alice:s3cret@vidcap-{uuid.uuid4().hex}/run"
    result = run_main("caption", SAMPLE, "--out", url, "--model", "tiny", "--max-frames", "2",
                      "-v")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "outputs in memory://alice@" in result.stderr and "s3cret" not in result.stderr
    port = free_port()
    result = run_main("caption", SAMPLE, "--out", f"ftp://bob:s3cret@127.0.0.1:{port}/x",
                      "--model", "tiny")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"vidcap: error: --out ftp://bob@127.0.0.1:{port}/x: cannot connect ("
    ), result.stderr  # (was a traceback: ftplib connects as fsspec makes its file system)
    assert len(result.stderr.splitlines()) == 1 and "s3cret" not in result.stderr
    result = run_main("search", "ftp://bob:s3cret@127.0.0.1/x", "red")
    assert result.returncode == 2 and "s3cret" not in result.stderr, result.stderr


def test_the_page_of_a_local_url_out_links_its_sources_from_where_it_is(tmp_path: Path) -> None:
    """Regression: the page of a ``local://`` ``--out`` linked a local source relative to the
    staging folder it was written in, so from the folder it was uploaded to, the player
    opened another file (or none)."""
    videos, out = tmp_path / "videos", tmp_path / "deep" / "out"
    videos.mkdir()
    (videos / "v.mp4").write_bytes(SAMPLE.read_bytes())
    result = run_main("caption", videos / "v.mp4", "--out", f"local://{out}", "--model", "tiny",
                      "--max-frames", "1", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = "".join(p.read_text() for p in (out / "report").glob("data-*.js"))
    [src] = set(re.findall(r'\\"src\\":\\"([^"\\]+)\\"', data))  # (JSON in a JS string)
    assert (out / src).resolve() == (videos / "v.mp4").resolve(), src


def test_a_lease_read_that_fails_once_is_no_lease_lost(url: str, monkeypatch) -> None:
    """Regression: a renewal read the lease, and any read error (a timeout, a 5xx) counted as
    "the lease is gone": one blip ended every upload of the run. Only a lease read and found
    missing, or another run's, is lost; a read that fails is tried again."""
    from fsspec.implementations.memory import MemoryFileSystem

    fs, root = fsspec.core.url_to_fs(url)
    read = MemoryFileSystem.cat_file
    blips = []

    def cat_file(self, path, *args, **kwargs):
        if path.endswith(LEASE) and len(blips) < 1 and remote_out._staged:
            blips.append(path)
            raise TimeoutError("the store did not answer")
        return read(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", cat_file)
    with output_folder(url) as local:
        (local / "v.jsonl").write_text("caption\n")
    assert blips and fs.cat_file(f"{root}/v.jsonl") == b"caption\n"
    assert not fs.exists(f"{root}/{LEASE}")  # (released)
