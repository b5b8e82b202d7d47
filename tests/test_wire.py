"""The shared wire protocol, transport-neutral: encode/decode, limits, settings."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.support.images import black_png
from vidcap import wire
from vidcap.errors import BadRequest, UsageError
from vidcap.frames import resize_for_model
from vidcap.settings import GenerationSettings
from vidcap.wire import (
    WireLimits,
    build_request,
    caption_response,
    captions_from_response,
    decode_image,
    encode_frames,
    encode_image,
    parse_settings,
    settings_from_headers,
)

RNG = np.random.default_rng(3)
FRAME = RNG.integers(0, 256, size=(1080, 1920, 3), dtype=np.uint8)


def test_png_is_lossless_and_writable() -> None:
    small = resize_for_model(FRAME, (224, 224))
    decoded = decode_image(encode_image(small, "png"), WireLimits())
    assert np.array_equal(decoded, small)
    decoded[0, 0] = 0  # a writable array, ready for torch


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_clients_frames_are_encoded_as_they_are_never_resized(fmt: str) -> None:
    small = resize_for_model(FRAME, (64, 48))
    strided = np.ascontiguousarray(small[:, ::-1])[:, ::-1]  # a view, not contiguous
    assert encode_frames([small, strided], (64, 48), fmt, 95) == [
        encode_image(small, fmt, 95),
        encode_image(small, fmt, 95),
    ]
    with pytest.raises(ValueError, match=r"frame 1 .* shape \(1080, 1920, 3\).*\(64, 48, 3\)"):
        encode_frames([small, FRAME], (64, 48), fmt)


def test_resized_jpeg_is_small_whatever_the_source() -> None:
    payload = encode_image(resize_for_model(FRAME, (224, 224)), "jpeg")
    assert len(payload) < 60_000 < FRAME.nbytes // 100


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"hello, world", 400, "not a decodable JPEG or PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "not a decodable"),
        # (regression: bodies of 1 to 3 bytes raised struct.error out of Pillow's BMP check,
        # a 500 from Flask and a failed batch from TorchServe)
        (b"x", 400, "not a decodable JPEG or PNG"),
        (b"GIF", 400, "not a decodable JPEG or PNG"),
        (b"\xff\xd8", 400, "not a decodable JPEG or PNG"),
    ],
)
def test_bad_images(data: bytes, status: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        decode_image(data, WireLimits())
    assert info.value.status == status
    assert "0x" not in str(info.value)


@pytest.mark.parametrize("shape", [(65000, 1), (1, 65000), (20000, 3)])
def test_a_strip_thousands_of_times_longer_than_wide_is_resized(shape: tuple) -> None:
    """Regression: libswscale refused to shrink a 1×65000 PNG to 224² in one pass
    ("Invalid argument"): a 500 from Flask, a failed batch from TorchServe. It is averaged
    down by whole blocks first."""
    strip = np.zeros((*shape, 3), np.uint8)
    strip[: shape[0] // 2, : max(1, shape[1] // 2)] = 255  # white first half
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="PNG")
    rgb = decode_image(buffer.getvalue(), WireLimits(), size=(224, 224))
    assert rgb.shape == (224, 224, 3)
    if shape[1] == 1:  # (a tall strip: white above, black below)
        assert rgb[:100].min() > 200 and rgb[124:].max() < 50


def test_pixel_and_frame_limits() -> None:
    png = encode_image(FRAME[:100, :100], "png")
    with pytest.raises(BadRequest, match="more than 2500") as info:
        decode_image(png, WireLimits(max_pixels=2500))
    assert info.value.status == 413
    with pytest.raises(BadRequest, match="more than the limit of 2") as info:
        build_request([png, png, png], {}, batched=True, limits=WireLimits(max_frames=2))
    assert info.value.status == 413
    with pytest.raises(BadRequest, match="no image"):
        build_request([], {}, batched=False, limits=WireLimits())


def test_sizes_are_refused_from_the_headers_before_any_pixel_is_decoded(monkeypatch) -> None:
    def no_decoding(*args: object) -> None:
        raise AssertionError("pixels decoded before the size limits were checked")

    monkeypatch.setattr(wire, "load_rgb", no_decoding)
    # The reported decompression bomb: 64 black 4096x4096 PNGs, 3 MB sent, 3.2 GB decoded.
    bomb = black_png(4096, 4096)
    with pytest.raises(BadRequest, match="frame 0 has 4096x4096 pixels, more than") as info:
        build_request([bomb] * 64, {}, batched=True, limits=WireLimits())
    assert info.value.status == 413
    # Frames each within max_pixels, too many pixels together: 64 frames a bit over 1080p.
    frame = black_png(1920, 1088)
    with pytest.raises(BadRequest, match=r"request has 133693440 pixels in its 64 frames, more than the limit of 132710400") as info:  # fmt: skip
        build_request([frame] * 64, {}, batched=True, limits=WireLimits(), size=(64, 64))
    assert info.value.status == 413


def test_defaults_pass_a_full_request_of_1080p_frames_and_any_4k_frame() -> None:
    limits = WireLimits()
    assert limits.max_frames * 1920 * 1080 <= limits.max_total_pixels
    assert 4096 * 2160 <= limits.max_pixels


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_frame_at_the_input_size_decodes_exactly_as_without_a_size(fmt: str) -> None:
    small = resize_for_model(FRAME, (64, 64))
    data = encode_image(small, fmt)
    assert np.array_equal(
        decode_image(data, WireLimits(), size=(64, 64)), decode_image(data, WireLimits())
    )
    request = build_request([data, data], {}, batched=True, limits=WireLimits(), size=(64, 64))
    assert all(np.array_equal(image, decode_image(data, WireLimits())) for image in request.images)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_a_large_frame_is_resized_to_the_input_size_as_it_is_decoded(fmt: str) -> None:
    smooth = resize_for_model(resize_for_model(FRAME, (54, 96)), (1080, 1920))
    data = encode_image(smooth, fmt)
    full = resize_for_model(decode_image(data, WireLimits()), (64, 64))
    got = decode_image(data, WireLimits(), size=(64, 64))
    assert got.shape == (64, 64, 3) and got.dtype == np.uint8
    if fmt == "png":
        assert np.array_equal(got, full)  # decoded whole, then the one resize
    else:  # decoded at 1/8 scale (240x135) by libjpeg, then the one resize
        assert np.abs(got.astype(int) - full.astype(int)).mean() < 2


def test_a_16_bit_grey_png_keeps_its_shades() -> None:
    """Regression: Pillow's conversion of a 16-bit grey PNG (mode I;16) clips every value
    above 255, so the model saw a white frame."""
    ramp = np.linspace(0, 65535, 256 * 16).round().astype(">u2").reshape(16, 256)
    buffer = io.BytesIO()
    Image.frombytes("I;16B", (256, 16), ramp.tobytes()).save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), WireLimits())
    assert decoded.shape == (16, 256, 3) and decoded.dtype == np.uint8
    expected = np.rint(ramp.astype(np.float64) / 257)
    assert np.abs(decoded[:, :, 0] - expected).max() <= 1
    assert (decoded[:, :, 0] == decoded[:, :, 2]).all() and decoded.mean() < 140


@pytest.mark.parametrize(("orientation", "top"), [(6, "left"), (8, "right"), (3, None)])
def test_a_jpeg_is_turned_upright_by_its_exif_orientation(
    orientation: int, top: str | None
) -> None:
    """A phone's photo is stored sideways with an EXIF orientation, which viewers apply: the
    model sees it as they show it. Stored: left half red, right half blue."""
    stored = np.zeros((48, 96, 3), np.uint8)
    stored[:, :48, 0] = 255
    stored[:, 48:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=95, exif=exif)
    shown = decode_image(buffer.getvalue(), WireLimits()).astype(int)
    if top is None:  # 3: a half turn, the blue half now on the left
        assert shown.shape == (48, 96, 3) and shown[24, 10, 2] > 200 and shown[24, 86, 0] > 200
        return
    assert shown.shape == (96, 48, 3)  # turned a quarter
    upper, lower = shown[10, 24], shown[86, 24]
    red, blue = (upper, lower) if top == "left" else (lower, upper)
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


def _png_with_exif(entries: int) -> bytes:
    """A 64×32 PNG whose ``eXIf`` chunk (before its pixels) holds IFD0 with ``entries``
    entries, the first an orientation of 6 (turn a quarter clockwise)."""
    tags = [struct.pack("<HHII", 0x0112, 3, 1, 6)]
    tags += [struct.pack("<HHII", 0x8000 + i % 30000, 3, 1, i) for i in range(1, entries)]
    exif = b"II*\x00" + struct.pack("<IH", 8, entries) + b"".join(tags) + struct.pack("<I", 0)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32), (200, 0, 0)).save(buffer, "PNG")
    png = buffer.getvalue()
    chunk = b"eXIf" + exif
    at = png.index(b"IDAT") - 4
    return (
        png[:at]
        + struct.pack(">I", len(exif))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + png[at:]
    )


def test_an_exif_block_longer_than_a_jpeg_segment_is_not_read() -> None:
    """Reading a picture's orientation must cost little whatever a client sends: Pillow's
    ``exif_transpose`` spent 0.7 s of CPU on one 0.8 MB EXIF block of 65,535 entries. A
    block no longer than a JPEG's APP1 segment (64 KiB) is read (its orientation only)."""
    assert decode_image(_png_with_exif(10), WireLimits()).shape == (64, 32, 3)  # turned
    hostile = _png_with_exif(65_535)
    assert len(hostile) > 700_000
    assert decode_image(hostile, WireLimits()).shape == (32, 64, 3)  # as stored


