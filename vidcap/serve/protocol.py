"""HTTP-level rules of the wire protocol, worded once for every server.

Each function raises ``BadRequest`` with the status and message both servers answer
with, as ``{"error": …}``. ``vidcap.wire`` checks what a request carries (images,
settings); this module checks how it arrived (method, content type, size, multipart
structure).

**Multipart rules.** A ``multipart/form-data`` body is accepted only in one strict
shape, checked by ``parse_multipart`` before any other parser sees it (the TorchServe
gate, then TorchServe's Java parser; Flask uses the parts ``parse_multipart`` returns),
so every server reads the same parts or none does:

* the ``Content-Type`` holds one ``boundary`` (1–200 of ``A-Z a-z 0-9 '()+_./:=?-``:
  RFC 2046 says at most 70, but Werkzeug's own test client writes up to about 75) and
  at most a ``charset`` besides;
* the body starts with ``--BOUNDARY CRLF`` (after at most one empty line); every occurrence of ``--BOUNDARY`` in the
  body is a delimiter: preceded by CRLF and followed by CRLF (another part) or ``--``
  (the end), after which only an optional CRLF may follow — a delimiter with a bare LF
  or CR, padding or a prefix match is refused, never read as data;
* a part's headers end at the first blank line within 8 KiB and are CRLF-separated
  lines (no bare CR/LF, no folding) of ``Content-Disposition`` (exactly once),
  ``Content-Type`` and ``Content-Transfer-Encoding`` (binary, 8bit or 7bit) at most
  once each; nothing else;
* ``Content-Disposition: form-data`` with the parameters ``name`` (required: letters,
  digits, ``_``, ``.``, ``-``; at most 128) and ``filename`` (optional), each at most
  once, lower case, as a token or a quoted string without ``"`` or ``\\`` — no
  ``name*=``/``filename*=``;
* at most ``max_parts`` parts, counted while the body is still arriving
  (``PartCounter``), so a body of many tiny parts is refused after a few KiB (413).

The scan is one pass of ``bytes.find`` over the body plus a bounded amount of work per
part, and stops at the first fault or at ``max_parts``: its cost is linear in the body
and bounded by ``max_parts`` parts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from vidcap import wire
from vidcap.errors import BadRequest

# A POST carrying this header (any value but "0") and no image is answered with the
# server's ``info`` (model, input size, limits) instead of captions.
INFO_HEADER = "X-Vidcap-Info"
# Every caption response says the model's input size, "HEIGHTxWIDTH", the model's name (as
# the info answer names it, percent-encoded), for a hub model the commit of it loaded, and
# what its language model computes in (the info's ``precision``): a client can tell a server
# restarted with another model, another commit of it or another dtype, in the middle of
# its run.
INPUT_SIZE_HEADER = "X-Vidcap-Input-Size"
MODEL_HEADER = "X-Vidcap-Model"
REVISION_HEADER = "X-Vidcap-Revision"
PRECISION_HEADER = "X-Vidcap-Precision"
ALLOWED_METHODS = ("POST",)
MULTIPART = "multipart/form-data"
# Media types a request body may have besides multipart (or none at all).
IMAGE_TYPES = ("image/", "application/octet-stream")

# Headers of one part, up to the blank line.
MAX_PART_HEADER_BYTES = 8192
MAX_NAME_LENGTH = 128
PART_HEADERS = ("content-disposition", "content-type", "content-transfer-encoding")
IDENTITY_ENCODINGS = ("binary", "8bit", "7bit")

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_NAME = re.compile(_TOKEN)
_PARAM = re.compile(
    rb"[ \t]*;[ \t]*(" + _TOKEN + rb')=(?:"([^"\\\x00-\x1f\x7f]*)"|(' + _TOKEN + rb"))[ \t]*"
)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_PART_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_BOUNDARY = re.compile(r"[A-Za-z0-9'()+_./:=?-]{1,200}")
_CONTENT_PARAM = re.compile(
    r"[ \t]*;[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(?:\"([^\"\\\x00-\x1f\x7f]*)\"|([^;\s\"]+))[ \t]*"
)


class DeadlinePassed(Exception):  # noqa: N818 - a condition, like TimeoutError
    """A client did not send its whole request (headers and body) within the read
    timeout, counted from its first byte. Not an ``OSError``, so a server's socket-error
    handling does not swallow it: it is answered 408."""


class Shed(DeadlinePassed):
    """A client still sending its request was disconnected to make room for others
    (every thread taken, or the connection limit reached); answered ``shed_answer``."""


def shed_answer() -> BadRequest:
    return busy("the server was full of clients sending slowly; this request was closed")


def check_method(method: str) -> None:
    if method.upper() not in ALLOWED_METHODS:
        raise BadRequest(
            f"method {method.upper()} is not allowed: POST one image or a multipart pre-batch",
            405,
        )


def too_large(limit_bytes: int) -> BadRequest:
    return BadRequest(f"request body is larger than the limit of {limit_bytes} bytes", 413)


def image_too_large(
    content_type: str, length: int | None, limits: wire.WireLimits
) -> BadRequest | None:
    """The 413 of one image (an ``image/*`` body) whose declared length is over ``limits``'
    bytes per frame — what ``wire.open_image`` answers once it is read — so a server can
    refuse it from the head; None otherwise."""
    if length is None or length <= limits.max_bytes_per_frame:
        return None
    return wire.too_large_image(limits) if media_type(content_type)[:6] == "image/" else None


def too_many_parts(limit: int) -> BadRequest:
    return BadRequest(
        f"request has more than {limit} multipart parts, the limit (VIDCAP_MAX_PARTS)", 413
    )


def unreadable_body(reason: str) -> BadRequest:
    return BadRequest(f"request body could not be read: {reason}")


def unreadable_head(reason: str) -> BadRequest:
    return BadRequest(f"request line or headers could not be read: {reason}")


def read_timeout(seconds: float) -> BadRequest:
    return BadRequest(f"request body not received within {seconds:g}s", 408)


def headers_timeout(seconds: float) -> BadRequest:
    return BadRequest(f"request headers not received within {seconds:g}s", 408)


def busy(reason: str) -> BadRequest:
    return BadRequest(f"server busy: {reason}; retry later", 503)


def check_part_names(names: Sequence[str | None]) -> None:
    """Every multipart part has a name, and no name appears twice."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name:
            raise BadRequest(f"multipart part {index} has no name: name frames frame0, frame1, …")
        if name in seen:
            raise BadRequest(f"multipart part name {name!r} appears more than once")
        seen.add(name)


def image_parts(parts: Sequence[Part]) -> list[Part]:
    """The parts that are not setting fields (``wire.SETTING_FIELDS``): each an image, sent
    as a file part (with a filename); a text part under another name is a 415 naming it —
    in both servers (TorchServe gives the handler every part as bytes, so it could only
    say that "frame 1" did not decode)."""
    images = [part for part in parts if part.name not in wire.SETTING_FIELDS]
    for part in images:
        if part.filename is None:
            raise BadRequest(
                f"part {part.name!r} is not a JPEG or PNG image (got a text or JSON part)", 415
            )
    return images


# --- content type ------------------------------------------------------------------------


def media_type(content_type: str) -> str:
    """``"Multipart/Form-Data; boundary=x"`` → ``"multipart/form-data"``."""
    return content_type.split(";", 1)[0].strip().lower()


def check_content_type(content_type: str | None) -> None:
    """A body is an image (``image/*``, ``application/octet-stream`` or no type) or a
    multipart pre-batch; anything else (a URL-encoded form, JSON, text) is a 415, as
    each server would otherwise read it its own way."""
    kind = media_type(content_type or "")
    if kind and kind != MULTIPART and not kind.startswith(IMAGE_TYPES):
        raise BadRequest(
            f"Content-Type {kind} is not accepted: send image/jpeg, image/png or "
            "multipart/form-data",
            415,
        )


def check_content_encoding(content_encoding: str | None) -> None:
    """A body is sent as it is: a ``Content-Encoding`` other than ``identity`` (gzip,
    deflate, br…) is a 415 on every server. JPEG and PNG are compressed already, and a
    server that inflated bodies would spend memory and CPU on a few KiB that expand to its
    whole size limit; one that ignored the header would read a compressed body as an
    image."""
    refused = _refused_coding(content_encoding, ("identity",))
    if refused:
        raise BadRequest(
            f"Content-Encoding {refused[:40]} is not accepted: send the images as they "
            "are (JPEG and PNG are compressed already)",
            415,
        )


def _refused_coding(header: str | None, accepted: Sequence[str]) -> str | None:
    """The first coding a ``Content-``/``Transfer-Encoding`` header lists (``a, b``, any
    case) that is not one of ``accepted``; None when all are."""
    codings = (c.strip().lower() for c in (header or "").split(","))
    return next((c for c in codings if c and c not in accepted), None)


def check_transfer_encoding(transfer_encoding: str | None) -> None:
    """A body is sent as it is, or in chunks: a ``Transfer-Encoding`` coding besides
    ``chunked`` (``gzip, chunked``) is a 501, as the HTTP parsers answer an unknown one —
    the parser takes the chunks apart but inflates nothing, so the compressed bytes would
    be read as the image."""
    refused = _refused_coding(transfer_encoding, ("chunked", "identity"))
    if refused:
        raise BadRequest(
            f"Transfer-Encoding {refused[:40]} is not accepted: send the body as it is, or chunked",
            501,
        )


def check_body_headers(
    content_type: str | None, content_encoding: str | None, transfer_encoding: str | None = None
) -> None:
    """How a body is labelled, before a byte of it is read: sent as it is
    (``check_content_encoding``, ``check_transfer_encoding``), as an image or a multipart
    pre-batch (``check_content_type``)."""
    check_transfer_encoding(transfer_encoding)
    check_content_encoding(content_encoding)
    check_content_type(content_type)


def multipart_boundary(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, by the strict rules of the
    module docstring; ``BadRequest`` (400) otherwise."""
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != MULTIPART:
        raise _malformed(f"Content-Type {kind.strip()!r} is not {MULTIPART}")
    params: dict[str, str] = {}
    pos = 0
    rest = ";" + rest if rest.strip() else ""
    while pos < len(rest):
        match = _CONTENT_PARAM.match(rest, pos)
        if match is None:
            raise _malformed("Content-Type parameters are not name=value pairs")
        name = match.group(1).lower()
        if name in params:
            raise _malformed(f"Content-Type has {name} twice")
        if name not in ("boundary", "charset"):
            raise _malformed(f"Content-Type parameter {name} is not accepted")
        params[name] = match.group(2) if match.group(2) is not None else match.group(3)
        pos = match.end()
    boundary = params.get("boundary")
    if not boundary:
        raise _malformed("no boundary in Content-Type")
    if not _BOUNDARY.fullmatch(boundary):
        raise _malformed("the boundary must be 1 to 200 of A-Z a-z 0-9 ' ( ) + _ . / : = ? -")
    return boundary.encode("ascii")


# --- parts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One part of a multipart body; ``data`` is a view into the body (no copy)."""

    name: str
    filename: str | None
    content_type: str | None
    data: memoryview


class PartCounter:
    """Counts delimiters in a body as it arrives and raises ``too_many_parts`` as soon
    as the body holds more than ``max_parts`` parts (before it is read whole)."""

    def __init__(self, boundary: bytes, max_parts: int) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.max_parts = max_parts
        self.delimiters = 0
        self._tail = b"\r\n"  # the first delimiter opens the body, without a CRLF

    def feed(self, chunk: bytes | bytearray) -> None:
        data = bytes(chunk)
        keep = len(self.delimiter) - 1
        # Delimiters that start in the previous chunk's tail, then those inside this one.
        self.delimiters += (self._tail + data[:keep]).count(self.delimiter)
        self.delimiters += data.count(self.delimiter)
        self._tail = data[-keep:] if len(data) >= keep else (self._tail + data)[-keep:]
        # n parts have n + 1 delimiters (the last one closes the body).
        if self.delimiters > self.max_parts + 1:
            raise too_many_parts(self.max_parts)


def parse_multipart(
    body: bytes | bytearray | memoryview, content_type: str, max_parts: int
) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, or ``BadRequest``: 400 for any
    breach of the module's rules, 413 past ``max_parts`` parts."""
    boundary = multipart_boundary(content_type)
    buf = body.tobytes() if isinstance(body, memoryview) else body
    view = memoryview(buf)
    delimiter = b"--" + boundary
    size = len(buf)
    # One empty line may come first (werkzeug's encoder writes one), nothing else.
    first = 2 if buf.startswith(b"\r\n" + delimiter) else 0
    if not buf.startswith(delimiter, first):
        raise _malformed("the body does not start with --BOUNDARY")
    parts: list[Part] = []
    pos = first + len(delimiter)
    ending = bytes(buf[pos : pos + 2])
    while True:
        if ending == b"--":
            if size - pos > 4 or bytes(buf[pos + 2 :]) not in (b"", b"\r\n"):
                raise _malformed("data after the closing boundary")
            return parts
        if ending != b"\r\n":
            raise _malformed(f"the boundary line before part {len(parts)} does not end in CRLF")
        if len(parts) == max_parts:
            raise too_many_parts(max_parts)
        index = len(parts)
        start = pos + 2
        head_end = buf.find(b"\r\n\r\n", start, start + MAX_PART_HEADER_BYTES + 4)
        if head_end < 0:
            if buf.find(delimiter, start, start + MAX_PART_HEADER_BYTES + 4) >= 0:
                raise _malformed(f"part {index} has no header end before the next boundary")
            raise _malformed(f"part {index} has no header end within {MAX_PART_HEADER_BYTES} bytes")
        head = bytes(buf[start:head_end])
        if delimiter in head:
            raise _malformed(f"part {index} has a boundary inside its headers")
        name, filename, part_type = _part_headers(head, index)
        data_start = head_end + 4
        end = buf.find(delimiter, data_start)
        if end < 0:
            raise _malformed("no closing boundary")
        if end - 2 < data_start or buf[end - 2 : end] != b"\r\n":
            raise _malformed(
                f"a boundary inside part {index} is not on a line of its own (CRLF before it)"
            )
        parts.append(Part(name, filename, part_type, view[data_start : end - 2]))
        pos = end + len(delimiter)
        ending = bytes(buf[pos : pos + 2])


def check_multipart(
    body: bytes | bytearray | memoryview, content_type: str, max_parts: int
) -> list[Part]:
    """``parse_multipart``'s parts, checked by its rules and the part-name rule."""
    parts = parse_multipart(body, content_type, max_parts)
    check_part_names([part.name for part in parts])
    return parts


def _part_headers(head: bytes, index: int) -> tuple[str, str | None, str | None]:
    """(name, filename, content type) from one part's header block."""
    if b"\r" in head.replace(b"\r\n", b"") or b"\n" in head.replace(b"\r\n", b""):
        raise _malformed(f"part {index} has a bare CR or LF in its headers")
    seen: dict[str, bytes] = {}
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            raise _malformed(f"part {index} has a folded header line")
        key, colon, value = line.partition(b":")
        if not colon or not _HEADER_NAME.fullmatch(key):
            raise _malformed(f"part {index} has a header line that is not 'Name: value'")
        lower = key.decode("ascii").lower()
        if lower not in PART_HEADERS:
            raise _malformed(
                f"part {index} has a {key.decode('ascii')} header; only Content-Disposition, "
                "Content-Type and Content-Transfer-Encoding are accepted"
            )
        if lower in seen:
            raise _malformed(f"part {index} has more than one {key.decode('ascii')} header")
        if _CONTROL.search(value):
            raise _malformed(f"part {index} has a control character in a header")
        seen[lower] = value.strip(b" \t")
    if "content-disposition" not in seen:
        raise _malformed(f"part {index} has no Content-Disposition header")
    encoding = seen.get("content-transfer-encoding")
    if encoding is not None and encoding.decode("latin-1").lower() not in IDENTITY_ENCODINGS:
        raise _malformed(f"part {index} has a Content-Transfer-Encoding other than binary")
    name, filename = _disposition(seen["content-disposition"], index)
    part_type = seen.get("content-type")
    return name, filename, part_type.decode("latin-1") if part_type is not None else None


def _disposition(value: bytes, index: int) -> tuple[str, str | None]:
    if value[:9].lower() != b"form-data":
        raise _malformed(f"part {index}'s Content-Disposition is not form-data")
    params: dict[bytes, bytes] = {}
    pos = 9
    while pos < len(value):
        match = _PARAM.match(value, pos)
        if match is None:
            raise _malformed(
                f'part {index}\'s Content-Disposition parameters are not name="value" pairs'
            )
        key = match.group(1)
        if key.endswith(b"*"):
            raise _malformed(
                f"part {index}'s Content-Disposition has {key.decode()}=: encoded (RFC 5987) "
                "parameters are not accepted"
            )
        if key not in (b"name", b"filename"):
            raise _malformed(
                f"part {index}'s Content-Disposition has a parameter {key.decode()!r}; only "
                "name and filename (lower case) are accepted"
            )
        if key in params:
            raise _malformed(f"part {index}'s Content-Disposition has {key.decode()} twice")
        params[key] = match.group(2) if match.group(2) is not None else match.group(3)
        pos = match.end()
    raw_name = params.get(b"name")
    if not raw_name:
        raise BadRequest(f"multipart part {index} has no name: name frames frame0, frame1, …")
    name = raw_name.decode("latin-1")
    if len(name) > MAX_NAME_LENGTH or not _PART_NAME.fullmatch(name):
        raise _malformed(
            f"part {index}'s name may hold letters, digits, '_', '.' and '-' only "
            f"(at most {MAX_NAME_LENGTH})"
        )
    filename = params.get(b"filename")
    return name, filename.decode("latin-1") if filename is not None else None


def _malformed(reason: str) -> BadRequest:
    return unreadable_body(f"malformed multipart body: {reason}")


# --- body memory -------------------------------------------------------------------------


class BodyBudget:
    """Bytes of request bodies held at once, across every request of a server.

    A request takes what it reads as it reads it (``take``) and gives it back when it
    is answered (``give``); past ``limit`` bytes ``take`` raises ``busy`` (503), so
    however many clients upload at once, their bodies hold at most ``limit`` bytes.
    Thread-safe (Flask threads), and cheap enough for the gate's event loop.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        with self._lock:
            if self.held + size > self.limit:
                raise busy(
                    f"request bodies in memory would pass {self.limit} bytes (VIDCAP_MAX_BODIES_MB)"
                )
            self.held += size
            self.peak = max(self.peak, self.held)

    def give(self, size: int) -> None:
        with self._lock:
            self.held = max(0, self.held - size)


def wants_info(headers: Mapping[str, object]) -> bool:
    for key, value in headers.items():
        if key.lower() == INFO_HEADER.lower() and isinstance(value, str):
            return value.strip() not in ("", "0")
    return False


def input_size_value(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def model_value(name: str) -> str:
    """``name`` as a header value: ASCII, percent-encoded (a local checkpoint's path may
    hold any character)."""
    return quote(name, safe="/:@-._~+")


def model_headers(name: str, revision: str | None, precision: str | None = None) -> dict[str, str]:
    """The model a caption answer comes from, as both servers say it (``MODEL_HEADER``,
    ``REVISION_HEADER`` where the commit is known, ``PRECISION_HEADER`` where the dtype is)."""
    headers = {MODEL_HEADER: model_value(name)}
    if revision:
        headers[REVISION_HEADER] = model_value(revision)
    if precision:
        headers[PRECISION_HEADER] = model_value(precision)
    return headers


def model_from_value(value: str) -> str:
    return unquote(value)
