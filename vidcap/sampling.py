"""Which frames a sampling takes, and which packets ``exact`` mode need not decode.

``--fps`` takes the first frame at or after each tick of a grid (``grid_selector``, with the
container clock's rounding allowed: ``tick_tolerance``), ``--every-n`` every N-th frame,
``--keyframes`` each keyframe. From the demux pass's packet times (``vidcap.container``)
``needed_times`` lists the frames a sampling takes and ``unneeded_times`` the packets after a
keyframe group's last needed frame, which ``vidcap.video`` never sends to the decoder.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Callable
from fractions import Fraction

from vidcap.container import Packets, packed_sorted
from vidcap.settings import SamplingSettings

PTS_EPSILON = 1e-6


def ticks(times: list[float], interval: float, tolerance: float) -> list[float]:
    """The frames ``--fps`` takes: the first frame at or after each tick of the grid."""
    take = grid_selector(interval, tolerance)
    return [t for t in times if take(t)]


def tick_tolerance(time_base: Fraction | None, rate: float) -> float:
    """How far before a ``--fps`` tick a frame's time may be and still be at it: half a step
    of the container's clock where that clock is finer than the frames, as a muxer rounds
    each frame's time to it — Matroska, WebM and FLV count milliseconds, so a 30 fps frame
    due at 333.33 ms is stamped 333 and is the frame at the 3 fps tick at 333.33 (else the
    next one would be taken, and ``--fps 30`` would drop every third frame); QuickTime's
    1/600 s likewise. Never more than a quarter of a frame. A clock that counts frames
    (AVI's) stamps exactly: nothing beyond float noise."""
    if time_base is None or rate <= 0:
        return PTS_EPSILON
    step, interval = float(time_base), 1.0 / rate
    if step >= 0.99 * interval:
        return PTS_EPSILON
    return max(PTS_EPSILON, min(step / 2, interval / 4))


def needed_times(
    packets: Packets, sampling: SamplingSettings, tolerance: float
) -> set[float] | None:
    """Times whose packets ``exact`` mode must decode fully; None: decode everything."""
    if sampling.mode == "all" or not packets.complete or not packets.plannable:
        return None
    if sampling.every_n == 1:  # every frame: nothing to skip (and no set of every time)
        return None
    if sampling.keyframes:
        return set()
    if sampling.every_n is not None:
        return set(packets.times[:: sampling.every_n])
    return set(ticks(packets.times, 1.0 / float(sampling.fps or 1.0), tolerance))


def unneeded_times(packets: Packets, needed: set[float]) -> array[float]:
    """Times of the packets ``exact`` mode need not even send to the decoder, sorted (a
    set of them took 50 bytes a packet where keyframes are close).

    Split the stream at keyframes (decode order). Within a group, nothing after its last
    needed frame (decode order) is referenced by a needed frame: references always come
    earlier in decode order, and the next group starts from its own keyframe. The one
    exception is an open GOP, whose leading pictures (after the next keyframe in decode
    order, before it in presentation order) may reference this group: when one of those is
    needed, this group is decoded as usual.
    """
    order = packets.order
    starts: list[int] = []  # each group's first packet (decode order)
    leading: list[bool] = []  # does the group hold a needed leading picture?
    for i, (time, key) in enumerate(zip(order, packets.keys, strict=True)):
        if key or not starts:
            starts.append(i)
            leading.append(False)
            key_time = time
        elif time < key_time and time in needed:
            leading[-1] = True
    ends = [*starts[1:], len(order)]
    unneeded = array("d")
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if i + 1 < len(starts) and leading[i + 1]:
            continue
        last = max((j for j in range(start, end) if order[j] in needed), default=start - 1)
        unneeded.extend(t for t in order[last + 1 : end] if t not in needed)
    return packed_sorted(unneeded, unique=True)


def holds(times: array[float], time: float) -> bool:
    """Is ``time`` in the sorted ``times``?"""
    i = bisect.bisect_left(times, time)
    return i < len(times) and times[i] == time


def selector(sampling: SamplingSettings, tolerance: float) -> Callable[[int, float], bool]:
    """A predicate (index, pts) → take this frame? Frames come in presentation order."""
    if sampling.keyframes:
        return lambda index, pts: True
    if sampling.every_n is not None:
        take_index = grid_selector(sampling.every_n)
        return lambda index, pts: take_index(index)
    take_time = grid_selector(1.0 / float(sampling.fps or 1.0), tolerance)
    return lambda index, pts: take_time(pts)


def grid_selector(step: float, tolerance: float = PTS_EPSILON) -> Callable[[float], bool]:
    """Take the first position at or after each multiple of ``step`` (a position within
    ``tolerance`` before it counts as at it: ``tick_tolerance``); skip the rest."""
    next_due = 0.0

    def take(position: float) -> bool:
        nonlocal next_due
        if position + tolerance < next_due:
            return False
        # The next sample is due at the first grid point after the one this is at.
        next_due = (math.floor((position + tolerance) / step + PTS_EPSILON) + 1) * step
        return True

    return take
