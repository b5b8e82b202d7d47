"""``vidcap.client.RemoteBackend`` against real servers on loopback.

The scripted aiohttp server (``tests.support.servers.ScriptedServer``) captions each frame
with a digest of its decoded pixels and misbehaves on cue, so order, exactly-once
delivery, retries and error handling are checked exactly. The Flask server (gunicorn
via ``flask/start.sh``, tiny model) checks that captions equal the embedded run's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.support.servers import (
    FLOOD_BYTES,
    REPO_ROOT,
    FlaskServer,
    ScriptedServer,
    counting,
    free_port,
    make_frames,
    pixel_digest,
)
from vidcap.backend import CaptionFailed, EmbeddedBackend
from vidcap.cli.remote import add_client_arguments, backend_from_args, find_token
from vidcap.client import BUSY_STATUSES, ClientOptions, RemoteBackend
from vidcap.errors import ServerRejected, ServerUnavailable, UsageError, VidcapError
from vidcap.server_url import parse_server_urls
from vidcap.settings import GenerationSettings

SIZE = (64, 64)
DEFAULT = GenerationSettings()
FAST = {"backoff": 0.01, "backoff_max": 0.05, "timeout": 10.0}


def remote(urls: str | list[str], token: str | None = None, **options: object) -> RemoteBackend:
    urls = [urls] if isinstance(urls, str) else urls
    options = ClientOptions(**{"wire_format": "png", **FAST, **options})
    return RemoteBackend(urls, SIZE, options, token=token)


def caption_all(
    backend: RemoteBackend, frames, settings: GenerationSettings = DEFAULT
) -> list[str]:
    return list(backend.caption_stream(frames, settings))


# --- order, formats, settings ------------------------------------------------------------


@pytest.mark.parametrize(("prebatch", "inflight"), [(1, 4), (3, 3), (8, 1)])
def test_captions_come_back_in_frame_order_with_exact_pixels(prebatch: int, inflight: int) -> None:
    frames = make_frames(37, SIZE)
    with (
        ScriptedServer(jitter=0.02) as server,
        remote(server.url, prebatch=prebatch, inflight=inflight) as backend,
    ):
        assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
    assert server.requests == -(-37 // prebatch)
    assert 1 <= server.max_concurrent <= inflight


def test_requests_are_spread_over_endpoints_and_order_kept() -> None:
    frames = make_frames(48, SIZE)
    with ScriptedServer(jitter=0.03) as one, ScriptedServer(jitter=0.03) as two:
        with remote([one.url, two.url], prebatch=2, inflight=2) as backend:
            assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
        assert one.requests > 0 and two.requests > 0
        assert one.answered_frames + two.answered_frames == 48
        assert one.max_concurrent <= 2 and two.max_concurrent <= 2


@pytest.mark.parametrize("prebatch", [1, 4])
@pytest.mark.parametrize(
    "prompt",
    # (one frame a request goes as headers: a prompt no header holds as it is, a line break
    # or a control character, or spaces at either end that a header loses, goes as a form)
    ["a photo of", "une photo d'été", "two\nlines", "a photo of ", " a\tphoto", "a\x7fb"],
)
def test_generation_settings_reach_the_server(prebatch: int, prompt: str) -> None:
    frames = make_frames(5, SIZE)
    settings = GenerationSettings(prompt=prompt, max_new_tokens=7)
    with ScriptedServer() as server, remote(server.url, prebatch=prebatch) as backend:
        assert caption_all(backend, frames, settings) == [
            f"{pixel_digest(f)}|{prompt}" for f in frames
        ]
    if prebatch == 1 and prompt == "a photo of":  # every setting is sent, defaults included
        assert {h["X-Vidcap-Max-New-Tokens"] for h in server.seen_headers} == {"7"}
        assert {h["X-Vidcap-Num-Beams"] for h in server.seen_headers} == {"1"}


def test_frames_not_at_input_size_are_refused_not_resized() -> None:
    frames = make_frames(2, SIZE) + make_frames(1, (90, 120))
    with ScriptedServer() as server, remote(server.url, prebatch=2) as backend:
        with pytest.raises(ValueError, match=r"shape \(90, 120, 3\).*takes \(64, 64, 3\)"):
            caption_all(backend, frames)
    assert server.answered_frames == 2  # the first batch went; the odd frame never did


def test_jpeg_wire_format_is_sent_as_jpeg() -> None:
    frames = make_frames(3, SIZE)
    with ScriptedServer() as server, remote(server.url, wire_format="jpeg", prebatch=1) as backend:
        got = caption_all(backend, frames)
    assert len(got) == 3 and all(len(c) == 12 for c in got)
    assert {h["Content-Type"] for h in server.seen_headers} == {"image/jpeg"}


def test_read_ahead_is_bounded_and_the_stream_is_lazy() -> None:
    frames = make_frames(200, SIZE)
    pulled = [0]
    prebatch, inflight = 2, 2
    bound = prebatch * inflight * 2 * 2 + prebatch  # two endpoints
    with ScriptedServer() as one, ScriptedServer() as two:
        with remote([one.url, two.url], prebatch=prebatch, inflight=inflight) as backend:
            stream = backend.caption_stream(counting(frames, pulled), DEFAULT)
            assert pulled[0] == 0  # nothing read before the first caption is asked for
            worst = 0
            for done, _ in enumerate(stream, start=1):
                worst = max(worst, pulled[0] - done)
    assert pulled[0] == 200
    assert worst <= bound


def test_an_abandoned_stream_is_cancelled_and_the_backend_reusable() -> None:
    frames = make_frames(40, SIZE)
    with ScriptedServer(jitter=0.01) as server, remote(server.url, prebatch=2) as backend:
        stream = backend.caption_stream(iter(frames), DEFAULT)
        first = [next(stream) for _ in range(3)]
        stream.close()
        assert first == [pixel_digest(f) for f in frames[:3]]
        assert caption_all(backend, frames[:5]) == [pixel_digest(f) for f in frames[:5]]


def test_close_is_idempotent_and_a_closed_backend_refuses_work() -> None:
    backend = remote("http://127.0.0.1:9/caption")
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        caption_all(backend, make_frames(1, SIZE))


# --- retries and errors ------------------------------------------------------------------


def test_a_burst_of_503s_is_backed_off_not_turned_into_captions() -> None:
    frames = make_frames(12, SIZE)
    with (
        ScriptedServer(script=["503"] * 6) as server,
        remote(server.url, prebatch=3, retries=7) as backend,
    ):
        got = caption_all(backend, frames)
    assert got == [pixel_digest(f) for f in frames]
    assert server.statuses.count(503) == 6
    assert server.statuses.count(200) == 4  # each batch answered exactly once
    assert server.answered_frames == 12


@pytest.mark.heavy
def test_429_dropped_connections_and_timeouts_are_retried() -> None:
    frames = make_frames(6, SIZE)
    script = ["429", "drop", "slow", "503"]
    with (
        ScriptedServer(script=script, slow_seconds=3) as server,
        remote(server.url, prebatch=6, retries=4, timeout=2.0) as backend,
    ):
        assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
    assert server.requests == 5 and server.answered_frames == 6


def test_a_dead_torchserve_worker_507_is_retried_and_costs_no_frame() -> None:
    frames = make_frames(8, SIZE)
    with (
        ScriptedServer(script=["507", "507"]) as server,
        remote(server.url, prebatch=4, retries=3) as backend,
    ):
        assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
    assert server.statuses.count(507) == 2 and server.answered_frames == 8


def test_an_answer_that_is_not_http_is_retried_then_fails_its_frames_alone() -> None:
    """Regression (an outside-in round): a server (or a proxy before it) answering outside
    HTTP (a ``Content-Length`` of letters, a bad status line) raised aiohttp's
    ``ClientResponseError`` out of the client: the run stopped with it, every video in
    flight failed. It is now "this request failed": retried, then its frames alone fail."""
    frames = make_frames(4, SIZE)
    with (
        ScriptedServer(script=["malformed"]) as server,
        remote(server.url, prebatch=2, retries=2) as backend,
    ):
        assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
    assert server.answered_frames == 4
    with (
        ScriptedServer(script=["malformed"] * 3) as server,
        remote(server.url, prebatch=2, retries=2) as backend,
    ):
        answers = list(backend.caption_stream(iter(frames[:2]), GenerationSettings()))
        assert caption_all(backend, frames[2:]) == [pixel_digest(f) for f in frames[2:]]
    for failed in answers:
        assert isinstance(failed, CaptionFailed), failed
        assert re.fullmatch(
            r"no caption after 2 retries: http://127\.0\.0\.1:\d+/caption answered outside HTTP: Invalid character in "
            r"Content-Length: b'Content-Length: abc'.*",
            failed.reason,
        ), failed


def test_the_retries_help_names_the_retried_answers() -> None:
    parser = argparse.ArgumentParser()
    add_client_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "retries per request on HTTP 408, 429 and 5xx, connection errors and timeouts" in (
        help_text
    )
    assert BUSY_STATUSES == {429, 502, 503, 504}


def test_the_token_comes_from_flag_env_or_a_run_folder(tmp_path: Path) -> None:
    local = ["http://127.0.0.1:8080/predictions/vidcap"]
    run_dir = {"TS_RUN_DIR": str(tmp_path)}
    assert find_token("flag", local, {"VIDCAP_TOKEN": "env", **run_dir}) == "flag"
    assert find_token(None, local, {"VIDCAP_TOKEN": "env", **run_dir}) == "env"
    assert find_token(None, local, run_dir) is None  # no key file there
    # (regression: a CR or LF ended the run in aiohttp's "Forbidden control character"
    # traceback, at the first request)
    with pytest.raises(UsageError, match="--token holds a character a header cannot carry"):
        find_token("abc\r", local, {})
    with pytest.raises(UsageError, match="VIDCAP_TOKEN holds a character"):
        find_token(None, local, {"VIDCAP_TOKEN": "abc\nX-Other: 1"})
    # a run folder's key: tests/test_resilience.py (for its own server only)


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="Salesforce/blip2-opt-2.7b")
    add_client_arguments(parser)
    return parser.parse_args(list(argv))


def test_connect_builds_the_backend_for_the_served_size() -> None:
    options = ClientOptions(**FAST)
    with ScriptedServer(input_size=(32, 48)) as one, ScriptedServer(input_size=(32, 48)) as two:
        with RemoteBackend.connect([one.url, two.url], options, expected_size=(64, 64)) as backend:
            assert backend.input_size == (32, 48)
            frames = make_frames(3, (32, 48))
            assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
        with RemoteBackend.connect(one.url, options) as backend:
            assert backend.input_size == (32, 48)
    with ScriptedServer(input_size=(32, 48)) as one, ScriptedServer(input_size=(64, 64)) as two:
        with pytest.raises(ServerRejected, match="different input sizes"):
            RemoteBackend.connect([one.url, two.url], options)
    with ScriptedServer() as silent:  # says no size: the expected one, else an error
        with RemoteBackend.connect(silent.url, options, expected_size=(8, 8)) as backend:
            assert backend.input_size == (8, 8)
        with pytest.raises(ServerRejected, match="no server said"):
            RemoteBackend.connect(silent.url, options)
    dead = f"http://127.0.0.1:{free_port()}/caption"
    with pytest.raises(ServerUnavailable, match="no server answered"):
        RemoteBackend.connect(dead, options)
    with RemoteBackend.connect(dead, options, expected_size=(8, 8)) as backend:
        assert backend.input_size == (8, 8)  # requests will retry, then fail in one line
    with ScriptedServer(token="s3cret", input_size=(16, 16)) as guarded:
        with RemoteBackend.connect(guarded.url, options, token="s3cret") as backend:
            assert backend.input_size == (16, 16) and backend.token == "s3cret"
            frames = make_frames(2, (16, 16))
            assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]


@pytest.mark.parametrize("said", [(12000, 12000), (0, -5), "64x64", (32.5, 32)])
def test_an_input_size_no_model_has_is_refused_in_one_line(said) -> None:
    """Regression: the client took any two numbers: [12000, 12000] filled its memory (100
    lines of MemoryError), [0, -5] a ZeroDivisionError traceback, and "64x64" was read as
    6×4 frames, captioned and kept."""
    with ScriptedServer(input_size=said) as server:
        with pytest.raises(ServerRejected, match="not an input size"):
            RemoteBackend.connect(server.url, ClientOptions(**FAST))


def test_the_input_size_comes_from_the_server() -> None:
    with ScriptedServer(input_size=(32, 48)) as server:
        backend = backend_from_args(parsed("--server", server.url), (224, 224))
        assert backend is not None
        with backend:
            assert backend.input_size == (32, 48)
        with pytest.raises(
            UsageError,
            match="--model tiny takes 64x64 frames but the server's model takes 32x48",
        ):
            backend_from_args(parsed("--server", server.url, "--model", "tiny"), (64, 64))
    with ScriptedServer() as server:  # a server that does not say: --model's size is kept
        backend = backend_from_args(parsed("--server", server.url), (224, 224))
        assert backend is not None
        with backend:
            assert backend.input_size == (224, 224)


def test_retries_are_bounded_then_a_one_line_error() -> None:
    with ScriptedServer(script=["503"] * 10) as server, remote(server.url, retries=2) as backend:
        with pytest.raises(ServerUnavailable) as caught:
            caption_all(backend, make_frames(2, SIZE))
    message = str(caught.value)
    assert "after 2 retries" in message and "HTTP 503: busy, try later" in message
    assert "\n" not in message
    assert server.requests == 3
    assert isinstance(caught.value, VidcapError)


def test_an_unreachable_server_fails_after_retries_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}/caption"
    with remote(url, retries=2) as backend, pytest.raises(ServerUnavailable, match="Connect"):
        caption_all(backend, make_frames(2, SIZE))


@pytest.mark.parametrize(
    ("action", "message", "requests"),
    [
        ("400", r"HTTP 400: scripted 400", 1),  # the request is wrong: not retried
        ("500", r"no caption after 5 retries: .* HTTP 500: scripted 500", 6),
        ("garbage", r"no caption after 5 retries: .* HTTP 200 with a bad body", 6),
        # JSON nested 100,000 deep: a RecursionError traceback ended the run
        ("deep", r"no caption after 5 retries: .* HTTP 200 with a bad body: nested too deep", 6),
    ],
)
def test_a_failed_request_is_no_caption_for_its_frames(
    action: str, message: str, requests: int
) -> None:
    frames = make_frames(8, SIZE)
    with (
        ScriptedServer(script=[action] * requests) as server,
        remote(server.url, retries=5, prebatch=4) as backend,
    ):
        failed = caption_all(backend, frames[:4])  # one request
        assert caption_all(backend, frames[4:]) == [pixel_digest(f) for f in frames[4:]]
    assert all(isinstance(c, CaptionFailed) for c in failed)
    assert all(re.search(message, c.reason) and "\n" not in c.reason for c in failed)
    assert server.requests == requests + 1


@pytest.mark.parametrize("action", ["flood", "bomb"])
@pytest.mark.heavy
def test_an_endless_reply_is_cut_off_not_read_whole(action: str) -> None:
    """Regression: a reply was read whole before anything looked at it, so a URL that
    streams a large file (3 GB took the client to 9 GB of memory) or sends a gzip bomb could
    fill the client's memory. A reply is read up to 8 MiB, decompressed; a longer one fails
    its request (retried) and the connection is closed; the next request is served."""
    frames = make_frames(8, SIZE)
    with (
        ScriptedServer(script=[action] * 2) as server,
        remote(server.url, retries=1, prebatch=4) as backend,
    ):
        failed = caption_all(backend, frames[:4])
        assert caption_all(backend, frames[4:]) == [pixel_digest(f) for f in frames[4:]]
    assert all(isinstance(c, CaptionFailed) for c in failed)
    assert all("HTTP 200 with a reply longer than 8 MiB" in c.reason for c in failed)
    assert server.requests == 3
    if action == "flood":  # the client hung up early: what it took is about what it read
        assert len(server.flood_sent) == 2
        assert all(sent < FLOOD_BYTES // 4 for sent in server.flood_sent)


def test_a_wrong_endpoint_path_says_so() -> None:
    with ScriptedServer(input_size=SIZE) as server:
        wrong = server.url.replace("/caption", "/nope")
        with pytest.raises(ServerRejected, match="HTTP 404.*full endpoint URL"):
            RemoteBackend.connect(wrong, ClientOptions(**FAST))
        with remote(wrong) as backend:
            [answer] = caption_all(backend, make_frames(1, SIZE))
    assert isinstance(answer, CaptionFailed) and "full endpoint URL" in answer.reason


def test_a_web_server_that_is_no_caption_endpoint_is_refused_at_the_start(tmp_path: Path) -> None:
    """Regression: ``--server`` pointed at a web server that is not vidcap's (Python's
    ``http.server``: POST → 501 with an HTML page) was taken for a server that failed every
    request: each video failed after its retries, each warning an HTML page. The info
    question's 501 (or 405) now refuses it at once, in words, with the endpoint hint."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/caption"
        with pytest.raises(ServerRejected) as refused:
            RemoteBackend.connect(url, ClientOptions(**FAST))
    finally:
        server.shutdown()
        server.server_close()
    message = str(refused.value)
    assert "answered HTTP 501" in message and "Unsupported method ('POST')" in message
    assert "full endpoint URL" in message and "<html" not in message and "<p>" not in message


