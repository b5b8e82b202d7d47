#!/usr/bin/env python3
"""Caption a video with pre-batched requests sent one after another (no concurrency).

    python clients/client_example-batch.py video.mp4 --url http://127.0.0.1:5000/caption --prebatch 16

Each request carries ``--prebatch`` frames as multipart parts; the next request goes
out when the previous answer is in (``RemoteBackend`` with one request in flight and
one endpoint). Simple and gentle on the server; compare its frames/s with
``client_example-stream-v2.py``.
"""

from __future__ import annotations

import dataclasses

from vidcap.cli.remote import backend_from_args, options_from_args
from vidcap.client_scripts import caption_and_print, run_script, summary_line, video_script_parser
from vidcap.model import model_input_size
from vidcap.server_url import parse_server_urls


def main(argv: list[str] | None = None) -> int:
    parser = video_script_parser(__doc__, omit=("--inflight",))
    parser.set_defaults(prebatch=16)
    args = parser.parse_args(argv)
    options = dataclasses.replace(options_from_args(args), inflight=1)
    args.server = parse_server_urls(args.server)[0]
    backend = backend_from_args(args, model_input_size(args.model), options)
    run = caption_and_print(args, backend)
    print(
        summary_line(args.video.name, run, f"batches of {options.prebatch}, one request at a time")
    )
    return 0


if __name__ == "__main__":
    run_script(main)
