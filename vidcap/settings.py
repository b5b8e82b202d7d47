"""One settings dataclass per component; defaults live here and nowhere else."""

from __future__ import annotations

import decimal
import functools
import math
import numbers
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, fields

from vidcap.errors import SettingError, UsageError
from vidcap.wording import flags_that

DEFAULT_MODEL = "Salesforce/blip2-opt-2.7b"
THUMB_HEIGHT = 160  # pixels: the thumbnails `vidcap caption` writes for its report page
DEVICES_HELP = "auto, cpu, cuda, cuda:N, cuda:all, or several separated by commas (cuda:0,cuda:1)"
DTYPES = ("auto", "float16", "bfloat16", "float32")

MAX_NEW_TOKENS_LIMIT = 128
NUM_BEAMS_LIMIT = 8
PROMPT_CHARS_LIMIT = 500


DECODE_MODES = ("exact", "all")
"""``exact``: the frames decoding everything would give, decoding only what the samples
need (see ``vidcap.video``); ``all``: decode every frame."""


def canonical_model(name: str) -> str:
    """A model as runs name it (their key, records, a server's info answer): a local
    checkpoint folder by its absolute path — ``./ck`` and ``/data/ck`` are one model, ``ck``
    in two working directories two (by its spelling, the second resumed the first's
    captions); ``tiny`` and hub ids as given."""
    if name == "tiny":
        return name
    path = os.path.expanduser(name)
    return os.path.realpath(path) if os.path.isdir(path) else name


def check_field_types(settings: object) -> None:
    """Each field of the frozen dataclass ``settings`` of its declared kind, made the plain
    Python value (a NumPy integer an ``int``, ``20.0`` for a whole number ``20``, a
    ``Decimal`` a ``float``, a path a ``str``: what is sent on as JSON to a decoder process
    must be one), or a ``UsageError`` naming it: a library caller's ``every_n=1.5`` or
    ``fps="2"`` (a server's request, from JSON) is one clear line here, not a TypeError
    deep in decoding. A ``bool`` is no number."""
    for name, kinds in _field_types(type(settings)).items():
        value = getattr(settings, name)
        plain = _plain(value, kinds)
        if plain is _REFUSED:
            wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds)
            raise UsageError(f"{type(settings).__name__}.{name} must be {wanted}, got {value!r}")
        if plain is not value:
            object.__setattr__(settings, name, plain)


_REFUSED = object()
_KIND_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
               type(None): "None"}  # fmt: skip


def _plain(value: object, kinds: tuple[type, ...]) -> object:
    """``value`` as the first of ``kinds`` that takes it (``_REFUSED``: none does)."""
    if value is None:
        return None if type(None) in kinds else _REFUSED
    if isinstance(value, bool):
        return value if bool in kinds else _REFUSED
    for kind in kinds:
        if kind is str and isinstance(value, str | os.PathLike):
            return value if isinstance(value, str) else os.fspath(value)
        if kind is int and isinstance(value, numbers.Integral):
            return value if type(value) is int else int(value)
        if kind is int and _whole(value):
            return int(value)  # (20.0 tokens: 20)
        if kind is float and isinstance(value, numbers.Real | decimal.Decimal):
            return value if type(value) in (int, float) else float(value)
    return _REFUSED


