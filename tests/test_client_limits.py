"""The client's checks before any video starts: a ``--prebatch`` over what the server takes
in one request, a URL that answers 200 with no vidcap answer, and the example clients' bad
argument values (usage errors, exit status 2, as ``vidcap caption`` says them).

Real servers on loopback: the Flask server (gunicorn, tiny model) says its limit; Python's
``http.server`` plays a foreign server answering 200 ``text/plain`` (TorchServe's metrics
port does); ``ScriptedServer`` a vidcap server that says no limit, or nothing at all.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import runpy
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_main
from tests.support.servers import REPO_ROOT, FlaskServer, ScriptedServer, free_port, make_frames
from vidcap.client import ClientOptions, RemoteBackend
from vidcap.errors import ServerRejected
from vidcap.server_info import served_model
from vidcap.settings import GenerationSettings

SHAPES = REPO_ROOT / "sample_videos" / "shapes.mp4"
CLIENTS = REPO_ROOT / "clients"
FAST = {"backoff": 0.01, "backoff_max": 0.05, "timeout": 10.0}
LIMIT = 4  # the Flask server's VIDCAP_MAX_FRAMES here
TOO_MANY = (
    f"--prebatch {LIMIT + 1} is more than the server takes in one request ({LIMIT}): "
    f"use --prebatch {LIMIT} or less"
)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# --- 1. --prebatch over the server's max_frames_per_request ------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskServer]:
    logs = tmp_path_factory.mktemp("flask-limits")
    server = FlaskServer(logs / "limited.log", env={"VIDCAP_MAX_FRAMES": str(LIMIT)})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_a_prebatch_over_the_servers_limit_stops_the_run_before_any_video(
    limited: FlaskServer, tmp_path: Path
) -> None:
    """Regression: ``--prebatch 100`` against a server taking 64 frames a request failed
    every video with the server's 413 (exit 1). It is now a usage error in one line, before
    any video starts: no output folder is left."""
    assert limited.health()["max_frames_per_request"] == LIMIT
    out = tmp_path / "pb"
    args = ["caption", SHAPES, "--fps", "4", "--server", limited.url, "--out", out]
    result = run_main(*args, "--prebatch", LIMIT + 1)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [f"vidcap: error: {TOO_MANY}"]
    assert not out.exists()
    # At the limit, the run captions as ever.
    result = run_main(*args, "--prebatch", LIMIT, "--max-frames", 6, "--quiet")
    assert result.returncode == 0, result.stderr
    assert (out / "shapes.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dummydata", "batch", "stream-v2", "putinmask"])
def test_a_client_with_a_prebatch_over_the_limit_is_a_usage_error(
    limited: FlaskServer, name: str
) -> None:
    args = [] if name == "dummydata" else [str(SHAPES)]
    result = run_client(name, *args, "--url", limited.url, "--prebatch", str(LIMIT + 1))
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [f"client_example-{name}.py: error: {TOO_MANY}"]


def test_a_server_that_says_no_limit_takes_any_prebatch() -> None:
    """A server whose info answer names no ``max_frames_per_request`` (an older one): the
    client sends what ``--prebatch`` says, as before."""
    frames = make_frames(5, (16, 16))
    with ScriptedServer(input_size=(16, 16)) as server:
        options = ClientOptions(prebatch=100, **FAST)
        with RemoteBackend.connect(server.url, options) as backend:
            answers = list(backend.caption_stream(frames, GenerationSettings()))
    assert len(answers) == 5 and server.requests == 1


# --- 2. a 200 that is no vidcap answer ------------------------------------------------------


@contextlib.contextmanager
def answering_200(body: bytes, content_type: str = "text/plain") -> Iterator[tuple[str, list[str]]]:
    """A real foreign HTTP server answering every POST with 200 and ``body`` (as
    TorchServe's metrics port does): its ``/metrics`` URL, and the paths POSTed to it."""

    class Metrics(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    posts: list[str] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", posts
    finally:
        server.shutdown()
        server.server_close()


METRICS = b"# HELP ts_inference_requests_total Total requests\nts_inference_requests_total 3\n"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (METRICS, "text/plain"),
        (b"", "text/plain"),
        (b"<html><body><h1>It works!</h1></body></html>", "text/html"),
        (b'{"status": "Healthy"}', "application/json"),  # JSON, but no vidcap answer
    ],
)
def test_a_200_that_is_no_vidcap_answer_is_refused_at_the_start(
    body: bytes, content_type: str
) -> None:
    with answering_200(body, content_type) as (url, _):
        for ask in (
            lambda: RemoteBackend.connect(url, ClientOptions(**FAST), expected_size=(64, 64)),
            lambda: served_model(url),
        ):
            with pytest.raises(ServerRejected) as refused:
                ask()
            message = str(refused.value)
            assert message.startswith(f"{url} answered HTTP 200 with no vidcap answer")
            assert "full endpoint URL" in message and "\n" not in message
            assert "<html" not in message and "<h1>" not in message  # (the page's text)


