"""A run's temporary folders in ``$TMPDIR``, and what killed runs left of them.

A run removes its temporary folders when it ends: the decoder processes' (downloads of
remote sources, ``vidcap.decode_pool``) and a remote ``--out``'s staging folder
(``vidcap.remote_out``). A run killed (``SIGKILL``, the OOM killer, a preempted job
restarted on the same machine) leaves them, partial downloads and staged thumbnails of
gigabytes among them. Each folder's name says whose it is, ``vidcap-<kind>-<host>-<pid>-…``
(``<host>``: a short hash of the machine's name, as ``$TMPDIR`` may be a disk that several
machines share), so a later run can tell a folder whose process is gone from this machine
from one a run still uses, and remove it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def folder(kind: str, root: str | None = None) -> Path:
    """A new folder (mode 700) of this process in ``root`` (default ``$TMPDIR``) for
    ``kind`` ("decoder", "out")."""
    return Path(tempfile.mkdtemp(prefix=f"vidcap-{kind}-{_host()}-{os.getpid()}-", dir=root))


def left_by_a_killed_run(path: Path, kind: str) -> bool:
    """Is ``path`` a ``kind`` folder of this user made by a process of this machine that no
    longer runs?"""
    match = re.fullmatch(rf"vidcap-{re.escape(kind)}-([0-9a-f]{{8}})-([0-9]+)-.+", path.name)
    if match is None or match[1] != _host():
        return False
    try:
        if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            return False
    except OSError:
        return False
    return process_gone(int(match[2]))


def process_gone(pid: int) -> bool:
    """Is there no process ``pid`` on this machine (another user's runs: not gone)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # another user's process (it runs), or not a pid
        return False
    return False


def remove_if_left(path: Path, kind: str) -> bool:
    """Remove ``path`` where a killed run left it (``left_by_a_killed_run``)."""
    if not left_by_a_killed_run(path, kind):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def sweep(kind: str, root: str | None = None) -> int:
    """Remove every ``kind`` folder in ``root`` (default ``$TMPDIR``) that killed runs of
    this machine left; how many were removed."""
    root = root or tempfile.gettempdir()
    removed = [
        path for path in Path(root).glob(f"vidcap-{kind}-{_host()}-*") if remove_if_left(path, kind)
    ]
    if removed:
        log.info("removed %d %s folders that killed runs left in %s", len(removed), kind,
                 root)  # fmt: skip
    return len(removed)
