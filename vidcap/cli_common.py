"""Argument groups and backend construction shared by the CLI's subcommands."""

from __future__ import annotations

import argparse
from dataclasses import replace

from vidcap.backend import Backend, EmbeddedBackend
from vidcap.errors import UsageError
from vidcap.model import (
    AUTO_BATCH_CPU,
    AUTO_BATCH_CUDA,
    Captioner,
    expand_devices,
    model_input_size,
)
from vidcap.remote_args import add_client_arguments
from vidcap.settings import (
    DECODE_MODES,
    DEVICES_HELP,
    DTYPES,
    EngineSettings,
    GenerationSettings,
    ModelSettings,
    SamplingSettings,
)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = SamplingSettings()
    group = parser.add_argument_group("frame sampling")
    group.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frames per second of video to caption: the first frame at or after each tick, "
        f"at its true timestamp (default {sampling.fps})",
    )
    group.add_argument(
        "--every-n",
        type=int,
        default=None,
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
        default=None,
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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = ModelSettings()
    generation = GenerationSettings()
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
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
        "--prompt", default=None, help="text the caption continues, e.g. 'Question: … Answer:'"
    )
    add_client_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--decode-workers",
        type=int,
        default=None,
        metavar="N",
        help="decoder processes, each decoding one video at a time (default: one per CPU core)",
    )
    group.add_argument(
        "--decode-timeout",
        type=float,
        default=EngineSettings().decode_timeout,
        metavar="SECONDS",
        help="fail a video whose decoder sends nothing for this long: a hung download or "
        "decoder (default %(default)g)",
    )


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number, got {value!r}"
        ) from None


def engine_from_args(args: argparse.Namespace) -> EngineSettings:
    if args.decode_workers is not None and args.decode_workers < 1:
        raise UsageError(f"--decode-workers must be a whole number >= 1, got {args.decode_workers}")
    if not args.decode_timeout > 0:
        raise UsageError(
            f"--decode-timeout must be a number of seconds > 0, got {args.decode_timeout}"
        )
    return EngineSettings(decode_workers=args.decode_workers, decode_timeout=args.decode_timeout)


def sampling_from_args(args: argparse.Namespace) -> SamplingSettings:
    """``--fps``, ``--every-n`` and ``--keyframes`` each choose the frames: one at a time."""
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
    return SamplingSettings(
        fps=args.fps if args.fps is not None else SamplingSettings.fps,
        every_n=args.every_n,
        max_frames=args.max_frames,
        keyframes=args.keyframes,
        mode=args.decode_mode,
    )


def generation_from_args(args: argparse.Namespace, prompt: str | None = None) -> GenerationSettings:
    return GenerationSettings(
        prompt=prompt if prompt is not None else args.prompt,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """Remote servers when ``--server`` is given, else the model in this process."""
    if getattr(args, "server", None):
        from vidcap.remote_args import backend_from_args as remote_backend

        backend = remote_backend(args, model_input_size(args.model))
        if backend is not None:
            return backend
    settings = ModelSettings(
        model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    return EmbeddedBackend(load_replicas(settings))


def load_replicas(settings: ModelSettings) -> list[Captioner]:
    """One ``Captioner`` per device named in ``settings.device`` (``cuda:all``: every GPU)."""
    return [
        Captioner.load(replace(settings, device=device))
        for device in expand_devices(settings.device)
    ]
