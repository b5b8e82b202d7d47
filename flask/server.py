"""The single-GPU caption server (Flask): the vidcap wire protocol at ``POST /caption``.

Run it with ``flask/start.sh`` (gunicorn: one worker process, so the model is loaded
once, and threads for concurrent requests). Concurrent requests are micro-batched into
one model call (``vidcap.batching``). ``GET /health`` answers with the model name, its
input size and counters (requests, frames, model calls).

``create_app`` takes a loaded captioner and plain settings, so tests can run it in
process; ``create_app_from_env`` is the gunicorn entry point and the only place that
reads environment variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from vidcap import wire
from vidcap.batching import BatchSettings, MicroBatcher, ModelFailure, QueueFull
from vidcap.errors import BadRequest, UsageError
from vidcap.settings import GenerationSettings, ModelSettings

log = logging.getLogger("vidcap.flask")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT = 600.0


class CaptionerLike(Protocol):
    input_size: tuple[int, int]

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]: ...


def create_app(
    captioner: CaptionerLike,
    limits: wire.WireLimits | None = None,
    batching: BatchSettings | None = None,
    *,
    model_name: str = "",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> Flask:
    """A Flask app serving ``captioner``; one micro-batcher thread calls the model."""
    limits = limits or wire.WireLimits()
    batcher = MicroBatcher(captioner.caption, batching)
    app = Flask("vidcap")
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.extensions["vidcap_batcher"] = batcher

    @app.post("/caption")
    def caption() -> tuple[Response, int] | Response:
        frames, fields, batched = read_request()
        job = wire.build_request(frames, fields, batched, limits)
        try:
            future = batcher.submit(job.images, job.settings)
        except QueueFull as exc:
            response = jsonify(wire.error_response(f"server busy: {exc}; retry later"))
            response.headers["Retry-After"] = "1"
            return response, 503
        try:
            captions = future.result(timeout=request_timeout)
        except FutureTimeout:
            future.cancel()
            return jsonify(wire.error_response("timed out waiting for the model")), 503
        except ModelFailure as exc:
            return jsonify(wire.error_response(f"the model failed on this batch: {exc}")), 500
        return jsonify(wire.caption_response(captions, job.batched))

    @app.get("/health")
    def health() -> Response:
        settings = batcher.settings
        return jsonify(
            status="ok",
            model=model_name,
            input_size=list(captioner.input_size),
            device=str(getattr(captioner, "device", "")),
            max_batch=settings.max_batch,
            max_delay=settings.max_delay,
            max_frames_per_request=limits.max_frames,
            stats=batcher.snapshot(),
        )

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> tuple[Response, int]:
        return jsonify(wire.error_response(str(exc))), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(wire.error_response(exc.description or exc.name)), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unexpected error serving %s", request.path)
        return jsonify(wire.error_response(f"internal error: {type(exc).__name__}")), 500

    return app


def read_request() -> tuple[list[bytes], dict[str, str], bool]:
    """Frames, settings fields and whether it is a pre-batch, from the current request."""
    fields = wire.settings_from_headers(request.headers)
    if request.mimetype == "multipart/form-data":
        parts = [(name, part.read()) for name, part in request.files.items(multi=True)]
        fields.update({k: v for k, v in request.form.items() if k in wire.SETTING_FIELDS})
        return wire.ordered_frames(parts), fields, True
    return [request.get_data(cache=False)], fields, False


def env_number(name: str, default: float, kind: type = int) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise UsageError(f"{name} must be a {what}, got {raw!r}") from None


def create_app_from_env() -> Flask:
    """Gunicorn's entry point: ``VIDCAP_MODEL``, ``VIDCAP_DEVICE``, ``VIDCAP_DTYPE``,
    ``VIDCAP_MAX_BATCH``, ``VIDCAP_MAX_DELAY_MS``, ``VIDCAP_MAX_FRAMES``,
    ``VIDCAP_MAX_REQUEST_MB``, ``VIDCAP_LOG_LEVEL``."""
    from vidcap.model import Captioner

    logging.basicConfig(
        level=os.environ.get("VIDCAP_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    defaults = BatchSettings()
    batching = BatchSettings(
        max_batch=int(env_number("VIDCAP_MAX_BATCH", defaults.max_batch)),
        max_delay=env_number("VIDCAP_MAX_DELAY_MS", defaults.max_delay * 1000, float) / 1000,
    )
    model_settings = ModelSettings(
        model=os.environ.get("VIDCAP_MODEL") or ModelSettings().model,
        device=os.environ.get("VIDCAP_DEVICE") or "auto",
        dtype=os.environ.get("VIDCAP_DTYPE") or "auto",
        batch_size=batching.max_batch,
    )
    limits = wire.WireLimits(
        max_frames=int(env_number("VIDCAP_MAX_FRAMES", wire.WireLimits().max_frames))
    )
    max_mb = env_number("VIDCAP_MAX_REQUEST_MB", DEFAULT_MAX_REQUEST_BYTES / 2**20, float)
    captioner = Captioner.load(model_settings)
    log.info(
        "serving %s on %s, input %s, micro-batches of up to %d frames",
        model_settings.model,
        captioner.device,
        captioner.input_size,
        batching.max_batch,
    )
    return create_app(
        captioner,
        limits,
        batching,
        model_name=model_settings.model,
        max_request_bytes=int(max_mb * 2**20),
    )
