"""One run at a time in a remote ``--out`` folder (``vidcap.remote_lease``), on fsspec's
in-memory file system, a real one, in this process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest

from tests.support.cli import run_main
from vidcap.remote_lease import LEASE
from vidcap.remote_out import StagedFolder

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
