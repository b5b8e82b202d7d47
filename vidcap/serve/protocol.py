"""HTTP-level rules of the wire protocol, worded once for every server.

Each function raises ``BadRequest`` with the status and message both servers answer
with, as ``{"error": …}``. ``vidcap.wire`` checks what a request carries (images,
settings); this module checks how it arrived (method, size, multipart structure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.parser import BytesHeaderParser
from email.policy import HTTP

from vidcap.errors import BadRequest

# A POST carrying this header (any value but "0") and no image is answered with the
# server's ``info`` (model, input size, limits) instead of captions.
INFO_HEADER = "X-Vidcap-Info"
# Every caption response says the model's input size, "HEIGHTxWIDTH".
INPUT_SIZE_HEADER = "X-Vidcap-Input-Size"
ALLOWED_METHODS = ("POST",)
MULTIPART = "multipart/form-data"


def check_method(method: str) -> None:
    if method.upper() not in ALLOWED_METHODS:
        raise BadRequest(
            f"method {method.upper()} is not allowed: POST one image or a multipart pre-batch",
            405,
        )


def too_large(limit_bytes: int) -> BadRequest:
    return BadRequest(f"request body is larger than the limit of {limit_bytes} bytes", 413)


def unreadable_body(reason: str) -> BadRequest:
    return BadRequest(f"request body could not be read: {reason}")


def read_timeout(seconds: float) -> BadRequest:
    return BadRequest(f"request body not received within {seconds:g}s", 408)


def check_part_names(names: Sequence[str | None]) -> None:
    """Every multipart part has a name, and no name appears twice."""
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not name:
            raise BadRequest(f"multipart part {index} has no name: name frames frame0, frame1, …")
        if name in seen:
            raise BadRequest(f"multipart part name {name!r} appears more than once")
        seen.add(name)


def check_multipart(body: bytes, content_type: str) -> None:
    """A ``multipart/form-data`` body is well formed and its part names pass
    ``check_part_names``; ``BadRequest`` (400) otherwise."""
    check_part_names(multipart_part_names(body, content_type))


def multipart_part_names(body: bytes, content_type: str) -> list[str | None]:
    """The ``name`` of every part of a multipart body, in order (``None`` where absent)."""
    header = BytesHeaderParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode()
    )
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise _malformed("no boundary in Content-Type")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    body = b"\r\n" + body  # the first delimiter may open the body
    start = body.find(delimiter)
    if start < 0:
        raise _malformed("no opening boundary")
    names: list[str | None] = []
    pos = start + len(delimiter)
    while not body.startswith(b"--", pos):
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip(b" \t"):
            raise _malformed(f"bad boundary line after part {len(names)}")
        head_end = body.find(b"\r\n\r\n", line_end)
        end = body.find(delimiter, line_end)
        if end < 0:
            raise _malformed("no closing boundary")
        if head_end < 0 or head_end > end:
            raise _malformed(f"part {len(names)} has no header end")
        headers = BytesHeaderParser(policy=HTTP).parsebytes(body[line_end + 2 : head_end + 4])
        name = headers.get_param("name", header="content-disposition")
        names.append(name if isinstance(name, str) else None)
        pos = end + len(delimiter)
    return names


def _malformed(reason: str) -> BadRequest:
    return unreadable_body(f"malformed multipart body: {reason}")


def wants_info(headers: Mapping[str, object]) -> bool:
    for key, value in headers.items():
        if key.lower() == INFO_HEADER.lower() and isinstance(value, str):
            return value.strip() not in ("", "0")
    return False


def input_size_value(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
