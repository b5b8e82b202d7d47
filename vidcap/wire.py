"""The HTTP payload every server and client shares: frames as JPEG/PNG, answers as JSON.

Request: one image body (``image/jpeg`` or ``image/png``), or ``multipart/form-data``
with N image parts in order (a pre-batch). Optional generation settings travel as
form fields or as ``X-Vidcap-<Name>`` headers: ``prompt``, ``max_new_tokens``,
``num_beams``. Response: one image → ``{"caption": "…"}``; a pre-batch → a list of
those, in order. Errors → 4xx with ``{"error": "…"}``.

This module is transport-neutral: Flask and the TorchServe handler hand it bytes and
string fields; it never sees a framework object.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from vidcap.errors import BadRequest, SettingError, UsageError
from vidcap.frames import over_white, resize_for_model
from vidcap.settings import GenerationSettings
from vidcap.wording import counted

WIRE_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
SETTING_FIELDS = ("prompt", "max_new_tokens", "num_beams")
HEADER_PREFIX = "X-Vidcap-"
# Image formats a frame may have. Pillow opens a camera's multi-picture JPEG as MPO: its
# first picture is the photo (the others are previews or the second eye), read as a JPEG.
IMAGE_FORMATS = ("JPEG", "PNG", "MPO")
# Pillow's readers a frame is opened with (its JPEG reader gives an MPO as MPO).
READERS = ("JPEG", "PNG")
# A PNG's text chunks (metadata the model never reads; zTXt and iTXt compressed) are read and
# inflated when it is opened, up to Pillow's MAX_TEXT_MEMORY, 64 MB a picture: a 67 KB frame
# held 63 MB and 0.2 s of CPU, and a request holds every frame open until all headers are
# checked (64 such frames: 4 GB). A frame may carry this much text; more is a 413. Set for
# every PNG this process opens with Pillow (vidcap opens none but clients' frames).
PNG_TEXT_BYTES = 1 << 20
PngImagePlugin.MAX_TEXT_MEMORY = min(PngImagePlugin.MAX_TEXT_MEMORY, PNG_TEXT_BYTES)
# A JPEG's Photoshop resources (APP13) are parsed by Pillow in Python when it is opened, one
# resource at a time: 16 MB of empty resources held a worker 1.25 s. The model reads none of
# them: the segment is passed over unread, as Pillow passes over the markers it has no use
# for (its ``Skip``). Set for every JPEG this process opens with Pillow, like the above.
JpegImagePlugin.MARKER[0xFFED] = (*JpegImagePlugin.MARKER[0xFFED][:2], JpegImagePlugin.Skip)
# A whole-number setting: ASCII digits only (int() would take "٣٠", "3_0", " +30 ").
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")
# Where a JPEG's entropy-coded data ends: a marker (0xFF, then neither a stuffed 0x00 nor a
# restart marker RST0-7); fill bytes (more 0xFF) may come first.
_MARKER_AFTER_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # markers without a length: TEM, RSTn


# Pixels of one 1080p frame: the unit the default request-wide pixel limit is counted in.
FULL_HD_PIXELS = 1920 * 1080


@dataclass(frozen=True)
class WireLimits:
    """What one request may carry.

    ``max_pixels``: per frame (default DCI 4K, 4096x2160); ``max_total_pixels``: all of a
    request's frames together (default ``max_frames`` 1080p frames). Both are checked from
    the image headers before any pixel is decoded. ``max_jpeg_scans``: a JPEG's scans
    (counted from its markers, before decoding): each scan of a progressive JPEG is one
    pass over every block of the picture, and a scan can be a few bytes (the JPEG standard's
    end-of-band runs), so 16 MB of them hold a 4K frame's decoder for minutes (libjpeg-turbo's
    "LJT-01-003"); encoders write 1 (baseline) to about 10 (libjpeg's progressive script).
    ``max_png_chunks``: a PNG's chunks, and a request's PNG frames' chunks in all (walked by
    their lengths, before Pillow opens them): Pillow reads each chunk in Python, about 4 us
    apiece, so 16 MB of 15-byte text chunks held a decoder thread for 4.3 s; encoders write
    one chunk per 8-64 KB of pixels (a 16 MB frame: 256-2,048; a 64 MB request: up to
    8,192), and 65,536 chunks cost what decoding a 16 MB frame does.
    ``max_jpeg_markers``: a JPEG's markers and fill bytes before its first scan, which
    Pillow also reads in Python (16 MB of empty comments: 10 s; of fill bytes: 14 s);
    cameras and editors write about 10 to 70 (EXIF, XMP, an ICC profile in 64 KB pieces).
    """

    max_frames: int = 64
    max_pixels: int = 4096 * 2160
    max_bytes_per_frame: int = 16 * 1024 * 1024
    max_total_pixels: int = 64 * FULL_HD_PIXELS
    max_jpeg_scans: int = 100
    max_png_chunks: int = 65_536
    max_jpeg_markers: int = 1024


@dataclass(frozen=True)
class CaptionRequest:
    images: list[np.ndarray]
    settings: GenerationSettings
    batched: bool


def encode_image(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an RGB uint8 frame for the wire (``jpeg`` or lossless ``png``)."""
    if fmt not in WIRE_FORMATS:
        raise UsageError(f"unknown wire format {fmt!r}; supported values are jpeg, png")
    buffer = io.BytesIO()
    image = Image.fromarray(rgb, mode="RGB")
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=quality)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_frames(
    images: Sequence[np.ndarray], size: tuple[int, int], fmt: str = "png", quality: int = 95
) -> list[bytes]:
    """Encode a client's frames for the wire; each must already be at ``size`` (height, width).

    A frame of another shape is a ``ValueError``: frames are resized once, by the decoder
    (``vidcap.frames.resize_for_model``), never again on the way to a server.
    """
    expected = (*size, 3)
    for index, image in enumerate(images):
        if image.shape != expected:
            raise ValueError(
                f"frame {index} of a batch has shape {image.shape}, but the server's model "
                f"takes {expected}: resize frames to the backend's input_size before sending"
            )
    return [encode_image(np.ascontiguousarray(image), fmt, quality) for image in images]


