"""What the end of a run costs on a big output folder, beside an earlier revision's.

    python bench/run_end.py --against REV [--videos 100000] [--captions 20] [--rounds 2] [--add 10]
        [--where among|last|first]

At the end of every run (engine and Ray) vidcap rewrites ``summary.json`` from every resume
record of the folder and then the report page from the folder — whatever the run itself did.
Timed here on one folder (``tests.support.folders.big_folder``: BLIP-2-like captions, JSONL
+ VTT + records, no model), written once, each tree with its own page (moved in for its
turn) written once untimed, as every run but the first finds it: ``write_summary``, then ``refresh_report`` as the engine calls it
(handed the summary where the revision's takes it). Before each round ``--add`` new videos
join the folder (``--where``: their names sort among the others, after or before them):
the end of a top-up run. This tree and REV (a ``git worktree`` of it) run in turn, each
round in a fresh process per tree. Reported
(never asserted): seconds of each part per tree and round, the ratio of the medians, and
the size of ``summary.json`` each writes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE_END = """
import inspect, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from vidcap.records import write_summary
from vidcap.report import refresh_report
out = Path(sys.argv[2])
started = time.monotonic()
summary = write_summary(out, [], 0, 1.0)
written = time.monotonic()
if "summary" in inspect.signature(refresh_report).parameters:
    refresh_report(out, summary)
else:
    refresh_report(out)
ended = time.monotonic()
print(json.dumps({"summary_s": round(written - started, 3), "report_s": round(ended - written, 3),
                  "total_s": round(ended - started, 3),
                  "summary_mb": round((out / "summary.json").stat().st_size / 1e6, 1)}))
"""


def new_name(where: str, round_: int, i: int) -> str:
    """A new video's name, sorting after big_folder's clipNNNNN names, before them, or
    among them."""
    if where == "last":
        return f"clipz-{round_}-{i:03d}"
    if where == "first":
        return f"clip-{round_}-{i:03d}"
    return f"clip{(round_ * 7919 + i * 104729) % 100_000:05d}-new"  # spread over the folder


def one_end(tree: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", ONE_END, str(tree), str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def own_page(out: Path, keep: Path) -> Iterator[None]:
    """``out``'s page and summary.json as this tree left them (kept in ``keep`` between its
    turns): each tree removes the data files it did not write, so one shared page would be
    rebuilt whole by each in turn, and a summary.json says when its records were read only
    where the tree that wrote it does."""
    names = ("report", "index.html", "summary.json")
    for name in names:
        if (keep / name).exists():
            os.replace(keep / name, out / name)
    try:
        yield
    finally:
        keep.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (out / name).exists():
                os.replace(out / name, keep / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", required=True, help="a git revision")
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--captions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--add", type=int, default=10, help="new videos before each round")
    parser.add_argument("--where", choices=("last", "first", "among"), default="among",
                        help="where the new videos' names sort among the others")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "last_run_end.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.folders import FakeVideo, big_folder, write_folder

    with tempfile.TemporaryDirectory(prefix="vidcap-bench-") as scratch:
        then = Path(scratch) / "then"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(then),
                        args.against], check=True)  # fmt: skip
        try:
            out = Path(scratch) / "out"
            started = time.monotonic()
            big_folder(out, args.videos, args.captions)
            generated = round(time.monotonic() - started, 1)
            runs: dict[str, list[dict]] = {"this tree": [], args.against: []}
            trees = {args.against: then, "this tree": ROOT}
            pages = Path(scratch) / "pages"  # each tree's own page, moved in for its turn
            for label, tree in trees.items():  # first pages: every .vtt script written
                with own_page(out, pages / label.replace("/", "_")):
                    one_end(tree, out)
            for round_ in range(args.rounds):
                # a top-up run: new videos, named among, after or before the others
                added = [FakeVideo(new_name(args.where, round_, i), ("a new clip",) * args.captions)
                         for i in range(args.add)]  # fmt: skip
                write_folder(out, added, ("jsonl", "vtt"), durable=False)
                for label, tree in trees.items():
                    with own_page(out, pages / label.replace("/", "_")):
                        runs[label].append(one_end(tree, out))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(then)],
                           check=False)  # fmt: skip

    def median(tree: str, part: str) -> float:
        return statistics.median(run[part] for run in runs[tree])

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "videos": args.videos,
        "captions_per_video": args.captions,
        "added_per_round": args.add,
        "added_names_sort": args.where,
        "folder_written_s": generated,
        "runs": runs,
        "ratio_this_tree_to_rev": {
            part: round(median("this tree", part) / median(args.against, part), 2)
            for part in ("summary_s", "report_s", "total_s")
        },
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
