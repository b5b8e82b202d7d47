"""Counts in the lines vidcap prints: "1 video", "2 videos" (the report page's
``counted`` in ``report.js`` says them the same way)."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is one: ``counted(1, "frame")`` is
    "1 frame", ``counted(3, "retry", "retries")`` "3 retries"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
