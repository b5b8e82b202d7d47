"""Issue #20: both servers under hostile and day-long load (loopback only, bounded).

Fast: the multipart rules (linear, bounded in parts and CPU, the parser-differential
cases refused), the settings parser (ASCII digits), images (a 100000² PNG is a 413, a
camera MPO is read), the port check (TIME_WAIT is not "taken"), the start scripts
finding the project's ``.venv``.

Slow (real servers): the gate as ``start.sh`` runs it (a subprocess, in front of a fake
TorchServe) and the Flask server (``flask/start.sh``, tiny model) against a hostile
multipart body (CPU, and other requests' p99 beside a clean baseline), trickling
clients (408 at the whole-request deadline; 70 of them do not block a good request),
oversize uploads (memory bound), gunicorn's own errors (JSON); and a real TorchServe
restarted right after traffic, keeping its key, renewing its expired backend key.
Every measurement is printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.support.servers import (
    REPO_ROOT,
    FlaskServer,
    free_port,
    make_frames,
    multipart,
    post,
    read_response,
)
from vidcap import wire
from vidcap.errors import BadRequest
from vidcap.serve import ports, protocol
from vidcap.serve.config import ServeConfig

# (latency under attack, CPU per request, trickle deadlines: measured against an idle machine)
pytestmark = pytest.mark.timed

PNG = "image/png"
HOSTILE_PART = b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n'
HOSTILE_TYPE = "multipart/form-data; boundary=B"


def hostile_body(size: int) -> bytes:
    """The issue's body: tiny parts, ``size`` bytes of them, then the closing boundary."""
    return HOSTILE_PART * (size // len(HOSTILE_PART)) + b"--B--"


def cpu_seconds(call: Callable[[], object]) -> float:
    started = time.process_time()
    try:
        call()
    except BadRequest:
        pass
    return time.process_time() - started


# --- fast: the multipart rules ------------------------------------------------------------


def test_40000_tiny_parts_cost_milliseconds_and_are_a_413_naming_the_limit() -> None:
    body = hostile_body(2 * 2**20)
    assert body.count(b"--B\r\n") > 40_000
    with pytest.raises(BadRequest) as refused:
        protocol.parse_multipart(body, HOSTILE_TYPE, max_parts=67)
    assert refused.value.status == 413
    assert str(refused.value) == (
        "request has more than 67 multipart parts, the limit (VIDCAP_MAX_PARTS)"
    )
    spent = cpu_seconds(lambda: protocol.check_multipart(body, HOSTILE_TYPE, 67))
    print(f"\n2 MB of 40,000 parts: {spent * 1000:.2f} ms CPU (was 3.5 s)")
    assert spent < 0.05


@pytest.mark.parametrize(
    "shape", ["tiny parts", "one part", "near-miss boundaries", "long boundary"]
)
def test_a_64_mb_hostile_body_costs_under_a_second_of_cpu(shape: str) -> None:
    size = 64 * 2**20
    content_type = HOSTILE_TYPE
    if shape == "tiny parts":
        body = hostile_body(size)
    elif shape == "one part":
        head = b'--B\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n'
        body = head + b"\0" * size + b"\r\n--B--"
    elif shape == "near-miss boundaries":  # CRLF-dash runs that are never the boundary
        head = b'--B\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n'
        body = head + b"\r\n--C\r\n-" * (size // 8) + b"\r\n--B--"
    else:  # a 70-character boundary over a body of its own first 69 characters
        boundary = "a" * 69 + "b"
        content_type = f"multipart/form-data; boundary={boundary}"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="f"\r\n\r\n'
        body = head.encode() + b"a" * size + f"\r\n--{boundary}--".encode()
    spent = cpu_seconds(lambda: protocol.check_multipart(body, content_type, 67))
    counter = protocol.PartCounter(protocol.multipart_boundary(content_type), 67)
    spent += cpu_seconds(
        lambda: [counter.feed(body[i : i + 2**16]) for i in range(0, len(body), 2**16)]
    )
    print(f"\n64 MB, {shape}: {spent:.3f} s CPU (counted as it arrives, then parsed)")
    assert spent < 1.0


def test_parts_are_counted_while_the_body_arrives() -> None:
    body = hostile_body(2 * 2**20)
    counter = protocol.PartCounter(b"B", 67)
    fed = 0
    with pytest.raises(BadRequest, match="more than 67 multipart parts"):
        for start in range(0, len(body), 1000):
            counter.feed(body[start : start + 1000])
            fed += 1000
    assert fed <= 4000  # refused after a few KB, not 2 MB
    # A delimiter split across two chunks is counted once.
    counter = protocol.PartCounter(b"xyz", 1)
    for piece in (b"--x", b"yz\r\n...\r", b"\n--xy", b"z--\r\n"):
        counter.feed(piece)
    assert counter.delimiters == 2


def _part(disposition: str, data: bytes = b"\x89PNG", extra: str = "") -> bytes:
    return f"--B\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + data + b"\r\n"


GOOD_BODIES = {
    "aiohttp": (
        b"--B\r\nContent-Type: image/png\r\nContent-Disposition: form-data; "
        b'name="frame0"; filename="frame0.png"\r\n\r\n\x89PNG\r\n--B\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Disposition: form-data; "
        b'name="max_new_tokens"\r\n\r\n20\r\n--B--\r\n',
        ["frame0", "max_new_tokens"],
    ),
    "curl, unquoted, no final CRLF": (
        _part('form-data; name=frame0; filename="a b;c.png"', extra="Content-Type: image/png\r\n")
        + b"--B--",
        ["frame0"],
    ),
    "werkzeug's leading empty line": (b"\r\n" + _part('form-data; name="x"') + b"--B--\r\n", ["x"]),
    "binary transfer encoding, empty data": (
        _part('form-data; name="p"', b"", "Content-Transfer-Encoding: binary\r\n") + b"--B--",
        ["p"],
    ),
    "no parts": (b"--B--\r\n", []),
}


@pytest.mark.parametrize("case", list(GOOD_BODIES))
def test_what_real_clients_send_is_accepted(case: str) -> None:
    body, names = GOOD_BODIES[case]
    parts = protocol.parse_multipart(body, HOSTILE_TYPE, 67)
    assert [part.name for part in parts] == names
    assert all(bytes(part.data) in (b"\x89PNG", b"20", b"") for part in parts)


BAD_BODIES = {
    "a second Content-Disposition": (
        _part(
            'form-data; name="frame0"', extra='Content-Disposition: form-data; name="frame1"\r\n'
        ),
        "part 0 has more than one Content-Disposition header",
    ),
    "name*=": (_part("form-data; name*=UTF-8''frame0"), "has name*=: encoded (RFC 5987)"),
    "filename*=": (
        _part("form-data; name=\"a\"; filename*=UTF-8''a.png"),
        "has filename*=: encoded (RFC 5987)",
    ),
    "a bare-LF delimiter": (
        _part(
            'form-data; name="frame0"',
            b'x\n--B\r\nContent-Disposition: form-data; name="frame1"\r\n\r\ny',
        ),
        "a boundary inside part 0 is not on a line of its own",
    ),  # fmt: skip
    "a bare-CR delimiter": (
        _part('form-data; name="frame0"', b"x\r--B\r\n"),
        "a boundary inside part 0 is not on a line of its own",
    ),
    "a delimiter with padding": (
        _part('form-data; name="a"') + b"--B  \r\n",
        "the boundary line before part 1 does not end in CRLF",
    ),
    "a longer boundary that starts with ours": (
        _part('form-data; name="a"', b"x\r\n--Bx"),
        "the boundary line before part 1 does not end in CRLF",
    ),
    "a preamble": (b"hello\r\n" + _part('form-data; name="a"'), "does not start with --BOUNDARY"),
    "an epilogue": (_part('form-data; name="a"') + b"--B--\r\nmore", "data after the closing"),
    "a bare LF in the headers": (
        b'--B\r\nContent-Disposition: form-data; name="a"\nX: y\r\n\r\nx\r\n--B--',
        "bare CR or LF",
    ),
    "a folded header": (
        b'--B\r\nContent-Disposition: form-data;\r\n name="a"\r\n\r\nx\r\n--B--',
        "folded header",
    ),
    "another header": (_part('form-data; name="a"', extra="X-Name: b\r\n"), "has a X-Name header"),
    "base64": (
        _part('form-data; name="a"', extra="Content-Transfer-Encoding: base64\r\n"),
        "Content-Transfer-Encoding other than binary",
    ),
    "no Content-Disposition": (b"--B\r\nContent-Type: image/png\r\n\r\nx\r\n--B--", "no Content-"),
    "not form-data": (_part('attachment; name="a"'), "is not form-data"),
    "NAME=": (_part('form-data; NAME="a"'), "parameter 'NAME'; only name and filename"),
    "name twice": (_part('form-data; name="a"; name="b"'), "has name twice"),
    "a backslash in a name": (_part('form-data; name="a\\"b"'), 'not name="value" pairs'),
    "a space in a name": (_part('form-data; name="frame 0"'), "name may hold letters, digits"),
    "no name": (_part('form-data; filename="a"'), "multipart part 0 has no name"),
    "headers without an end": (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n' + b"x" * 9000,
        "no header end within",
    ),  # fmt: skip
    "no closing boundary": (_part('form-data; name="a"'), "no closing boundary"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_every_body_another_parser_could_read_otherwise_is_refused(case: str) -> None:
    body, message = BAD_BODIES[case]
    if message != "no closing boundary" and not body.rstrip().endswith(b"--"):
        body += b"--B--\r\n"
    with pytest.raises(BadRequest) as refused:
        protocol.check_multipart(body, HOSTILE_TYPE, 67)
    assert refused.value.status == 400
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data", "no boundary in Content-Type"),
        ("multipart/form-data; boundary=a; boundary=b", "Content-Type has boundary twice"),
        ("multipart/form-data; boundary=a,b", "the boundary must be 1 to 200"),
        ("multipart/form-data; boundary=" + "a" * 201, "the boundary must be 1 to 200"),
        ("multipart/form-data; boundary=a; foo=b", "Content-Type parameter foo is not accepted"),
        ('multipart/form-data; boundary="a\\"b"', "not name=value pairs"),
    ],
)
def test_the_content_type_is_read_one_way(content_type: str, message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        protocol.multipart_boundary(content_type)


def test_a_boundary_as_long_as_werkzeugs_is_read() -> None:
    """Regression: Werkzeug's test client names its boundary ``---------------WerkzeugFormPart_``
    + time + random(), up to about 75 characters; past RFC 2046's 70 it was refused as
    malformed, so one request in 200 from it was a 400 (a flaky test)."""
    boundary = "---------------WerkzeugFormPart_1796403000.1234567" + "0.1234567890123456789"
    assert len(boundary) > 70
    content_type = f"multipart/form-data; boundary={boundary}"
    assert protocol.multipart_boundary(content_type) == boundary.encode()
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="frame0"; filename="0.png"\r\n\r\n'
        f"\x89PNG\r\n--{boundary}--\r\n"
    ).encode("latin-1")
    assert [part.name for part in protocol.parse_multipart(body, content_type, 4)] == ["frame0"]


def test_only_images_and_multipart_bodies_are_accepted() -> None:
    for accepted in (None, "", "image/png", "IMAGE/JPEG", "application/octet-stream", HOSTILE_TYPE):
        protocol.check_content_type(accepted)
    for refused in ("application/x-www-form-urlencoded", "application/json", "text/plain"):
        with pytest.raises(BadRequest) as error:
            protocol.check_content_type(refused)
        assert error.value.status == 415


def test_only_bodies_sent_as_they_are_are_accepted() -> None:
    for accepted in (None, "", "identity", "Identity, identity", " identity "):
        protocol.check_content_encoding(accepted)
    for refused in ("gzip", "x-gzip", "deflate", "br", "zstd", "identity, gzip", "chunked"):
        with pytest.raises(BadRequest) as error:
            protocol.check_content_encoding(refused)
        assert error.value.status == 415 and "is not accepted" in str(error.value)


def test_the_part_limit_is_a_setting() -> None:
    assert ServeConfig().max_body_parts == 64 + 3
    assert ServeConfig(max_frames=8).max_body_parts == 11
    config = ServeConfig.from_sources({}, {"VIDCAP_MAX_PARTS": "500"})
    assert config.max_body_parts == 500
    assert ServeConfig().max_bodies_bytes == 4 * 64 * 2**20


def test_the_body_budget_refuses_past_its_limit_and_gives_back() -> None:
    budget = protocol.BodyBudget(100)
    budget.take(60)
    with pytest.raises(BadRequest) as busy:
        budget.take(41)
    assert busy.value.status == 503 and "VIDCAP_MAX_BODIES_MB" in str(busy.value)
    budget.give(60)
    budget.take(100)
    assert budget.peak == 100


# --- fast: settings and images --------------------------------------------------------------


@pytest.mark.parametrize("raw", ["٣٠", "3_0", " 30", "30 ", "+30", "0x1e", "３０", "1" * 20])
def test_a_whole_number_setting_is_ascii_digits_only(raw: str) -> None:
    with pytest.raises(BadRequest, match="max_new_tokens must be a whole number"):
        wire.parse_settings({"max_new_tokens": raw})


def test_ascii_digits_still_parse() -> None:
    assert wire.parse_settings({"max_new_tokens": "30", "num_beams": "2"}).max_new_tokens == 30


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (no pixel data needed to refuse it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_100000_squared_png_is_a_413() -> None:
    with pytest.raises(BadRequest) as refused:
        wire.open_image(png_header(100_000, 100_000), wire.WireLimits())
    assert refused.value.status == 413
    assert str(refused.value).startswith("image has more pixels than the limit of 8847360")


def test_a_camera_mpo_jpeg_is_read_as_its_first_picture() -> None:
    first = Image.new("RGB", (64, 48), (250, 0, 0))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (64, 48))])
    rgb = wire.decode_image(buffer.getvalue(), wire.WireLimits())
    assert rgb.shape == (48, 64, 3) and rgb[..., 0].mean() > 240


