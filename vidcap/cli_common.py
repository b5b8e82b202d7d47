"""Argument groups and backend construction shared by the CLI's subcommands."""

from __future__ import annotations

import argparse

from vidcap.backend import Backend, EmbeddedBackend
from vidcap.errors import UsageError
from vidcap.model import Captioner, model_input_size
from vidcap.settings import (
    DECODE_MODES,
    DEFAULT_MODEL,
    DTYPES,
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
        help=f"exact (default {sampling.mode}): the frames decoding everything gives, decoding "
        "only reference frames and those a tick needs; fast: reference frames only, a sample "
        "may fall up to 3 frames after its tick (x264's B-frame limit); all: decode every frame",
    )
    group.add_argument(
        "--decoder",
        default="process",
        choices=("process", "thread"),
        help="decode in a child process (default: a decoder crash fails one video only, "
        "no GIL contention with the model) or in a thread",
    )


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id, local directory, or 'tiny' (default {DEFAULT_MODEL})",
    )
    group.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA if present)"
    )
    group.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="default auto: float16 on CUDA, float32 on CPU",
    )
    group.add_argument(
        "--batch-size", type=int, default=8, help="frames per forward pass (default 8)"
    )
    group.add_argument(
        "--max-new-tokens", type=int, default=30, help="caption length limit in tokens (default 30)"
    )
    group.add_argument(
        "--num-beams", type=int, default=1, help="beam search width (default 1: greedy)"
    )
    group.add_argument(
        "--prompt", default=None, help="text the caption continues, e.g. 'Question: … Answer:'"
    )
    try:
        from vidcap.client import add_client_arguments
    except ImportError:  # the remote backend is optional
        return
    add_client_arguments(parser)


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
        from vidcap.client import backend_from_args as remote_backend

        backend = remote_backend(args, model_input_size(args.model))
        if backend is not None:
            return backend
    settings = ModelSettings(
        model=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    return EmbeddedBackend(Captioner.load(settings))
