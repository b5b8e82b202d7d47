"""The shipped tiny checkpoint, watched: for tests that must see or steer the model's calls
(the batcher's merging and turns, a handler's batches, a model failure). No stand-in model:
every caption is the tiny model's own, and a test checks a request's captions against what
the model says of its frames alone (``Said``).

Frames are scenes of the tiny model's own kind (``distinct_scenes``), each captioned
differently, so a call's frames can be read back as scene labels and a misplaced caption
shows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from vidcap.settings import GenerationSettings
from vidcap.tiny.scenes import make_examples

POISON = -1  # the label of the scene that makes the model fail (a CUDA error injected)
SCENES = 12  # scenes told apart by their captions
INJECTED = "CUDA error: device-side assert triggered (injected)"
_MODEL = threading.Lock()  # one caption call at a time: the watched model and ``Said``


def distinct_scenes(captioner: object, count: int = SCENES) -> list[np.ndarray]:
    """``count`` model-size pictures ``captioner`` captions each differently, then one more
    (label ``POISON``, the last)."""
    chosen: dict[str, np.ndarray] = {}
    for example in make_examples(seed=5, count=80):
        caption = captioner.caption([example.image])[0]  # type: ignore[attr-defined]
        chosen.setdefault(caption, example.image)
    assert len(chosen) > count, "the tiny model should tell these scenes apart"
    return list(chosen.values())[: count + 1]


class Said:
    """What the model says of each scene alone (cached): ``said([1, 2], settings)``."""

    def __init__(self, captioner: object, scenes: list[np.ndarray]) -> None:
        self.captioner, self.scenes = captioner, scenes
        self._known: dict[tuple[int, GenerationSettings], str] = {}

    def __call__(
        self, labels: Sequence[int], settings: GenerationSettings | None = None
    ) -> list[str]:
        settings = settings or GenerationSettings()
        for label in labels:
            if (label, settings) not in self._known:
                with _MODEL:
                    [caption] = self.captioner.caption([self.scenes[label]], settings)  # type: ignore[attr-defined]
                self._known[(label, settings)] = caption
        return [self._known[(label, settings)] for label in labels]


class Watched:
    """A ``Captioner``, watched: records each call's frames (as scene labels) and settings;
    with ``gate``, holds every call until it opens; fails a call holding the ``POISON``
    scene or prompted ``"boom"`` (``INJECTED``, a CUDA error as a GPU gives it); with
    ``short``, drops all but the first caption. Anything else is the captioner's own
    (its input size, processor, device, revision)."""

    def __init__(
        self,
        captioner: object,
        scenes: list[np.ndarray],
        gate: threading.Event | None = None,
        short: bool = False,
    ) -> None:
        self.captioner = captioner
        self.scenes = scenes
        self.calls: list[tuple[int, GenerationSettings]] = []
        self.values: list[list[int]] = []  # each call's frames, by scene label
        self.gate = gate
        self.short = short

    def __getattr__(self, name: str) -> object:
        return getattr(self.captioner, name)

    def label(self, image: np.ndarray) -> int:
        found = [i for i, scene in enumerate(self.scenes) if np.array_equal(scene, image)]
        assert len(found) == 1, "a frame that is none of the scenes"
        return POISON if found[0] == len(self.scenes) - 1 else found[0]

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        settings = settings or GenerationSettings()
        if self.gate is not None:
            assert self.gate.wait(10)
        labels = [self.label(image) for image in images]
        self.calls.append((len(images), settings))
        self.values.append(labels)
        if settings.prompt == "boom" or POISON in labels:
            raise RuntimeError(INJECTED)
        with _MODEL:
            captions = self.captioner.caption(images, settings)  # type: ignore[attr-defined]
        return captions[:1] if self.short else captions
