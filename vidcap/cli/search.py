"""``vidcap search``: the moments a query matches across output folders, ranked."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from wcwidth import wcwidth

from vidcap.cli import EXIT_FAILED, EXIT_OK
from vidcap.cli.parser import check_out_folder, local_folder, path_arg
from vidcap.errors import UsageError
from vidcap.mask import MaskSettings, Segment
from vidcap.wording import counted

log = logging.getLogger(__name__)

SEARCH_EPILOG = """\
examples:
  vidcap search out/ "red car"
  vidcap search out/ archive/ --regex "red (car|truck)s?" --merge-gap 2 --min-duration 1 --json
  vidcap search out/ "red car" --clips clips/      (one folder of clips per video)

moments are `vidcap mask` segments of each video (the same matching and merging); ranked by
matching frames, then duration, then folder order, then start time.
"""
CSV_COLUMNS = ("folder", "name", "video", "start", "end", "duration", "frames", "caption",
               "frame", "thumb", "damaged")  # fmt: skip


def add_search_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "search",
        help="find the moments whose captions match a query, across whole output folders",
        description="Search the captions of every video in one or more output folders "
        "(JSONL or Parquet) and list the matching moments, ranked.",
        epilog=SEARCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", nargs="+", type=local_folder, metavar="OUT", help="output folder(s)")
    parser.add_argument("query", metavar="QUERY",
                        help="words or a phrase (case-insensitive, whole words), or with "
                        "--regex a regular expression")  # fmt: skip
    parser.add_argument("--regex", action="store_true", help="QUERY is a regular expression")
    default = MaskSettings()
    parser.add_argument("--merge-gap", type=float, default=default.merge_gap, metavar="S",
                        help="close gaps shorter than S seconds (default %(default)g)")  # fmt: skip
    parser.add_argument("--min-duration", type=float, default=default.min_duration, metavar="S",
                        help="drop moments shorter than S seconds (default %(default)g)")  # fmt: skip
    parser.add_argument("--limit", type=int, metavar="N", help="the N best moments only")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON document on stdout")
    form.add_argument("--csv", action="store_true", help="CSV on stdout, one moment a row")
    parser.add_argument("--clips", type=path_arg, metavar="DIR",
                        help="cut each moment into DIR/<name>/ as `vidcap clips` does")  # fmt: skip
    parser.add_argument("--precise", action="store_true",
                        help="with --clips: frame-accurate re-encode instead of stream copy")  # fmt: skip
    parser.set_defaults(func=run_search)
    return parser


def run_search(args: argparse.Namespace) -> int:
    from vidcap.folder import stopped_part_way
    from vidcap.search import SearchStats, distinct_folders, search

    settings = MaskSettings(
        regex=args.regex, merge_gap=args.merge_gap, min_duration=args.min_duration
    )
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.precise and args.clips is None:
        raise UsageError("--precise applies to --clips only")
    if args.clips is not None:
        check_out_folder(args.clips, "--clips")
    if not args.query.strip():  # (mask's own word for it is --query: here it is QUERY)
        raise UsageError("QUERY must not be empty: give the words to find")
    args.out = distinct_folders(args.out)
    stats = SearchStats()
    moments = search(args.out, [args.query], settings, stats)
    total, videos = len(moments), len({(m.folder, m.name) for m in moments})
    # (each video's folder of clips from every moment: the same whatever --limit shows)
    targets = clip_folders(moments, args.out) if args.clips is not None else {}
    if args.limit is not None:
        moments = moments[: args.limit]
    if args.json:
        document = {
            "query": args.query,
            "settings": {
                "regex": args.regex,
                "merge_gap": args.merge_gap,
                "min_duration": args.min_duration,
            },  # fmt: skip
            "folders": [str(p) for p in args.out],
            "videos": stats.videos,
            "total": total,
            "moments": [
                m.row()
                | ({"clips": str(args.clips / targets[(m.folder, m.name)])} if targets else {})
                for m in moments
            ],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    elif args.csv:
        write_csv(sys.stdout, [m.row() for m in moments])
    else:
        print_table(sys.stdout, moments, args.out)
    for folder in args.out:
        if (note := stopped_part_way(folder)) is not None:
            print(f"vidcap: note: {note}", file=sys.stderr)
    if stats.unread:  # (not searched: "0 moments" alone would say they hold none)
        more = f", and {stats.unread - 1} more" if stats.unread > 1 else ""
        print(
            f"vidcap: warning: {counted(stats.unread, 'video')} not searched, their captions "
            f"unreadable ({stats.first_problem}{more})",
            file=sys.stderr,
        )
    print(
        f"vidcap: {counted(total, 'moment')} in {counted(videos, 'video')}"
        + (f" ({len(moments)} shown)" if len(moments) < total else "")
        + f"; {counted(stats.frames, 'caption')} of {counted(stats.videos, 'video')} searched "
        f"in {stats.seconds:.2f} s",
        file=sys.stderr,
    )
    if args.clips is not None:
        return cut_clips(moments, args.clips, args.precise, targets)
    return EXIT_OK


def clip_folders(moments: list, folders: list) -> dict[tuple[str, str], str]:
    """Each video's folder of clips under ``--clips``: its name, or — where a video of an
    earlier OUT (in the order given) has that name — the name with ``+`` added until it is
    free (``clip+``, ``clip++``). By folder order and name, never by rank: the same
    folders and query give the same folders whatever the moments' order."""
    order = {str(folder): i for i, folder in enumerate(folders)}
    videos = sorted({(m.folder, m.name) for m in moments}, key=lambda v: (order.get(v[0], 0), v))
    used: set[str] = set()
    targets = {}
    for folder, name in videos:
        target = name
        while target in used:
            target += "+"
        used.add(target)
        targets[(folder, name)] = target
    return targets


