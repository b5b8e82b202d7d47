"""Bulk throughput of ``vidcap caption`` beside what its parts allow, in one run.

    python bench/bulk.py cpu  [--out bench/results/bulk_cpu.json]   # tiny model, 40 × 5 s 360p
    python bench/bulk.py gpu  [--out bench/results/bulk_gpu.json]   # BLIP-2-sized, 24 × 12 s 720p
                                                                     # × 10 copies (2,880 samples)

``--copies N``: each clip N times as separate files (a GPU run needs thousands of samples;
drawing and encoding that many 720p clips would cost minutes there). ``--clips-dir DIR``: the
clips kept in DIR and reused by a later run or by ``bench/serving.py --videos DIR``.

Reported side by side, as frames/s and ratios (never asserted):
- ``vidcap``: the whole command at its defaults (``--fps 1``), wall clock, process start and
  model load included (cpu), or the engine with the BLIP-2-sized model (gpu);
- ``engine_warm`` (cpu): the engine in this process with the model already loaded — what each
  further clip of a long run costs; the difference is the command's fixed cost;
- ``decode_all``: FFmpeg decoding every frame of every clip, one single-threaded process
  per core (``xargs -P<cores> ffmpeg -threads 1 -i clip -f null -``) — the decode limit;
- ``model_only``: the model captioning already-decoded frames at the engine's batch size;
- ``thumbs_cost`` (cpu): the command at its defaults (a thumbnail per sample) against the
  same with ``--no-thumbs``, as a fraction of the run;
- ``gpu_use_during_engine`` (gpu): ``nvidia-smi`` sampled every 200 ms during the engine run
  (utilisation mean, median, 10th percentile; peak memory);
- ``model_profile`` (gpu): ``torch.profiler`` over two model batches, the ops with the most
  device time and their share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS = {
    # name: clips, seconds, height, width, fps
    "cpu": (40, 5, 360, 640, 30),
    "gpu": (24, 12, 720, 1280, 30),
}
COPIES = {"cpu": 1, "gpu": 10}  # each clip this many times (--copies)


def clip_set(
    folder: Path, clips: int, copies: int, seconds: int, height: int, width: int, fps: int
) -> list[Path]:
    """``clips`` clips (``make_clips``), each ``copies`` times as separate files; a folder
    that already holds them (``--clips-dir``, a second run) is used as it is."""
    listing = folder / "clips.json"
    wanted = {"clips": clips, "copies": copies, "seconds": seconds, "size": [height, width],
              "fps": fps, "ffmpeg": FFMPEG is not None}  # fmt: skip
    if listing.is_file() and json.loads(listing.read_text()).get("wanted") == wanted:
        return [folder / name for name in json.loads(listing.read_text())["files"]]
    paths = make_clips(folder, clips, seconds, height, width, fps)
    for copy in range(1, copies):
        for path in paths[:clips]:
            twin = path.with_name(f"{path.stem}_{copy}{path.suffix}")
            shutil.copyfile(path, twin)  # (a copy, not a link: vidcap counts a link once)
            paths.append(twin)
    listing.write_text(json.dumps({"wanted": wanted, "files": [p.name for p in paths]}))
    return paths


def find_ffmpeg() -> str | None:
    """The ``ffmpeg`` command: on PATH, else imageio-ffmpeg's; None where neither is (a GPU
    machine with only the PyAV wheel carried to it: then PyAV, the same libavcodec)."""
    forced = os.environ.get("BENCH_FFMPEG")  # a path, or "none": PyAV (checks that path)
    if forced:
        return None if forced == "none" else forced
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


FFMPEG = find_ffmpeg()


def make_clips(
    folder: Path,
    clips: int,
    seconds: int,
    height: int,
    width: int,
    fps: int,
    interlaced: bool = False,
) -> list[Path]:
    """H.264 clips with a keyframe every 2 s and B-frames (x264 defaults), varied content;
    ``interlaced``: coded interlaced, top field first (as 1080i broadcast; ffmpeg only)."""
    if interlaced and FFMPEG is None:
        raise SystemExit("interlaced clips need the ffmpeg command")
    if FFMPEG is None:  # one process per core: a 12 s 720p clip takes seconds to draw
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        draw = partial(_pyav_clip, folder, seconds=seconds, height=height, width=width, fps=fps)
        with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
            return list(pool.map(draw, range(clips)))
    paths = []
    sources = ["testsrc2", "smptehdbars", "mandelbrot", "rgbtestsrc", "cellauto"]
    for i in range(clips):
        path = folder / f"clip{i:03d}.mp4"
        source = sources[i % len(sources)]
        graph = f"{source}=size={width}x{height}:rate={fps}"
        if source == "cellauto":
            graph = f"cellauto=size={width}x{height}:rate={fps}:rule={30 + i}"
        subprocess.run(
            [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-t", str(seconds),
             "-vf", f"hue=h={i * 17}" + (",setfield=tff" if interlaced else ""),
             "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p",
             *(["-flags", "+ildct+ilme"] if interlaced else []), str(path)],
            check=True,
        )  # fmt: skip
        paths.append(path)
    return paths


def _pyav_clip(folder: Path, i: int, *, seconds: int, height: int, width: int, fps: int) -> Path:
    """Without an ``ffmpeg`` command: the same kind of clip through PyAV's libx264, a camera
    panning over blocks and gradients (drawn once; each frame is a slice of it)."""
    import av
    import numpy as np

    path = folder / f"clip{i:03d}.mp4"
    frames = seconds * fps
    rng = np.random.default_rng(i)
    wide = width + 4 * frames
    blocks = rng.integers(0, 255, (height // 32 + 1, wide // 32 + 1, 3), dtype=np.uint8)
    canvas = np.repeat(np.repeat(blocks, 32, 0), 32, 1)[:height, :wide]
    canvas[..., 1] = (np.arange(wide, dtype=np.uint16)[None, :] + 7 * i) % 256
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": "60"}
        for n in range(frames):
            rgb = np.ascontiguousarray(canvas[:, 4 * n : 4 * n + width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _pyav_decode_all(path: str) -> int:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        return sum(1 for _ in container.decode(stream))


def decode_all(paths: list[Path], workers: int) -> float:
    """Seconds for FFmpeg to decode every frame of every clip, ``workers`` processes (the
    ``ffmpeg`` command, one thread each; without one, PyAV in a process pool likewise)."""
    started = time.perf_counter()
    if FFMPEG is None:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_pyav_decode_all, map(str, paths)))
        return time.perf_counter() - started
    listing = "\n".join(map(str, paths)).encode()
    subprocess.run(
        ["xargs", f"-P{workers}", "-I{}", FFMPEG, "-v", "error", "-threads", "1", "-i", "{}",
         "-f", "null", "-"],
        input=listing, check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def vidcap_cli(folder: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "vidcap", "caption", str(folder), "--out", str(out), "--quiet",
         *extra],
        check=True, env=env,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "summary.json").read_text())


def model_only(captioner, frames: int, generation) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = captioner.input_size
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(frames)]
    captioner.caption(images[: captioner.batch_size], generation)  # warm up
    _sync(captioner.device)
    started = time.perf_counter()
    captioner.caption(images, generation)
    _sync(captioner.device)
    return frames / (time.perf_counter() - started)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_warm(paths: list[Path], captioner) -> tuple[float, int]:
    """The engine with the model already loaded (a long run's steady state)."""
    from vidcap.backend import EmbeddedBackend
    from vidcap.engine import run
    from vidcap.jobs import RunSettings

    with tempfile.TemporaryDirectory() as out:
        settings = RunSettings(out_dir=Path(out), model="tiny", quiet=True)
        started = time.perf_counter()
        results = run([str(p) for p in paths], settings, lambda: EmbeddedBackend(captioner))
        return time.perf_counter() - started, sum(r.frames for r in results)


def bench_cpu(folder: Path, paths: list[Path], repeats: int) -> dict:
    from vidcap.model import Captioner
    from vidcap.settings import GenerationSettings, ModelSettings

    cores = os.cpu_count() or 1
    captioner = Captioner.load(ModelSettings(model="tiny", device="cpu"))
    runs = []
    for _ in range(repeats):  # interleaved, so all see the same machine
        decode_s = decode_all(paths, cores)
        with tempfile.TemporaryDirectory() as out:
            vidcap_s, summary = vidcap_cli(folder, Path(out), ["--model", "tiny"])
        with tempfile.TemporaryDirectory() as out:
            bare_s, _ = vidcap_cli(folder, Path(out), ["--model", "tiny", "--no-thumbs"])
        warm_s, warm_frames = engine_warm(paths, captioner)
        frames = summary["run"]["frames"]
        assert warm_frames == frames  # noqa: S101 - a benchmark that compares like with like
        runs.append({
            "decode_all_sampled_fps": round(frames / decode_s, 1),
            "vidcap_fps": round(frames / vidcap_s, 1),
            "vidcap_over_decode_all": round(decode_s / vidcap_s, 2),
            "engine_warm_fps": round(frames / warm_s, 1),
            "engine_warm_over_decode_all": round(decode_s / warm_s, 2),
            "frames": frames,
            "thumbs_cost": round(vidcap_s / bare_s - 1, 3),
        })  # fmt: skip
    startup = sum(r["frames"] / r["vidcap_fps"] - r["frames"] / r["engine_warm_fps"] for r in runs)
    return {
        "runs": runs,
        "median_ratio": sorted(r["vidcap_over_decode_all"] for r in runs)[len(runs) // 2],
        "median_warm_ratio": sorted(r["engine_warm_over_decode_all"] for r in runs)[len(runs) // 2],
        "median_thumbs_cost": sorted(r["thumbs_cost"] for r in runs)[len(runs) // 2],
        "cli_fixed_cost_s": round(startup / len(runs), 2),
        "model_only_fps": round(model_only(captioner, 256, GenerationSettings()), 1),
        "batch_size": captioner.batch_size,
    }


class GpuUse:
    """``nvidia-smi`` sampled every 200 ms while the block runs: utilisation and memory.
    Where there is no ``nvidia-smi`` (a dry run on a CPU), ``summary`` says so."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> GpuUse:
        command = shutil.which("nvidia-smi")
        if command:
            self._process = subprocess.Popen(
                [command, "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        output, _ = self._process.communicate(timeout=10)
        for line in output.splitlines():
            parts = [part.strip() for part in line.split(",")]
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue  # (a line cut by the stop)

    def summary(self) -> dict:
        if not self.samples:
            return {"note": "no nvidia-smi: not sampled"}
        use = sorted(u for u, _ in self.samples)
        return {
            "samples": len(use),
            "util_mean_pct": round(sum(use) / len(use), 1),
            "util_median_pct": use[len(use) // 2],
            "util_p10_pct": use[len(use) // 10],
            "memory_max_mib": max(m for _, m in self.samples),
        }


def profile_model(captioner, generation, batches: int = 2, rows: int = 12) -> list[dict]:
    """Where a few model batches spend their time (``torch.profiler``): the ``rows`` ops
    with the most device time (CPU time on a CPU), as name, calls and share of the total."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile

    cuda = captioner.device.startswith("cuda")
    rng = np.random.default_rng(1)
    h, w = captioner.input_size
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(captioner.batch_size)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as trace:
        for _ in range(batches):
            captioner.caption(images, generation)
        _sync(captioner.device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in trace.key_averages() if getattr(e, key, 0) > 0]
    total = sum(getattr(e, key) for e in events) or 1
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {"op": e.key, "calls": e.count, "share": round(getattr(e, key) / total, 3)}
        for e in events[:rows]
    ]


def bench_gpu(paths: list[Path], tokens: int, dry_run: bool) -> dict:
    """``dry_run``: the same code on this machine's CPU with the tiny model (a check of the
    script before it goes to a GPU, not a measurement)."""
    import torch

    from vidcap.backend import EmbeddedBackend
    from vidcap.engine import EngineSettings, run
    from vidcap.jobs import RunSettings
    from vidcap.model import Captioner
    from vidcap.settings import GenerationSettings, ModelSettings

    if dry_run:
        captioner = Captioner.load(ModelSettings(model="tiny", device="cpu"))
    else:
        from blip2_sized import blip2_sized_captioner

        captioner = blip2_sized_captioner("cuda", torch.float16, None, tokens)
    generation = GenerationSettings(max_new_tokens=tokens)
    model_fps = model_only(captioner, 4 * captioner.batch_size, generation)
    cores = os.cpu_count() or 1
    decode_s = decode_all(paths, cores)
    with tempfile.TemporaryDirectory() as out:
        settings = RunSettings(
            out_dir=Path(out), generation=generation, model="blip2-sized", quiet=True
        )
        with GpuUse() as use:
            started = time.perf_counter()
            results = run(
                [str(p) for p in paths],
                settings,
                lambda: EmbeddedBackend(captioner),
                EngineSettings(),
            )
            seconds = time.perf_counter() - started
    frames = sum(r.frames for r in results)
    engine_fps = frames / seconds
    decode_fps = frames / decode_s
    return {
        "gpu": "dry run on CPU" if dry_run else torch.cuda.get_device_name(),
        "batch_size": captioner.batch_size,
        "frames": frames,
        "engine_fps": round(engine_fps, 1),
        "model_only_fps": round(model_fps, 1),
        "decode_all_sampled_fps": round(decode_fps, 1),
        "engine_over_slower_limit": round(engine_fps / min(model_fps, decode_fps), 2),
        "gpu_use_during_engine": use.summary(),
        "model_profile": profile_model(captioner, generation),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=int, default=None, help="instead of the workload's count")
    parser.add_argument("--copies", type=int, default=None, help="instead of the workload's")
    parser.add_argument("--clips-dir", type=Path, default=None, help="keep (and reuse) the clips")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--dry-run", action="store_true", help="gpu: 3 clips, tiny model on CPU (checks the script)"
    )
    args = parser.parse_args()
    clips, seconds, height, width, fps = WORKLOADS[args.workload]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.clips_dir or Path(tmp) / "clips"
        folder.mkdir(parents=True, exist_ok=True)
        clips = 3 if args.dry_run else args.clips or clips
        copies = args.copies or (2 if args.dry_run else COPIES[args.workload])
        paths = clip_set(folder, clips, copies, seconds, height, width, fps)
        report = {
            "workload": f"{clips} clips x {seconds} s, {height}p H.264 {fps} fps (-g 60)"
            + (f", each {copies} times" if copies > 1 else "")
            + ", --fps 1",
            "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "clips_and_decode_all_by": "the ffmpeg command" if FFMPEG else "PyAV (no ffmpeg)",
        }
        if args.workload == "cpu":
            report.update(bench_cpu(folder, paths, args.repeats))
        else:
            report.update(bench_gpu(paths, args.tokens, args.dry_run))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
