"""Synthetic scenes for the tiny model: one or two big shapes on a plain background.

A :class:`Scene` is resolution-free (positions and sizes are fractions of the
frame), so the same scene renders at 64x64 for training or 320x240 in a video.
Two-shape captions name the shapes in a canonical order the model can read off the
image: by colour (red, green, blue, yellow), then by shape (circle, square, triangle,
star), wherever they stand. (Left-to-right order was tried first: a from-scratch ViT
this small learns which shapes are present quickly, but their left/right order only
slowly, far beyond a CPU training budget.)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from vidcap.frames import resize_for_model
from vidcap.tiny.build import IMAGE_SIZE
from vidcap.tiny.grammar import BACKGROUNDS, COLOURS, SHAPES, caption_for

RGB = tuple[int, int, int]

COLOUR_RGB: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (35, 70, 225),
    "yellow": (240, 215, 25),
}
BACKGROUND_RGB: dict[str, RGB] = {
    "white": (245, 245, 245),
    "black": (12, 12, 12),
    "gray": (128, 128, 128),
}
FRAME_SIZES: tuple[tuple[int, int], ...] = (
    (320, 240),
    (426, 240),
    (480, 360),
    (640, 360),
)
"""Video-like (width, height) pairs the training frames are drawn at."""

MIN_SIZE = 0.30
"""Smallest shape size, as a fraction of the frame height (the shape's bounding box)."""
MAX_SIZE_ONE = 0.56
MAX_SIZE_TWO = 0.46
MIN_GAP = 0.06
"""Smallest horizontal gap between two shapes, as a fraction of the frame width."""
MAX_ROTATION = 0.0
"""Degrees either way a shape may turn (0: upright squares, triangles and stars)."""
COLOUR_JITTER = 14
NOISE_STD = 4.0


@dataclass(frozen=True)
class Shape:
    """One shape: centre (cx, cy) as fractions of width/height, size as a fraction of height."""

    kind: str
    colour: str
    cx: float
    cy: float
    size: float
    rotation: float = 0.0

    def half_extent(self, aspect: float) -> tuple[float, float]:
        """Half width and half height as fractions of the frame, for width/height ``aspect``."""
        return self.size / 2 / aspect, self.size / 2


@dataclass(frozen=True)
class Scene:
    """A background and shapes; the caption lists the shapes in :func:`canonical_order`."""

    background: str
    shapes: tuple[Shape, ...]

    @property
    def objects(self) -> list[tuple[str, str]]:
        """(colour, shape) pairs in caption order."""
        return canonical_order([(s.colour, s.kind) for s in self.shapes])

    @property
    def caption(self) -> str:
        return caption_for(self.objects, self.background)

    def contains(self, colour: str, kind: str) -> bool:
        return (colour, kind) in self.objects

    def shifted(self, dx: float, dy: float) -> Scene:
        """The scene with every shape moved by (dx, dy) frame fractions."""
        moved = tuple(replace(s, cx=s.cx + dx, cy=s.cy + dy) for s in self.shapes)
        return replace(self, shapes=moved)


@dataclass(frozen=True)
class Example:
    """A model-size RGB image (IMAGE_SIZE square) with its scene and caption."""

    image: np.ndarray
    scene: Scene

    @property
    def caption(self) -> str:
        return self.scene.caption


def canonical_order(objects: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(colour, shape) pairs sorted by colour, then shape, in grammar order."""
    return sorted(objects, key=lambda o: (COLOURS.index(o[0]), SHAPES.index(o[1])))


def random_objects(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """``count`` distinct (colour, shape) pairs."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES]
    picks = rng.choice(len(pairs), size=count, replace=False)
    return [pairs[int(i)] for i in picks]


def random_scene(
    rng: np.random.Generator,
    aspect: float = 4 / 3,
    objects: list[tuple[str, str]] | None = None,
    background: str | None = None,
) -> Scene:
    """A random scene for a frame of width/height ``aspect``.

    Given ``objects`` are placed left to right in the order given; random ones in random order.
    """
    if objects is None:
        objects = random_objects(rng, int(rng.integers(1, 3)))
    if background is None:
        background = str(rng.choice(BACKGROUNDS))
    if len(objects) == 1:
        shapes = (_place_one(rng, objects[0], aspect),)
    elif len(objects) == 2:
        shapes = _place_two(rng, objects[0], objects[1], aspect)
    else:
        raise ValueError(f"a scene holds 1 or 2 shapes, got {len(objects)}")
    return Scene(background=background, shapes=shapes)


def _rotation(rng: np.random.Generator) -> float:
    return float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)) if MAX_ROTATION else 0.0


