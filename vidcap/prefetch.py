"""Run an iterator in a background thread, a bounded number of items ahead."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()

# While a prefetch runs, the interpreter hands the GIL over every 0.5 ms instead of 5 ms.
# Without this a GIL-heavy consumer (Hugging Face ``generate`` launching CUDA kernels from
# Python) makes the decoding thread wait up to 5 ms at each of its several GIL
# re-acquisitions per frame, and decoding, not the GPU, bounds throughput (see BENCHMARKS.md).
SWITCH_INTERVAL = 0.0005


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(source: Iterator[T], depth: int) -> Iterator[T]:
    """Yield ``source``'s items, produced by a worker thread at most ``depth`` items ahead.

    Decoding overlaps inference this way while memory stays bounded. An exception in
    the worker is re-raised in the consumer; closing the consumer stops the worker.
    """
    items: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer to re-raise
            put(_Failure(exc))

    previous_interval = sys.getswitchinterval()
    if SWITCH_INTERVAL:
        sys.setswitchinterval(min(previous_interval, SWITCH_INTERVAL))
    worker = threading.Thread(target=work, name="vidcap-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)
        sys.setswitchinterval(previous_interval)
