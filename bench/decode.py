"""Decoding for ``--fps`` sampling: OpenCV, PyAV's modes and torchcodec, side by side in one run.

    python bench/decode.py [--seconds 10] [--repeat 3] [--out bench/results/decode_cpu.json]
    python bench/decode.py --against REV [REV ...] [--clips 20] [--repeat 9] [--out FILE]

Generated clips (ffmpeg's testsrc2, H.264 30 fps, ``-g 60``, x264's default B-frames),
360p and 720p. For each decoder: best-of-N wall time for one clip in one process, the
frames it decoded, the sampled frames per second, and the speed-up over OpenCV's grab
loop (what ``vidcap/video.py`` did before PyAV); then a two-process pool over several
clips (the decoder workers' case, one decoder thread each). Also how far each mode's
samples fall after the 1 s grid, and the keyframe spacing. Ratios, never assertions.

``--against REV``: instead, today's ``VideoReader.frames`` beside the decoder as it was at
each git revision ``REV`` (its ``vidcap/video.py`` and ``vidcap/picture.py``; the rest of vidcap
today's), on ``bench/bulk.py``'s cpu clips, one
decoder thread, ``--fps 1`` and ``--fps 1 --decode-mode all``: wall and CPU seconds, best and
median of N rounds, all run in turn (order reversed every other round), and whether each
takes today's (index, time) samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
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


# --- today's reader against an earlier revision's (--against) ----------------------------


DECODER_MODULES = ("picture", "container", "video")  # what --against takes, in import order


def video_module_at(revision: str) -> types.ModuleType:
    """``vidcap/video.py`` as it was at git ``revision``, imported beside today's, with that
    revision's ``vidcap/picture.py`` where it had one (the rest of vidcap is today's: a
    revision whose decoder needs other code of its time fails)."""
    root = Path(__file__).resolve().parents[1]
    loaded: dict[str, types.ModuleType] = {}
    for part in DECODER_MODULES:
        shown = subprocess.run(
            ["git", "show", f"{revision}:vidcap/{part}.py"],
            cwd=root, capture_output=True, text=True,
        )  # fmt: skip
        if shown.returncode:
            continue  # (no picture.py before #16, no container.py before it was split)
        name = f"{part}_at_" + re.sub(r"\W", "_", revision)
        module = types.ModuleType(name)
        module.__file__ = f"{revision}:vidcap/{part}.py"
        sys.modules[name] = module  # (dataclasses look their module up)
        today = {f"vidcap.{p}": sys.modules.get(f"vidcap.{p}") for p in loaded}
        sys.modules.update({f"vidcap.{p}": m for p, m in loaded.items()})  # its own imports
        try:
            code = compile(shown.stdout, module.__file__, "exec")
            exec(code, module.__dict__)  # noqa: S102 - this repository's own file
        finally:
            for key, value in today.items():
                if value is None:
                    sys.modules.pop(key, None)
                else:
                    sys.modules[key] = value
        loaded[part] = module
    return loaded["video"]


def against(revisions: list[str], clips: int, repeat: int) -> dict:
    """Today's ``VideoReader.frames`` beside ``revisions``' (see the module's docstring)."""
    from bulk import WORKLOADS, make_clips  # bench/, the script's folder

    readers = {"today": VideoReader}
    readers.update({rev: video_module_at(rev).VideoReader for rev in revisions})
    _, seconds, height, width, fps = WORKLOADS["cpu"]
    samplings = {
        "--fps 1": SamplingSettings(fps=FPS),
        "--fps 1 --decode-mode all": SamplingSettings(fps=FPS, mode="all"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_clips(Path(tmp), clips, seconds, height, width, fps)
        for label, sampling in samplings.items():

            def decode(reader: type, sampling: SamplingSettings = sampling) -> tuple[list, int]:
                samples, decoded = [], 0
                for path in paths:
                    with reader(path, threads=1) as video:
                        samples += [(f.index, f.time) for f in video.frames(sampling)]
                    decoded += video.stats.decoded_frames
                return samples, decoded

            results = {name: decode(reader) for name, reader in readers.items()}
            wall: dict[str, list[float]] = {name: [] for name in readers}
            cpu: dict[str, list[float]] = {name: [] for name in readers}
            faults: dict[str, list[int]] = {name: [] for name in readers}
            for round_ in range(repeat):
                order = list(readers) if round_ % 2 == 0 else list(reversed(readers))
                for name in order:
                    started_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    started, started_cpu = time.perf_counter(), time.process_time()
                    decode(readers[name])
                    wall[name].append(time.perf_counter() - started)
                    cpu[name].append(time.process_time() - started_cpu)
                    ended_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    faults[name].append(ended_faults - started_faults)
            row: dict = {
                "sampling": label,
                "samples": len(results["today"][0]),
                "decoded_frames": results["today"][1],
                "same_samples": {rev: results[rev] == results["today"] for rev in revisions},
            }
            for name in readers:
                row[name] = {
                    "wall_best_s": round(min(wall[name]), 3),
                    "wall_median_s": round(statistics.median(wall[name]), 3),
                    "cpu_best_s": round(min(cpu[name]), 3),
                    "cpu_median_s": round(statistics.median(cpu[name]), 3),
                    "page_faults_median": round(statistics.median(faults[name])),
                }
            row["today_over"] = {
                rev: {
                    key: round(row["today"][key] / row[rev][key], 3)
                    for key in row["today"]
                    if key.endswith("_s")
                }
                for rev in revisions
            }
            rows.append(row)
            log.info("%s", row)
    return {
        "machine": {
            "description": f"{os.cpu_count()}-core CPU",
            "processor": platform.processor() or platform.machine(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "av": av.__version__,
        },
        "workload": f"{clips} clips of bench/bulk.py cpu ({seconds} s, {width}x{height} H.264, "
        f"{fps} fps, -g 60), one decoder thread, best/median of {repeat}, in turn",
        "revisions": revisions,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="(default bench/results/decode_cpu.json)")
    parser.add_argument("--against", metavar="REV", nargs="+", help="today's reader beside REV's")
    parser.add_argument("--clips", type=int, default=20, help="--against: clips (default 20)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.against:
        out = args.out or Path("bench/results/decode_against.json")
        result = against(args.against, args.clips, args.repeat)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", out)
        return
    args.out = args.out or Path("bench/results/decode_cpu.json")
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
                "best_of": args.repeat,
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
