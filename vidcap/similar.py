"""``--skip-similar``: a sample that looks like the last captioned one reuses its caption.

In the decoder, on the frame already resized for the model: a 64-bit difference hash
(dHash: the picture in grey, shrunk to 9×8 by area averaging, one bit per horizontally
adjacent pair, "is the right one brighter") and the frame's mean colour. The cells are
compared in floating point with a dead zone of ``DEAD_ZONE`` grey levels ("brighter by more
than one level"): textbook dHash compares rounded 8-bit cells strictly, and in flat areas
(a wall, a white background) codec noise then flips bits between frames of a static shot —
measured on generated static shots, up to 8 of 64 bits between consecutive samples (and
14–27 bits comparing unrounded cells without the dead zone); with it, 0. A sample is
*similar* to the video's last captioned sample when the two hashes differ in at most
``D`` bits **and** their mean colours differ by at most ``COLOUR_TOLERANCE`` levels in
every channel: a dHash sees structure only, so a flat grey frame and a flat white one, or
the frames of a fade to black, hash alike; the colour check tells them apart.

A similar sample is not sent to the model; its row reuses the caption of the sample it is
similar to (``"same_as"``: that sample's frame index). The reference stays the last
*captioned* sample, so a slow drift cannot chain small differences into a large one.

Why NumPy/OpenCV and not the ``imagehash`` library: measured on this repository's 2-core
machine over 300 model-size frames of ``sample_videos/shapes.mp4`` (``bench/scenes.py``),
this hash and the mean colour take about 110 µs a frame, ``imagehash.dhash`` alone about
370 µs (a PIL round trip and a Lanczos resize; and no dead zone: the flat-area problem
above), without
adding imagehash's dependencies (SciPy, PyWavelets). Either is negligible beside decoding
(milliseconds a frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_DISTANCE = 0
"""``--skip-similar`` without a value: the largest distance that changes no caption of the
tiny model on the project's own videos at any sampling (``bench/scenes.py``, docs/scenes.md)."""
MAX_DISTANCE = 64
COLOUR_TOLERANCE = 8.0
"""Mean colour levels (0-255, per channel) two similar samples may differ by."""
DEAD_ZONE = 1.0
"""Grey levels by which a cell must be brighter than its left neighbour to set its bit."""


@dataclass(frozen=True)
class Signature:
    """What a sample is compared by: its 64-bit dHash and its mean colour (R, G, B)."""

    dhash: int
    colour: tuple[float, float, float]

    def distance(self, other: Signature) -> int:
        """Bits in which the two hashes differ (0-64)."""
        return (self.dhash ^ other.dhash).bit_count()

    def similar(self, other: Signature, max_distance: int) -> bool:
        colour = max(abs(a - b) for a, b in zip(self.colour, other.colour, strict=True))
        return self.distance(other) <= max_distance and colour <= COLOUR_TOLERANCE


def dhash(rgb: np.ndarray) -> int:
    """The 64-bit difference hash of an RGB frame (H, W, 3 uint8)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA)
    bits = small[:, 1:] - small[:, :-1] > DEAD_ZONE
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def signature(rgb: np.ndarray) -> Signature:
    red, green, blue, _ = cv2.mean(rgb)  # (NumPy's mean takes 6× as long as the hash)
    return Signature(dhash(rgb), (red, green, blue))


class SkipSimilar:
    """One video's samples, in order: which of them reuse an earlier caption.

    ``check(index, rgb)`` returns the frame index of the last captioned sample when this
    one is within ``max_distance`` bits of it (and of its colour), else None, and this one
    becomes the reference.
    """

    def __init__(self, max_distance: int) -> None:
        if not 0 <= max_distance <= MAX_DISTANCE:
            raise ValueError(f"max_distance must be 0-{MAX_DISTANCE}, got {max_distance}")
        self.max_distance = max_distance
        self._reference: tuple[int, Signature] | None = None

    def check(self, index: int, rgb: np.ndarray) -> int | None:
        mine = signature(rgb)
        if self._reference is not None:
            captioned, theirs = self._reference
            if mine.similar(theirs, self.max_distance):
                return captioned
        self._reference = (index, mine)
        return None
