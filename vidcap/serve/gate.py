"""The protocol gate: an aiohttp proxy in front of TorchServe's inference API.

TorchServe's Java front end reads methods, body sizes and multipart bodies before the
Python handler runs, and answers them its own way (a GET captioned, a nameless part a
NullPointerException, a part named twice kept silently, 413 with an empty body). The
gate listens on the public inference address and, before TorchServe sees a byte:

* refuses a request line without an HTTP version and doubled headers that decide how a
  request is read (400), any method but POST (405);
* with ``--key-file``, checks the client's inference key — *before reading the body*, so
  a client without it costs nothing but its headers — and sends TorchServe its own key
  (``--backend-key-file``) instead, renewing it through TorchServe's token API
  (``--management``) when TorchServe refuses it as expired (``Gate.renew_backend_key``);
* applies ``vidcap.serve.protocol``'s rules as the Flask server does: a body that is not
  an image or multipart → 415, over ``max_request_mb`` or ``max_parts`` (by
  ``Content-Length``, then while reading) → 413, a request not received whole within
  ``read_timeout`` of its first byte → 408, a multipart body outside the rules → 400, the
  bodies held at once past ``max_bodies_mb`` → 503; each ``{"error": …}``;
* closes connections that read past the deadline and, past ``max_connections``, the one
  that has been sending its request longest (``ConnectionGuard``);
* with ``max_client_requests``, answers 503 to a client (a peer address) that already has
  that many requests in the gate, before reading the body and a second after the request
  came (``BUSY_ANSWER_S``: resending at once cannot spin the gate). TorchServe's job queue
  is first come, first served, so one client flooding it answered every other client 503;
  with the cap (``start.sh``: what the workers run at once plus half the job queue) one
  client can fill at most half the queue and another always finds room;
* with ``max_forwarded``, forwards at most that many requests at once (``start.sh``: two
  batches per worker, one running and the next one full) and lets the others wait in the
  gate, taking clients in turns (``vidcap.serve.turns``, as Flask's batcher takes them): a
  client's request waits for one request of each other client, not for every request a
  busy neighbour has queued in TorchServe. A request counts for what its frames cost to
  decode (``decode_weight``: a request of 4K frames tens, forwarded alone).

Other requests go to TorchServe on a loopback port unchanged but for the key (path,
query, body, headers); TorchServe's error answers that are not JSON are wrapped as
``{"error": …}``, and an unreachable TorchServe is answered 503 with ``Retry-After``.

The gate answers instead of waiting on a stalled TorchServe. A forwarded request
(every one but ``GET /ping``) may wait ``upstream_timeout = max_batch_delay_ms / 1000 +
batch_allowance`` seconds without TorchServe answering anything; each caption answer
(2xx) to another request restarts that wait, so a request queued behind busy workers
waits its turn. Once a request forwarded after it has been answered, it is in a
worker's batch and gets one last ``upstream_timeout``. Past its wait it is answered
503 with ``Retry-After`` and its upstream connection closed: a client retries within
seconds, where it would otherwise wait for TorchServe's ``responseTimeout`` (300 s) on
a worker that died or hung with its batch. ``max_batch_delay_ms`` is TorchServe's
``maxBatchDelay`` (``--max-batch-delay-ms``, which ``start.sh`` passes from the run's
config.properties); ``batch_allowance`` is ``ServeConfig.batch_allowance``
(``VIDCAP_BATCH_ALLOWANCE``, seconds): the longest one batch may take on the model,
sized to the hardware (the largest batch is TorchServe's ``batchSize`` requests of up
to ``max_frames`` frames each).

    python -m vidcap.serve.gate --host 127.0.0.1 --port 8080 --upstream http://127.0.0.1:8083

Limits come from ``ServeConfig`` (``VIDCAP_MAX_REQUEST_MB``, ``VIDCAP_MAX_PARTS``,
``VIDCAP_MAX_BODIES_MB``, ``VIDCAP_READ_TIMEOUT``, ``VIDCAP_MAX_CONNECTIONS``,
``VIDCAP_REQUEST_TIMEOUT``, ``VIDCAP_BATCH_ALLOWANCE``), read by ``main`` only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import count
from pathlib import Path

import aiohttp
from aiohttp import http_exceptions, web

from vidcap import jsontext, wire
from vidcap.cli.parser import OneLineParser
from vidcap.errors import BadRequest, UsageError
from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig
from vidcap.serve.turns import Slots, client_of

log = logging.getLogger(__name__)

# TorchServe's health check: the one request that is not a POST.
PING_PATH = "/ping"
# Request headers not forwarded: hop-by-hop, or rewritten for the forwarded body.
DROPPED_REQUEST_HEADERS = frozenset(
    {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
     "content-length", "expect", "proxy-authorization", "proxy-connection"}
)  # fmt: skip
# TorchServe's response headers passed back (and every X-Vidcap-* header).
KEPT_RESPONSE_HEADERS = frozenset({"content-type", "retry-after", "www-authenticate"})
# A client past its share is answered this long after its request came (Retry-After's
# second), so that one resending at once costs the gate one answer a second per connection.
BUSY_ANSWER_S = 1.0
# A request's forwarding weight is its pixels over a full pre-batch of BLIP-2-sized frames
# (64 × 224 × 224: what ``vidcap caption --server`` sends at most), rounded up. Not its
# frames: ``max_forwarded`` is two TorchServe batches per worker, counted in requests as
# TorchServe counts them, and a client's pre-batch is how a GPU's batch fills (the GPU
# bench sends 64 frames a request, 4 requests a batch: counted by frames, one request would
# be forwarded at a time). A neighbour's request waits for those two batches at most.
WEIGHT_PIXELS = 64 * 224 * 224
RETRY_AFTER_S = "1"
# Headers that must not appear twice (the gate and TorchServe could read different ones).
SINGLE_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding", "Authorization")
# TorchServe's own answer to a missing or wrong token (HTTP 400), worded as it words it.
TOKEN_FAILED = (
    "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
)
TOKEN_FAILED_MARK = b"Token Authorization failed"
BEARER = re.compile(r"Bearer\s+(\S+)")
NO_VERSION = "request line has no HTTP version: send HTTP/1.1"
# The head TorchServe's Java front end (Netty) reads: a request line of 4,096 bytes at most,
# 8,192 bytes of headers in all (past them its own 400, "Invalid HTTP message.", after the
# gate had read the body). Refused first, as Flask's gunicorn refuses them: a line over
# 4,094 bytes (414), more than 100 headers (431); the forwarded headers over what leaves
# room for those aiohttp's client adds (Host, Accept, User-Agent, …: about 150 bytes), 431.
MAX_LINE_BYTES = 4094
MAX_HEADERS = 100
MAX_HEADER_BYTES = 7680
# Idle kept-alive connections are closed after this long (clients keep theirs 15 s).
KEEPALIVE_S = 60.0
# After an early answer (408, 413, …) the rest of a body is read and dropped for at most
# this long, so the client sees the answer rather than a reset; then the connection closes.
LINGER_S = 2.0
SWEEP_EVERY_S = 0.5
SWEEP_GRACE_S = 1.0
# TorchServe's own maxBatchDelay when a model sets none.
TORCHSERVE_BATCH_DELAY_MS = 100.0


@dataclass(frozen=True)
class GateSettings:
    """Where TorchServe listens, the limits a request must meet before it is forwarded,
    and how long TorchServe may stay silent (``upstream_timeout``, see the module)."""

    upstream: str
    max_request_bytes: int
    read_timeout: float
    request_timeout: float
    upstream_timeout: float
    max_parts: int = ServeConfig().max_body_parts
    max_bodies_bytes: int = ServeConfig().max_bodies_bytes
    max_connections: int = ServeConfig().max_connections
    key_file: Path | None = None  # the clients' inference key (start.sh's key_file.json)
    backend_key_file: Path | None = None  # TorchServe's own keys, sent upstream
    management: str | None = None  # TorchServe's management API, to renew an expired key
    max_client_requests: int = 0  # requests one peer address may have in the gate (0: any)
    max_forwarded: int = 0  # requests forwarded at once, the rest in turns (0: any)

    @classmethod
    def from_config(
        cls,
        upstream: str,
        config: ServeConfig,
        max_batch_delay_ms: float = TORCHSERVE_BATCH_DELAY_MS,
        key_file: Path | None = None,
        backend_key_file: Path | None = None,
        management: str | None = None,
        max_client_requests: int = 0,
        max_forwarded: int = 0,
    ) -> GateSettings:
        if max_client_requests < 0:
            raise UsageError(f"--max-client-requests must be >= 0, got {max_client_requests}")
        if max_forwarded < 0:
            raise UsageError(f"--max-forwarded must be >= 0, got {max_forwarded}")
        if not max_batch_delay_ms >= 0:
            raise UsageError(f"--max-batch-delay-ms must be >= 0, got {max_batch_delay_ms}")
        if (key_file is None) != (backend_key_file is None):
            raise UsageError("give both --key-file and --backend-key-file, or neither")
        return cls(
            upstream=upstream.rstrip("/"),
            max_request_bytes=config.max_request_bytes,
            read_timeout=config.read_timeout,
            request_timeout=config.request_timeout,
            upstream_timeout=max_batch_delay_ms / 1000 + config.batch_allowance,
            max_parts=config.max_body_parts,
            max_bodies_bytes=config.max_bodies_bytes,
            max_connections=config.max_connections,
            key_file=key_file,
            backend_key_file=backend_key_file,
            management=management.rstrip("/") if management else None,
            max_client_requests=max_client_requests,
            max_forwarded=max_forwarded,
        )


@dataclass
class Waiter:
    """A request forwarded to TorchServe and not yet answered."""

    number: int  # in the order the gate forwarded them
    since: float  # when its wait last (re)started
    taken: bool = False  # a later request was answered: this one is in a worker's batch


@dataclass
class Watchdog:
    """The stall rule of the module docstring, on the gate's event loop (no locks)."""

    timeout: float
    waiting: dict[int, Waiter] = field(default_factory=dict)
    _numbers: count = field(default_factory=count)

    def start(self, now: float) -> Waiter:
        waiter = Waiter(next(self._numbers), now)
        self.waiting[waiter.number] = waiter
        return waiter

    def deadline(self, waiter: Waiter) -> float:
        return waiter.since + self.timeout

    def done(self, waiter: Waiter, answered: bool, now: float) -> None:
        """``waiter`` is over; ``answered``: TorchServe captioned it (the queue moves)."""
        self.waiting.pop(waiter.number, None)
        if not answered:
            return
        for other in self.waiting.values():
            if not other.taken:
                other.since = now
                other.taken = other.number < waiter.number


