"""What the example clients in ``clients/`` share: arguments, the caption loop, the summary.

Each script only says how it talks to the servers (one request at a time, one frame per
request, batched streaming, …); the rest lives here, once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from vidcap.backend import Backend
from vidcap.cli.args import add_sampling_arguments, sampling_from_args
from vidcap.cli.parser import EXIT_USAGE, OneLineParser
from vidcap.cli.remote import add_client_arguments, options_from_args
from vidcap.engine import caption_video
from vidcap.errors import UsageError, VidcapError
from vidcap.ffmpeg import not_a_video_file
from vidcap.settings import DEFAULT_MODEL, GenerationSettings


@dataclass(frozen=True)
class CaptionRun:
    frames: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _video_file(text: str) -> Path:
    """The ``VIDEO`` argument: a file there (checked before any model loads or server is
    asked, so a typo costs no minute of loading BLIP-2)."""
    if (reason := not_a_video_file(text)) is not None:
        raise argparse.ArgumentTypeError(f"{text}: {reason}")
    return Path(text)


class ScriptParser(OneLineParser):
    """A client script's parser: ``parse_args`` also checks the values the library takes
    (the client options, the sampling: ``vidcap caption``'s own checks, and ``checks``, the
    script's own), so a bad one is a usage error — one line, exit status 2 — before any
    model loads or server is asked, not an error after connecting, or a run of nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checks: list[Callable[[argparse.Namespace], object]] = [check_arguments]

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed = super().parse_args(args, namespace)
        try:
            for check in self.checks:
                check(parsed)
        except UsageError as exc:
            self.exit(EXIT_USAGE, f"{self.prog}: error: {exc}\n")
        return parsed


def check_arguments(args: argparse.Namespace) -> None:
    """``UsageError`` for a value the client options or the sampling refuse, as they refuse
    it (the parser's options only: those a script omitted keep their defaults)."""
    options_from_args(args)
    if hasattr(args, "fps"):
        sampling_from_args(args)


def script_parser(doc: str) -> ScriptParser:
    """A client script's parser, its description the first line of ``doc``."""
    return ScriptParser(
        description=doc.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def video_script_parser(
    doc: str, *, require_server: bool = True, omit: Collection[str] = ()
) -> ScriptParser:
    """``VIDEO --url … --model … --quiet`` plus the sampling and client options
    (less ``omit``: options the script fixes itself, so its help does not offer them)."""
    parser = script_parser(doc)
    parser.add_argument("video", type=_video_file)
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="the served model (for its input size), or the one to run",
    )
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    add_sampling_arguments(parser)
    add_client_arguments(
        parser, require_server=require_server, server_flags=("--url", "--server"), omit=omit
    )
    return parser


def caption_and_print(
    args: argparse.Namespace,
    backend: Backend,
    generation: GenerationSettings | None = None,
    on_frame: Callable[[int, float, str], None] | None = None,
) -> CaptionRun:
    """Caption ``args.video`` through ``backend``; print each caption unless ``--quiet``."""
    started, count = time.perf_counter(), 0
    try:
        for frame in caption_video(
            args.video, backend, sampling_from_args(args), generation or GenerationSettings()
        ):
            count += 1
            if on_frame is not None:
                on_frame(frame.index, frame.time, frame.caption)
            if not args.quiet:
                print(f"{frame.time:9.3f}s  {frame.caption}")
    finally:
        backend.close()
    return CaptionRun(frames=count, seconds=time.perf_counter() - started)


def summary_line(label: str, run: CaptionRun, how: str) -> str:
    return f"{label}: {run.frames} frames in {run.seconds:.2f}s: {run.frames_per_second:.1f} frames/s ({how})"


def run_script(main: Callable[[], int]) -> NoReturn:
    """Run a client's ``main``: user errors end in one line, exit status 2 for a usage
    error (``SCRIPT: error: …``, as ``vidcap`` says it: a ``--prebatch`` over the server's
    limit, say), 1 for any other (``error: …``); a closed stdout (``| head``) ends the
    script quietly; FFmpeg/OpenCV chatter stays off stderr."""
    from vidcap.cli import quiet_libraries

    quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code = main()
        sys.stdout.flush()
    except UsageError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except VidcapError as exc:
        sys.exit(f"error: {exc}")
    except BrokenPipeError:
        # The reader went away: send what Python still wants to flush to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