def too_large_image(limits: WireLimits, label: str = "image") -> BadRequest:
    return BadRequest(f"{label} is larger than {limits.max_bytes_per_frame} bytes", 413)


def open_image(data: bytes, limits: WireLimits, label: str = "image") -> Image.Image:
    """Open one wire frame lazily (headers only, no pixels decoded) and check its format and
    size against ``limits``; ``BadRequest`` says what is wrong."""
    if not data:
        raise BadRequest(f"{label} is empty")
    if len(data) > limits.max_bytes_per_frame:
        raise too_large_image(limits, label)
    if data.startswith(PNG_SIGNATURE) and png_chunks(data, limits.max_png_chunks) > (
        limits.max_png_chunks
    ):
        raise too_many_chunks(label, limits)
    if data.startswith(b"\xff\xd8") and jpeg_header_markers(data, limits.max_jpeg_markers) > (
        limits.max_jpeg_markers
    ):
        raise BadRequest(
            f"{label} is a JPEG of more than {limits.max_jpeg_markers} markers before its "
            "picture (each one read on its own: a decoding-time bomb)"
        )
    if data.startswith(b"\xff\xd8") and (fault := jpeg_header_fault(data)) is not None:
        raise BadRequest(f"{label} is a JPEG {fault}")
    if data.startswith(PNG_SIGNATURE) and png_profiles(data) > 1:
        raise BadRequest(
            f"{label} is a PNG with more than one colour profile (iCCP chunk; the PNG standard "
            "allows one, and each is inflated when the file is opened)"
        )
    try:
        # Only the JPEG and PNG readers see a client's bytes: Pillow's other readers would
        # parse a body before its format is known, and some walk all of it in Python (16 MB
        # shaped as an ICNS or a GIF: 1.5-2 s of the worker's CPU, refused only after).
        image = Image.open(io.BytesIO(data), formats=READERS)
    except UnidentifiedImageError:
        other = other_format(data)
        if other is not None:
            raise BadRequest(f"{label} is {other}, expected JPEG or PNG", 415) from None
        raise BadRequest(f"{label} is not a decodable JPEG or PNG image") from None
    except Image.DecompressionBombError as exc:  # its header says more than Pillow's limit
        raise BadRequest(
            f"{label} has more pixels than the limit of {limits.max_pixels} ({exc})", 413
        ) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on garbage input
        raise undecodable(label, exc) from None
    if image.format not in IMAGE_FORMATS:
        image.close()
        raise BadRequest(f"{label} is {image.format}, expected JPEG or PNG", 415)
    width, height = image.size
    if width * height > limits.max_pixels:
        image.close()
        raise BadRequest(f"{label} has {width}x{height} pixels, more than {limits.max_pixels}", 413)
    if image.format != "PNG" and _too_many_scans(data, limits.max_jpeg_scans):
        image.close()
        raise BadRequest(
            f"{label} is a JPEG of more than {limits.max_jpeg_scans} scans (each one a pass "
            "over the whole picture: a decoding-time bomb)"
        )
    return image