def _whole(value: object) -> bool:
    """A float or Decimal that is a whole number (not inf, not NaN)."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, decimal.Decimal) and value.is_finite() and value == int(value)


@functools.cache
def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """A dataclass's simple field types (``int``, ``float | None``…); fields of other types
    (containers, classes) are left out."""
    hints = typing.get_type_hints(cls)
    found: dict[str, tuple[type, ...]] = {}
    simple = (int, float, str, bool, type(None))
    for field in fields(cls):
        hint = hints[field.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if all(part in simple for part in parts):
            found[field.name] = tuple(parts)
    return found


def joined_precisions(*parts: str) -> str:
    """The precision of captions made in each of ``parts`` (``float16``, or several
    comma-separated): their names joined, sorted and once each; ``""`` (unknown) where any
    part is unknown (``""``: a server that does not say, a journal older than the field)."""
    if not all(parts):
        return ""
    return ",".join(sorted({name for part in parts for name in part.split(",")}))


SCENE_DETECTORS = ("content", "adaptive", "hash", "histogram")
"""PySceneDetect's ContentDetector (the default), AdaptiveDetector, HashDetector,
HistogramDetector (``vidcap.scenes``)."""
# PySceneDetect's own threshold of each detector (``vidcap.scenes.make_detector`` leaves it
# to the detector): a --scene-threshold equal to it is no setting of its own.
SCENE_THRESHOLDS = {"content": 27.0, "adaptive": 3.0, "hash": 0.35, "histogram": 0.2}
MAX_SCENE_FRAMES = 100
# Detectors whose threshold is a relative difference, 0 to 1 (PySceneDetect's HashDetector
# and HistogramDetector): above 1 no cut is ever found.
RELATIVE_DETECTORS = ("hash", "histogram")
MAX_SKIP_DISTANCE = 64


@dataclass(frozen=True)
class SamplingSettings:
    """Which frames of a video are captioned, and how much of it is decoded to find them.

    ``fps``: sample at this rate of presentation time (default 1 frame/s);
    ``every_n``: instead take every N-th frame; ``keyframes``: instead take every
    keyframe; ``max_frames``: stop after M; ``mode``: one of ``DECODE_MODES``.

    ``skip_similar``: a sample within this many bits (dHash) of the video's last captioned
    sample reuses its caption (``vidcap.similar``); None: off. ``scenes``: find shots with
    PySceneDetect's ``scene_detector`` (``scene_threshold``: None for its default) in a
    decode of every frame, and sample inside each shot: ``scene_frames`` evenly spaced
    frames, or (None) the ``fps``/``every_n`` grid started again at each shot
    (``vidcap.scenes``).

    ``thumb_height``: the decoder also makes a JPEG thumbnail this many pixels high of each
    sample, upright and display-shaped (``OUT/thumbs/<name>/``); None: none. What the
    decoder hands out, not what is captioned: it does not key the outputs.
    """

    fps: float | None = 1.0
    every_n: int | None = None
    max_frames: int | None = None
    keyframes: bool = False
    mode: str = "exact"
    skip_similar: int | None = None
    scenes: bool = False
    scene_detector: str = "content"
    scene_threshold: float | None = None
    scene_frames: int | None = None
    thumb_height: int | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.thumb_height is not None and not 16 <= self.thumb_height <= 2160:
            raise UsageError(f"thumb_height must be between 16 and 2160, got {self.thumb_height}")
        if self.every_n is not None and self.every_n < 1:
            raise UsageError(f"--every-n must be a whole number >= 1, got {self.every_n}")
        if self.every_n is None and (
            self.fps is None or not self.fps > 0 or not math.isfinite(self.fps)
        ):
            raise UsageError(f"--fps must be a number > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be >= 1, got {self.max_frames}")
        if self.keyframes and self.every_n is not None:
            raise UsageError(
                "--keyframes takes every keyframe; it cannot be combined with --every-n"
            )
        if self.mode not in DECODE_MODES:
            raise UsageError(
                f"unknown decode mode {self.mode!r}; supported values are {', '.join(DECODE_MODES)}"
            )
        if self.skip_similar is not None and not 0 <= self.skip_similar <= MAX_SKIP_DISTANCE:
            raise UsageError(
                f"--skip-similar takes a distance in bits from 0 to {MAX_SKIP_DISTANCE}, "
                f"got {self.skip_similar}"
            )
        self._check_scenes()

    def _check_scenes(self) -> None:
        if self.scene_detector not in SCENE_DETECTORS:
            raise UsageError(
                f"unknown --scene-detector {self.scene_detector!r}; supported values are "
                f"{', '.join(SCENE_DETECTORS)}"
            )
        if self.scene_threshold is not None and not (
            self.scene_threshold > 0 and math.isfinite(self.scene_threshold)
        ):
            raise UsageError(f"--scene-threshold must be a number > 0, got {self.scene_threshold}")
        if (
            self.scene_threshold is not None
            and self.scene_detector in RELATIVE_DETECTORS
            and self.scene_threshold > 1
        ):
            raise UsageError(
                f"--scene-threshold of --scene-detector {self.scene_detector} is a relative "
                f"difference, from 0 to 1; got {self.scene_threshold}"
            )
        if self.scene_frames is not None and not 1 <= self.scene_frames <= MAX_SCENE_FRAMES:
            raise UsageError(
                f"--scene-frames must be from 1 to {MAX_SCENE_FRAMES}, got {self.scene_frames}"
            )
        if not self.scenes:
            given = [
                flag
                for flag, value in (
                    ("--scene-detector", self.scene_detector != "content"),
                    ("--scene-threshold", self.scene_threshold is not None),
                    ("--scene-frames", self.scene_frames is not None),
                )
                if value
            ]
            if given:
                raise UsageError(f"{flags_that(given, 'needs', 'need')} --scenes")
            return
        if self.keyframes:
            raise UsageError(
                "--scenes decodes every frame to find the shots, --keyframes only keyframes: "
                "give --scene-frames N (frames per shot) or --fps/--every-n (within each shot)"
            )
        if self.max_frames is not None:
            raise UsageError("--max-frames cannot be used with --scenes: scenes cover whole videos")
        if self.scene_frames is not None and self.every_n is not None:
            raise UsageError("--scene-frames and --every-n cannot be used together: give one")

    def key_fields(self) -> dict:
        """The settings as they key outputs (``RunSettings.key``): the fields added for
        scenes and near-duplicates only where set, so a folder written before they existed
        resumes with nothing redone; what makes no difference to the captions left as its
        default (the decode mode with ``scenes``, which decode every frame; a threshold
        given as the detector's own)."""
        data = asdict(self)
        del data["thumb_height"]  # thumbnails are not captions: any setting resumes
        if self.scenes:
            data["mode"] = SamplingSettings.mode
        if self.scene_threshold == SCENE_THRESHOLDS[self.scene_detector]:
            data["scene_threshold"] = None
        for name in _LATER_FIELDS:
            if data[name] == getattr(SamplingSettings, name):
                del data[name]
        return data


_LATER_FIELDS = ("skip_similar", "scenes", "scene_detector", "scene_threshold", "scene_frames")


@dataclass(frozen=True)
class ModelSettings:
    """Which model to load, where, and how many frames per forward pass.

    ``device``: one device, or several separated by commas (one model replica each, e.g.
    ``cuda:0,cuda:1``; ``cuda:all`` for every visible GPU); ``batch_size``: frames per
    forward pass, ``None`` for auto (see ``vidcap.model.auto_batch_size``); ``revision``:
    the hub commit to load (``vidcap.model.hub_revision``), ``None`` for the cache's or the
    hub's newest (and for a local directory).
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        for device in self.device.split(","):
            if not re.fullmatch(r"auto|cpu|cuda(:\d+|:all)?", device.strip()):
                raise UsageError(f"unknown device {device!r}; supported values are {DEVICES_HELP}")
        if self.dtype not in DTYPES:
            raise UsageError(
                f"unknown dtype {self.dtype!r}; supported values are {', '.join(DTYPES)}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(
                f"--batch-size must be 'auto' or a whole number >= 1, got {self.batch_size}"
            )


@dataclass(frozen=True)
class GenerationSettings:
    """How captions are generated. Validated here, for the CLI and for every server."""

    prompt: str | None = None
    max_new_tokens: int = 30
    num_beams: int = 1

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.prompt == "":  # no prompt, as the model and the wire take it: one settings key
            object.__setattr__(self, "prompt", None)
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise SettingError(
                "--max-new-tokens",
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, "
                f"got {self.max_new_tokens}",
            )
        if not 1 <= self.num_beams <= NUM_BEAMS_LIMIT:
            raise SettingError(
                "--num-beams",
                f"num_beams must be between 1 and {NUM_BEAMS_LIMIT}, got {self.num_beams}",
            )
        if self.prompt is not None and len(self.prompt) > PROMPT_CHARS_LIMIT:
            raise SettingError("--prompt", f"prompt is longer than {PROMPT_CHARS_LIMIT} characters")


def question_prompt(question: str) -> str:
    """BLIP-2's visual-question form, ``Question: … Answer:``; a question that is empty or
    makes a prompt over ``PROMPT_CHARS_LIMIT`` is refused, naming ``--question``."""
    if not question.strip():
        raise UsageError("--question must not be empty")
    prompt = f"Question: {question.strip()} Answer:"
    if len(prompt) > PROMPT_CHARS_LIMIT:
        most = PROMPT_CHARS_LIMIT - len(prompt) + len(question.strip())
        raise UsageError(f"--question is longer than {most} characters")
    return prompt


@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs: decoder processes, and frames that may wait between stages.

    ``decode_workers``: decoder processes (default: one per CPU core);
    ``queue_mib``: memory that decoded frames waiting for the backend may take (at the
    model's input size: 256 MiB holds about 1,700 BLIP-2 frames of 224×224);
    ``decode_timeout``: seconds a decoder may send nothing (opening, downloading, decoding
    up to the next sample) before its video fails as stalled.
    """

    decode_workers: int | None = None
    queue_mib: int = 256
    decode_timeout: float = 600.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.decode_workers is not None and self.decode_workers < 1:
            raise UsageError(
                f"--decode-workers must be a whole number >= 1, got {self.decode_workers}"
            )
        if not self.decode_timeout > 0:
            raise UsageError(
                f"--decode-timeout must be a number of seconds > 0, got {self.decode_timeout}"
            )
        if self.queue_mib < 1:
            raise UsageError(f"queue_mib must be >= 1, got {self.queue_mib}")

    def workers(self) -> int:
        return self.decode_workers or max(1, os.cpu_count() or 1)

    def queue_frames(self, size: tuple[int, int], batch_size: int) -> int:
        """Frames the queue holds: the memory budget, and never less than two batches."""
        return max(2 * batch_size, (self.queue_mib << 20) // (size[0] * size[1] * 3))
