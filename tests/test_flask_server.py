"""The Flask server: wire protocol, errors as JSON, limits, micro-batching, slow clients.

End-to-end tests run ``flask/start.sh`` (gunicorn, one worker, threads) with the tiny
model; a few failure paths that need a misbehaving model use ``create_app`` in process.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.images import black_png
from tests.support.servers import (
    PROTOCOL_CASES,
    PROTOCOL_MAX_REQUEST_MB,
    PROTOCOL_READ_TIMEOUT,
    REPO_ROOT,
    START_SH,
    FlaskServer,
    check_protocol_case,
    get_json,
    make_frames,
    multipart,
    post,
    read_response,
)
from tests.support.watched import INJECTED, Watched
from vidcap import wire
from vidcap.errors import UsageError
from vidcap.serve import protocol
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ServingCore
from vidcap.serve.flask_app import create_app, create_app_from_env
from vidcap.settings import GenerationSettings

SIZE = (64, 64)
PNG = "image/png"
READ_TIMEOUT = PROTOCOL_READ_TIMEOUT


def png(rgb: np.ndarray) -> bytes:
    return wire.encode_image(rgb, "png")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskServer]:
    env = {
        "VIDCAP_MAX_DELAY_MS": "50",
        "VIDCAP_MAX_BATCH": "8",
        "VIDCAP_MAX_FRAMES": "8",
        "VIDCAP_MAX_REQUEST_MB": str(PROTOCOL_MAX_REQUEST_MB),
        "VIDCAP_READ_TIMEOUT": str(READ_TIMEOUT),
        "THREADS": "16",
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
    assert health["token_limit"] == 128
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
    "too large": (lambda: (b"\0" * 700_000, PNG), {}, 413, "^request body is larger than the limit of 524288 bytes$"),
    "bad number": (lambda: frames_form(1, [("num_beams", b"many", None)]), {}, 400, "num_beams must be a whole number"),
    "too many tokens": (lambda: (png(make_frames(1, SIZE)[0]), PNG), {"X-Vidcap-Max-New-Tokens": "999"}, 400, "max_new_tokens must be between"),
    "long prompt": (lambda: frames_form(1, [("prompt", b"x" * 600, None)]), {}, 400, "longer than 500"),
    "no image parts": (lambda: multipart([("prompt", b"hi", None)]), {}, 400, "request has no image"),
    "a prompt header beyond ASCII": (lambda: (png(make_frames(1, SIZE)[0]), PNG), {"X-Vidcap-Prompt": "un été".encode().decode("latin-1")}, 400, "^X-Vidcap-Prompt holds text beyond ASCII"),
    "prompt over the token limit": (lambda: frames_form(1, [("prompt", LONG_PROMPT.encode(), None)]), {}, 400, "^prompt is 251 tokens; with max_new_tokens 30 and 8 image tokens that is 289, more than the model's limit of 128 tokens"),
}  # fmt: skip

# 250 short words: under the 500-character limit, over the tiny model's 128 tokens.
LONG_PROMPT = " ".join(["a"] * 250)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_json_error_and_the_server_stays_up(
    server: FlaskServer, case: str
) -> None:
    make_body, headers, expected_status, message = BAD_REQUESTS[case]
    status, body, _ = post(server.url, *make_body(), headers)
    assert status == expected_status, body
    assert isinstance(body, dict) and set(body) == {"error"}
    assert re.search(message, body["error"]), body
    assert server.health()["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(("path", "code"), [("/caption", 405), ("/nope", 404)])
def test_wrong_method_or_path_is_json_too(server: FlaskServer, path: str, code: int) -> None:
    status, body = get_json(server.base + path)
    assert status == code and "error" in body


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PROTOCOL_CASES))
def test_protocol_errors_are_4xx_json_as_on_torchserve(server: FlaskServer, case: str) -> None:
    """The table ``tests/test_torchserve.py`` sends to TorchServe's gate too."""
    check_protocol_case(server.port, "/caption", PROTOCOL_CASES[case], {})


@pytest.mark.slow
def test_an_info_request_says_the_input_size(server: FlaskServer) -> None:
    status, body, _ = post(server.url, b"", PNG, {"X-Vidcap-Info": "1"})
    assert status == 200
    assert body == {
        "model": "tiny",
        "input_size": [64, 64],
        "max_frames_per_request": 8,
        "max_batch": 8,
        "token_limit": 128,
        "precision": "float32",
    }


