"""``--skip-similar``: a sample that looks like the last captioned one reuses its caption.

In the decoder, on the frame already resized for the model: a 64-bit difference hash
(dHash: the picture in grey, shrunk to 9×8 by area averaging, one bit per horizontally
adjacent pair, "is the right one brighter") and the frame's mean colour. A sample is
*similar* to the video's last captioned sample when the two hashes differ in at most
``D`` bits **and** their mean colours differ by at most ``COLOUR_TOLERANCE`` levels in
every channel: a dHash sees structure only, so a flat grey frame and a flat white one, or
the frames of a fade to black, hash alike; the colour check tells them apart.

A similar sample is not sent to the model; its row reuses the caption of the sample it is
similar to (``"same_as"``: that sample's frame index). The reference stays the last
*captioned* sample, so a slow drift cannot chain small differences into a large one.

Why NumPy/OpenCV and not the ``imagehash`` library: the same dHash, measured on this
repository's 2-core machine over 300 model-size frames of ``sample_videos/shapes.mp4``,
about 160 µs a frame against about 300 µs for ``imagehash.dhash`` (a PIL round trip and a
Lanczos resize), without adding imagehash's dependencies (SciPy, PyWavelets). Either is
negligible beside decoding (milliseconds a frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_DISTANCE = 4
"""``--skip-similar`` without a value (see docs/scenes.md for how it was chosen)."""
MAX_DISTANCE = 64
COLOUR_TOLERANCE = 8.0
"""Mean colour levels (0-255, per channel) two similar samples may differ by."""


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
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA)
    bits = small[:, 1:] > small[:, :-1]
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def signature(rgb: np.ndarray) -> Signature:
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return Signature(dhash(rgb), (float(mean[0]), float(mean[1]), float(mean[2])))


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
