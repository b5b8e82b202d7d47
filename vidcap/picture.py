"""What a player shows for a decoded frame: upright, in SDR BT.709, at its display shape.

Three facts of a decoded ``av.VideoFrame`` that its stored pixels do not show:

- **Orientation.** Phones store portrait video as landscape pixels plus a display matrix
  (rotation by 90/180/270 and mirroring). FFmpeg's decoders attach it to every frame they
  output (``AV_FRAME_DATA_DISPLAYMATRIX``: the stream's matrix, or a per-frame one from an
  H.264/HEVC display-orientation message, which holds until the next one).
  ``Orientation.apply`` turns the pixels upright exactly as FFmpeg's own player logic does
  (transpose, then mirror); angles that are no multiple of 90° are taken to the nearest
  one. A bare ``rotate`` metadata tag (MKV ``ROTATE``) is ignored, as FFmpeg 5.1 and 9 do.
- **Colour.** PQ (``smpte2084``) and HLG (``arib-std-b67``) frames, and frames with
  wide-gamut primaries (BT.2020, DCI-P3), are converted to SDR BT.709 by libswscale's colour
  mapping (FFmpeg ≥ 8: PyAV's ``VideoReformatter.reformat`` with ``dst_color_trc`` and
  ``dst_color_primaries``, the code the ``scale`` filter's ``out_transfer``/``out_primaries``
  run), which tone-maps with HDR reference white (203 cd/m²) at SDR white. Every other
  frame, 8- or 10-bit, goes through the one call vidcap always used,
  ``frame.to_ndarray(format="rgb24")``: swscale handles the bit depth and the frame's
  YCbCr matrix and range, so ordinary 8-bit frames stay byte-identical and cost nothing
  extra. See docs/decoding.md for why this and not zscale/tonemap or NumPy.
- **Transparency.** A frame with an alpha plane (QuickTime Animation, PNG, ProRes 4444,
  FFV1, Ut Video, WebM VP8/VP9 with alpha: ``vidcap.video`` picks libvpx's decoder for those,
  FFmpeg's own ignores the alpha) is composited onto white at its stored size
  (``frames.over_white``: what BLIP-2's image processor does with a transparent picture),
  then scaled; converting it straight to RGB showed whatever colour the encoder kept under
  the transparent pixels.
- **Display shape.** Non-square pixels (SD broadcast, DV: 704×576 with a sample aspect
  ratio of 16:11, displayed 16:9) give a display size that widens (SAR > 1) or heightens
  (SAR < 1) the stored picture, as mpv does, then follows the rotation. The model input
  does not need it (its processor squashes every frame to a square), pictures for people do:
  ``display_image``.

**The one resize.** Every resize is libswscale's (``scaled_rgb`` for a decoded frame,
``resize_rgb`` for RGB pixels): area averaging when the picture shrinks, bicubic when it
grows, chroma at full width, accurate rounding, one thread (the decoder processes fill the
cores). A decoded frame is converted and scaled in one pass from its YCbCr planes, then
turned upright: 1.3 ms for 720p → 224², where converting the whole frame and shrinking it
with OpenCV's area resize took 5.4 ms (the two differ by 1.1 levels on average). The model's
input and the thumbnail are each scaled so from the stored frame. HDR frames are tone-mapped
at their stored size first (a mapping context is built per size and costs seconds), and
transparent ones composited there, then scaled.
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.sidedata.sidedata import SideDataContainer
from av.video.reformatter import ColorPrimaries, ColorTrc, Interpolation, VideoReformatter

from vidcap.frames import over_white

log = logging.getLogger(__name__)

# Transfer functions and primaries a player converts before showing on an SDR screen.
HDR_TRANSFERS = frozenset({int(ColorTrc.SMPTE2084), int(ColorTrc.ARIB_STD_B67)})
WIDE_PRIMARIES = frozenset(
    {int(ColorPrimaries.BT2020), int(ColorPrimaries.SMPTE431), int(ColorPrimaries.SMPTE432)}
)
_COLORSPACE_BT2020_NCL = 9  # AVCOL_SPC_BT2020_NCL
_UNSPECIFIED = 2  # AVCOL_*_UNSPECIFIED (transfer, primaries and matrix alike)
_DISPLAY_MATRIX = struct.Struct("=9i")
_MAPPERS = 4  # colour-mapping contexts kept per process (setting one up takes seconds)
_SCALERS = 8  # scaling contexts kept per thread (a run needs two: the model's and the thumbnail's)


@dataclass(frozen=True)
class Orientation:
    """How stored pixels become the upright picture: transpose first, then mirror.

    ``flip_x`` mirrors left↔right and ``flip_y`` top↔bottom, both after transposing. The
    eight values are the eight EXIF orientations.
    """

    transpose: bool = False
    flip_x: bool = False
    flip_y: bool = False

    @classmethod
    def from_display_matrix(cls, matrix: tuple[int, ...]) -> Orientation:
        """From FFmpeg's 3×3 display matrix (``AV_PKT_DATA_DISPLAYMATRIX``, 16.16 fixed point).

        FFmpeg maps a stored pixel (x, y), y downwards, to (a·x + c·y, b·x + d·y) on screen,
        where a, b, c, d are ``matrix[0], matrix[1], matrix[3], matrix[4]``.
        """
        a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
        if abs(b) + abs(c) > abs(a) + abs(d):  # x goes to y: a quarter turn
            return cls(transpose=True, flip_x=c < 0, flip_y=b < 0)
        return cls(transpose=False, flip_x=a < 0, flip_y=d < 0)

    @property
    def is_upright(self) -> bool:
        return self == UPRIGHT

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The pixels ``rgb`` (H, W, C) as shown: a new contiguous array (or ``rgb`` itself)."""
        if self.is_upright:
            return rgb
        shown = rgb.transpose(1, 0, 2) if self.transpose else rgb
        if self.flip_x:
            shown = shown[:, ::-1]
        if self.flip_y:
            shown = shown[::-1]
        return np.ascontiguousarray(shown)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a ``width``×``height`` picture once turned."""
        return (height, width) if self.transpose else (width, height)


UPRIGHT = Orientation()


def display_size(
    width: int, height: int, sar: Fraction | None, orientation: Orientation = UPRIGHT
) -> tuple[int, int]:
    """(width, height) a player shows a ``width``×``height`` picture at.

    Pixels wider than tall (SAR > 1) widen the picture, narrower ones heighten it (never
    losing resolution, as mpv does): 704×576 at 16:11 shows at 1024×576. Then the rotation.
    """
    if sar and sar > 0 and sar != 1:
        if sar > 1:
            width = max(1, round(width * sar))
        else:
            height = max(1, round(height / sar))
    return orientation.size(width, height)


# A picture for people is at most this wide: a strip of a panorama, or a frame whose pixels
# are stretched 10:1, would otherwise be wider than a JPEG may be (65,500 pixels).
MAX_PICTURE_WIDTH = 1280


def picture_size(size: tuple[int, int], height: int) -> tuple[int, int]:
    """(width, height) of a picture ``height`` pixels tall at the display shape ``size``,
    made shorter where it would be wider than ``MAX_PICTURE_WIDTH``."""
    shown_width, shown_height = size
    if height < 1 or shown_width < 1 or shown_height < 1:
        raise ValueError(f"display_image: bad size {size} or height {height}")
    width = max(1, round(height * shown_width / shown_height))
    if width > MAX_PICTURE_WIDTH:
        height = max(1, round(height * MAX_PICTURE_WIDTH / width))
        width = MAX_PICTURE_WIDTH
    return width, height


def display_image(rgb: np.ndarray, size: tuple[int, int], height: int) -> np.ndarray:
    """``rgb`` (any H×W, e.g. the model-sized frame) as a picture ``height`` pixels tall at
    the display shape ``size`` (width, height), at most ``MAX_PICTURE_WIDTH`` wide: what a
    thumbnail or a page shows.

    The pixels must already be upright (every ``Frame`` is); only the shape changes.
    """
    return resize_rgb(rgb, *picture_size(size, height))


# Chroma interpolated at full width and accurate rounding: within 1.1 levels (mean) of
# converting the whole frame and then shrinking it, where swscale's defaults differ by 3.4.
_EXACTER = Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


def interpolation(source: tuple[int, int], target: tuple[int, int]) -> Interpolation:
    """libswscale's filter for a ``source`` → ``target`` (width, height) resize: area
    averaging when the picture shrinks, bicubic when it grows (by pixel count)."""
    shrinking = source[0] * source[1] > target[0] * target[1]
    return (Interpolation.AREA if shrinking else Interpolation.BICUBIC) | _EXACTER


class _Scalers(threading.local):
    """A libswscale context per output size and filter, per thread: a kept context is
    reused while its input stays alike (0.8 ms for 720p → 224² against 2.3 ms for a fresh
    one), and a context asked for two sizes in turn would be rebuilt at every call."""

    def __init__(self) -> None:
        self.contexts: dict[tuple[int, int, int], VideoReformatter] = {}

    def scale(self, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        how = interpolation((frame.width, frame.height), (width, height))
        key = (width, height, int(how))
        context = self.contexts.get(key)
        if context is None:
            if len(self.contexts) >= _SCALERS:
                self.contexts.clear()
            context = self.contexts[key] = VideoReformatter()
        # One thread: the decoder processes fill the cores already, and a picture this
        # small gains little from more.
        scaled = context.reformat(
            frame, width=width, height=height, format="rgb24", interpolation=how, threads=1
        )
        return np.ascontiguousarray(scaled.to_ndarray())


_SCALE = _Scalers()


# libswscale refuses a shrink whose filter would be too long (a 1×65000 picture to 224²:
# "Invalid argument"); such a picture is first averaged down by whole blocks to at most
# this many times the asked size in each direction.
MAX_SHRINK = 16


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB pixels (H, W, 3 uint8) at ``width``×``height``, by the one resize (libswscale);
    a picture libswscale cannot shrink so far in one pass (a strip thousands of times
    longer than wide) is first averaged down by whole blocks (``MAX_SHRINK``)."""
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return np.ascontiguousarray(rgb)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    try:
        return _SCALE.scale(frame, width, height)
    except (av.error.ArgumentError, ValueError):
        rows = max(1, rgb.shape[0] // (MAX_SHRINK * height))
        cols = max(1, rgb.shape[1] // (MAX_SHRINK * width))
        if rows == 1 and cols == 1:
            raise
        kept = rgb[: rgb.shape[0] // rows * rows, : rgb.shape[1] // cols * cols]
        blocks = kept.reshape(kept.shape[0] // rows, rows, kept.shape[1] // cols, cols, 3)
        shrunk = blocks.mean(axis=(1, 3)).round().astype(np.uint8)
        return resize_rgb(shrunk, width, height)


def scaled_rgb(
    frame: av.VideoFrame, orientation: Orientation, width: int, height: int
) -> np.ndarray:
    """``frame`` upright and SDR as RGB ``width``×``height`` (the size once turned): converted
    and scaled in one libswscale pass, then turned (a transposed picture is scaled to the
    transposed size first)."""
    stored_width, stored_height = orientation.size(width, height)
    if needs_colour_mapping(frame) or has_alpha(frame):
        # tone-mapped or composited at the stored size, then scaled
        rgb = resize_rgb(to_sdr_rgb(frame), stored_width, stored_height)
    else:
        rgb = _SCALE.scale(frame, stored_width, stored_height)
    return orientation.apply(rgb)


class Picture:
    """How one video's frames are shown: its sample aspect ratio, and the orientation of
    each frame. Build from the open stream and ``see`` every decoded frame (in presentation
    order); ``DecodedFrame`` converts those that leave the decoder.

    Orientation: a frame's display matrix (its stream's, which FFmpeg attaches to every
    frame, or its own from an H.264/HEVC display-orientation message); a frame without one
    keeps the last one seen, as FFmpeg's player logic does; before any, upright.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        guessed = _positive(stream.sample_aspect_ratio)  # the container's, else the codec's
        # The container's own (MP4 ``pasp``, Matroska's display size, AVI ``vprp``) holds for
        # every frame, as FFmpeg's av_guess_sample_aspect_ratio has it; without one, each
        # frame has its sequence's (an MPEG-TS switching 4:3 ↔ 16:9 at an IDR).
        coded = _positive(stream.codec_context.sample_aspect_ratio)
        self._stated = guessed if guessed != coded else None
        self._decoder = coded  # the decoder's, as last seen
        self._sequence = guessed  # the aspect ratio of the frames arriving now
        self._next: Fraction | None | _Unset = _UNSET  # a new sequence's, from its keyframe
        self._arrived: dict[int, Fraction | None] = {}
        self._orientation = UPRIGHT

    def arrived(self, frame: av.VideoFrame, decoder: av.CodecContext) -> None:
        """Note the aspect ratio of ``frame``, just out of ``decoder``; ``see`` takes it in
        presentation order. A new sequence header changes the decoder's at once, while the
        previous sequence's last frames (held back for reordering) are still to come out:
        a change holds from the next keyframe out (the new sequence's first: an IDR goes
        out after every frame before it)."""
        now = _positive(decoder.sample_aspect_ratio)
        if now != self._decoder and now is not None:
            self._decoder = self._next = now
        if frame.key_frame and not isinstance(self._next, _Unset):
            self._sequence, self._next = self._next, _UNSET
        self._arrived[id(frame)] = self._sequence

    def see(self, frame: av.VideoFrame) -> tuple[Orientation, Fraction | None]:
        """Note ``frame``'s display matrix, if it has one; the orientation and the sample
        aspect ratio it is shown at."""
        matrix = frame_display_matrix(frame)
        if matrix is not None:
            self._orientation = Orientation.from_display_matrix(matrix)
        own = self._arrived.pop(id(frame), self._sequence)
        return self._orientation, self._stated or own


class _Unset:
    """No change of aspect ratio waiting for its keyframe."""


_UNSET = _Unset()


def _positive(sar: Fraction | None) -> Fraction | None:
    return sar if sar and sar > 0 else None


def frame_display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The display matrix FFmpeg attached to ``frame``, if any (9 ints).

    A frame that also carries side data this PyAV has no name for (a newer FFmpeg's, e.g.
    MV-HEVC view ids) cannot list it: then the matrix is rebuilt from ``frame.rotation``
    (read in C), which keeps the turn and loses a mirroring.
    """
    try:
        container = _side_data(frame)
        # (PyAV 18.1.1's container iterates as the Mapping it is, giving each entry's type;
        # 18.1.0's gave the entries themselves)
        entries = [e if hasattr(e, "type") else container[e] for e in list(container)]
    except ValueError:
        return _rotation_matrix(frame.rotation) if frame.rotation else None
    for data in entries:
        if data.type.name == "DISPLAYMATRIX":
            raw = bytes(data)
            if len(raw) >= _DISPLAY_MATRIX.size:
                return _DISPLAY_MATRIX.unpack_from(raw)
    return None


def _side_data(frame: av.VideoFrame) -> SideDataContainer:
    """``frame.side_data``, without keeping it on the frame: that property caches a container
    pointing back at the frame, a reference cycle that keeps every frame looked at (and its
    decoder buffer) alive until the garbage collector runs, so the decoder allocates fresh
    buffers instead of reusing them (most of the decoder's +10 % after #16, BENCHMARKS.md).
    The same entries."""
    if isinstance(frame, av.frame.Frame):
        return SideDataContainer(frame)
    return frame.side_data  # (a stand-in frame)


def _rotation_matrix(anticlockwise: float) -> tuple[int, ...]:
    """FFmpeg's display matrix for a turn (``av_display_rotation_set`` of its negative)."""
    one = 1 << 16
    quarter = round(anticlockwise / 90) % 4
    cos, sin = ((1, 0), (0, 1), (-1, 0), (0, -1))[quarter]
    return (cos * one, -sin * one, 0, sin * one, cos * one, 0, 0, 0, 1 << 30)


def needs_colour_mapping(frame: av.VideoFrame) -> bool:
    """PQ/HLG, or wide-gamut primaries: what an SDR BT.709 screen cannot show as stored."""
    return frame.color_trc in HDR_TRANSFERS or frame.color_primaries in WIDE_PRIMARIES


@functools.cache
def format_has_alpha(name: str) -> bool:
    """Has the pixel format ``name`` an alpha plane (argb, rgba, yuva420p, gbrap, …)? A
    palette's alpha is not looked at: paletted video is shown opaque, as before. A format
    this PyAV cannot name has none."""
    try:
        return any(component.is_alpha for component in av.VideoFormat(name).components)
    except ValueError:
        return False


def has_alpha(frame: av.VideoFrame) -> bool:
    """Has ``frame``'s pixel format an alpha plane (``format_has_alpha``)?"""
    return format_has_alpha(frame.format.name)


def to_sdr_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``frame`` as 8-bit RGB for an SDR BT.709 screen, at its stored orientation and size.

    Frames that need no colour mapping go through ``frame.to_ndarray(format="rgb24")``,
    unchanged; HDR and wide-gamut frames through libswscale's colour mapping; frames with
    an alpha plane are converted with it and composited onto white (``over_white``).
    """
    alpha = has_alpha(frame)
    layout = "rgba" if alpha else "rgb24"
    if needs_colour_mapping(frame):
        pixels = _COLOUR.map(frame, layout)
    else:
        pixels = frame.to_ndarray(format=layout)
    return over_white(pixels) if alpha else pixels


class _ColourMapping:
    """libswscale contexts that map HDR/wide-gamut frames to SDR BT.709, kept per process.

    A context computes its tone-mapping tables on its first frame (1–3 s), then converts
    each 1080p frame in tens of ms: keeping a few, keyed by what the tables depend on,
    makes that a once-per-process cost for a folder of one phone's videos.
    """

    def __init__(self) -> None:
        self._contexts: OrderedDict[tuple, VideoReformatter] = OrderedDict()
        self._lock = threading.Lock()
        self._unsupported: str | None = _unsupported_reason()
        self._warned = False

    def map(self, frame: av.VideoFrame, layout: str = "rgb24") -> np.ndarray:
        """``frame`` in SDR BT.709 as ``layout`` (``rgb24`` or ``rgba``) pixels."""
        if self._unsupported is not None:
            self._warn(self._unsupported)
            return frame.to_ndarray(format=layout)
        _fill_hdr_defaults(frame)
        key = (
            frame.width, frame.height, frame.format.name, frame.color_trc,
            frame.color_primaries, frame.colorspace, frame.color_range,
        )  # fmt: skip
        with self._lock:
            context = self._contexts.pop(key, None) or VideoReformatter()
            self._contexts[key] = context
            while len(self._contexts) > _MAPPERS:
                self._contexts.popitem(last=False)
            try:
                shown = context.reformat(
                    frame,
                    format=layout,
                    dst_color_trc=ColorTrc.BT709,
                    dst_color_primaries=ColorPrimaries.BT709,
                )
            except (TypeError, av.FFmpegError) as exc:  # an older PyAV, an odd tag
                self._warn(f"colour mapping failed ({exc})")
                return frame.to_ndarray(format=layout)
        return shown.to_ndarray()

    def _warn(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "HDR/wide-gamut video: %s; frames are converted without tone mapping "
                "and look washed out",
                reason,
            )


def _unsupported_reason() -> str | None:
    """Why this PyAV cannot tone-map (swscale gained colour mapping in FFmpeg 8), or None."""
    version = av.library_versions.get("libswscale", (0,))
    if version < (9,):
        return f"PyAV's FFmpeg has libswscale {'.'.join(map(str, version))} (needs FFmpeg >= 8)"
    return None


def _fill_hdr_defaults(frame: av.VideoFrame) -> None:
    """PQ/HLG without primaries or matrix tags: BT.2020, as players assume."""
    if frame.color_trc in HDR_TRANSFERS:
        if frame.color_primaries == _UNSPECIFIED:
            frame.color_primaries = int(ColorPrimaries.BT2020)
        if frame.colorspace == _UNSPECIFIED:
            frame.colorspace = _COLORSPACE_BT2020_NCL


_COLOUR = _ColourMapping()
