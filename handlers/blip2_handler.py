"""TorchServe handler: BLIP-2 captions over the vidcap wire protocol, one worker per GPU.

A thin ``BaseHandler`` over ``vidcap.model.Captioner`` and ``vidcap.wire``:

* ``initialize`` reads the ``handler:`` section of the archive's ``model-config.yaml``
  (``VIDCAP_<KEY>`` environment variables override it), picks the worker's device from
  ``context.system_properties["gpu_id"]`` (CPU in float32 when CUDA is absent) and
  loads the model once.
* ``preprocess`` turns each request of a TorchServe batch into a ``CaptionRequest``, or
  a ``BadRequest`` that answers that request alone with a 4xx JSON error.
* ``inference`` flattens every frame of the good requests, groups them by generation
  settings and captions each group in chunks of ``max_chunk`` frames.
* ``postprocess`` splits the captions back: exactly one JSON response per request, in
  the order TorchServe gave them.

The worker imports ``vidcap`` from the Python that started TorchServe: ``start.sh`` puts
the repository root on ``PYTHONPATH`` (``pip install -e .`` works as well).
"""

from __future__ import annotations

import json
import logging
import os
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from http import HTTPStatus

from ts.handler_utils.timer import timed
from ts.torch_handler.base_handler import BaseHandler

from vidcap.errors import BadRequest, UsageError
from vidcap.frames import resize_for_model
from vidcap.model import Captioner
from vidcap.settings import DEFAULT_MODEL, DTYPES, GenerationSettings, ModelSettings
from vidcap.wire import (
    SETTING_FIELDS,
    CaptionRequest,
    WireLimits,
    build_request,
    caption_response,
    error_response,
    ordered_frames,
    settings_from_headers,
    settings_to_fields,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "VIDCAP_"
# Keys of the ``handler:`` section that TorchServe itself reads (``profile``: @timed).
TORCHSERVE_KEYS = frozenset({"profile"})
JSON_CONTENT_TYPE = "application/json"
# Every response says how many requests and frames its TorchServe batch held.
BATCH_REQUESTS_HEADER = "X-Vidcap-Batch-Requests"
BATCH_FRAMES_HEADER = "X-Vidcap-Batch-Frames"


@dataclass(frozen=True)
class HandlerConfig:
    """The ``handler:`` section of ``model-config.yaml``; defaults live here only."""

    model: str = DEFAULT_MODEL
    dtype: str = "auto"
    max_chunk: int = 8
    max_frames: int = WireLimits.max_frames
    max_pixels: int = WireLimits.max_pixels
    prompt: str = ""
    max_new_tokens: int = GenerationSettings.max_new_tokens
    num_beams: int = GenerationSettings.num_beams

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(
                f"unknown dtype {self.dtype!r}; supported values are {', '.join(DTYPES)}"
            )
        for name in ("max_chunk", "max_frames", "max_pixels"):
            if getattr(self, name) < 1:
                raise UsageError(f"handler setting {name} must be >= 1, got {getattr(self, name)}")
        self.generation_defaults()  # validates prompt, max_new_tokens, num_beams

    @classmethod
    def from_sources(cls, section: Mapping[str, object], env: Mapping[str, str]) -> HandlerConfig:
        """``section`` (from YAML) overridden by ``VIDCAP_<KEY>`` variables in ``env``."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(section) - set(known) - TORCHSERVE_KEYS)
        if unknown:
            raise UsageError(
                f"unknown handler setting(s) {', '.join(unknown)} in model-config.yaml; "
                f"supported keys are {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        for name in known:
            raw = env.get(ENV_PREFIX + name.upper(), section.get(name))
            if raw is not None:
                values[name] = _convert(name, raw, hints[name])
        return cls(**values)  # type: ignore[arg-type]

    def model_settings(self, device: str) -> ModelSettings:
        dtype = self.dtype if device.startswith("cuda") else "float32"
        return ModelSettings(
            model=self.model, device=device, dtype=dtype, batch_size=self.max_chunk
        )

    def limits(self) -> WireLimits:
        return WireLimits(max_frames=self.max_frames, max_pixels=self.max_pixels)

    def generation_defaults(self) -> GenerationSettings:
        try:
            return GenerationSettings(
                prompt=self.prompt or None,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
            )
        except UsageError as exc:
            raise UsageError(f"handler setting: {exc}") from None


def _convert(name: str, raw: object, kind: object) -> object:
    if kind is int:
        try:
            return int(str(raw))
        except ValueError:
            raise UsageError(
                f"handler setting {name} must be a whole number, got {raw!r}"
            ) from None
    return str(raw)


def worker_device(gpu_id: object, cuda_available: bool) -> str:
    """``cuda:<gpu_id>`` for a GPU worker; ``cpu`` when TorchServe gave no GPU or CUDA is absent."""
    if gpu_id is None or gpu_id == "" or not cuda_available:
        return "cpu"
    return f"cuda:{int(str(gpu_id))}"


def _as_text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"form field {name} is not UTF-8 text") from None
    raise BadRequest(f"form field {name} is not text")


def _as_image_bytes(label: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise BadRequest(f"{label} is not a JPEG or PNG image (got a text or JSON part)", 415)


def split_row(
    row: Mapping[str, object], headers: Mapping[str, object]
) -> tuple[list[bytes], dict[str, str], bool]:
    """One TorchServe request → (image parts in order, setting fields, batched).

    TorchServe hands a raw body as ``{"body": bytes}`` and a multipart/form-data body
    as one key per part (in arrival order; parts with the same name collapse, which is
    why clients name them ``frame0``, ``frame1``…). Settings come from form fields or
    ``X-Vidcap-*`` headers; a form field wins over a header.
    """
    text_headers = {k: v for k, v in headers.items() if isinstance(v, str)}
    content_type = next(
        (v for k, v in text_headers.items() if k.lower() == "content-type"), ""
    ).lower()
    fields_ = settings_from_headers(text_headers)
    batched = content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))
    if not batched:
        frames = [_as_image_bytes("image", row["body"])] if "body" in row else []
        return frames, fields_, False
    parts: list[tuple[str, bytes]] = []
    for name, value in row.items():
        if name in SETTING_FIELDS:
            fields_[name] = _as_text(name, value)
        else:
            parts.append((name, _as_image_bytes(f"part {name!r}", value)))
    return ordered_frames(parts), fields_, True


@dataclass(frozen=True)
class Outcome:
    """What one request of a batch gets: captions, or an error with its HTTP status."""

    request: CaptionRequest | None = None
    error: BadRequest | None = None
    captions: tuple[str, ...] = ()


def caption_batch(captioner: Captioner, requests: Sequence[CaptionRequest]) -> list[list[str]]:
    """Caption every frame of ``requests``: one model pass per generation setting,
    chunked by the captioner's batch size; answers split back per request, in order."""
    groups: dict[GenerationSettings, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.settings, []).append(index)
    answers: list[list[str]] = [[] for _ in requests]
    for settings, members in groups.items():
        frames = [image for i in members for image in requests[i].images]
        log.debug(
            "captioning %d frame(s) of %d request(s) with %s", len(frames), len(members), settings
        )
        captions = captioner.caption(frames, settings)
        if len(captions) != len(frames):
            raise RuntimeError(f"model returned {len(captions)} captions for {len(frames)} frames")
        start = 0
        for i in members:
            count = len(requests[i].images)
            answers[i] = captions[start : start + count]
            start += count
    return answers


class Blip2Handler(BaseHandler):
    """BLIP-2 captioning for TorchServe; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.captioner: Captioner | None = None
        self.config = HandlerConfig()

    def initialize(self, context) -> None:
        import torch

        self.context = context
        section = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        config = HandlerConfig.from_sources(section, os.environ)
        gpu_id = context.system_properties.get("gpu_id")
        device = worker_device(gpu_id, torch.cuda.is_available())
        if device == "cpu" and gpu_id is not None:
            log.warning(
                "TorchServe gave this worker GPU %s but CUDA is not available: using CPU", gpu_id
            )
        settings = config.model_settings(device)
        log.info(
            "loading %s on %s (%s), max_chunk=%d",
            config.model,
            device,
            settings.dtype,
            config.max_chunk,
        )
        self.bind(Captioner.load(settings), config)
        self.device = device

    def bind(self, captioner: Captioner, config: HandlerConfig) -> None:
        """Use an already loaded captioner (``initialize`` calls it; tests may too)."""
        self.captioner = captioner
        self.config = config
        self.initialized = True

    def handle(self, data: Sequence[Mapping[str, object]], context) -> list[str]:
        """preprocess → inference → postprocess, one response per request.

        Unlike ``BaseHandler.handle`` this ignores the ``describe``/``explain`` request
        headers, so no client can turn a whole shared batch into an error.
        """
        start = time.perf_counter()
        self.context = context
        output = self.postprocess(self.inference(self.preprocess(data)))
        elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
        context.metrics.add_time("HandlerTime", elapsed_ms, None, "ms")
        return output

    @timed
    def preprocess(self, data: Sequence[Mapping[str, object]]) -> list[Outcome]:
        if self.captioner is None:
            raise RuntimeError("handler used before initialize()")
        size = self.captioner.input_size
        limits = self.config.limits()
        defaults = settings_to_fields(self.config.generation_defaults())
        outcomes = []
        for idx, row in enumerate(data):
            try:
                frames, fields_, batched = split_row(row, self._headers(idx))
                request = build_request(frames, {**defaults, **fields_}, batched, limits)
                # Keep model-sized frames only: a batch of large frames stays small.
                images = [resize_for_model(image, size) for image in request.images]
                outcomes.append(Outcome(request=replace(request, images=images)))
            except BadRequest as exc:
                log.info("request %d of %d refused (%d): %s", idx, len(data), exc.status, exc)
                outcomes.append(Outcome(error=exc))
        return outcomes

    @timed
    def inference(self, data: list[Outcome], *args: object, **kwargs: object) -> list[Outcome]:
        if self.captioner is None:
            raise RuntimeError("handler used before initialize()")
        requests = [o.request for o in data if o.request is not None]
        answers = iter(caption_batch(self.captioner, requests))
        return [
            replace(o, captions=tuple(next(answers))) if o.request is not None else o for o in data
        ]

    @timed
    def postprocess(self, data: list[Outcome]) -> list[str]:
        frames = sum(len(o.request.images) for o in data if o.request is not None)
        batch_headers = {BATCH_REQUESTS_HEADER: str(len(data)), BATCH_FRAMES_HEADER: str(frames)}
        responses = []
        for idx, outcome in enumerate(data):
            self._set_headers(idx, batch_headers)
            if outcome.request is not None:
                body: object = caption_response(list(outcome.captions), outcome.request.batched)
            else:
                error = outcome.error or BadRequest("request could not be read")
                status = HTTPStatus(error.status)
                self.context.set_response_status(status.value, status.phrase, idx)
                body = error_response(str(error))
            responses.append(json.dumps(body))
        return responses

    def _headers(self, idx: int) -> Mapping[str, object]:
        processors = getattr(self.context, "request_processor", None)
        if not processors:
            return {}
        return self.context.get_all_request_header(idx) or {}

    def _set_headers(self, idx: int, extra: Mapping[str, str]) -> None:
        if not getattr(self.context, "request_processor", None):
            return
        self.context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        for name, value in extra.items():
            self.context.set_response_header(idx, name, value)


_service = Blip2Handler()


def handle(data: Sequence[Mapping[str, object]] | None, context) -> list[str] | None:
    """TorchServe's entry point: ``handle(None, context)`` loads, later calls serve a batch.

    A module-level function rather than the class, because TorchServe only picks a
    handler class out of a module that defines exactly one class.
    """
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
