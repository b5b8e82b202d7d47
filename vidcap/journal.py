"""A video's captions kept on disk as they come, so that a run stopped part-way through a
video (killed, Ctrl-C, a lost server, a full disk) loses none the model already made.

``OUT/.vidcap/journal/<name>.jsonl``: a header line, then one line per captioned frame::

    {"journal": 1, "key": <settings key>, "revision": <model commit>, "identity": <source>,
     "precision": "float32"}
    {"frame": 120, "time": 4.004, "caption": "a man in a suit"}

A video's journal begins at its ``JOURNAL_AFTER``-th caption (with the ones before): a short
clip, done in a moment, costs no file, and a kill loses fewer than that many captions of
each video in flight (a run that stops otherwise, at Ctrl-C, SIGTERM, or its servers gone,
writes them as it stops). Each line is written whole and flushed to the operating system as
its caption arrives (a killed process loses none; a power cut may lose the last ones).

A rerun reads the journal of each video it has to do, and only when its header matches
(same settings key, model commit and source identity: ``vidcap.inputs.source_identity``,
or the same file moved since: ``same_file``); a journal left under another output name is
found by its header and renamed (``adopt_journals``). The precision is no part of that match, as it
is no part of the settings key, but a run in another precision goes on with the journal
only after rewriting its header to name both, so the video's record names every precision
its captions were made in (a moved file's header is rewritten to name its new path). The
engine then sends the model only the frames the journal lacks, and takes the others'
captions from it, in their places. A torn last line (the process killed mid-write) is cut
off. The journal goes once the video's resume record is written (its outputs are durable);
a failed video keeps its journal, for the rerun that redoes it.

Journals are opened without following a symbolic link and read only when they are regular
files: a link planted in a shared output folder (to a user's file, ``/dev/zero``, a FIFO)
is neither written through nor read; a new journal replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vidcap import jsontext, regular
from vidcap.inputs import LOCAL_IDENTITY, gone
from vidcap.outputs import CaptionedFrame, new_part
from vidcap.settings import joined_precisions

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"  # in OUT/.vidcap
JOURNAL_AFTER = 64  # captions of a video before it gets a journal
# Journal files a run holds open at most: more videos in flight (a Ray cluster's hundreds of
# decode tasks) have theirs closed, least recently written first, and opened again to add.
MAX_OPEN = 64
VERSION = 1
MAX_HEADER = 1 << 16  # bytes of a journal's first line read, at most, to match it by file


def journal_path(state_dir: Path, name: str) -> Path:
    return state_dir / JOURNAL_DIR / f"{name}.jsonl"


def header(
    key: str, revision: str, identity: dict[str, Any], precision: str = ""
) -> dict[str, Any]:
    """A journal's first line; ``precision``: what its captions were made in (``""``:
    unknown), the only field a run need not match to go on with it."""
    return {
        "journal": VERSION, "key": key, "revision": revision, "identity": identity,
        "precision": precision,
    }  # fmt: skip


@dataclass
class Kept:
    """What a journal holds: its header as read, captions by frame index (with each frame's
    time), where its rows begin, and the length of its whole lines (where appending goes on)."""

    head: dict[str, Any] = field(default_factory=dict)
    captions: dict[int, tuple[float, str]] = field(default_factory=dict)
    rows: int = 0
    end: int = 0

    @property
    def precision(self) -> str:
        """What its captions were made in (``""``: unknown, a journal older than the field)."""
        return self.head.get("precision", "")

    @property
    def moved_from(self) -> str | None:
        """The path its file had, where the file has moved since (``same_file``)."""
        return self.head["identity"]["path"] if self.head.get("moved") else None


def _matched(row: object, expected: dict[str, Any]) -> bool:
    """Does a journal's header ``row`` match ``expected``: all but the precision, and the
    identity that of the same file (``same_file``)? A moved file's is noted (``"moved"``)."""
    if not isinstance(row, dict) or not isinstance(row.get("precision", ""), str):
        return False
    rest = {k: v for k, v in row.items() if k not in ("precision", "identity")}
    if rest != {k: v for k, v in expected.items() if k not in ("precision", "identity")}:
        return False
    if row.get("identity") == expected["identity"]:
        return True
    row["moved"] = same_file(row.get("identity"), expected["identity"])
    return row["moved"]


def same_file(recorded: object, current: dict[str, Any]) -> bool:
    """Is ``current`` (a local file's ``source_identity``) the file ``recorded`` names,
    moved since: the same size and modification time, to the nanosecond, and nothing left
    at its recorded path (a library moved or mounted elsewhere while a run was stopped
    part-way through it; ``vidcap.moved`` keeps done videos by SHA-256, which a video
    stopped part-way has not got)? A file whose old path still holds something is a copy:
    another video."""
    return (
        isinstance(recorded, dict)
        and set(recorded) == set(current) == LOCAL_IDENTITY
        and recorded["path"] != current["path"]
        and recorded["size"] == current["size"]
        and recorded["mtime_ns"] == current["mtime_ns"]
        and gone(recorded["path"])
    )