def test_bad_part_is_named_in_a_batch() -> None:
    png = encode_image(FRAME[:8, :8], "png")
    with pytest.raises(BadRequest, match="frame 1 is not a decodable"):
        build_request([png, b"junk"], {}, batched=True, limits=WireLimits())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_new_tokens": "ten"}, "whole number"),
        ({"max_new_tokens": "0"}, "^max_new_tokens must be between 1 and 128, got 0$"),
        ({"num_beams": "99"}, "^num_beams must be between 1 and 8, got 99$"),
    ],
)
def test_bad_settings_are_400(fields: dict, message: str) -> None:
    """(An HTTP client sent a field, not a flag: the answer quoted ``--max-new-tokens``.)"""
    with pytest.raises(BadRequest, match=message) as info:
        parse_settings(fields)
    assert info.value.status == 400


def test_settings_from_fields_and_headers() -> None:
    headers = {
        "x-vidcap-max-new-tokens": "12",
        "X-Vidcap-Prompt": "Question: hi? Answer:",
        "Other": "x",
    }
    assert settings_from_headers(headers) == {
        "max_new_tokens": "12",
        "prompt": "Question: hi? Answer:",
    }
    assert parse_settings(settings_from_headers(headers)) == GenerationSettings(
        prompt="Question: hi? Answer:", max_new_tokens=12
    )
    # Regression (an outside-in round): a UTF-8 prompt in a header reached a WSGI server as
    # Latin-1 (``un Ã©tÃ©``) and was captioned with; a header carries ASCII only, said so
    for value in ("un été".encode().decode("latin-1"), "un été"):
        with pytest.raises(BadRequest, match="^X-Vidcap-Prompt holds text beyond ASCII"):
            settings_from_headers({"x-vidcap-prompt": value})


