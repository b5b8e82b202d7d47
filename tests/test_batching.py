"""The micro-batcher over the serving core: merging, grouping by settings, per-request
failures, back-pressure. The model is a fake; the batcher and ``ServingCore`` are real."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from vidcap.errors import UsageError
from vidcap.serve.batcher import BatchSettings, MicroBatcher, QueueFull
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ModelFailure, Outcome, ServingCore
from vidcap.settings import GenerationSettings
from vidcap.wire import CaptionRequest

DEFAULT = GenerationSettings()
POISON = 99  # a frame of this grey level makes the fake model raise


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, dtype=np.uint8)


class FakeModel:
    """Captions a frame with its grey level; records every call; can be made to fail or wait."""

    input_size = (4, 4)

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[int, GenerationSettings]] = []
        self.values: list[list[int]] = []  # each call's frames, by grey level
        self.gate = gate

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        settings = settings or DEFAULT
        if self.gate is not None:
            assert self.gate.wait(10)
        self.calls.append((len(images), settings))
        self.values.append([int(img[0, 0, 0]) for img in images])
        if settings.prompt == "boom" or any(int(img[0, 0, 0]) == POISON for img in images):
            raise RuntimeError("CUDA out of memory (pretend)")
        prefix = settings.prompt or ""
        return [f"{prefix}{int(img[0, 0, 0])}" for img in images]


class Batcher:
    """A ``MicroBatcher`` over a real ``ServingCore`` around ``model``."""

    def __init__(
        self, model: FakeModel, max_batch: int = 8, max_delay: float = 0.0, max_queue: int = 512
    ) -> None:
        core = ServingCore(model, ServeConfig(max_batch=max_batch))
        self.batcher = MicroBatcher(core.run, BatchSettings(max_batch, max_delay, max_queue))

    def submit(
        self, images: list[np.ndarray], settings: GenerationSettings, client: str = ""
    ) -> Future[Outcome]:
        return self.batcher.submit(CaptionRequest(images, settings, batched=True), client)

    def snapshot(self) -> dict[str, int]:
        return self.batcher.snapshot()

    def close(self) -> None:
        self.batcher.close()


def captions(future: Future[Outcome]) -> list[str]:
    outcome = future.result(5)
    if outcome.error is not None:
        raise outcome.error
    return list(outcome.captions)


@pytest.fixture
def gated() -> tuple[FakeModel, threading.Event]:
    gate = threading.Event()
    return FakeModel(gate), gate


def test_single_request_gets_its_captions_in_order() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=8)
    try:
        assert captions(batcher.submit([image(1), image(2), image(3)], DEFAULT)) == ["1", "2", "3"]
    finally:
        batcher.close()
    assert batcher.snapshot()["model_calls"] == 1


def test_concurrent_requests_are_merged_into_fewer_model_calls(gated) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=8, max_delay=0.05)
    try:
        first = batcher.submit([image(0)], DEFAULT)  # occupies the model until the gate opens
        futures = [batcher.submit([image(i)], DEFAULT) for i in range(1, 9)]
        gate.set()
        assert captions(first) == ["0"]
        assert [captions(f) for f in futures] == [[str(i)] for i in range(1, 9)]
    finally:
        batcher.close()
    stats = batcher.snapshot()
    assert stats["requests"] == 9
    assert stats["model_calls"] < 9
    assert stats["largest_call"] <= 8
    assert stats["waiting_frames"] == 0


def test_max_batch_is_respected_and_requests_are_never_split(gated) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=4, max_delay=0.05)
    try:
        futures = [batcher.submit([image(i), image(i + 100)], DEFAULT) for i in range(6)]
        gate.set()
        for i, future in enumerate(futures):
            assert captions(future) == [str(i), str(i + 100)]
    finally:
        batcher.close()
    assert all(size <= 4 for size, _ in model.calls)
    assert sum(size for size, _ in model.calls) == 12


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=2)
    try:
        assert captions(batcher.submit([image(i) for i in range(5)], DEFAULT)) == list("01234")
    finally:
        batcher.close()


def test_requests_with_different_settings_are_grouped_apart(gated) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=16, max_delay=0.05)
    other = GenerationSettings(prompt="q:")
    try:
        mixed = [batcher.submit([image(i)], other if i % 2 else DEFAULT) for i in range(6)]
        gate.set()
        # the fake model prefixes with its call's prompt: right answers mean right groups
        assert [captions(f) for f in mixed] == [[f"q:{i}" if i % 2 else str(i)] for i in range(6)]
    finally:
        batcher.close()
    assert {s for _, s in model.calls} == {DEFAULT, other}
    assert len(model.calls) < 6


def test_a_model_exception_fails_only_that_request_and_the_worker_survives() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=8)
    try:
        with pytest.raises(ModelFailure, match="out of memory"):
            captions(batcher.submit([image(1)], GenerationSettings(prompt="boom")))
        assert captions(batcher.submit([image(2)], DEFAULT)) == ["2"]
    finally:
        batcher.close()
    stats = batcher.snapshot()
    assert stats["failed_requests"] == 1 and stats["model_calls"] == 2


def test_a_request_that_breaks_the_model_is_retried_apart_from_its_batch_mates(gated) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=8, max_delay=0.05)
    try:
        futures = [batcher.submit([image(v)], DEFAULT) for v in (1, POISON, 2)]
        gate.set()
        assert captions(futures[0]) == ["1"] and captions(futures[2]) == ["2"]
        with pytest.raises(ModelFailure, match="the model failed on this request.*out of memory"):
            captions(futures[1])
    finally:
        batcher.close()
    # one failed call of all three, then each alone
    assert [size for size, _ in model.calls][-3:] == [1, 1, 1]


class ShortModel(FakeModel):
    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        return ["only one"]


def test_a_wrong_number_of_captions_is_a_failure_not_a_misalignment() -> None:
    batcher = Batcher(ShortModel())
    try:
        with pytest.raises(ModelFailure, match="1 captions for 2 frames"):
            captions(batcher.submit([image(1), image(2)], DEFAULT))
    finally:
        batcher.close()


def test_queue_full_raises_instead_of_growing_without_bound(gated) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=1, max_queue=3)
    try:
        running = batcher.submit([image(0)], DEFAULT)
        deadline = time.monotonic() + 5
        while batcher.snapshot()["waiting_frames"] and time.monotonic() < deadline:
            time.sleep(0.01)  # until the worker has taken the first job (blocked on the gate)
        queued = [batcher.submit([image(i)], DEFAULT) for i in range(1, 4)]
        with pytest.raises(QueueFull, match="3 frames are already waiting"):
            batcher.submit([image(9)], DEFAULT)
        gate.set()
        assert captions(running) == ["0"]
        assert [captions(f) for f in queued] == [["1"], ["2"], ["3"]]
    finally:
        gate.set()
        batcher.close()


def wait_until_taken(batcher: Batcher) -> None:
    deadline = time.monotonic() + 5
    while batcher.snapshot()["waiting_frames"] and time.monotonic() < deadline:
        time.sleep(0.01)  # until the worker has taken what waits (blocked on the gate)


def test_clients_take_turns_not_first_come_first_served(gated) -> None:
    """A client's request waits for one request of each other client, not for all that a
    busy neighbour queued first (it was first come, first served)."""
    model, gate = gated
    batcher = Batcher(model, max_batch=2)
    try:
        running = batcher.submit([image(0)], DEFAULT, "busy")
        wait_until_taken(batcher)
        busy = [batcher.submit([image(i), image(i)], DEFAULT, "busy") for i in (1, 2, 3)]
        quiet = batcher.submit([image(50)], DEFAULT, "quiet")
        other = batcher.submit([image(60)], DEFAULT, "other")
        gate.set()
        assert [captions(f) for f in (running, quiet, other)] == [["0"], ["50"], ["60"]]
        assert [captions(f) for f in busy] == [["1", "1"], ["2", "2"], ["3", "3"]]
    finally:
        gate.set()
        batcher.close()
    # busy's first waiting request, then quiet's and other's together (they fit one call)
    assert model.values == [[0], [1, 1], [50, 60], [2, 2], [3, 3]]


def test_a_full_queue_refuses_only_a_client_that_already_waits(gated) -> None:
    """A busy neighbour filling the queue got every other client 503 (measured: 0 of 30
    light requests answered beside one flooding client); a client with nothing waiting
    now always gets its request in, and the busy one is refused."""
    model, gate = gated
    batcher = Batcher(model, max_batch=1, max_queue=3)
    try:
        running = batcher.submit([image(0)], DEFAULT, "busy")
        wait_until_taken(batcher)
        queued = [batcher.submit([image(i)], DEFAULT, "busy") for i in (1, 2, 3)]
        with pytest.raises(QueueFull, match="3 frames are already waiting"):
            batcher.submit([image(4)], DEFAULT, "busy")
        assert batcher.batcher.refuses("busy", 1) == "3 frames are already waiting for the model"
        assert batcher.batcher.refuses("light", 1) is None
        light = batcher.submit([image(50)], DEFAULT, "light")  # past max_queue: let in
        with pytest.raises(QueueFull, match="4 frames are already waiting"):
            batcher.submit([image(51)], DEFAULT, "light")  # … once: it waits now
        gate.set()
        assert captions(light) == ["50"]
        assert [captions(f) for f in (running, *queued)] == [["0"], ["1"], ["2"], ["3"]]
    finally:
        gate.set()
        batcher.close()
    assert model.values == [[0], [1], [50], [2], [3]]


def test_many_threads_each_get_their_own_answers() -> None:
    model = FakeModel()
    batcher = Batcher(model, max_batch=8, max_delay=0.005)

    def one(i: int) -> list[str]:
        return captions(batcher.submit([image(i), image(255 - i)], DEFAULT))

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(64)))
    finally:
        batcher.close()
    assert answers == [[str(i), str(255 - i)] for i in range(64)]
    assert batcher.snapshot()["model_calls"] < 64


def test_closed_batcher_refuses_work() -> None:
    batcher = Batcher(FakeModel())
    batcher.close()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([image(1)], DEFAULT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"max_delay": -1}, "max_delay must be between"),
        ({"max_queue": 0}, "max_queue must be >= 1"),
    ],
)
def test_settings_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        BatchSettings(**{"max_batch": 8, "max_delay": 0.0, "max_queue": 8, **kwargs})
