"""``vidcap``: caption · mask · clips · search · report · export · tiny-model.

The sub-commands live in ``caption.py``, ``mask.py`` (mask, clips), ``search.py``,
``report.py``, ``export.py`` and ``tiny_model.py``; every flag group and its mapping onto a settings
dataclass in ``args.py``; the parser class in ``parser.py``. ``entry`` is the console script.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import signal
import sys
import threading
import warnings
from argparse import SUPPRESS
from collections.abc import Sequence
from typing import NoReturn

from vidcap import __version__
from vidcap.cli.parser import EXIT_USAGE, OneLineParser
from vidcap.errors import UsageError, VidcapError

log = logging.getLogger("vidcap")

EXIT_OK, EXIT_FAILED = 0, 1

# Third-party warnings no vidcap user can act on, each silenced by its category and the
# start of its message, never more. pynvml >= 12 (which TorchServe's ``nvgpu`` pulls in:
# torchserve/requirements-torchserve.txt) installs an import hook that warns on any import
# of ``pynvml``, and ``import torch`` imports it (torch/cuda/__init__.py).
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    ("The pynvml package is deprecated", FutureWarning),
)


def build_parser() -> argparse.ArgumentParser:
    from vidcap.cli.caption import add_caption_parser
    from vidcap.cli.export import add_export_parser
    from vidcap.cli.mask import add_clips_parser, add_mask_parser
    from vidcap.cli.report import add_report_parser
    from vidcap.cli.search import add_search_parser
    from vidcap.cli.tiny_model import add_tiny_model_parser

    parser = OneLineParser(prog="vidcap", description="Caption video in bulk with BLIP-2.")
    parser.add_argument("--version", action="version", version=f"vidcap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    add_caption_parser(sub)

    add_tiny_model_parser(sub)

    add_mask_parser(sub)
    add_clips_parser(sub)
    add_search_parser(sub)
    add_report_parser(sub)
    add_export_parser(sub)
    for subparser in sub.choices.values():
        subparser.add_argument(
            "-v", "--verbose", action="store_true", default=SUPPRESS, help="log progress details"
        )
    return parser


def quiet_libraries() -> None:
    """Keep FFmpeg's and transformers' chatter, and ``QUIET_WARNINGS``, off the user's
    terminal: in this process and in the Python processes it starts (decoder workers, a
    local Ray cluster), through ``PYTHONWARNINGS``."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    options = [option for option in os.environ.get("PYTHONWARNINGS", "").split(",") if option]
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        option = f"ignore:{message}:{category.__name__}"
        if option not in options:
            options.append(option)
    os.environ["PYTHONWARNINGS"] = ",".join(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. Ctrl-C, whenever it comes, is one line and 130;
    SIGTERM (``kill``, ``timeout``, a scheduler's or container's stop) stops it the same
    way — what is done is recorded, the page rewritten — and is one line and 143; SIGHUP
    (the terminal closed: an SSH session dropped) too, silently (nobody sees its output),
    129."""
    ctrl_c = _CtrlC()
    args: argparse.Namespace | None = None
    try:  # from the start: building the parser imports PyAV and NumPy
        quiet_libraries()
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="vidcap: %(levelname)s: %(message)s",
        )
        return _run(args)
    except BaseException as exc:
        # An import cut short by Ctrl-C may surface as another error (NumPy's ImportError).
        if not isinstance(exc, KeyboardInterrupt) and not ctrl_c.pressed:
            raise
        if ctrl_c.hung_up:
            return 128 + signal.SIGHUP
        # (only `vidcap caption` keeps what it did: a rerun goes on from there)
        resume = "; rerun the same command to resume" if getattr(args, "resumes", False) else ""
        if ctrl_c.terminated:
            print(f"vidcap: stopped by SIGTERM{resume}", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"vidcap: interrupted{resume}", file=sys.stderr)
        return 130
    finally:
        ctrl_c.restore()


class _CtrlC:
    """SIGINT raises ``KeyboardInterrupt`` as Python's own handler does, and is noted.
    So does the first SIGTERM or SIGHUP, which by default would end the process on the
    spot, leaving no ``summary.json`` or page for what was done; a second one, while the
    run records what it did, is noted and waits for that (a scheduler's SIGKILL still ends
    it). SIGHUP means the terminal is gone: what the run still prints goes nowhere (a
    write to a hung-up terminal fails)."""

    STOPS = ("SIGTERM", "SIGHUP")  # (SIGHUP: POSIX only)

    def __init__(self) -> None:
        self.pressed = False
        self.terminated = False
        self.hung_up = False
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            numbers = [
                signal.SIGINT,
                *(getattr(signal, n) for n in self.STOPS if hasattr(signal, n)),
            ]
            for number in numbers:
                self.previous[number] = signal.signal(number, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            self.hung_up = True
            output_to_nowhere()
        if signum != signal.SIGINT:
            if self.terminated:
                return
            self.terminated = True
        self.pressed = True
        raise KeyboardInterrupt

    def restore(self) -> None:
        for number, previous in self.previous.items():
            signal.signal(number, previous)  # type: ignore[arg-type]


def output_to_nowhere(fds: Sequence[int] = (1, 2)) -> None:
    """Standard output and error (``fds``) to ``/dev/null``: their terminal hung up, or
    their reader went away."""
    try:
        nowhere = os.open(os.devnull, os.O_WRONLY)
        for fd in fds:
            os.dup2(nowhere, fd)
        os.close(nowhere)
    except OSError:
        pass


def _reader_gone() -> bool:
    """Has standard output's reader gone (``vidcap search … | head -1``)? A pipe whose
    reading end is closed polls as an error; a socket or a server's pipe that broke does not
    make standard output one."""
    import select

    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _standard_streams() -> None:
    """Descriptors 0–2 open and ``sys.stdout``/``sys.stderr`` set, even where the caller
    closed them (``vidcap … >&-`` from a cron job: a traceback after the work was done, and
    the next file opened would take the closed descriptor's number); text the output's
    encoding cannot hold (an ASCII or Latin-1 locale) written escaped, not a traceback."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            nowhere = os.open(os.devnull, os.O_RDWR)
            if nowhere != fd:
                os.dup2(nowhere, fd)
                os.close(nowhere)
    if sys.stdout is None:
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"vidcap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VidcapError as exc:
        print(f"vidcap: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a file the user named cannot be read or written
        if isinstance(exc, BrokenPipeError) and _reader_gone():
            output_to_nowhere((1,))  # (what is still buffered for it goes nowhere)
            # A command whose product is what it prints (search, mask…) stops as the
            # pipe's reader asked: no more. One that stopped before its work was done
            # (``vidcap caption … 2>&1 | head``) has failed, whatever it could print.
            return EXIT_OK if getattr(args, "output_is_product", True) else EXIT_FAILED
        name = exc.filename2 or exc.filename
        where = f": {name}" if name else ""
        print(f"vidcap: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED


def entry() -> NoReturn:
    """The ``vidcap`` command: ``main``, then exit without the interpreter's teardown.

    Every output is already fsynced and renamed, every worker joined, when ``main``
    returns; unloading torch and transformers module by module would only add most of a
    second to each run. A Ray driver exits normally (its shutdown hooks stop the cluster).
    """
    _standard_streams()
    code = main()
    if "ray" in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
