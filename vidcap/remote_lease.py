"""One run at a time in a remote ``--out`` folder: a lease object, ``.vidcap/run-lease.json``.

A local output folder is held with ``flock`` (``vidcap.out_lock``); an object store has no
lock, and two runs writing one folder (a list split across two machines) each rewrote
``summary.json`` and the page from what it knew: the folder's index then lacked the other
run's videos. So a run with a URL ``--out`` writes a lease there before it begins — who
holds it, since when, renewed at every sync (``vidcap.remote_out``) — and removes it at its
end. A run that finds another's lease renewed within ``STALE_S`` stops with one line; an
older one, or one whose process is gone from this machine, is taken over with a warning,
and in the second case the killed run's staging folder, which the lease names, is removed
from ``$TMPDIR`` (what it had not uploaded, this run does again: ``vidcap.scratch``).
Writing the lease is also the check that the folder can be written to at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vidcap import scratch
from vidcap.errors import UsageError, VidcapError, reason
from vidcap.inputs import shown_source
from vidcap.records import STATE_DIR

log = logging.getLogger(__name__)

LEASE = f"{STATE_DIR}/run-lease.json"
# A lease not renewed for this long is a stopped run's (killed, its machine gone): ten of
# the syncs that renew it (``remote_out.SYNC_SECONDS``).
STALE_S = 300.0
READ_TRIES = 3  # reads of the lease at a renewal before a failure is the sync's


class LeaseLost(VidcapError):
    """This run no longer holds the remote folder's lease (``RemoteLease.renew``)."""


class RemoteLease:
    """The lease of the folder ``url`` (``fs`` and ``root``: fsspec's view of it).
    ``upload(put, path)``: how a file is written there (``StagedFolder._upload``);
    ``staging``: the run's staging folder."""

    def __init__(
        self,
        fs: Any,
        root: str,
        url: str,
        upload: Callable[[Callable[[], object], str], None],
        staging: Path,
    ) -> None:
        self.fs, self._upload, self.staging = fs, upload, staging
        self.url = shown_source(url)  # (for messages: without a password it holds)
        self.path = f"{root}/{LEASE}"
        self.owner = uuid.uuid4().hex
        self._started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def claim(self, listed: bool) -> None:
        """Take the folder, or raise ``UsageError`` when another run holds it. ``listed``:
        the folder's listing holds a lease (else none is read)."""
        held = self._read() if listed else None
        if held is not None and held.get("owner") != self.owner:
            self._refuse_or_take_over(held)
        try:
            self._write()
        except Exception as exc:  # noqa: BLE001 - each file system raises its own
            raise UsageError(f"--out {self.url}: cannot write there ({reason(exc)})") from exc
        now = self._read()  # (two runs that started together: the last write holds it)
        if now is not None and now.get("owner") != self.owner:
            self._refuse_or_take_over(now)

    def renew(self) -> None:
        """At each sync, and before the last upload: the lease written again with the time
        (a failure to write is the sync's), where it is still this run's. Gone, or another
        run's (this one stalled past ``STALE_S`` — a paused job, a frozen machine — and was
        taken over; the folder deleted), it raises ``LeaseLost``: this run must upload
        nothing more, or its summary and page would replace the other run's."""
        held = self._read_for_renewal()
        if held is None or held.get("owner") != self.owner:
            raise LeaseLost(self._lost_why(held))
        self._write()

    def _read_for_renewal(self, tries: int = READ_TRIES) -> dict[str, Any] | None:
        """The lease as it is there; None only where it is really not there (or not a
        lease). A read that fails (a timeout, a 5xx: the store, not the lease) is tried
        again, then raised: a sync that failed, retried at the next, never a lease lost."""
        for attempt in range(tries):
            try:
                data = self.fs.cat_file(self.path)
            except FileNotFoundError:
                return None
            except Exception:  # noqa: BLE001 - each file system raises its own
                if attempt == tries - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
                continue
            try:
                held = json.loads(data)
            except ValueError:
                return None
            return held if isinstance(held, dict) else None
        return None  # (not reached)

    def _lost_why(self, held: dict[str, Any] | None) -> str:
        if held is None:
            return (
                f"--out {self.url}: this run's lease ({LEASE}) is gone from there (the folder "
                "removed or emptied?): nothing more is uploaded"
            )
        return (
            f"--out {self.url}: another run took the folder over (on {held.get('host', '?')}, "
            f"process {held.get('pid', '?')}, since {held.get('started', '?')}): this one was "
            f"not heard from for over {STALE_S:.0f} s (paused or stalled); nothing more is "
            "uploaded, so as not to replace that run's summary and page"
        )

    def release(self) -> None:
        """At the run's end: the lease removed, where it is still this run's."""
        with contextlib.suppress(Exception):
            held = self._read()
            if held is None or held.get("owner") == self.owner:
                self.fs.rm_file(self.path)

    def _refuse_or_take_over(self, held: dict[str, Any]) -> None:
        renewed = held.get("renewed")
        age = time.time() - renewed if isinstance(renewed, int | float) else None
        who = f"on {held.get('host', '?')}, process {held.get('pid', '?')}"
        since = f"since {held.get('started', '?')}"
        if age is not None and age < STALE_S and not _gone_from_here(held):
            raise UsageError(
                f"--out {self.url}: another run is writing there ({who}, {since}; renewed "
                f"{max(0.0, age):.0f} s ago): one run at a time in an output folder. Give this "
                f"one another --out, or wait for it; a lease not renewed for {STALE_S:.0f} s "
                f"({self.url}/{LEASE}) is taken over"
            )
        log.warning(
            "--out %s: the lease of a run that stopped (%s, %s) taken over", self.url, who, since
        )
        left = held.get("staging")
        if isinstance(left, str) and scratch.remove_if_left(Path(left), "out"):
            log.info("--out %s: the staging folder the stopped run left (%s) removed", self.url,
                     left)  # fmt: skip

    def _write(self) -> None:
        data = {
            "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
            "started": self._started, "renewed": time.time(), "staging": str(self.staging),
        }  # fmt: skip
        body = json.dumps(data).encode()
        self._upload(lambda: self.fs.pipe_file(self.path, body), self.path)

    def _read(self) -> dict[str, Any] | None:
        """The lease, where one can be read (at the claim: one that cannot is none)."""
        try:
            return self._read_for_renewal(tries=1)
        except Exception:  # noqa: BLE001 - unreadable: no lease
            return None


def _gone_from_here(held: dict[str, Any]) -> bool:
    """Was the lease written by a process of this machine that no longer runs?"""
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return scratch.process_gone(pid)
