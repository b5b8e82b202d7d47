#!/usr/bin/env python3
"""Caption a video with one async request per frame, at most ``--inflight`` at a time.

    python clients/client_example-stream.py video.mp4 --url http://127.0.0.1:8080/predictions/vidcap

Each frame is its own request (an ``image/png`` or ``image/jpeg`` body, settings in
``X-Vidcap-*`` headers): the form TorchServe's server-side batching is built for.
Captions are printed in frame order. ``RemoteBackend`` with ``prebatch`` 1.
"""

from __future__ import annotations

import dataclasses

from vidcap.cli.remote import backend_from_args, options_from_args
from vidcap.client_scripts import caption_and_print, run_script, summary_line, video_script_parser
from vidcap.model import model_input_size


def main(argv: list[str] | None = None) -> int:
    parser = video_script_parser(__doc__, omit=("--prebatch",))
    parser.set_defaults(inflight=16)
    args = parser.parse_args(argv)
    options = dataclasses.replace(options_from_args(args), prebatch=1)
    backend = backend_from_args(args, model_input_size(args.model), options)
    run = caption_and_print(args, backend)
    how = f"one frame per request, up to {options.inflight} in flight per endpoint"
    print(summary_line(args.video.name, run, how))
    return 0


if __name__ == "__main__":
    run_script(main)
