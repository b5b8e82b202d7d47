"""One run at a time in an output folder.

Two runs writing one ``--out`` (the same command started twice, a cron job that overlaps
the last, two machines sharing a folder) would caption everything twice and write the same
``.part`` files at once: a record of one run could vouch for outputs of the other, with
other settings. A run holds ``OUT/.vidcap/run.lock`` with ``flock`` while it writes; the
kernel lets it go when the process ends, however it ends, so there is never a stale lock to
clear. The file says which process holds it (for the second run's error line). On NFS,
Linux takes ``flock`` as a lock the server keeps, so the rule holds across machines too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vidcap.errors import UsageError, VidcapError
from vidcap.records import STATE_DIR
from vidcap.regular import own_folder

LOCK_NAME = "run.lock"
# flock's answers on a file system that takes no locks (Lustre mounted without flock, NFS
# mounted nolock, some FUSE file systems): the run goes on, unguarded, saying so.
NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})

log = logging.getLogger(__name__)


@contextmanager
def gone_if_unused(out_dir: Path) -> Iterator[None]:
    """A run's block: where it cannot start (a ``VidcapError``: no inputs, no model, a device,
    server or cluster it cannot have) and ``out_dir`` did not exist before it, the folder it
    made for nothing is removed again, if it holds nothing but the run's lock. A folder that
    holds anything else stays."""
    made = not out_dir.exists()
    try:
        yield
    except VidcapError:
        if made:
            with contextlib.suppress(OSError):
                (out_dir / STATE_DIR / LOCK_NAME).unlink(missing_ok=True)
            for folder in (out_dir / STATE_DIR, out_dir):
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


@contextmanager
def holding(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s run lock for the block; ``UsageError`` naming the holder if
    another run holds it."""
    path = out_dir / STATE_DIR / LOCK_NAME
    own_folder(path.parent)
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise UsageError(
                f"--out {out_dir} is in use by another vidcap run ({holder}): wait for it to "
                "end, or give another --out"
            ) from None
        except OSError as exc:
            if exc.errno not in NO_LOCKS:
                raise
            log.warning(
                "--out %s: its file system takes no locks (%s): a second run started in "
                "this folder while this one runs is not kept out",
                out_dir, exc.strerror,
            )  # fmt: skip
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # (closing lets the lock go)


def _open_lock(path: Path) -> int:
    """The lock file, a regular file opened without following a link: a link or FIFO put
    under its name in a shared folder is removed first (a link's target was truncated and
    written). A regular one is kept: a run holding it keeps holding that very file."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # (ELOOP: a symbolic link)
                raise
        else:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    raise OSError(errno.EEXIST, "not a regular file, and it stays", str(path))


def held_by(out_dir: Path) -> str | None:
    """Who holds ``out_dir``'s run lock now (its ``pid … on …, since …`` line), or None: no
    run holds it, or it cannot be told. Reads only: the lock file is neither made nor
    written, and a shared lock is taken for an instant (a reader's ``search`` or ``report``
    beside a run)."""
    path = out_dir / STATE_DIR / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another run"
        except OSError:
            return None
        return None
    finally:
        os.close(fd)  # (closing lets a shared lock go)
