"""One rule for a model call that fails on a group: run each member alone.

The embedded engine captions frames of many videos in one batch, a server the frames of
many requests in one model call; a frame or request that breaks the model must fail by
itself, not its neighbours. ``each_alone`` runs the group, and where that raises, each
member alone: a member whose own run raises gets its exception back, every other member
its result. Interrupts (``KeyboardInterrupt``) are not caught.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def each_alone(
    run: Callable[[Sequence[Item]], Sequence[Result]], items: Sequence[Item], kind: str
) -> list[Result | Exception]:
    """``run(items)`` (one result per item); where it raises, ``run([item])`` for each item,
    a failing item's result being its exception. ``kind`` names the items in the warning."""
    try:
        return list(run(items))
    except Exception as exc:  # noqa: BLE001 - a model error: each member is run alone
        if len(items) == 1:
            return [exc]
        log.warning("the model failed on %d %s (%s): running each alone", len(items), kind, exc)
    results: list[Result | Exception] = []
    for item in items:
        try:
            results.extend(run([item]))
        except Exception as exc:  # noqa: BLE001 - this member's own failure
            results.append(exc)
    return results