def image_pixels(data: bytes | bytearray | memoryview) -> int:
    """Width × height from an image's header (no pixel decoded); 0 where none is read (the
    handler answers such a part)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - any fault in a header: the handler names it
        return 0


def undecodable(label: str, exc: Exception) -> BadRequest:
    """What Pillow's ``exc`` on opening or decoding frame ``label`` is, for the client."""
    if isinstance(exc, ValueError) and "MAX_TEXT_" in str(exc):  # PngImagePlugin's budgets
        return BadRequest(
            f"{label} is a PNG with more than {PNG_TEXT_BYTES >> 20} MiB of text in its "
            "metadata chunks, the limit (the model reads none of it): strip its metadata",
            413,
        )
    return BadRequest(f"{label} is not a decodable JPEG or PNG image ({exc})")


def other_format(data: bytes) -> str | None:
    """The image format ``data`` says it is by its first bytes (Pillow's signature checks,
    no parsing), where it is one Pillow knows, else None: named in the refusal."""
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name in IMAGE_FORMATS or accept is None:
            continue
        try:
            said = accept(prefix)  # a string is Pillow's "it is, but unsupported" message
        except Exception:  # noqa: BLE001 - a check that reads past a body of 1-3 bytes
            continue  # (Pillow's BMP check: struct.error): not that format
        if said and not isinstance(said, str):
            return name
    return None


def _too_many_scans(data: bytes, limit: int) -> bool:
    """Has JPEG ``data`` more than ``limit`` scans? Every scan starts with the bytes FF DA,
    which can also occur inside other segments (never in entropy-coded data): where they
    occur no more than ``limit`` times, no walk is needed (0.1 ms a megabyte, not 5)."""
    return data.count(b"\xff\xda") > limit and jpeg_scans(data, limit) > limit


def jpeg_scans(data: bytes, limit: int) -> int:
    """How many scans the first picture of JPEG ``data`` has (counting stops past
    ``limit``): its markers are walked from the start — segments by their lengths, scans to
    the next marker — up to its end (EOI) or the data's; a byte that is no marker where one
    must be ends the walk (Pillow's decoder says the rest)."""
    scans = 0
    for marker, position in _jpeg_markers(data, skip_junk=False):
        if marker == 0xDA and position + 3 < len(data):
            scans += 1
            if scans > limit:
                break
    return scans


