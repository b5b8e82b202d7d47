"""Frames in presentation order, timed as FFmpeg times them: the decode loop's bookkeeping.

``Reorder`` puts decoded frames in time order (a damaged stream releases some late),
``Sent`` remembers what a decode pass has sent so a pass after a broken one sends nothing
twice, and ``BestEffort`` is FFmpeg's ``best_effort_timestamp``. ``vidcap.video`` drives them.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# Decoded frames the reorder buffer holds: a few, many more once a stream has shown it
# releases frames out of order (H.264's decoded picture buffer holds at most 16).
REORDER_DEPTH = 4
REORDER_DEPTH_DISORDERED = 16


class Reorder(Generic[T]):
    """Puts items in time order: holds a few (``REORDER_DEPTH``) and releases the earliest.

    Once an item arrives earlier than one before it, the buffer deepens to
    ``REORDER_DEPTH_DISORDERED``. An item that arrives after a later one has already been
    released cannot be placed: it is counted in ``late`` and left out. Equal times keep
    their arrival order.
    """

    def __init__(self) -> None:
        self._held: list[tuple[float, int, T]] = []
        self._arrivals = itertools.count()
        self._depth = REORDER_DEPTH
        self.latest = -math.inf  # the latest time that arrived
        self.released = -math.inf  # the time of the last item released
        self.late = 0

    def push(self, time: float, item: T) -> Iterator[tuple[float, T]]:
        """Hold ``item`` (at ``time``); yields what leaves the buffer now."""
        if time < self.latest:
            self._depth = REORDER_DEPTH_DISORDERED
        self.latest = max(self.latest, time)
        heapq.heappush(self._held, (time, next(self._arrivals), item))
        while len(self._held) > self._depth:
            yield from self._release()

    def drain(self) -> Iterator[tuple[float, T]]:
        """Everything still held, in time order (at the end of the stream)."""
        while self._held:
            yield from self._release()

    def _release(self) -> Iterator[tuple[float, T]]:
        time, _, item = heapq.heappop(self._held)
        if time < self.released:
            self.late += 1
            return
        self.released = time
        yield time, item


class Sent:
    """The frames a decode has sent, so that a pass after a broken one sends none again.
    Frames leave in presentation order, so the latest time sent and how many frames of
    that time were sent say it all (a count per time took 70 bytes a frame, a video's
    length long)."""

    def __init__(self) -> None:
        self.latest = -math.inf
        self.at_latest = 0

    def add(self, time: float) -> None:
        if time > self.latest:
            self.latest, self.at_latest = time, 1
        elif time == self.latest:
            self.at_latest += 1


def time_key(seconds: float) -> float:
    """A frame time as a set key: packet and frame times of one frame agree to the µs."""
    return round(seconds, 6)


class BestEffort:
    """FFmpeg's ``guess_correct_pts`` (libavcodec/decode.c): the frame time ffprobe reports
    as ``best_effort_timestamp``. It counts how often the frames' reordered pts and their
    packet dts went backwards, and takes the pts unless that has been wrong more often than
    the dts (or the dts is missing). ``reset`` where FFmpeg resets it: at a decoder flush."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts
