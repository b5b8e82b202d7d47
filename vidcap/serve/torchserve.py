"""The TorchServe transport over ``ServingCore``: a ``BaseHandler``, one worker per GPU.

* ``initialize`` builds a ``ServeConfig`` from the ``handler:`` section of the archive's
  ``model-config.yaml`` (``VIDCAP_<KEY>`` environment variables override it), picks the
  worker's device from ``context.system_properties["gpu_id"]`` (CPU in float32 when
  CUDA is absent) and loads the model once.
* ``preprocess`` turns each request of a TorchServe batch into a valid
  ``CaptionRequest`` (``ServingCore.decode``: every check, prompt tokens included), an
  info answer (``X-Vidcap-Info``), or a ``BadRequest`` answered to that request alone.
* ``inference`` is ``ServingCore.run``: group by settings, flatten, caption, split back;
  a model error is retried per request, so batch-mates keep their captions.
* ``postprocess`` writes exactly one JSON response per request, in TorchServe's order,
  each with the model's input size in ``X-Vidcap-Input-Size`` and its name in
  ``X-Vidcap-Model``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

from ts.handler_utils.timer import timed
from ts.torch_handler.base_handler import BaseHandler

from vidcap.errors import BadRequest
from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ModelFailure, Outcome, ServingCore
from vidcap.wire import (
    SETTING_FIELDS,
    CaptionRequest,
    caption_response,
    error_response,
    ordered_frames,
    settings_from_headers,
)

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
# Every response says how many requests and frames its TorchServe batch held.
BATCH_REQUESTS_HEADER = "X-Vidcap-Batch-Requests"
BATCH_FRAMES_HEADER = "X-Vidcap-Batch-Frames"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


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
    as one key per part (in arrival order). Settings come from form fields or
    ``X-Vidcap-*`` headers; a form field wins over a header.
    """
    text_headers = {k: v for k, v in headers.items() if isinstance(v, str)}
    content_type = next(
        (v for k, v in text_headers.items() if k.lower() == "content-type"), ""
    ).lower()
    fields = settings_from_headers(text_headers)
    if not content_type.startswith(FORM_TYPES):
        frames = [_as_image_bytes("image", row["body"])] if "body" in row else []
        return frames, fields, False
    parts: list[tuple[str, bytes]] = []
    for name, value in row.items():
        if name in SETTING_FIELDS:
            fields[name] = _as_text(name, value)
        else:
            parts.append((name, _as_image_bytes(f"part {name!r}", value)))
    return ordered_frames(parts), fields, True


@dataclass(frozen=True)
class Slot:
    """One request of a TorchServe batch on its way through the handler."""

    request: CaptionRequest | None = None
    error: BadRequest | ModelFailure | None = None
    info: bool = False
    outcome: Outcome | None = None


class Blip2Handler(BaseHandler):
    """BLIP-2 captioning for TorchServe; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.core: ServingCore | None = None
        self.model_name = ""

    def initialize(self, context) -> None:
        import torch

        from vidcap.model import Captioner, pinned

        self.context = context
        section = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        config = ServeConfig.from_sources(section, os.environ)
        gpu_id = context.system_properties.get("gpu_id")
        device = worker_device(gpu_id, torch.cuda.is_available())
        if device == "cpu" and gpu_id is not None:
            log.warning(
                "TorchServe gave this worker GPU %s but CUDA is not available: using CPU", gpu_id
            )
        settings = pinned(config.model_settings(device))  # the commit it loads, and names
        log.info(
            "loading %s on %s (%s), max_batch=%s",
            config.model,
            device,
            settings.dtype,
            config.max_batch,
        )
        self.bind(ServingCore(Captioner.load(settings), config), config.model)
        self.device = device

    def bind(self, core: ServingCore, model_name: str = "") -> None:
        """Serve an already built core (``initialize`` calls it; tests may too)."""
        self.core = core
        self.model_name = model_name
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

    def _core(self) -> ServingCore:
        if self.core is None:
            raise RuntimeError("handler used before initialize()")
        return self.core

    @timed
    def preprocess(self, data: Sequence[Mapping[str, object]]) -> list[Slot]:
        core = self._core()
        slots = []
        for idx, row in enumerate(data):
            headers = self._headers(idx)
            try:
                frames, fields, batched = split_row(row, headers)
                if protocol.wants_info(headers) and not any(frames):
                    slots.append(Slot(info=True))
                    continue
                slots.append(Slot(request=core.decode(frames, fields, batched)))
            except BadRequest as exc:
                log.info("request %d of %d refused (%d): %s", idx, len(data), exc.status, exc)
                slots.append(Slot(error=exc))
            except Exception as exc:  # noqa: BLE001 - one request's fault is never its batch's
                log.exception("request %d of %d could not be read", idx, len(data))
                slots.append(Slot(error=BadRequest(f"the request could not be read: {exc}")))
        return slots

    @timed
    def inference(self, data: list[Slot], *args: object, **kwargs: object) -> list[Slot]:
        requests = [s.request for s in data if s.request is not None]
        outcomes = iter(self._core().run(requests))
        return [
            Slot(request=s.request, outcome=next(outcomes)) if s.request is not None else s
            for s in data
        ]

    @timed
    def postprocess(self, data: list[Slot]) -> list[str]:
        core = self._core()
        frames = sum(len(s.request.images) for s in data if s.request is not None)
        headers = {
            BATCH_REQUESTS_HEADER: str(len(data)),
            BATCH_FRAMES_HEADER: str(frames),
            protocol.INPUT_SIZE_HEADER: protocol.input_size_value(core.input_size),
            **protocol.model_headers(self.model_name, core.revision, core.precision),
        }
        responses = []
        for idx, slot in enumerate(data):
            self._set_headers(idx, headers)
            error = slot.error or (slot.outcome.error if slot.outcome else None)
            body: object
            if slot.info:
                body = core.info(self.model_name)
            elif error is None and slot.request is not None and slot.outcome is not None:
                body = caption_response(list(slot.outcome.captions), slot.request.batched)
            else:
                error = error or BadRequest("request could not be read")
                status = HTTPStatus(error.status)
                self.context.set_response_status(status.value, status.phrase, idx)
                body = error_response(str(error))
            responses.append(json.dumps(body))
        return responses

    def _headers(self, idx: int) -> Mapping[str, object]:
        if not getattr(self.context, "request_processor", None):
            return {}
        return self.context.get_all_request_header(idx) or {}

    def _set_headers(self, idx: int, extra: Mapping[str, str]) -> None:
        if not getattr(self.context, "request_processor", None):
            return
        self.context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        for name, value in extra.items():
            self.context.set_response_header(idx, name, value)
