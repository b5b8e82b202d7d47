"""Real servers on loopback for the client and server tests (helpers, not fixtures).

* ``FlaskServer``: ``flask/start.sh`` (gunicorn) with the tiny model, in its own process
  group, stopped (and restartable) by the tests.
* ``ScriptedServer``: a small aiohttp server speaking the vidcap wire protocol that
  misbehaves on cue (503/429 bursts, dropped connections, slow answers, 4xx, garbage)
  and otherwise captions each frame with a digest of its decoded pixels, so order and
  lossless transport are checked exactly.
* ``PROTOCOL_CASES``: requests that break the wire protocol's HTTP rules, as raw bytes,
  with the status and JSON error both servers must answer (Flask, and TorchServe
  through its protocol gate), sent by ``raw_exchange``.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from aiohttp import web

from vidcap import wire
from vidcap.errors import BadRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_SH = REPO_ROOT / "flask" / "start.sh"
SERVER_PY = REPO_ROOT / "flask" / "server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> tuple[int, object]:
    """GET or POST-less fetch: (status, parsed JSON body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(
    url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> tuple[int, object, dict[str, str]]:
    """POST ``body``: (status, parsed JSON body, headers); never raises on 4xx/5xx."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def multipart(parts: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """Encode ``(name, data, content type or None for a text field)`` parts."""
    boundary = "vidcap-test-boundary-7f3a"
    chunks: list[bytes] = []
    for name, data, ctype in parts:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if ctype is not None:
            head += f'; filename="{name}"\r\nContent-Type: {ctype}'
        chunks.append(head.encode() + b"\r\n\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# --- frames -----------------------------------------------------------------------------


def make_frames(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Distinct RGB frames at ``size`` (h, w): a moving bright square on a varying ground."""
    rng = np.random.default_rng(seed)
    height, width = size
    frames = []
    for i in range(count):
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        rgb[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        side = max(4, min(height, width) // 3)
        top, left = (i * 7) % (height - side), (i * 11) % (width - side)
        rgb[top : top + side, left : left + side] = rng.integers(0, 256, 3, dtype=np.uint8)
        rgb += rng.integers(0, 8, rgb.shape, dtype=np.uint8)
        frames.append(rgb)
    return frames


def pixel_digest(rgb: np.ndarray) -> str:
    """The caption the scripted server gives a frame: a digest of its exact pixels."""
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()[:12]


# --- the Flask server (gunicorn, real process) --------------------------------------------


@dataclass
class FlaskServer:
    """``flask/start.sh`` on a free loopback port; ``start``/``stop``/``restart`` as needed."""

    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/caption"

    def start(self, wait: bool = True, timeout: float = 90.0) -> FlaskServer:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "THREADS": "16",
            "VIDCAP_MODEL": "tiny",
            "VIDCAP_DEVICE": "cpu",
            "VIDCAP_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
            "PID_FILE": str(self.log_path.with_suffix(".pid")),
            **self.env,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["bash", str(START_SH)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"flask server exited: {self.log_tail()}")
            try:
                status, body = get_json(f"{self.base}/health", timeout=2)
                if status == 200 and isinstance(body, dict):
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"flask server not healthy after {timeout}s: {self.log_tail()}")

    def health(self) -> dict:
        status, body = get_json(f"{self.base}/health")
        assert status == 200 and isinstance(body, dict), body
        return body

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


# --- the scripted aiohttp server -----------------------------------------------------------

ACTIONS = ("503", "429", "507", "drop", "slow", "400", "500", "garbage", "401", "flood", "bomb")
FLOOD_BYTES = 256 * 2**20  # a body far past what a client should read (vidcap's: 8 MiB)


@dataclass
class ScriptedServer:
    """Serves ``POST /caption``; the first requests follow ``script`` (one action each).

    Actions: ``503``/``429`` (busy, JSON error), ``507`` (TorchServe's "Worker died."), ``drop`` (close the connection
    unanswered), ``malformed`` (an answer aiohttp cannot read as HTTP, then close), ``slow`` (answer after ``slow_seconds``), ``400``/``500``/``401`` (JSON
    error), ``garbage`` (200 with a non-caption body), ``deep`` (200 and JSON nested 100,000 deep), ``flood`` (200 and a body of
    ``FLOOD_BYTES`` spaces, streamed: ``flood_sent`` counts the bytes the client took before
    it hung up), ``bomb`` (200 and that body gzip-compressed, 64 KB on the wire). After the script, every frame
    is captioned with ``pixel_digest`` of its decoded pixels (plus ``|prompt`` if any).
    With ``input_size`` set, an ``X-Vidcap-Info`` request is answered with it and ``model``
    (and not counted in ``requests``); ``said``: every caption, where set.
    """

    script: list[str] = field(default_factory=list)
    slow_seconds: float = 2.0
    token: str | None = None
    jitter: float = 0.0
    requests: int = 0
    answered_frames: int = 0
    statuses: list[int] = field(default_factory=list)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0
    port: int = 0
    input_size: tuple[int, int] | None = None
    flood_sent: list[int] = field(default_factory=list)
    model: str = "scripted"  # the info answer's model name
    said: str | None = None  # every caption, where set (else the pixels' digest)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/caption"

    def __enter__(self) -> ScriptedServer:
        if "bomb" in self.script:
            gzip_bomb()  # (made before serving: seconds of CPU, no request's to wait for)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "scripted server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self, started: threading.Event) -> None:
        run_to_end(self._loop, self._main(started))

    async def _main(self, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/caption", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Vidcap-Info") and not await request.read():
            if self.input_size is None:
                return web.json_response({"error": "request has no image"}, status=400)
            return web.json_response({"model": self.model, "input_size": list(self.input_size)})
        self.requests += 1
        self.seen_headers.append(dict(request.headers))
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            response = await self._answer(request)
        finally:
            self.concurrent -= 1
        self.statuses.append(response.status)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        action = self.script.pop(0) if self.script else "ok"
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            action = "401"
        if action in ("503", "429"):
            await request.read()
            return web.json_response({"error": "busy, try later"}, status=int(action))
        if action == "507":
            await request.read()
            return web.json_response({"code": 507, "message": "Worker died."}, status=507)
        if action in ("400", "500", "401"):
            await request.read()
            return web.json_response({"error": f"scripted {action}"}, status=int(action))
        if action == "garbage":
            await request.read()
            return web.Response(text="<html>proxy error</html>", content_type="text/html")
        if action == "deep":  # JSON nested past the parser's recursion limit
            await request.read()
            return web.Response(text="[" * 100_000, content_type="application/json")
        if action in ("flood", "bomb"):
            await request.read()
            return await self._flood(request, compressed=action == "bomb")
        if action == "drop":
            await request.read()
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=599)
        if action == "malformed":  # an answer that is not HTTP (a proxy or server gone wrong)
            await request.read()
            assert request.transport is not None
            request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
            request.transport.close()
            return web.Response(status=599)
        if action == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.jitter:
            await asyncio.sleep(float(np.random.default_rng().uniform(0, self.jitter)))
        frames, fields, batched = await read_wire(request)
        try:
            job = wire.build_request(frames, fields, batched, wire.WireLimits())
        except BadRequest as exc:
            return web.json_response(wire.error_response(str(exc)), status=exc.status)
        suffix = f"|{job.settings.prompt}" if job.settings.prompt else ""
        captions = [self.said or pixel_digest(image) + suffix for image in job.images]
        self.answered_frames += len(captions)
        return web.json_response(wire.caption_response(captions, job.batched))

    async def _flood(self, request: web.Request, *, compressed: bool) -> web.StreamResponse:
        chunk = b" " * 2**20
        if compressed:
            return web.Response(body=gzip_bomb(), headers={"Content-Encoding": "gzip"})
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        sent = 0
        try:
            while sent < FLOOD_BYTES:
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client hung up
            pass
        self.flood_sent.append(sent)
        return response


@functools.cache
def gzip_bomb() -> bytes:
    """``FLOOD_BYTES`` of spaces, gzip-compressed (about 256 KB), made once, before the
    server starts: compressed for each request, in the server's event loop, it took seconds
    of a loaded machine, and the client's request could time out before the bomb came."""
    return gzip.compress(b" " * FLOOD_BYTES)


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """``http.server``'s threading server, quiet about a client that hangs up mid-answer
    (a browser cancelling a video's range request, a download stopped early): no error of
    the test's. Anything else is printed as socketserver prints it."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def trickling(data: bytes, pieces: int, pause: float, stalls: str | None = None) -> Iterator[str]:
    """A real HTTP server sending ``data`` (its Content-Length given) in ``pieces``, a pause
    of ``pause`` s after each: its base URL. A request for the path ``stalls`` stops half-way
    with the connection left open until the server shuts down."""
    release = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            step = len(data) // pieces + 1
            for number, start in enumerate(range(0, len(data), step)):
                if self.path == stalls and number == pieces // 2:
                    release.wait(30)  # (the connection stays open, nothing more comes)
                    return
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
                time.sleep(pause)

    server = QuietHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def run_to_end(loop: asyncio.AbstractEventLoop, main: Coroutine[object, object, None]) -> None:
    """Run ``main`` on ``loop`` (this thread's), then cancel and await what it left running
    (a handler still answering a request, or told to hang) before closing the loop: a task
    left pending is reported "destroyed but it is pending" when it is collected."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    finally:
        loop.close()


async def read_wire(request: web.Request) -> tuple[list[bytes], dict[str, str], bool]:
    fields = wire.settings_from_headers(request.headers)
    if request.content_type != "multipart/form-data":
        return [await request.read()], fields, False
    parts: list[tuple[str, bytes]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        data = await part.read()  # type: ignore[union-attr]
        name = part.name or ""
        if part.filename is None and name in wire.SETTING_FIELDS:  # type: ignore[union-attr]
            fields[name] = data.decode()
        else:
            parts.append((name, bytes(data)))
    return wire.ordered_frames(parts), fields, True


def counting(frames: list[np.ndarray], pulled: list[int]) -> Iterator[np.ndarray]:
    """Yield ``frames``, counting in ``pulled[0]`` how many were taken so far."""
    for frame in frames:
        pulled[0] += 1
        yield frame


# --- protocol cases, the same for both servers ---------------------------------------------

# Servers under these cases run with VIDCAP_MAX_REQUEST_MB and VIDCAP_READ_TIMEOUT set so.
PROTOCOL_MAX_REQUEST_MB = 0.5
PROTOCOL_READ_TIMEOUT = 2.0
_BOUNDARY = b"vidcap-case"
_FORM = "multipart/form-data; boundary=vidcap-case"


class ProtocolCase(NamedTuple):
    """A raw request (``head`` without the request line) and the answer it must get;
    ``error`` is a regular expression for the whole ``error`` message."""

    method: str
    headers: dict[str, str]
    body: bytes
    status: int
    error: str


def _part(disposition: str, data: bytes = b"\x89PNG") -> bytes:
    return (
        b"--"
        + _BOUNDARY
        + b"\r\nContent-Disposition: "
        + disposition.encode()
        + b"\r\n\r\n"
        + data
        + b"\r\n"
    )


def _form(*parts: bytes, close: bool = True) -> bytes:
    return b"".join(parts) + (b"--" + _BOUNDARY + b"--\r\n" if close else b"")


def _length(body: bytes, declared: int | None = None) -> dict[str, str]:
    return {"Content-Length": str(len(body) if declared is None else declared)}


_NAMED = _part('form-data; name="frame0"; filename="frame0"')
_LIMIT = int(PROTOCOL_MAX_REQUEST_MB * 2**20)
_BIG_CHUNK = b"%x\r\n" % (_LIMIT // 2) + b"\0" * (_LIMIT // 2) + b"\r\n"

PROTOCOL_CASES = {
    "part without a name": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_part('form-data; filename="frame0"')), 400, re.escape("multipart part 0 has no name: name frames frame0, frame1, …")),
    "duplicate part names": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_NAMED, _NAMED), 400, re.escape("multipart part name 'frame0' appears more than once")),
    "no closing boundary": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_NAMED, close=False), 400, re.escape("request body could not be read: malformed multipart body: no closing boundary")),
    "GET": ProtocolCase("GET", {"Content-Type": "image/png"}, b"\x89PNG", 405, re.escape("method GET is not allowed: POST one image or a multipart pre-batch")),
    "PUT": ProtocolCase("PUT", {"Content-Type": "image/png"}, b"\x89PNG", 405, re.escape("method PUT is not allowed: POST one image or a multipart pre-batch")),
    "Content-Length over the limit": ProtocolCase("POST", {"Content-Type": "image/png", **_length(b"", _LIMIT + 1)}, b"", 413, re.escape(f"request body is larger than the limit of {_LIMIT} bytes")),
    "chunked body over the limit": ProtocolCase("POST", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}, _BIG_CHUNK * 3 + b"0\r\n\r\n", 413, re.escape(f"request body is larger than the limit of {_LIMIT} bytes")),
    "bad chunked encoding": ProtocolCase("POST", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"}, b"ZZ\r\nabc\r\n0\r\n\r\n", 400, "request body could not be read: .+"),
    "stalled body": ProtocolCase("POST", {"Content-Type": "image/png", **_length(b"", 1000)}, b"\x89PNG half", 408, re.escape(f"request body not received within {PROTOCOL_READ_TIMEOUT:g}s")),
    # Issue #20 item 6: cases the three parsers (gate, TorchServe's, Flask's) read differently.
    "a second Content-Disposition in a part": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_part('form-data; name="frame0"; filename="a"\r\nContent-Disposition: form-data; name="frame1"; filename="b"')), 400, re.escape("request body could not be read: malformed multipart body: part 0 has more than one Content-Disposition header")),
    "name*= in a part": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_part("form-data; name*=UTF-8''frame0; filename=\"a\"")), 400, re.escape("request body could not be read: malformed multipart body: part 0's Content-Disposition has name*=: encoded (RFC 5987) parameters are not accepted")),
    "a delimiter after a bare LF": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_part('form-data; name="frame0"; filename="a"', b"\x89PNG\n--" + _BOUNDARY + b'\r\nContent-Disposition: form-data; name="frame9"; filename="b"\r\n\r\n\x89PNG')), 400, re.escape("request body could not be read: malformed multipart body: a boundary inside part 0 is not on a line of its own (CRLF before it)")),
    "a part name in upper case": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_part('form-data; NAME="frame0"; filename="a"')), 400, re.escape("request body could not be read: malformed multipart body: part 0's Content-Disposition has a parameter 'NAME'; only name and filename (lower case) are accepted")),
    "data after the closing boundary": ProtocolCase("POST", {"Content-Type": _FORM}, _form(_NAMED) + _part('form-data; name="frame1"; filename="b"') + b"--" + _BOUNDARY + b"--\r\n", 400, re.escape("request body could not be read: malformed multipart body: data after the closing boundary")),
    "two boundaries in the Content-Type": ProtocolCase("POST", {"Content-Type": _FORM + "; boundary=other"}, _form(_NAMED), 400, re.escape("request body could not be read: malformed multipart body: Content-Type has boundary twice")),
    "1,000 tiny parts": ProtocolCase("POST", {"Content-Type": _FORM}, _form(*[_part(f'form-data; name="p{i}"', b"x") for i in range(1000)]), 413, r"request has more than \d+ multipart parts, the limit \(VIDCAP_MAX_PARTS\)"),
    # gzip, deflate, br: never inflated (a few KiB can expand to the size limit), never read as an image.
    "a gzip-coded body": ProtocolCase("POST", {"Content-Type": "image/png", "Content-Encoding": "gzip"}, gzip.compress(b"\x89PNG" + b"\0" * 100_000), 415, re.escape("Content-Encoding gzip is not accepted: send the images as they are (JPEG and PNG are compressed already)")),
    "an image labelled deflate": ProtocolCase("POST", {"Content-Type": "image/png", "Content-Encoding": "identity, Deflate"}, b"\x89PNG", 415, re.escape("Content-Encoding deflate is not accepted: send the images as they are (JPEG and PNG are compressed already)")),
    # (regression, Flask: gzip under chunked was taken apart into its chunks and the
    # compressed bytes read as the image; OPTIONS was Flask's own 200 listing every method)
    "a gzip transfer coding": ProtocolCase("POST", {"Content-Type": "image/png", "Transfer-Encoding": "gzip, chunked"}, b"4\r\n\x89PNG\r\n0\r\n\r\n", 501, re.escape("Transfer-Encoding gzip is not accepted: send the body as it is, or chunked")),
    "OPTIONS": ProtocolCase("OPTIONS", {"Content-Type": "image/png"}, b"", 405, re.escape("method OPTIONS is not allowed: POST one image or a multipart pre-batch")),
    "a URL-encoded form": ProtocolCase("POST", {"Content-Type": "application/x-www-form-urlencoded"}, b"frame0=abc", 415, re.escape("Content-Type application/x-www-form-urlencoded is not accepted: send image/jpeg, image/png or multipart/form-data")),
}  # fmt: skip


def check_protocol_case(port: int, path: str, case: ProtocolCase, auth: dict[str, str]) -> None:
    """Send ``case`` to ``127.0.0.1:port`` + ``path``; its status and JSON error must match."""
    headers = {"Host": "127.0.0.1", **auth, **case.headers}
    if "Transfer-Encoding" not in headers:
        headers.setdefault("Content-Length", str(len(case.body)))
    head = f"{case.method} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    status, body = raw_exchange(port, head.encode() + b"\r\n" + case.body)
    assert status == case.status, body
    assert set(body) == {"error"} and re.fullmatch(case.error, body["error"]), body


def raw_exchange(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict]:
    """Send raw bytes, read one answer: (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One HTTP response off ``sock``: (status, JSON body), by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(head.split()[1]), json.loads(body[:length])
