"""Counts in the lines vidcap prints: "1 video", "2 videos" (the report page's
``counted`` in ``report.js`` says them the same way)."""

from __future__ import annotations

from collections.abc import Sequence


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless the count is one: ``counted(1, "frame")`` is
    "1 frame", ``counted(3, "retry", "retries")`` "3 retries"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def flags_that(flags: Sequence[str], verb: str, plural_verb: str) -> str:
    """Flags given and what they do, the verb agreeing: ``flags_that(["--a"], "needs",
    "need")`` is "--a needs", of two flags "--a and --b need"."""
    return f"{' and '.join(flags)} {verb if len(flags) == 1 else plural_verb}"
