"""vidcap benchmarks, compared side by side in one run; ratios, never assertions.

    python bench/run.py [--device auto] [--model tiny|blip2-sized] [--out FILE.json]

1. wire: bytes and encode time per frame — raw frames (what the original tool pickled)
   against vidcap's resize-to-model-input + JPEG/PNG, at 270p, 1080p and 4K;
2. model: frames/s at batch sizes 1, 8, 32 (and dtypes on CUDA), same frames, same settings;
3. pipeline: decode-only frames/s against the whole embedded pipeline on a generated video.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidcap.backend import EmbeddedBackend
from vidcap.engine import caption_video
from vidcap.frames import resize_for_model
from vidcap.model import Captioner
from vidcap.settings import GenerationSettings, ModelSettings, SamplingSettings
from vidcap.tiny.scenes import draw_scene, random_scene
from vidcap.video import VideoReader
from vidcap.wire import encode_image

RESOLUTIONS = {"270p": (270, 480), "1080p": (1080, 1920), "4K": (2160, 3840)}


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def scenes(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        draw_scene(random_scene(rng, aspect=width / height), width, height, rng) for _ in range(n)
    ]


def bench_wire(input_size: tuple[int, int]) -> list[dict]:
    rows = []
    for label, (height, width) in RESOLUTIONS.items():
        frame = scenes(1, height, width)[0]
        raw_bytes = frame.nbytes
        for fmt in ("jpeg", "png"):
            payload = encode_image(resize_for_model(frame, input_size), fmt)
            seconds = timed(
                lambda f=fmt, im=frame: encode_image(resize_for_model(im, input_size), f), 5
            )
            rows.append({
                "resolution": label, "format": fmt, "raw_bytes": raw_bytes, "wire_bytes": len(payload),
                "raw_over_wire": round(raw_bytes / len(payload), 1), "resize_encode_ms": round(seconds * 1000, 2),
            })  # fmt: skip
    return rows


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_model(
    captioner: Captioner, batch_sizes: list[int], frames: int, tokens: int
) -> list[dict]:
    images = [resize_for_model(f, captioner.input_size) for f in scenes(frames, 360, 640, seed=1)]
    settings = GenerationSettings(max_new_tokens=tokens)
    rows = []
    for batch_size in batch_sizes:
        captioner.batch_size = batch_size
        captioner.caption(images[:batch_size], settings)  # warm-up
        sync(captioner.device)
        seconds = timed(lambda: (captioner.caption(images, settings), sync(captioner.device)), 2)
        rows.append({"batch_size": batch_size, "dtype": str(captioner.dtype).removeprefix("torch."),
                     "frames": len(images), "frames_per_s": round(len(images) / seconds, 1)})  # fmt: skip
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["vs_batch_1"] = round(row["frames_per_s"] / base, 2)
    return rows


def write_test_video(path: Path, seconds: int, height: int, width: int, fps: int = 25) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    rng = np.random.default_rng(2)
    for _ in range(seconds):
        scene = random_scene(rng, aspect=width / height)
        for i in range(fps):
            rgb = draw_scene(scene.shifted(0.002 * i, 0.0), width, height)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def bench_pipeline(captioner: Captioner, video: Path, every_n: int, tokens: int) -> dict:
    sampling = SamplingSettings(every_n=every_n)

    def decode_only() -> int:
        with VideoReader(video) as reader:
            return sum(
                1
                for f in reader.frames(sampling)
                if resize_for_model(f.rgb, captioner.input_size) is not None
            )

    started = time.perf_counter()
    count = decode_only()
    decode_s = time.perf_counter() - started
    backend = EmbeddedBackend(captioner)
    settings = GenerationSettings(max_new_tokens=tokens)
    model_only = bench_model(captioner, [captioner.batch_size], min(count, 64), tokens)[0][
        "frames_per_s"
    ]
    row = {"video": video.name, "frames": count, "batch_size": captioner.batch_size,
           "decode_only_fps": round(count / decode_s, 1), "model_only_fps": model_only}  # fmt: skip
    slowest = min(count / decode_s, model_only)
    # One video through a decoder process and the backend (vidcap.engine.caption_video).
    sync(captioner.device)
    started = time.perf_counter()
    captions = list(caption_video(video, backend, sampling, settings))
    sync(captioner.device)
    fps = len(captions) / (time.perf_counter() - started)
    row["pipeline_fps"] = round(fps, 1)
    row["pipeline_over_slowest_stage"] = round(fps / slowest, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--model",
        default="tiny",
        help="tiny, blip2-sized (random weights, real size) or a checkpoint",
    )
    parser.add_argument("--tokens", type=int, default=20, help="tokens generated per caption")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument(
        "--video-seconds", type=int, default=8, help="length of the generated 1080p video"
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the batch-size/dtype sweep")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
                    "torch": torch.__version__, "model": args.model}  # fmt: skip

    if args.model == "blip2-sized":
        from blip2_sized import blip2_sized_captioner

        dtypes = [torch.float16, torch.bfloat16] if device.startswith("cuda") else [torch.float32]
        dtypes = dtypes[:1] if args.no_sweep else dtypes
        report["model_throughput"] = []
        for dtype in dtypes:
            captioner = blip2_sized_captioner(device, dtype, 8, args.tokens)
            report["model_throughput"] += bench_model(
                captioner, [1, 8, 32], args.frames, args.tokens
            )
            if dtype is dtypes[0]:
                keep = captioner
            else:
                del captioner
        captioner = keep
    else:
        captioner = Captioner.load(ModelSettings(model=args.model, device=device, batch_size=8))
        captioner.model.generation_config.min_new_tokens = args.tokens  # same work per frame
        report["model_throughput"] = bench_model(captioner, [1, 8, 32], args.frames, args.tokens)
    report["wire"] = bench_wire(captioner.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_test_video(
            Path(tmp) / "bench_1080p.mp4", seconds=args.video_seconds, height=1080, width=1920
        )
        captioner.batch_size = 32 if device.startswith("cuda") else 8
        report["pipeline_1080p_every_frame"] = bench_pipeline(
            captioner, video, every_n=1, tokens=args.tokens
        )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