@pytest.mark.parametrize("kind", ["ICNS", "GIF"])
def test_a_body_only_another_image_reader_would_walk_costs_no_cpu(kind: str) -> None:
    """16 MB that Pillow's ICNS or GIF reader walks in Python when merely opening it (1.5-2 s
    of the worker's CPU per frame, before its format was checked) is refused by its first
    bytes: only the JPEG and PNG readers see a client's frame."""
    from tests.support.images import walked_by_other_readers

    body = walked_by_other_readers()[kind]
    assert len(body) == wire.WireLimits().max_bytes_per_frame
    with pytest.raises(BadRequest) as refused:
        wire.open_image(body, wire.WireLimits())
    assert refused.value.status == 415
    assert str(refused.value) == f"image is {kind}, expected JPEG or PNG"
    spent = cpu_seconds(lambda: wire.open_image(body, wire.WireLimits()))
    print(f"\n16 MB walked by Pillow's {kind} reader: {spent * 1000:.2f} ms CPU (was 1.5-2 s)")
    assert spent < 0.2


def test_a_jpeg_full_of_photoshop_resources_costs_no_cpu() -> None:
    """Regression: Pillow parses a JPEG's Photoshop resources (APP13) one at a time in
    Python when it opens the file: 16 MB of empty ones held the worker 1.25 s per frame
    before any check. They are passed over unread; the picture is read as before."""
    from tests.support.images import with_photoshop_resources

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 0, 0)).save(buffer, "JPEG", quality=95)
    frame = with_photoshop_resources(buffer.getvalue())
    assert len(frame) > 15 * 2**20 and frame.count(b"8BIM") > 1_000_000
    spent = cpu_seconds(lambda: wire.open_image(frame, wire.WireLimits()).close())
    print(f"\n16 MB of Photoshop resources: {spent * 1000:.1f} ms CPU to open (was 1.25 s)")
    assert spent < 0.2
    rgb = wire.decode_image(frame, wire.WireLimits())
    assert rgb.shape == (48, 64, 3) and rgb[..., 0].mean() > 240 and rgb[..., 1].mean() < 15


