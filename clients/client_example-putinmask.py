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

import json

from vidcap.backend import EmbeddedBackend
from vidcap.cli.remote import backend_from_args
from vidcap.client_scripts import caption_and_print, run_script, summary_line, video_script_parser
from vidcap.mask import MaskSettings, VideoCaptions, mask_captions
from vidcap.model import Captioner, model_input_size
from vidcap.outputs import CaptionedFrame
from vidcap.settings import ModelSettings


def main(argv: list[str] | None = None) -> int:
    parser = video_script_parser(__doc__, require_server=False)
    parser.add_argument(
        "--query", action="append", help='what to look for (default "putin"); repeatable'
    )
    parser.add_argument("--regex", action="store_true", help="queries are regular expressions")
    parser.add_argument(
        "--merge-gap", type=float, default=0.0, help="close gaps shorter than this (s)"
    )
    parser.add_argument("--min-duration", type=float, default=0.0, help="drop shorter segments (s)")
    parser.add_argument("--device", default="auto", help="in-process only: auto, cpu, cuda, cuda:N")
    parser.set_defaults(quiet=True)
    args = parser.parse_args(argv)
    queries = args.query or ["putin"]
    settings = MaskSettings(
        regex=args.regex, merge_gap=args.merge_gap, min_duration=args.min_duration
    )
    backend = backend_from_args(args, model_input_size(args.model)) or EmbeddedBackend(
        Captioner.load(ModelSettings(model=args.model, device=args.device))
    )
    frames: list[CaptionedFrame] = []
    run = caption_and_print(
        args, backend, on_frame=lambda i, t, c: frames.append(CaptionedFrame(i, t, c))
    )
    report = mask_captions(VideoCaptions(str(args.video), tuple(frames)), queries, settings)
    print(f"mask: {report['mask']}")
    for segment in report["segments"]:
        print(f"segment: {json.dumps(segment)}")
    where = f"--url {args.server}" if args.server else "in-process"
    how = f"{where}; {len(report['segments'])} segment(s) match {queries}, coverage {report['coverage']:.1%}"
    print(summary_line(args.video.name, run, how))
    return 0


if __name__ == "__main__":
    run_script(main)