@pytest.mark.heavy
def test_vidcap_caption_against_a_metrics_port_stops_in_one_line(tmp_path: Path) -> None:
    """Regression: ``--server`` at TorchServe's metrics port (POST → 200, text) warned twice
    that it did not say its input size, then sent every request 6 times over 16 s and
    failed each video with "a bad body: Expecting value…". It now stops at once, in one
    line, with exit status 1 as a 404 or an HTML page does; nothing is sent but the info
    question."""
    out = tmp_path / "d6"
    with answering_200(METRICS) as (url, posts):
        result = run_main("caption", SHAPES, "--server", url, "--out", out)
    assert result.returncode == 1, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(f"vidcap: error: {url} answered HTTP 200 with no vidcap answer")
    assert "ts_inference_requests_total" in line and "did not say" not in result.stderr
    assert len(posts) == 1
    assert not out.exists()


@pytest.mark.heavy
def test_a_server_that_does_not_say_its_size_is_warned_of_once(tmp_path: Path) -> None:
    """A vidcap server too old to answer the info question (400) still captions, with
    ``--model``'s size; its warning is said once, not once per question."""
    with ScriptedServer() as server:
        result = run_main(
            "caption", SHAPES, "--server", server.url, "--out", tmp_path / "old",
            "--max-frames", "2", "--quiet",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("did not say its input size (HTTP 400)") == 1, result.stderr


# --- 3. the example clients' argument values ------------------------------------------------


def run_client(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "VIDCAP_MODEL": "tiny"}
    return subprocess.run(
        [sys.executable, str(CLIENTS / f"client_example-{name}.py"), "--model", "tiny", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def in_process(name: str, *args: str) -> tuple[int, str]:
    """The script's ``main`` here (a subprocess costs ~0.5 s each): exit status, stderr."""
    script = runpy.run_path(str(CLIENTS / f"client_example-{name}.py"))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        script["main"](list(args))
    return exited.value.code, stderr.getvalue()  # type: ignore[return-value]


BAD_VALUES = [
    ("dummydata", ["--frames", "-5"], "--frames must be a whole number >= 1, got -5"),
    ("dummydata", ["--frames", "0"], "--frames must be a whole number >= 1, got 0"),
    ("dummydata", ["--prebatch", "0"], "--prebatch must be a whole number >= 1, got 0"),
    ("dummydata", ["--retries", "-1"], "--retries must be a whole number >= 0, got -1"),
    ("dummydata", ["--inflight", "0"], "--inflight must be a whole number >= 1, got 0"),
    ("batch", ["VIDEO", "--fps", "0"], "--fps must be a number > 0, got 0.0"),
    ("batch", ["VIDEO", "--max-frames", "0"], "--max-frames must be >= 1, got 0"),
    ("batch", ["VIDEO", "--prebatch", "0"], "--prebatch must be a whole number >= 1, got 0"),
    ("stream", ["VIDEO", "--retries", "-1"], "--retries must be a whole number >= 0, got -1"),
    ("stream-v2", ["VIDEO", "--every-n", "0"], "--every-n must be a whole number >= 1, got 0"),
    ("stream-v2", ["VIDEO", "--timeout", "0"], "--timeout must be a number of seconds > 0, got 0.0"),
    ("putinmask", ["VIDEO", "--fps", "0"], "--fps must be a number > 0, got 0.0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "message"), BAD_VALUES)
def test_a_clients_bad_value_is_a_usage_error_before_anything_is_asked(
    name: str, args: list[str], message: str
) -> None:
    """Regression: ``--frames -5`` captioned nothing and exited 0 ("0 noise frames … 0.0
    frames/s"); ``--prebatch 0``, ``--fps 0``, ``--max-frames 0``, ``--retries -1`` exited 1
    (``--fps``, after asking the server). Each is now one line, exit status 2, in
    ``vidcap caption``'s words, before any server is asked (none listens at the URL here)."""
    url = f"http://127.0.0.1:{free_port()}/caption"
    args = [str(SHAPES) if a == "VIDEO" else a for a in args]
    code, stderr = in_process(name, *args, "--url", url, "--model", "tiny")
    assert code == 2, stderr
    assert error_lines(stderr) == [f"{os.path.basename(sys.argv[0])}: error: {message}"]


@pytest.mark.heavy
def test_a_clients_usage_error_is_exit_status_2_as_a_script(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/caption"
    for args, message in (
        (["--frames", "-5"], "--frames must be a whole number >= 1, got -5"),
        (["--prebatch", "0"], "--prebatch must be a whole number >= 1, got 0"),
    ):
        result = run_client("dummydata", "--url", url, *args)
        assert result.returncode == 2, result.stderr
        assert error_lines(result.stderr) == [f"client_example-dummydata.py: error: {message}"]
        assert result.stdout == ""
