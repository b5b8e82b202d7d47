"""Interlaced frames, shown as their first field.

An interlaced frame (broadcast 1080i and 576i, DV, DVD, AVCHD camcorders) holds two fields
taken 1/50 or 1/60 s apart, woven line by line: where anything moves, the woven picture
shows both moments at once (combing, which a shrink to the model's 224×224 blurs into a
double image). Players deinterlace; vidcap shows the model, the thumbnails and ``frames()``
the field a player shows first — the one at the frame's own time — by libavfilter's
``separatefields`` (the field order each frame states; no pixel copied), then scales it as
any frame. At the model's size nothing is lost: a field of 576i has 288 lines, of 1080i 540.
A progressive frame passes unchanged; so does every frame of scene detection, which feeds
PySceneDetect the picture its own readers give it.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import av
from av.filter import Graph

_GRAPHS = 4  # field splitters kept per thread (one per frame size and pixel format)


class _Splitters(threading.local):
    """A ``separatefields`` graph per frame size and format, per thread. Each frame pushed
    gives its first field (last out: the graph first releases the second field of the
    frame before, which it holds)."""

    def __init__(self) -> None:
        self.graphs: dict[tuple[int, int, str], Graph] = {}

    def first_field(self, frame: av.VideoFrame) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name)
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.graphs) >= _GRAPHS:
                self.graphs.clear()
            graph = self.graphs[key] = _splitter(*key)
        graph.push(frame)
        fields = []
        while True:
            try:
                fields.append(graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                break
        return fields[-1]


def _splitter(width: int, height: int, pixel_format: str) -> Graph:
    graph = Graph()
    source = graph.add_buffer(
        width=width, height=height, format=pixel_format, time_base=Fraction(1, 90000)
    )
    split = graph.add("separatefields")
    sink = graph.add("buffersink")
    source.link_to(split)
    split.link_to(sink)
    graph.configure()
    return graph


_SPLIT = _Splitters()


def shown_field(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame``'s first field (half its height) if it is interlaced, else ``frame``."""
    return _SPLIT.first_field(frame) if frame.interlaced_frame else frame
