"""The protocol gate: an aiohttp proxy in front of TorchServe's inference API.

TorchServe's Java front end reads methods, body sizes and multipart bodies before the
Python handler runs, and answers them its own way (a GET captioned, a nameless part a
NullPointerException, a part named twice kept silently, 413 with an empty body). The
gate listens on the public inference address and applies ``vidcap.serve.protocol``'s
rules as the Flask server does: anything but POST → 405, a body over ``max_request_mb``
→ 413, a body not received within ``read_timeout`` → 408, a malformed multipart body or
a part without a name or named twice → 400, each ``{"error": …}``. Other requests go to
TorchServe on a loopback port unchanged (path, query, body, headers: the token too);
TorchServe's error answers that are not JSON are wrapped as ``{"error": …}``, and an
unreachable TorchServe is answered 503 with ``Retry-After``.

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

Limits come from ``ServeConfig`` (``VIDCAP_MAX_REQUEST_MB``, ``VIDCAP_READ_TIMEOUT``,
``VIDCAP_REQUEST_TIMEOUT``, ``VIDCAP_BATCH_ALLOWANCE``), read by ``main`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import count

import aiohttp
from aiohttp import web

from vidcap import wire
from vidcap.errors import BadRequest, UsageError
from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig

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
RETRY_AFTER_S = "1"
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

    @classmethod
    def from_config(
        cls,
        upstream: str,
        config: ServeConfig,
        max_batch_delay_ms: float = TORCHSERVE_BATCH_DELAY_MS,
    ) -> GateSettings:
        if not max_batch_delay_ms >= 0:
            raise UsageError(f"--max-batch-delay-ms must be >= 0, got {max_batch_delay_ms}")
        return cls(
            upstream=upstream.rstrip("/"),
            max_request_bytes=config.max_request_bytes,
            read_timeout=config.read_timeout,
            request_timeout=config.request_timeout,
            upstream_timeout=max_batch_delay_ms / 1000 + config.batch_allowance,
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


async def read_body(request: web.Request, settings: GateSettings) -> bytes:
    """The whole body within ``read_timeout`` and ``max_request_bytes``, or ``BadRequest``."""
    limit = settings.max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise protocol.too_large(limit)
    deadline = time.monotonic() + settings.read_timeout
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
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
        chunks.append(chunk)


def check_request(request: web.Request, body: bytes) -> None:
    if request.content_type == protocol.MULTIPART:
        protocol.check_multipart(body, request.headers.get("Content-Type", ""))


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
        json.loads(body)
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path == PING_PATH:
            return await self.forward(request, b"")
        try:
            protocol.check_method(request.method)
            body = await read_body(request, self.settings)
        except BadRequest as exc:
            return refuse(request, exc, close=True)
        try:
            check_request(request, body)
        except BadRequest as exc:
            return refuse(request, exc)
        return await self.forward(request, body)

    async def forward(self, request: web.BaseRequest, body: bytes) -> web.Response:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST_HEADERS
        }
        url = self.settings.upstream + request.rel_url.raw_path_qs
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
        return upstream_answer(status, answer_headers, answer)

    async def exchange(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
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
            reason = (getattr(exc, "message", "") or str(exc)).strip().splitlines()
            error = protocol.unreadable_body(
                f"{type(exc).__name__}: {reason[0].rstrip(':') if reason else ''}"
            )
        else:
            if status == 500:
                log.error("error serving %s", request.path, exc_info=exc)
            error = BadRequest(HTTPStatus(status).phrase, status)
        return refuse(request, error, close=True)


class JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)  # type: ignore[attr-defined]


async def serve(settings: GateSettings, host: str, port: int, stop: asyncio.Event) -> None:
    """Run the gate on ``host:port`` until ``stop`` is set."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=settings.request_timeout)
    # No connection limit here: TorchServe's job queue bounds the work (503 when full).
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False
    ) as session:
        server = JsonErrorServer(Gate(settings, session).handle, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        try:
            await web.TCPSite(runner, host.strip("[]"), port).start()
            log.info(
                "gate on %s:%d -> %s; bodies up to %d bytes within %gs; 503 after %gs of "
                "silence from TorchServe",
                host, port, settings.upstream, settings.max_request_bytes, settings.read_timeout,
                settings.upstream_timeout,
            )  # fmt: skip
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vidcap.serve.gate", description=__doc__.split("\n")[0]
    )
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
    args = parser.parse_args(argv)
    try:
        config = ServeConfig.from_sources({}, os.environ)
        settings = GateSettings.from_config(args.upstream, config, args.max_batch_delay_ms)
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
