"""``vidcap``: caption · mask · clips · tiny-model."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from argparse import SUPPRESS
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vidcap import __version__
from vidcap.errors import UsageError, VidcapError

log = logging.getLogger("vidcap")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def cmd_caption(args: argparse.Namespace) -> int:
    from vidcap.remote_out import output_folder

    with output_folder(args.out) as out:  # a URL: a local staging folder, uploaded
        return _caption(args, out)


def _caption(args: argparse.Namespace, out: Path) -> int:
    from vidcap.cli_common import (
        backend_from_args,
        engine_from_args,
        generation_from_args,
        sampling_from_args,
    )
    from vidcap.commit import RunSettings, check_out_dir
    from vidcap.engine import run
    from vidcap.inputs import expand_inputs
    from vidcap.model import model_input_size
    from vidcap.outputs import FORMATS
    from vidcap.parquet import RUN_FORMATS, run_writers_for

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    known = FORMATS + RUN_FORMATS
    unknown = [f for f in formats if f not in known]
    if unknown or not formats:
        raise UsageError(
            f"unknown --format {','.join(unknown) or args.format!r}; supported values are {', '.join(known)}"
        )
    check_out_dir(out)
    videos = expand_inputs(args.inputs)  # files, folders, list files, URLs
    settings = RunSettings(
        out_dir=out,
        formats=formats,
        sampling=sampling_from_args(args),
        generation=generation_from_args(args),
        model=args.model,
        quiet=args.quiet,
    )
    engine = engine_from_args(args)
    # Embedded: the input size is known before the model loads, so decoding starts at once.
    size = None if getattr(args, "server", None) else model_input_size(args.model)
    metadata = [v.metadata for v in videos]
    if args.ray:  # the same stages as a Ray Data pipeline (vidcap/ray.py)
        from vidcap.ray import run_from_args as run_on_ray

        results = run_on_ray(args, settings, videos)
    else:
        results = run(
            [v.source for v in videos],
            settings,
            lambda: backend_from_args(args),
            engine,
            metadata=metadata,
            run_writers=run_writers_for(settings, metadata, args.shard_rows),
            input_size=size,
        )
    failed = [r for r in results if r.status == "failed"]
    done_frames = sum(r.frames for r in results)
    if not args.quiet:
        print(
            f"vidcap: {len(results) - len(failed)} of {len(results)} videos done, "
            f"{done_frames} frames; outputs in {args.out}"
            + (
                f"; {len(failed)} failed (see {args.out.rstrip('/')}/summary.json)"
                if failed
                else ""
            ),
            file=sys.stderr,
        )
    return EXIT_FAILED if failed else EXIT_OK


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from vidcap.tiny import CHECKPOINT_DIR

    out: Path = args.dir
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty")
    if args.untrained:
        from vidcap.tiny.build import build_tiny

        build_tiny(out, seed=args.seed)
    else:
        shutil.copytree(CHECKPOINT_DIR, out, dirs_exist_ok=True)
    print(f"tiny BLIP-2 checkpoint written to {out} (load it with --model {out})")
    return EXIT_OK


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes in one line (and ``--help`` named), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from vidcap.cli_common import (
        add_engine_arguments,
        add_model_arguments,
        add_sampling_arguments,
    )
    from vidcap.parquet import add_parquet_arguments
    from vidcap.ray import add_ray_arguments

    parser = OneLineParser(prog="vidcap", description="Caption video in bulk with BLIP-2.")
    parser.add_argument("--version", action="version", version=f"vidcap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    caption = sub.add_parser(
        "caption", help="caption videos: JSONL, SRT, WebVTT per video; summary.json of the folder"
    )
    caption.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders (searched recursively), list files (.txt, or .csv/.parquet "
        "with a 'path' column; other columns are carried into the outputs) or fsspec URLs",
    )
    caption.add_argument(
        "--out", required=True, help="output folder, or an fsspec URL (s3://…, gs://…)"
    )
    caption.add_argument(
        "--format",
        default="jsonl,srt,vtt",
        help="comma-separated: jsonl, srt, vtt, parquet (one row per frame, in shards) "
        "(default jsonl,srt,vtt)",
    )
    caption.add_argument("--quiet", action="store_true", help="no progress bar or final line")
    add_sampling_arguments(caption)
    add_model_arguments(caption)
    add_engine_arguments(caption)
    add_parquet_arguments(caption)
    add_ray_arguments(caption)
    caption.set_defaults(func=cmd_caption)

    tiny = sub.add_parser("tiny-model", help="write the bundled tiny BLIP-2 checkpoint to a folder")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--untrained", action="store_true", help="build fresh random weights instead")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)

    from vidcap.cli_mask import add_clips_parser, add_mask_parser

    add_mask_parser(sub)
    add_clips_parser(sub)
    for subparser in sub.choices.values():
        subparser.add_argument(
            "-v", "--verbose", action="store_true", default=SUPPRESS, help="log progress details"
        )
    return parser


def quiet_libraries() -> None:
    """Keep FFmpeg's and transformers' chatter off the user's terminal."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="vidcap: %(levelname)s: %(message)s",
    )
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"vidcap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VidcapError as exc:
        print(f"vidcap: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a file the user named cannot be read or written
        name = exc.filename2 or exc.filename
        where = f": {name}" if name else ""
        print(f"vidcap: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("vidcap: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    """The ``vidcap`` command: ``main``, then exit without the interpreter's teardown.

    Every output is already fsynced and renamed, every worker joined, when ``main``
    returns; unloading torch and transformers module by module would only add most of a
    second to each run. A Ray driver exits normally (its shutdown hooks stop the cluster).
    """
    code = main()
    if "ray" in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