@pytest.mark.slow
def test_half_sent_bodies_get_408_and_do_not_starve_the_server(
    server: FlaskServer, tiny_captioner
) -> None:
    """20 clients (more than the 16 threads) each send headers and half a body, then stall,
    and one stalls in its headers; a good request still gets its caption, and each stalled
    body gets 408 in bounded time."""
    image = png(make_frames(1, SIZE, seed=3)[0])
    stalled = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(
            b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {len(image)}\r\n\r\n".encode()
            + image[: len(image) // 2]
        )
        stalled.append(sock)
    half_headers = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    half_headers.sendall(b"POST /caption HTTP/1.1\r\nHost: x\r\nContent-Ty")
    try:
        started = time.monotonic()
        status, body, _ = post(server.url, image, PNG)
        assert status == 200, body
        assert body == {"caption": tiny_captioner.caption([make_frames(1, SIZE, seed=3)[0]])[0]}
        # Each stalled body gets 408 at the deadline, or, once it has stalled for a second
        # while connections wait for a thread, 503 "retry later" to make room (#20).
        timed_out = (408, {"error": f"request body not received within {READ_TIMEOUT:g}s"})
        shed = (503, {"error": str(protocol.shed_answer())})
        for sock in stalled:
            assert read_response(sock) in (timed_out, shed)
        assert time.monotonic() - started < 4 * READ_TIMEOUT + 10
    finally:
        for sock in [*stalled, half_headers]:
            sock.close()
    assert server.health()["status"] == "ok"


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


# --- in process: failure paths, over the watched tiny model -------------------------------


def in_process_app(captioner: Watched, **config: object):
    return create_app(ServingCore(captioner, ServeConfig(**config)), model_name="tiny")


def test_a_model_failure_fails_that_request_alone_and_the_next_request_works(
    tiny_captioner, scenes, said
) -> None:
    app = in_process_app(Watched(tiny_captioner, scenes), max_batch=8, max_delay_ms=0)
    client = app.test_client()
    image = png(scenes[10])
    failed = client.post(
        "/caption", data=image, headers={"Content-Type": PNG, "X-Vidcap-Prompt": "boom"}
    )
    assert failed.status_code == 500
    assert failed.get_json() == {
        "error": f"the model failed on this request: RuntimeError: {INJECTED}"
    }
    ok = client.post("/caption", data=image, headers={"Content-Type": PNG})
    assert ok.status_code == 200 and ok.get_json() == {"caption": said([10])[0]}
    assert ok.headers["X-Vidcap-Input-Size"] == "64x64"
    assert ok.headers["X-Vidcap-Model"] == "tiny"  # (a client tells a restart with another)
    assert client.get("/health").get_json()["stats"]["failed_requests"] == 1


def test_a_full_queue_answers_503_with_retry_after(tiny_captioner, scenes, said) -> None:
    gate = threading.Event()
    captioner = Watched(tiny_captioner, scenes, gate)
    app = in_process_app(captioner, max_batch=1, max_delay_ms=0, max_queue=1)
    batcher = app.extensions["vidcap_batcher"]
    image = png(scenes[2])
    request = wire.CaptionRequest([scenes[0]], GenerationSettings(), False)
    try:
        first = batcher.submit(request)
        deadline = time.monotonic() + 5
        while batcher.snapshot()["waiting_frames"] and time.monotonic() < deadline:
            time.sleep(0.01)  # until the worker holds the first job (blocked on the gate)
        second = batcher.submit(request, "127.0.0.1")  # (the test client's address)
        response = app.test_client().post("/caption", data=image, headers={"Content-Type": PNG})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "server busy" in response.get_json()["error"]
        # refused before its frames are decoded: a frame that is no image is not even looked at
        garbage = app.test_client().post("/caption", data=b"no png", headers={"Content-Type": PNG})
        assert garbage.status_code == 503
        # another client, with nothing waiting, is let in (and answered once the model runs)
        other = {"REMOTE_ADDR": "127.0.0.2"}
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                app.test_client().post, "/caption", data=image,
                headers={"Content-Type": PNG}, environ_base=other,
            )  # fmt: skip
            deadline = time.monotonic() + 5
            while batcher.snapshot()["waiting_frames"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert batcher.snapshot()["waiting_frames"] == 2  # queued past max_queue
            gate.set()
            assert answer.result(10).get_json() == {"caption": said([2])[0]}
    finally:
        gate.set()
    assert first.result(5).captions == second.result(5).captions == tuple(said([0]))
    assert captioner.values == [[0], [0], [2]]


def test_a_decompression_bomb_is_a_413_before_any_pixel_is_decoded() -> None:
    # The reported request: 64 black 4096x4096 PNGs, 3 MB sent, 3.2 GB once decoded.
    app = create_app_from_env(
        {"VIDCAP_MODEL": "tiny", "VIDCAP_DEVICE": "cpu", "VIDCAP_MAX_REQUEST_PIXELS": "300000"}
    )
    client = app.test_client()
    bomb = black_png(4096, 4096)
    started = time.monotonic()
    response = client.post(
        "/caption",
        data={f"frame{i}": (io.BytesIO(bomb), f"{i}.png", PNG) for i in range(64)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413, response.get_json()
    assert response.get_json() == {"error": "frame 0 has 4096x4096 pixels, more than 8847360"}
    assert time.monotonic() - started < 5  # was 22 s of decoding
    # Within the per-frame limit, over VIDCAP_MAX_REQUEST_PIXELS together.
    frame = black_png(400, 300)
    response = client.post(
        "/caption",
        data={f"frame{i}": (io.BytesIO(frame), f"{i}.png", PNG) for i in range(3)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "request has 360000 pixels in its 3 frames, more than the limit of 300000"
    }
    # Two such frames pass, resized to the model's input size as they are decoded.
    response = client.post(
        "/caption",
        data={f"frame{i}": (io.BytesIO(frame), f"{i}.png", PNG) for i in range(2)},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200 and len(response.get_json()) == 2


def test_create_app_from_env_rejects_a_bad_number() -> None:
    with pytest.raises(UsageError, match="VIDCAP_MAX_BATCH must be a whole number, got 'lots'"):
        create_app_from_env({"VIDCAP_MODEL": "tiny", "VIDCAP_MAX_BATCH": "lots"})


def run_start_sh(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os
    import sys
    from pathlib import Path

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", str(START_SH)],
        env={**os.environ, "PATH": path, "VIDCAP_MODEL": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "start.sh: set VIDCAP_MODEL to the model to serve (a hub id such as"),
        (
            {"VIDCAP_MODEL": "tiny", "VIDCAP_READ_TIMEOUT": "soon"},
            "start.sh: VIDCAP_READ_TIMEOUT must be a number, got 'soon'",  # (as its own)
        ),
        # (an outside-in round: each of these was a gunicorn traceback of 40 lines)
        ({"VIDCAP_MODEL": "tiny", "VIDCAP_LOG_LEVEL": "LOUD"}, "start.sh: VIDCAP_LOG_LEVEL"),
        ({"VIDCAP_MODEL": "tiny", "PORT": "99999"}, "start.sh: PORT must be a port number"),
        ({"VIDCAP_MODEL": "{tmp}/gone"}, "start.sh: cannot load model '{tmp}/gone': no such"),
        ({"VIDCAP_MODEL": "tiny", "VIDCAP_DEVICE": "cuda:7"}, "start.sh: device 'cuda:7' asked"),
        ({"VIDCAP_MODEL": "tiny", "PID_FILE": "/proc/self/x/g.pid"}, "start.sh: cannot write"),
        # (every request refused 413, the server saying it took 64 frames)
        ({"VIDCAP_MODEL": "tiny", "VIDCAP_MAX_PARTS": "5"}, "start.sh: VIDCAP_MAX_PARTS must"),
    ],
)
def test_start_script_mistakes_are_one_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    if "cuda" in env.get("VIDCAP_DEVICE", ""):
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a GPU cuda:7")
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    message = message.replace("{tmp}", str(tmp_path))
    result = run_start_sh(env)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # two servers and two runs, in new processes (the cache is read at import)
def test_a_served_hub_model_names_its_commit_and_a_rerun_after_an_update_redoes(
    tmp_path: Path,
) -> None:
    """Regression: a ``--server`` run recorded no commit of the served hub model, so a rerun
    against a server restarted after the model was updated on the hub resumed: one folder,
    two commits' captions, one model named. The server loads its cache's ``main``, names
    that commit in ``/health`` and every answer; the run records it and a rerun against
    another commit redoes the videos."""
    import json
    import os
    import sys
    import urllib.request

    from tests.support.hub import HUB_ID, hub_snapshot

    samples = REPO_ROOT / "sample_videos"
    first, second = "a" * 40, "b" * 40
    cache = tmp_path / "hub"
    hub_snapshot(cache, first)
    env = {"VIDCAP_MODEL": HUB_ID, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"

    def run(server: FlaskServer) -> tuple[list[str | None], str]:
        done = subprocess.run(
            [sys.executable, "-m", "vidcap", "caption", str(samples), "--out", str(out),
             "--server", server.url, "--quiet"],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert {v["model"] for v in summary["videos"]} == {HUB_ID}
        assert {v["precision"] for v in summary["videos"]} == {"float32"}  # as the server said
        return [v.get("revision") for v in summary["videos"]], done.stderr

    server = FlaskServer(tmp_path / "first.log", env=env).start()
    try:
        with urllib.request.urlopen(f"{server.base}/health", timeout=30) as answer:
            assert json.load(answer)["revision"] == first
        revisions, _ = run(server)
    finally:
        server.stop()
    assert revisions == [first] * 2
    hub_snapshot(cache, second)  # the model updated, the server restarted
    server = FlaskServer(tmp_path / "second.log", env=env).start()
    try:
        revisions, stderr = run(server)
    finally:
        server.stop()
    assert revisions == [second] * 2
    assert f"were captioned with revision {first} of {HUB_ID}, not {second}" in stderr