def _place_one(rng: np.random.Generator, obj: tuple[str, str], aspect: float) -> Shape:
    size = float(rng.uniform(MIN_SIZE, MAX_SIZE_ONE))
    half_w, half_h = size / 2 / aspect, size / 2
    cx = float(rng.uniform(half_w + 0.03, 1 - half_w - 0.03))
    cy = float(rng.uniform(half_h + 0.04, 1 - half_h - 0.04))
    return Shape(obj[1], obj[0], cx, cy, size, _rotation(rng))


def _place_two(
    rng: np.random.Generator,
    left: tuple[str, str],
    right: tuple[str, str],
    aspect: float,
) -> tuple[Shape, Shape]:
    """Two shapes whose horizontal extents are disjoint, ``left`` on the left."""
    sizes = rng.uniform(MIN_SIZE, MAX_SIZE_TWO, size=2)
    half_w = sizes / 2 / aspect
    slack = 1 - 0.06 - 2 * half_w.sum() - MIN_GAP
    if slack < 0:  # narrow frame: shrink both until they fit side by side
        sizes = sizes * (1 - 0.06 - MIN_GAP) / (2 * half_w.sum())
        half_w = sizes / 2 / aspect
        slack = 0.0
    cuts = np.sort(rng.uniform(0, slack, size=2))
    x0 = 0.03 + cuts[0]
    cx_left = x0 + half_w[0]
    cx_right = cx_left + half_w[0] + MIN_GAP + (cuts[1] - cuts[0]) + half_w[1]
    shapes = []
    for obj, size, cx in ((left, sizes[0], cx_left), (right, sizes[1], cx_right)):
        cy = float(rng.uniform(size / 2 + 0.04, 1 - size / 2 - 0.04))
        shapes.append(Shape(obj[1], obj[0], float(cx), cy, float(size), _rotation(rng)))
    return shapes[0], shapes[1]


def _polygon(shape: Shape, width: int, height: int) -> np.ndarray:
    """Integer polygon points (N, 2) for the square, triangle or star of ``shape``."""
    radius = shape.size * height / 2
    if shape.kind == "square":
        angles = np.deg2rad(np.array([45.0, 135.0, 225.0, 315.0]))
        radii = np.full(4, radius * np.sqrt(2) * 0.86)
    elif shape.kind == "triangle":
        angles = np.deg2rad(np.array([-90.0, 30.0, 150.0]))
        radii = np.full(3, radius * 1.08)
    elif shape.kind == "star":
        angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, radius * 1.05, radius * 0.45)
    else:
        raise ValueError(f"no polygon for shape {shape.kind!r}")
    angles = angles + np.deg2rad(shape.rotation)
    cx, cy = shape.cx * width, shape.cy * height
    # The triangle's centroid sits below the box centre; lift it so the box is centred.
    lift = radius * 0.25 if shape.kind == "triangle" else 0.0
    xs = cx + radii * np.cos(angles)
    ys = cy + lift + radii * np.sin(angles)
    return np.round(np.stack([xs, ys], axis=1) * 16).astype(np.int32)


def _jitter(rgb: RGB, rng: np.random.Generator | None) -> RGB:
    if rng is None:
        return rgb
    delta = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    r, g, b = (int(v) for v in np.clip(np.array(rgb) + delta, 0, 255))
    return r, g, b


