"""A gunicorn ``gthread`` worker that slow or hostile clients cannot starve.

Stock ``gthread`` reads a request's headers and body in a pool thread with a blocking
socket, each read waiting for the next bytes: a client that trickles a byte every few
seconds holds its thread for as long as it likes, and ``THREADS`` such clients hold
them all. Here (``flask/start.sh`` selects it with ``--worker-class``):

* **A whole-request deadline.** Every request must arrive whole — headers and body —
  within ``read_timeout`` (``VIDCAP_READ_TIMEOUT``) of the moment a thread starts on it;
  the connection's socket carries the deadline and refuses any read past it
  (``DeadlinePassed``), whatever the client's pace. Headers not in by then are answered
  408 and the connection closed; a body is answered 408 by
  ``vidcap.serve.flask_app.BodyReader``, which then lifts the deadline (the model may
  take longer than a client may take to send).
* **The slow ones closed.** When every thread is taken and a connection waits for one,
  or the worker holds ``max_connections`` (``VIDCAP_MAX_CONNECTIONS``) connections,
  the client that has been sending its request longest (at least ``SHED_AFTER``
  seconds) is no longer read — answered 503 + ``Retry-After`` and closed — one per
  waiting connection, so a good request gets a thread within seconds however many
  clients stall.
* **Closing without waiting.** gunicorn closes a connection after an answer such as
  408 or 413 "gracefully", draining what the client still sends for up to 2 s — on the
  worker's main thread, so each slow client closed froze every other connection for
  that long. Here the drain happens as data arrives (``Lingering``), never blocking.
* **JSON errors.** gunicorn's own answers to requests it cannot parse (a bad request
  line, header or chunk size, headers too large) are ``{"error": …}`` like every other
  answer, not HTML.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from functools import partial
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig

# Seconds a client must have been sending its request before it may be disconnected
# to make room: longer than any good client on a working network takes.
SHED_AFTER = 1.0
# After an answer that closes the connection, what the client still sends is read and
# dropped (so it sees the answer, not a reset) for at most this long and this much.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024


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

    def setblocking(self, flag: bool) -> None:
        if flag and self.stall is not None:
            self.settimeout(self.stall)
        else:
            super().setblocking(flag)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
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
        self._arm()
        try:
            size = super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            self._check_deadline()
            raise
        if self.was_shed:
            raise protocol.Shed()
        return size

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


def json_error_bytes(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\n{retry}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error`` with a JSON body (gunicorn's own is HTML)."""
    util.write_nonblock(sock, json_error_bytes(status_int, mesg or reason))


class DeadlineConn(TConn):
    """A connection whose graceful close does not wait: see ``DeadlineThreadWorker.linger``."""

    linger: object = None  # the worker's ``linger`` method

    def close(self, graceful: bool = False) -> None:
        if graceful and self.linger is not None:
            self.linger(self.sock)  # type: ignore[operator]
        else:
            super().close(graceful)


class DeadlineThreadWorker(ThreadWorker):
    """``gthread`` with whole-request deadlines, shedding and JSON errors (module doc)."""

    def init_process(self) -> None:
        config = ServeConfig.from_sources({}, os.environ)
        self.read_timeout = config.read_timeout
        self.worker_connections = config.max_connections
        self.max_keepalived = max(config.max_connections - self.cfg.threads, 0)
        self.inflight = 0  # connections handed to the pool and not finished (main thread)
        self.handling: dict[int, DeadlineSocket] = {}  # sockets a pool thread is on
        self.shed_waiting = 0  # shed, their thread not yet finished
        self.lingering: dict[socket.socket, tuple[float, int]] = {}  # closing: (until, drained)
        util.write_error = write_json_error  # handle_error's answers, in this worker process
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        """``ThreadWorker.accept`` with the accepted socket made a ``DeadlineSocket``."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock = DeadlineSocket(client.family, client.type, client.proto, fileno=client.detach())
        sock.stall = self.read_timeout
        self.nr_conns += 1
        sock.setblocking(True)
        conn = DeadlineConn(self.cfg, sock, address, listener.getsockname())
        conn.linger = self.linger
        self.enqueue_req(conn)

    def enqueue_req(self, conn: TConn) -> None:
        self.inflight += 1
        super().enqueue_req(conn)
        self.relieve()

    def finish_request(self, conn: TConn, fs) -> None:  # type: ignore[no-untyped-def]
        self.inflight -= 1
        if getattr(conn.sock, "was_shed", False):
            self.shed_waiting = max(0, self.shed_waiting - 1)
        super().finish_request(conn, fs)

    def murder_pending(self) -> None:
        super().murder_pending()
        self.relieve()  # once a second at least: readers grow old while nothing arrives
        now = time.monotonic()
        for sock, (until, _) in list(self.lingering.items()):
            if now >= until:
                self._closed_lingering(sock)

    def linger(self, sock: socket.socket) -> None:
        """Close after an answer: FIN now, then drop what the client still sends as it
        arrives (the main loop's poller), and close at its end, at ``LINGER_BYTES`` or
        after ``LINGER_S`` — ``gunicorn.util.close_graceful`` without blocking the
        worker's main thread (where connections are closed)."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self.lingering[sock] = (time.monotonic() + LINGER_S, 0)
        try:
            self.poller.register(sock, selectors.EVENT_READ, partial(self._drain, sock))
        except (OSError, ValueError, KeyError):
            self._closed_lingering(sock)

    def _drain(self, sock: socket.socket, _fileobj: object = None) -> None:
        until, drained = self.lingering.get(sock, (0.0, 0))
        try:
            data = socket.socket.recv(sock, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        drained += len(data)
        if not data or drained >= LINGER_BYTES:
            self._closed_lingering(sock)
        else:
            self.lingering[sock] = (until, drained)

    def _closed_lingering(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (OSError, ValueError, KeyError):
            pass
        sock.close()

    def handle(self, conn: TConn):  # type: ignore[no-untyped-def]
        sock = conn.sock
        if not isinstance(sock, DeadlineSocket):
            return super().handle(conn)
        sock.start_request(self.read_timeout)
        self.handling[id(sock)] = sock
        try:
            return super().handle(conn)
        finally:
            sock.deadline = None
            self.handling.pop(id(sock), None)

    def handle_error(self, req, client, addr, exc) -> None:  # type: ignore[no-untyped-def]
        if isinstance(exc, protocol.DeadlinePassed):
            error = (
                protocol.shed_answer()
                if isinstance(exc, protocol.Shed)
                else protocol.headers_timeout(self.read_timeout)
            )
            try:
                util.write_nonblock(client, json_error_bytes(error.status, str(error)))
            except Exception:  # noqa: BLE001 - the client is gone
                pass
            return
        super().handle_error(req, client, addr, exc)

    def relieve(self) -> None:
        """Disconnect the longest-reading clients while connections wait for a thread or
        the worker is at its connection limit (main thread only)."""
        excess = self.inflight - self.shed_waiting - self.cfg.threads
        if self.nr_conns - self.shed_waiting >= self.worker_connections:
            excess = max(excess, 1)
        if excess <= 0:
            return
        now = time.monotonic()
        readers = sorted(
            (
                sock
                for sock in list(self.handling.values())
                if sock.deadline is not None
                and not sock.was_shed
                and now - sock.reading_since >= SHED_AFTER
            ),
            key=lambda sock: sock.reading_since,
        )
        for victim in readers[:excess]:
            self.log.warning(
                "closed a client that has been sending its request for %.1fs: "
                "connections are waiting for the %d threads",
                now - victim.reading_since,
                self.cfg.threads,
            )
            victim.shed()
            self.shed_waiting += 1
