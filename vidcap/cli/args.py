"""Flags → settings: every argument group of the CLI and the settings it maps to.

Each ``add_*_arguments(parser)`` adds one group, its defaults read from the settings
dataclass it feeds; each ``*_from_args(args)`` maps the parsed flags onto that dataclass's
constructor, which validates them (``vidcap.settings``). Only what no one dataclass can
see is checked here: flags that exclude each other, and a ``--ray`` that took an input
for its address. The ``--server`` group lives in ``vidcap.client`` (shared with clients/).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vidcap.backend import Backend, EmbeddedBackend, load_replicas
from vidcap.cli.parser import nonempty
from vidcap.cli.remote import add_client_arguments
from vidcap.errors import UsageError
from vidcap.inputs import LIST_SUFFIXES
from vidcap.jobs import RunSettings, split_formats
from vidcap.model import AUTO_BATCH_CPU, AUTO_BATCH_CUDA, model_input_size
from vidcap.parquet import DEFAULT_SHARD_ROWS
from vidcap.ray import RaySettings
from vidcap.settings import (
    DECODE_MODES,
    DEVICES_HELP,
    DTYPES,
    SCENE_DETECTORS,
    SCENE_THRESHOLDS,
    THUMB_HEIGHT,
    EngineSettings,
    GenerationSettings,
    ModelSettings,
    SamplingSettings,
    canonical_model,
)
from vidcap.similar import DEFAULT_DISTANCE
from vidcap.video import VIDEO_EXTENSIONS
from vidcap.wording import flags_that


def model_arg(value: str) -> str:
    """``--model``: ``canonical_model``, an empty name refused (it failed as a checkpoint
    that cannot load, exit 1)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "an empty model name (an unset shell variable?); give a hub id, a folder or tiny"
        )
    return canonical_model(value)


