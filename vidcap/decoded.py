"""What decoding one video gives: ``VideoStats`` (what it found, once done) and
``DecodedFrame`` (one frame as decoded, converted only when asked: for the model, as a
player shows it, or as a thumbnail). ``vidcap.video.VideoReader`` makes both."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from vidcap.fields import shown_field
from vidcap.frames import Frame
from vidcap.picture import (
    Orientation,
    display_size,
    picture_size,
    resize_rgb,
    scaled_rgb,
    to_sdr_rgb,
)


@dataclass
class VideoStats:
    """What decoding one video found; complete once ``frames()`` has been iterated.

    ``failed_frames``: frames that really did not decode (decoder errors, or a stream
    that ends before its header's duration) — never frames a header merely over-counts.
    """

    width: int = 0
    height: int = 0
    nominal_fps: float = 0.0
    expected_frames: int = 0
    decoded_frames: int = 0
    sampled_frames: int = 0
    failed_frames: int = 0
    # What the warning counts as lost (``failed_frames`` and ``late_frames``, capped by the
    # header's count); 0 where nothing was lost. Recorded with the video's result.
    lost_frames: int = 0
    # Frames that decoded with errors the decoder concealed (FFmpeg's corrupt flag).
    corrupt_frames: int = 0
    # Frames a damaged stream's decoder released too far out of order to be placed.
    late_frames: int = 0
    last_pts: float = 0.0
    # End of the last frame: its pts plus one frame interval (as ffprobe counts it).
    duration: float = 0.0
    # Frames shown at the time of the frame before them (within ``SAME_TIME_S``): a file
    # whose timeline is broken there (badly joined: a muxer clamped its timestamps).
    same_time_frames: int = 0
    first_same_time: float = 0.0
    # Sampling stopped before the video's end (``--max-frames``): ``duration`` is then the
    # end of the last frame decoded, no end of the video (``decode.sampled_end``).
    stopped_early: bool = False


@dataclass(frozen=True)
class DecodedFrame:
    """A decoded frame as ``VideoReader.decoded_frames`` gives it: its index and time (as
    ``frames`` gives them), the decoder's frame (stored pixels, not converted yet) and the
    orientation a player shows it at. ``shown()`` converts it as ``frames`` would.
    ``damaged``: its picture may show decoding damage — it decoded with concealed errors,
    or follows such a reference frame (an I- or P-frame) or a frame lost, before the next
    clean keyframe."""

    index: int
    time: float
    av_frame: av.VideoFrame
    orientation: Orientation
    sar: Fraction | None
    damaged: bool = False

    @property
    def display_size(self) -> tuple[int, int]:
        """The (width, height) a player shows the frame at (``picture.display_size``)."""
        frame = self.av_frame
        return display_size(frame.width, frame.height, self.sar, self.orientation)

    def shown(self) -> Frame:
        """The frame as a player shows it: upright SDR RGB at its stored resolution (an
        interlaced frame's first field, scaled to it), with its display size."""
        frame = self.av_frame
        rgb = to_sdr_rgb(shown_field(frame))
        rgb = resize_rgb(rgb, frame.width, frame.height)  # (a field: to the frame's height)
        return Frame(self.index, self.time, self.orientation.apply(rgb), self.display_size,
                     self.damaged)  # fmt: skip

    def for_model(self, size: tuple[int, int]) -> Frame:
        """The frame at the model's input ``size`` (height, width), upright and SDR:
        converted and scaled in one libswscale pass (``picture.scaled_rgb``; an interlaced
        frame's first field, ``fields.shown_field``), with its display size."""
        height, width = size
        rgb = scaled_rgb(shown_field(self.av_frame), self.orientation, width, height)
        return Frame(self.index, self.time, rgb, self.display_size, self.damaged)

    def picture(self, height: int) -> np.ndarray:
        """The frame as people see it, ``height`` pixels tall (at most its display height)
        at its display shape (``picture_size``: at most ``MAX_PICTURE_WIDTH`` wide): what a
        thumbnail shows, scaled from the decoder's frame (an interlaced frame's first field)."""
        shown = self.display_size
        field = shown_field(self.av_frame)
        return scaled_rgb(field, self.orientation, *picture_size(shown, min(height, shown[1])))
