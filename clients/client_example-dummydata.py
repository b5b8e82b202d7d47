#!/usr/bin/env python3
"""Caption random-noise frames on a server: a smoke test and a throughput probe.

    python clients/client_example-dummydata.py --url http://127.0.0.1:5000/caption --model tiny

Frames are generated at the served model's input size (as the server says it, else
``--model``'s) and sent by ``vidcap.client.RemoteBackend``: pre-batched, several in flight.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from vidcap.backend import each_caption
from vidcap.cli.remote import add_client_arguments, backend_from_args
from vidcap.client import at_least
from vidcap.client_scripts import run_script, script_parser
from vidcap.model import model_input_size
from vidcap.settings import DEFAULT_MODEL, GenerationSettings


def noise_frames(count: int, size: tuple[int, int], seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--frames", type=int, default=64, help="how many frames (default 64)")
    parser.checks.append(lambda args: at_least("--frames", args.frames, 1))
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="the served model, for its input size"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_client_arguments(parser, require_server=True, server_flags=("--url", "--server"))
    args = parser.parse_args(argv)
    backend = backend_from_args(args, model_input_size(args.model))
    if backend is None:  # unreachable: --url is required
        parser.error("--url is required")
    size = backend.input_size  # the served model's, when the server says it
    started = time.perf_counter()
    with backend:
        answers = backend.caption_stream(
            noise_frames(args.frames, size, args.seed), GenerationSettings()
        )
        captions = list(each_caption(answers))  # a frame with no caption: one-line error
    seconds = time.perf_counter() - started
    print(f"first caption: {captions[0]!r}" if captions else "no frames")
    print(
        f"{len(captions)} noise frames ({size[1]}x{size[0]}) in {seconds:.2f}s: "
        f"{len(captions) / seconds:.1f} frames/s (prebatch {args.prebatch}, inflight {args.inflight})"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
