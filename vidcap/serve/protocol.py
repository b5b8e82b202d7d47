"""HTTP-level rules of the wire protocol, worded once for every server.

Each function raises ``BadRequest`` with the status and message both servers answer
with, as ``{"error": …}``. ``vidcap.wire`` checks what a request carries (images,
settings); this module checks how it arrived (method, size, multipart structure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vidcap.errors import BadRequest

# A POST carrying this header (any value but "0") and no image is answered with the
# server's ``info`` (model, input size, limits) instead of captions.
INFO_HEADER = "X-Vidcap-Info"
# Every caption response says the model's input size, "HEIGHTxWIDTH".
INPUT_SIZE_HEADER = "X-Vidcap-Input-Size"
ALLOWED_METHODS = ("POST",)


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


def wants_info(headers: Mapping[str, object]) -> bool:
    for key, value in headers.items():
        if key.lower() == INFO_HEADER.lower() and isinstance(value, str):
            return value.strip() not in ("", "0")
    return False


def input_size_value(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def parse_input_size(value: str) -> tuple[int, int]:
    """``"64x64"`` → ``(64, 64)``; ``ValueError`` on anything else."""
    height, sep, width = value.strip().lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise ValueError(f"bad input size {value!r}, expected HEIGHTxWIDTH")
    return int(height), int(width)