def draw_scene(
    scene: Scene,
    width: int,
    height: int,
    rng: np.random.Generator | None = None,
    noise_std: float = NOISE_STD,
) -> np.ndarray:
    """Draw ``scene`` as an (height, width, 3) RGB uint8 image; ``rng`` adds colour jitter and noise."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _jitter(BACKGROUND_RGB[scene.background], rng)
    for shape in scene.shapes:
        colour = _jitter(COLOUR_RGB[shape.colour], rng)
        if shape.kind == "circle":
            centre = (round(shape.cx * width * 16), round(shape.cy * height * 16))
            radius = round(shape.size * height / 2 * 16)
            cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA, shift=4)
        else:
            cv2.fillPoly(canvas, [_polygon(shape, width, height)], colour, cv2.LINE_AA, shift=4)
    if rng is not None and noise_std > 0:
        canvas = add_noise(canvas, rng, noise_std)
    return canvas


def add_noise(rgb: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """``rgb`` plus Gaussian noise of ``std``, saturated to uint8 (cv2's fast generator, seeded from ``rng``)."""
    cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
    noise = np.empty(rgb.shape, dtype=np.int16)
    cv2.randn(noise, 0.0, std)
    return cv2.add(rgb, noise, dtype=cv2.CV_8U)


def to_model_image(rgb: np.ndarray) -> np.ndarray:
    """Bring a frame to the model input size through the one shared resize."""
    return resize_for_model(rgb, (IMAGE_SIZE, IMAGE_SIZE))


class NoiseBank:
    """Pre-drawn noise fields at a few levels; random crops of them are cheap fresh-looking noise."""

    LEVELS: tuple[float, ...] = (0.0, 2.0, 4.0, 6.0, 8.0)

    def __init__(self, rng: np.random.Generator, max_size: tuple[int, int] = (704, 416)) -> None:
        width, height = max_size
        self._fields: list[np.ndarray | None] = []
        for std in self.LEVELS:
            if std == 0:
                self._fields.append(None)
                continue
            cv2.setRNGSeed(int(rng.integers(2**31 - 1)))
            field = np.empty((height, width, 3), dtype=np.int16)
            cv2.randn(field, 0.0, std)
            self._fields.append(field)

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        field = self._fields[int(rng.integers(len(self._fields)))]
        if field is None:
            return rgb
        height, width = rgb.shape[:2]
        y = int(rng.integers(field.shape[0] - height + 1))
        x = int(rng.integers(field.shape[1] - width + 1))
        return cv2.add(rgb, field[y : y + height, x : x + width], dtype=cv2.CV_8U)


def same_colour_pair(rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two shapes of one colour: the pairs a small model most often miscounts."""
    colour = str(rng.choice(COLOURS))
    first, second = rng.choice(len(SHAPES), size=2, replace=False)
    return [(colour, SHAPES[int(first)]), (colour, SHAPES[int(second)])]


def make_example(
    rng: np.random.Generator, bank: NoiseBank | None = None, same_colour_fraction: float = 0.0
) -> Example:
    """One random scene drawn at a random video-like resolution, noised, resized for the model.

    Without ``bank`` the noise is drawn fresh (slower); with one it is cropped from the bank.
    ``same_colour_fraction`` of the scenes (on top of the natural share) are
    :func:`same_colour_pair` scenes; held-out examples keep it 0.
    """
    width, height = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    objects = same_colour_pair(rng) if rng.random() < same_colour_fraction else None
    scene = random_scene(rng, aspect=width / height, objects=objects)
    if bank is None:
        frame = draw_scene(
            scene, width, height, rng, noise_std=float(rng.uniform(0, 2 * NOISE_STD))
        )
    else:
        frame = bank.apply(draw_scene(scene, width, height, rng, noise_std=0.0), rng)
    return Example(image=to_model_image(frame), scene=scene)


def make_examples(seed: int, count: int) -> list[Example]:
    """``count`` examples (fresh noise), the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    return [make_example(rng) for _ in range(count)]


QUESTION_FORMS: tuple[str, ...] = (
    "Question: is there a {colour} {kind} in this picture? Answer:",
    "Question: is there a {colour} {kind}? Answer:",
)
"""The prompts question mode is trained on (``vidcap mask --question "is there a red circle?"``
sends the second form)."""


def question_for(colour: str, kind: str, form: int = 0) -> str:
    """The question-mode prompt as a user types it."""
    return QUESTION_FORMS[form].format(colour=colour, kind=kind)


def random_question(rng: np.random.Generator, scene: Scene) -> tuple[str, str]:
    """A (prompt, "yes"/"no") pair in a random form: half asks about a present object,
    half about a near miss (right colour or right shape, often both wrong)."""
    form = int(rng.integers(len(QUESTION_FORMS)))
    if rng.random() < 0.5:
        colour, kind = scene.objects[int(rng.integers(len(scene.objects)))]
        return question_for(colour, kind, form), "yes"
    while True:
        base_colour, base_kind = scene.objects[int(rng.integers(len(scene.objects)))]
        roll = rng.random()
        colour = str(rng.choice(COLOURS)) if roll < 0.7 else base_colour
        kind = str(rng.choice(SHAPES)) if roll >= 0.35 else base_kind
        if not scene.contains(colour, kind):
            return question_for(colour, kind, form), "no"