# ---- run: what to write --------------------------------------------------------------------


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--format`` and ``--quiet`` of ``vidcap caption``."""
    parser.add_argument(
        "--out",
        required=True,
        type=nonempty,
        help="output folder, or an fsspec URL (s3://…, gs://…)",
    )
    parser.add_argument(
        "--format",
        default=",".join(RunSettings.formats),
        help="comma-separated: jsonl, srt, vtt, parquet (one row per frame, in shards) "
        "(default %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or final line")
    parser.add_argument(
        "--no-thumbs",
        action="store_true",
        help=f"write no thumbnails (default: a {THUMB_HEIGHT} px high JPEG of each sampled frame, "
        "upright and display-shaped, in OUT/thumbs/<name>/, for the folder's index.html)",
    )


def formats_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """``--format a,b``: the names (checked by ``RunSettings``)."""
    return split_formats(args.format)


def run_settings_from_args(args: argparse.Namespace, out_dir: Path) -> RunSettings:
    """What a ``vidcap caption`` run writes into ``out_dir`` (the local folder)."""
    return RunSettings(
        out_dir=out_dir,
        formats=formats_from_args(args),
        sampling=sampling_from_args(args),
        generation=generation_from_args(args),
        model=args.model,
        quiet=args.quiet,
    )


# ---- frame sampling ----------------------------------------------------------------------


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = SamplingSettings()
    group = parser.add_argument_group("frame sampling")
    group.add_argument(
        "--fps",
        type=float,
        default=None,  # None: not given (it excludes --every-n and --keyframes)
        help="frames per second of video to caption: the first frame at or after each tick, "
        f"at its true timestamp (default {sampling.fps})",
    )
    group.add_argument(
        "--every-n",
        type=int,
        default=sampling.every_n,
        metavar="N",
        help="caption every N-th frame instead (not with --fps)",
    )
    group.add_argument(
        "--keyframes",
        action="store_true",
        help="caption every keyframe instead, at its true timestamp: the cheapest to decode, "
        "spaced as the encoder chose (often 2-10 s)",
    )
    group.add_argument(
        "--max-frames",
        type=int,
        default=sampling.max_frames,
        metavar="M",
        help="stop each video after M sampled frames",
    )
    group.add_argument(
        "--decode-mode",
        default=sampling.mode,
        choices=DECODE_MODES,
        help=f"default {sampling.mode}. exact: the frames decoding everything gives, decoding "
        "only what they need (reference frames, the frames ticks take, nothing after a "
        "keyframe group's last needed frame); all: decode every frame",
    )


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """``--skip-similar`` and ``--scenes`` (``vidcap caption``; docs/scenes.md)."""
    sampling = SamplingSettings()
    group = parser.add_argument_group("scenes and near-duplicates (docs/scenes.md)")
    group.add_argument(
        "--skip-similar",
        nargs="?",
        const=str(DEFAULT_DISTANCE),
        default=None,
        metavar="D",
        help="a sample within D bits (a 64-bit dHash, and the same mean colour) of the "
        "video's last captioned sample reuses its caption instead of calling the model; "
        f'its row says "same_as" (D default {DEFAULT_DISTANCE}; write --skip-similar=D)',
    )
    group.add_argument(
        "--scenes",
        action="store_true",
        help="find shots with PySceneDetect (every frame is decoded) and caption inside each: "
        "<name>.scenes.jsonl, and SRT/VTT cues per scene",
    )
    group.add_argument(
        "--scene-detector",
        default=sampling.scene_detector,
        choices=SCENE_DETECTORS,
        help="PySceneDetect detector (default %(default)s: ContentDetector)",
    )
    group.add_argument(
        "--scene-threshold",
        type=float,
        default=sampling.scene_threshold,
        metavar="T",
        help="the detector's threshold (default: PySceneDetect's, "
        + ", ".join(f"{t:g} for {name}" for name, t in SCENE_THRESHOLDS.items())
        + ")",
    )
    group.add_argument(
        "--scene-frames",
        type=int,
        default=sampling.scene_frames,
        metavar="N",
        help="frames captioned per scene, evenly spaced (default 1: the middle frame); "
        "--fps/--every-n instead sample within each scene",
    )


def sampling_from_args(args: argparse.Namespace) -> SamplingSettings:
    """``--fps``, ``--every-n`` and ``--keyframes`` each choose the frames: one at a time.

    With ``--scenes`` and neither ``--fps`` nor ``--every-n``: ``--scene-frames`` (1)."""
    chosen = [
        flag
        for flag, given in (
            ("--fps", args.fps is not None),
            ("--every-n", args.every_n is not None),
            ("--keyframes", args.keyframes),
        )
        if given
    ]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be used together: give one of them")
    scenes = getattr(args, "scenes", False)
    scene_frames = getattr(args, "scene_frames", None)
    if scenes and scene_frames is not None and chosen and chosen[0] != "--keyframes":
        raise UsageError(
            f"--scene-frames and {chosen[0]} cannot be used together: give one (frames per "
            f"scene, or {chosen[0]} within each scene)"
        )
    if scenes and not chosen and scene_frames is None:
        scene_frames = 1
    return SamplingSettings(
        fps=args.fps if args.fps is not None else SamplingSettings.fps,
        every_n=args.every_n,
        max_frames=args.max_frames,
        keyframes=args.keyframes,
        mode=args.decode_mode,
        skip_similar=_skip_distance(getattr(args, "skip_similar", None)),
        scenes=scenes,
        scene_detector=getattr(args, "scene_detector", SamplingSettings.scene_detector),
        scene_threshold=getattr(args, "scene_threshold", None),
        scene_frames=scene_frames,
        # (only `vidcap caption` has --no-thumbs: mask and the clients write no thumbnails)
        thumb_height=None if getattr(args, "no_thumbs", True) else THUMB_HEIGHT,
    )


def _skip_distance(value: str | None) -> int | None:
    """``--skip-similar``'s D; a value that is no number is an input it swallowed."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(
            f"--skip-similar took {value!r} as its distance D; put --skip-similar after the "
            "inputs or write --skip-similar=D"
        ) from None