def test_responses_round_trip() -> None:
    assert caption_response(["a"], batched=False) == {"caption": "a"}
    assert captions_from_response(caption_response(["a", "b"], batched=True), 2) == ["a", "b"]
    with pytest.raises(ValueError, match="expected 3"):
        captions_from_response([{"caption": "a"}], 3)
    with pytest.raises(ValueError):
        captions_from_response({"error": "boom"}, 1)
    # a caption that is no text was stored as "None" or "{'a': 1}"
    for caption in (None, 3, {"a": 1}, ["a"]):
        with pytest.raises(ValueError, match="expected 1 caption"):
            captions_from_response({"caption": caption}, 1)


def test_unknown_wire_format() -> None:
    with pytest.raises(UsageError, match="supported values are jpeg, png"):
        encode_image(FRAME[:8, :8], "webp")


def test_a_jpeg_of_thousands_of_scans_is_refused_before_decoding() -> None:
    """Regression: each scan of a progressive JPEG is a pass over every block, and one can
    be a few bytes, so a 16 MB frame of them held a server thread for minutes (5,000 scans
    of a 4K picture: 2.3 s of Pillow's decoding on the project's VM). Refused from its
    markers, before any pixel is decoded; what encoders write (1 to about 10 scans) passes."""
    from tests.support.images import scan_bomb

    limits = WireLimits()
    assert limits.max_jpeg_scans == 100
    assert Image.open(io.BytesIO(scan_bomb(5000))).size == (3840, 2160)  # a JPEG Pillow reads
    for scans in (101, 5000):
        with pytest.raises(BadRequest) as refused:
            wire.open_image(scan_bomb(scans), limits)
        assert refused.value.status == 400 and "more than 100 scans" in str(refused.value)
    assert wire.jpeg_scans(scan_bomb(5000), 100) == 101  # counting stops past the limit
    assert wire.jpeg_scans(scan_bomb(100), 1000) == 100
    assert decode_image(scan_bomb(100, (64, 48)), limits).shape == (48, 64, 3)
    for progressive in (False, True):
        buffer = io.BytesIO()
        Image.fromarray(FRAME).save(buffer, "JPEG", progressive=progressive)
        assert wire.jpeg_scans(buffer.getvalue(), 100) == (10 if progressive else 1)
        assert decode_image(buffer.getvalue(), limits).shape == FRAME.shape


