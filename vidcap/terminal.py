"""What a run draws on a terminal besides its own lines: progress bars (tqdm)."""

from __future__ import annotations

import contextlib

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


def logs_above(bar: tqdm) -> contextlib.AbstractContextManager:
    """While ``bar`` is drawn, log records are printed on lines of their own above it
    (``tqdm.write``), not onto the bar's line."""
    return contextlib.nullcontext() if bar.disable else logging_redirect_tqdm()
