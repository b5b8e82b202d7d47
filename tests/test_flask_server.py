"""The Flask server: wire protocol, errors as JSON, limits, micro-batching.

End-to-end tests run ``flask/start.sh`` (gunicorn, one worker, threads) with the tiny
model; a few failure paths that need a misbehaving model use ``create_app`` in process.
"""

from __future__ import annotations

import importlib.util
import io
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest_servers import SERVER_PY, FlaskServer, get_json, make_frames, multipart, post
from PIL import Image

from vidcap import wire
from vidcap.batching import BatchSettings
from vidcap.settings import GenerationSettings

SIZE = (64, 64)
PNG = "image/png"


def png(rgb: np.ndarray) -> bytes:
    return wire.encode_image(rgb, "png")


def load_server_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vidcap_flask_server", SERVER_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskServer]:
    env = {
        "VIDCAP_MAX_DELAY_MS": "50",
        "VIDCAP_MAX_BATCH": "8",
        "VIDCAP_MAX_FRAMES": "8",
        "VIDCAP_MAX_REQUEST_MB": "0.5",
    }
    flask = FlaskServer(tmp_path_factory.mktemp("flask") / "server.log", env=env)
    try:
        yield flask.start()
    finally:
        flask.stop()


@pytest.mark.slow
def test_health_names_the_model_and_input_size(server: FlaskServer) -> None:
    health = server.health()
    assert health["status"] == "ok"
    assert health["model"] == "tiny"
    assert health["input_size"] == [64, 64]
    assert health["device"] == "cpu"
    assert health["max_batch"] == 8 and health["max_frames_per_request"] == 8
    assert {"requests", "frames", "model_calls"} <= set(health["stats"])


@pytest.mark.slow
def test_one_image_and_a_prebatch_equal_the_embedded_captions(server, tiny_captioner) -> None:
    frames = make_frames(5, SIZE, seed=11)
    settings = GenerationSettings(prompt="a picture of", max_new_tokens=6)
    expected = tiny_captioner.caption(frames, settings)
    headers = {"X-Vidcap-Prompt": "a picture of", "X-Vidcap-Max-New-Tokens": "6"}
    status, body, _ = post(server.url, png(frames[0]), PNG, headers)
    assert status == 200 and body == {"caption": expected[0]}
    parts = [(wire.frame_part_name(i), png(f), PNG) for i, f in enumerate(frames)]
    parts = parts[::-1] + [("prompt", b"a picture of", None), ("max_new_tokens", b"6", None)]
    status, body, _ = post(server.url, *multipart(parts))  # parts out of order: sorted by name
    assert status == 200
    assert body == [{"caption": c} for c in expected]


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def frames_form(count: int, extra: list | None = None) -> tuple[bytes, str]:
    image = png(make_frames(1, SIZE)[0])
    return multipart([(wire.frame_part_name(i), image, PNG) for i in range(count)] + (extra or []))


