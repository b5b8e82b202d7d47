"""JSON from outside vidcap (an output folder from elsewhere, a segments file, a server's
answer), parsed so that every way it can be wrong is one kind of error.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for a document nested deeper
than the interpreter's recursion limit (``[[[[…``: 2 KB of brackets do it): a broken or
hostile ``summary.json``, record or caption file ended ``vidcap report``, ``search`` and
``export`` with a traceback, and a server answering so ended a ``--server`` run. ``loads``
makes it a ``json.JSONDecodeError`` (a ``ValueError``), which every reader already handles.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A UTF-16 surrogate standing alone: JSON's "\ud800" decodes to one, and no UTF-8 holds it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with each lone surrogate as U+FFFD (what a UTF-8 reader shows for what it
    cannot read): text from outside (a server's caption) that a UTF-8 file can hold."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def line(value: Any) -> str:
    """``value`` as one JSON Lines line (its newline included), UTF-8 text as written but
    for U+2028 and U+2029, escaped: JSON may hold them raw, but ``str.splitlines`` (and
    JavaScript before ES2019) breaks lines there, so a caption holding one read as two
    rows of a ``.jsonl``."""
    text = json.dumps(value, ensure_ascii=False)
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text + "\n"


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``; a document nested too deep is a ``json.JSONDecodeError``."""
    try:
        return json.loads(text)
    except RecursionError:
        document = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deep", document, 0) from None
