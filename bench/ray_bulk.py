"""``vidcap caption --ray`` beside the embedded engine on the same clips, in one run.

    python bench/ray_bulk.py [--clips 40] [--repeats 1] [--out bench/results/ray_bulk_cpu.json]

The CPU workload of ``bench/bulk.py`` (tiny model, 5 s 360p H.264 clips at ``--fps 1``),
interleaved so every variant sees the same machine. Reported as frames/s and as ratios to
FFmpeg decoding every frame (``decode_all``, one process per core), never asserted:

- ``embedded``: ``vidcap caption`` (the streaming engine), wall clock, process start and
  model load included;
- ``ray_cli``: ``vidcap caption --ray``: the same, plus starting and stopping a local Ray
  cluster;
- ``ray_warm``: ``vidcap.ray.caption_dataset`` on a cluster already up, its actor's model
  load included — what a run on a standing cluster costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from bulk import WORKLOADS, decode_all, make_clips, vidcap_cli  # bench/, the script's folder

ROOT = Path(__file__).resolve().parents[1]


def ray_warm(folder: Path) -> tuple[float, int]:
    from vidcap.ray import caption_dataset
    from vidcap.settings import ModelSettings

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        results = caption_dataset(
            [folder], out, model=ModelSettings(model="tiny", device="cpu"), quiet=True
        )
        return time.perf_counter() - started, sum(r.frames for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=WORKLOADS["cpu"][0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/ray_bulk_cpu.json")
    args = parser.parse_args()

    import ray

    cores = os.cpu_count() or 1
    _, seconds, height, width, fps = WORKLOADS["cpu"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        paths = make_clips(folder, args.clips, seconds, height, width, fps)
        for _ in range(args.repeats):
            decode_s = decode_all(paths, cores)
            with tempfile.TemporaryDirectory() as out:
                embedded_s, summary = vidcap_cli(folder, Path(out), ["--model", "tiny"])
            with tempfile.TemporaryDirectory() as out:
                ray_s, ray_summary = vidcap_cli(
                    folder, Path(out), ["--model", "tiny", "--device", "cpu", "--ray"]
                )
            ray.init(include_dashboard=False, logging_level="WARNING")
            try:
                warm_s, warm_frames = ray_warm(folder)
            finally:
                ray.shutdown()
            frames = summary["run"]["frames"]
            if not frames == ray_summary["run"]["frames"] == warm_frames:
                raise SystemExit("the variants captioned different frames: not comparable")
            runs.append(
                {
                    "frames": frames,
                    "decode_all_sampled_fps": round(frames / decode_s, 1),
                    "embedded_fps": round(frames / embedded_s, 1),
                    "ray_cli_fps": round(frames / ray_s, 1),
                    "ray_warm_fps": round(frames / warm_s, 1),
                    "embedded_over_decode_all": round(decode_s / embedded_s, 2),
                    "ray_cli_over_decode_all": round(decode_s / ray_s, 2),
                    "ray_warm_over_decode_all": round(decode_s / warm_s, 2),
                    "ray_cli_over_embedded": round(embedded_s / ray_s, 2),
                }
            )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores (CPU only)",
        "workload": f"{args.clips} × {seconds} s {height}p H.264 {fps} fps, --fps 1, tiny model",
        "runs": runs,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],  # a shared machine?
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
