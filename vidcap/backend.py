"""Where captions come from: the model in-process, or servers over HTTP (``vidcap.client``).

The pipeline sees one small protocol. A backend takes frames already resized to its
``input_size`` and yields exactly one caption per frame, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Protocol

import numpy as np

from vidcap.model import Captioner
from vidcap.settings import GenerationSettings


class Backend(Protocol):
    input_size: tuple[int, int]

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str]:
        """One caption per image, in order; pulls images lazily (memory stays flat)."""
        ...

    def close(self) -> None: ...


class EmbeddedBackend:
    """The model in this process: frames are captioned in ``batch_size`` chunks."""

    def __init__(self, captioner: Captioner) -> None:
        self.captioner = captioner
        self.input_size = captioner.input_size

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str]:
        iterator = iter(images)
        while chunk := list(islice(iterator, self.captioner.batch_size)):
            yield from self.captioner.caption(chunk, settings)

    def close(self) -> None:
        return None
