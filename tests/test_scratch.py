"""What killed runs leave in ``$TMPDIR`` (``vidcap.scratch``), removed by a later run: the
decoder processes' folders at a pool's start, a remote ``--out``'s staging folder when its
lease is taken over. Real processes killed with SIGKILL, real folders."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from tests.support.cli import run_main
from vidcap import scratch
from vidcap.remote_lease import LEASE

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TMPDIR`` for this test alone (this process and the ones it starts)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def killed_run_folder(kind: str) -> Path:
    """A ``kind`` folder made by a process that was then killed with SIGKILL, a file in it."""
    code = (
        "import sys, time; from vidcap import scratch; "
        f"p = scratch.folder({kind!r}); (p / 'partial.mp4').write_bytes(b'x' * 4096); "
        "print(p, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (path / "partial.mp4").exists()
    return path


def test_a_folder_is_removed_only_where_its_process_is_gone_from_this_machine(
    temp: Path,
) -> None:
    left = killed_run_folder("decoder")
    mine = scratch.folder("decoder")  # this process runs
    name = left.name.split("-")
    elsewhere = temp / "-".join([*name[:2], "0" * 8, *name[3:]])  # another machine's
    elsewhere.mkdir()
    other_kind = temp / left.name.replace("-decoder-", "-out-", 1)
    other_kind.mkdir()
    not_ours = temp / "vidcap-decoder-notes"
    not_ours.mkdir()
    assert scratch.sweep("decoder") == 1
    assert not left.exists()
    assert mine.is_dir() and elsewhere.is_dir() and other_kind.is_dir() and not_ours.is_dir()
    assert scratch.sweep("decoder") == 0


def test_a_pool_removes_the_decoder_folders_a_killed_run_left(temp: Path) -> None:
    """Regression: a run killed while its decoders downloaded remote sources left their
    folders (partial downloads) in ``$TMPDIR`` for good; the next run's pool removes them."""
    from vidcap.decode import Ended
    from vidcap.decode_pool import DecodePool
    from vidcap.settings import SamplingSettings

    left = killed_run_folder("decoder")
    pool = DecodePool([(0, str(SAMPLE))], SamplingSettings(max_frames=2), (32, 32), 1, 16)
    try:
        ended = [e for e in pool.events() if isinstance(e, Ended)]
    finally:
        pool.close()
    assert len(ended) == 1
    assert not left.exists()
    assert list(temp.glob("vidcap-*")) == []  # (and the pool's own folder went at its end)


def test_the_rerun_after_a_kill_removes_the_killed_runs_staging_folder(temp: Path) -> None:
    """Regression: a run with a remote ``--out`` killed mid-run left its staging folder
    (its thumbnails and outputs not yet uploaded) in ``$TMPDIR``. The rerun takes over the
    dead run's lease, which names that folder, and removes it."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    left = killed_run_folder("out")
    pid = int(left.name.split("-")[3])
    lease = {"owner": "killed", "host": socket.gethostname(), "pid": pid,
             "renewed": time.time(), "staging": str(left)}  # fmt: skip
    fs.pipe_file(f"{root}/{LEASE}", json.dumps(lease).encode())
    result = run_main("caption", SAMPLE, "--out", url, "--model", "tiny", "--max-frames", "2",
                      "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "the lease of a run that stopped" in result.stderr
    assert not left.exists()
    assert list(temp.glob("vidcap-*")) == []  # (and the rerun's own went at its end)
    assert fs.exists(f"{root}/summary.json")


def test_a_lease_naming_a_folder_that_is_not_a_killed_runs_staging_removes_nothing(
    temp: Path,
) -> None:
    """The lease is a file in the remote folder, which others may write: a folder it names
    is removed only where it is a staging folder whose own process is gone from here."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    precious = temp / "precious"
    precious.mkdir()
    live = scratch.folder("out")  # a staging folder of a run that goes on (this process)
    for named in (precious, live, temp / "vidcap-out-x"):
        lease = {"owner": "x", "host": socket.gethostname(), "pid": ended.pid,
                 "renewed": time.time(), "staging": str(named)}  # fmt: skip
        fs.pipe_file(f"{root}/{LEASE}", json.dumps(lease).encode())
        result = run_main("caption", SAMPLE, "--out", url, "--model", "tiny", "--max-frames",
                          "2", "--quiet")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "the lease of a run that stopped" in result.stderr
    assert precious.is_dir() and live.is_dir()
