"""A gunicorn ``gthread`` worker whose connections time out while a client stalls.

Stock ``gthread`` waits for a connection's first bytes in its poller, then reads the
rest of the request in a pool thread with a blocking socket: a client that sends half
its headers and stops holds that thread for good. Here every blocking read of a
connection waits at most ``VIDCAP_READ_TIMEOUT`` seconds (the request body as a whole
is bounded by ``vidcap.serve.flask_app.BodyReader``), so stalled clients are dropped
and cannot starve the pool. ``flask/start.sh`` selects it with ``--worker-class``.
"""

from __future__ import annotations

import errno
import os
import socket

from gunicorn.workers.gthread import TConn, ThreadWorker

from vidcap.serve.config import ServeConfig


class _StallingSocket(socket.socket):
    """A socket whose blocking mode is 'blocking, but at most ``stall`` s per call'."""

    stall: float | None = None

    def setblocking(self, flag: bool) -> None:
        if flag and self.stall is not None:
            self.settimeout(self.stall)
        else:
            super().setblocking(flag)


class DeadlineThreadWorker(ThreadWorker):
    """``gthread`` with a per-read timeout on every client connection."""

    def init_process(self) -> None:
        config = ServeConfig.from_sources({}, os.environ)
        self.read_timeout = config.read_timeout
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        """``ThreadWorker.accept`` with the accepted socket made a ``_StallingSocket``."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock = _StallingSocket(client.family, client.type, client.proto, fileno=client.detach())
        sock.stall = self.read_timeout
        self.nr_conns += 1
        sock.setblocking(True)
        self.enqueue_req(TConn(self.cfg, sock, address, listener.getsockname()))
