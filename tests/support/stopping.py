"""The real embedded backend, stopped on cue: for tests of what a run stopped part-way
through a video leaves (``vidcap.journal``). Every caption is the tiny model's own."""

from __future__ import annotations

from collections.abc import Iterator

from vidcap.backend import CaptionFailed, EmbeddedBackend


class Counting(EmbeddedBackend):
    """The real embedded backend: counts the frames it is sent; after ``stop_after``
    answers, Ctrl-C; answer number ``fail_at`` is a failure (as a server past its retries)."""

    def __init__(self, captioner, stop_after: int | None = None, fail_at: int | None = None):
        super().__init__(captioner)
        self.sent = 0
        self.stop_after, self.fail_at = stop_after, fail_at

    def caption_stream(self, images, settings) -> Iterator[str | CaptionFailed]:
        def counted():
            for image in images:
                self.sent += 1
                yield image

        for n, answer in enumerate(super().caption_stream(counted(), settings)):
            if n == self.stop_after:
                raise KeyboardInterrupt
            yield CaptionFailed("the server failed it") if n == self.fail_at else answer
