#!/usr/bin/env python3
"""Caption a video on one or more servers with batched async streaming (``--server`` mode).

    python clients/client_example-stream-v2.py video.mp4 --url http://127.0.0.1:5000/caption --model tiny

Frames are decoded and resized to the model's input size, sent ``--prebatch`` per
request with up to ``--inflight`` requests in flight per endpoint (comma-separate
several URLs to share the work), retried on 503/429/timeouts, and printed in order.
This is exactly what ``vidcap caption --server`` does, minus the output files.
"""

from __future__ import annotations

from vidcap.cli.remote import backend_from_args
from vidcap.client_scripts import caption_and_print, run_script, summary_line, video_script_parser
from vidcap.model import model_input_size
from vidcap.settings import GenerationSettings


def main(argv: list[str] | None = None) -> int:
    parser = video_script_parser(__doc__)
    parser.add_argument("--prompt", default=None, help="text the captions continue")
    args = parser.parse_args(argv)
    backend = backend_from_args(args, model_input_size(args.model))
    if backend is None:  # unreachable: --url is required
        parser.error("--url is required")
    run = caption_and_print(args, backend, GenerationSettings(prompt=args.prompt))
    how = f"{len(backend.urls)} endpoint(s), prebatch {args.prebatch}, inflight {args.inflight}"
    print(summary_line(args.video.name, run, how))
    return 0


if __name__ == "__main__":
    run_script(main)
