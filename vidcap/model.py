"""BLIP-2 captioner: load from a hub id, a local directory or ``tiny``; batched generate."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from vidcap.errors import ModelLoadError, UsageError
from vidcap.frames import resize_for_model
from vidcap.settings import DEFAULT_MODEL, GenerationSettings, ModelSettings, joined_precisions
from vidcap.tiny import CHECKPOINT_DIR
from vidcap.wording import counted

log = logging.getLogger(__name__)

BLIP2_INPUT_SIZE = (224, 224)
# --batch-size auto: on CUDA start here and halve on out-of-memory (256 was the knee of
# frames/s against batch size for BLIP-2 OPT-2.7b in fp16 on an H200); on CPU a batch
# past 16 gains nothing and only delays the first outputs.
AUTO_BATCH_CUDA = 256
AUTO_BATCH_CPU = 16
# Distinct prompts whose token ids a Captioner keeps (on its device), least recently used
# dropped first: a server asked for ever new prompts stays within this many (about 4 KB each).
PROMPT_CACHE_SIZE = 64


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
        visible = torch.cuda.device_count()
        if index >= visible:
            raise UsageError(
                f"device {device!r} asked for, but only {counted(visible, 'GPU')} "
                f"{'is' if visible == 1 else 'are'} visible"
            )
    return device


def expand_devices(device: str) -> list[str]:
    """``cuda:0,cuda:1`` → both; ``cuda:all`` → every visible GPU; one device → itself."""
    devices: list[str] = []
    for item in (d.strip() for d in device.split(",")):
        if item == "cuda:all":
            import torch

            count = torch.cuda.device_count()
            if count == 0:
                raise UsageError("device 'cuda:all' asked for, but CUDA is not available here")
            devices.extend(f"cuda:{i}" for i in range(count))
        else:
            devices.append(item)
    return devices


def pick_dtype(dtype: str, device: str):  # -> torch.dtype
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def precision_name(dtype: object) -> str:
    """A torch dtype as records and servers name it: ``float16``, ``bfloat16``, ``float32``."""
    return str(dtype).removeprefix("torch.")


def precision_of(settings: ModelSettings, device: str | None = None) -> str:
    """The precision Captioners of ``settings`` run their language model in, on ``device``
    (else the ones ``settings.device`` picks): what ``Captioner.load`` loads; several,
    comma-separated, where replicas on a CPU and a GPU would differ."""
    devices = [device] if device else [pick_device(d) for d in expand_devices(settings.device)]
    return joined_precisions(*(precision_name(pick_dtype(settings.dtype, d)) for d in devices))


class Captioner:
    """A loaded BLIP-2 (processor + model) on one device. Thread-compatible, not thread-safe.

    The three steps are separate methods so each can move on its own: ``preprocess``
    (uint8 frames → normalised pixel tensor on the device), ``generate`` (the model step)
    and ``decode`` (token ids → text).
    """

    def __init__(
        self, processor, model, device: str, batch_size: int | None, revision: str | None = None
    ) -> None:
        import torch

        self.processor = processor
        self.revision = revision  # the hub commit loaded, where known
        self.model = model
        self.device = device
        # The language model's dtype: BLIP-2 keeps its Q-Former in fp32 whatever is asked.
        self.dtype = model.get_input_embeddings().weight.dtype
        self.precision = precision_name(self.dtype)  # (records name it: ``precision_of``)
        self.auto_batch = batch_size is None
        self.batch_size = batch_size or auto_batch_size(device)
        image = processor.image_processor
        size = image.size
        self.input_size: tuple[int, int] = (int(size["height"]), int(size["width"]))
        # What the image processor does to a frame already at the input size: rescale,
        # normalise. Done here on whole uint8 batches, on the device (see preprocess).
        scale = float(image.rescale_factor) if image.do_rescale else 1.0
        mean = image.image_mean if image.do_normalize else (0.0, 0.0, 0.0)
        std = image.image_std if image.do_normalize else (1.0, 1.0, 1.0)
        self._scale = scale
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._prompt_ids: OrderedDict[str, dict] = OrderedDict()  # PROMPT_CACHE_SIZE at most

    @classmethod
    def load(cls, settings: ModelSettings | None = None) -> Captioner:
        settings = settings or ModelSettings()
        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        path = resolve_model_path(settings.model)
        revision = settings.revision
        local_only = ensure_loadable(settings.model, path, revision)
        at = f" at revision {revision}" if revision else ""
        log.info("loading %s%s on %s (%s)", path, at, device, dtype)
        try:
            from transformers import Blip2ForConditionalGeneration, Blip2Processor
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            commit = {"revision": revision} if revision else {}
            processor = Blip2Processor.from_pretrained(path, local_files_only=local_only, **commit)
            model = Blip2ForConditionalGeneration.from_pretrained(
                path, dtype=dtype, local_files_only=local_only, **commit
            )
        except (OSError, ValueError, KeyError, *_weights_errors()) as exc:
            raise ModelLoadError(load_error_message(settings.model, exc)) from exc
        model.to(device).eval()
        return cls(processor, model, device, settings.batch_size, revision)

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        """Caption RGB frames (any size; resized to the model input if not already).

        With ``--batch-size auto`` on CUDA, a batch that runs out of GPU memory is split in
        halves and the smaller size kept: the batch settles at the largest that fits.
        """
        settings = settings or GenerationSettings()
        captions: list[str] = []
        start = 0
        while start < len(images):
            chunk = images[start : start + self.batch_size]
            try:
                captions.extend(self.decode(self.generate(self.preprocess(chunk), settings)))
            except Exception as exc:
                if not (self.auto_batch and _out_of_memory(exc) and self.batch_size > 1):
                    raise
                self.batch_size //= 2
                log.info("out of GPU memory: batch size lowered to %d", self.batch_size)
                _empty_cache()
                continue
            start += len(chunk)
        return captions

    def preprocess(self, images: Sequence[np.ndarray]):  # -> torch.Tensor
        """uint8 RGB frames → the model's pixel tensor, normalised on the device.

        One stacked uint8 copy to the device (pinned and non-blocking on CUDA), then
        rescale and normalise there, instead of the processor's per-image Python path.
        """
        import torch

        frames = np.stack([resize_for_model(img, self.input_size) for img in images])
        batch = torch.from_numpy(frames)
        if self.device.startswith("cuda"):
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        pixels = batch.permute(0, 3, 1, 2).to(torch.float32).mul_(self._scale)
        return ((pixels - self._mean) / self._std).to(self.dtype)

    def _prompt_inputs(self, prompt: str, count: int) -> dict:
        """Token ids of ``prompt`` (image tokens first, as the processor lays them out),
        kept for the ``PROMPT_CACHE_SIZE`` prompts used last."""
        if prompt in self._prompt_ids:
            self._prompt_ids.move_to_end(prompt)
        else:
            blank = np.zeros((*self.input_size, 3), dtype=np.uint8)
            encoded = self.processor(images=[blank], text=[prompt], return_tensors="pt")
            self._prompt_ids[prompt] = {
                k: v.to(self.device) for k, v in encoded.items() if k != "pixel_values"
            }
            while len(self._prompt_ids) > PROMPT_CACHE_SIZE:
                self._prompt_ids.popitem(last=False)
        return {k: v.expand(count, -1) for k, v in self._prompt_ids[prompt].items()}

    def generate(self, pixel_values, settings: GenerationSettings):  # -> torch.Tensor
        """The model step: new token ids per image (the prompt's ids removed)."""
        import torch

        inputs = {"pixel_values": pixel_values}
        if settings.prompt:
            inputs.update(self._prompt_inputs(settings.prompt, pixel_values.shape[0]))
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams,
                do_sample=False,
            )
        if settings.prompt and out.shape[1] >= inputs["input_ids"].shape[1]:
            prompt_ids = inputs["input_ids"]
            if torch.equal(out[:, : prompt_ids.shape[1]], prompt_ids):
                out = out[:, prompt_ids.shape[1] :]
        return out

    def decode(self, token_ids) -> list[str]:
        return [c.strip() for c in self.processor.batch_decode(token_ids, skip_special_tokens=True)]


