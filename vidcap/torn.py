"""Files cut off or never finished: cut-off downloads and recordings stopped by a crash.
``torn_end``: a file that ends part-way through one of its own units, in formats that state
no length a decoder could check; ``unfinished_mp4``: why an MP4 FFmpeg cannot open is one;
``whole_fragments_end``: where the whole fragments of a fragmented MP4 cut inside one end;
``asf_stated_length``: the length a cut-off ASF file's header states, which FFmpeg drops."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import av

# MPEG-TS packets: 188 bytes from the sync byte, or 192 in M2TS (a 4-byte time code first).
TS_SYNC = 0x47
TS_PACKETS = ((188, 0), (192, 4))  # (length, where the sync byte is)
TS_TAIL_PACKETS = 6  # packets read from the end to find their boundaries
# Ogg pages: "OggS", version 0, then 27 bytes of header with a segment count and that many
# lacing values; at most 27 + 255 + 255 * 255 bytes.
OGG_CAPTURE = b"OggS"
OGG_PAGE_MAX = 27 + 255 + 255 * 255
# Matroska/WebM (EBML): elements of a variable-length id and size ("unknown": all ones, as
# a live or unfinished recording leaves its Segment and Clusters).
EBML_SEGMENT = 0x18538067
EBML_INFO = 0x1549A966
EBML_DURATION = 0x4489
EBML_CLUSTER = 0x1F43B675
EBML_ELEMENTS_MAX = 4_000_000  # elements followed at most (hours of video and sound)
# AVI (RIFF): chunks of a 4-byte id, a 4-byte little-endian length, the data and a pad byte
# to an even length. A recorder writes the lengths of its RIFF and 'movi' lists when it
# stops: until then they hold a placeholder.
RIFF_PLACEHOLDERS = (0, 0xFFFFFFFF)
AVI_CHUNKS_MAX = 4_000_000  # chunks followed at most (hours of video and sound)
# MPEG-PS (DVD VOBs, camcorder and broadcast .mpg): packs (a start code 00 00 01 BA, a
# header of 12 bytes in MPEG-1, 14 and its stuffing in MPEG-2), each with packets of a start
# code 00 00 01 BB-FF and a 2-byte length; 00 00 01 B9 ends the stream.
PS_PACK, PS_END = b"\x00\x00\x01\xba", b"\x00\x00\x01\xb9"
PS_TAIL = 256 * 1024  # bytes read from the end: past the largest pack (64 KB packets)
# GIF: a header, a screen descriptor and its colour table, then blocks (an image: 0x2C and
# 9 bytes, its colour table, a code size and data sub-blocks; an extension: 0x21, a label,
# sub-blocks), and 0x3B. Sub-blocks: a length byte, that many bytes; 0 ends them.
GIF_IMAGE, GIF_EXTENSION, GIF_TRAILER = 0x2C, 0x21, 0x3B
GIF_READ_MAX = 64 << 20  # a larger GIF is not followed (its end is then not checked)
# Y4M (raw YUV, as test sequences are shared): a header line, then frames of "FRAME", its
# parameters and a newline, and the picture's bytes (one size for every frame).
Y4M_FRAME = b"FRAME"
Y4M_FRAMES_MAX = 4_000_000  # frames followed at most
# ASF (WMV): a Header Object (GUID, 8-byte size, object count, 2 reserved bytes) holding
# objects of a GUID and an 8-byte size; its File Properties object states the file's size,
# its play duration (100 ns units) and preroll (ms, included in the play duration), and a
# broadcast flag (a live stream: sizes and durations not stated).
ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
ASF_FILE_PROPERTIES = bytes.fromhex("a1dcab8c47a9cf118ee400c00c205365")
ASF_BROADCAST = 0x1
ASF_HEADER_READ = 1 << 20  # header bytes read at most (File Properties comes early)
# MP4/MOV: top-level boxes of a 4-byte big-endian length (1: a 64-bit one follows the type;
# 0: to the file's end) and a 4-byte type. A fragmented one (OBS Studio's default since 30,
# ``-movflags frag_keyframe``, DASH/CMAF) holds fragments: a 'moof' (the fragment's sample
# tables) and its 'mdat' (the samples), each written whole as recording goes on.
MP4_BOXES_MAX = 1_000_000  # top-level boxes followed at most (a fragment a second: days)


def _cut_transport_stream(path: str) -> bool:
    """Does this MPEG-TS/M2TS file end inside a packet? A cut-off download does (unless
    the cut falls on a packet boundary, about one time in 190). A TS states no length, so
    how much is missing is not known. The packets' boundaries are found from the file's
    end (sync bytes one packet length apart), so bytes before the first packet (a capture
    begun mid-packet) do not count."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TS_TAIL_PACKETS * 192))
        tail = handle.read()
    for length, sync in TS_PACKETS:
        for offset in range(length):
            syncs = range(offset + sync, len(tail), length)
            if len(syncs) >= TS_TAIL_PACKETS - 1 and all(tail[i] == TS_SYNC for i in syncs):
                return (len(tail) - offset) % length != 0
    return False


