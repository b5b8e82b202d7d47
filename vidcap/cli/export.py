"""``vidcap export``: an output folder in the import format of a dataset tool (FiftyOne)."""

from __future__ import annotations

import argparse
import sys

from vidcap.cli import EXIT_FAILED, EXIT_OK
from vidcap.cli.parser import check_out_folder, local_folder, path_arg
from vidcap.errors import UsageError
from vidcap.mask import MaskSettings
from vidcap.wording import counted, flags_that

EXPORT_EPILOG = """\
example:
  vidcap export out/ --to fiftyone fo_dataset/ --query "red car"
  then, in Python: fo.Dataset.from_dir("fo_dataset", dataset_type=fo.types.FiftyOneVideoLabelsDataset)
"""


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vidcap.export import FORMATS

    parser = subparsers.add_parser(
        "export",
        help="write an output folder in a dataset tool's import format (FiftyOne)",
        description="Write OUT's captions (one per sampled frame), scenes and segments as a "
        "dataset another tool imports. fiftyone: a FiftyOneVideoLabelsDataset (frame field "
        "'caption'; temporal detections 'scenes' and 'segments').",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "out", type=local_folder, metavar="OUT", help="a `vidcap caption --out` folder"
    )
    parser.add_argument(
        "dir", type=path_arg, metavar="DIR", help="new or empty folder (or an earlier export)"
    )
    parser.add_argument("--to", required=True, choices=FORMATS, help="the format")
    parser.add_argument("--query", action="append", default=[], metavar="TEXT",
                        help="also export the moments matching TEXT as 'segments' (as "
                        "`vidcap search`); repeatable")  # fmt: skip
    parser.add_argument("--regex", action="store_true", help="queries are regular expressions")
    parser.add_argument("--merge-gap", type=float, metavar="S",
                        help="with --query: close gaps shorter than S seconds")  # fmt: skip
    parser.add_argument("--min-duration", type=float, metavar="S",
                        help="with --query: drop moments shorter than S seconds")  # fmt: skip
    parser.add_argument("--copy-media", action="store_true",
                        help="copy the videos into DIR/data/ (default: the manifest names "
                        "them where they are)")  # fmt: skip
    parser.set_defaults(func=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    from vidcap.export import MANIFEST, export_fiftyone

    given = [
        flag
        for flag, value in (
            ("--regex", args.regex),
            ("--merge-gap", args.merge_gap is not None),
            ("--min-duration", args.min_duration is not None),
        )
        if value
    ]
    if given and not args.query:
        raise UsageError(f"{flags_that(given, 'applies', 'apply')} to --query: give --query TEXT")
    check_out_folder(args.dir, "DIR")
    default = MaskSettings()
    settings = MaskSettings(
        regex=args.regex,
        merge_gap=default.merge_gap if args.merge_gap is None else args.merge_gap,
        min_duration=default.min_duration if args.min_duration is None else args.min_duration,
    )
    stats = export_fiftyone(args.out, args.dir, args.query, settings, args.copy_media)
    print(args.dir / MANIFEST)
    why = []
    if stats.failed:
        why.append(f"{stats.failed} failed (summary.json says why)")
    if stats.skipped > stats.failed:
        why.append(f"{stats.skipped - stats.failed} as the warnings above say")
    left = f" ({', '.join(why)})" if why else ""
    print(
        f"vidcap: {counted(stats.videos, 'video')}, {counted(stats.frames, 'captioned frame')}, "
        f"{counted(stats.events, 'temporal detection')} exported; "
        f"{counted(stats.skipped, 'video')} left out{left}",
        file=sys.stderr,
    )
    # A video the export could not take (named above), or none at all of a folder that
    # lists some: 1. Videos whose captioning failed alone do not (their run exited 1).
    if stats.skipped > stats.failed or (stats.listed and not stats.videos):
        return EXIT_FAILED
    return EXIT_OK