def test_the_token_is_sent_as_a_bearer_header() -> None:
    frames = make_frames(2, SIZE)
    with ScriptedServer(token="s3cret") as server:
        with remote(server.url, token="s3cret") as backend:
            assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
        with (  # a refused key: no server can caption for this client, the run stops
            remote(server.url, retries=1) as backend,
            pytest.raises(ServerUnavailable, match="HTTP 401: .*--token"),
        ):
            caption_all(backend, frames)


def test_a_dead_endpoint_is_routed_around() -> None:
    dead = f"http://127.0.0.1:{free_port()}/caption"
    frames = make_frames(20, SIZE)
    with (
        ScriptedServer() as alive,
        remote([dead, alive.url], prebatch=2, retries=3, backoff_max=2.0) as backend,
    ):
        assert caption_all(backend, frames) == [pixel_digest(f) for f in frames]
    assert alive.answered_frames == 20


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "at least one endpoint"),
        ("localhost:5000/caption", "bad server URL"),
        ("ftp://host/caption", "bad server URL"),
        ("http://127.0.0.1:5000", "no endpoint path"),
        ("http://127.0.0.1:99999/caption", "bad port"),
        ("http://[::1/caption", "bad server URL .*Invalid IPv6 URL"),  # (was a traceback)
    ],
)
def test_bad_urls_are_usage_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_server_urls(value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"wire_format": "webp"}, "supported values are jpeg, png"),
        ({"prebatch": 0}, "--prebatch must be"),
        ({"inflight": 0}, "--inflight must be"),
        ({"retries": -1}, "--retries must be"),
        ({"timeout": 0}, "--timeout must be"),
    ],
)
def test_bad_options_are_usage_errors(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ClientOptions(**options)


def test_argparse_wiring(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_client_arguments(parser)
    assert backend_from_args(parser.parse_args([]), SIZE) is None
    monkeypatch.setenv("VIDCAP_TOKEN", "from-env")
    args = parser.parse_args(
        ["--server", "http://127.0.0.1:1/a, http://127.0.0.1:2/b", "--prebatch", "3",
         "--inflight", "2", "--wire-format", "png", "--retries", "1", "--timeout", "5"]
    )  # fmt: skip
    backend = backend_from_args(args, SIZE)
    assert backend is not None
    with backend:
        assert backend.urls == ["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]
        assert backend.input_size == SIZE
        assert backend.options == ClientOptions(
            wire_format="png", prebatch=3, inflight=2, retries=1, timeout=5.0
        )
        assert backend.token == "from-env"


# --- against the Flask server (gunicorn, tiny model) --------------------------------------


@pytest.fixture(scope="module")
def flask_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FlaskServer, FlaskServer]]:
    logs = tmp_path_factory.mktemp("flask-logs")
    one, two = FlaskServer(logs / "one.log"), FlaskServer(logs / "two.log")
    try:
        one.start(wait=False)
        two.start(wait=False)
        one.wait_healthy()
        two.wait_healthy()
        yield one, two
    finally:
        one.stop()
        two.stop()


@pytest.fixture(scope="module")
def embedded(tiny_captioner) -> EmbeddedBackend:
    return EmbeddedBackend(tiny_captioner)


SETTINGS = [DEFAULT, GenerationSettings(prompt="a picture of", max_new_tokens=6)]


@pytest.mark.slow
@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "prompt"])
def test_png_over_flask_equals_the_embedded_run(flask_pair, embedded, settings) -> None:
    frames = make_frames(20, SIZE, seed=3)
    expected = list(embedded.caption_stream(frames, settings))
    with remote(flask_pair[0].url, prebatch=4, inflight=2) as backend:
        assert caption_all(backend, frames, settings) == expected


