"""The micro-batcher over the serving core: merging, grouping by settings, per-request
failures, back-pressure, clients' turns. The model is the shipped tiny checkpoint, watched
(``Watched``: each call's frames and settings recorded; held, or made to fail, on demand);
the batcher and ``ServingCore`` are real. A request's captions are checked against what the
model says of its frames alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.support.watched import POISON, SCENES, Watched
from vidcap.errors import UsageError
from vidcap.serve.batcher import BatchSettings, MicroBatcher, QueueFull
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ModelFailure, Outcome, ServingCore
from vidcap.settings import GenerationSettings
from vidcap.tiny.scenes import QUESTION_FORMS
from vidcap.wire import CaptionRequest

DEFAULT = GenerationSettings()
QUESTION = GenerationSettings(prompt=QUESTION_FORMS[1].format(colour="red", kind="circle"))


class Batcher:
    """A ``MicroBatcher`` over a real ``ServingCore`` around ``model``."""

    def __init__(
        self, model: Watched, max_batch: int = 8, max_delay: float = 0.0, max_queue: int = 512
    ) -> None:
        core = ServingCore(model, ServeConfig(max_batch=max_batch))
        self.batcher = MicroBatcher(core.run, BatchSettings(max_batch, max_delay, max_queue))
        self.scenes = model.scenes

    def submit(
        self, labels: list[int], settings: GenerationSettings, client: str = ""
    ) -> Future[Outcome]:
        images = [self.scenes[label] for label in labels]
        return self.batcher.submit(CaptionRequest(images, settings, batched=True), client)

    def snapshot(self) -> dict[str, int]:
        return self.batcher.snapshot()

    def close(self) -> None:
        self.batcher.close()


def captions(future: Future[Outcome]) -> list[str]:
    outcome = future.result(10)
    if outcome.error is not None:
        raise outcome.error
    return list(outcome.captions)


@pytest.fixture
def model(tiny_captioner, scenes) -> Watched:
    return Watched(tiny_captioner, scenes)


@pytest.fixture
def gated(tiny_captioner, scenes) -> tuple[Watched, threading.Event]:
    gate = threading.Event()
    return Watched(tiny_captioner, scenes, gate), gate


def test_single_request_gets_its_captions_in_order(model, said) -> None:
    batcher = Batcher(model, max_batch=8)
    try:
        assert captions(batcher.submit([1, 2, 3], DEFAULT)) == said([1, 2, 3])
    finally:
        batcher.close()
    assert batcher.snapshot()["model_calls"] == 1


def test_concurrent_requests_are_merged_into_fewer_model_calls(gated, said) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=8, max_delay=0.05)
    try:
        first = batcher.submit([0], DEFAULT)  # occupies the model until the gate opens
        futures = [batcher.submit([i], DEFAULT) for i in range(1, 9)]
        gate.set()
        assert captions(first) == said([0])
        assert [captions(f) for f in futures] == [said([i]) for i in range(1, 9)]
    finally:
        batcher.close()
    stats = batcher.snapshot()
    assert stats["requests"] == 9
    assert stats["model_calls"] < 9
    assert stats["largest_call"] <= 8
    assert stats["waiting_frames"] == 0


def test_max_batch_is_respected_and_requests_are_never_split(gated, said) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=4, max_delay=0.05)
    try:
        futures = [batcher.submit([i, i + 6], DEFAULT) for i in range(6)]
        gate.set()
        for i, future in enumerate(futures):
            assert captions(future) == said([i, i + 6])
    finally:
        batcher.close()
    assert all(size <= 4 for size, _ in model.calls)
    assert sum(size for size, _ in model.calls) == 12
    for values in model.values:  # whole requests (pairs i, i + 6), never split
        assert values[1::2] == [first + 6 for first in values[::2]]


def test_a_request_larger_than_max_batch_runs_alone(model, said) -> None:
    batcher = Batcher(model, max_batch=2)
    try:
        assert captions(batcher.submit([0, 1, 2, 3, 4], DEFAULT)) == said([0, 1, 2, 3, 4])
    finally:
        batcher.close()


def test_requests_with_different_settings_are_grouped_apart(gated, said) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=16, max_delay=0.05)
    try:
        mixed = [batcher.submit([i], QUESTION if i % 2 else DEFAULT) for i in range(6)]
        gate.set()
        # a question is answered yes or no, a caption describes: right answers, right groups
        assert [captions(f) for f in mixed] == [
            said([i], QUESTION if i % 2 else DEFAULT) for i in range(6)
        ]
    finally:
        batcher.close()
    assert {s for _, s in model.calls} == {DEFAULT, QUESTION}
    assert len(model.calls) < 6
    assert {said([i], QUESTION)[0] for i in range(6)} <= {"yes", "no"}


def test_a_model_exception_fails_only_that_request_and_the_worker_survives(model, said) -> None:
    batcher = Batcher(model, max_batch=8)
    try:
        with pytest.raises(ModelFailure, match="device-side assert"):
            captions(batcher.submit([1], GenerationSettings(prompt="boom")))
        assert captions(batcher.submit([2], DEFAULT)) == said([2])
    finally:
        batcher.close()
    stats = batcher.snapshot()
    assert stats["failed_requests"] == 1 and stats["model_calls"] == 2


def test_a_request_that_breaks_the_model_is_retried_apart_from_its_batch_mates(gated, said) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=8, max_delay=0.05)
    try:
        futures = [batcher.submit([v], DEFAULT) for v in (1, POISON, 2)]
        gate.set()
        assert captions(futures[0]) == said([1]) and captions(futures[2]) == said([2])
        with pytest.raises(
            ModelFailure, match="the model failed on this request.*device-side assert"
        ):
            captions(futures[1])
    finally:
        batcher.close()
    # one failed call of all three, then each alone
    assert model.values[-4:] == [[1, POISON, 2], [1], [POISON], [2]]


def test_a_wrong_number_of_captions_is_a_failure_not_a_misalignment(tiny_captioner, scenes) -> None:
    batcher = Batcher(Watched(tiny_captioner, scenes, short=True))
    try:
        with pytest.raises(ModelFailure, match="1 captions for 2 frames"):
            captions(batcher.submit([1, 2], DEFAULT))
    finally:
        batcher.close()


def test_queue_full_raises_instead_of_growing_without_bound(gated, said) -> None:
    model, gate = gated
    batcher = Batcher(model, max_batch=1, max_queue=3)
    try:
        running = batcher.submit([0], DEFAULT)
        wait_until_taken(batcher)
        queued = [batcher.submit([i], DEFAULT) for i in range(1, 4)]
        with pytest.raises(QueueFull, match="3 frames are already waiting"):
            batcher.submit([9], DEFAULT)
        gate.set()
        assert captions(running) == said([0])
        assert [captions(f) for f in queued] == [said([1]), said([2]), said([3])]
    finally:
        gate.set()
        batcher.close()


def wait_until_taken(batcher: Batcher) -> None:
    deadline = time.monotonic() + 5
    while batcher.snapshot()["waiting_frames"] and time.monotonic() < deadline:
        time.sleep(0.01)  # until the worker has taken what waits (blocked on the gate)


def test_clients_take_turns_not_first_come_first_served(gated, said) -> None:
    """A client's request waits for one request of each other client, not for all that a
    busy neighbour queued first (it was first come, first served)."""
    model, gate = gated
    batcher = Batcher(model, max_batch=2)
    try:
        running = batcher.submit([0], DEFAULT, "busy")
        wait_until_taken(batcher)
        busy = [batcher.submit([i, i], DEFAULT, "busy") for i in (1, 2, 3)]
        quiet = batcher.submit([4], DEFAULT, "quiet")
        other = batcher.submit([5], DEFAULT, "other")
        gate.set()
        assert [captions(f) for f in (running, quiet, other)] == [said([0]), said([4]), said([5])]
        assert [captions(f) for f in busy] == [said([1, 1]), said([2, 2]), said([3, 3])]
    finally:
        gate.set()
        batcher.close()
    # busy's first waiting request, then quiet's and other's together (they fit one call)
    assert model.values == [[0], [1, 1], [4, 5], [2, 2], [3, 3]]


def test_a_full_queue_refuses_only_a_client_that_already_waits(gated, said) -> None:
    """A busy neighbour filling the queue got every other client 503 (measured: 0 of 30
    light requests answered beside one flooding client); a client with nothing waiting
    now always gets its request in, and the busy one is refused."""
    model, gate = gated
    batcher = Batcher(model, max_batch=1, max_queue=3)
    try:
        running = batcher.submit([0], DEFAULT, "busy")
        wait_until_taken(batcher)
        queued = [batcher.submit([i], DEFAULT, "busy") for i in (1, 2, 3)]
        with pytest.raises(QueueFull, match="3 frames are already waiting"):
            batcher.submit([4], DEFAULT, "busy")
        assert batcher.batcher.refuses("busy", 1) == "3 frames are already waiting for the model"
        assert batcher.batcher.refuses("light", 1) is None
        light = batcher.submit([5], DEFAULT, "light")  # past max_queue: let in
        with pytest.raises(QueueFull, match="4 frames are already waiting"):
            batcher.submit([6], DEFAULT, "light")  # … once: it waits now
        gate.set()
        assert captions(light) == said([5])
        assert [captions(f) for f in (running, *queued)] == [said([i]) for i in range(4)]
    finally:
        gate.set()
        batcher.close()
    assert model.values == [[0], [1], [5], [2], [3]]


def test_many_threads_each_get_their_own_answers(model, said) -> None:
    batcher = Batcher(model, max_batch=8, max_delay=0.005)
    pairs = [(i % SCENES, (5 * i + 3) % SCENES) for i in range(64)]

    def one(pair: tuple[int, int]) -> list[str]:
        return captions(batcher.submit(list(pair), DEFAULT))

    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, pairs))
    finally:
        batcher.close()
    assert answers == [said(list(pair)) for pair in pairs]
    assert batcher.snapshot()["model_calls"] < 64


def test_closed_batcher_refuses_work(model) -> None:
    batcher = Batcher(model)
    batcher.close()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1], DEFAULT)


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
