"""Generated footage with known shot boundaries, for the scene tests and ``bench/scenes.py``.

``render_footage(path, parts)`` encodes shots of the tiny model's scenes
(``vidcap.tiny.scenes``) — static or moving — joined by hard cuts or by cross-fades, and
returns where each hard cut and each fade lies (frame indices; at ``fps`` frames a second,
frame i is shown at i / fps s). ``cuts_and_fades()`` and ``mostly_static()`` are the two
videos the tests and the bench use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidcap.tiny.render import DEFAULT_FPS, DEFAULT_SIZE, Shot, scene_of, segment_frames


@dataclass(frozen=True)
class Part:
    """A shot (``fade`` > 0: entered by a cross-fade of that many frames from the one
    before, else by a hard cut)."""

    shot: Shot
    fade: int = 0


@dataclass(frozen=True)
class Footage:
    """What ``render_footage`` wrote: the frame count, the first frame of each shot after a
    hard cut, each fade's frames [first, end), and each shot's caption."""

    frames: int
    fps: int
    cuts: list[int] = field(default_factory=list)
    fades: list[tuple[int, int]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def render_footage(
    path: Path,
    parts: list[Part],
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    noise_std: float = 3.0,
) -> Footage:
    """Encode ``parts`` (H.264 in the container of ``path``'s suffix, ``size`` = (width,
    height)); frame i has pts i / ``fps``."""
    import av  # the dev extra: only rendering needs PyAV

    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    footage = Footage(frames=0, fps=fps)
    for part in parts:
        shot = segment_frames(part.shot, fps, size, rng, noise_std)
        if part.fade and frames:
            first = len(frames)
            before, after = frames[-1].astype(np.float32), shot[0].astype(np.float32)
            for i in range(1, part.fade + 1):
                alpha = i / (part.fade + 1)
                frames.append(np.round(before * (1 - alpha) + after * alpha).astype(np.uint8))
            footage.fades.append((first, len(frames)))
        elif frames:
            footage.cuts.append(len(frames))
        frames.extend(shot)
        footage.captions.append(part.shot.scene.caption)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 2 * fps
        stream.options = {"crf": "23", "preset": "veryfast"}
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Footage(len(frames), fps, footage.cuts, footage.fades, footage.captions)


def cuts_and_fades(seed: int = 3) -> list[Part]:
    """A static shot, a moving one, hard cuts, a one-second cross-fade: 14 s at 10 fps."""
    rng = np.random.default_rng(seed)
    return [
        Part(Shot(scene_of([("red", "circle")], "white", rng), 3.0, (0.0, 0.0))),
        Part(Shot(scene_of([("blue", "square")], "gray", rng), 3.0, (0.25, 0.1))),
        Part(Shot(scene_of([("green", "triangle")], "black", rng), 2.0, (0.0, 0.0))),
        Part(Shot(scene_of([("yellow", "star")], "white", rng), 3.0, (0.05, 0.0)), fade=10),
        Part(Shot(scene_of([("blue", "circle"), ("red", "square")], "gray", rng), 2.0)),
    ]


def mostly_static(seed: int = 4, seconds: float = 10.0) -> list[Part]:
    """Three static shots (hard cuts between them): ``3 × seconds`` s."""
    rng = np.random.default_rng(seed)
    plan = [
        ([("red", "square")], "gray"),
        ([("green", "circle")], "white"),
        ([("blue", "star")], "black"),
    ]
    return [Part(Shot(scene_of(objects, bg, rng), seconds, (0.0, 0.0))) for objects, bg in plan]
