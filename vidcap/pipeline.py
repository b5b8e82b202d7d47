"""One video, captioned in order: what ``vidcap mask`` and the example clients need.

Bulk runs go through ``vidcap.engine``; this is the same decoder worker and backend for a
single video whose captions the caller consumes as they come.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vidcap.backend import Backend
from vidcap.decode_worker import Decoded, DecodePool, Failed
from vidcap.errors import VideoError
from vidcap.outputs import CaptionedFrame
from vidcap.settings import GenerationSettings, SamplingSettings

QUEUE_FRAMES = 64


def caption_video(
    path: Path | str,
    backend: Backend,
    sampling: SamplingSettings,
    generation: GenerationSettings,
) -> Iterator[CaptionedFrame]:
    """Caption ``path``'s sampled frames in order (raises ``VideoError`` if undecodable).

    Decoding runs ahead in a decoder process, bounded, while the backend captions.
    """
    pool = DecodePool([(0, str(path))], sampling, backend.input_size, 1, QUEUE_FRAMES)
    slots: list[tuple[int, float]] = []

    def images():
        for event in pool.events():
            if isinstance(event, Decoded):
                slots.append((event.frame.index, event.frame.pts_seconds))
                yield event.frame.rgb
            elif isinstance(event, Failed):
                raise VideoError(event.error)

    try:
        for n, caption in enumerate(backend.caption_stream(images(), generation)):
            index, pts = slots[n]
            yield CaptionedFrame(index=index, time=pts, caption=caption)
    finally:
        pool.close()
