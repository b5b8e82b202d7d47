"""The Flask transport over ``ServingCore``: ``POST /caption``, ``GET /health``.

``create_app`` takes a ``ServingCore`` (tests build one around any captioner);
``create_app_from_env`` is the gunicorn entry point (``flask/start.sh``). Requests are
read whole by ``BodyReader`` before Flask sees them: within ``read_timeout`` seconds,
at most ``max_request_mb``, valid chunked encoding, or a 408/413/400 JSON answer, so a
slow or broken client holds one thread for a bounded time only. Valid requests join
the micro-batcher (``vidcap.serve.batcher``); one that fails gets its own error.
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
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from vidcap import wire
from vidcap.errors import BadRequest
from vidcap.serve import protocol
from vidcap.serve.batcher import BatchSettings, MicroBatcher, QueueFull
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ServingCore

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def json_error(error: BadRequest, start_response: StartResponse) -> list[bytes]:
    """A protocol error answered below Flask (the connection is closed after it)."""
    from http import HTTPStatus

    body = json.dumps(wire.error_response(str(error))).encode()
    status = HTTPStatus(error.status)
    start_response(
        f"{status.value} {status.phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ],
    )
    return [body]


class BodyReader:
    """WSGI middleware: read a POST body whole, within a deadline and a size limit.

    Under gunicorn the connection's socket gets a timeout of whatever is left of
    ``read_timeout`` before each read, so a client that stops sending is answered 408
    once the deadline passes, whatever its pace.
    """

    def __init__(self, app: WsgiApp, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            try:
                body = self._read(environ)
            except BadRequest as exc:
                log.info("request refused (%d): %s", exc.status, exc)
                return json_error(exc, start_response)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input_terminated"] = True
        return self.app(environ, start_response)

    def _read(self, environ: Mapping[str, Any]) -> bytes:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > self.max_bytes:
            raise protocol.too_large(self.max_bytes)
        stream = environ["wsgi.input"]
        sock: socket.socket | None = environ.get("gunicorn.socket")
        deadline = time.monotonic() + self.read_timeout
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise protocol.read_timeout(self.read_timeout)
                if sock is not None:
                    sock.settimeout(remaining)
                chunk = stream.read(READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise protocol.too_large(self.max_bytes)
                chunks.append(chunk)
        except TimeoutError:
            raise protocol.read_timeout(self.read_timeout) from None
        except BadRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - gunicorn's chunked-encoding errors, resets
            raise protocol.unreadable_body(f"{type(exc).__name__}: {exc}"[:200]) from None
        finally:
            if sock is not None:
                sock.settimeout(self.read_timeout)  # bounds writing the answer too
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
    app.wsgi_app = BodyReader(app.wsgi_app, config.max_request_bytes, config.read_timeout)  # type: ignore[method-assign]
    size_header = {protocol.INPUT_SIZE_HEADER: protocol.input_size_value(core.input_size)}

    @app.route("/caption", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    def caption() -> tuple[Response, int] | Response:
        protocol.check_method(request.method)
        if protocol.wants_info(request.headers) and not request.content_length:
            return jsonify(core.info(model_name))
        frames, fields, batched = read_request()
        job = core.decode(frames, fields, batched)
        try:
            future = batcher.submit(job)
        except QueueFull as exc:
            response = jsonify(wire.error_response(f"server busy: {exc}; retry later"))
            response.headers["Retry-After"] = "1"
            return response, 503
        try:
            outcome = future.result(timeout=config.request_timeout)
        except FutureTimeout:
            future.cancel()
            return jsonify(wire.error_response("timed out waiting for the model")), 503
        if outcome.error is not None:
            return jsonify(wire.error_response(str(outcome.error))), outcome.error.status
        response = jsonify(wire.caption_response(list(outcome.captions), job.batched))
        response.headers.update(size_header)
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


def read_request() -> tuple[list[bytes], dict[str, str], bool]:
    """Frames, settings fields and whether it is a pre-batch, from the current request."""
    fields = wire.settings_from_headers(request.headers)
    if request.mimetype != protocol.MULTIPART:
        return [request.get_data(cache=False)], fields, False
    # Checked on the raw body, as the TorchServe gate does (werkzeug drops what it cannot parse).
    protocol.check_multipart(request.get_data(), request.content_type or "")
    files = list(request.files.items(multi=True))
    texts = list(request.form.items(multi=True))
    parts = [(name, part.read()) for name, part in files]
    for name, value in texts:
        if name in wire.SETTING_FIELDS:
            fields[name] = value
        else:
            parts.append((name, value.encode()))
    return wire.ordered_frames(parts), fields, True


def create_app_from_env(env: Mapping[str, str] | None = None) -> Flask:
    """Gunicorn's entry point: a ``ServeConfig`` from ``VIDCAP_*`` variables, the model
    loaded once, the app built around it."""
    from vidcap.model import Captioner

    config = ServeConfig.from_sources({}, os.environ if env is None else env)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    captioner = Captioner.load(config.model_settings())
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