# ---- model and generation (and --server, from vidcap.client) -------------------------------


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = ModelSettings()
    generation = GenerationSettings()
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        type=model_arg,  # (a local folder by its absolute path)
        default=model.model,
        help=f"hub id, local directory, or 'tiny' (default {model.model})",
    )
    group.add_argument(
        "--device",
        default=model.device,
        help=f"{DEVICES_HELP}; one model replica per device, all fed from one frame queue "
        f"(default {model.device}: CUDA if present)",
    )
    group.add_argument(
        "--dtype",
        default=model.dtype,
        choices=DTYPES,
        help=f"default {model.dtype}: float16 on CUDA, float32 on CPU",
    )
    group.add_argument(
        "--batch-size",
        type=_batch_size,
        default=model.batch_size,
        metavar="N|auto",
        help=f"frames per forward pass, taken across videos (default auto: {AUTO_BATCH_CUDA} on "
        f"CUDA, halved whenever it runs out of GPU memory so it settles at the largest that "
        f"fits; {AUTO_BATCH_CPU} on CPU)",
    )
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=generation.max_new_tokens,
        help=f"caption length limit in tokens (default {generation.max_new_tokens})",
    )
    group.add_argument(
        "--num-beams",
        type=int,
        default=generation.num_beams,
        help=f"beam search width (default {generation.num_beams}: greedy)",
    )
    group.add_argument(
        "--prompt",
        default=generation.prompt,
        help="text the caption continues, e.g. 'Question: … Answer:'",
    )
    add_client_arguments(parser)


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number, got {value!r}"
        ) from None


def column_name(value: str) -> str:
    """``--path-column``: a list file's column name, as its header spells it."""
    if not value.strip() or "\0" in value:
        raise argparse.ArgumentTypeError("expected a column name, as the list's header spells it")
    return value


def model_settings_from_args(args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(
        model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )


def generation_from_args(args: argparse.Namespace, prompt: str | None = None) -> GenerationSettings:
    return GenerationSettings(
        prompt=prompt if prompt is not None else args.prompt,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )


def backend_from_args(args: argparse.Namespace, model: ModelSettings | None = None) -> Backend:
    """Remote servers when ``--server`` is given, else the model in this process.

    ``model``: the settings ``model_settings_from_args`` gave, when the caller has them.
    """
    if args.server:
        from vidcap.cli.remote import backend_from_args as remote_backend

        backend = remote_backend(args, model_input_size(args.model))
        if backend is not None:
            return backend
    return EmbeddedBackend(load_replicas(model or model_settings_from_args(args)))


# ---- engine --------------------------------------------------------------------------------


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    engine = EngineSettings()
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--decode-workers",
        type=int,
        default=engine.decode_workers,
        metavar="N",
        help="decoder processes, each decoding one video at a time (default: one per CPU core)",
    )
    group.add_argument(
        "--decode-timeout",
        type=float,
        default=engine.decode_timeout,
        metavar="SECONDS",
        help="fail a video whose decoder sends nothing for this long: a hung download or "
        "decoder (default %(default)g)",
    )


def engine_from_args(args: argparse.Namespace) -> EngineSettings:
    return EngineSettings(decode_workers=args.decode_workers, decode_timeout=args.decode_timeout)


# ---- Parquet -------------------------------------------------------------------------------


def add_parquet_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=DEFAULT_SHARD_ROWS,
        metavar="N",
        help=f"--format parquet: rows (frames) per shard (default {DEFAULT_SHARD_ROWS})",
    )