BAD_REQUESTS = {
    "empty body": (lambda: (b"", PNG), {}, 400, "image is empty"),
    "not an image": (lambda: (b"hello, world", PNG), {}, 400, "not a decodable JPEG or PNG"),
    "a gif": (lambda: (gif(), "image/gif"), {}, 415, "GIF, expected JPEG or PNG"),
    "too many frames": (lambda: frames_form(9), {}, 413, "9 frames, more than the limit of 8"),
    "too large": (lambda: (b"\0" * 700_000, PNG), {}, 413, "Too Large|exceeds"),
    "bad number": (lambda: frames_form(1, [("num_beams", b"many", None)]), {}, 400, "num_beams must be a whole number"),
    "too many tokens": (lambda: (png(make_frames(1, SIZE)[0]), PNG), {"X-Vidcap-Max-New-Tokens": "999"}, 400, "max_new_tokens must be between"),
    "long prompt": (lambda: frames_form(1, [("prompt", b"x" * 600, None)]), {}, 400, "longer than 500"),
    "no image parts": (lambda: multipart([("prompt", b"hi", None)]), {}, 400, "request has no image"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_json_error_and_the_server_stays_up(
    server: FlaskServer, case: str
) -> None:
    make_body, headers, expected_status, message = BAD_REQUESTS[case]
    status, body, _ = post(server.url, *make_body(), headers)
    assert status == expected_status
    assert isinstance(body, dict) and set(body) == {"error"}
    assert re.search(message, body["error"]), body
    assert server.health()["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(("path", "code"), [("/caption", 405), ("/nope", 404)])
def test_wrong_method_or_path_is_json_too(server: FlaskServer, path: str, code: int) -> None:
    status, body = get_json(server.base + path)
    assert status == code and "error" in body


@pytest.mark.slow
def test_concurrent_requests_are_micro_batched(server: FlaskServer, tiny_captioner) -> None:
    frames = make_frames(12, SIZE, seed=12)
    expected = tiny_captioner.caption(frames, GenerationSettings())
    before = server.health()["stats"]
    barrier = threading.Barrier(len(frames))

    def one(frame: np.ndarray) -> tuple[int, object]:
        barrier.wait(10)
        status, body, _ = post(server.url, png(frame), PNG)
        return status, body

    with ThreadPoolExecutor(len(frames)) as pool:
        answers = list(pool.map(one, frames))
    assert answers == [(200, {"caption": c}) for c in expected]
    after = server.health()["stats"]
    requests = after["requests"] - before["requests"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == 12
    assert calls < requests, after
    assert after["largest_call"] > 1


# --- in process: failure paths that need a misbehaving model -------------------------------


class FlakyCaptioner:
    """Fails every call whose prompt is ``boom``; else captions with the frame's mean."""

    input_size = SIZE
    device = "fake"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate

    def caption(
        self, images: Sequence[np.ndarray], settings: GenerationSettings | None = None
    ) -> list[str]:
        if self.gate is not None:
            assert self.gate.wait(10)
        if settings is not None and settings.prompt == "boom":
            raise RuntimeError("CUDA error: device-side assert triggered")
        return [f"mean {img.mean():.1f}" for img in images]


@pytest.fixture(scope="module")
def server_module() -> ModuleType:
    return load_server_module()


def test_a_model_failure_is_a_500_json_and_the_next_request_works(server_module) -> None:
    app = server_module.create_app(FlakyCaptioner(), batching=BatchSettings(max_delay=0.0))
    client = app.test_client()
    image = png(np.full((*SIZE, 3), 10, dtype=np.uint8))
    failed = client.post(
        "/caption", data=image, headers={"Content-Type": PNG, "X-Vidcap-Prompt": "boom"}
    )
    assert failed.status_code == 500
    assert "the model failed on this batch" in failed.get_json()["error"]
    assert "device-side assert" in failed.get_json()["error"]
    ok = client.post("/caption", data=image, headers={"Content-Type": PNG})
    assert ok.status_code == 200 and ok.get_json() == {"caption": "mean 10.0"}
    assert client.get("/health").get_json()["stats"]["failed_calls"] == 1


def test_a_full_queue_answers_503_with_retry_after(server_module) -> None:
    gate = threading.Event()
    app = server_module.create_app(
        FlakyCaptioner(gate), batching=BatchSettings(max_batch=1, max_delay=0.0, max_queue=1)
    )
    batcher = app.extensions["vidcap_batcher"]
    image = png(np.zeros((*SIZE, 3), dtype=np.uint8))
    try:
        first = batcher.submit([np.zeros((*SIZE, 3), np.uint8)], GenerationSettings())
        deadline = time.monotonic() + 5
        while batcher.snapshot()["waiting_frames"] and time.monotonic() < deadline:
            time.sleep(0.01)  # until the worker holds the first job (blocked on the gate)
        second = batcher.submit([np.zeros((*SIZE, 3), np.uint8)], GenerationSettings())
        response = app.test_client().post("/caption", data=image, headers={"Content-Type": PNG})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "server busy" in response.get_json()["error"]
    finally:
        gate.set()
    assert first.result(5) and second.result(5)


def test_create_app_from_env_rejects_a_bad_number(server_module, monkeypatch) -> None:
    monkeypatch.setenv("VIDCAP_MAX_BATCH", "lots")
    from vidcap.errors import UsageError

    with pytest.raises(UsageError, match="VIDCAP_MAX_BATCH must be a whole number"):
        server_module.create_app_from_env()


def test_start_script_is_strict_bash() -> None:
    text = (Path(SERVER_PY).parent / "start.sh").read_text()
    assert "set -euo pipefail" in text and "--workers 1" in text
    assert "${HOST:-127.0.0.1}" in text
