"""``vidcap report``: write (or rewrite) ``OUT/index.html`` from the folder as it is."""

from __future__ import annotations

import argparse
import logging
import sys

from vidcap.cli import EXIT_OK
from vidcap.cli.parser import local_folder
from vidcap.wording import counted

log = logging.getLogger(__name__)


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="write OUT/index.html: every video, its thumbnails and captions, and a search box",
        description="Write OUT/index.html (and its data files under OUT/report/) from the "
        "folder's summary.json and outputs. Every run of `vidcap caption` does this at its "
        "end; run it by hand after copying, pruning or masking a folder, or after a run "
        "killed before its end (summary.json is brought up to the folder's records first). "
        "Open the page from disk or serve the folder with any static web server.",
    )
    parser.add_argument(
        "out", type=local_folder, metavar="OUT", help="a `vidcap caption --out` folder"
    )
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    from vidcap.errors import UsageError, reason
    from vidcap.folder import stopped_part_way
    from vidcap.out_lock import holding
    from vidcap.records import SUMMARY, record_times, refresh_summary
    from vidcap.report import PAGE, write_report

    if record_times(args.out):  # (a folder of records: its summary.json as they are now)
        try:
            with holding(args.out):
                refresh_summary(args.out)
        except UsageError:  # a run holds the folder: it writes the summary at its end
            pass
        except OSError as exc:  # (the page is still written, from the records)
            log.warning("%s could not be brought up to date: %s", args.out / SUMMARY, reason(exc))
    stats = write_report(args.out)
    print(args.out / PAGE)
    if (note := stopped_part_way(args.out)) is not None:
        print(f"vidcap: note: {note}", file=sys.stderr)
    print(
        f"{counted(stats.videos, 'video')}, {counted(stats.frames, 'frame')}, "
        f"{counted(stats.shards, 'data file')} in {stats.seconds:.2f} s",
        file=sys.stderr,
    )
    return EXIT_OK