# A text cell a spreadsheet would run as a formula (OWASP's "CSV injection"): a video's
# name comes from a file or URL anyone may have named "=HYPERLINK(…)".
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_csv(stream: TextIO, rows: list[dict]) -> None:
    """The moments as CSV; a text cell starting like a formula is written after a ``'``, so
    Excel, LibreOffice and Google Sheets show it as text (``--json`` keeps every value as is)."""
    writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _as_text(value) for key, value in row.items()} for row in rows)


def _as_text(value: object) -> object:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def print_table(stream: TextIO, moments: list, folders: Sequence[Path | str] = ()) -> None:
    """Rank, video, start, end, frames, caption; one line each, cut to the terminal's width
    on a terminal (or to ``COLUMNS`` where it is set), whole in a file or a pipe. With
    several ``folders`` (those searched), each name is led by its folder's label, told apart
    from every folder searched, not only those of the moments shown (``--limit``)."""
    width = None
    if stream.isatty() or os.environ.get("COLUMNS", "").isdigit():
        width = shutil.get_terminal_size((120, 24)).columns
    rows = []
    several = len(folders) > 1
    labels = folder_labels(str(Path(folder)) for folder in folders) if several else {}
    for rank, moment in enumerate(moments, start=1):
        name = f"{labels[moment.folder]}/{moment.name}" if several else moment.name
        frames = f"{moment.frames}" + (f" ({moment.damaged} damaged)" if moment.damaged else "")
        rows.append((str(rank), _flat(name), f"{moment.start:.3f}", f"{moment.end:.3f}",
                     frames, _flat(moment.caption)))  # fmt: skip
    head = ("#", "video", "start", "end", "frames", "caption")
    widths = [max(_cells(r[i]) for r in [head, *rows]) for i in range(5)]
    others = sum(widths) - widths[1] + 2 * 5  # the other columns and the gaps, in cells
    # names cut first (to 10 cells at the least) so that captions keep 20 cells
    name_width = widths[1] if width is None else min(widths[1], 40, max(width - others - 20, 10))
    for row in [head, *rows]:
        name = _pad(_cut(row[1], name_width), name_width)
        line = (f"{row[0]:>{widths[0]}}  {name}  {row[2]:>{widths[2]}}  "
                f"{row[3]:>{widths[3]}}  {row[4]:>{widths[4]}}  ")  # fmt: skip
        caption = row[5] if width is None else _cut(row[5], max(width - _cells(line), 10))
        stream.write(line + caption + "\n")