@pytest.mark.slow
def test_two_flask_servers_at_once_equal_the_embedded_run(flask_pair, embedded) -> None:
    frames = make_frames(24, SIZE, seed=4)
    settings = SETTINGS[1]
    expected = list(embedded.caption_stream(frames, settings))
    before = [s.health()["stats"]["frames"] for s in flask_pair]
    with remote([s.url for s in flask_pair], prebatch=2, inflight=2) as backend:
        assert caption_all(backend, frames, settings) == expected
    served = [s.health()["stats"]["frames"] - b for s, b in zip(flask_pair, before, strict=True)]
    assert all(n > 0 for n in served) and sum(served) == 24


@pytest.mark.slow
def test_a_server_restarted_mid_run_is_retried_and_every_frame_captioned_once(
    tmp_path: Path, embedded
) -> None:
    frames = make_frames(24, SIZE, seed=5)
    settings = SETTINGS[1]
    expected = list(embedded.caption_stream(frames, settings))
    server = FlaskServer(tmp_path / "restart.log").start()

    def frames_with_a_crash() -> Iterator[np.ndarray]:
        for i, frame in enumerate(frames):
            if i == 8:
                server.stop(signal.SIGKILL)  # the whole process group, mid-request
                server.start(wait=False)
            yield frame

    try:
        options = {"prebatch": 2, "inflight": 2, "retries": 40, "backoff": 0.1, "backoff_max": 1.0}
        with remote(server.url, **options) as backend:
            got = caption_all(backend, frames_with_a_crash(), settings)
        assert got == expected
        assert server.health()["stats"]["frames"] > 0  # the new process served the rest
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--prompt", "a picture of", "--max-new-tokens", "6"]])
def test_vidcap_caption_with_server_writes_the_same_outputs_as_embedded(
    flask_pair, tmp_path: Path, extra: list[str]
) -> None:
    from tests.support.videos import VideoSpec, constant_rate, write_video
    from vidcap.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    for name, frames in [("clip", 30), ("short", 7), ("longer", 45)]:  # frames of all three
        spec = VideoSpec(name, "libx264", ".mp4", constant_rate(frames, Fraction(10)))  # share
        write_video(folder / f"{name}.mp4", spec)  # requests: the engine's one stream
    common = ["caption", str(folder), "--model", "tiny", "--fps", "5", "--quiet", *extra]
    assert main([*common, "--out", str(tmp_path / "embedded"), "--device", "cpu"]) == 0
    servers = ",".join(s.url for s in flask_pair)
    remote_args = ["--server", servers, "--wire-format", "png", "--prebatch", "2"]
    assert main([*common, "--out", str(tmp_path / "remote"), *remote_args]) == 0

    def outputs(folder: Path) -> list[str]:
        skip = ("summary.json", "index.html")  # about the run and the folder, not the captions
        return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in skip)

    names = outputs(tmp_path / "embedded")
    assert names == outputs(tmp_path / "remote")
    assert {Path(n).suffix for n in names} >= {".jsonl", ".srt", ".vtt"} and len(names) == 9
    for name in names:
        embedded_bytes = (tmp_path / "embedded" / name).read_bytes()
        assert (tmp_path / "remote" / name).read_bytes() == embedded_bytes, name
    if extra:
        return

    def resumed(out: Path, wire_format: str) -> int:
        run_args = [*remote_args[:2], "--wire-format", wire_format, "--prebatch", "2"]
        assert main([*common, "--out", str(out), *run_args]) == 0
        return json.loads((out / "summary.json").read_text())["run"]["resumed"]

    # PNG is lossless (the embedded run's captions): an embedded folder resumes over PNG;
    # JPEG changes captions, so it redoes every video, and PNG after it redoes them again.
    assert resumed(tmp_path / "embedded", "png") == 3
    remote = tmp_path / "remote"
    assert resumed(remote, "jpeg") == 0
    assert resumed(remote, "jpeg") == 3
    assert resumed(remote, "png") == 0


