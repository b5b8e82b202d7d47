"""``vidcap caption --server`` on TorchServe against the embedded run: same clips, same settings.

    python -m bench.serving [--model tiny] [--workers 1] [--fps 5] [--copies 4]
                            [--repeats 2] [--out bench/results/serving_cpu_tiny.json]

Run it as a module from the repository root: it starts TorchServe with the tests' helper
(``tests.support.torchserve``).

Starts a real TorchServe (``torchserve/server-create.sh`` + ``start.sh``, token auth on)
on free loopback ports, captions ``--copies`` copies of every sample video once embedded
and once through the server (PNG, the client's defaults), checks that the outputs are
the same, and writes frames/s of both and their ratio. The server run goes through the
protocol gate (``vidcap.serve.gate``, the public inference port), as clients do; it is
repeated straight against TorchServe's own inference port behind the gate, to give the
gate's cost. Each server run is done ``--repeats`` times, alternating, best kept.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from tests.support.torchserve import TorchServeInstance
from vidcap.cli import main as vidcap

ROOT = Path(__file__).resolve().parents[1]


def caption(videos: Path, out: Path, common: list[str], extra: list[str]) -> float:
    started = time.perf_counter()
    code = vidcap(["caption", str(videos), "--out", str(out), "--quiet", *common, *extra])
    if code != 0:
        raise SystemExit(f"vidcap caption {' '.join(extra)} failed with {code}")
    return time.perf_counter() - started


def frames_in(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("*.jsonl"))


def same_outputs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.jsonl"))
    return names == sorted(p.name for p in b.glob("*.jsonl")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fps", default="5")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serving_cpu_tiny.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidcap-bench-serving-") as tmp:
        root = Path(tmp)
        videos = root / "videos"
        videos.mkdir()
        for source in sorted((ROOT / "sample_videos").glob("*.mp4")):
            for copy in range(args.copies):
                shutil.copy(source, videos / f"{source.stem}_{copy}.mp4")
        common = ["--model", args.model, "--fps", args.fps]
        embedded_s = caption(videos, root / "embedded", common, ["--device", args.device])
        (root / "ts").mkdir()
        server = TorchServeInstance.launch(
            root / "ts",
            {
                "VIDCAP_MODEL": args.model,
                "NUM_GPUS": "0" if args.device == "cpu" else "",
                "NUM_WORKERS": str(args.workers),
            },
        )
        try:
            os.environ["VIDCAP_TOKEN"] = server.key("inference") or ""
            backend = server.predictions_url.replace(
                server.inference_url, f"http://127.0.0.1:{server.env['BACKEND_INFERENCE_PORT']}"
            )
            remote_s = direct_s = float("inf")
            for _ in range(args.repeats):
                for url, out in ((server.predictions_url, "remote"), (backend, "direct")):
                    shutil.rmtree(root / out, ignore_errors=True)
                    took = caption(videos, root / out, common, ["--server", url])
                    if out == "remote":
                        remote_s = min(remote_s, took)
                    else:
                        direct_s = min(direct_s, took)
        finally:
            server.stop()
        frames = frames_in(root / "embedded")
        result = {
            "machine": platform.platform(),
            "model": args.model,
            "device": args.device,
            "torchserve_workers": args.workers,
            "videos": len(list(videos.iterdir())),
            "frames": frames,
            "embedded_frames_per_s": round(frames / embedded_s, 2),
            "server_frames_per_s": round(frames_in(root / "remote") / remote_s, 2),
            "ratio_server_to_embedded": round(embedded_s / remote_s, 3),
            "server_without_gate_frames_per_s": round(frames_in(root / "direct") / direct_s, 2),
            "gate_cost": round(remote_s / direct_s - 1, 3),
            "outputs_identical": same_outputs(root / "embedded", root / "remote")
            and same_outputs(root / "embedded", root / "direct"),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