def jpeg_header_markers(data: bytes, limit: int) -> int:
    """How many markers (fill bytes, and runs of other bytes between segments, included)
    JPEG ``data`` has before its first scan (counting stops past ``limit``). Pillow skips
    bytes that are no marker one by one, as it reads fill bytes, so such a run counts as
    one step and is jumped over here, not walked."""
    markers = 0
    for marker, _ in _jpeg_markers(data, skip_junk=True):
        markers += 1
        if markers > limit or marker in (0xDA, 0xD9):  # SOS: the picture begins; EOI
            break
    return markers


# Markers of a frame header (SOF), whose segments Pillow reads as the picture's size and
# components (Pillow's SOF handler: every SOFn and DHP).
_FRAME_HEADERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xDE})
_QUANTIZATION = 0xDB  # DQT: quantization tables, 65 or 129 bytes each
# Quantization tables before the picture: encoders write 2 to 4 (130-520 bytes).
MAX_QUANTIZATION_BYTES = 4096


def jpeg_header_fault(data: bytes) -> str | None:
    """What JPEG ``data``'s header (before its first scan) holds that no encoder writes and
    Pillow would read in Python, item by item, when it opens it — else None: a second frame
    header, one longer than its components (Pillow reads a component every 3 bytes of it:
    16 MB of such headers held a worker 1.9 s and 476 MB), or more quantization tables than
    ``MAX_QUANTIZATION_BYTES`` (16 MB of them: 1.1 s). libjpeg refuses the first two."""
    frames = quantization = 0
    for marker, position in _jpeg_markers(data, skip_junk=True):
        if marker in (0xDA, 0xD9):  # SOS: the picture begins; EOI
            break
        if marker in _FRAME_HEADERS or marker == _QUANTIZATION:
            length = int.from_bytes(data[position + 2 : position + 4], "big")
            if marker == _QUANTIZATION:
                quantization += length
                if quantization > MAX_QUANTIZATION_BYTES:
                    return (
                        f"with more than {MAX_QUANTIZATION_BYTES} bytes of quantization tables "
                        "before its picture (encoders write 130 to 520)"
                    )
                continue
            frames += 1
            components = data[position + 9] if position + 9 < len(data) else 0
            if frames > 1:
                return "with more than one frame header (SOF)"
            if length != 8 + 3 * components:
                return f"whose frame header (SOF) is {length} bytes for {components} components"
    return None


def _jpeg_markers(data: bytes, skip_junk: bool) -> Iterator[tuple[int | None, int]]:
    """JPEG ``data``'s markers after its SOI, each with where it starts: a fill byte as
    0xFF; a run of bytes that are no marker as None, jumped over (``skip_junk``) or ending
    the walk; segments jumped by their lengths, a scan's entropy-coded data to the next
    marker; up to EOI or the data's end."""
    position, end = 2, len(data)
    while position + 1 < end:
        if data[position] != 0xFF:
            if not skip_junk:
                return
            yield None, position
            position = data.find(b"\xff", position)
            if position < 0:
                return
            continue
        marker = data[position + 1]
        yield marker, position
        if marker == 0xD9:
            return
        if marker == 0xFF or marker in _STANDALONE:
            position += 1 if marker == 0xFF else 2
            continue
        if position + 3 >= end:
            return
        position += 2 + (data[position + 2] << 8 | data[position + 3])
        if marker == 0xDA:  # SOS: its header, then entropy-coded data up to the next marker
            found = _MARKER_AFTER_SCAN.search(data, position)
            if found is None:
                return
            position = found.end() - 2


def too_many_chunks(label: str, limits: WireLimits) -> BadRequest:
    return BadRequest(
        f"{label} is a PNG of more than {limits.max_png_chunks} chunks (each one read on its "
        "own: a decoding-time bomb)"
    )


def check_png_chunks(frames: Sequence[bytes], labels: Sequence[str], limits: WireLimits) -> None:
    """``BadRequest`` when a request's PNG frames have more than ``limits.max_png_chunks``
    chunks in all: 64 frames each within the limit held a decoder 15 s."""
    left = limits.max_png_chunks
    for data, label in zip(frames, labels, strict=True):
        if data.startswith(PNG_SIGNATURE):
            first = left == limits.max_png_chunks
            left -= png_chunks(data, left)
            if left < 0 and first:
                raise too_many_chunks(label, limits)
            if left < 0:
                raise BadRequest(
                    f"request has PNG frames of more than {limits.max_png_chunks} chunks in all "
                    f"({label} goes past it; each chunk is read on its own: a decoding-time bomb)"
                )


