"""Scenes and near-duplicates (#17), side by side in one run, on generated footage.

    python bench/scenes.py [--repeat 3] [--out bench/results/scenes_cpu.json]

Sections (ratios and counts, never assertions):

- ``calibration``: the tiny model's caption of every sample of the project's own videos
  (``sample_videos/``, the generated test set ``tests/support/videos.py``, and the footage
  of ``vidcap/tiny/footage.py``) at ``--every-n 1``, ``--fps 2`` and ``--fps 1``; for each
  ``--skip-similar`` distance D, how many model calls a run makes and how many reused
  captions differ from the caption the model gives that frame. The default D is the
  largest with no difference anywhere;
- ``skip_similar``: ``vidcap caption`` through the engine (the model loaded once, tiny, CPU)
  with and without ``--skip-similar`` at the default D: model calls, frames/s;
- ``scenes_cost``: decoding seconds of ``decode_events`` (the decoder stage alone) at the
  default ``--fps 1`` exact decoding, ``--decode-mode all``, and ``--scenes`` (every frame
  decoded and fed to PySceneDetect) on a 720p and a 360p clip and on the footage;
- ``hash_cost``: µs a frame for ``vidcap.similar.signature`` (dHash + mean colour) and for
  ``imagehash.dhash`` (when installed) on model-size frames of ``sample_videos/shapes.mp4``;
- ``boundaries``: the cuts ``--scenes`` finds with each detector against the footage's known
  hard cuts and its fade, and against ``scenedetect.detect`` on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support: the generated test set

import av  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import scenedetect  # noqa: E402

from vidcap.backend import EmbeddedBackend  # noqa: E402
from vidcap.decode import Decoded, Ended, SceneFound, decode_events  # noqa: E402
from vidcap.engine import run  # noqa: E402
from vidcap.jobs import RunSettings  # noqa: E402
from vidcap.model import Captioner  # noqa: E402
from vidcap.settings import (  # noqa: E402
    SCENE_DETECTORS,
    EngineSettings,
    GenerationSettings,
    ModelSettings,
    SamplingSettings,
)
from vidcap.similar import DEFAULT_DISTANCE, signature  # noqa: E402
from vidcap.tiny.footage import cuts_and_fades, mostly_static, render_footage  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
DISTANCES = range(0, 17)
SAMPLINGS = {
    "every frame": SamplingSettings(every_n=1),
    "--fps 2": SamplingSettings(fps=2.0),
    "--fps 1": SamplingSettings(fps=1.0),
}


def project_videos(folder: Path) -> dict[str, Path]:
    """sample_videos/, the generated test set, the footage: name → path."""
    from tests.support.videos import SPECS, write_video

    videos = {f"sample_videos/{p.name}": p for p in sorted((ROOT / "sample_videos").glob("*.mp4"))}
    for spec in SPECS:
        try:
            videos[f"generated/{spec.name}"] = write_video(
                folder / f"{spec.name}{spec.suffix}", spec
            )
        except Exception as exc:  # noqa: BLE001 - an encoder this PyAV lacks: leave it out
            print(f"  (generated/{spec.name} left out: {exc})", file=sys.stderr)
    videos["footage/cuts"] = folder / "cuts.mp4"
    videos["footage/static"] = folder / "static.mp4"
    return videos


def calibrate(videos: dict[str, Path], captioner: Captioner) -> dict:
    generation = GenerationSettings()
    result: dict = {"distances": list(DISTANCES), "samplings": {}}
    for label, sampling in SAMPLINGS.items():
        changed = dict.fromkeys(DISTANCES, 0)
        by_group: dict[str, dict[int, int]] = {}
        calls = dict.fromkeys(DISTANCES, 0)
        samples = 0
        worst: dict[int, list] = {d: [] for d in DISTANCES}
        for name, path in videos.items():
            frames = [
                e.frame
                for e in decode_events(0, str(path), sampling, captioner.input_size)
                if isinstance(e, Decoded)
            ]
            if not frames:
                continue
            captions = captioner.caption([f.rgb for f in frames], generation)
            marks = [signature(f.rgb) for f in frames]
            samples += len(frames)
            for distance in DISTANCES:
                reference = None
                for i, mark in enumerate(marks):
                    if reference is not None and mark.similar(marks[reference], distance):
                        if captions[reference] != captions[i]:
                            changed[distance] += 1
                            group = by_group.setdefault(
                                name.split("/")[0], dict.fromkeys(DISTANCES, 0)
                            )
                            group[distance] += 1
                            if len(worst[distance]) < 3:
                                worst[distance].append(
                                    [name, frames[i].index, captions[reference], captions[i]]
                                )
                    else:
                        reference = i
                        calls[distance] += 1
        result["samplings"][label] = {
            "samples": samples,
            "model_calls": calls,
            "changed_captions": changed,
            "changed_by_group": by_group,
            "examples_of_changes": {d: v for d, v in worst.items() if v},
        }
    safe = [
        d
        for d in DISTANCES
        if all(s["changed_captions"][d] == 0 for s in result["samplings"].values())
    ]
    result["largest_safe_distance"] = max(
        (d for d in safe if all(x in safe for x in range(d + 1))), default=None
    )
    groups = {name.split("/")[0] for name in videos}
    result["largest_safe_distance_by_group"] = {
        group: max(
            (
                d
                for d in DISTANCES
                if all(
                    s["changed_by_group"].get(group, {}).get(x, 0) == 0
                    for s in result["samplings"].values()
                    for x in range(d + 1)
                )
            ),
            default=None,
        )
        for group in sorted(groups)
    }
    result["default_distance"] = DEFAULT_DISTANCE
    return result


def engine_run(paths: list[Path], sampling: SamplingSettings, captioner: Captioner, out: Path):
    settings = RunSettings(out_dir=out, sampling=sampling, model="tiny", quiet=True)
    started = time.perf_counter()
    results = run(
        [str(p) for p in paths],
        settings,
        lambda: EmbeddedBackend(captioner),
        EngineSettings(decode_workers=2),
        input_size=captioner.input_size,
    )
    seconds = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    frames = sum(r.frames for r in results)
    return {
        "frames": frames,
        "model_calls": summary["run"].get("model_calls", frames),
        "reused": summary["run"].get("reused", 0),
        "seconds": round(seconds, 3),
        "frames_per_s": round(frames / seconds, 1),
    }


def bench_skip(footage: dict[str, Path], captioner: Captioner, folder: Path, repeat: int) -> dict:
    rows = {}
    for name, path in footage.items():
        for label, sampling in {
            "--fps 1": SamplingSettings(),
            f"--fps 1 --skip-similar={DEFAULT_DISTANCE}": SamplingSettings(
                skip_similar=DEFAULT_DISTANCE
            ),
            "--every-n 2": SamplingSettings(every_n=2),
            f"--every-n 2 --skip-similar={DEFAULT_DISTANCE}": SamplingSettings(
                every_n=2, skip_similar=DEFAULT_DISTANCE
            ),
        }.items():
            best = None
            for attempt in range(repeat):
                out = folder / f"skip-{name}-{len(rows)}-{attempt}"
                row = engine_run([path] * 1, sampling, captioner, out)
                if best is None or row["seconds"] < best["seconds"]:
                    best = row
            rows[f"{name}: {label}"] = best
    return rows


def decode_seconds(path: Path, sampling: SamplingSettings, repeat: int) -> dict:
    best, decoded = None, None
    for _ in range(repeat):
        started = time.perf_counter()
        frames = scenes = 0
        for event in decode_events(0, str(path), sampling, (224, 224), threads=1):
            frames += isinstance(event, Decoded)
            scenes += isinstance(event, SceneFound)
            if isinstance(event, Ended):
                decoded = event
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    with av.open(str(path)) as container:
        total = container.streams.video[0].frames
    return {
        "seconds": round(best, 3),
        "samples": frames,
        "scenes": scenes,
        "video_frames": total,
        "video_seconds": round(decoded.duration, 3) if decoded else None,
    }


def make_clip(folder: Path, label: str, size: str, seconds: int) -> Path:
    """testsrc2 H.264, 30 fps, -g 60, x264's B-frames: bench/decode.py's clip."""
    path = folder / f"{label}.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "medium", "-crf", "23", "-g", "60",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def bench_cost(clips: dict[str, Path], repeat: int) -> dict:
    variants = {
        "exact --fps 1 (default)": SamplingSettings(),
        "--decode-mode all --fps 1": SamplingSettings(mode="all"),
        "--scenes (every frame, ContentDetector)": SamplingSettings(scenes=True, scene_frames=1),
    }
    rows = {}
    for name, path in clips.items():
        measured = {label: decode_seconds(path, s, repeat) for label, s in variants.items()}
        base = measured["exact --fps 1 (default)"]["seconds"]
        for row in measured.values():
            row["x_exact"] = round(row["seconds"] / base, 2)
        rows[name] = measured
    return rows


def bench_hash(repeat: int) -> dict:
    import cv2

    with av.open(str(ROOT / "sample_videos" / "shapes.mp4")) as container:
        frames = [
            cv2.resize(f.to_ndarray(format="rgb24"), (224, 224), interpolation=cv2.INTER_AREA)
            for f in container.decode(video=0)
        ]
    hashes = {"vidcap.similar.signature": signature}
    try:
        import imagehash
        from PIL import Image

        hashes["imagehash.dhash"] = lambda rgb: imagehash.dhash(Image.fromarray(rgb))
    except ImportError:
        pass
    rows = {}
    for name, function in hashes.items():
        best = None
        for _ in range(max(repeat, 3)):
            started = time.perf_counter()
            for rgb in frames:
                function(rgb)
            seconds = (time.perf_counter() - started) / len(frames)
            best = seconds if best is None else min(best, seconds)
        rows[name] = {"us_per_frame": round(best * 1e6, 1), "frames": len(frames)}
    return rows


def bench_boundaries(path: Path, truth) -> dict:
    rows = {}
    detectors = {
        "content": scenedetect.ContentDetector,
        "adaptive": scenedetect.AdaptiveDetector,
        "hash": scenedetect.HashDetector,
        "histogram": scenedetect.HistogramDetector,
    }
    for name in SCENE_DETECTORS:
        sampling = SamplingSettings(scenes=True, scene_detector=name, scene_frames=1)
        scenes = [
            e.scene
            for e in decode_events(0, str(path), sampling, (224, 224))
            if isinstance(e, SceneFound)
        ]
        found = [s.start_frame for s in scenes[1:]]
        theirs = scenedetect.detect(str(path), detectors[name](), backend="pyav")
        rows[name] = {
            "found": found,
            "known_hard_cuts": truth.cuts,
            "known_fades": truth.fades,
            "hard_cuts_within_one_frame": sum(
                any(abs(f - c) <= 1 for f in found) for c in truth.cuts
            ),
            "scenedetect_detect": [s.frame_num for s, _ in theirs[1:]],
        }
        rows[name]["same_as_scenedetect"] = rows[name]["found"] == rows[name]["scenedetect_detect"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "last_scenes_cpu.json")
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    captioner = Captioner.load(ModelSettings(model="tiny", device="cpu"))
    report: dict = {
        "machine": {
            "description": "2-core CPU, no GPU"
            if os.cpu_count() == 2
            else f"{os.cpu_count()} cores",
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "av": av.__version__,
            "scenedetect": scenedetect.__version__,
        },
        "model": "tiny (CPU)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cuts = render_footage(folder / "cuts.mp4", cuts_and_fades())
        static = render_footage(folder / "static.mp4", mostly_static())
        report["footage"] = {
            "cuts": {
                "frames": cuts.frames,
                "fps": cuts.fps,
                "hard_cuts": cuts.cuts,
                "fades": cuts.fades,
            },
            "static": {"frames": static.frames, "fps": static.fps, "hard_cuts": static.cuts},
        }
        if not args.skip_calibration:
            print("calibration …", file=sys.stderr)
            report["calibration"] = calibrate(project_videos(folder), captioner)
        print("skip-similar …", file=sys.stderr)
        footage = {"static (30 s, 3 static shots)": folder / "static.mp4",
                   "cuts (14 s, moving + static, cuts, a fade)": folder / "cuts.mp4"}  # fmt: skip
        report["skip_similar"] = bench_skip(footage, captioner, folder, args.repeat)
        print("scenes cost …", file=sys.stderr)
        clips = {
            "720p testsrc2 10 s": make_clip(folder, "720p", "1280x720", 10),
            "360p testsrc2 10 s": make_clip(folder, "360p", "640x360", 10),
            "footage cuts 320x240 14 s": folder / "cuts.mp4",
        }
        report["scenes_cost"] = bench_cost(clips, args.repeat)
        report["hash_cost"] = bench_hash(args.repeat)
        print("boundaries …", file=sys.stderr)
        report["boundaries"] = bench_boundaries(folder / "cuts.mp4", cuts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "calibration"}, indent=1))
    if "calibration" in report:
        cal = report["calibration"]
        print(
            "largest safe distance:",
            cal["largest_safe_distance"],
            cal["largest_safe_distance_by_group"],
        )
        for label, row in cal["samplings"].items():
            print(label, row["samples"], "samples; changed:", row["changed_captions"])
            print("   calls:", row["model_calls"])


if __name__ == "__main__":
    main()
