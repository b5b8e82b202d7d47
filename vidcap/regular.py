"""Files of an output folder read only when they are regular files.

An output folder may come from elsewhere (a colleague's, a shared disk) and hold anything
under an output's name: a FIFO ``summary.json`` made ``vidcap report``, ``search`` and
``caption`` wait forever on its first read, and a link to ``/dev/zero`` as a resume record
read without end. Every file vidcap reads back from a folder goes through here: opened
without blocking, read only if it is a regular file (a link to one is followed, unless
``follow`` is False), else ``NotRegular`` (an ``OSError``, which every reader handles).
And a folder a run writes in is its own (``own_folder``): another user's link in its place
is replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegular(OSError):
    """The path is a FIFO, a device, a socket or a folder, not a file to read."""


def read_bytes(path: Path | str, follow: bool = True) -> bytes:
    with open_regular(path, follow) as file:
        return file.read()


def open_regular(path: Path | str, follow: bool = True) -> BinaryIO:
    """``path`` open for reading, if it is a regular file (else ``NotRegular``)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    file = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise NotRegular(errno.EINVAL, "not a regular file", str(path))
    return file


def read_text(path: Path | str) -> str:
    """``path``'s text (UTF-8; ``UnicodeDecodeError``, a ``ValueError``, if it is not)."""
    return read_bytes(path).decode("utf-8")


def own_folder(path: Path, parents: bool = True) -> Path:
    """``path`` made a folder (its parents too, unless not ``parents``: a folder within a
    run's output folder, which a run never makes again once it is gone), a link ``planted``
    in its place removed first: what a run writes, renames over and removes in it (records,
    journals, shards, the page's data) stays in this folder, never in another user's chosen
    target."""
    if planted(path):
        path.unlink()
    path.mkdir(parents=parents, exist_ok=True)
    return path


def planted(path: Path) -> bool:
    """A symbolic link another user made (in a shared folder), which a run never writes
    through. One of this user's own (``OUT/.vidcap`` on a faster disk) is followed."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISLNK(info.st_mode) and info.st_uid != os.getuid()


def is_regular(path: Path) -> bool:
    """A regular file (through links), for readers that open by name (pyarrow)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False
