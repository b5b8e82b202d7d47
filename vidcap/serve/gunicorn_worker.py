"""A gunicorn ``gthread`` worker that slow or hostile clients cannot starve.

Stock ``gthread`` reads a request's headers and body in a pool thread with a blocking
socket, each read waiting for the next bytes: a client that trickles a byte every few
seconds holds its thread for as long as it likes, and ``THREADS`` such clients hold
them all. Here (``flask/start.sh`` selects it with ``--worker-class``):

* **No thread before the request is in.** Stock ``gthread`` hands every new connection
  to a pool thread at once, which waits there for the client's bytes: 3,000 connections
  opened and left silent, sent half a request line, or headers and two bytes of a body,
  held the 16 threads in turn and a good request waited minutes. Here the main loop's
  poller gathers a request without a thread, for new and kept-alive connections alike
  (pipelined requests too: what a request leaves unread is the next one's start):
  its headers (to ``HEADER_END``; past ``GATHER_LIMIT`` bytes a thread reads on and
  gunicorn refuses headers that long), then the body its ``Content-Length`` declares
  (``declared_body``; a chunked body, ``Expect: 100-continue`` or a length over
  ``VIDCAP_MAX_REQUEST_MB`` is left to the thread, which reads or refuses it as before).
  The bytes gathered by every connection together stay under ``VIDCAP_MAX_BODIES_MB``:
  past it the connections gathering for longest (at least ``SHED_AFTER``) are closed
  (503), else the one that would pass it. A request not in within ``read_timeout`` of
  its first byte (of the connection's opening, if it sends nothing) is answered 408
  (closed silently if it sent nothing).
* **A whole-request deadline.** Every request must arrive whole — headers and body —
  within ``read_timeout`` (``VIDCAP_READ_TIMEOUT``) of the moment a thread starts on it
  (a request waiting for a thread is not late for it); the connection's socket carries
  the deadline and refuses any read past it (``DeadlinePassed``), whatever the client's
  pace. A body not in by then is answered 408 by
  ``vidcap.serve.flask_app.BodyReader``, which then lifts the deadline (the model may
  take longer than a client may take to send).
* **The slow ones closed.** When every thread is taken and a connection waits for one,
  the client that has been sending its request longest (at least ``SHED_AFTER``
  seconds) is no longer read — answered 503 + ``Retry-After`` and closed — one per
  waiting connection, so a good request gets a thread within seconds however many
  clients stall. When the worker holds ``max_connections`` (``VIDCAP_MAX_CONNECTIONS``)
  connections (it then accepts no more: new ones wait in the kernel's queue), every
  connection that has not sent its headers within ``SHED_AFTER`` seconds of opening is
  closed (503 if it sent anything), and one thread's slowest reader as above.
* **Closing without waiting.** gunicorn closes a connection after an answer such as
  408 or 413 "gracefully", draining what the client still sends for up to 2 s — on the
  worker's main thread, so each slow client closed froze every other connection for
  that long. Here the drain happens as data arrives (``Lingering``), never blocking.
* **Threads in turns.** A request that is in waits for a thread in its client's turn (a
  peer address: ``vidcap.serve.turns.TurnQueue``), not first come, first served: one
  client's many connections, each resending as soon as it is answered, no longer hold
  another client's request behind all of theirs.
* **JSON errors.** gunicorn's own answers to requests it cannot parse (a bad request
  line, header or chunk size, headers too large) are ``{"error": …}`` like every other
  answer, not HTML.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import socket
import time
from concurrent import futures
from functools import partial
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig
from vidcap.serve.deadline_socket import DeadlineSocket
from vidcap.serve.turns import TurnQueue, client_of
from vidcap.wire import WireLimits

# Seconds a client must have been sending its request before it may be disconnected
# to make room: longer than any good client on a working network takes.
SHED_AFTER = 1.0
# After an answer that closes the connection, what the client still sends is read and
# dropped (so it sees the answer, not a reset) for at most this long and this much.
LINGER_S = 2.0
LINGER_BYTES = 64 * 1024
# The end of a request's headers; gathered without a thread up to GATHER_LIMIT bytes (then
# a thread reads on, and gunicorn refuses headers past its own limits: 8 KB a line).
HEADER_END = b"\r\n\r\n"
GATHER_LIMIT = 64 * 1024
BARE_LF = re.compile(rb"(?<!\r)\n")


GATHERED_FULL = "requests being sent would pass VIDCAP_MAX_BODIES_MB in memory"


def _work_client(item: object) -> str:
    """The client (``client_of`` its peer address) of a thread pool work item's connection
    ("": none, the pool's shutdown marker)."""
    args = getattr(item, "args", ())
    address = getattr(args[0], "client", None) if args else None
    return client_of(str(address[0])) if isinstance(address, tuple) and address else ""


def _fields(head: bytes | bytearray) -> list[tuple[bytes, bytes]] | None:
    """A header block's (lower-case name, value) pairs; None where a line is not a header."""
    fields = []
    for line in bytes(head).split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def declared_body(head: bytes | bytearray, limit: int) -> int | None:
    """The body length a request's header block (without its blank line) declares, when
    the main loop may gather it: no ``Content-Length`` is 0, one of ASCII digits up to
    ``limit`` is itself. ``None`` — a thread reads the body, and gunicorn or the app
    answer as they do — for ``Transfer-Encoding`` (chunked), ``Expect`` (the client waits
    for ``100 Continue``), a length over the limit (413 from the header), several
    lengths or one that is not digits (400), and a line that is not a header."""
    fields = _fields(head)
    if fields is None or any(n in (b"transfer-encoding", b"expect") for n, _ in fields):
        return None
    lengths = [value for name, value in fields if name == b"content-length"]
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit() or int(lengths[0]) > limit:
        return None
    return int(lengths[0])


def refused_before_asking(
    head: bytes | bytearray, limit: int, limits: WireLimits
) -> protocol.BadRequest | None:
    """The 413 of a request that waits for ``100 Continue`` (``Expect: 100-continue``) to
    send a body its one ``Content-Length`` says is too large — over ``limit``, or, for one
    image (an ``image/*`` body), over ``limits``' bytes per frame; None: ask for it. Answered
    from the head: gunicorn would send ``100 Continue`` first, and the client would start
    sending a body refused anyway."""
    fields = _fields(head)
    if fields is None:
        return None
    expects = [value.lower() for name, value in fields if name == b"expect"]
    lengths = [value for name, value in fields if name == b"content-length"]
    if expects != [b"100-continue"] or len(lengths) != 1 or not lengths[0].isdigit():
        return None
    length = int(lengths[0])
    if length > limit:
        return protocol.too_large(limit)
    types = [value.decode("latin-1") for name, value in fields if name == b"content-type"]
    return protocol.image_too_large(types[0] if len(types) == 1 else "", length, limits)


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
    """A connection whose graceful close does not wait (see ``DeadlineThreadWorker.linger``)
    and whose request headers are gathered before a thread takes it."""

    linger: object = None  # the worker's ``linger`` method
    gathered: bytearray  # the request's first bytes, read by the main loop
    first_byte: float | None = None  # when they began to arrive (time.monotonic())
    request_end: int | None = None  # the length of headers and body, once the headers are in
    opened: float = 0.0  # when the connection was accepted, or went back to waiting

    @property
    def sending_since(self) -> float:
        """When its request began to arrive (its opening, while it has sent nothing)."""
        return self.first_byte if self.first_byte is not None else self.opened

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.gathered = bytearray()

    def init(self) -> None:
        """gunicorn's set-up, then the gathered bytes put before what the parser reads."""
        super().init()
        if self.gathered:
            gathered, self.gathered = self.gathered, bytearray()
            self.sock.give(gathered)  # read first, as the socket's own bytes

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
        self.gathering: dict[DeadlineConn, None] = {}  # sending their request, oldest first
        self.gathered_bytes = 0  # held by them all
        self.max_gathered = config.max_bodies_bytes
        self.max_request_bytes = config.max_request_bytes
        self.sizes = (config.max_request_bytes, config.limits())  # (refused_before_asking)
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
        conn = DeadlineConn(self.cfg, sock, address, listener.getsockname())
        conn.linger = self.linger
        if self.cfg.is_ssl:  # TLS bytes cannot be gathered before the handshake
            sock.setblocking(True)
            self.enqueue_req(conn)
        else:
            self.gather(conn)

    def gather(self, conn: DeadlineConn) -> None:
        """Wait in the poller, without a thread, for the request's headers (``_gathered``)."""
        conn.gathered, conn.first_byte, conn.opened = bytearray(), None, time.monotonic()
        conn.request_end = None
        conn.data_ready = True  # what the thread needs is here: gunicorn waits for none
        try:
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._gathered, conn))
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            conn.close()
            return
        self.gathering[conn] = None

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request: gathered as a new connection's."""
        if not isinstance(conn, DeadlineConn) or self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.gather(conn)
        if conn in self.gathering:
            self._gathered(conn)

    def _gathered(self, conn: DeadlineConn, _fileobj: object = None) -> None:
        try:
            data = socket.socket.recv(conn.sock, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._stop_gathering(conn)
            self.nr_conns -= 1
            conn.close()
            return
        self._received(conn, data)

    def _received(self, conn: DeadlineConn, data: bytes) -> None:
        """``data`` of a gathering connection's request: a thread takes it once it is in."""
        if conn.first_byte is None:
            conn.first_byte = time.monotonic()
        if not self._room(conn, len(data)):
            self._close_gathering(conn, protocol.busy(GATHERED_FULL))
            return
        searched = max(len(conn.gathered) - len(HEADER_END) + 1, 0)
        conn.gathered += data
        self.gathered_bytes += len(data)
        if conn.request_end is None:
            end = conn.gathered.find(HEADER_END, searched)
            if end < 0 and len(conn.gathered) < GATHER_LIMIT:
                if BARE_LF.search(conn.gathered, max(searched - 1, 0)) is None:
                    return  # (a line ended without CR: gunicorn's 400 now, not a 408 later)
            head = conn.gathered[:end]
            refusal = None if end < 0 else refused_before_asking(head, *self.sizes)
            if refusal is not None:
                self._close_gathering(conn, refusal)
                return
            body = None if end < 0 else declared_body(head, self.max_request_bytes)
            if body is None:  # the thread reads the rest
                conn.request_end = len(conn.gathered)
            else:
                conn.request_end = end + len(HEADER_END) + body
        if len(conn.gathered) >= conn.request_end:
            self._stop_gathering(conn)
            self.enqueue_req(conn)

    def _room(self, conn: DeadlineConn, size: int) -> bool:
        """Room for ``size`` more gathered bytes, made by closing the connections gathering
        for longest (``SHED_AFTER`` at least) when needed."""
        now = time.monotonic()
        while self.gathered_bytes + size > self.max_gathered:
            victim = next(
                (
                    other
                    for other in self.gathering
                    if other is not conn
                    and other.gathered
                    and now - other.sending_since >= SHED_AFTER
                ),
                None,
            )
            if victim is None:
                return False
            self.log.warning("closed a client that has been sending its request for %.1fs: "
                             "requests gathered would pass VIDCAP_MAX_BODIES_MB",
                             now - victim.sending_since)  # fmt: skip
            self._close_gathering(victim, protocol.shed_answer())
        return True

    def _stop_gathering(self, conn: DeadlineConn) -> None:
        if conn in self.gathering:
            del self.gathering[conn]
            self.gathered_bytes -= len(conn.gathered)
        try:
            self.poller.unregister(conn.sock)
        except (OSError, ValueError, KeyError):
            pass

    def _close_gathering(self, conn: DeadlineConn, error: protocol.BadRequest) -> None:
        """Close a connection still sending its request: ``error`` if it sent anything."""
        self._stop_gathering(conn)
        self.nr_conns -= 1
        if conn.first_byte is None:
            conn.close()
            return
        try:
            util.write_nonblock(conn.sock, json_error_bytes(error.status, str(error)))
        except OSError:
            pass
        self.linger(conn.sock)

    def _expire_gathering(self, now: float) -> None:
        """408 for a request not in within ``read_timeout`` of its first byte (of the
        connection's opening if it sent none); every one while the worker stops."""
        for conn in list(self.gathering):
            if not self.alive or now - conn.sending_since >= self.read_timeout:
                late = (
                    protocol.headers_timeout if conn.request_end is None else protocol.read_timeout
                )
                self._close_gathering(conn, late(self.read_timeout))

    def get_thread_pool(self) -> futures.ThreadPoolExecutor:
        """Threads go to requests in their clients' turns (a peer address), not first come:
        one client's many connections, each sending again as soon as it is answered, held
        every thread in turn, and another client's request waited for all of them (13-40 s
        behind 16 connections sending 15 4K frames each, on 2 cores)."""
        pool = futures.ThreadPoolExecutor(max_workers=self.cfg.threads)
        pool._work_queue = TurnQueue(_work_client)  # type: ignore[attr-defined]
        return pool

    def enqueue_req(self, conn: TConn) -> None:
        self.inflight += 1
        super().enqueue_req(conn)
        self.relieve()

    def finish_request(self, conn: TConn, fs) -> None:  # type: ignore[no-untyped-def]
        self.inflight -= 1
        if getattr(conn.sock, "was_shed", False):
            self.shed_waiting = max(0, self.shed_waiting - 1)
        sock = conn.sock
        rest = b""  # what the client sent after the request (pipelined), in order: what
        # the parser read ahead, then what it did not read of the gathered bytes
        unreader = getattr(conn.parser, "unreader", None)  # (HTTP/1's parser)
        if unreader is not None:
            rest = unreader.take_buffered()
            if isinstance(sock, DeadlineSocket) and sock.pending:
                rest += sock.take_pending()
        if rest and self._kept_alive(conn, fs):
            # The next request is gathered as any other (stock gthread gives it to a thread
            # at once, where half a request held the thread until its deadline).
            self.gather(conn)
            if conn in self.gathering:
                self._received(conn, rest)
            return
        if rest:
            unreader.unread(rest)
        super().finish_request(conn, fs)

    def _kept_alive(self, conn: TConn, fs) -> bool:  # type: ignore[no-untyped-def]
        """Whether a request's thread left its connection open for the next, its body
        read to the end (gunicorn's ``_keepalive_after``), in a worker that goes on."""
        return (
            isinstance(conn, DeadlineConn)
            and not self.cfg.is_ssl
            and self.alive
            and conn.parser is not None
            and not fs.cancelled()
            and fs.exception() is None
            and fs.result() is True
        )

    def murder_pending(self) -> None:
        super().murder_pending()
        self.relieve()  # once a second at least: readers grow old while nothing arrives
        now = time.monotonic()
        self._expire_gathering(now)
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
        """Disconnect the slowest clients while connections wait for a thread or the
        worker is at its connection limit (main thread only)."""
        excess = self.inflight - self.shed_waiting - self.cfg.threads
        now = time.monotonic()
        if self.nr_conns - self.shed_waiting >= self.worker_connections:
            # Room: every connection without its headers after SHED_AFTER (no good client
            # takes that long), else the one sending its body longest, else a thread's.
            late = [
                conn
                for conn in self.gathering
                if conn.request_end is None and now - conn.opened >= SHED_AFTER
            ]
            late = (
                late
                or [conn for conn in self.gathering if now - conn.sending_since >= SHED_AFTER][:1]
            )
            if late:
                self.log.warning(
                    "closed %d connections still sending their request after %.0fs: "
                    "%d connections open, the limit (VIDCAP_MAX_CONNECTIONS)",
                    len(late), SHED_AFTER, self.nr_conns,
                )  # fmt: skip
            else:
                excess = max(excess, 1)
            for conn in late:
                self._close_gathering(conn, protocol.shed_answer())
        if excess <= 0:
            return
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
