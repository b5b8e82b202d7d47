"""Is a port free to listen on? ``torchserve/start.sh`` asks before it starts anything.

A port is free when a listening socket can take it the way every server here binds —
with ``SO_REUSEADDR`` (asyncio, gunicorn and Java's server sockets all set it) — so the
connections a stopped server leaves in TIME_WAIT for a minute do not count as taken,
and ``stop.sh && start.sh`` works right after traffic; only a socket still bound or
listening does.

    python -m vidcap.serve.ports HOST PORT NAME [HOST PORT NAME ...]

exits 1 with one line naming the first port that is taken (and its variable).
"""

from __future__ import annotations

import socket
import sys


def taken_reason(host: str, port: int) -> str | None:
    """``None`` when ``host:port`` can be listened on, else the reason (``strerror``)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) % 3:
        print("usage: python -m vidcap.serve.ports HOST PORT NAME ...", file=sys.stderr)
        return 2
    for host, port, name in zip(args[0::3], args[1::3], args[2::3], strict=True):
        if not port.isdigit() or not 0 < int(port) < 65536:
            print(f"start.sh: {name} must be a port number (got {port})", file=sys.stderr)
            return 1
        reason = taken_reason(host, int(port))
        if reason is not None:
            print(
                f"start.sh: port {port} on {host} ({name}) is not free: {reason}; "
                f"another TorchServe may be running: set {name} to a free port",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
