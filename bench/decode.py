"""Decoding for ``--fps`` sampling: OpenCV, PyAV's modes and torchcodec, side by side in one run.

    python bench/decode.py [--seconds 10] [--repeat 3] [--out bench/results/decode_cpu.json]

Generated clips (ffmpeg's testsrc2, H.264 30 fps, ``-g 60``, x264's default B-frames),
360p and 720p. For each decoder: best-of-N wall time for one clip in one process, the
frames it decoded, the sampled frames per second, and the speed-up over OpenCV's grab
loop (what ``vidcap/video.py`` did before PyAV); then a two-process pool over several
clips (the decoder workers' case, one decoder thread each). Also how far each mode's
samples fall after the 1 s grid, and the keyframe spacing. Ratios, never assertions.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import cv2

from vidcap.ffmpeg import find_ffmpeg
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

log = logging.getLogger("bench.decode")

CLIPS = {"360p": (360, 640), "720p": (720, 1280)}
FPS = 1.0
POOL_CLIPS = 6


def make_clip(folder: Path, label: str, size: tuple[int, int], seconds: float) -> Path:
    height, width = size
    path = folder / f"{label}.mp4"
    source = f"testsrc2=size={width}x{height}:rate=30"
    subprocess.run(
        [find_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", str(seconds),
         "-c:v", "libx264", "-preset", "medium", "-crf", "23", "-g", "60",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


# --- decoders: each returns (sampled pts list, decoded frame count) -------------------------


def opencv_grab(path: Path, threads: int = 0) -> tuple[list[float], int]:
    """The pre-PyAV ``video.py``: grab every frame, retrieve + convert those a tick takes."""
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    interval, next_time, times, decoded = 1.0 / FPS, 0.0, [], 0
    while cap.grab():
        decoded += 1
        pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if pts + 1e-6 < next_time:
            continue
        next_time = (math.floor(pts / interval + 1e-6) + 1) * interval
        ok, bgr = cap.retrieve()
        if ok:
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            times.append(pts)
    cap.release()
    return times, decoded


def vidcap_reader(mode: str, keyframes: bool = False) -> Callable[..., tuple[list[float], int]]:
    sampling = SamplingSettings(fps=FPS, mode=mode, keyframes=keyframes)

    def decode(path: Path, threads: int = 0) -> tuple[list[float], int]:
        with VideoReader(path, threads=threads) as reader:
            times = [frame.time for frame in reader.frames(sampling)]
        return times, reader.stats.decoded_frames

    return decode


def torchcodec_available() -> str | None:
    """None when torchcodec loads, else why not (one line)."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to load means "not here"
        cause = exc.__cause__ or exc
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]} ({cause})"[:300]
    return None


def torchcodec_ticks(path: Path, threads: int = 0) -> tuple[list[float], int]:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(str(path), seek_mode="exact", num_ffmpeg_threads=threads)
    duration = decoder.metadata.duration_seconds or 0.0
    ticks = [i / FPS for i in range(int(duration * FPS) + 1) if i / FPS < duration]
    batch = decoder.get_frames_played_at(ticks)
    return [float(t) for t in batch.pts_seconds], -1


DECODERS: dict[str, Callable[..., tuple[list[float], int]]] = {
    "opencv-grab": opencv_grab,
    "pyav-all": vidcap_reader("all"),
    "pyav-exact": vidcap_reader("exact"),
    "pyav-keyframes": vidcap_reader("exact", keyframes=True),
}


# --- measurements ------------------------------------------------------------------------