def folder_labels(folders: Iterable[str]) -> dict[str, str]:
    """Each folder's shortest trailing path that no other of ``folders`` ends with, to tell
    their videos apart (``a/plain``, ``b/plain``; ``plain`` alone where the last names
    differ); the folder as given where even that is shared."""
    parts = {folder: Path(folder).parts for folder in set(folders)}
    labels = {}
    for folder, own in parts.items():
        others = [other for name, other in parts.items() if name != folder]
        labels[folder] = next(
            (
                str(Path(*own[-n:]))
                for n in range(1, len(own) + 1)
                if all(other[-n:] != own[-n:] for other in others)
            ),
            folder,
        )
    return labels


def _flat(text: str) -> str:
    """One line of text: control characters (newlines, escapes, C1 codes) shown as spaces."""
    return "".join(" " if ord(c) < 32 or 127 <= ord(c) < 160 else c for c in text)


def _cells(text: str) -> int:
    """Terminal cells ``text`` takes (a CJK character or an emoji two, an accent none)."""
    return sum(max(wcwidth(c), 0) for c in text)


def _cut(text: str, cells: int) -> str:
    """``text`` in at most ``cells`` cells, ending with ``…`` where it was cut."""
    if _cells(text) <= cells:
        return text
    kept, used = [], 1  # (the …)
    for c in text:
        used += max(wcwidth(c), 0)
        if used > cells:
            break
        kept.append(c)
    return "".join(kept) + "…"


def _pad(text: str, cells: int) -> str:
    return text + " " * max(cells - _cells(text), 0)


def cut_clips(moments: list, out: Path, precise: bool, targets: dict[tuple[str, str], str]) -> int:
    """Each video's moments cut by ``vidcap.clips.export_clips`` into ``out/<target>/``
    (``clip_folders``; with its manifest.json); a video whose source is not a file here, or
    that cannot be cut, is skipped, saying why, and the others are cut."""
    from vidcap.clips import MANIFEST_NAME, ONE_VIDEO_ERRORS, export_clips
    from vidcap.folder import SOURCE_CHANGED, open_folder

    by_video: dict[tuple[str, str], list[Segment]] = defaultdict(list)
    for moment in moments:
        by_video[(moment.folder, moment.name)].append(
            Segment(moment.start, moment.end, moment.frames)
        )
    sources = {}
    for folder in {folder for folder, _ in by_video}:
        for video in open_folder(folder):
            sources[(folder, video.name)] = video
    skipped = 0
    labels = folder_labels(folder for folder, _ in by_video)
    for (folder, name), found in by_video.items():
        video = sources[(folder, name)]
        source = video.local_source()
        if source is None:
            print(f"vidcap: {name}: no clips: the source is not a file here ({video.video})",
                  file=sys.stderr)  # fmt: skip
            skipped += 1
            continue
        if video.source_changed(source) is not None:
            print(f"vidcap: {name}: warning: {source} {SOURCE_CHANGED}: its clips are cut at "
                  "the captions' times, which may not match it", file=sys.stderr)  # fmt: skip
        target = targets[(folder, name)]
        if target != name:  # (a video of another OUT has its name)
            print(f"vidcap: {labels[folder]}/{name}: its clips in {out / target}/, "
                  f"as another folder's {name} has {out / name}/", file=sys.stderr)  # fmt: skip
        found.sort(key=lambda s: s.start)
        try:
            clips = export_clips(source, found, out / target, precise=precise)
        except (*ONE_VIDEO_ERRORS, UsageError) as exc:  # (a moment past a changed source's
            # end, a folder of another tool's: that video's, not the library's)
            print(f"vidcap: {name}: no clips: {exc}", file=sys.stderr)
            skipped += 1
            continue
        for clip in clips:  # stdout holds the moments; the files go to stderr
            print(out / target / clip.path, file=sys.stderr)
        print(out / target / MANIFEST_NAME, file=sys.stderr)
    if skipped:
        print(f"vidcap: {counted(skipped, 'video')} not cut (see above)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
