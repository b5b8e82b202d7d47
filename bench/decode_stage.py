"""The decode stage of today's tree beside earlier revisions', side by side in one run.

    python bench/decode_stage.py REV [REV ...] [--clips 6] [--repeat 5] [--interlaced]
        [--scenes] [--out FILE]

What each decoder process of ``vidcap caption`` runs, ``vidcap.decode.decode_events``: the
sampled frames at the model's input size (224×224) with a 160-pixel JPEG thumbnail each (the
defaults), on one decoder thread, for H.264 clips like ``bench/bulk.py``'s (30 fps, ``-g 60``,
x264's B-frames) at 360p (its cpu workload) and 720p (its gpu workload), at ``--fps 1`` and
at every frame (where converting frames costs most). ``--interlaced``: 1080i clips instead
(x264 coded interlaced, top field first, 25 frames/s: broadcast), where today's tree scales
each frame's first field and older ones the woven frame. ``--scenes``: ``--scenes`` sampling
instead (every frame to PySceneDetect's detector, a sample a shot).

Each revision's whole ``vidcap/`` (``git archive``; ``WORKTREE`` for today's files, committed
or not) runs in its own Python process, in turn (order reversed every other round). Reported:
wall and CPU seconds, best and median; today's ratio to each revision; whether each revision
takes the same samples (index, time); how far its model-input pixels lie from today's (mean
absolute difference, 0–255). Ratios, never assertions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk import make_clips  # noqa: E402 - bench/, the script's folder

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"
SIZES = {"360p": (5, 360, 640), "720p": (12, 720, 1280)}  # seconds, height, width
INTERLACED = {"1080i": (6, 1080, 1920)}  # --interlaced: 1080i at 25 frames/s, top first
SAMPLINGS = {"--fps 1": {"fps": 1.0}, "every frame": {"fps": None, "every_n": 1}}
SCENES = {"--scenes": {"scenes": True}}  # --scenes: shots (every frame to the detector)
MODEL_SIZE = (224, 224)
THUMB_HEIGHT = 160

# Run in a child process whose sys.path starts with one revision's tree.
CHILD = f"""
import json, sys, time
import numpy as np
from vidcap.decode import Decoded, decode_events
from vidcap.settings import SamplingSettings
import vidcap
from pathlib import Path
assert Path(vidcap.__file__).resolve().is_relative_to(Path.cwd().resolve()), vidcap.__file__
paths, sampling, pixels = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
sampling = SamplingSettings(thumb_height={THUMB_HEIGHT}, **sampling)
started, started_cpu = time.perf_counter(), time.process_time()
samples, first = [], []
for job, path in enumerate(paths):
    for event in decode_events(job, path, sampling, {MODEL_SIZE}, threads=1):
        if isinstance(event, Decoded):
            samples.append((event.frame.index, round(event.frame.time, 6)))
            if len(first) == job:
                first.append(event.frame.rgb)
wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
if pixels:
    np.save(pixels, np.stack(first))
print(json.dumps({{"wall": wall, "cpu": cpu, "samples": samples}}))
"""


def export(revision: str, folder: Path) -> Path:
    """``vidcap/`` as it is at ``revision`` (or in the work tree) under ``folder``."""
    tree = folder / revision.replace("/", "_")
    tree.mkdir()
    if revision == WORKTREE:
        subprocess.run(["cp", "-r", str(ROOT / "vidcap"), str(tree)], check=True)
        return tree
    archive = subprocess.run(
        ["git", "archive", revision, "vidcap"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run_in_tree(tree: Path, code: str, *args: str, **env: str) -> dict:
    """``code`` run in a fresh Python process whose ``vidcap`` is ``tree``'s: the JSON
    object its last line prints."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=dict(os.environ, PYTHONPATH=str(tree), **env),
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip  (cwd: ``-c`` puts the working folder first on sys.path)
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode(tree: Path, paths: list[Path], sampling: dict, pixels: Path | None = None) -> dict:
    return run_in_tree(
        tree, CHILD, json.dumps([str(p) for p in paths]), json.dumps(sampling), str(pixels or ""),
        OMP_NUM_THREADS="1",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("revisions", nargs="+", help=f"git revisions ({WORKTREE}: today's files)")
    parser.add_argument("--today", default=WORKTREE, help="the revision the others are beside")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--interlaced", action="store_true", help="1080i clips instead (coded interlaced)"
    )
    parser.add_argument(
        "--scenes", action="store_true", help="--scenes sampling instead (shots, one a sample)"
    )
    args = parser.parse_args()
    names = [args.today, *args.revisions]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trees = {name: export(name, folder) for name in names}
        sizes, fps = (INTERLACED, 25) if args.interlaced else (SIZES, 30)
        for label, (seconds, height, width) in sizes.items():
            clips = folder / label
            clips.mkdir()
            paths = make_clips(clips, args.clips, seconds, height, width, fps, args.interlaced)
            for sampling_label, sampling in (SCENES if args.scenes else SAMPLINGS).items():
                first = {n: decode(trees[n], paths, sampling, folder / f"{n}.npy") for n in names}
                today_pixels = np.load(folder / f"{args.today}.npy").astype(np.int16)
                wall: dict[str, list[float]] = {n: [] for n in names}
                cpu: dict[str, list[float]] = {n: [] for n in names}
                for round_ in range(args.repeat):
                    for name in names if round_ % 2 == 0 else reversed(names):
                        result = decode(trees[name], paths, sampling)
                        wall[name].append(result["wall"])
                        cpu[name].append(result["cpu"])
                row: dict = {
                    "clips": f"{args.clips} × {seconds} s {width}x{height}",
                    "sampling": sampling_label,
                    "samples": len(first[args.today]["samples"]),
                }
                for name in names:
                    pixels = np.load(folder / f"{name}.npy").astype(np.int16)
                    row[name] = {
                        "wall_best_s": round(min(wall[name]), 3),
                        "wall_median_s": round(statistics.median(wall[name]), 3),
                        "cpu_best_s": round(min(cpu[name]), 3),
                        "cpu_median_s": round(statistics.median(cpu[name]), 3),
                        "same_samples": first[name]["samples"] == first[args.today]["samples"],
                        "pixels_mean_abs_diff": round(
                            float(np.abs(pixels - today_pixels).mean()), 3
                        ),
                    }
                row["today_over"] = {
                    name: {
                        key: round(row[args.today][key] / row[name][key], 3)
                        for key in row[args.today]
                        if key.endswith("_s")
                    }
                    for name in args.revisions
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        "machine": {
            "description": f"{os.cpu_count()}-core CPU, {platform.processor() or platform.machine()}",
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "workload": f"decode_events, model input {MODEL_SIZE[0]}x{MODEL_SIZE[1]}, "
        f"{THUMB_HEIGHT}-pixel thumbnails, one decoder thread, best/median of {args.repeat}",
        "today": args.today,
        "rows": rows,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