def interleaved_best(jobs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds per job, running the jobs in turn each round, so a busy
    spell on a shared machine slows every decoder alike rather than one of them."""
    best = dict.fromkeys(jobs, math.inf)
    for _ in range(repeat):
        for name, job in jobs.items():
            started = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def one_process(clips: dict[str, Path], repeat: int, threads: int) -> list[dict]:
    rows = []
    for label, path in clips.items():
        results = {name: decode(path, threads) for name, decode in DECODERS.items()}
        jobs = {
            name: (lambda decode=decode, path=path: decode(path, threads))
            for name, decode in DECODERS.items()
        }
        seconds = interleaved_best(jobs, repeat)
        baseline = seconds["opencv-grab"]
        for name, (times, decoded) in results.items():
            rows.append(
                {
                    "clip": label,
                    "decoder": name,
                    "threads": threads or "auto",
                    "ms": round(seconds[name] * 1000, 1),
                    "sampled": len(times),
                    "decoded": decoded,
                    "sampled_per_s": round(len(times) / seconds[name], 1),
                    "speedup_vs_opencv": round(baseline / seconds[name], 2),
                    "max_after_tick_ms": round(1000 * max_after_tick(times), 1),
                }
            )
            log.info("%s", rows[-1])
    return rows


def max_after_tick(times: list[float]) -> float:
    """How far a sample falls after the grid point before it (0: on the grid)."""
    return max((t - math.floor(t * FPS + 1e-6) / FPS for t in times), default=0.0)


def _pool_job(args: tuple[str, str]) -> int:
    name, path = args
    return len(DECODERS[name](Path(path), 1)[0])


def pool(clips: dict[str, Path], workers: int, repeat: int) -> list[dict]:
    """``workers`` processes, one decoder thread each, over POOL_CLIPS copies of each clip."""
    rows = []
    with ProcessPoolExecutor(workers) as executor:
        for label, path in clips.items():
            batches = {name: [(name, str(path))] * POOL_CLIPS for name in DECODERS}
            sampled = {name: sum(executor.map(_pool_job, jobs)) for name, jobs in batches.items()}
            jobs = {
                name: (lambda jobs=jobs: list(executor.map(_pool_job, jobs)))
                for name, jobs in batches.items()
            }
            seconds = interleaved_best(jobs, repeat)
            for name in DECODERS:
                rows.append(
                    {
                        "clip": label,
                        "decoder": name,
                        "workers": workers,
                        "clips": POOL_CLIPS,
                        "sampled_per_s": round(sampled[name] / seconds[name], 1),
                        "speedup_vs_opencv": round(seconds["opencv-grab"] / seconds[name], 2),
                    }
                )
                log.info("%s", rows[-1])
    return rows


def keyframe_spacing(path: Path) -> dict:
    with VideoReader(path) as reader:
        times = [f.time for f in reader.frames(SamplingSettings(keyframes=True))]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {
        "keyframes": len(times),
        "mean_gap_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/decode_cpu.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unavailable = torchcodec_available()
    if unavailable is None:
        DECODERS["torchcodec-exact"] = torchcodec_ticks
    else:
        log.info("torchcodec not measured: %s", unavailable)
    with tempfile.TemporaryDirectory() as tmp:
        clips = {
            label: make_clip(Path(tmp), label, size, args.seconds) for label, size in CLIPS.items()
        }
        result = {
            "machine": {
                "description": f"{os.cpu_count()}-core CPU, no GPU",
                "processor": platform.processor() or platform.machine(),
                "python": platform.python_version(),
                "av": av.__version__,
                "opencv": cv2.__version__,
                "torchcodec": unavailable or "measured",
            },
            "workload": {
                "clips": {k: f"{w}x{h}" for k, (h, w) in CLIPS.items()},
                "seconds": args.seconds,
                "encoding": "H.264 (libx264 medium, crf 23), 30 fps, -g 60, default B-frames",
                "sampling": f"--fps {FPS}",
            },
            "one_process_auto_threads": one_process(clips, args.repeat, 0),
            "one_process_one_thread": one_process(clips, args.repeat, 1),
            "pool_one_thread_each": pool(clips, args.workers, args.repeat),
            "keyframe_spacing": {label: keyframe_spacing(p) for label, p in clips.items()},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
