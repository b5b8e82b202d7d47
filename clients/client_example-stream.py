#!/usr/bin/env python3
"""Caption a video with one async request per frame, at most ``--inflight`` at a time.

    python clients/client_example-stream.py video.mp4 --url http://127.0.0.1:8080/predictions/blip2

Each frame is its own request (an ``image/png`` or ``image/jpeg`` body, settings in
``X-Vidcap-*`` headers): the form TorchServe's server-side batching is built for.
Captions are printed in frame order. ``RemoteBackend`` with ``prebatch`` 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from vidcap.cli_common import add_sampling_arguments, sampling_from_args
from vidcap.client import RemoteBackend, add_client_arguments, options_from_args, parse_server_urls
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
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    add_sampling_arguments(parser)
    add_client_arguments(parser, require_server=True, server_flags=("--url", "--server"))
    parser.set_defaults(inflight=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    options = dataclasses.replace(options_from_args(args), prebatch=1)
    urls = parse_server_urls(args.server)
    started, count = time.perf_counter(), 0
    with RemoteBackend(urls, model_input_size(args.model), options) as backend:
        for frame in caption_video(
            args.video, backend, sampling_from_args(args), GenerationSettings()
        ):
            count += 1
            if not args.quiet:
                print(f"{frame.time:9.3f}s  {frame.caption}")
    seconds = time.perf_counter() - started
    print(
        f"{args.video.name}: {count} frames in {seconds:.2f}s: {count / seconds:.1f} frames/s "
        f"(one frame per request, up to {options.inflight} in flight per endpoint)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VidcapError as exc:
        sys.exit(f"error: {exc}")
