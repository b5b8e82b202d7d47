#!/usr/bin/env python3
"""Caption a video on one or more servers with batched async streaming (``--server`` mode).

    python clients/client_example-stream-v2.py video.mp4 --url http://127.0.0.1:5000/caption --model tiny

Frames are decoded and resized to the model's input size, sent ``--prebatch`` per
request with up to ``--inflight`` requests in flight per endpoint (comma-separate
several URLs to share the work), retried on 503/429/timeouts, and printed in order.
This is exactly what ``vidcap caption --server`` does, minus the output files.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from vidcap.cli_common import add_sampling_arguments, sampling_from_args
from vidcap.client import add_client_arguments, backend_from_args
from vidcap.errors import VidcapError
from vidcap.model import model_input_size
from vidcap.pipeline import caption_video
from vidcap.settings import DEFAULT_MODEL, GenerationSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="the served model, for its input size"
    )
    parser.add_argument("--prompt", default=None, help="text the captions continue")
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    add_sampling_arguments(parser)
    add_client_arguments(parser, require_server=True, server_flags=("--url", "--server"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    backend = backend_from_args(args, model_input_size(args.model))
    assert backend is not None
    generation = GenerationSettings(prompt=args.prompt)
    started, count = time.perf_counter(), 0
    with backend:
        for frame in caption_video(args.video, backend, sampling_from_args(args), generation):
            count += 1
            if not args.quiet:
                print(f"{frame.time:9.3f}s  {frame.caption}")
    seconds = time.perf_counter() - started
    print(
        f"{args.video.name}: {count} frames in {seconds:.2f}s: {count / seconds:.1f} frames/s "
        f"(prebatch {args.prebatch}, inflight {args.inflight}, {len(backend.urls)} endpoint(s))"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VidcapError as exc:
        sys.exit(f"error: {exc}")
