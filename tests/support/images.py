"""Hostile pictures for the servers' tests."""

from __future__ import annotations

import io
import re
import struct
import zlib

from PIL import Image


def black_png(width: int, height: int) -> bytes:
    """A black frame: tiny on the wire, ``width * height * 3`` bytes once decoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def scan_bomb(scans: int, size: tuple[int, int] = (3840, 2160)) -> bytes:
    """A progressive JPEG of a flat ``size`` (width, height) picture that holds at least
    ``scans`` scans: Pillow's own 10, then one of its AC scans (42 bytes: an end-of-band run
    covers every block) again and again — libjpeg-turbo's "LJT-01-003". Each extra scan is
    one more pass over every block; Pillow decodes the file, warning of nothing."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (128, 128, 128)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    starts = [m.start() for m in re.finditer(b"\xff\xda", data)]
    end = data.rindex(b"\xff\xd9")
    ends = [*starts[1:], end]
    ac = next(data[a:b] for a, b in zip(starts, ends, strict=True) if data[a + 4] == 1)
    return data[:end] + ac * max(0, scans - len(starts)) + b"\xff\xd9"


def walked_by_other_readers(size: int = 16 << 20) -> dict[str, bytes]:
    """Bodies of ``size`` bytes that Pillow's ICNS and GIF readers walk whole, a few bytes
    at a time in Python, when merely opening them (1.5-2 s of CPU for 16 MB): an icon table
    of empty entries, and a GIF comment of one-byte blocks."""
    entries = size // 8 - 1
    icns = b"icns" + struct.pack(">I", size) + (b"zzzz" + struct.pack(">I", 8)) * entries
    head = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    blocks = (size - len(head) - 4) // 2
    gif = head + b"\x21\xfe" + b"\x01a" * blocks + b"\x00" + b"\x3b"
    return {"ICNS": icns, "GIF": gif + b"\x00" * (size - len(gif))}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def with_text(png: bytes, chunks: int, each: int, kind: bytes = b"zTXt") -> bytes:
    """``png`` with ``chunks`` text chunks of ``each`` bytes of text after its header:
    compressed (zTXt: about a kilobyte apiece for a megabyte of text), or plain (tEXt)."""
    text = b"a" * each
    body = b"\x00" + zlib.compress(text, 9) if kind == b"zTXt" else text
    header_end = len(b"\x89PNG\r\n\x1a\n") + 25  # the signature, then IHDR
    texts = b"".join(png_chunk(kind, b"note%d\x00" % i + body) for i in range(chunks))
    return png[:header_end] + texts + png[header_end:]


def with_photoshop_resources(jpeg: bytes, size: int = 16 << 20) -> bytes:
    """``jpeg`` with about ``size`` bytes of APP13 segments full of empty Photoshop
    resources (12 bytes each), which Pillow parses one at a time in Python when it opens the
    file: 1.4 million of them in 16 MB."""
    resource = b"8BIM" + struct.pack(">H", 0x0400) + b"\x00\x00" + struct.pack(">I", 0)
    payload = b"Photoshop 3.0\x00" + resource * ((65533 - 14) // len(resource))
    return with_segments(jpeg, 0xED, payload, size)


def with_segments(jpeg: bytes, marker: int, payload: bytes, size: int = 16 << 20) -> bytes:
    """``jpeg`` with about ``size`` bytes of ``marker`` segments holding ``payload`` (at most
    65,533 bytes) after its SOI."""
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment * ((size - len(jpeg)) // len(segment)) + jpeg[2:]
