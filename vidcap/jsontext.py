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
from typing import Any


def loads(text: str | bytes | bytearray) -> Any:
    """``json.loads(text)``; a document nested too deep is a ``json.JSONDecodeError``."""
    try:
        return json.loads(text)
    except RecursionError:
        document = text if isinstance(text, str) else bytes(text).decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deep", document, 0) from None