def _png_kinds(data: bytes) -> Iterator[bytes]:
    """PNG ``data``'s chunk types in order, walked by their lengths from the signature to
    IEND (included) or the data's end."""
    position, end = len(PNG_SIGNATURE), len(data)
    while position + 8 <= end:
        kind = data[position + 4 : position + 8]
        yield kind
        if kind == b"IEND":
            return
        position += 12 + int.from_bytes(data[position : position + 4], "big")


def png_profiles(data: bytes) -> int:
    """How many colour profiles (iCCP chunks) PNG ``data`` has, stopping past one: Pillow
    inflates each, up to 1 MB, wherever it is (1,000 of them, 1 MB of PNG, held a worker
    2.5 s)."""
    profiles = 0
    for kind in _png_kinds(data):
        profiles += kind == b"iCCP"
        if profiles > 1:
            break
    return profiles


def png_chunks(data: bytes, limit: int) -> int:
    """How many chunks PNG ``data`` has (counting stops past ``limit``)."""
    chunks = 0
    for _ in _png_kinds(data):
        chunks += 1
        if chunks > limit:
            break
    return chunks


def load_rgb(
    image: Image.Image, label: str = "image", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode an image from ``open_image`` to RGB uint8 (a writable array) and close it.

    With ``size`` (height, width) the frame comes back resized by ``resize_for_model``; a
    JPEG at least twice that size in both directions is first decoded at a reduced scale
    (1/2, 1/4 or 1/8, never below ``size``), so a large frame is never held at full size.
    A frame already at ``size`` is decoded and returned exactly as without ``size``.
    """
    try:
        if size is not None and image.format == "JPEG":
            height, width = size
            if image.width // width >= 2 and image.height // height >= 2:
                image.draft(None, (width, height))
        image = _upright(image)
        if image.mode in _WIDE_GREY:
            rgb = _wide_grey(image)
        elif "A" in image.getbands() or image.info.get("transparency") is not None:
            rgb = over_white(np.asarray(image.convert("RGBA")))  # as BLIP-2's processor does
        else:
            rgb = np.array(image.convert("RGB"))  # a writable copy
    except Exception as exc:  # noqa: BLE001 - PIL raises many types on garbage input
        raise undecodable(label, exc) from None
    finally:
        image.close()  # frees the decoded pixels even while others still refer to it
    return rgb if size is None else resize_for_model(rgb, size)


MAX_EXIF_BYTES = 65_536  # a JPEG's APP1 segment holds at most this
# EXIF orientation (2–8) → the transposition that shows the picture upright
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned by its EXIF orientation (a phone's photo is stored sideways), as
    viewers show it; as it is when its EXIF cannot be read (the picture still can).

    Only the orientation tag is read (Pillow's ``ImageOps.exif_transpose`` also rewrites the
    whole EXIF block for the copy: 0.7 s of CPU for a hostile 0.8 MB one), of a block read
    with the headers and no longer than a JPEG's APP1 segment (64 KiB: 18 ms at worst)."""
    exif = image.info.get("exif")
    if not isinstance(exif, bytes) or len(exif) > MAX_EXIF_BYTES:
        return image
    try:
        method = _UPRIGHT.get(image.getexif().get(0x0112))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a malformed EXIF block: viewers ignore it too
        return image
    if method is None:
        return image
    turned = image.transpose(method)
    image.close()
    return turned


_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # a 16-bit grey PNG


def _wide_grey(image: Image.Image) -> np.ndarray:
    """A 16-bit grey picture as RGB uint8, 65535 → 255 (Pillow's own conversion clips every
    value above 255, so all but the darkest pixels came out white); its transparent value
    (``tRNS``) white, as other pictures' transparency."""
    grey = np.asarray(image).astype(np.float32)
    rgb = np.rint(np.clip(grey, 0, 65535) / 257).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int):
        rgb[grey == transparent] = 255
    return np.repeat(rgb[:, :, None], 3, axis=2)


