"""The client socket of ``vidcap.serve.gunicorn_worker``: its reads stop at the request's
deadline, it can be shed from another thread, and it can be given bytes read for it before
a thread took it."""

from __future__ import annotations

import socket
import time

from vidcap.serve import protocol


class DeadlineSocket(socket.socket):
    """A client socket whose reads stop at the request's deadline.

    In blocking mode each call waits at most ``stall`` seconds (never forever) and, while
    ``deadline`` (``time.monotonic()``) is set, never past it: a read then raises
    ``DeadlinePassed``, as does every read after ``shed``.
    """

    stall: float | None = None
    deadline: float | None = None
    reading_since: float = 0.0
    was_shed: bool = False
    pending: memoryview | None = None  # gathered bytes not yet read (``give``)
    pending_at: int = 0

    def setblocking(self, flag: bool) -> None:
        if flag and self.stall is not None:
            self.settimeout(self.stall)
        else:
            super().setblocking(flag)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.pending is not None:
            return bytes(self._take(bufsize))
        self._arm()
        try:
            data = super().recv(bufsize, flags)
        except TimeoutError:
            self._check_deadline()
            raise
        if self.was_shed:
            raise protocol.Shed()
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[no-untyped-def, override]
        if self.pending is not None:
            piece = self._take(nbytes or len(buffer))
            buffer[: len(piece)] = piece
            return len(piece)
        self._arm()
        try:
            size = super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            self._check_deadline()
            raise
        if self.was_shed:
            raise protocol.Shed()
        return size

    def give(self, data: bytearray) -> None:
        """Bytes read for the connection before a thread took it: ``recv`` returns them
        first, a chunk at a time (gunicorn's parser, given them whole, copied what was left
        at every read: a 14 MB body cost 5 s of CPU)."""
        self.pending, self.pending_at = memoryview(data), 0

    def take_pending(self) -> bytes:
        """What is left of the given bytes (a pipelined request), no longer given."""
        rest = b"" if self.pending is None else bytes(self.pending[self.pending_at :])
        self.pending = None
        return rest

    def _take(self, size: int) -> memoryview:
        assert self.pending is not None
        piece = self.pending[self.pending_at : self.pending_at + max(size, 1)]
        self.pending_at += len(piece)
        if self.pending_at >= len(self.pending):
            self.pending = None
        return piece

    def start_request(self, timeout: float) -> None:
        self.reading_since = time.monotonic()
        self.deadline = self.reading_since + timeout

    def shed(self) -> None:
        """Stop reading the client, from another thread: a blocked read returns at once
        and raises ``Shed``; the thread answers 503 and closes."""
        self.was_shed = True
        try:
            self.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _arm(self) -> None:
        if self.was_shed:
            raise protocol.Shed()
        if self.deadline is None or self.gettimeout() == 0.0:
            return  # no request being read, or non-blocking (the poller's socket)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise protocol.DeadlinePassed("request not received in time")
        self.settimeout(min(remaining, self.stall) if self.stall else remaining)

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline - 0.01:
            raise protocol.DeadlinePassed("request not received in time") from None
