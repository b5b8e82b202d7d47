"""The typed frame container and the one resize every path shares."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded frame: decoder index, presentation time and RGB pixels (H, W, 3 uint8).

    The pixels are upright and SDR, as a player shows them (``vidcap.picture``), at the
    stored resolution or resized for the model. ``display_size`` is the (width, height) a
    player shows the picture at (non-square pixels and rotation applied): pictures for
    people take this shape (``vidcap.picture.display_image``); the model does not need it.
    None when constructing: the pixels' own (width, height).
    """

    index: int
    time: float
    rgb: np.ndarray
    display_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(
                f"Frame.rgb must be an (H, W, 3) uint8 array, got {self.rgb.shape} {self.rgb.dtype}"
            )
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")
        if self.display_size is None:
            object.__setattr__(self, "display_size", (self.rgb.shape[1], self.rgb.shape[0]))
        elif len(self.display_size) != 2 or min(self.display_size) < 1:
            raise ValueError(f"Frame.display_size must be (width, height), got {self.display_size}")


def resize_for_model(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB frame to the model's input ``size`` (height, width).

    Every path (embedded, Flask, TorchServe, clients, training) calls this one
    function, so the pixels the model sees are the same whichever way a frame
    travelled. Area interpolation when shrinking, cubic when enlarging.
    """
    height, width = size
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return np.ascontiguousarray(rgb)
    shrinking = rgb.shape[0] * rgb.shape[1] > height * width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, (width, height), interpolation=interpolation)
