"""A library moved to another path: the rerun that keeps its captions beside captioning it
again, in one run (``vidcap.moved``; ratios reported, never asserted).

    python bench/moved.py --clips-dir DIR [--out bench/results/moved_cpu.json]

``DIR``: the clips ``bench/bulk.py --clips-dir DIR`` keeps (any folder of videos). Each
round copies them into a library, captions it (tiny model, every format), moves the library,
then times ``vidcap caption`` over the moved library into the same folder (its outputs
rewritten to name the new path, nothing captioned), once more there (nothing to do: the
command's fixed cost) and into a new folder (every video captioned again), each as a whole
command, process start included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIDCAP = [sys.executable, "-m", "vidcap", "caption"]
ARGS = ["--model", "tiny", "--quiet", "--format", "jsonl,srt,vtt,parquet"]


def timed(*args: object) -> float:
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([*VIDCAP, *map(str, args), *ARGS], check=True, env=env)
    return time.perf_counter() - started


def one_round(clips: Path, work: Path) -> dict[str, float]:
    library, moved, out = work / "library", work / "moved", work / "out"
    shutil.copytree(clips, library)
    timed(library, "--out", out)
    library.rename(moved)
    kept = timed(moved, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["frames"] == 0 and summary["run"]["resumed"] == summary["run"]["videos"]
    nothing = timed(moved, "--out", out)  # everything done where it is: the command's fixed cost
    again = timed(moved, "--out", work / "fresh")
    return {
        "videos": summary["run"]["videos"],
        "moved_rerun_s": kept,
        "nothing_to_do_s": nothing,
        "captioned_again_s": again,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips-dir", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/moved_cpu.json"))
    args = parser.parse_args()
    rounds = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="vidcap-moved-") as work:
            rounds.append(one_round(args.clips_dir, Path(work)))
    kept = statistics.median(r["moved_rerun_s"] for r in rounds)
    nothing = statistics.median(r["nothing_to_do_s"] for r in rounds)
    again = statistics.median(r["captioned_again_s"] for r in rounds)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rounds": rounds,
        "moved_rerun_s_median": round(kept, 3),
        "nothing_to_do_s_median": round(nothing, 3),
        "moving_ms_per_video": round((kept - nothing) / rounds[0]["videos"] * 1000, 1),
        "captioned_again_s_median": round(again, 3),
        "speedup": round(again / kept, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
