"""The shared wire protocol, transport-neutral: encode/decode, limits, settings."""

from __future__ import annotations

import numpy as np
import pytest

from vidcap.errors import BadRequest, UsageError
from vidcap.frames import resize_for_model
from vidcap.settings import GenerationSettings
from vidcap.wire import (
    WireLimits,
    build_request,
    caption_response,
    captions_from_response,
    decode_image,
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


def test_resized_jpeg_is_small_whatever_the_source() -> None:
    payload = encode_image(resize_for_model(FRAME, (224, 224)), "jpeg")
    assert len(payload) < 60_000 < FRAME.nbytes // 100


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"hello, world", 400, "not a decodable JPEG or PNG"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "not a decodable"),
    ],
)
def test_bad_images(data: bytes, status: int, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        decode_image(data, WireLimits())
    assert info.value.status == status
    assert "0x" not in str(info.value)


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


def test_bad_part_is_named_in_a_batch() -> None:
    png = encode_image(FRAME[:8, :8], "png")
    with pytest.raises(BadRequest, match="frame 1 is not a decodable"):
        build_request([png, b"junk"], {}, batched=True, limits=WireLimits())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_new_tokens": "ten"}, "whole number"),
        ({"max_new_tokens": "0"}, "between 1 and"),
        ({"num_beams": "99"}, "between 1 and"),
    ],
)
def test_bad_settings_are_400(fields: dict, message: str) -> None:
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


def test_responses_round_trip() -> None:
    assert caption_response(["a"], batched=False) == {"caption": "a"}
    assert captions_from_response(caption_response(["a", "b"], batched=True), 2) == ["a", "b"]
    with pytest.raises(ValueError, match="expected 3"):
        captions_from_response([{"caption": "a"}], 3)
    with pytest.raises(ValueError):
        captions_from_response({"error": "boom"}, 1)


def test_unknown_wire_format() -> None:
    with pytest.raises(UsageError, match="supported values are jpeg, png"):
        encode_image(FRAME[:8, :8], "webp")
