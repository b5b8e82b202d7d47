#!/usr/bin/env python3
"""Where is the subject? Caption a video, match a query, print the mask and segments.

    python clients/client_example-putinmask.py speech.mp4 --url http://127.0.0.1:5000/caption
    python clients/client_example-putinmask.py sample_videos/subject.mp4 --model tiny --query "red circle"

Captions come from servers (``--url``) or from the model in this process (no
``--url``). A frame matches when its caption contains the query (default "putin",
whole words, any case; ``--regex`` for patterns). Prints the per-frame mask
(one 0/1 per sampled frame) and the time segments, via ``vidcap.mask``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from vidcap.backend import Backend, EmbeddedBackend
from vidcap.cli_common import add_sampling_arguments, sampling_from_args
from vidcap.client import add_client_arguments, backend_from_args
from vidcap.errors import VidcapError
from vidcap.mask import CaptionRecord, MaskSettings, mask_captions
from vidcap.model import Captioner, model_input_size
from vidcap.pipeline import caption_video
from vidcap.settings import DEFAULT_MODEL, GenerationSettings, ModelSettings


def make_backend(args: argparse.Namespace) -> Backend:
    remote = backend_from_args(args, model_input_size(args.model))
    if remote is not None:
        return remote
    return EmbeddedBackend(Captioner.load(ModelSettings(model=args.model, device=args.device)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("video", type=Path)
    parser.add_argument(
        "--query", action="append", help='what to look for (default "putin"); repeatable'
    )
    parser.add_argument("--regex", action="store_true", help="queries are regular expressions")
    parser.add_argument(
        "--merge-gap", type=float, default=0.0, help="close gaps shorter than this (s)"
    )
    parser.add_argument("--min-duration", type=float, default=0.0, help="drop shorter segments (s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to run, or the served one")
    parser.add_argument("--device", default="auto", help="in-process only: auto, cpu, cuda, cuda:N")
    add_sampling_arguments(parser)
    add_client_arguments(parser, server_flags=("--url", "--server"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    queries = args.query or ["putin"]
    settings = MaskSettings(
        regex=args.regex, merge_gap=args.merge_gap, min_duration=args.min_duration
    )
    backend = make_backend(args)
    started = time.perf_counter()
    try:
        records = [
            CaptionRecord(str(args.video), f.index, f.time, f.caption)
            for f in caption_video(
                args.video, backend, sampling_from_args(args), GenerationSettings()
            )
        ]
    finally:
        backend.close()
    seconds = time.perf_counter() - started
    report = mask_captions(records, queries, settings)
    print(f"mask: {report['mask']}")
    for segment in report["segments"]:
        print(f"segment: {json.dumps(segment)}")
    print(
        f"{args.video.name}: {len(records)} frames in {seconds:.2f}s: "
        f"{len(records) / max(seconds, 1e-9):.1f} frames/s; {len(report['segments'])} segment(s) "
        f"match {queries}, coverage {report['coverage']:.1%} "
        f"({'--url ' + args.server if args.server else 'in-process'})"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VidcapError as exc:
        sys.exit(f"error: {exc}")
