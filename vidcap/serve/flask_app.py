"""The Flask transport over ``ServingCore``: ``POST /caption``, ``GET /health``.

``create_app`` takes a ``ServingCore`` (tests build one around any captioner);
``create_app_from_env`` is the gunicorn entry point (``flask/start.sh``). Requests are
read whole by ``BodyReader`` before Flask sees them: within ``read_timeout`` of the
request's first byte, at most ``max_request_mb`` and ``max_parts``, valid chunked
encoding, within the server's body memory (``max_bodies_mb``), or a 408/413/415/400/503
JSON answer, so a slow, large or broken client holds one thread for a bounded time and
a bounded amount of memory. Multipart bodies are split by ``protocol.parse_multipart``
(the rules the TorchServe gate enforces). Valid requests join the micro-batcher
(``vidcap.serve.batcher``); one that fails gets its own error.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from vidcap import wire
from vidcap.errors import BadRequest, ModelLoadError
from vidcap.serve import protocol
from vidcap.serve.batcher import BatchSettings, MicroBatcher, QueueFull
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ServingCore
from vidcap.serve.turns import client_of

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
# gunicorn's exit status for a worker whose app cannot load: its master stops ("App failed
# to load") instead of restarting the worker for ever.
APP_LOAD_ERROR = 4
# Where ``BodyReader`` leaves the request body for the app.
BODY_KEY = "vidcap.body"
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def json_error(error: BadRequest, start_response: StartResponse) -> list[bytes]:
    """A protocol error answered below Flask (the connection is closed after it)."""
    body = json.dumps(wire.error_response(str(error))).encode()
    status = HTTPStatus(error.status)
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    if error.status == 503:
        headers.append(("Retry-After", "1"))
    # gunicorn drops an application's Connection header (hop-by-hop) and wrote
    # "keep-alive" on these answers before closing; its response object says close itself.
    response = getattr(start_response, "__self__", None)
    if callable(getattr(response, "force_close", None)):
        response.force_close()
    start_response(f"{status.value} {status.phrase}", headers)
    return [body]


def finish_reading(sock: socket.socket | None, write_timeout: float) -> None:
    """The request is read: its whole-request deadline no longer applies (the model may
    take longer), and writing the answer may take ``write_timeout`` per send."""
    if sock is None:
        return
    if hasattr(sock, "deadline"):
        sock.deadline = None  # type: ignore[attr-defined]
    try:
        sock.settimeout(write_timeout)
    except OSError:
        pass


class BodyReader:
    """WSGI middleware: read a POST body whole, within a deadline and a size limit.

    Under gunicorn (``vidcap.serve.gunicorn_worker``) a body of declared length is
    gathered before a thread starts (408 from the worker past the deadline); for what is
    left to read, the connection's socket carries the deadline and refuses any read past
    it, so a client trickling a byte at a time is answered 408 at the deadline, whatever
    its pace; without it (tests) the deadline counts from here. The body is
    refused from ``Content-Length`` (413) before a byte is read, by its Content-Type
    (415, or 400 for a bad multipart boundary), while reading past ``max_bytes`` (413)
    or past ``max_parts`` multipart parts (413), and with 503 when the bodies held by
    every request together would pass ``budget``. The body is left in
    ``environ[BODY_KEY]``.
    """

    def __init__(
        self, app: WsgiApp, config: ServeConfig, budget: protocol.BodyBudget | None = None
    ) -> None:
        self.app = app
        self.max_bytes = config.max_request_bytes
        self.max_parts = config.max_body_parts
        self.read_timeout = config.read_timeout
        self.budget = budget or protocol.BodyBudget(config.max_bodies_bytes)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        sock: socket.socket | None = environ.get("gunicorn.socket")
        if environ.get("REQUEST_METHOD") != "POST":
            finish_reading(sock, self.read_timeout)
            return self.app(environ, start_response)
        held = [0]
        try:
            body = self._read(environ, sock, held)
        except BadRequest as exc:
            self.budget.give(held[0])
            log.info("request refused (%d): %s", exc.status, exc)
            return json_error(exc, start_response)
        finally:
            finish_reading(sock, self.read_timeout)
        environ[BODY_KEY] = body
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input_terminated"] = True
        try:
            return self.app(environ, start_response)
        finally:
            self.budget.give(held[0])

    def _read(
        self, environ: Mapping[str, Any], sock: socket.socket | None, held: list[int]
    ) -> bytes:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > self.max_bytes:
            raise protocol.too_large(self.max_bytes)
        content_type = environ.get("CONTENT_TYPE") or ""
        protocol.check_body_headers(
            content_type,
            environ.get("HTTP_CONTENT_ENCODING"),
            environ.get("HTTP_TRANSFER_ENCODING"),
        )
        counter = None
        if protocol.media_type(content_type) == protocol.MULTIPART:
            boundary = protocol.multipart_boundary(content_type)
            counter = protocol.PartCounter(boundary, self.max_parts)
        stream = environ["wsgi.input"]
        deadline = getattr(sock, "deadline", None) or time.monotonic() + self.read_timeout
        chunks: list[bytes] = []  # joined once whole: no regrowing buffer to fragment memory
        size = 0
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise protocol.read_timeout(self.read_timeout)
                if sock is not None and not hasattr(sock, "deadline"):
                    sock.settimeout(remaining)  # a plain socket: bounds each read
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise protocol.too_large(self.max_bytes)
                self.budget.take(len(chunk))
                held[0] += len(chunk)
                if counter is not None:
                    counter.feed(chunk)
                chunks.append(chunk)
        except protocol.Shed:
            raise protocol.shed_answer() from None
        except (TimeoutError, protocol.DeadlinePassed):
            raise protocol.read_timeout(self.read_timeout) from None
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - gunicorn's chunked-encoding errors, resets
            raise protocol.unreadable_body(f"{type(exc).__name__}: {exc}"[:200]) from None
        return b"".join(chunks)


def create_app(core: ServingCore, *, model_name: str = "") -> Flask:
    """A Flask app serving ``core``; one micro-batcher thread calls the model."""
    config = core.config
    batcher = MicroBatcher(
        core.run,
        BatchSettings(
            max_batch=core.max_batch,
            max_delay=config.max_delay_ms / 1000,
            max_queue=config.max_queue,
        ),
    )
    app = Flask("vidcap")
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.extensions["vidcap_batcher"] = batcher
    reader = BodyReader(app.wsgi_app, config)
    app.extensions["vidcap_body_budget"] = reader.budget
    app.wsgi_app = reader  # type: ignore[method-assign]
    answer_headers = {
        protocol.INPUT_SIZE_HEADER: protocol.input_size_value(core.input_size),
        **protocol.model_headers(model_name, core.revision, core.precision),
    }

    # (OPTIONS named: else Flask answers it itself, 200 with an Allow header of them all)
    @app.route("/caption", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def caption() -> tuple[Response, int] | Response:
        protocol.check_method(request.method)
        if protocol.wants_info(request.headers) and not request.content_length:
            return jsonify(core.info(model_name))
        frames, fields, batched = read_request(config.max_body_parts)
        client = client_of(request.remote_addr)
        refused = batcher.refuses(client, len(frames))  # (before any frame is decoded)
        if refused:
            return busy(refused)
        job = core.decode(frames, fields, batched, client)
        try:
            future = batcher.submit(job, client)
        except QueueFull as exc:
            return busy(str(exc))
        try:
            outcome = future.result(timeout=config.request_timeout)
        except FutureTimeout:
            future.cancel()
            return jsonify(wire.error_response("timed out waiting for the model")), 503
        if outcome.error is not None:
            return jsonify(wire.error_response(str(outcome.error))), outcome.error.status
        response = jsonify(wire.caption_response(list(outcome.captions), job.batched))
        response.headers.update(answer_headers)
        return response

    @app.get("/health")
    def health() -> Response:
        return jsonify(
            status="ok",
            **core.info(model_name),
            device=str(getattr(core.captioner, "device", "")),
            max_delay=config.max_delay_ms / 1000,
            stats=batcher.snapshot(),
        )

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> tuple[Response, int]:
        return jsonify(wire.error_response(str(exc))), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        if exc.code == 413:
            exc = protocol.too_large(config.max_request_bytes)  # type: ignore[assignment]
            return bad_request(exc)  # type: ignore[arg-type]
        return jsonify(wire.error_response(exc.description or exc.name)), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error serving %s", request.path)
        return jsonify(wire.error_response(f"internal error: {type(exc).__name__}")), 500

    return app


def busy(why: str) -> tuple[Response, int]:
    """503 with ``Retry-After``: the queue is full (``why``) and this client already waits."""
    response = jsonify(wire.error_response(f"server busy: {why}; retry later"))
    response.headers["Retry-After"] = "1"
    return response, 503


def read_request(max_parts: int) -> tuple[list[bytes], dict[str, str], bool]:
    """Frames, settings fields and whether it is a pre-batch, from the current request.

    A multipart body is split by ``protocol.parse_multipart`` (the rules the TorchServe
    gate enforces before TorchServe's own parser), never by werkzeug's more lenient one;
    as on TorchServe, a part named like a setting is a setting, any other part is a frame
    and must be a file part (with a ``filename``).
    """
    fields = wire.settings_from_headers(request.headers)
    body = request.environ.get(BODY_KEY)
    if body is None:
        body = request.get_data(cache=False)
    protocol.check_body_headers(request.content_type, request.headers.get("Content-Encoding"))
    if request.mimetype != protocol.MULTIPART:
        return [body], fields, False
    parts = protocol.check_multipart(body, request.content_type or "", max_parts)
    images = protocol.image_parts(parts)
    for part in parts:
        if part.name in wire.SETTING_FIELDS:
            try:
                fields[part.name] = part.data.tobytes().decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {part.name} is not UTF-8 text") from None
    frames = [(part.name, part.data.tobytes()) for part in images]
    return wire.ordered_frames(frames), fields, True


def create_app_from_env(env: Mapping[str, str] | None = None) -> Flask:
    """Gunicorn's entry point: a ``ServeConfig`` from ``VIDCAP_*`` variables, the model
    loaded once, the app built around it."""
    from vidcap.model import Captioner, pinned

    config = ServeConfig.from_sources({}, os.environ if env is None else env)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        captioner = Captioner.load(pinned(config.model_settings()))
    except ModelLoadError as exc:  # one line, not gunicorn's traceback of its worker
        log.error("%s", exc)
        raise SystemExit(APP_LOAD_ERROR) from None
    core = ServingCore(captioner, config)
    log.info(
        "serving %s on %s, input %s, batches of up to %d frames, token limit %s",
        config.model,
        captioner.device,
        captioner.input_size,
        core.max_batch,
        core.budget.limit,
    )
    return create_app(core, model_name=config.model)