@pytest.mark.parametrize(
    ("kind", "marker", "payload", "said"),
    [
        # a frame header (SOF) 65 KB long: Pillow appends a component per 3 bytes of it
        ("frame headers", 0xC0, b"\x08\x00\x40\x00\x40\x03" + b"\x01\x11\x00" * 21_842,
         "whose frame header (SOF) is 65534 bytes for 3 components"),
        # 1,008 quantization tables a segment: Pillow reads each into a list
        ("quantization tables", 0xDB, (b"\x00" + bytes(range(1, 65))) * 1008,
         "with more than 4096 bytes of quantization tables before its picture"),
    ],
)  # fmt: skip
def test_a_jpeg_header_pillow_would_read_item_by_item_is_refused_first(
    kind: str, marker: int, payload: bytes, said: str
) -> None:
    """Regression: 16 MB of JPEG frame headers held the worker 1.9 s and 476 MB per frame
    when Pillow opened it (a 47 MB request of three on the Flask server: 7.1 s, 1.5 GB), and of
    quantization tables 1.1 s. Refused from the walk of the header's markers; every JPEG as
    encoders write it still passes (Pillow's and OpenCV's, baseline and progressive, grey,
    CMYK, 16-bit tables, an MPO, a 200 KB ICC profile)."""
    from tests.support.images import with_segments

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "JPEG")
    frame = with_segments(buffer.getvalue(), marker, payload)
    assert len(frame) > 15 * 2**20
    with pytest.raises(BadRequest) as refused:
        wire.open_image(frame, wire.WireLimits())
    assert refused.value.status == 400 and str(refused.value).startswith(f"image is a JPEG {said}")
    spent = cpu_seconds(lambda: wire.open_image(frame, wire.WireLimits()))
    print(f"\n16 MB of {kind}: {spent * 1000:.1f} ms CPU to refuse")
    assert spent < 0.2
    picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    written = []
    for options in ({}, {"progressive": True}, {"quality": 100, "subsampling": 0},
                    {"qtables": [[1] * 64, [300] * 64]}, {"icc_profile": b"x" * 200_000}):  # fmt: skip
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, "JPEG", **options)
        written.append(buffer.getvalue())
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        Image.fromarray(picture).convert(mode).save(buffer, "JPEG")
        written.append(buffer.getvalue())
    buffer = io.BytesIO()
    Image.fromarray(picture).save(
        buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))]
    )
    written.append(buffer.getvalue())
    written.append(cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    for data in written:
        assert wire.jpeg_header_fault(data) is None
        assert wire.decode_image(data, wire.WireLimits()).shape == (48, 64, 3)


def test_a_png_of_many_colour_profiles_is_refused_before_any_is_inflated() -> None:
    """Regression: Pillow inflates every colour profile (iCCP chunk) of a PNG, up to 1 MB
    each, when it opens it or reads past its pixels: 1 MB of PNG holding 1,000 of them held
    the worker 2.5 s (a 64 MB request, within the chunk limit: minutes). The PNG standard
    allows one; a PNG with one is read as before."""
    import zlib

    from PIL import ImageCms

    from tests.support.images import black_png, png_chunk

    profile = png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(bytes(2**20 - 16), 9))
    png = black_png(64, 64)
    for where in (33, len(png) - 12):  # before the pixels, and after them (read at load)
        bomb = png[:where] + profile * 1000 + png[where:]
        with pytest.raises(BadRequest) as refused:
            wire.decode_image(bomb, wire.WireLimits())
        assert str(refused.value).startswith("image is a PNG with more than one colour profile")
        spent = cpu_seconds(lambda: wire.decode_image(bomb, wire.WireLimits()))  # noqa: B023
        print(f"\n1,000 colour profiles at byte {where}: {spent * 1000:.1f} ms CPU (was 2.5 s)")
        assert spent < 0.2
    buffer = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (32, 24), (0, 200, 0)).save(buffer, "PNG", icc_profile=srgb)
    assert buffer.getvalue().count(b"iCCP") == 1
    assert wire.decode_image(buffer.getvalue(), wire.WireLimits())[0, 0].tolist() == [0, 200, 0]


def test_a_png_whose_text_inflates_is_a_413_holding_no_more_than_its_budget() -> None:
    """Regression: a 67 KB PNG of 63 compressed text chunks (a megabyte of text each) held
    63 MB and 0.2 s of CPU when merely opened, and a request holds all its frames open
    until every header is checked: 64 such frames, 4 GB from a 4 MB request. A frame's text
    is held to 1 MiB; ordinary metadata (a 200 KB XMP packet) is still read."""
    import tracemalloc

    from tests.support.images import black_png, with_text

    bomb = with_text(black_png(64, 64), chunks=63, each=2**20)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest) as refused:
            wire.build_request([bomb] * 16, {}, True, wire.WireLimits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n16 frames of 63 MB of compressed text: peak {peak / 2**20:.1f} MB (was 1 GB)")
    assert refused.value.status == 413
    assert str(refused.value).startswith("frame 0 is a PNG with more than 1 MiB of text")
    assert peak < 8 * 2**20
    for kind in (b"zTXt", b"tEXt"):
        ordinary = with_text(black_png(64, 48), chunks=1, each=200_000, kind=kind)
        assert wire.decode_image(ordinary, wire.WireLimits()).shape == (48, 64, 3)


# --- fast: ports and scripts -------------------------------------------------------------------


def test_a_port_in_time_wait_is_free_and_a_listening_one_is_not() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server side closes first: its end waits in TIME_WAIT
    time.sleep(0.1)
    client.close()
    assert ports.taken_reason("127.0.0.1", port) == "Address already in use"  # still listening
    listener.close()
    time.sleep(0.1)
    if shutil.which("ss"):  # iproute2, where installed: the port really is in TIME_WAIT
        lines = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True)
        assert "TIME-WAIT" in lines.stdout, lines.stdout
    assert ports.taken_reason("127.0.0.1", port) is None
    with socket.socket() as plain:  # what start.sh used to check: bind without SO_REUSEADDR
        with pytest.raises(OSError, match="Address already in use"):
            plain.bind(("127.0.0.1", port))


def project_copy(root: Path) -> Path:
    """The scripts in a checkout of their own whose ``.venv`` is this interpreter's
    environment, as ``make install`` leaves it."""
    for folder in ("flask", "torchserve"):
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("logs"))
    (root / "vidcap").symlink_to(REPO_ROOT / "vidcap")
    (root / ".venv").symlink_to(Path(sys.prefix))
    return root


def bare_shell_env(**extra: str) -> dict[str, str]:
    """A new shell: no virtual environment active, nothing of it on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": "/usr/bin:/bin", **extra}


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests run outside a virtualenv")
def test_the_scripts_find_the_project_venv_in_a_new_shell(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    flask = subprocess.run(
        ["bash", str(root / "flask" / "start.sh")],
        env=bare_shell_env(VIDCAP_MODEL="tiny", VIDCAP_READ_TIMEOUT="soon"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Past "gunicorn not found": the settings check ran with the .venv's Python.
    assert flask.stderr.strip() == "start.sh: VIDCAP_READ_TIMEOUT must be a number, got 'soon'"
    torchserve = subprocess.run(
        ["bash", str(root / "torchserve" / "start.sh")],
        env=bare_shell_env(MODEL_STORE=str(tmp_path / "store"), TS_RUN_DIR=str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "torchserve not found" not in torchserve.stderr
    assert f"no archive at {tmp_path / 'store'}/vidcap" in torchserve.stderr
    stopped = subprocess.run(
        ["bash", str(root / "flask" / "stop.sh")],
        env=bare_shell_env(PORT="5999"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert stopped.returncode == 0 and "no Flask server is running" in stopped.stdout


# --- slow: helpers for real servers -------------------------------------------------------------


@dataclass
class FakeTorchServe:
    """A TorchServe stand-in behind the gate: answers every POST after ``delay`` seconds
    (a model's time), checks the key it is sent, counts what reaches it."""

    delay: float = 0.02
    key: str | None = None
    requests: int = 0
    refused: int = 0
    bodies: list[int] = field(default_factory=list)
    port: int = 0
    key_file: Path | None = None  # where /token writes a new key, as TorchServe 0.12 does
    renewals: int = 0

    def __enter__(self) -> FakeTorchServe:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main(started))

    async def _main(self, started: threading.Event) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if request.path == "/token" and request.query.get("type") == "inference":
                assert request.headers.get("Authorization") == "Bearer api-key"
                self.renewals += 1
                self.key = f"renewed-{self.renewals}"
                assert self.key_file is not None
                self.key_file.write_text(
                    json.dumps({"inference": {"key": self.key}, "API": {"key": "api-key"}})
                )
                return web.json_response({"message": "ok"})
            if self.key and request.headers.get("Authorization") != f"Bearer {self.key}":
                self.refused += 1
                return web.json_response(
                    {"code": 400, "message": "Token Authorization failed. Token either ..."},
                    status=400,
                )
            self.requests += 1
            self.bodies.append(len(body))
            await asyncio.sleep(self.delay)
            return web.json_response({"caption": "ok"})

        app = web.Application(client_max_size=2**30)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        started.set()
        await self._stop.wait()
        await runner.cleanup()


