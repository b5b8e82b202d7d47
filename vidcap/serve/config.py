"""Server settings: one dataclass, defaults taken from the library's own dataclasses, and
the one place where ``VIDCAP_<KEY>`` environment variables are read (both servers).

The Flask entry point calls ``ServeConfig.from_sources({}, os.environ)``; the TorchServe
handler passes the ``handler:`` section of ``model-config.yaml`` as ``section``, which
the environment overrides.
"""

from __future__ import annotations

import logging
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields

from vidcap.errors import UsageError, VidcapError
from vidcap.settings import DTYPES, GenerationSettings, ModelSettings, canonical_model
from vidcap.wire import FULL_HD_PIXELS, SETTING_FIELDS, WireLimits

log = logging.getLogger(__name__)

ENV_PREFIX = "VIDCAP_"
# ``VIDCAP_*`` variables that are not server settings: a shared environment may set them.
OTHER_VARIABLES = frozenset({"VIDCAP_TOKEN", "VIDCAP_PYTHON", "VIDCAP_FIFTYONE_PYTHON"})
LOG_LEVELS = tuple(logging.getLevelNamesMapping())  # (DEBUG, INFO, WARN, WARNING, …)
# Keys of the ``handler:`` section that TorchServe itself reads (``profile``: @timed).
TORCHSERVE_KEYS = frozenset({"profile"})
# Old names still understood, so an existing deployment keeps its setting.
ALIASES = {"max_chunk": "max_batch"}

_MODEL = ModelSettings()
_GENERATION = GenerationSettings()
_LIMITS = WireLimits()