def test_scan_markers_inside_other_segments_are_not_scans() -> None:
    """FF DA bytes in a comment (or an ICC profile) are no scan: the walk skips segments
    by their lengths."""
    buffer = io.BytesIO()
    Image.fromarray(FRAME[:48, :64]).save(buffer, "JPEG", comment=b"\xff\xda" * 500)
    data = buffer.getvalue()
    assert data.count(b"\xff\xda") > 500 and wire.jpeg_scans(data, 100) == 1
    assert decode_image(data, WireLimits()).shape == (48, 64, 3)


def test_frame_parts_are_put_in_order_and_one_number_twice_is_refused() -> None:
    """Parts named ``frame<N>`` are answered in N's order whatever order they came in;
    regression: ``frame01`` beside ``frame1`` (two names, one number) was answered in an
    order that did not say which caption was whose. Both servers answer it 400."""
    from vidcap.errors import BadRequest
    from vidcap.wire import ordered_frames

    assert ordered_frames([("frame10", b"k"), ("frame2", b"c"), ("frame0", b"a")]) == [
        b"a", b"c", b"k"
    ]  # fmt: skip
    assert ordered_frames([("b", b"1"), ("a", b"2")]) == [b"1", b"2"]  # other names: as sent
    with pytest.raises(BadRequest, match=r"'frame1' and 'frame01' are both frame 1") as info:
        ordered_frames([("frame1", b"x"), ("frame0", b"y"), ("frame01", b"z")])
    assert info.value.status == 400


def test_a_model_name_travels_in_a_header_whatever_its_characters() -> None:
    from vidcap.serve.protocol import model_from_value, model_value

    for name in ("Salesforce/blip2-opt-2.7b", "tiny", "/models/blip2 fine-tuned ü/v2", "a\r\nb"):
        value = model_value(name)
        assert value.isascii() and "\r" not in value and "\n" not in value and " " not in value
        assert model_from_value(value) == name


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_png_of_a_million_chunks_is_refused_before_pillow_reads_them() -> None:
    """Regression: Pillow reads each PNG chunk in Python, so a 16 MB frame of 15-byte text
    chunks held a server's decoder thread for 4.3 s (64 MB of them in one request: 17 s).
    Refused from a walk of the chunk lengths, stopping past the limit; a PNG as encoders
    write it, and one with its pixels in thousands of chunks, pass."""
    small = FRAME[:48, :64]
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, "PNG")
    data = buffer.getvalue()
    head, rest = data[:33], data[33:]  # signature + IHDR, then IDAT... IEND
    limits = WireLimits()
    assert limits.max_png_chunks == 65_536
    text = _png_chunk(b"tEXt", b"k\0v")
    for extra in (limits.max_png_chunks, 1_000_000):
        bomb = head + text * extra + rest
        with pytest.raises(BadRequest) as refused:
            wire.open_image(bomb, limits)
        assert refused.value.status == 400 and "PNG of more than 65536 chunks" in str(refused.value)
    assert wire.png_chunks(head + text * 1_000_000 + rest, 100) == 101  # stops past the limit
    assert wire.png_chunks(data, 100) == 3  # IHDR, IDAT, IEND
    fine = head + text * 1000 + rest
    assert np.array_equal(decode_image(fine, limits), small)
    pixels = zlib.decompress(b"".join(_idat_bodies(data)))
    packed = zlib.compress(pixels)
    split = (
        head
        + b"".join(_png_chunk(b"IDAT", packed[i : i + 16]) for i in range(0, len(packed), 16))
        + _png_chunk(b"IEND", b"")
    )
    assert wire.png_chunks(split, limits.max_png_chunks) > 500
    assert np.array_equal(decode_image(split, limits), small)