def torn_end(container: av.container.InputContainer) -> str | None:
    """What a file that ends part-way through one of its own units ends inside (None: it
    does not, or its format cannot tell): a cut-off download of an MPEG-TS/M2TS ends inside
    a transport-stream packet, of an Ogg file inside a page, of a DVD VOB or .mpg inside a
    pack, of a GIF inside an image, of a DV capture or a Y4M file inside a frame; an AVI
    whose recorder stopped before writing its lengths (a dashcam losing power), inside a
    chunk. None of these says how much is missing; a cut that falls on a boundary is not
    seen."""
    names = set(container.format.name.split(","))
    checks = (
        ("mpegts", _cut_transport_stream, "a transport-stream packet"),
        ("ogg", _cut_ogg, "an Ogg page"),
        ("avi", _cut_avi, "an AVI chunk"),
        ("matroska", _cut_matroska, "a Matroska cluster"),
        ("mpeg", _cut_program_stream, "an MPEG program-stream pack"),
        ("gif", _cut_gif, "a GIF image"),
        ("dv", _cut_dv, "a DV frame"),
        ("yuv4mpegpipe", _cut_y4m, "a Y4M frame"),
        ("mov", _cut_fragments, "an MP4 fragment"),
    )
    for name, cut, unit in checks:
        if name in names:
            try:
                return unit if cut(container.name) else None
            except OSError:  # (gone or unreadable since it was decoded: nothing to tell)
                return None
    return None