@pytest.fixture(scope="module")
def eight_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 videos of 60 frames at 10 fps: 480 frames at ``--fps 10``, a run long enough on
    one Flask server to be killed in (at 16 frames captioned)."""
    from tests.support.videos import VideoSpec, constant_rate, write_video

    folder = tmp_path_factory.mktemp("eight")
    for number in range(8):
        spec = VideoSpec(f"v{number}", "libx264", ".mp4", constant_rate(60, Fraction(10)))
        write_video(folder / f"v{number}.mp4", spec)
    return folder


def caption_while_killing(
    videos: Path, out: Path, servers: list[FlaskServer], killed: FlaskServer
) -> subprocess.CompletedProcess[str]:
    """``vidcap caption VIDEOS --server`` on ``servers`` (a subprocess: its stderr whole),
    ``killed`` killed (``kill -9``, its whole process group) once it captioned 16 frames."""
    command = [
        sys.executable, "-m", "vidcap", "caption", str(videos), "--out", str(out),
        "--model", "tiny", "--fps", "10", "--retries", "2",
        "--server", ",".join(s.url for s in servers),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        while process.poll() is None and killed.health()["stats"]["frames"] < 16:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before the kill"
        killed.stop(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_the_only_server_killed_mid_run_is_one_line_then_the_stop(
    eight_videos: Path, tmp_path: Path
) -> None:
    """Round 62: each frame request in flight when the server died printed its own warning
    ("8 frames got no caption after 5 retries: …", and "failed: VIDEO: …" for their videos),
    about 17 lines before the stop line. Now one line names the server that went away."""
    server = FlaskServer(tmp_path / "server.log").start()
    out = tmp_path / "out"
    try:
        result = caption_while_killing(eight_videos, out, [server], server)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, result.stderr
        assert server.url in lines[0] and "went away" in lines[0], lines[0]
        assert lines[1].startswith("vidcap: error: no server captioned"), lines[1]
        first = json.loads((out / "summary.json").read_text())["videos"]
        done = {v["video"] for v in first if v["status"] == "done"}
        server.start()  # (the same port) a rerun completes, keeping what was captioned
        again = subprocess.run(
            [*result.args[:-2], "--server", server.url], capture_output=True, text=True,
            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert {v["status"] for v in summary["videos"]} == {"done"}
        assert summary["run"]["resumed"] == len(done)
    finally:
        server.stop()


@pytest.mark.slow
def test_one_of_two_servers_killed_mid_run_is_one_line_and_the_run_goes_on(
    eight_videos: Path, tmp_path: Path
) -> None:
    """Round 62: a run on two servers, one killed, completed saying nothing of it."""
    one, two = FlaskServer(tmp_path / "one.log"), FlaskServer(tmp_path / "two.log")
    try:
        one.start(wait=False)
        two.start()
        one.wait_healthy()
        result = caption_while_killing(eight_videos, tmp_path / "out", [one, two], one)
        assert result.returncode == 0, result.stderr
        warned = [line for line in result.stderr.splitlines() if "WARNING" in line]
        assert len(warned) == 1, result.stderr
        assert one.url in warned[0] and two.url not in warned[0], warned[0]
        assert "went away" in warned[0] and "the run goes on" in warned[0], warned[0]
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert {v["status"] for v in summary["videos"]} == {"done"}
    finally:
        one.stop()
        two.stop()


# --- against TorchServe: test_torchserve.py's
# test_the_client_over_torchserve_equals_the_embedded_run (on that module's server: a
# TorchServe start is half a minute on 2 cores)


# --- the example clients ----------------------------------------------------------------

CLIENTS = REPO_ROOT / "clients"
SCRIPTS = ["dummydata", "batch", "stream", "stream-v2", "putinmask"]


def run_client(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = CLIENTS / f"client_example-{name}.py"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_client_has_help_with_url_and_only_the_options_it_uses(name: str) -> None:
    # The script's main() in this process (a subprocess each costs ~0.5 s); scripts run as
    # scripts, with their exit status and errors: test_a_client_reports_an_unreachable_server_…
    script = runpy.run_path(str(CLIENTS / f"client_example-{name}.py"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exited:
        script["main"](["--help"])
    assert exited.value.code == 0
    help_text = stdout.getvalue()
    assert "--url" in help_text
    assert ("--prebatch" in help_text) is (name != "stream")  # one frame per request
    assert ("--inflight" in help_text) is (name != "batch")  # one request at a time


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.videos import VideoSpec, constant_rate, write_video

    spec = VideoSpec("short", "libx264", ".mp4", constant_rate(20, Fraction(10)))
    return write_video(tmp_path_factory.mktemp("short") / "short.mp4", spec)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "args", "frames"),
    [
        ("dummydata", ["--frames", "10"], 10),
        ("batch", ["VIDEO", "--fps", "5", "--prebatch", "4"], 10),
        ("stream", ["VIDEO", "--fps", "5", "--inflight", "3"], 10),
        ("stream-v2", ["VIDEO", "--fps", "5", "--wire-format", "png"], 10),
        ("putinmask", ["VIDEO", "--fps", "5", "--query", "circle"], 10),
    ],
)
def test_clients_caption_on_the_flask_server(
    flask_pair, short_video: Path, name: str, args: list[str], frames: int
) -> None:
    args = [str(short_video) if a == "VIDEO" else a for a in args]
    result = run_client(name, *args, "--url", flask_pair[0].url, "--model", "tiny")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(rf"\b{frames} (noise )?frames .* [\d.]+ frames/s", summary), summary
    if name == "putinmask":
        assert re.search(rf"^mask: [01]{{{frames}}}$", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.heavy
def test_a_client_reports_an_unreachable_server_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/caption"
    result = run_client(
        "dummydata", "--url", url, "--frames", "2", "--retries", "1", "--model", "tiny"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no server captioned")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["batch", "putinmask"])
def test_a_client_checks_its_video_before_loading_or_asking_anything(
    name: str, tmp_path: Path
) -> None:
    """Regression: ``client_example-putinmask.py missing.mp4`` (no ``--url``: the model in
    its process) loaded BLIP-2 before finding the file missing — a minute on a GPU, or the
    model's error where the file's belonged. The VIDEO argument is checked first."""
    script = runpy.run_path(str(CLIENTS / f"client_example-{name}.py"))
    for video, reason in ((tmp_path / "missing.mp4", "no such file"),
                          (tmp_path, "is a folder, not a video")):  # fmt: skip
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
            # (the hub's BLIP-2, not cached here: loading it would fail with its own error)
            script["main"]([str(video), "--url", f"http://127.0.0.1:{free_port()}/caption"]
                           if name == "batch" else [str(video)])  # fmt: skip
        assert exited.value.code == 2
        assert f"error: argument video: {video}: {reason}" in stderr.getvalue()
