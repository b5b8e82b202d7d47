"""Which frame encoding should ``--server`` send? Caption agreement, bytes and encode time.

    python bench/wire_format.py [--out bench/results/wire_format_cpu_tiny.json]

1. agreement: every sample video (``sample_videos/*.mp4``) captioned embedded with the
   tiny model at 1 frame/s; then the same frames encoded as JPEG q90, JPEG q95 and PNG,
   decoded as a server does (``vidcap.wire.decode_image``) and captioned again: the share
   of captions equal to the embedded run's;
2. BLIP-2-sized frames (224x224, rendered scenes): bytes per frame and encode time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from vidcap.engine import caption_video
from vidcap.model import Captioner
from vidcap.settings import GenerationSettings, ModelSettings, SamplingSettings
from vidcap.tiny.scenes import draw_scene, random_scene
from vidcap.wire import WireLimits, decode_image, encode_image

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"jpeg90": ("jpeg", 90), "jpeg95": ("jpeg", 95), "png": ("png", 90)}


class Recorder:
    """A backend that captions in process and keeps the frames it was given."""

    def __init__(self, captioner: Captioner) -> None:
        self.captioner = captioner
        self.input_size = captioner.input_size
        self.frames: list[np.ndarray] = []

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str]:
        for image in images:
            self.frames.append(image)
            yield from self.captioner.caption([image], settings)

    def close(self) -> None:
        return None


def agreement(captioner: Captioner, videos: list[Path]) -> dict[str, object]:
    settings = GenerationSettings()
    results: dict[str, object] = {}
    for video in videos:
        recorder = Recorder(captioner)
        embedded = [
            f.caption for f in caption_video(video, recorder, SamplingSettings(fps=1.0), settings)
        ]
        per_format = {}
        for name, (fmt, quality) in FORMATS.items():
            decoded = [
                decode_image(encode_image(frame, fmt, quality), WireLimits())
                for frame in recorder.frames
            ]
            captions = captioner.caption(decoded, settings)
            same = sum(a == b for a, b in zip(captions, embedded, strict=True))
            per_format[name] = {
                "equal": same,
                "frames": len(embedded),
                "share": same / len(embedded),
            }
        results[video.name] = per_format
    return results


def blip2_sized(count: int = 64) -> dict[str, object]:
    rng = np.random.default_rng(0)
    frames = [draw_scene(random_scene(rng), 224, 224, rng) for _ in range(count)]
    out = {}
    for name, (fmt, quality) in FORMATS.items():
        encode_image(frames[0], fmt, quality)  # warm up
        started = time.perf_counter()
        sizes = [len(encode_image(frame, fmt, quality)) for frame in frames]
        seconds = time.perf_counter() - started
        out[name] = {
            "bytes_per_frame": round(sum(sizes) / count),
            "encode_ms_per_frame": round(seconds / count * 1000, 3),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench/results/wire_format_cpu_tiny.json"
    )
    args = parser.parse_args()
    captioner = Captioner.load(ModelSettings(model="tiny", device="cpu", batch_size=8))
    videos = sorted((ROOT / "sample_videos").glob("*.mp4"))
    result = {
        "machine": platform.platform(),
        "model": "tiny",
        "agreement_with_embedded": agreement(captioner, videos),
        "blip2_sized_224": blip2_sized(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