def _cut_ogg(path: str) -> bool:
    """Does this Ogg file end inside a page? Pages are followed from the first one found
    in the file's last two page lengths whose lengths lead from page to page to the end (a
    capture pattern inside a page's data leads nowhere); trailing bytes that are no page
    (a tag) do not count."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - 2 * OGG_PAGE_MAX))
        tail = handle.read()
    position = tail.find(OGG_CAPTURE)
    while position != -1:
        stop = _ogg_pages_end(tail, position)
        if stop is not None:
            return stop < len(tail)
        position = tail.find(OGG_CAPTURE, position + 1)
    return False


def _ogg_pages_end(tail: bytes, position: int) -> int | None:
    """Follow Ogg pages from ``position``: the end of ``tail`` where the last page ends
    there, where a page begins that ``tail`` ends inside, None where ``position`` does not
    lead from page to page (it is no page; at least one whole page must come first)."""
    pages = 0
    while position < len(tail):
        header = tail[position : position + 27]
        if not header.startswith(OGG_CAPTURE[: len(header)]) or header[4:5] not in (b"", b"\0"):
            return None  # no page here (bytes after the last page: not a cut)
        count = header[26] if len(header) == 27 else None
        lacing = tail[position + 27 : position + 27 + count] if count is not None else b""
        if count is None or len(lacing) < count or position + 27 + count + sum(lacing) > len(tail):
            return position if pages else None  # a page the file ends inside
        position += 27 + count + sum(lacing)
        pages += 1
    return position


def _cut_avi(path: str) -> bool:
    """Does this AVI end inside its frames? Each RIFF chunk (one, or more past 1 GiB:
    OpenDML's 'AVIX') holds a 'movi' list of frames, then perhaps an index. A 'movi' whose
    stated length runs past the end is cut off; one whose length is still a placeholder
    (its recorder never stopped) is followed chunk by chunk to the end. An index cut off
    after whole frames loses none; bytes after the last RIFF chunk do not count."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        at = 0
        while at + 12 <= size:
            handle.seek(at)
            header = handle.read(12)
            if header[:4] != b"RIFF":
                return False
            length = int.from_bytes(header[4:8], "little")
            end = size if length in RIFF_PLACEHOLDERS else min(size, at + 8 + length)
            if _frames_cut(handle, at + 12, end, size):
                return True
            if length in RIFF_PLACEHOLDERS or at + 8 + length > size:
                return False
            at += 8 + length + (length & 1)
    return False


def _frames_cut(handle: BinaryIO, at: int, end: int, size: int) -> bool:
    """Is the 'movi' list among the chunks from ``at`` to ``end`` (one RIFF chunk's) cut
    off by the file's ``size``?"""
    while at + 12 <= end:
        handle.seek(at)
        header = handle.read(12)
        length = int.from_bytes(header[4:8], "little")
        if header[:4] == b"LIST" and header[8:12] == b"movi":
            if length in RIFF_PLACEHOLDERS:
                return _ends_inside_a_chunk(handle, at + 12, size)
            return at + 8 + length > size
        at += 8 + length + (length & 1)
    return False


def _ends_inside_a_chunk(handle: BinaryIO, at: int, size: int) -> bool:
    """Follow the chunks from ``at`` to the file's ``size``: does it end inside one (a
    list whose length is a placeholder or runs past the end is stepped into)?"""
    for _ in range(AVI_CHUNKS_MAX):
        if at >= size:
            return False  # (a last pad byte may be missing)
        handle.seek(at)
        header = handle.read(12)
        if len(header) < 8:
            return True  # inside a chunk's header
        length = int.from_bytes(header[4:8], "little")
        inside_a_list = header[:4] in (b"LIST", b"RIFF") and len(header) == 12
        if inside_a_list and (length in RIFF_PLACEHOLDERS or at + 8 + length > size):
            at += 12
        elif at + 8 + length > size:
            return True
        else:
            at += 8 + length + (length & 1)
    return False


def unfinished_mp4(path: Path | str) -> str | None:
    """Why an MP4/MOV FFmpeg cannot open is unfinished, else None: its top-level boxes have
    the pictures (``mdat``) but no index (``moov``, which a camera, phone or OBS writes
    when recording stops, and a plain MP4 keeps at its end), or the index is cut off."""
    try:
        return _unfinished_mp4(path)
    except OSError:
        return None


def _unfinished_mp4(path: Path | str) -> str | None:
    boxes: list[bytes] = []
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        for kind, at, length in itertools.islice(mp4_boxes(handle, size), 1000):
            boxes.append(kind)
            if kind == b"moov" and at + length > size:
                return (
                    "an MP4 cut off in its index ('moov' box): a copy or download that did "
                    "not finish"
                )
    if b"mdat" in boxes and b"moov" not in boxes:
        return (
            "an MP4 without its index ('moov' box, written last): a recording never "
            "finished or a copy cut off; untrunc can rebuild a recording from a finished "
            "file of the same camera"
        )
    if boxes.count(b"moof") == 1 and boxes[-1] == b"moof" and b"mdat" not in boxes:
        return (
            "a fragmented MP4 cut off inside its first fragment ('moof' box): no frame of it "
            "is whole"
        )
    return None


def mp4_boxes(handle: BinaryIO, size: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, length) of each top-level box of the MP4/MOV ``handle`` (``size``
    bytes), from its start: the last may run past ``size`` (a cut); a header the end cuts
    is type ``b""``. Stops at bytes that are no box."""
    at = 0
    for _ in range(MP4_BOXES_MAX):
        if at >= size:
            return
        handle.seek(at)
        header = handle.read(16)
        length, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if len(header) < 8 or (length == 1 and len(header) < 16):
            yield b"", at, size - at + 1  # (inside a box's header)
            return
        if length == 1:
            length = int.from_bytes(header[8:16], "big")
        elif length == 0:
            length = size - at  # the last box runs to the end
        if length < 8 or not kind.isascii() or not kind.isalnum():
            return  # not (or no longer) a box structure
        yield kind, at, length
        at += length


def _cut_fragments(path: str) -> bool:
    """Does this fragmented MP4/MOV end inside a fragment (its 'moof' or 'mdat', or a box
    header after one)? Its top-level boxes are followed from the start, one read a box. An
    index after the last fragment ('mfra') cut off loses no frame; an MP4 of no fragments
    states its length in its index (``missing_tail`` counts what a cut loses)."""
    return _fragment_cut(path) is not None


def _fragment_cut(path: Path | str) -> tuple[bytes, int] | None:
    """The box a fragmented MP4 ends inside, where it ends inside a fragment: its type
    (``b""``: a box header the end cuts), and where its whole fragments end (the last whole
    'mdat' after a 'moof'; 0: none is whole); None where the file is no fragmented MP4 or
    does not end inside a fragment."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        fragmented, whole_end = False, 0
        for kind, at, length in mp4_boxes(handle, size):
            if at + length <= size:
                fragmented = fragmented or kind == b"moof"
                whole_end = at + length if fragmented and kind == b"mdat" else whole_end
            elif kind == b"moof" or (fragmented and kind in (b"mdat", b"")):
                return kind, whole_end
    return None


def whole_fragments_end(path: Path | str) -> int | None:
    """Where the whole fragments of a fragmented MP4 cut off inside a fragment's 'moof' (or
    a box header) end: FFmpeg cannot open such a file (it reads the 'moof' boxes as it opens
    it), and opened up to there it reads the fragments before the cut. None where that is
    not what the file is, or no fragment before the cut is whole."""
    try:
        cut = _fragment_cut(path)
    except OSError:
        return None
    if cut is None or cut[0] == b"mdat" or not cut[1]:
        return None
    return cut[1]


class FileHead(io.RawIOBase):
    """The first ``end`` bytes of the file ``path``, read-only, as PyAV reads a file object
    (its ``name`` the file's, as the container reports it): a fragmented MP4 up to its
    whole fragments (``whole_fragments_end``). Closed with the last reference to it."""

    def __init__(self, path: str, end: int) -> None:
        super().__init__()
        self.name = path
        self._file = open(path, "rb")  # noqa: SIM115 (closed in close)
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self._file.read(max(0, min(len(buffer), self._end - self._file.tell())))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            return self._file.seek(self._end + offset)
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def _element(head: bytes) -> tuple[int, int, int | None] | None:
    """The EBML element whose header starts ``head``: (id, header length, size; None when
    the size is unknown), or None when ``head`` holds no whole header (or no element)."""
    if not head or head[0] == 0:
        return None
    id_length = 9 - head[0].bit_length()
    if id_length > 4 or len(head) <= id_length or head[id_length] == 0:
        return None
    size_length = 9 - head[id_length].bit_length()
    end = id_length + size_length
    if len(head) < end:
        return None
    element = int.from_bytes(head[:id_length], "big")
    size = int.from_bytes(head[id_length:end], "big") & ((1 << (7 * size_length)) - 1)
    return element, end, None if size == (1 << (7 * size_length)) - 1 else size


def _matroska_elements(handle: BinaryIO, size: int) -> Iterator[tuple[int, int, int, int | None]]:
    """(id, offset, header length, size) of each element met walking the file, into the
    Segment and into each Cluster whose size is unknown or runs past the end (a whole
    Cluster is stepped over: a finished file costs a read per Cluster); stops at bytes
    that are no header."""
    at = 0
    for _ in range(EBML_ELEMENTS_MAX):
        if at >= size:
            return
        handle.seek(at)
        found = _element(handle.read(12))
        if found is None:
            yield -1, at, 0, None  # (no whole header here)
            return
        element, header, length = found
        yield element, at, header, length
        whole = length is not None and at + header + length <= size
        if element == EBML_SEGMENT or (element == EBML_CLUSTER and not whole):
            at += header  # into it
        elif length is None:
            return
        else:
            at += header + length


def matroska_states_duration(path: str) -> bool:
    """Does this Matroska/WebM file's Segment Info hold a Duration? A live or unfinished
    recording has none: FFmpeg then estimates the file's duration from its bitrate, which
    is no length to count lost frames against."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for element, at, header, length in _matroska_elements(handle, size):
                if element == EBML_CLUSTER:
                    return False  # (the Info comes before the first Cluster)
                if element == EBML_INFO and length is not None:
                    handle.seek(at + header)
                    return _holds(handle.read(min(length, 4096)), EBML_DURATION)
    except OSError:
        return True
    return False


def _holds(data: bytes, wanted: int) -> bool:
    """Does the run of EBML elements ``data`` hold element ``wanted`` at its top level?"""
    at = 0
    while at < len(data):
        found = _element(data[at : at + 12])
        if found is None or found[2] is None:
            return False
        element, header, length = found
        if element == wanted:
            return True
        at += header + length
    return False


def _cut_matroska(path: str) -> bool:
    """Does this Matroska/WebM file end inside a Cluster (its frames)? The Segment and its
    Clusters are followed element by element; one that runs past the file's end inside a
    Cluster is cut off. An index or tags cut off after the last Cluster lose no frame."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        in_cluster = False
        for element, at, header, length in _matroska_elements(handle, size):
            if element == -1:
                return in_cluster  # (a header the end cut)
            if element == EBML_CLUSTER:
                in_cluster = True
            elif element == EBML_SEGMENT:
                continue
            elif length is not None and at + header + length > size:
                return element in _CLUSTER_CHILDREN
            elif element in _CLUSTER_SIBLINGS:
                in_cluster = False
    return False


# Top-level elements of a Segment besides Clusters: met after one, the Cluster has ended.
_CLUSTER_SIBLINGS = frozenset(
    {
        0x114D9B74,  # SeekHead
        EBML_INFO,
        0x1654AE6B,  # Tracks
        0x1C53BB6B,  # Cues
        0x1941A469,  # Attachments
        0x1043A770,  # Chapters
        0x1254C367,  # Tags
    }
)
# What a Cluster holds: its timestamp, position, the size of the one before, its blocks.
_CLUSTER_CHILDREN = frozenset({0xE7, 0xA7, 0xAB, 0xA3, 0xA0, 0xAF})


def asf_stated_length(path: Path | str) -> float | None:
    """How long an ASF file's header says it plays (its play duration less the preroll), in
    seconds, where the file is shorter than the size the header states: a cut-off download.
    FFmpeg gives such a file no duration (it drops the header's where the sizes differ by 5 %
    or more), so what is missing from its end would go unseen. None where the file is whole,
    the header states no size (a broadcast), or it cannot be read."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            header = handle.read(ASF_HEADER_READ)
    except OSError:
        return None
    if not header.startswith(ASF_HEADER) or len(header) < 30:
        return None
    end = min(len(header), int.from_bytes(header[16:24], "little"))
    at = 30
    while at + 24 <= end:
        kind, length = header[at : at + 16], int.from_bytes(header[at + 16 : at + 24], "little")
        if kind == ASF_FILE_PROPERTIES and at + 104 <= end:
            fields = header[at + 40 : at + 104]
            stated_size = int.from_bytes(fields[0:8], "little")
            play = int.from_bytes(fields[24:32], "little")  # (after creation date, packets)
            preroll = int.from_bytes(fields[40:48], "little")
            flags = int.from_bytes(fields[48:52], "little")
            if flags & ASF_BROADCAST or not size < stated_size or not play:
                return None
            return max(0.0, play / 10_000_000 - preroll / 1000)
        if length < 24:
            return None
        at += length
    return None


def _cut_program_stream(path: str) -> bool:
    """Does this MPEG-PS file (a DVD VOB, a camcorder's or recorder's .mpg) end inside a
    pack? Packs are followed from the first pack start in the file's last ``PS_TAIL`` bytes
    whose packets lead from one to the next to the end (a start code inside a packet's data
    leads nowhere); an end code, or bytes after the last pack that are no pack (padding),
    are no cut."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - PS_TAIL))
        tail = handle.read()
    if tail.endswith(PS_END):
        return False
    followed: set[int] = set()  # (a start a failed walk passed leads where it led)
    position = tail.find(PS_PACK)
    while position != -1:
        if position not in followed:
            stop = _ps_units_end(tail, position, followed)
            if stop is not None:
                return stop > len(tail)
        position = tail.find(PS_PACK, position + 1)
    return False


def _ps_units_end(tail: bytes, position: int, followed: set[int]) -> int | None:
    """Follow packs and packets from ``position`` (a pack start), adding each start to
    ``followed``: where the last one ends (past ``tail``'s end where the file ends inside
    it), None where they do not lead from one to the next to the end (a whole pack must
    come first)."""
    units = 0
    while position < len(tail):
        followed.add(position)
        code = tail[position : position + 4]
        if len(code) < 4 or len(tail) - position < 6:
            return len(tail) + 1 if units and PS_PACK.startswith(code[:3]) else None
        if code[:3] != PS_PACK[:3] or code[3] < 0xB9:
            return None  # no pack or packet here (padding after the last: not a cut)
        if code[3] == 0xB9:
            return position + 4 if position + 4 == len(tail) else None
        if code[3] == 0xBA:
            mpeg2 = tail[position + 4] & 0xC0 == 0x40
            stuffing = tail[position + 13] & 0x07 if mpeg2 and position + 13 < len(tail) else 0
            length = 14 + stuffing if mpeg2 else 12
        else:
            length = 6 + int.from_bytes(tail[position + 4 : position + 6], "big")
        if position + length > len(tail):
            return position + length if units else None
        position += length
        units += 1
    return position


def _cut_gif(path: str) -> bool:
    """Does this GIF end before its trailer, inside an image (a cut-off download: its last
    frame is half drawn)? Its blocks are followed from the start; one of a kind GIF does not
    have (bytes that are no GIF) is no cut. A GIF over ``GIF_READ_MAX`` is not followed."""
    with open(path, "rb") as handle:
        data = handle.read(GIF_READ_MAX + 1)
    if len(data) > GIF_READ_MAX or len(data) < 13 or not data.startswith(b"GIF"):
        return False
    position = 13 + (3 << ((data[10] & 0x07) + 1) if data[10] & 0x80 else 0)
    while position < len(data):
        kind = data[position]
        if kind == GIF_TRAILER:
            return False
        if kind == GIF_IMAGE:
            if position + 10 > len(data):
                return True
            flags = data[position + 9]
            position += 10 + (3 << ((flags & 0x07) + 1) if flags & 0x80 else 0) + 1
        elif kind == GIF_EXTENSION:
            position += 2
        else:
            return False
        while True:  # sub-blocks, to the empty one
            if position >= len(data):
                return True
            length = data[position]
            position += 1 + length
            if length == 0:
                break
    return position > len(data)  # (only the trailer missing: every image is whole)


def _cut_dv(path: str) -> bool:
    """Does this raw DV file (a camcorder's tape captured over FireWire) end inside a
    frame? Its frames all have one size, the first packet's (120,000 or 144,000 bytes in
    DV25; more in DV50 and DVCPRO HD), and nothing else is in the file."""
    first = _first_packet(path, "dv")
    return first is not None and os.path.getsize(path) % first[0] != 0


def _cut_y4m(path: str) -> bool:
    """Does this Y4M file end inside a frame? Its frames (each "FRAME", its parameters, a
    newline, then the picture: one size, the first packet's) are followed from the header
    to the end; bytes that are no frame there are no cut."""
    first = _first_packet(path, "yuv4mpegpipe")
    if first is None or first[1] < 0:
        return False
    picture, at = first
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, at - 256))
        before = handle.read(at - max(0, at - 256))
        if before.rfind(Y4M_FRAME) < 0:
            return False
        at = max(0, at - 256) + before.rfind(Y4M_FRAME)  # the first frame's header
        for _ in range(Y4M_FRAMES_MAX):
            if at >= size:
                return False
            handle.seek(at)
            line = handle.read(256)
            end = line.find(b"\n")
            if not line.startswith(Y4M_FRAME[: len(line)]) or (end < 0 and len(line) == 256):
                return False  # (no frame here: not a cut)
            if end < 0 or at + end + 1 + picture > size:
                return True
            at += end + 1 + picture
    return False


def _first_packet(path: str, demuxer: str) -> tuple[int, int] | None:
    """(size, position in the file: -1 unknown) of the first video packet FFmpeg's
    ``demuxer`` reads from ``path``; None where there is none."""
    try:
        with av.open(path, format=demuxer) as container:
            first = next(container.demux(video=0), None)
    except av.FFmpegError:
        return None
    if first is None or not first.size:
        return None
    return first.size, first.pos if first.pos is not None else -1
