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


def equal_share(a: Path, b: Path) -> float:
    """The share of ``a``'s frames whose caption ``b`` has too (same video, same frame)."""
    rows_a = {(p.name, line) for p in a.glob("*.jsonl") for line in p.read_text().splitlines()}
    rows_b = {(p.name, line) for p in b.glob("*.jsonl") for line in p.read_text().splitlines()}
    return round(len(rows_a & rows_b) / len(rows_a), 4) if rows_a else 0.0


def embedded_warm(videos: Path, out: Path, args: argparse.Namespace) -> float:
    """The engine in this process with the model loaded and warmed first (what each further
    clip of a long run costs): the server, too, has its model loaded before it is timed."""
    import numpy as np

    from vidcap.backend import EmbeddedBackend
    from vidcap.engine import run
    from vidcap.jobs import RunSettings
    from vidcap.model import Captioner
    from vidcap.settings import GenerationSettings, ModelSettings, SamplingSettings

    batch = None if args.batch_size == "auto" else int(args.batch_size)
    captioner = Captioner.load(ModelSettings(args.model, args.device, batch_size=batch))
    generation = GenerationSettings(max_new_tokens=args.max_new_tokens)
    captioner.caption([np.zeros((224, 224, 3), np.uint8)] * 2, generation)  # warm-up
    settings = RunSettings(
        out_dir=out,
        sampling=SamplingSettings(fps=float(args.fps)),
        generation=generation,
        model=args.model,
        quiet=True,
    )
    started = time.perf_counter()
    results = run([str(p) for p in sorted(videos.glob("*.mp4"))], settings,
                  lambda: EmbeddedBackend(captioner))  # fmt: skip
    seconds = time.perf_counter() - started
    if any(r.status != "done" for r in results):
        raise SystemExit("the embedded run failed a video")
    return seconds  # (the model goes with this frame: the server's worker loads its own)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--fps", default="5")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--videos", type=Path, default=None,
                        help="caption these videos (a folder) instead of copies of sample_videos/")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warm", action="store_true",
                        help="embedded: the engine with the model loaded (else the command)")  # fmt: skip
    parser.add_argument("--no-direct", action="store_true",
                        help="skip the run straight against TorchServe (the gate's cost)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=30)
    parser.add_argument("--batch-size", default="auto", help="embedded frames per forward pass")
    parser.add_argument("--prebatch", type=int, default=None, help="client frames per request")
    parser.add_argument("--inflight", type=int, default=None, help="client requests in flight")
    parser.add_argument("--ts-batch", type=int, default=None,
                        help="TorchServe batchSize (requests per handler call)")  # fmt: skip
    parser.add_argument("--max-batch", type=int, default=None,
                        help="the handler's frames per generate() call")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/serving_cpu_tiny.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vidcap-bench-serving-") as tmp:
        root = Path(tmp)
        videos = args.videos
        if videos is None:
            videos = root / "videos"
            videos.mkdir()
            for source in sorted((ROOT / "sample_videos").glob("*.mp4")):
                for copy in range(args.copies):
                    shutil.copy(source, videos / f"{source.stem}_{copy}.mp4")
        common = ["--model", args.model, "--fps", args.fps,
                  "--max-new-tokens", str(args.max_new_tokens)]  # fmt: skip
        if args.warm:
            embedded_s = embedded_warm(videos, root / "embedded", args)
            if args.device != "cpu":  # (the worker loads its own copy of the model)
                import gc

                import torch

                gc.collect()
                torch.cuda.empty_cache()
        else:
            embedded_s = caption(videos, root / "embedded", common,
                                 ["--device", args.device, "--batch-size", args.batch_size])  # fmt: skip
        (root / "ts").mkdir()
        settings = {
            "VIDCAP_MODEL": args.model,
            "NUM_GPUS": "0" if args.device == "cpu" else "",
            "NUM_WORKERS": str(args.workers),
        }
        if args.ts_batch:
            settings["BATCH_SIZE"] = str(args.ts_batch)
        if args.max_batch:
            settings["VIDCAP_MAX_BATCH"] = str(args.max_batch)
        launched = time.perf_counter()
        server = TorchServeInstance.launch(root / "ts", settings, timeout=600)
        start_s = time.perf_counter() - launched
        client = [f"--{name}={value}" for name, value in
                  (("prebatch", args.prebatch), ("inflight", args.inflight)) if value]  # fmt: skip
        try:
            # The gate checks the clients' key (run_dir/key_file.json); TorchServe behind it
            # takes its own (run_dir/backend/key_file.json, new at every start).
            keys = {"remote": server.key("inference") or "", "direct": ""}
            backend_keys = server.run_dir / "backend" / "key_file.json"
            if backend_keys.is_file():
                keys["direct"] = json.loads(backend_keys.read_text())["inference"]["key"]
            backend = server.predictions_url.replace(
                server.inference_url, f"http://127.0.0.1:{server.env['BACKEND_INFERENCE_PORT']}"
            )
            remote_s = direct_s = float("inf")
            runs = [(server.predictions_url, "remote")]
            if not args.no_direct:
                runs.append((backend, "direct"))
            for _ in range(args.repeats):
                for url, out in runs:
                    os.environ["VIDCAP_TOKEN"] = keys[out]
                    shutil.rmtree(root / out, ignore_errors=True)
                    took = caption(videos, root / out, common, ["--server", url, *client])
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
            "videos": len(list(videos.glob("*.mp4"))),
            "frames": frames,
            "embedded": "engine, model loaded" if args.warm else "vidcap caption (load included)",
            "client": client or "defaults",
            "torchserve_batch": args.ts_batch or "config.properties",
            "handler_max_batch": args.max_batch or "model-config.yaml",
            "server_start_s": round(start_s, 1),
            "embedded_frames_per_s": round(frames / embedded_s, 2),
            "server_frames_per_s": round(frames_in(root / "remote") / remote_s, 2),
            "ratio_server_to_embedded": round(embedded_s / remote_s, 3),
            "captions_equal_share": equal_share(root / "embedded", root / "remote"),
        }
        if not args.no_direct:
            result["server_without_gate_frames_per_s"] = round(
                frames_in(root / "direct") / direct_s, 2
            )
            result["gate_cost"] = round(remote_s / direct_s - 1, 3)
            result["outputs_identical"] = same_outputs(
                root / "embedded", root / "remote"
            ) and same_outputs(root / "embedded", root / "direct")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
