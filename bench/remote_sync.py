"""A remote ``--out`` on a big folder: today's staging beside earlier revisions', in one run.

    python bench/remote_sync.py REV [REV ...] [--videos 20000] [--out FILE]

A run with ``--out s3://…`` writes into a local staging folder (``vidcap.remote_out``):
before the run it lists the remote folder and makes a local placeholder per output, every
30 s a sync uploads what changed, and a last push at the end. Here the remote folder is
fsspec's in-memory store holding ``--videos`` done videos (three caption files and ten
thumbnails each, as a run at ``--fps 1`` over 10 s clips leaves) and nothing changes, so
each step costs what it costs to find that out: the listing and placeholders (``pull``),
one sync (``push()``), the last push (``push(everything=True)`` today; earlier revisions'
sync read the whole folder, so theirs is the same call).

Each revision's whole ``vidcap/`` (``git archive``; ``WORKTREE`` for today's files) runs in
its own Python process, in turn. Reported: seconds per step and the local files made; today's
ratio to each revision. Ratios, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_stage import WORKTREE, export, run_in_tree  # noqa: E402 - bench/, the script's folder

CHILD = """
import inspect, json, os, sys, time, uuid
import fsspec
import vidcap
from pathlib import Path
from vidcap.remote_out import StagedFolder
assert Path(vidcap.__file__).resolve().is_relative_to(Path.cwd().resolve()), vidcap.__file__
videos = int(sys.argv[1])
url = f"memory://bench-{uuid.uuid4().hex}/run"
fs, root = fsspec.core.url_to_fs(url)
for v in range(videos):
    for ext in ("jsonl", "srt", "vtt"):
        fs.pipe_file(f"{root}/v{v}.{ext}", b"x")
    for f in range(10):
        fs.pipe_file(f"{root}/thumbs/v{v}/{f:06d}.jpg", b"j")
fs.pipe_file(f"{root}/summary.json", b"{}")
staged = StagedFolder(url)
try:
    started = time.perf_counter(); staged.pull(); pull = time.perf_counter() - started
    started = time.perf_counter(); staged.push(); sync = time.perf_counter() - started
    whole = "everything" in inspect.signature(staged.push).parameters
    started = time.perf_counter()
    staged.push(everything=True) if whole else staged.push()
    last = time.perf_counter() - started
    files = sum(len(names) for _, _, names in os.walk(staged.local))
finally:
    staged.close()
print(json.dumps({"objects": len(fs.find(root)), "local_files": files, "pull_s": pull,
                  "sync_s": sync, "last_push_s": last}))
"""


def measure(tree: Path, videos: int) -> dict:
    return run_in_tree(tree, CHILD, str(videos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help=f"git revisions ({WORKTREE}: today's files)")
    parser.add_argument("--videos", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        for revision in [WORKTREE, *args.revisions]:
            results[revision] = measure(export(revision, Path(folder)), args.videos)
            print(revision, json.dumps({k: round(v, 2) for k, v in results[revision].items()}))
    today = results[WORKTREE]
    for revision in args.revisions:
        then = results[revision]
        ratios = {
            step: round(then[step] / today[step], 1) if today[step] else None
            for step in ("pull_s", "sync_s", "last_push_s")
        }
        print(f"{revision} / today: {ratios} (how many times longer each step took there)")
    report = {"machine": platform.platform(), "cpus": os.cpu_count(), "videos": args.videos,
              "results": results}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