def auto_batch_size(device: str) -> int:
    """``--batch-size auto``: the cap on CUDA (lowered on out-of-memory), small on CPU."""
    return AUTO_BATCH_CUDA if device.startswith("cuda") else AUTO_BATCH_CPU


def _out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc)


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def hub_revision(model: str) -> str | None:
    """The hub commit a run of ``model`` captions with, so that every model replica of it
    (each Ray actor, on any machine) loads the same weights and its records can say which:
    the one this machine's Hugging Face cache holds for ``main``, else the hub's newest
    (asked once); ``None`` for a local directory or the tiny model, or when neither says."""
    path = resolve_model_path(model)
    if Path(path).exists():
        return None
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(path, "config.json")
    except HFValidationError:
        return None
    if isinstance(cached, str):
        return Path(cached).parent.name  # …/snapshots/<commit>/config.json
    if _hub_offline() or not hub_reachable():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(path, timeout=10).sha
    except Exception:  # noqa: BLE001 - the hub did not say: loading says why, if it fails
        return None


def _weights_errors() -> tuple[type[Exception], ...]:
    """What reading damaged weights raises beside ``OSError``: safetensors' own error, an
    ``Exception`` only (a checkpoint cut short by a full disk or a copy stopped part-way:
    "Error while deserializing header: invalid header length")."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # (a safetensors too old to export it)
        return ()
    return (SafetensorError,)


def pinned(settings: ModelSettings) -> ModelSettings:
    """``settings`` with the hub commit its run captions with (``hub_revision``), unless it
    names one already."""
    if settings.revision is not None:
        return settings
    return replace(settings, revision=hub_revision(settings.model))


def ensure_loadable(model: str, path: str, revision: str | None = None) -> bool:
    """Fail fast, in one line, when the model cannot be had; True when it loads offline.

    A local directory must hold a ``config.json``. A hub id loads from the cache when it
    (at ``revision``, if given) is there (no network touched); otherwise the hub must
    answer within seconds, rather than the minutes of retries ``from_pretrained`` would
    spend before failing.
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
        cached = try_to_load_from_cache(path, "config.json", revision=revision)
    except HFValidationError:
        raise ModelLoadError(
            f"cannot load model {model!r}: no such directory, and not a hub id (owner/name)"
        ) from None
    if isinstance(cached, str):
        return True
    if _hub_offline() or not hub_reachable():
        raise ModelLoadError(load_error_message(model, None, revision))
    return False


def _hub_offline() -> bool:
    """Has the user told Hugging Face to stay offline (``HF_HUB_OFFLINE``)?"""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_error_message(model: str, exc: BaseException | None, revision: str | None = None) -> str:
    if model == "tiny":
        return f"cannot load the bundled tiny model from {CHECKPOINT_DIR}: {exc}"
    if Path(model).exists():
        first_line = str(exc).strip().splitlines()[0][:200] if exc else "unknown error"
        return (
            f"cannot load model from {model!r}: not a BLIP-2 checkpoint, or a damaged one "
            f"({first_line})"
        )
    if revision:  # (a Ray run's actors load the commit the driver's machine holds)
        return (
            f"cannot load model {model!r} at revision {revision} (the one this run captions "
            f"with): it is not in this machine's Hugging Face cache and the hub is not "
            f"reachable; download it once where there is network (hf download "
            f"{model} --revision {revision})"
        )
    return (
        f"cannot load model {model!r}: it is not in the local Hugging Face cache and the hub "
        f"is not reachable; download it once where there is network (hf download "
        f"{model or DEFAULT_MODEL} --local-dir /path/to/blip2) and pass --model /path/to/blip2 "
        f"(a server: VIDCAP_MODEL=/path/to/blip2)"
    )