def error_answer(error: BadRequest, close: bool = False) -> web.Response:
    response = web.json_response(wire.error_response(str(error)), status=error.status)
    if error.status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_S
    if close:
        response.force_close()  # the rest of the body is not read
    return response


class KeyFile:
    """A ``key_file.json`` as TorchServe writes it (``{"inference": {"key": …}, …}``),
    read again whenever it changes on disk; a key is ``None`` while the file is missing
    (or unreadable before it was ever read). TorchServe rewrites the file in place, so a
    read may meet it half-written: then the keys last read stay in use until it reads whole
    (requests answered 503 "no key yet" while a key was being renewed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, str] = {}

    def key(self, kind: str) -> str | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp != self._stamp:
            try:
                data = jsontext.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return self._keys.get(kind)  # (half-written: the stamp stays, read again)
            self._keys = {
                name: entry["key"]
                for name, entry in (data.items() if isinstance(data, dict) else ())
                if isinstance(entry, dict) and isinstance(entry.get("key"), str)
            }
            self._stamp = stamp
        return self._keys.get(kind)

    def forget(self) -> None:
        """Read the file again at the next ``key``."""
        self._stamp = None


def check_headers(request: web.BaseRequest) -> None:
    """Headers that decide how a request is read or answered appear once: a second
    ``Content-Type`` (say) would be read by the gate one way and by TorchServe another.
    A setting header is ASCII (``wire.settings_from_headers``'s 400), checked here: bytes
    that are not UTF-8 (``\\xff``) would otherwise be forwarded without them, as other
    text (a prompt of only such bytes as no prompt)."""
    for name in SINGLE_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise BadRequest(f"request has more than one {name} header")
    for name in {key.lower() for key in request.headers if key.lower().startswith("x-vidcap-")}:
        if len(request.headers.getall(name, ())) > 1:
            raise BadRequest(f"request has more than one {name} header")
    wire.settings_from_headers(request.headers)


def check_head_size(request: web.BaseRequest) -> None:
    """A head TorchServe's front end reads as the gate does: its request line as forwarded
    at most ``MAX_LINE_BYTES`` (414), at most ``MAX_HEADERS`` headers and the forwarded ones
    at most ``MAX_HEADER_BYTES`` in all (431) — else TorchServe answered its own 400 after
    the gate had read, held and forwarded the whole body."""
    line = len(request.method) + len(request.rel_url.raw_path_qs) + len(" HTTP/1.1 ")
    if line > MAX_LINE_BYTES:
        raise BadRequest(f"request line longer than {MAX_LINE_BYTES} bytes", 414)
    if len(request.raw_headers) > MAX_HEADERS:
        raise BadRequest(f"more than {MAX_HEADERS} request headers", 431)
    size = sum(
        len(name) + len(value) + 2
        for name, value in request.raw_headers
        if name.decode("latin-1").lower() not in DROPPED_REQUEST_HEADERS
    )
    if size > MAX_HEADER_BYTES:
        raise BadRequest(f"request headers longer than {MAX_HEADER_BYTES} bytes in all", 431)


async def read_body(
    request: web.BaseRequest,
    settings: GateSettings,
    budget: protocol.BodyBudget | None = None,
    held: list[int] | None = None,
) -> bytes:
    """The whole body within ``read_timeout`` of the request's first byte, at most
    ``max_request_bytes`` (one image: the wire's bytes per frame, by its ``Content-Length``)
    and ``max_parts`` multipart parts (counted as it arrives), its bytes taken from
    ``budget`` as they arrive (``held[0]`` says how many); or ``BadRequest``."""
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise protocol.too_large(limit)
    content_type = request.headers.get("Content-Type", "")
    codings = ",".join(request.headers.getall("Content-Encoding", ()))
    transfer = ",".join(request.headers.getall("Transfer-Encoding", ()))
    protocol.check_body_headers(content_type, codings, transfer)
    refusal = protocol.image_too_large(content_type, request.content_length, wire.WireLimits())
    if refusal is not None:  # (as the handler would refuse it, once read)
        raise refusal
    counter = None
    if protocol.media_type(content_type) == protocol.MULTIPART:
        counter = protocol.PartCounter(
            protocol.multipart_boundary(content_type), settings.max_parts
        )
    await continue_if_expected(request)
    loop = asyncio.get_running_loop()
    since = getattr(request.protocol, "reading_since", None)
    deadline = (since if since is not None else loop.time()) + settings.read_timeout
    chunks: list[bytes] = []  # joined once whole: no regrowing buffer to fragment memory
    size = 0
    held = held if held is not None else [0]
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise protocol.read_timeout(settings.read_timeout)
        try:
            chunk = await asyncio.wait_for(request.content.readany(), remaining)
        except asyncio.TimeoutError:
            raise protocol.read_timeout(settings.read_timeout) from None
        except (aiohttp.ClientError, ValueError, OSError) as exc:  # broken body, reset
            raise protocol.unreadable_body(f"{type(exc).__name__}: {exc}"[:200]) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise protocol.too_large(limit)
        if budget is not None:
            budget.take(len(chunk))
            held[0] += len(chunk)
        if counter is not None:
            counter.feed(chunk)
        chunks.append(chunk)


async def continue_if_expected(request: web.BaseRequest) -> None:
    """A client that sent ``Expect: 100-continue`` (curl does for a body over 1 MB) waits
    for "100 Continue" before it sends the body — a second, in curl, without one — so the
    gate sends it once the request's head has passed every check; any other expectation
    is a 417, as gunicorn answers it."""
    expect = request.headers.get("Expect")
    if expect is None:
        return
    if expect.strip().lower() != "100-continue":
        raise BadRequest(f"Expect: {expect[:64]} cannot be met (only 100-continue)", 417)
    if request.version >= aiohttp.HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (the answer itself has not started)


def check_request(request: web.BaseRequest, body: bytes | bytearray, max_parts: int) -> int:
    """The multipart rules of ``vidcap.serve.protocol``, before TorchServe parses the body;
    the request's weight among those forwarded (``decode_weight``)."""
    content_type = request.headers.get("Content-Type", "")
    if protocol.media_type(content_type) != protocol.MULTIPART:
        return decode_weight([body])
    parts = protocol.check_multipart(body, content_type, max_parts)
    return decode_weight([part.data for part in protocol.image_parts(parts)])


def decode_weight(images: list[bytes | bytearray | memoryview]) -> int:
    """What decoding ``images`` costs the handler, in requests of the frames vidcap's client
    sends (``WEIGHT_PIXELS``), at least 1: a request of 4K frames weighs tens, so one client
    sending them holds another up for about one of them, not for a full forwarding queue
    (the handler decodes a worker's frames one after another). Pixels are read from the
    headers (``wire.image_pixels``)."""
    return max(1, math.ceil(sum(wire.image_pixels(data) for data in images) / WEIGHT_PIXELS))


def upstream_answer(status: int, headers: Mapping[str, str], body: bytes) -> web.Response:
    """TorchServe's answer as the client gets it: an error that is not JSON is wrapped."""
    kept = {
        k: v
        for k, v in headers.items()
        if k.lower() in KEPT_RESPONSE_HEADERS or k.lower().startswith("x-vidcap-")
    }
    if status >= 400 and not _is_json(body):
        text = body.decode("utf-8", "replace").strip()[:500] or HTTPStatus(status).phrase
        kept["Content-Type"] = "application/json"
        body = json.dumps(wire.error_response(text)).encode()
    return web.Response(status=status, body=body, headers=kept)


def _is_json(body: bytes) -> bool:
    try:
        jsontext.loads(body)
    except ValueError:
        return False
    return True


class Stalled(Exception):
    """TorchServe did not answer a request within the watchdog's wait."""


class Gate:
    """The request handler: check, then forward to ``settings.upstream``."""

    def __init__(self, settings: GateSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self.watchdog = Watchdog(settings.upstream_timeout)
        self.budget = protocol.BodyBudget(settings.max_bodies_bytes)
        self.keys = KeyFile(settings.key_file) if settings.key_file else None
        self.backend_keys = (
            KeyFile(settings.backend_key_file) if settings.backend_key_file else None
        )
        self._renewing = asyncio.Lock()
        self.admitted: dict[str, int] = {}  # requests let in and not yet answered, per peer
        self.slots = Slots(settings.max_forwarded)  # forwarded at once; the others in turns

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        connection = request.protocol
        if isinstance(connection, GateConnection):
            connection.in_handler = True
        try:
            return await self._handle(request, connection)
        finally:
            if isinstance(connection, GateConnection):
                connection.request_done()

    async def admit(self, request: web.BaseRequest) -> str:
        """Count the request against its client's share (``max_client_requests``), or —
        past it, after ``BUSY_ANSWER_S``, so that a client sending again at once, ignoring
        ``Retry-After``, cannot spin the gate — refuse it; the client, to ``release``."""
        client = client_of(request.remote)
        cap = self.settings.max_client_requests
        if cap and self.admitted.get(client, 0) >= cap:
            await asyncio.sleep(BUSY_ANSWER_S)
            raise BadRequest(
                f"server busy: {cap} requests of this client are already waiting for the "
                "model; retry later",
                503,
            )
        self.admitted[client] = self.admitted.get(client, 0) + 1
        return client

    def release(self, client: str) -> None:
        left = self.admitted[client] - 1
        if left:
            self.admitted[client] = left
        else:
            del self.admitted[client]

    async def _handle(self, request: web.BaseRequest, connection: object) -> web.StreamResponse:
        if request.version < aiohttp.HttpVersion10:
            return refuse(request, BadRequest(NO_VERSION), close=True)
        if request.method == "GET" and request.path == PING_PATH:
            if isinstance(connection, GateConnection):
                connection.reading_done()
            return await self.forward(request, b"")
        client: str | None = None
        try:
            held = [0]
            try:
                protocol.check_method(request.method)
                check_head_size(request)
                check_headers(request)
                self.authorize(request)
                client = await self.admit(request)  # (before its body is read)
                body = await read_body(request, self.settings, self.budget, held)
            except BadRequest as exc:
                self.budget.give(held[0])
                return refuse(request, exc, close=True)
            finally:
                if isinstance(connection, GateConnection):
                    connection.reading_done()
            try:
                try:
                    weight = check_request(request, body, self.settings.max_parts)
                except BadRequest as exc:
                    return refuse(request, exc)
                async with self.slots.held(client, weight):
                    return await self.forward(request, body)
            finally:
                del body
                self.budget.give(held[0])
        finally:
            if client is not None:  # (however it ended: answered, refused, cut off)
                self.release(client)

    def authorize(self, request: web.BaseRequest) -> None:
        """With token authorization, the client's inference key, before its body is read."""
        if self.keys is None:
            return
        expected = self.keys.key("inference")
        if expected is None:
            raise BadRequest("server not ready: no inference key yet; retry later", 503)
        match = BEARER.fullmatch(request.headers.get("Authorization", ""))
        if match is None or not hmac.compare_digest(match.group(1).encode(), expected.encode()):
            raise BadRequest(TOKEN_FAILED)

    async def forward(self, request: web.BaseRequest, body: bytes | bytearray) -> web.Response:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST_HEADERS
        }
        url = self.settings.upstream + request.rel_url.raw_path_qs
        for attempt in range(2):
            key = None
            if self.backend_keys is not None:
                key = self.backend_keys.key("inference")
                if key is None:
                    message = "server not ready: TorchServe has no key yet; retry later"
                    return error_answer(BadRequest(message, 503))
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                headers["Authorization"] = f"Bearer {key}"
            exchange = self.exchange(request.method, url, body, headers)
            try:
                if request.method == "GET" and request.path == PING_PATH:
                    status, answer_headers, answer = await exchange
                else:
                    status, answer_headers, answer = await self.watched(exchange, request.path)
            except asyncio.TimeoutError:
                return error_answer(BadRequest("timed out waiting for the model", 503))
            except aiohttp.ClientError as exc:
                log.warning("TorchServe at %s not reachable: %s", self.settings.upstream, exc)
                message = f"server not ready: {type(exc).__name__}; retry later"
                return error_answer(BadRequest(message, 503))
            except Stalled as exc:
                return error_answer(BadRequest(str(exc), 503))
            expired = key is not None and status == 400 and TOKEN_FAILED_MARK in answer
            if not expired or attempt or not await self.renew_backend_key(key):
                break
        return upstream_answer(status, answer_headers, answer)

    async def renew_backend_key(self, failed: str | None) -> bool:
        """TorchServe refused the gate's own key (it expired: TorchServe 0.12 never
        renews keys): ask its token API for a new inference key, once for all the
        requests that met the old one. True when there is a newer key to retry with."""
        if self.backend_keys is None or self.settings.management is None:
            return False
        async with self._renewing:
            self.backend_keys.forget()
            if self.backend_keys.key("inference") not in (None, failed):
                return True  # another request renewed it meanwhile
            api_key = self.backend_keys.key("API")
            url = f"{self.settings.management}/token?type=inference"
            try:
                async with self.session.post(
                    url, headers={"Authorization": f"Bearer {api_key}"}
                ) as answer:
                    await answer.read()
                    renewed = answer.status == 200
            except aiohttp.ClientError as exc:
                log.warning("could not renew TorchServe's inference key: %s", exc)
                return False
            self.backend_keys.forget()
            log.warning("TorchServe's inference key had expired: renewed (%s)", renewed)
            return renewed and self.backend_keys.key("inference") not in (None, failed)

    async def exchange(
        self, method: str, url: str, body: bytes | bytearray, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self.session.request(method, url, data=body, headers=headers) as answer:
            return answer.status, answer.headers.copy(), await answer.read()

    async def watched(
        self, exchange: Coroutine[object, object, tuple[int, Mapping[str, str], bytes]], path: str
    ) -> tuple[int, Mapping[str, str], bytes]:
        """``exchange``'s result, or ``Stalled`` once the watchdog's wait is over (the
        upstream request is then cancelled, which closes its connection)."""
        loop = asyncio.get_running_loop()
        waiter = self.watchdog.start(loop.time())
        task = asyncio.ensure_future(exchange)
        answered = False
        try:
            while not task.done():
                remaining = self.watchdog.deadline(waiter) - loop.time()
                if remaining <= 0:
                    log.warning(
                        "TorchServe silent for %.1fs on %s: answered 503",
                        self.watchdog.timeout, path,
                    )  # fmt: skip
                    raise Stalled(
                        f"the model did not answer within {self.watchdog.timeout:g}s "
                        "(a worker may have died); retry later"
                    )
                await asyncio.wait({task}, timeout=remaining)
            result = task.result()
            answered = 200 <= result[0] < 300
            return result
        finally:
            task.cancel()
            self.watchdog.done(waiter, answered, loop.time())


def refuse(request: web.BaseRequest, error: BadRequest, close: bool = False) -> web.Response:
    log.info("%s %s refused (%d): %s", request.method, request.path, error.status, error)
    return error_answer(error, close)


# What aiohttp's parser raises about a body (the rest are about the request's head, but
# for a BadHttpMessage that names a chunk or the body).
BODY_ERRORS = (
    http_exceptions.TransferEncodingError,
    http_exceptions.ContentLengthError,
    http_exceptions.PayloadEncodingError,
    http_exceptions.ContentEncodingError,
)


def too_large(exc: BaseException) -> BadRequest | None:
    """A request line or header past aiohttp's limits, as Flask's gunicorn answers it (414
    for the target, 431 for headers), without echoing the line back; else None."""
    if isinstance(exc, http_exceptions.LineTooLong):
        line, limit = exc.args[0], exc.args[1]
        target = bytes(line).startswith(b"/") if isinstance(line, bytes | bytearray) else False
        if target:
            return BadRequest(f"request target longer than {limit} bytes", 414)
        return BadRequest(f"a request header line longer than {limit} bytes", 431)
    if "too many headers" in str(exc).lower():
        return BadRequest("too many request headers", 431)
    return None


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses (bad chunked
    encoding, a broken request line) as ``{"error": …}`` instead of plain text."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send the error")
        if status == 400 and exc is not None:
            lines = (getattr(exc, "message", "") or str(exc)).strip().splitlines()
            reason = lines[0].rstrip(":") if lines else ""
            # (llhttp says "Invalid character in chunk size" as a plain BadHttpMessage)
            about_body = isinstance(exc, BODY_ERRORS) or any(
                word in reason.lower() for word in ("chunk", "body")
            )
            unreadable = protocol.unreadable_body if about_body else protocol.unreadable_head
            error = too_large(exc) or unreadable(f"{type(exc).__name__}: {reason}")
        else:
            if status == 500:
                log.error("error serving %s", request.path, exc_info=exc)
            error = BadRequest(HTTPStatus(status).phrase, status)
        return refuse(request, error, close=True)


class GateConnection(JsonErrorHandler):
    """One client connection, timed: ``reading_since`` is when its current request's
    first byte came (or when it connected), ``None`` once the request is read or while
    the connection is idle between requests. ``ConnectionGuard`` closes it when it reads
    for longer than the read timeout, or to make room."""

    reading_since: float | None = None
    in_handler = False  # a request's headers are in: the gate's handler runs for it
    busy = False  # the request is read: waiting for TorchServe or answering

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.reading_since = self._loop.time()  # type: ignore[attr-defined]
        super().connection_made(transport)
        guard = getattr(self._manager, "guard", None)  # type: ignore[attr-defined]
        self.guard: ConnectionGuard | None = guard
        if guard is not None:
            guard.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.reading_since is None and not self.busy and data:
            self.reading_since = self._loop.time()  # type: ignore[attr-defined]
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.guard is not None:
            self.guard.closed(self)
        super().connection_lost(exc)

    def reading_done(self) -> None:
        self.reading_since = None
        self.busy = True

    def request_done(self) -> None:
        self.in_handler = False
        self.busy = False

    def close_with(self, error: BadRequest) -> None:
        """Answer ``error`` and close, from outside the handler (no answer has started)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self.in_handler:
            body = json.dumps(wire.error_response(str(error))).encode()
            transport.write(
                f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
                "Content-Type: application/json\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        transport.close()


class ConnectionGuard:
    """The gate's open connections: none reads its request for longer than
    ``read_timeout`` (``sweep``: 408 and closed), and past ``max_connections`` the
    connection that has been sending its request longest is closed to make room, or,
    when every connection is busy with a request, the new one is."""

    def __init__(self, read_timeout: float, max_connections: int) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.open: dict[GateConnection, None] = {}  # in the order they connected
        self.timed_out = 0
        self.shed = 0

    def opened(self, connection: GateConnection) -> None:
        self.open[connection] = None
        if len(self.open) <= self.max_connections:
            return
        waiting = [c for c in self.open if c.reading_since is not None and c is not connection]
        idle = [c for c in self.open if c.reading_since is None and not c.busy]
        if waiting:
            victim = min(waiting, key=lambda c: c.reading_since or 0.0)
        elif idle:
            victim = idle[0]
        else:
            victim = connection
        self.shed += 1
        log.warning("%d connections open: closing one to make room", len(self.open))
        self.open.pop(victim, None)  # closed now; connection_lost comes later
        victim.close_with(protocol.busy(f"more than {self.max_connections} connections"))

    def closed(self, connection: GateConnection) -> None:
        self.open.pop(connection, None)

    def sweep(self, now: float) -> None:
        for connection in list(self.open):
            since = connection.reading_since
            if since is None or now - since < self.read_timeout:
                continue
            if connection.in_handler and now - since < self.read_timeout + SWEEP_GRACE_S:
                continue  # read_body answers 408 itself
            self.timed_out += 1
            self.open.pop(connection, None)
            connection.close_with(protocol.headers_timeout(self.read_timeout))


class JsonErrorServer(web.Server):
    """aiohttp's low-level server with ``GateConnection`` handlers and their guard."""

    guard: ConnectionGuard | None = None

    def __call__(self) -> web.RequestHandler:
        return GateConnection(self, loop=self._loop, **self._kwargs)  # type: ignore[attr-defined]


async def serve(settings: GateSettings, host: str, port: int, stop: asyncio.Event) -> None:
    """Run the gate on ``host:port`` until ``stop`` is set."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=settings.request_timeout)
    # No connection limit here: TorchServe's job queue bounds the work (503 when full).
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False
    ) as session:
        server = JsonErrorServer(
            Gate(settings, session).handle,
            access_log=None,
            auto_decompress=False,  # a coded body is refused (415), never inflated
            keepalive_timeout=KEEPALIVE_S,
            lingering_time=LINGER_S,
        )
        guard = server.guard = ConnectionGuard(settings.read_timeout, settings.max_connections)
        runner = web.ServerRunner(server)
        await runner.setup()
        loop = asyncio.get_running_loop()

        async def sweep() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_S)
                guard.sweep(loop.time())

        sweeper = asyncio.ensure_future(sweep())
        try:
            await web.TCPSite(runner, host.strip("[]"), port).start()
            log.info(
                "gate on %s:%d -> %s; bodies up to %d bytes and %d parts, whole requests "
                "within %gs, at most %d connections; 503 after %gs of silence from "
                "TorchServe; token checked: %s",
                host, port, settings.upstream, settings.max_request_bytes, settings.max_parts,
                settings.read_timeout, settings.max_connections, settings.upstream_timeout,
                settings.key_file is not None,
            )  # fmt: skip
            await stop.wait()
        finally:
            sweeper.cancel()
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m vidcap.serve.gate", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="TorchServe's inference API, http://HOST:PORT"
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=TORCHSERVE_BATCH_DELAY_MS,
        help="TorchServe's maxBatchDelay for the model; with $VIDCAP_BATCH_ALLOWANCE it sets "
        "how long TorchServe may stay silent before a request is answered 503 "
        "(default: %(default)s, TorchServe's own)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        help="key_file.json whose inference key clients must send (start.sh's); checked "
        "before a body is read",
    )
    parser.add_argument(
        "--backend-key-file",
        type=Path,
        help="TorchServe's own key_file.json: its inference key is sent upstream",
    )
    parser.add_argument(
        "--management",
        help="TorchServe's management API, http://HOST:PORT: an expired TorchServe key is "
        "renewed through it",
    )
    parser.add_argument(
        "--max-client-requests",
        type=int,
        default=0,
        metavar="N",
        help="answer 503 to a client (peer address) that already has N requests in the gate "
        "(start.sh: what the workers run at once plus half of TorchServe's job queue; "
        "default 0: no cap)",
    )
    parser.add_argument(
        "--max-forwarded",
        type=int,
        default=0,
        metavar="N",
        help="forward at most N requests to TorchServe at once; the others wait in the gate, "
        "clients taking turns (start.sh: two batches per worker; default 0: no limit)",
    )
    args = parser.parse_args(argv)
    try:
        config = ServeConfig.from_sources({}, os.environ)
        settings = GateSettings.from_config(
            args.upstream,
            config,
            args.max_batch_delay_ms,
            args.key_file,
            args.backend_key_file,
            args.management,
            args.max_client_requests,
            args.max_forwarded,
        )
    except UsageError as exc:
        parser.exit(2, f"error: {exc}\n")
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def run() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve(settings, args.host, args.port, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
