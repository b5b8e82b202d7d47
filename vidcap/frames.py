"""The typed frame container, the model-input resize for RGB pixels, and transparency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded frame: decoder index, presentation time and RGB pixels (H, W, 3 uint8).

    The pixels are upright and SDR, as a player shows them (``vidcap.picture``), at the
    stored resolution or resized for the model. ``display_size`` is the (width, height) a
    player shows the picture at (non-square pixels and rotation applied): pictures for
    people take this shape (``vidcap.picture.display_image``); the model does not need it.
    None when constructing: the pixels' own (width, height). ``damaged``: the picture may
    show decoding damage (``vidcap.decoded.DecodedFrame.damaged``).
    """

    index: int
    time: float
    rgb: np.ndarray
    display_size: tuple[int, int] | None = None
    damaged: bool = False

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
    """Resize RGB pixels to the model's input ``size`` (height, width).

    The one resize (``vidcap.picture.resize_rgb``, libswscale: area averaging when
    shrinking, bicubic when enlarging), for pixels that arrive as RGB: images sent to a
    server at another size, the tiny model's training pictures. Video frames are scaled
    by the same filters straight from the decoder (``DecodedFrame.for_model``), once, in
    the decode stage every path shares; they reach a server already at the input size.
    """
    height, width = size
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return np.ascontiguousarray(rgb)
    from vidcap.picture import resize_rgb  # (PyAV: only where a resize is needed)

    return resize_rgb(rgb, width, height)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA pixels (H, W, 4 uint8, straight alpha) composited onto white: (H, W, 3 uint8).

    What BLIP-2's image processor does with a picture that has transparency
    (``transformers.image_transforms.convert_to_rgb``: onto white, rounded to the nearest
    level), in integers: each channel ``(c·a + 255·(255 − a)) / 255``, rounded. Every
    transparent picture the model receives goes through here (video frames with an alpha
    plane, PNGs posted to a server), so a transparent background is white, never the colour
    an encoder happened to keep under it.
    """
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"over_white takes (H, W, 4) uint8 pixels, got {rgba.shape} {rgba.dtype}")
    alpha = rgba[..., 3:].astype(np.uint32)
    blended = rgba[..., :3].astype(np.uint32) * alpha + 255 * (255 - alpha) + 127
    return (blended // 255).astype(np.uint8)
