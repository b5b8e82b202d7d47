"""BLIP-2 captioner: load from a hub id, a local directory or ``tiny``; batched generate."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from vidcap.errors import ModelLoadError, UsageError
from vidcap.frames import resize_for_model
from vidcap.settings import DEFAULT_MODEL, GenerationSettings, ModelSettings
from vidcap.tiny import CHECKPOINT_DIR

log = logging.getLogger(__name__)

BLIP2_INPUT_SIZE = (224, 224)


def resolve_model_path(model: str) -> str:
    """``tiny`` → the shipped checkpoint; an existing directory → itself; else a hub id."""
    if model == "tiny":
        return str(CHECKPOINT_DIR)
    return model


def model_input_size(model: str) -> tuple[int, int]:
    """The (height, width) the model's image processor expects, without loading weights.

    Clients use it to resize frames before they go on the wire. Reads the local
    ``preprocessor_config.json``/``processor_config.json`` when there is one; a hub id
    that is not a local directory is taken to be a BLIP-2 at 224x224.
    """
    path = Path(resolve_model_path(model))
    for name in ("preprocessor_config.json", "processor_config.json"):
        config_file = path / name
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            size = config.get("image_processor", config).get("size", {})
            if "height" in size and "width" in size:
                return int(size["height"]), int(size["width"])
    return BLIP2_INPUT_SIZE


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for, but CUDA is not available here")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(
                f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    return device


def pick_dtype(dtype: str, device: str):  # -> torch.dtype
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class Captioner:
    """A loaded BLIP-2 (processor + model) on one device. Thread-compatible, not thread-safe."""

    def __init__(self, processor, model, device: str, batch_size: int) -> None:
        self.processor = processor
        self.model = model
        self.device = device
        # The language model's dtype: BLIP-2 keeps its Q-Former in fp32 whatever is asked.
        self.dtype = model.get_input_embeddings().weight.dtype
        self.batch_size = batch_size
        size = processor.image_processor.size
        self.input_size: tuple[int, int] = (int(size["height"]), int(size["width"]))

    @classmethod
    def load(cls, settings: ModelSettings | None = None) -> Captioner:
        settings = settings or ModelSettings()
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        path = resolve_model_path(settings.model)
        local_only = ensure_loadable(settings.model, path)
        log.info("loading %s on %s (%s)", path, device, dtype)
        try:
            from transformers import Blip2ForConditionalGeneration, Blip2Processor
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            processor = Blip2Processor.from_pretrained(path, local_files_only=local_only)
            model = Blip2ForConditionalGeneration.from_pretrained(
                path, dtype=dtype, local_files_only=local_only
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(load_error_message(settings.model, exc)) from exc
        model.to(device).eval()
        return cls(processor, model, device, settings.batch_size)

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        """Caption RGB frames (any size; resized to the model input if not already)."""
        settings = settings or GenerationSettings()
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [
                resize_for_model(img, self.input_size)
                for img in images[start : start + self.batch_size]
            ]
            captions.extend(self._generate(chunk, settings))
        return captions

    def _generate(self, images: list[np.ndarray], settings: GenerationSettings) -> list[str]:
        import torch

        text = [settings.prompt] * len(images) if settings.prompt else None
        inputs = self.processor(images=images, text=text, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams,
                do_sample=False,
            )
        if text is not None and out.shape[1] >= inputs["input_ids"].shape[1]:
            prompt_ids = inputs["input_ids"]
            if torch.equal(out[:, : prompt_ids.shape[1]], prompt_ids):
                out = out[:, prompt_ids.shape[1] :]
        decoded = self.processor.batch_decode(out, skip_special_tokens=True)
        return [caption.strip() for caption in decoded]


def ensure_loadable(model: str, path: str) -> bool:
    """Fail fast, in one line, when the model cannot be had; True when it loads offline.

    A local directory must hold a ``config.json``. A hub id loads from the cache when it
    is there (no network touched); otherwise the hub must answer within seconds, rather
    than the minutes of retries ``from_pretrained`` would spend before failing.
    """
    if Path(path).exists():
        if not (Path(path) / "config.json").is_file():
            raise ModelLoadError(
                f"cannot load model from {model!r}: not a BLIP-2 checkpoint (no config.json there)"
            )
        return True
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except HFValidationError:
        raise ModelLoadError(
            f"cannot load model {model!r}: no such directory, and not a hub id (owner/name)"
        ) from None
    if isinstance(cached, str):
        return True
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or not hub_reachable():
        raise ModelLoadError(load_error_message(model, None))
    return False


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_error_message(model: str, exc: BaseException | None) -> str:
    if model == "tiny":
        return f"cannot load the bundled tiny model from {CHECKPOINT_DIR}: {exc}"
    if Path(model).exists():
        first_line = str(exc).strip().splitlines()[0][:200] if exc else "unknown error"
        return f"cannot load model from {model!r}: not a BLIP-2 checkpoint ({first_line})"
    return (
        f"cannot load model {model!r}: it is not in the local Hugging Face cache and the hub "
        f"is not reachable; download it once where there is network (huggingface-cli download "
        f"{model or DEFAULT_MODEL}) or pass a local directory with --model /path/to/blip2"
    )
