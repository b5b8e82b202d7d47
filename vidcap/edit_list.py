"""An MP4/MOV track's edit list (its ``elst`` box), read from the file's index: what of the
track's media is shown, and where its picture ends. FFmpeg applies the edit list but tells
neither: its track duration is the smaller of the media's length and the edits' sum (an
empty first edit, a delay, counted in the latter and not in the former), and it shows
several edits joined as one stream, which its decoders may not decode across.

Read once a video (the index's box headers: a few reads), never per frame."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from vidcap.torn import mp4_boxes

ELST_ENTRIES_MAX = 100_000  # entries read at most (a hostile index may claim billions)


@dataclass(frozen=True)
class EditList:
    """``end``: where the track's last edit ends on the movie's timeline from zero (s),
    empty edits included; None where a media edit's duration is 0 (the media to its end:
    a fragmented MP4's, ``-movflags delay_moov`` and CMAF write it so, its length not yet
    known); ``media_edits``: its edits that show media (not empty ones)."""

    end: float | None
    media_edits: int


def edit_list(path: str, track_id: int) -> EditList | None:
    """The edit list of track ``track_id`` (its ``tkhd`` id: PyAV's ``stream.id``) of the
    MP4/MOV ``path``; None where it has none, or the file cannot be read as one."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return _edit_list(handle, size, track_id)
    except (OSError, IndexError, struct.error):  # (a damaged or cut-off index)
        return None


def _edit_list(handle: BinaryIO, size: int, track_id: int) -> EditList | None:
    moov = next(
        ((at, length) for kind, at, length in mp4_boxes(handle, size) if kind == b"moov"), None
    )
    if moov is None:
        return None
    scale = 0
    for kind, at, length in _children(handle, *moov):
        if kind == b"mvhd":
            scale = _header_field(handle, at, 20, 28)
        elif kind == b"trak" and scale:
            boxes = {kind: (at, length) for kind, at, length in _children(handle, at, length)}
            if b"tkhd" not in boxes or _header_field(handle, boxes[b"tkhd"][0], 20, 28) != track_id:
                continue
            if b"edts" not in boxes:
                return None
            elst = next((b for b in _children(handle, *boxes[b"edts"]) if b[0] == b"elst"), None)
            return None if elst is None else _entries(handle, elst[1], elst[2], scale)
    return None


def _children(handle: BinaryIO, at: int, length: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, length) of each box inside the box at ``at`` (``length`` bytes)."""
    end, child = at + length, at + 8
    while child + 8 <= end:
        handle.seek(child)
        size, kind = struct.unpack(">I4s", handle.read(8))
        if size == 1:
            size = struct.unpack(">Q", handle.read(8))[0]
        if size < 8 or child + size > end:
            return
        yield kind, child, size
        child += size


def _header_field(handle: BinaryIO, at: int, v0: int, v1: int) -> int:
    """The 32-bit field of a full box at ``at``: at offset ``v0`` in version 0, ``v1`` in 1."""
    handle.seek(at + 8)
    version = handle.read(1)[0]
    handle.seek(at + (v0 if version == 0 else v1))
    return struct.unpack(">I", handle.read(4))[0]


def _entries(handle: BinaryIO, at: int, length: int, scale: int) -> EditList | None:
    handle.seek(at + 8)
    version, count = handle.read(1)[0], struct.unpack(">I", handle.read(7)[3:])[0]
    form, step = (">qq", 20) if version == 1 else (">Ii", 12)
    count = min(count, (length - 16) // step, ELST_ENTRIES_MAX)
    data = handle.read(count * step)
    entries = [struct.unpack_from(form, data, i * step) for i in range(count)]
    if not entries:
        return None
    to_the_end = any(duration == 0 and media_time != -1 for duration, media_time in entries)
    end = None if to_the_end else sum(duration for duration, _ in entries) / scale
    return EditList(end, sum(media_time != -1 for _, media_time in entries))
