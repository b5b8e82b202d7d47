#!/usr/bin/env python3
"""Caption a video with pre-batched requests sent one after another (no concurrency).

    python clients/client_example-batch.py video.mp4 --url http://127.0.0.1:5000/caption --prebatch 16

Each request carries ``--prebatch`` frames as multipart parts; the next request goes
out when the previous answer is in (``RemoteBackend`` with one request in flight and
one endpoint). Simple and gentle on the server; compare its frames/s with
``client_example-stream-v2.py``.
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
    parser.set_defaults(prebatch=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    options = dataclasses.replace(options_from_args(args), inflight=1)
    url = parse_server_urls(args.server)[0]
    started, count = time.perf_counter(), 0
    with RemoteBackend([url], model_input_size(args.model), options) as backend:
        for frame in caption_video(
            args.video, backend, sampling_from_args(args), GenerationSettings()
        ):
            count += 1
            if not args.quiet:
                print(f"{frame.time:9.3f}s  {frame.caption}")
    seconds = time.perf_counter() - started
    print(
        f"{args.video.name}: {count} frames in {seconds:.2f}s: {count / seconds:.1f} frames/s "
        f"(batches of {options.prebatch}, one request at a time)"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VidcapError as exc:
        sys.exit(f"error: {exc}")