@dataclass
class GateProcess:
    """``python -m vidcap.serve.gate`` as start.sh runs it, with a key file."""

    upstream: FakeTorchServe
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    token: str = "client-key-0123456789abcdef"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def __enter__(self) -> GateProcess:
        keys = self.root / "key_file.json"
        keys.write_text(json.dumps({"inference": {"key": self.token}}))
        backend = self.upstream.key_file = self.root / "backend.json"
        backend.write_text(
            json.dumps({"inference": {"key": self.upstream.key or "b"}, "API": {"key": "api-key"}})
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "VIDCAP_LOG_LEVEL": "WARNING"}
        self.log = (self.root / "gate.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "vidcap.serve.gate", "--port", str(self.port),
                "--upstream", f"http://127.0.0.1:{self.upstream.port}",
                "--key-file", str(keys), "--backend-key-file", str(backend),
                "--management", f"http://127.0.0.1:{self.upstream.port}",
                # (start.sh's for the shipped config.properties: 1 worker, batch 8, queue 128)
                "--max-client-requests", "72", "--max-forwarded", "16",
            ],
            env={**env, **self.env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.process.poll() is None, (self.root / "gate.log").read_text()
                time.sleep(0.05)
        raise AssertionError("the gate did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)
        self.log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predictions/vidcap"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def raw_request(
    port: int, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> bytes:
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send_and_read(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict] | str:
    """Send a request whole (the server may answer and close early), then read the answer;
    the error text when there is none."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            try:
                sock.sendall(request)
            except OSError:
                pass  # refused before the body was read: the answer is already there
            return read_response(sock)
    except (OSError, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc}"


def latencies(send: Callable[[], object], count: int) -> list[float]:
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        send()
        spent.append(time.perf_counter() - started)
    return spent


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


ATTACKER = """
import socket, sys, threading, time
request = open(sys.argv[1], "rb").read()
port, clients, rate = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
def attack():
    while True:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                try:
                    sock.sendall(request)
                except OSError:
                    pass
                while sock.recv(65536):
                    pass
        except OSError:
            pass
        time.sleep(max(0.0, started + len(request) / rate - time.monotonic()))
threads = [threading.Thread(target=attack, daemon=True) for _ in range(clients)]
for thread in threads:
    thread.start()
print("attacking", flush=True)
threads[0].join()
"""
# Each attacker sends its request at most as fast as a 1 Gbit/s link carries it: on
# loopback an unpaced loop is a flood of new connections, which costs a server what any
# flood of refused requests costs (about 1 ms of Python each) whatever they hold.
LINK_BYTES_PER_S = 125e6


@contextmanager
def under_attack(port: int, request: bytes, clients: int, folder: Path) -> Iterator[None]:
    """``clients`` connections sending ``request`` over and over, from another process at
    the lowest CPU priority: on a real deployment the attacker's own CPU is on another
    machine, and on a 2-core test machine its connect/send loop would otherwise take the
    CPU from the server and the measuring client whatever the server does."""
    (folder / "attack.bin").write_bytes(request)
    command = [sys.executable, "-c", ATTACKER, str(folder / "attack.bin"), str(port)]
    attacker = subprocess.Popen(
        ["nice", "-n", "19", *command, str(clients), str(LINK_BYTES_PER_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None and attacker.stdout.readline().strip() == "attacking"
        time.sleep(0.5)
        yield
    finally:
        attacker.kill()
        attacker.wait(10)


def trickle(port: int, head: bytes, step: float, stop: threading.Event) -> tuple[float, bytes]:
    """Send ``head``, then one byte every ``step`` seconds until the server answers or
    closes: (seconds from the first byte, the answer, whole)."""
    with socket.create_connection(("127.0.0.1", port), timeout=step) as sock:
        started = time.monotonic()
        sock.sendall(head)
        answer, took = b"", 0.0
        while not stop.is_set() or answer:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                chunk = None
            except OSError:
                break
            if chunk == b"":
                break
            if chunk:
                took = took or time.monotonic() - started
                answer += chunk
                continue  # read the whole answer, until the server closes
            try:
                sock.sendall(b"x")
            except OSError:
                pass
        took = took or time.monotonic() - started
        return took, answer or (b"(still open)" if stop.is_set() else b"(closed)")


class RssSampler:
    """The peak resident memory of a process while it runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def chunked_upload(
    port: int, path: str, size: int, headers: dict[str, str]
) -> tuple[int, dict] | str:
    """A chunked (no Content-Length) image upload of ``size`` bytes, in 1 MB chunks."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    head += "Transfer-Encoding: chunked\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    chunk = b"%x\r\n" % 2**20 + b"\0" * 2**20 + b"\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head.encode() + b"\r\n")
            try:
                for _ in range(size // 2**20):
                    sock.sendall(chunk)
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass
            return read_response(sock)
    except (OSError, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc}"


# --- slow: the gate ------------------------------------------------------------------------------


@pytest.fixture()
def gate(tmp_path: Path) -> Iterator[GateProcess]:
    with FakeTorchServe(key="backend-key") as upstream:
        env = {"VIDCAP_READ_TIMEOUT": "2", "VIDCAP_MAX_REQUEST_MB": "70"}
        with GateProcess(upstream, tmp_path, env=env) as process:
            yield process


def gate_good_request(gate: GateProcess) -> None:
    image = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    status, body, _ = post(gate.url, image, PNG, gate.auth)
    assert status == 200 and body == {"caption": "ok"}, body


@pytest.mark.slow
def test_gate_hostile_multipart_costs_no_cpu_and_no_latency(gate: GateProcess) -> None:
    import psutil

    cpu = psutil.Process(gate.pid)
    path = "/predictions/vidcap"
    small = hostile_body(2 * 2**20)
    for label, headers in (("no token", {}), ("with the token", gate.auth)):
        for size in (2 * 2**20, 64 * 2**20):
            body = hostile_body(size)
            before = sum(cpu.cpu_times()[:2])
            answer = send_and_read(
                gate.port, raw_request(gate.port, path, body, HOSTILE_TYPE, headers)
            )
            spent = sum(cpu.cpu_times()[:2]) - before
            print(
                f"\ngate, {size >> 20} MB of tiny parts, {label}: {answer!s:.90} in {spent:.3f} s CPU"
            )
            assert spent < 1.0
            assert isinstance(answer, tuple) and answer[0] == (400 if not headers else 413)
    assert gate.upstream.requests == 0

    hostile = raw_request(gate.port, path, small, HOSTILE_TYPE, gate.auth)
    baseline = latencies(lambda: gate_good_request(gate), 150)
    with under_attack(gate.port, hostile, 4, gate.root):
        before, started = sum(cpu.cpu_times()[:2]), time.monotonic()
        attacked = latencies(lambda: gate_good_request(gate), 150)
        share = (sum(cpu.cpu_times()[:2]) - before) / (time.monotonic() - started)
    report("gate", baseline, attacked)
    print(f"gate CPU under attack: {share:.0%} of one core")
    assert_not_frozen(baseline, attacked)


# What the attack did before the fix: other requests waited 8-42 s. The ratio to the clean
# p99 (aim: within 2x) is printed by ``report``; the assertion only catches a server that
# stalls, with room for a shared 2-core CI machine's noise (p99 of 100 requests moved from
# 1.9x to 2.6x between two runs of the same code), not a timing target.
STALL_SLACK_S = 2.0  # (a quarter of the shortest stall seen before the fix)


def assert_not_frozen(baseline: list[float], attacked: list[float]) -> None:
    assert p99(attacked) <= 2 * p99(baseline) + STALL_SLACK_S, (
        f"other requests stalled under attack: p99 {p99(attacked) * 1000:.0f} ms "
        f"against {p99(baseline) * 1000:.0f} ms clean"
    )


def report(server: str, baseline: list[float], attacked: list[float]) -> None:
    print(
        f"\n{server}: other requests p50/p99 {statistics.median(baseline) * 1000:.1f}/"
        f"{p99(baseline) * 1000:.1f} ms clean, {statistics.median(attacked) * 1000:.1f}/"
        f"{p99(attacked) * 1000:.1f} ms with 4 hostile multipart clients "
        f"(p99 {p99(attacked) / p99(baseline):.2f}x clean)"
    )


TRICKLE_BODY = (
    b"POST /predictions/vidcap HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000\r\n"
)
TRICKLE_HEADERS = b"POST /predictions/vidcap HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.slow
def test_gate_trickles_get_408_at_the_whole_request_deadline(gate: GateProcess) -> None:
    stop = threading.Event()
    auth = f"Authorization: Bearer {gate.token}\r\n".encode()
    body_took, body_answer = trickle(gate.port, TRICKLE_BODY + auth + b"\r\n", 0.5, stop)
    head_took, head_answer = trickle(gate.port, TRICKLE_HEADERS, 0.5, stop)
    print(
        f"\ngate trickles (1 byte/0.5 s, deadline 2 s): body {body_took:.1f} s, headers {head_took:.1f} s"
    )
    assert body_answer.startswith(b"HTTP/1.1 408") and b"not received within 2s" in body_answer
    assert head_answer.startswith(b"HTTP/1.1 408") and b"headers not received" in head_answer
    assert 1.5 < body_took < 4 and 1.5 < head_took < 4
    # 70 trickling connections: a good request is answered at once, and the gate closes them.
    with ThreadPoolExecutor(70) as pool:
        heads = [TRICKLE_HEADERS, TRICKLE_BODY + auth + b"\r\n"]
        slow = [pool.submit(trickle, gate.port, heads[i % 2], 1.0, stop) for i in range(70)]
        time.sleep(0.5)
        took = latencies(lambda: gate_good_request(gate), 1)[0]
        ended = [job.result(timeout=20) for job in slow]
    print(f"gate, 70 trickling connections: good request {took * 1000:.0f} ms; "
          f"trickles closed after {max(t for t, _ in ended):.1f} s at most")  # fmt: skip
    assert took < 1.5  # under the 2 s deadline a blocked gate would hold it for
    assert all(answer.startswith(b"HTTP/1.1 408") for _, answer in ended)
    assert max(t for t, _ in ended) < 5


@pytest.mark.slow
def test_gate_connection_cap_closes_the_slow_ones(tmp_path: Path) -> None:
    with FakeTorchServe(key="backend-key") as upstream:
        env = {"VIDCAP_READ_TIMEOUT": "30", "VIDCAP_MAX_CONNECTIONS": "20"}
        with GateProcess(upstream, tmp_path, env=env) as gate:
            stop = threading.Event()
            with ThreadPoolExecutor(30) as pool:
                slow = [
                    pool.submit(trickle, gate.port, TRICKLE_HEADERS, 1.0, stop) for _ in range(30)
                ]
                time.sleep(1.0)
                took = latencies(lambda: gate_good_request(gate), 1)[0]
                stop.set()
                ended = [job.result(30) for job in slow]
                closed = sum(answer.startswith(b"HTTP/1.1 503") for _, answer in ended)
                print([answer[:12] for _, answer in ended])
    print(f"\ngate, 30 trickles over a cap of 20: good request {took * 1000:.0f} ms, {closed} closed with 503")  # fmt: skip
    assert took < 3.0 and closed >= 10  # (a held request: the 30 s read timeout)


@pytest.mark.slow
def test_gate_memory_stays_bounded_under_16_oversize_uploads(tmp_path: Path) -> None:
    with FakeTorchServe(key="backend-key") as upstream:
        env = {"VIDCAP_MAX_REQUEST_MB": "8", "VIDCAP_READ_TIMEOUT": "20"}  # bodies: 32 MB at once
        with GateProcess(upstream, tmp_path, env=env) as gate:
            path = "/predictions/vidcap"
            with RssSampler(gate.pid) as unauthenticated, ThreadPoolExecutor(16) as pool:
                declared = raw_request(
                    gate.port, path, b"", PNG, {"Content-Length": str(60 * 2**20)}
                )
                answers = list(
                    pool.map(lambda _: chunked_upload(gate.port, path, 60 * 2**20, {}), range(16))
                )
            assert all(isinstance(a, tuple) and a[0] == 400 for a in answers), answers[:2]
            assert send_and_read(gate.port, declared)[0] == 400  # type: ignore[index]
            with RssSampler(gate.pid) as authenticated, ThreadPoolExecutor(16) as pool:
                answers = list(
                    pool.map(
                        lambda _: chunked_upload(gate.port, path, 12 * 2**20, gate.auth), range(16)
                    )
                )
    statuses = sorted(a[0] if isinstance(a, tuple) else 0 for a in answers)
    print(f"\ngate RSS growth, 16 uploads of 60 MB without a token: {unauthenticated.growth_mb:.1f} MB; "
          f"16 chunked 12 MB uploads with it (limit 8 MB, bodies 32 MB): "
          f"{authenticated.growth_mb:.1f} MB; statuses {statuses}")  # fmt: skip
    assert unauthenticated.growth_mb < 10
    assert authenticated.growth_mb < 2 * 32 + 16
    assert set(statuses) <= {413, 503}


@pytest.mark.slow
def test_gate_refuses_a_request_line_without_version_and_doubled_headers(gate: GateProcess) -> None:
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as sock:
        sock.sendall(b"POST /predictions/vidcap\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)
    assert b" 400 " in data.split(b"\r\n")[0] and b"request line has no HTTP version" in data
    image = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    # A target that is no path, a header name with a space: what aiohttp's parser refuses
    # about a request's head is named so (it was "request body could not be read: …").
    for target, headers in (("@127.0.0.1:9/x", {}), ("/predictions/vidcap", {"Bad Name": "y"})):
        answer = send_and_read(gate.port, raw_request(gate.port, target, image, PNG, headers))
        assert not isinstance(answer, str), answer
        status, body = answer
        assert status == 400 and body["error"].startswith(
            "request line or headers could not be read: "
        ), body
    doubled = raw_request(
        gate.port, "/predictions/vidcap", image, PNG, {**gate.auth, "Content-type": HOSTILE_TYPE}
    )
    status, body = send_and_read(gate.port, doubled)  # type: ignore[misc]
    assert status == 400 and re.search("(?i)duplicate 'content-type'|more than one content-type", body["error"]), body  # fmt: skip
    status, body, _ = post(gate.url, image, PNG, {"Authorization": "Bearer wrong"})
    assert (status, body) == (400, {"error": "Token Authorization failed. Token either incorrect, expired, or not provided correctly"})  # fmt: skip
    assert gate.upstream.refused == 0  # the gate refused it: TorchServe never saw it


@pytest.mark.slow
def test_gate_renews_torchserves_expired_key_and_keeps_the_clients_key(gate: GateProcess) -> None:
    gate_good_request(gate)
    gate.upstream.key = "expired-now"  # TorchServe 0.12 refuses its own key once it expires
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: gate_good_request(gate), range(8)))
    assert gate.upstream.renewals == 1  # once, for every request that met the old key
    assert gate.upstream.refused >= 1
    gate_good_request(gate)


# --- slow: Flask ----------------------------------------------------------------------------------

FLASK_READ_TIMEOUT = 8.0


@pytest.fixture(scope="module")
def flask_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskServer]:
    env = {
        "VIDCAP_READ_TIMEOUT": str(FLASK_READ_TIMEOUT),
        "VIDCAP_MAX_REQUEST_MB": "70",
        "VIDCAP_MAX_BODIES_MB": "140",
        "VIDCAP_MAX_BATCH": "8",
        "THREADS": "16",
    }
    server = FlaskServer(tmp_path_factory.mktemp("flask-attacks") / "server.log", env=env)
    try:
        yield server.start()
    finally:
        server.stop()


def flask_worker(server: FlaskServer):  # type: ignore[no-untyped-def]
    import psutil

    assert server.process is not None
    (worker,) = psutil.Process(server.process.pid).children()
    return worker


def flask_good_request(server: FlaskServer) -> None:
    status, body, _ = post(server.url, wire.encode_image(make_frames(1, (64, 64))[0], "png"), PNG)
    assert status == 200 and "caption" in body, body


@pytest.mark.slow
def test_flask_hostile_multipart_costs_no_cpu_and_no_latency(flask_server: FlaskServer) -> None:
    worker = flask_worker(flask_server)
    for size in (2 * 2**20, 64 * 2**20):
        before = sum(worker.cpu_times()[:2])
        answer = send_and_read(
            flask_server.port,
            raw_request(flask_server.port, "/caption", hostile_body(size), HOSTILE_TYPE),
        )
        spent = sum(worker.cpu_times()[:2]) - before
        print(f"\nflask, {size >> 20} MB of tiny parts: {answer!s:.90} in {spent:.3f} s CPU")
        assert spent < 1.0 and isinstance(answer, tuple) and answer[0] == 413
    hostile = raw_request(flask_server.port, "/caption", hostile_body(2 * 2**20), HOSTILE_TYPE)
    flask_good_request(flask_server)
    baseline = latencies(lambda: flask_good_request(flask_server), 100)
    with under_attack(flask_server.port, hostile, 4, flask_server.log_path.parent):
        before, started = sum(worker.cpu_times()[:2]), time.monotonic()
        attacked = latencies(lambda: flask_good_request(flask_server), 100)
        share = (sum(worker.cpu_times()[:2]) - before) / (time.monotonic() - started)
    report("flask", baseline, attacked)
    print(f"flask worker CPU under attack: {share:.0%} of one core")
    assert_not_frozen(baseline, attacked)


@pytest.mark.slow
def test_flask_refuses_a_jpeg_scan_bomb_without_decoding_it(flask_server: FlaskServer) -> None:
    """A 14 MB JPEG of 350,000 scans (minutes of a decoder thread, were it decoded) is a
    400 naming the scans, for a few milliseconds of the worker's CPU; the next good request
    is served."""
    from tests.support.images import scan_bomb

    worker = flask_worker(flask_server)
    bomb = scan_bomb(350_000)
    before = sum(worker.cpu_times()[:2])
    answer = send_and_read(
        flask_server.port, raw_request(flask_server.port, "/caption", bomb, "image/jpeg")
    )
    spent = sum(worker.cpu_times()[:2]) - before
    print(f"\nflask, a {len(bomb) >> 20} MB scan bomb: {answer!s:.120} in {spent:.3f} s CPU")
    assert isinstance(answer, tuple) and answer[0] == 400, answer
    assert "more than 100 scans" in answer[1]["error"] and spent < 1.0
    flask_good_request(flask_server)


FLASK_TRICKLE_BODY = (
    b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
)
FLASK_TRICKLE_HEADERS = b"POST /caption HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.slow
def test_flask_trickles_get_408_at_the_whole_request_deadline(flask_server: FlaskServer) -> None:
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        body = pool.submit(trickle, flask_server.port, FLASK_TRICKLE_BODY, 1.0, stop)
        head = pool.submit(trickle, flask_server.port, FLASK_TRICKLE_HEADERS, 1.0, stop)
        (body_took, body_answer), (head_took, head_answer) = body.result(60), head.result(60)
    print(f"\nflask trickles (1 byte/s, deadline {FLASK_READ_TIMEOUT:g} s): body {body_took:.1f} s, headers {head_took:.1f} s")  # fmt: skip
    assert body_answer.startswith(b"HTTP/1.1 408") and b"body not received within 8s" in body_answer
    assert (
        head_answer.startswith(b"HTTP/1.1 408") and b"headers not received within 8s" in head_answer
    )
    assert FLASK_READ_TIMEOUT - 1 < body_took < FLASK_READ_TIMEOUT + 3
    assert FLASK_READ_TIMEOUT - 1 < head_took < FLASK_READ_TIMEOUT + 3


@pytest.mark.slow
def test_flask_70_trickling_connections_do_not_block_a_good_request(
    flask_server: FlaskServer,
) -> None:
    stop = threading.Event()
    with ThreadPoolExecutor(70) as pool:
        heads = [FLASK_TRICKLE_HEADERS, FLASK_TRICKLE_BODY]
        slow = [pool.submit(trickle, flask_server.port, heads[i % 2], 1.0, stop) for i in range(70)]
        time.sleep(1.5)
        took = latencies(lambda: flask_good_request(flask_server), 1)[0]
        stop.set()
        ended = [job.result(timeout=60) for job in slow]
    closed = sum(1 for _, answer in ended if answer.startswith(b"HTTP/1.1 503"))
    print(f"\nflask, 70 trickling connections over 16 threads: good request {took:.2f} s; "
          f"{closed} of them closed (503) to make room")  # fmt: skip
    assert took < FLASK_READ_TIMEOUT - 1  # was: blocked for the whole minute
    flask_good_request(flask_server)


def open_stalled(port: int, heads: Sequence[bytes], count: int) -> list[socket.socket]:
    """``count`` connections, each sent one of ``heads`` (in turn) and then nothing."""
    opened = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if heads[i % len(heads)]:
            sock.sendall(heads[i % len(heads)])
        opened.append(sock)
    return opened


def answer_of(sock: socket.socket, wait: float) -> bytes:
    """What the server sent before closing (within ``wait`` seconds), or ``b"(open)"``."""
    sock.settimeout(wait)
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except TimeoutError:
        return answer or b"(open)"
    except OSError:
        pass
    finally:
        sock.close()
    return answer


STALLED_HEADS = (b"", FLASK_TRICKLE_HEADERS, FLASK_TRICKLE_BODY + b"ab")
FLASK_HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("lines", "length"),
    [
        ([], 0),
        ([b"Content-Length: 12"], 12),
        ([b"content-length:\t7 "], 7),
        ([b"Content-Length: 2000"], None),  # over the limit: the app answers 413
        ([b"Content-Length: 5", b"Content-Length: 5"], None),
        ([b"Content-Length: +5"], None),
        ([b"Content-Length: \xd9\xa5"], None),
        ([b"Transfer-Encoding: chunked"], None),
        ([b"Content-Length: 5", b"Expect: 100-continue"], None),
        ([b"Bad Header"], None),
    ],
)
def test_only_a_plainly_declared_body_is_gathered(lines: list[bytes], length: int | None) -> None:
    from vidcap.serve.gunicorn_worker import declared_body

    head = b"\r\n".join([b"POST /caption HTTP/1.1", b"Host: x", *lines])
    assert declared_body(head, 1000) == length


@pytest.mark.parametrize(
    ("lines", "refusal"),
    [
        ([b"Content-Length: 2000", b"Expect: 100-continue"], "request body is larger"),
        ([b"content-length: 2000", b"expect: 100-Continue "], "request body is larger"),
        ([b"Content-Length: 1000", b"Expect: 100-continue"], None),  # at the limit: asked for
        ([b"Content-Type: Image/PNG", b"Content-Length: 101", b"Expect: 100-continue"],
         "image is larger than 100 bytes"),  # (one image: the frame limit)
        ([b"Content-Type: multipart/form-data; boundary=b", b"Content-Length: 101",
          b"Expect: 100-continue"], None),  # (frames counted in parts, by the app)
        ([b"Content-Type: image/png", b"Content-Length: 100", b"Expect: 100-continue"], None),
        ([b"Content-Length: 2000"], None),  # sent anyway: the app answers 413 as before
        ([b"Content-Length: 2000", b"Expect: coffee"], None),  # gunicorn's 417
        ([b"Content-Length: 2000", b"Content-Length: 2000", b"Expect: 100-continue"], None),
        ([b"Transfer-Encoding: chunked", b"Expect: 100-continue"], None),
        ([b"Content-Length: 2000", b"Expect: 100-continue", b"Bad Header"], None),
    ],
)  # fmt: skip
def test_a_body_too_large_is_refused_before_it_is_asked_for(
    lines: list[bytes], refusal: str | None
) -> None:
    from vidcap.serve.gunicorn_worker import refused_before_asking
    from vidcap.wire import WireLimits

    head = b"\r\n".join([b"POST /caption HTTP/1.1", b"Host: x", *lines])
    error = refused_before_asking(head, 1000, WireLimits(max_bytes_per_frame=100))
    if refusal is None:
        assert error is None
    else:
        assert error is not None and error.status == 413 and str(error).startswith(refusal)


@pytest.mark.slow
def test_flask_450_stalled_connections_hold_no_thread(flask_server: FlaskServer) -> None:
    """Connections that open and send nothing, half a request line, or headers and two
    bytes of a body wait in the main loop, not in the 16 threads: a good request is
    answered at once (it waited 450 / 16 seconds, a thread shedding one stalled client a
    second), and at the deadline the stalled are closed (408 for those that sent bytes).
    The same for such a request pipelined behind a good one on a kept-alive connection
    (gunicorn gave it to a thread at once: a good request beside 400 waited 23 s)."""
    pipelined = tuple(FLASK_HEALTH + head for head in STALLED_HEADS[1:])
    opened = open_stalled(flask_server.port, STALLED_HEADS + pipelined, 450)
    try:
        time.sleep(0.5)
        took = latencies(lambda: flask_good_request(flask_server), 3)
        time.sleep(FLASK_READ_TIMEOUT + 1.5)
        answers = [answer_of(sock, 2.0) for sock in opened]
    finally:
        for sock in opened:
            sock.close()
    print(f"\nflask, 450 stalled connections over 16 threads: good requests {max(took):.2f} s")
    assert max(took) < 1.0
    assert all(answer == b"" for answer in answers[0::5]), answers[0]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers[1::5]), answers[1]
    assert all(b"headers not received within 8s" in answer for answer in answers[1::5])
    assert all(b"body not received within 8s" in answer for answer in answers[2::5]), answers[2]
    for kind, late in ((3, b"headers"), (4, b"body")):  # a good request, then half of one
        for answer in answers[kind::5]:
            assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1 ") == 2, answer
            assert b"HTTP/1.1 408" in answer and late + b" not received within 8s" in answer
    flask_good_request(flask_server)


@pytest.mark.slow
def test_flask_answers_pipelined_requests_in_order_each_once(flask_server: FlaskServer) -> None:
    """Requests sent back to back in one write (HTTP/1.1 pipelining) — bodies among them,
    the last asking to close — are answered in order, each once, then the connection
    closes (each next request is gathered from what the one before left unread)."""
    png = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    post = raw_request(flask_server.port, "/caption", png, PNG)
    close = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", flask_server.port), timeout=30) as sock:
        sock.sendall((FLASK_HEALTH + post) * 5 + close + FLASK_HEALTH)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    heads = [part.split(b"\r\n", 1)[0] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert heads == [b"200 OK"] * 11, heads
    assert answer.count(b'"caption"') == 5 and answer.count(b'"status":"ok"') == 6, answer[-300:]


@pytest.mark.slow
def test_flask_at_its_connection_limit_closes_the_stalled_ones(tmp_path: Path) -> None:
    """Past ``VIDCAP_MAX_CONNECTIONS`` the worker accepts no more: 400 stalled connections
    against a limit of 100 — a good request waits in the kernel's queue while the worker
    closes, every second, the connections that have not sent their headers."""
    env = {"VIDCAP_MAX_CONNECTIONS": "100", "VIDCAP_READ_TIMEOUT": "30"}
    server = FlaskServer(tmp_path / "server.log", env=env).start()
    try:
        opened = open_stalled(server.port, STALLED_HEADS[:2], 400)
        took = latencies(lambda: flask_good_request(server), 1)[0]
        for sock in opened:
            sock.close()
        log = server.log_path.read_text()
    finally:
        server.stop()
    print(f"\nflask, 400 stalled connections over a limit of 100: good request {took:.2f} s")
    assert took < 8  # was 25 s: a thread shedding one stalled client a second
    assert "still sending their request after 1s" in log


@pytest.mark.slow
def test_flask_memory_stays_bounded_under_16_oversize_uploads(tmp_path: Path) -> None:
    env = {"VIDCAP_MAX_REQUEST_MB": "8", "VIDCAP_READ_TIMEOUT": "20"}  # bodies: 32 MB at once
    server = FlaskServer(tmp_path / "server.log", env=env).start()
    try:
        worker = flask_worker(server)
        flask_good_request(server)
        with RssSampler(worker.pid) as declared, ThreadPoolExecutor(16) as pool:
            request = raw_request(
                server.port, "/caption", b"", PNG, {"Content-Length": str(60 * 2**20)}
            )
            answers = list(pool.map(lambda _: send_and_read(server.port, request), range(16)))
        assert all(isinstance(a, tuple) and a[0] == 413 for a in answers), answers[:2]
        with RssSampler(worker.pid) as chunked, ThreadPoolExecutor(16) as pool:
            answers = list(
                pool.map(
                    lambda _: chunked_upload(server.port, "/caption", 12 * 2**20, {}), range(16)
                )
            )
        whole = raw_request(server.port, "/caption", bytes(7 * 2**20), PNG)
        with RssSampler(worker.pid) as gathered, ThreadPoolExecutor(32) as pool:
            sized = list(pool.map(lambda _: send_and_read(server.port, whole), range(32)))
        flask_good_request(server)
    finally:
        server.stop()
    statuses = sorted(a[0] if isinstance(a, tuple) else 0 for a in answers)
    print(f"\nflask worker RSS growth: 16 uploads declaring 60 MB {declared.growth_mb:.1f} MB; "
          f"16 chunked 12 MB uploads (limit 8 MB, bodies 32 MB) {chunked.growth_mb:.1f} MB; "
          f"32 uploads of 7 MB {gathered.growth_mb:.1f} MB; statuses {statuses}")  # fmt: skip
    assert declared.growth_mb < 10
    # 2 x the 32 MB of bodies, plus gunicorn's read buffers (up to ~2 MB per reading thread)
    assert chunked.growth_mb < 2 * 32 + 16 * 2
    # bodies with a Content-Length are gathered before a thread reads them, up to the same
    # 32 MB (gathering them all: +170 MB)
    assert gathered.growth_mb < 3 * 32 + 16 * 2
    assert set(statuses) <= {413, 503}
    # not images (400) or refused for memory (503), never dropped
    assert {a[0] if isinstance(a, tuple) else 0 for a in sized} <= {400, 503}


@pytest.mark.slow
def test_flask_header_errors_are_json_and_stop_sh_stops_it(
    flask_server: FlaskServer, tmp_path: Path
) -> None:
    for raw, status in (
        (b"POST /caption\r\nHost: x\r\n\r\n", 400),
        (b"POST /caption HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"POST /caption HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /health HTTP/1.1\nHost: x\n\n", 400),  # at once, not 408 at the deadline
    ):
        answer = send_and_read(flask_server.port, raw)
        assert isinstance(answer, tuple) and answer[0] == status and set(answer[1]) == {"error"}, (
            answer
        )
    # flask/stop.sh, from another shell, by the pid file start.sh gave gunicorn.
    server = FlaskServer(tmp_path / "stop.log").start()
    # (gunicorn is this process's child: gone, it stays a zombie until reaped, which stop.sh
    # took for a server still stopping until STOP_TIMEOUT)
    env = {
        **os.environ,
        "PID_FILE": str(server.log_path.with_suffix(".pid")),
        "STOP_TIMEOUT": "900",
    }
    stopped = subprocess.run(["bash", str(REPO_ROOT / "flask" / "stop.sh")], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert stopped.returncode == 0 and "Flask server stopped" in stopped.stdout, stopped
    assert server.process is not None and server.process.wait(10) is not None
    assert not server.log_path.with_suffix(".pid").exists()


def test_multipart_helper_in_support_is_what_the_rules_accept() -> None:
    body, content_type = multipart([("frame0", b"\x89PNG", PNG), ("prompt", b"a", None)])
    assert [p.name for p in protocol.parse_multipart(body, content_type, 67)] == [
        "frame0",
        "prompt",
    ]


@pytest.mark.slow
def test_oversized_heads_get_the_same_status_from_both_servers(
    gate: GateProcess, flask_server: FlaskServer
) -> None:
    """A request target past the parsers' line limit is a 414 and too many or too long
    headers a 431 on both servers (the gate answered 400 to all three, echoing the line);
    the gate echoes no part of the line back."""
    image = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    many = {f"X-Pad-{i}": "y" for i in range(500)}
    cases = (
        ("?" + "a" * 20_000, {}, 414),
        ("", many, 431),
        ("", {"X-Long": "a" * 20_000}, 431),
    )
    for suffix, headers, status in cases:
        for port, path in ((gate.port, "/predictions/vidcap"), (flask_server.port, "/caption")):
            request = raw_request(port, path + suffix, image, PNG, {**gate.auth, **headers})
            answer = send_and_read(port, request)
            assert not isinstance(answer, str), answer
            assert answer[0] == status, (port, answer)
            assert "aaaa" not in answer[1]["error"]


@pytest.mark.slow
def test_a_head_torchserve_would_refuse_is_refused_by_the_gate_first(
    gate: GateProcess, flask_server: FlaskServer
) -> None:
    """Regression: TorchServe's Java front end reads a request line of 4,096 bytes and
    8 KB of headers at most, where the gate's parser reads 8 KB and 32 KB: a request
    between the two was read whole by the gate, forwarded, and answered TorchServe's own
    400 ("Invalid HTTP message."), where Flask answers 414 (a line over 4,094 bytes), 431
    (over 100 headers) or captions it. The gate now refuses those heads before the body,
    as Flask does, and forwards none of them."""
    image = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    cases = (
        ("?" + "a" * 4_100, {}, 414),
        ("", {f"X-Pad-{i}": "y" for i in range(120)}, 431),
    )
    forwarded = gate.upstream.requests
    for suffix, headers, status in cases:
        for port, path in ((gate.port, "/predictions/vidcap"), (flask_server.port, "/caption")):
            request = raw_request(port, path + suffix, image, PNG, {**gate.auth, **headers})
            answer = send_and_read(port, request)
            assert not isinstance(answer, str), answer
            assert answer[0] == status and "error" in answer[1], (port, answer)
    # 9 KB of headers: past TorchServe's 8 KB (gunicorn takes 100 of up to 8 KB each)
    request = raw_request(
        gate.port,
        "/predictions/vidcap",
        image,
        PNG,
        {**gate.auth, **{f"X-Pad-{i}": "v" * 1_000 for i in range(9)}},
    )
    answer = send_and_read(gate.port, request)
    assert not isinstance(answer, str), answer
    assert answer[0] == 431 and "8 KB" not in answer[1]["error"], answer
    assert gate.upstream.requests == forwarded
    # a request just within every limit is still forwarded and captioned
    request = raw_request(
        gate.port,
        "/predictions/vidcap?" + "a" * 3_900,
        image,
        PNG,
        {**gate.auth, **{f"X-Pad-{i}": "v" * 1_000 for i in range(6)}},
    )
    assert send_and_read(gate.port, request) == (200, {"caption": "ok"})


def _head_then_body(port: int, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send ``head``, wait up to 2 s for an interim "100 Continue" (what an
    ``Expect: 100-continue`` client waits for), then the body; (what came before the body
    was sent, the rest of the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(2)
        early = b""
        try:
            while b"\r\n\r\n" not in early:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                early += chunk
        except TimeoutError:
            pass
        sock.settimeout(10)
        if early.startswith(b"HTTP/1.1 100"):
            sock.sendall(body)
        rest = b""
        with contextlib.suppress(OSError):
            while b'"}' not in rest and b'"]' not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return early, rest


@pytest.mark.slow
def test_expect_100_continue_is_answered_by_both_servers(
    gate: GateProcess, flask_server: FlaskServer
) -> None:
    """Regression: curl sends ``Expect: 100-continue`` with any body over 1 MB and waits a
    second for "100 Continue" before sending it; the gate never sent one, so every such
    request through TorchServe cost a second. Both servers now send it once the head
    passed their checks; both refuse a body too large by its Content-Length (the gate a
    wrong key too) before asking for it, and any other expectation is a 417."""
    image = wire.encode_image(make_frames(1, (64, 64))[0], "png")
    servers = ((gate.port, "/predictions/vidcap"), (flask_server.port, "/caption"))
    for port, path in servers:
        head = raw_request(port, path, b"", PNG, {**gate.auth, "Expect": "100-continue"})
        head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(image))
        early, rest = _head_then_body(port, head, image)
        assert early.startswith(b"HTTP/1.1 100 Continue\r\n"), (port, early)
        assert b" 200 OK" in early + rest and b'"caption"' in early + rest, (port, rest)
        odd = raw_request(port, path, image, PNG, {**gate.auth, "Expect": "coffee"})
        answer = send_and_read(port, odd)
        assert not isinstance(answer, str) and answer[0] == 417, (port, answer)
    for port, path in servers:  # (Flask: gunicorn asked for the body before its app's 413)
        huge = raw_request(port, path, b"", PNG, {**gate.auth, "Expect": "100-continue"})
        huge = huge.replace(b"Content-Length: 0", b"Content-Length: %d" % (2**40))
        early, rest = _head_then_body(port, huge, b"")
        assert early.startswith((b"HTTP/1.1 413", b"HTTP/1.0 413")), (port, early)
        assert b"larger than the limit" in early + rest, (port, rest)
    # One image over the 16 MiB frame limit, inside the body limit, is refused too.
    for port, path in servers:
        big = raw_request(port, path, b"", PNG, {**gate.auth, "Expect": "100-continue"})
        big = big.replace(b"Content-Length: 0", b"Content-Length: %d" % (17 * 2**20))
        early, rest = _head_then_body(port, big, b"")
        assert early.startswith((b"HTTP/1.1 413", b"HTTP/1.0 413")), (port, early)
        assert b"image is larger than 16777216 bytes" in early + rest, (port, rest)


@pytest.mark.slow
def test_flask_says_close_when_it_closes(flask_server: FlaskServer) -> None:
    """Regression: a request refused before its body was read (413 by Content-Length, 415)
    was answered "Connection: keep-alive", then the connection closed: gunicorn dropped
    the app's "Connection: close". It now says close; a refused image, whose body was
    read, keeps the connection."""
    too_big = raw_request(flask_server.port, "/caption", b"", PNG, {"Content-Length": "999999999"})
    refused = raw_request(flask_server.port, "/caption", b"abcd", "text/plain")
    bad_image = raw_request(flask_server.port, "/caption", b"abcd", PNG)
    for request, status, connection in (
        (too_big, b"413", b"close"),
        (refused, b"415", b"close"),
        (bad_image, b"400", b"keep-alive"),
    ):
        with socket.create_connection(("127.0.0.1", flask_server.port), timeout=10) as sock:
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                assert chunk, head
                head += chunk
        lines = head.split(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert lines[0].split()[1] == status, head
        assert b"connection: " + connection in lines, head