def test_a_request_of_pngs_within_the_chunk_limit_each_is_held_to_it_in_all() -> None:
    """Regression: the chunk limit was a frame's, so a 47 MB request of 64 frames of 65,000
    chunks each held a decoder for 15 s. The request's PNG frames share the limit."""
    buffer = io.BytesIO()
    Image.fromarray(FRAME[:48, :64]).save(buffer, "PNG")
    data = buffer.getvalue()
    head, rest = data[:33], data[33:]
    limits = WireLimits()
    half = head + _png_chunk(b"tEXt", b"k\0v") * (limits.max_png_chunks // 2) + rest
    wire.build_request([half], {}, True, limits)  # one frame within the limit: read
    with pytest.raises(BadRequest) as refused:
        wire.build_request([data, half, half], {}, True, limits)
    assert refused.value.status == 400
    assert str(refused.value).startswith(
        "request has PNG frames of more than 65536 chunks in all (frame 2 goes past it"
    )
    assert len(wire.build_request([data] * 64, {}, True, limits).images) == 64
    alone = head + _png_chunk(b"tEXt", b"k\0v") * limits.max_png_chunks + rest
    with pytest.raises(BadRequest, match="^frame 0 is a PNG of more than 65536 chunks"):
        wire.build_request([alone, half], {}, True, limits)  # past the limit alone: said so


def _idat_bodies(data: bytes) -> list[bytes]:
    bodies, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        if data[position + 4 : position + 8] == b"IDAT":
            bodies.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return bodies


@pytest.mark.parametrize(
    "padding",
    [b"\xff\xfe\x00\x02", b"\xff\xe1\x00\x08Exif\x00\x00", b"\xff", b"\xff\xfe\x00\x02\x00"],
    ids=["empty-comments", "exif-blocks", "fill-bytes", "junk-between-comments"],
)
def test_a_jpeg_of_a_million_markers_is_refused_before_pillow_reads_them(padding: bytes) -> None:
    """Regression: Pillow reads a JPEG's markers before its first scan in Python, one by
    one, so 16 MB of empty comments held a decoder thread for 10 s, of fill bytes 14 s.
    Refused from a walk of the segment lengths (a byte that is no marker, which Pillow skips,
    does not end the walk); what cameras write (a big ICC profile in 64 KB pieces, EXIF,
    progressive) passes."""
    small = FRAME[:48, :64]
    buffer = io.BytesIO()
    Image.fromarray(small).save(buffer, "JPEG")
    data = buffer.getvalue()
    limits = WireLimits()
    assert limits.max_jpeg_markers == 1024
    for count in (1025, 3_000_000 // len(padding)):
        with pytest.raises(BadRequest) as refused:
            wire.open_image(data[:2] + padding * count + data[2:], limits)
        assert refused.value.status == 400
        assert "JPEG of more than 1024 markers" in str(refused.value)
    padded = data[:2] + padding * 500 + data[2:]
    assert np.array_equal(decode_image(padded, limits), decode_image(data, limits))
    for progressive in (False, True):
        buffer = io.BytesIO()
        Image.fromarray(small).save(
            buffer, "JPEG", progressive=progressive, icc_profile=bytes(1_000_000)
        )
        assert 16 < wire.jpeg_header_markers(buffer.getvalue(), 1024) < 40
        assert decode_image(buffer.getvalue(), limits).shape == small.shape