def read_journal(path: Path, expected: dict[str, Any]) -> Kept | None:
    """The captions ``path`` holds, if its header is ``expected``; else (absent, another
    run's settings or source, unreadable, not a regular file) None. Lines are read up to
    the first that is not a whole, well-formed row: only the last can be torn by a kill."""
    try:
        data = regular.read_bytes(path, follow=False)
    except OSError:
        return None
    kept = Kept()
    start = 0
    first = True
    while (stop := data.find(b"\n", start)) != -1:
        try:
            row = jsontext.loads(data[start:stop])
        except ValueError:
            break
        if first:
            if not _matched(row, expected):
                return None
            kept.head, kept.rows, first = row, stop + 1, False
        elif _sound(row):
            kept.captions[row["frame"]] = (float(row["time"]), row["caption"])
        else:
            break
        start = kept.end = stop + 1
    return None if first else kept


def adopt_journals(
    folder: Path, unclaimed: Iterable[str], wanted: Mapping[Path, dict[str, Any]]
) -> dict[Path, Kept]:
    """Journals in ``folder`` under names no video of the run has (``unclaimed``) that are
    the journal of a video ``wanted`` (its journal's path → the header it expects): the
    same file (or the same file moved: ``same_file``) under another output name — a hashed
    name, the hash being the path's, given to a moved file; or a stem that another input
    now shares, hashed since. Each is renamed to that video's journal, and read."""
    by_file: dict[tuple[int, int], list[Path]] = {}
    for target, expected in wanted.items():
        identity = expected["identity"]
        if set(identity) == LOCAL_IDENTITY:
            by_file.setdefault((identity["size"], identity["mtime_ns"]), []).append(target)
    adopted: dict[Path, Kept] = {}
    for name in sorted(unclaimed) if by_file else ():
        head = _read_header(folder / name) if name.endswith(".jsonl") else None
        identity = head.get("identity") if head else None
        if not isinstance(identity, dict):
            continue
        size, mtime = identity.get("size"), identity.get("mtime_ns")
        if not (isinstance(size, int) and isinstance(mtime, int)):
            continue
        for target in by_file.get((size, mtime), []):
            if target not in adopted and _matched(dict(head), wanted[target]):
                try:
                    os.replace(folder / name, target)
                except OSError:
                    break
                if (kept := read_journal(target, wanted[target])) is not None:
                    adopted[target] = kept
                break
    return adopted


def _read_header(path: Path) -> dict[str, Any] | None:
    """A journal's first line, if it is whole and an object (the rest is not read)."""
    try:
        with regular.open_regular(path, follow=False) as file:
            line = file.readline(MAX_HEADER)
        head = jsontext.loads(line) if line.endswith(b"\n") else None
    except (OSError, ValueError):
        return None
    return head if isinstance(head, dict) else None


def _sound(row: object) -> bool:
    return (
        isinstance(row, dict)
        and isinstance(row.get("frame"), int)
        and not isinstance(row.get("frame"), bool)
        and isinstance(row.get("time"), (int, float))
        and not isinstance(row.get("time"), bool)
        and isinstance(row.get("caption"), str)
    )


class Journal:
    """One video's journal, open for appending: ``kept`` (a journal this run goes on
    with, its torn tail cut off; its header rewritten first where ``head`` names another
    precision, to name both, or its file's new path) or a new one, the header written
    first. ``suspend`` closes its file until the next ``add`` (a run with more videos in
    flight than it keeps files open: ``MAX_OPEN``)."""

    def __init__(self, path: Path, head: dict[str, Any], kept: Kept | None) -> None:
        self.path = path
        regular.own_folder(path.parent, parents=False)  # (OUT/.vidcap: never made again)
        self._file: IO[bytes] | None = None
        if kept is not None and kept.head != (wanted := {**head, "precision": _both(kept, head)}):
            try:
                _rewrite(path, wanted, kept)
            except FileNotFoundError:  # (removed since it was read: begun again, as below)
                kept = None
        if kept is not None:
            try:
                self._file = _open(path, os.O_RDWR, "r+b")
            except FileNotFoundError:  # (removed since it was read: begun again)
                kept = None
            else:
                self._file.truncate(kept.end)  # (a torn last line)
                self._file.seek(kept.end)
        if kept is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # (another run's journal, or whatever was put there)
            self._file = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "wb")
            self._write(head)

    def add(self, frame: CaptionedFrame) -> None:
        self._write({"frame": frame.index, "time": frame.time, "caption": frame.caption})

    def _write(self, row: dict[str, Any]) -> None:
        if self._file is None:
            self._file = _open(self.path, os.O_WRONLY | os.O_APPEND, "ab")
        self._file.write(json.dumps(row).encode() + b"\n")  # (ASCII: no lone surrogate fails)
        self._file.flush()

    def suspend(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    close = suspend


def _both(kept: Kept, head: dict[str, Any]) -> str:
    return joined_precisions(kept.precision, head.get("precision", ""))


def _rewrite(path: Path, head: dict[str, Any], kept: Kept) -> None:
    """The journal at ``path`` with ``head`` in place of its header, its whole rows kept:
    written beside it and renamed over it (a kill in between leaves the old one whole)."""
    line = json.dumps(head).encode() + b"\n"
    rows = regular.read_bytes(path, follow=False)[kept.rows : kept.end]
    with new_part(path, durable=False) as part:
        part.write(line + rows)
    kept.rows, kept.end = len(line), len(line) + len(rows)


def _open(path: Path, flags: int, mode: str) -> IO[bytes]:
    """``path`` opened with ``flags``, never through a symbolic link."""
    return os.fdopen(os.open(path, flags | os.O_NOFOLLOW, 0o644), mode)


def drop_journal(path: Path) -> None:
    """The journal of a video whose outputs are durable: no longer needed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("%s: not removed (%s); it is ignored", path, exc.strerror)