@dataclass(frozen=True)
class ServeConfig:
    """What a caption server runs and accepts. Every default comes from elsewhere.

    ``max_batch``: most frames per model call (Flask micro-batches and TorchServe
    batches alike), ``None`` (``auto``) for the captioner's own batch size; ``max_delay_ms``: how long the Flask batcher waits for company;
    ``max_queue``: frames that may wait for the model before requests get 503;
    ``max_frames``/``max_pixels``: per request and per frame; ``max_request_pixels``: all
    frames of a request together, from their headers, before any is decoded (``auto``:
    ``max_frames`` 1080p frames); ``max_decoders``: requests decoding a frame at once
    (``auto``: the CPU count); ``max_request_mb``: body size; ``max_parts``: multipart
    parts per request (``auto``: ``max_frames`` + the 3 setting fields), counted while
    the body arrives; ``max_bodies_mb``: request bodies held in memory at once, all
    requests together (``auto``: 4 × ``max_request_mb``; past it 503); ``read_timeout``:
    seconds a client may take to send a whole request, headers and body, counted from
    its first byte, before it gets 408; ``max_connections``: open connections per
    server (past it the slowest client still sending is closed); ``request_timeout``: seconds a
    request may wait for the model; ``batch_allowance``: seconds one batch may take on
    the model before the TorchServe gate, seeing no answer, says 503 (after TorchServe's
    maxBatchDelay; ``vidcap.serve.gate``); ``prompt``/``max_new_tokens``/``num_beams``:
    generation defaults for requests that send none.
    """

    model: str = _MODEL.model
    device: str = _MODEL.device
    dtype: str = _MODEL.dtype
    max_batch: int | None = _MODEL.batch_size
    max_delay_ms: float = 10.0
    max_queue: int = 512
    max_frames: int = _LIMITS.max_frames
    max_pixels: int = _LIMITS.max_pixels
    max_request_pixels: int | None = None
    max_decoders: int | None = None
    max_request_mb: float = 64.0
    max_parts: int | None = None
    max_bodies_mb: float | None = None
    read_timeout: float = 30.0
    max_connections: int = 1000
    request_timeout: float = 600.0
    batch_allowance: float = 60.0
    prompt: str = ""
    max_new_tokens: int = _GENERATION.max_new_tokens
    num_beams: int = _GENERATION.num_beams
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        # (a local folder by its absolute path: the name clients key their outputs by)
        object.__setattr__(self, "model", canonical_model(self.model))
        if self.dtype not in DTYPES:
            raise UsageError(
                f"unknown dtype {self.dtype!r}; supported values are {', '.join(DTYPES)}"
            )
        for name in (
            "max_batch",
            "max_queue",
            "max_frames",
            "max_pixels",
            "max_request_pixels",
            "max_decoders",
            "max_parts",
            "max_connections",
        ):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"{_env(name)} must be >= 1, got {getattr(self, name)}")
        if self.max_bodies_mb is not None and not self.max_bodies_mb >= self.max_request_mb:
            raise UsageError(
                f"{_env('max_bodies_mb')} must be at least {_env('max_request_mb')} "
                f"({self.max_request_mb:g}), got {self.max_bodies_mb:g}"
            )
        for name in ("max_request_mb", "read_timeout", "request_timeout", "batch_allowance"):
            if not getattr(self, name) > 0:
                raise UsageError(f"{_env(name)} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.max_delay_ms <= 10_000:
            raise UsageError(
                f"{_env('max_delay_ms')} must be between 0 and 10000, got {self.max_delay_ms}"
            )
        if self.max_parts is not None and self.max_parts < self.max_frames + len(SETTING_FIELDS):
            raise UsageError(
                f"{_env('max_parts')} must be at least {_env('max_frames')} + "
                f"{len(SETTING_FIELDS)} ({self.max_frames + len(SETTING_FIELDS)}: a full "
                f"request's frames and its setting fields), got {self.max_parts}"
            )
        level = self.log_level.strip().upper()
        if level not in LOG_LEVELS:
            raise UsageError(
                f"{_env('log_level')} must be one of {', '.join(LOG_LEVELS)}, "
                f"got {self.log_level!r:.40}"
            )
        object.__setattr__(self, "log_level", level)
        self.model_settings()  # validates device
        self.generation_defaults()  # validates prompt, max_new_tokens, num_beams

    @classmethod
    def from_sources(cls, section: Mapping[str, object], env: Mapping[str, str]) -> ServeConfig:
        """``section`` (e.g. from YAML) overridden by ``VIDCAP_<KEY>`` variables in ``env``."""
        known = [f.name for f in fields(cls)]
        section = {ALIASES.get(k, k): v for k, v in section.items()}
        unknown = sorted(set(section) - set(known) - TORCHSERVE_KEYS)
        if unknown:
            raise UsageError(
                f"unknown server {'setting' if len(unknown) == 1 else 'settings'} "
                f"{', '.join(unknown)}; "
                f"supported keys are {', '.join(known)}"
            )
        hints = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        for name in known:
            raw: object = section.get(name)
            for key in (name, *(old for old, new in ALIASES.items() if new == name)):
                if env.get(_env(key), "").strip():
                    raw = env[_env(key)].strip()
                    break
            if raw is not None:
                values[name] = _convert(name, raw, hints[name])
        return cls(**values)  # type: ignore[arg-type]

    def model_settings(self, device: str | None = None) -> ModelSettings:
        """The captioner to load; CPU always runs float32."""
        device = device or self.device
        dtype = "float32" if device == "cpu" else self.dtype
        return ModelSettings(
            model=self.model, device=device, dtype=dtype, batch_size=self.max_batch
        )

    def limits(self) -> WireLimits:
        total = self.max_request_pixels or self.max_frames * FULL_HD_PIXELS
        return WireLimits(
            max_frames=self.max_frames, max_pixels=self.max_pixels, max_total_pixels=total
        )

    def decoders(self) -> int:
        """How many requests may decode a frame at once (``max_decoders``, else CPUs)."""
        return self.max_decoders or os.cpu_count() or 1

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def max_body_parts(self) -> int:
        """Multipart parts per request: ``max_parts``, else a full pre-batch and its settings."""
        return self.max_parts or self.max_frames + len(SETTING_FIELDS)

    @property
    def max_bodies_bytes(self) -> int:
        """Request body bytes held at once across requests (``max_bodies_mb``, else 4 bodies)."""
        return int((self.max_bodies_mb or 4 * self.max_request_mb) * 2**20)

    def generation_defaults(self) -> GenerationSettings:
        try:
            return GenerationSettings(
                prompt=self.prompt or None,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.num_beams,
            )
        except UsageError as exc:
            raise UsageError(f"server setting: {exc}") from None


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _convert(name: str, raw: object, kind: object) -> object:
    if kind in (int | None, float | None):
        if str(raw).strip().lower() in ("", "auto", "none"):
            return None
        kind = int if kind == int | None else float
    if kind in (int, float):
        # ASCII only: int() and float() would take "٣٠", "3_0", "1e400" or "inf"
        pattern = _INTEGER if kind is int else _DECIMAL
        if isinstance(raw, bool) or not pattern.fullmatch(str(raw).strip()):
            what = "a whole number" if kind is int else "a number"
            raise UsageError(f"{_env(name)} must be {what}, got {raw!r:.40}")
        value = kind(str(raw).strip())  # type: ignore[operator]
        if not math.isfinite(value):
            raise UsageError(f"{_env(name)} is out of range, got {raw!r:.40}")
        return value
    return str(raw)


_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """``VIDCAP_*`` variables of ``env`` that name no server setting (a misspelt one is
    otherwise ignored), each with the setting it may have meant."""
    import difflib

    known = [_env(f.name) for f in fields(ServeConfig)] + [_env(old) for old in ALIASES]
    said = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known and name not in OTHER_VARIABLES:
            near = difflib.get_close_matches(name, known, n=1)
            said.append(
                f"{name} is no server setting" + (f" (did you mean {near[0]}?)" if near else "")
            )
    return said


def handler_section(path: str) -> Mapping[str, object]:
    """The ``handler:`` section of a ``model-config.yaml`` (safe YAML), as TorchServe hands
    it to the handler; ``UsageError`` naming the file where it cannot be read."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: {str(exc).splitlines()[0]}") from None
    document = document or {}  # (an empty file: no settings)
    if not isinstance(document, dict):  # (TorchServe reads the file as a mapping)
        raise UsageError(f"{path}: must be a mapping of sections (handler:, minWorkers: …)")
    section = document.get("handler") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{path}: its handler: section must be a mapping of settings")
    return section


def main(argv: list[str] | None = None) -> int:
    """``python -m vidcap.serve.config [PROGRAM] [--section YAML] [--model] [--device]``:
    check the ``VIDCAP_*`` environment (over a ``model-config.yaml``'s ``handler:``
    section) before a server starts; with ``--model``, that the model can be loaded (no
    download: a hub id not cached with the hub unreachable is refused), with ``--device``
    that its device is here. A mistake is one line, begun as the asking script's own are
    (``start.sh: …``; without PROGRAM, ``error: …``, a warning ``vidcap: warning: …``), exit 2; a ``VIDCAP_*`` variable that
    is no setting is warned about."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m vidcap.serve.config")
    parser.add_argument("program", nargs="?")
    parser.add_argument("--section", metavar="YAML")
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--device", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for line in unknown_variables(os.environ):
        print(f"{args.program or 'vidcap'}: warning: {line}; ignored", file=sys.stderr)
    try:
        section = handler_section(args.section) if args.section else {}
        config = ServeConfig.from_sources(section, os.environ)
        if args.model:
            from vidcap.model import ensure_loadable, resolve_model_path

            ensure_loadable(config.model, resolve_model_path(config.model))
        if args.device and config.device not in ("auto", "cpu"):  # (those are always here)
            from vidcap.model import pick_device

            pick_device(config.device)
    except VidcapError as exc:
        print(f"{args.program or 'error'}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