def decode_image(
    data: bytes, limits: WireLimits, label: str = "image", size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode one wire frame to RGB uint8, or raise ``BadRequest`` saying what is wrong.

    ``size`` (height, width): resize to it, as ``load_rgb`` does."""
    return load_rgb(open_image(data, limits, label), label, size)


def parse_settings(values: Mapping[str, str]) -> GenerationSettings:
    """Generation settings from form fields/headers (strings), validated with limits."""
    kwargs: dict[str, object] = {}
    for name in SETTING_FIELDS:
        raw = values.get(name)
        if raw is None or raw == "":
            continue
        if name == "prompt":
            kwargs[name] = raw
            continue
        if not _WHOLE_NUMBER.fullmatch(raw):
            raise BadRequest(f"{name} must be a whole number (ASCII digits), got {raw!r:.40}")
        kwargs[name] = int(raw)
    try:
        return GenerationSettings(**kwargs)  # type: ignore[arg-type]
    except SettingError as exc:  # (a field was sent, not a flag)
        raise BadRequest(exc.reason) from None
    except UsageError as exc:
        raise BadRequest(str(exc)) from None


def header_name(name: str) -> str:
    """The header of a setting: ``max_new_tokens`` → ``X-Vidcap-Max-New-Tokens``."""
    return HEADER_PREFIX + "-".join(word.capitalize() for word in name.split("_"))


def settings_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``X-Vidcap-Max-New-Tokens: 20`` → ``{"max_new_tokens": "20"}`` (case-insensitive).

    A value beyond ASCII is a ``BadRequest``: a header's bytes have no agreed encoding (a
    WSGI server reads them as Latin-1, so ``un été`` sent as UTF-8 was read as ``un Ã©tÃ©``
    and captioned with that); a form field's text is UTF-8."""
    lowered = {k.lower(): v for k, v in headers.items()}
    found: dict[str, str] = {}
    for name in SETTING_FIELDS:
        header = header_name(name)
        value = lowered.get(header.lower())
        if value is None:
            continue
        if not value.isascii():
            raise BadRequest(
                f"{header} holds text beyond ASCII, which a header does not carry as it is: "
                "send it as a form field (multipart/form-data, UTF-8)"
            )
        found[name] = value
    return found


def settings_to_fields(settings: GenerationSettings) -> dict[str, str]:
    """The inverse of ``parse_settings``, for clients: only what differs from defaults."""
    default = GenerationSettings()
    return {
        name: str(getattr(settings, name))
        for name in SETTING_FIELDS
        if getattr(settings, name) != getattr(default, name) and getattr(settings, name) is not None
    }


def build_request(
    frames: Sequence[bytes],
    fields_: Mapping[str, str],
    batched: bool,
    limits: WireLimits,
    size: tuple[int, int] | None = None,
) -> CaptionRequest:
    """Validate a request's image parts and settings; raise ``BadRequest`` on any fault.

    Every frame's format and size is checked from its header, and the request's total
    pixels against ``limits.max_total_pixels``, before any pixel is decoded. Frames are
    then decoded one at a time — with ``size``, resized to it before the next one — so a
    request never holds more than one full-size frame.
    """
    if not frames:
        raise BadRequest("request has no image: send an image body or multipart image parts")
    if len(frames) > limits.max_frames:
        raise BadRequest(
            f"request has {len(frames)} frames, more than the limit of {limits.max_frames}", 413
        )
    settings = parse_settings(fields_)
    labels = [f"frame {i}" if batched else "image" for i in range(len(frames))]
    check_png_chunks(frames, labels, limits)
    with ExitStack() as stack:  # closes every opened image, however this ends
        opened = []
        for data, label in zip(frames, labels, strict=True):
            image = open_image(data, limits, label)
            stack.callback(image.close)
            opened.append(image)
        total = sum(image.width * image.height for image in opened)
        if total > limits.max_total_pixels:
            raise BadRequest(
                f"request has {total} pixels in its {counted(len(frames), 'frame')}, more than the "
                f"limit of {limits.max_total_pixels}",
                413,
            )
        images: list[np.ndarray] = []
        for image, label in zip(opened, labels, strict=True):
            images.append(load_rgb(image, label, size))
    return CaptionRequest(images=images, settings=settings, batched=batched)


def caption_response(
    captions: Sequence[str], batched: bool
) -> list[dict[str, str]] | dict[str, str]:
    """JSON body for a served request: one object, or a list in frame order."""
    answers = [{"caption": caption} for caption in captions]
    return answers if batched else answers[0]


def error_response(message: str) -> dict[str, str]:
    return {"error": message}


def captions_from_response(body: object, expected: int) -> list[str]:
    """Client side: the captions out of a response body, checked against what was sent."""
    items = body if isinstance(body, list) else [body]
    if len(items) != expected or not all(
        isinstance(i, dict) and isinstance(i.get("caption"), str) for i in items
    ):  # (a caption that is no text — null, a number — is no caption: never stored as "None")
        raise ValueError(f"server answered {body!r:.200}, expected {expected} caption(s)")
    return [item["caption"] for item in items]


# --- multipart part names and headers (shared by clients and both servers) ---

FRAME_PART_PREFIX = "frame"


def frame_part_name(index: int) -> str:
    """The multipart field name of the ``index``-th frame of a pre-batch: ``frame0``, ``frame1``…"""
    return f"{FRAME_PART_PREFIX}{index}"


def ordered_frames(parts: Sequence[tuple[str, bytes]]) -> list[bytes]:
    """Frame bytes in frame order from ``(field name, bytes)`` parts.

    When every name is ``frame<N>`` (what ``frame_part_name`` writes), the parts are
    sorted by N, so a transport that loses part order (a dict keyed by name) still
    answers in order (two names of one N, ``frame01`` and ``frame1``, are a
    ``BadRequest``); otherwise the given order is kept.
    """
    prefix = len(FRAME_PART_PREFIX)
    if parts and all(
        name.startswith(FRAME_PART_PREFIX) and name[prefix:].isdigit() for name, _ in parts
    ):
        numbered = sorted(parts, key=lambda part: int(part[0][prefix:]))
        for (first, _), (second, _) in zip(numbered, numbered[1:], strict=False):
            if int(first[prefix:]) == int(second[prefix:]):  # (frame01 and frame1)
                raise BadRequest(
                    f"multipart parts {first!r} and {second!r} are both frame "
                    f"{int(first[prefix:])}: the answers' order would not say which is which"
                )
        return [data for _, data in numbered]
    return [data for _, data in parts]


def explicit_settings_fields(settings: GenerationSettings) -> dict[str, str]:
    """Every generation setting as a field, for clients.

    Unlike ``settings_to_fields`` it does not leave out values equal to the library's
    defaults, so a server configured with other defaults still generates exactly what
    the client asked for (and what the embedded run generates). No prompt is sent as an
    empty ``prompt``, which a server reads as no prompt: left out, a server started with
    ``VIDCAP_PROMPT`` (or a handler ``prompt``) would caption with its own.
    """
    return {
        name: "" if (value := getattr(settings, name)) is None else str(value)
        for name in SETTING_FIELDS
    }


def settings_to_headers(settings: GenerationSettings) -> dict[str, str]:
    """``explicit_settings_fields`` as ``X-Vidcap-<Name>`` headers, for single-image requests."""
    return {header_name(name): value for name, value in explicit_settings_fields(settings).items()}