# ---- Ray -----------------------------------------------------------------------------------


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]`` and the widths of its stages."""
    default = RaySettings()
    group = parser.add_argument_group("Ray (pip install -e '.[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run as a Ray Data pipeline: with no ADDRESS on a new local cluster, else on "
        "the cluster at ADDRESS (auto, HOST:PORT or ray://HOST:10001)",
    )
    group.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=default.gpus_per_actor,
        metavar="G",
        help="GPUs per Captioner actor (default: 1 when the cluster has GPUs, else 0)",
    )
    group.add_argument(
        "--ray-actors",
        type=int,
        default=default.actors,
        metavar="N",
        help="Captioner actors (default: one per GPU of the cluster; 1 without GPUs)",
    )
    group.add_argument(
        "--ray-decode-tasks",
        type=int,
        default=default.decode_tasks,
        metavar="N",
        help="decode tasks at once, one CPU each (default: as many as free CPUs allow)",
    )


def refuse_unused_flags(args: argparse.Namespace, formats: tuple[str, ...]) -> None:
    """Flags of a way of running the run does not take (``--ray-actors`` without ``--ray``,
    ``--prebatch`` without ``--server``, ``--shard-rows`` without Parquet), and the
    in-process model's flags with ``--server`` (``--device``, ``--dtype``, ``--batch-size``):
    a usage error, as ``--scene-frames`` without ``--scenes`` is, rather than ignored."""
    from vidcap.client import ClientOptions

    ray, client = RaySettings(), ClientOptions()
    modes = (
        ("--ray", getattr(args, "ray", None) is not None, (
            ("--ray-gpus-per-actor", "ray_gpus_per_actor", ray.gpus_per_actor),
            ("--ray-actors", "ray_actors", ray.actors),
            ("--ray-decode-tasks", "ray_decode_tasks", ray.decode_tasks),
        )),
        ("--server", bool(getattr(args, "server", None)), (
            ("--wire-format", "wire_format", client.wire_format),
            ("--prebatch", "prebatch", client.prebatch),
            ("--inflight", "inflight", client.inflight),
            ("--retries", "retries", client.retries),
            ("--timeout", "timeout", client.timeout),
            ("--token", "token", None),
        )),
        ("--format parquet", "parquet" in formats, (
            ("--shard-rows", "shard_rows", DEFAULT_SHARD_ROWS),
        )),
    )  # fmt: skip
    named = getattr(args, "given_flags", frozenset())  # (a value equal to the default too)

    def given(flags: tuple[tuple[str, str, object], ...]) -> list[str]:
        return [
            flag
            for flag, dest, default in flags
            if flag in named or getattr(args, dest, default) != default
        ]

    for mode, taken, flags in modes:
        if (found := given(flags)) and not taken:
            raise UsageError(f"{flags_that(found, 'applies', 'apply')} to {mode} only")
    model = ModelSettings()
    local = given((
        ("--device", "device", model.device),
        ("--dtype", "dtype", model.dtype),
        ("--batch-size", "batch_size", model.batch_size),
    ))  # fmt: skip
    if local and getattr(args, "server", None):
        raise UsageError(
            f"{flags_that(local, 'is', 'are')} for the model in this process, not --server's: "
            "each server sets its own device, dtype and batch (docs/serving.md)"
        )


def ray_settings_from_args(args: argparse.Namespace) -> RaySettings | None:
    """``None`` without ``--ray``; ``--ray`` alone is a new local cluster (address ``None``)."""
    if args.ray is None:
        return None
    if args.server:
        raise UsageError("--ray and --server are two ways to run the model; give one of them")
    address = None if args.ray == "local" else args.ray
    if address is not None and not address.strip():
        raise UsageError("--ray= needs an ADDRESS (auto, HOST:PORT or ray://HOST:10001)")
    engine = EngineSettings()
    named = getattr(args, "given_flags", frozenset())  # (a value equal to the default too)
    for flag, given, instead in (
        ("--device", args.device not in (ModelSettings().device, "cpu"),
         "Ray gives each Captioner actor its GPUs (--ray-gpus-per-actor; --device cpu: none)"),
        ("--decode-workers", args.decode_workers is not None,
         "Ray tasks decode: give --ray-decode-tasks"),
        ("--decode-timeout", args.decode_timeout != engine.decode_timeout,
         "Ray tasks decode, and Ray retries a task that dies, not one that hangs"),
    ):  # fmt: skip
        if given or (flag in named and flag != "--device"):
            raise UsageError(f"{flag} does not apply to --ray: {instead}")
    gpus = args.ray_gpus_per_actor
    if args.device == "cpu":  # (the actors on CPUs: no GPU each)
        if gpus:
            raise UsageError("--device cpu and --ray-gpus-per-actor: give one of them")
        gpus = 0.0
    suffix = Path(address or "").suffix.lower()
    if address is not None and (
        os.path.exists(address) or suffix in VIDEO_EXTENSIONS or suffix in LIST_SUFFIXES
    ):
        raise UsageError(
            f"--ray took {address!r} as its ADDRESS; put --ray after the inputs "
            "or write --ray=ADDRESS"
        )
    return RaySettings(
        address=address,
        gpus_per_actor=gpus,
        actors=args.ray_actors,
        decode_tasks=args.ray_decode_tasks,
    )
