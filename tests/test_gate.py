"""The TorchServe gate answers instead of waiting (``vidcap.serve.gate``'s stall rule).

Against a scripted upstream on loopback (fast): a request TorchServe never answers gets
503 + ``Retry-After`` after ``upstream_timeout``, a request queued behind a slow but
moving queue waits its turn, and a request lost while later ones are answered gets 503
one timeout after them. Against a real TorchServe (slow): its only worker hung, then
killed, under load from ``RemoteBackend`` clients, costs no frame and no 300 s wait.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from vidcap.serve.config import ServeConfig
from vidcap.serve.gate import GateSettings, Watchdog, serve
from vidcap.wire import encode_image

# --- the rule ---------------------------------------------------------------------------


def test_the_upstream_timeout_is_the_batch_delay_plus_the_batch_allowance() -> None:
    config = ServeConfig.from_sources({}, {"VIDCAP_BATCH_ALLOWANCE": "2.5"})
    settings = GateSettings.from_config("http://127.0.0.1:1/", config, max_batch_delay_ms=50)
    assert settings.upstream_timeout == pytest.approx(2.55)
    assert settings.upstream == "http://127.0.0.1:1"
    default = GateSettings.from_config("http://127.0.0.1:1", ServeConfig())
    assert default.upstream_timeout == pytest.approx(0.1 + ServeConfig().batch_allowance)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_batch_allowance_is_a_usage_error(value: str) -> None:
    from vidcap.errors import UsageError

    with pytest.raises(UsageError, match="VIDCAP_BATCH_ALLOWANCE must be"):
        ServeConfig.from_sources({}, {"VIDCAP_BATCH_ALLOWANCE": value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIDCAP_MAX_FRAMES", "٣٠"),  # Arabic-Indic digits: int() takes them
        ("VIDCAP_MAX_FRAMES", "3_0"),
        ("VIDCAP_MAX_FRAMES", "1.5"),
        ("VIDCAP_READ_TIMEOUT", "inf"),
        ("VIDCAP_READ_TIMEOUT", "1e400"),
        ("VIDCAP_READ_TIMEOUT", "nan"),
        ("VIDCAP_READ_TIMEOUT", "３０"),  # fullwidth digits: float() takes them
    ],
)
def test_server_numbers_are_ascii_and_finite(name: str, value: str) -> None:
    from vidcap.errors import UsageError

    with pytest.raises(UsageError, match=f"^{name} (must be|is out of range)"):
        ServeConfig.from_sources({}, {name: value})


def test_server_numbers_in_plain_notation_are_read() -> None:
    env = {"VIDCAP_MAX_FRAMES": " 30 ", "VIDCAP_READ_TIMEOUT": "2.5e1", "VIDCAP_MAX_DELAY_MS": "+7"}
    config = ServeConfig.from_sources({"request_timeout": 90}, env)
    assert (config.max_frames, config.read_timeout, config.max_delay_ms) == (30, 25.0, 7)
    assert config.request_timeout == 90


def test_the_watchdog_restarts_on_answers_until_a_later_request_is_answered() -> None:
    dog = Watchdog(timeout=1.0)
    first, second, third = dog.start(0.0), dog.start(0.1), dog.start(0.2)
    dog.done(first, answered=True, now=0.9)  # the queue moves: everyone waiting restarts
    assert dog.deadline(second) == dog.deadline(third) == pytest.approx(1.9)
    dog.done(third, answered=True, now=1.5)  # a later one answered: second is in a batch
    assert dog.deadline(second) == pytest.approx(2.5)
    fourth = dog.start(1.6)
    dog.done(fourth, answered=True, now=2.0)  # second gets no more restarts
    assert dog.deadline(second) == pytest.approx(2.5)
    dog.done(second, answered=False, now=2.5)
    assert dog.waiting == {}


# --- against a scripted upstream --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Upstream:
    """A stand-in for TorchServe's inference API, answering as ``answer`` says."""

    def __init__(self, answer: Callable[[web.Request], object]) -> None:
        self.answer = answer
        self.cancelled = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        try:
            return await self.answer(request)  # type: ignore[misc]
        except asyncio.CancelledError:  # the gate closed the connection
            self.cancelled += 1
            raise


class OneWorker:
    """TorchServe's one worker, as the gate's forwarding sees it: requests wait for
    ``release``, then run one at a time (a "batch" of 0.02 s each); ``seen``: the order
    requests reached it; ``inside``: how many are in it now, and most at once."""

    def __init__(self) -> None:
        self.lock, self.release = asyncio.Lock(), asyncio.Event()
        self.seen: list[str] = []
        self.inside = [0, 0]

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers["X-Test"])
        self.inside[0] += 1
        self.inside[1] = max(self.inside)
        try:
            await self.release.wait()
            async with self.lock:
                await asyncio.sleep(0.02)
        finally:
            self.inside[0] -= 1
        return web.json_response({"caption": request.headers["X-Test"]})


async def with_gate(
    upstream: Upstream,
    timeout: float,
    scenario: Callable[[str], object],
    max_client_requests: int = 0,
    max_forwarded: int = 0,
) -> object:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    upstream_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", upstream_port).start()
    settings = GateSettings(
        upstream=f"http://127.0.0.1:{upstream_port}",
        max_request_bytes=2**20,
        read_timeout=5.0,
        request_timeout=60.0,
        upstream_timeout=timeout,
        max_client_requests=max_client_requests,
        max_forwarded=max_forwarded,
    )
    gate_port, stop = free_port(), asyncio.Event()
    gate = asyncio.create_task(serve(settings, "127.0.0.1", gate_port, stop))
    try:
        for _ in range(100):
            try:
                await asyncio.open_connection("127.0.0.1", gate_port)
                break
            except OSError:
                await asyncio.sleep(0.02)
        return await scenario(f"http://127.0.0.1:{gate_port}/predictions/vidcap")  # type: ignore[misc]
    finally:
        stop.set()
        await gate
        await runner.cleanup()


async def post(
    session: aiohttp.ClientSession, url: str, tag: str
) -> tuple[int, dict, str | None, float]:
    started = time.monotonic()
    async with session.post(url, data=b"x", headers={"X-Test": tag}) as answer:
        body = await answer.json(content_type=None)
        return answer.status, body, answer.headers.get("Retry-After"), time.monotonic() - started


def test_a_request_torchserve_never_answers_gets_503_and_retry_after() -> None:
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    upstream = Upstream(never)

    async def scenario(url: str) -> tuple[int, dict, str | None, float]:
        async with aiohttp.ClientSession() as session:
            answer = await post(session, url, "0")
        await asyncio.sleep(0.2)  # the upstream sees its connection closed
        return answer

    status, body, retry_after, seconds = asyncio.run(with_gate(upstream, 0.5, scenario))
    assert status == 503 and retry_after == "1"
    assert "did not answer within 0.5s" in body["error"] and set(body) == {"error"}
    assert 0.5 <= seconds < 5  # the timeout, not the upstream's never (room for a busy CI)
    assert upstream.cancelled == 1


@pytest.mark.heavy
def test_a_request_queued_behind_a_moving_queue_waits_its_turn() -> None:
    lock = asyncio.Lock()

    async def one_at_a_time(request: web.Request) -> web.Response:
        async with lock:  # one worker, one request per "batch" of 0.1 s (a busy CI's loop
            await asyncio.sleep(0.1)  # can pause a while: 0.4 s of slack to the timeout)
        return web.json_response({"caption": request.headers["X-Test"]})

    async def scenario(url: str) -> list[tuple[int, dict, str | None, float]]:
        async with aiohttp.ClientSession() as session:
            sent = []
            for i in range(20):  # queued in the order the gate forwards them
                sent.append(asyncio.create_task(post(session, url, str(i))))
                await asyncio.sleep(0.02)
            return await asyncio.gather(*sent)

    answers = asyncio.run(with_gate(Upstream(one_at_a_time), 0.5, scenario))
    assert [(a[0], a[1]) for a in answers] == [(200, {"caption": str(i)}) for i in range(20)]
    assert max(a[3] for a in answers) > 1.5  # three times the timeout, and still answered


@pytest.mark.heavy
def test_a_client_past_its_share_is_refused_and_another_still_gets_in() -> None:
    """Regression: TorchServe's job queue is first come, first served, so one client
    flooding it got every other client 503. With ``max_client_requests`` the gate refuses
    the client already holding that many, before reading its body, and forwards another
    client's (another peer address) request."""
    release = asyncio.Event()
    seen: list[str] = []

    async def hold(request: web.Request) -> web.Response:
        seen.append(request.headers["X-Test"])
        await release.wait()
        return web.json_response({"caption": request.headers["X-Test"]})

    async def scenario(url: str) -> tuple[list, tuple, tuple, list[str]]:
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession() as busy, aiohttp.ClientSession(connector=other) as quiet:
            held = [asyncio.create_task(post(busy, url, f"busy{i}")) for i in range(3)]
            while len(seen) < 3:
                await asyncio.sleep(0.01)
            refused = await post(busy, url, "busy3")  # after a second: nothing released
            let_in = asyncio.create_task(post(quiet, url, "quiet"))
            while len(seen) < 4:
                await asyncio.sleep(0.01)
            release.set()
            return await asyncio.gather(*held), refused, await let_in, list(seen)

    held, refused, let_in, seen_upstream = asyncio.run(
        with_gate(Upstream(hold), 30.0, scenario, max_client_requests=3)
    )
    assert [(a[0], a[1]) for a in held] == [(200, {"caption": f"busy{i}"}) for i in range(3)]
    status, body, retry_after, seconds = refused
    assert status == 503 and retry_after == "1"
    assert 1.0 <= seconds < 5  # held a second: one resending at once cannot spin the gate
    assert body == {"error": "server busy: 3 requests of this client are already waiting for "
                    "the model; retry later"}  # fmt: skip
    assert (let_in[0], let_in[1]) == (200, {"caption": "quiet"})
    assert sorted(seen_upstream) == ["busy0", "busy1", "busy2", "quiet"]  # busy3 never sent


@pytest.mark.parametrize("max_forwarded", [0, 2])
def test_past_the_forwarding_limit_clients_take_turns(max_forwarded: int) -> None:
    """Regression: TorchServe's job queue is first come, first served, so a client's
    request waited behind everything a busy neighbour had queued (2-3.5 s behind a flood).
    With ``max_forwarded`` the gate forwards that many at once and lets the others wait in
    it, clients taking turns: the quiet client's request goes after one more of the busy
    one's. (Without the limit, the test's check that it does fails: it goes last.)"""
    worker = OneWorker()
    seen, inside, release = worker.seen, worker.inside, worker.release

    async def scenario(url: str) -> tuple[list, tuple]:
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession() as busy, aiohttp.ClientSession(connector=other) as quiet:
            sent = [asyncio.create_task(post(busy, url, f"busy{i}")) for i in range(6)]
            while len(seen) < (max_forwarded or 6):  # the rest waits in the gate
                await asyncio.sleep(0.01)
            late = asyncio.create_task(post(quiet, url, "quiet"))
            await asyncio.sleep(0.5)  # it is in the gate (or upstream) too
            release.set()
            return await asyncio.gather(*sent), await late

    answers, late = asyncio.run(
        with_gate(Upstream(worker.answer), 30.0, scenario, max_forwarded=max_forwarded)
    )
    assert sorted((a[0], a[1]["caption"]) for a in answers) == [(200, f"busy{i}") for i in range(6)]
    assert (late[0], late[1]) == (200, {"caption": "quiet"})
    if max_forwarded:
        assert inside[1] <= max_forwarded
        assert seen.index("quiet") == 3, seen  # busy0, busy1 forwarded; busy2; then quiet
    else:
        assert seen[-1] == "quiet"  # first come, first served


def test_a_request_of_large_frames_is_forwarded_alone_and_holds_another_client_up_once() -> None:
    """Regression (an attack round): the gate counted requests, not what they cost the
    handler to decode, so one address's valid requests of 15 4K frames each, 16 forwarded
    at once, held another address's one small frame 36-73 s. A request counts its pixels'
    share (``decode_weight``): these go alone, and the quiet client's request goes after
    the one inside and one more of the busy client's (it was waiting first)."""
    worker = OneWorker()
    seen, inside, release = worker.seen, worker.inside, worker.release

    large = encode_image(np.zeros((2160, 4096, 3), np.uint8), "png")  # 8.8 Mpx: weight 3
    small = encode_image(np.zeros((224, 224, 3), np.uint8), "png")

    async def send(session: aiohttp.ClientSession, url: str, tag: str, image: bytes) -> str:
        headers = {"X-Test": tag, "Content-Type": "image/png"}
        async with session.post(url, data=image, headers=headers) as answer:
            return (await answer.json(content_type=None))["caption"]

    async def scenario(url: str) -> tuple[list, str]:
        other = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession() as busy, aiohttp.ClientSession(connector=other) as quiet:
            sent = [asyncio.create_task(send(busy, url, f"busy{i}", large)) for i in range(4)]
            while not seen:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # (the others wait in the gate)
            late = asyncio.create_task(send(quiet, url, "quiet", small))
            await asyncio.sleep(0.3)
            release.set()
            return await asyncio.gather(*sent), await late

    answers, late = asyncio.run(with_gate(Upstream(worker.answer), 30.0, scenario, max_forwarded=2))
    assert sorted(answers) == [f"busy{i}" for i in range(4)] and late == "quiet"
    assert inside[1] == 1  # (counted as requests, two went at once)
    assert seen.index("quiet") == 2, seen  # busy0 inside; busy1 waiting first; then quiet


def test_a_text_part_under_another_name_is_refused_as_flask_refuses_it() -> None:
    """Regression (an attack round): ``-F model=/etc/passwd`` beside a frame got Flask's
    415 "part 'model' is not a JPEG or PNG image" but TorchServe's "frame 1 is not a
    decodable JPEG or PNG image" (the handler gets every part as bytes). The gate applies
    the rule that names the part (``protocol.image_parts``), before forwarding."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response([{"caption": "x"}])

    async def scenario(url: str) -> tuple[int, dict]:
        form = aiohttp.FormData()
        form.add_field("frame0", encode_image(np.zeros((8, 8, 3), np.uint8), "png"),
                       filename="f0.png", content_type="image/png")  # fmt: skip
        form.add_field("model", "/etc/passwd")
        async with aiohttp.ClientSession() as session, session.post(url, data=form) as got:
            return got.status, await got.json(content_type=None)

    status, body = asyncio.run(with_gate(Upstream(answer), 30.0, scenario))
    assert (status, body) == (
        415,
        {"error": "part 'model' is not a JPEG or PNG image (got a text or JSON part)"},
    )
    assert not seen


def test_a_setting_header_of_bytes_not_utf8_is_refused_not_forwarded_as_other_text() -> None:
    """Regression (an outside-in round): ``X-Vidcap-Prompt: \\xff\\xfe`` reached TorchServe
    as an empty prompt (no prompt), ``a\\x80b`` as ``ab``, captioned without a word; the
    gate read the header, dropped the bytes aiohttp could not decode, and forwarded the rest.
    It now answers as Flask does (gunicorn reads the bytes as Latin-1, beyond ASCII): 400."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Vidcap-Prompt", ""))
        return web.json_response({"caption": "x"})

    async def scenario(url: str) -> list[bytes]:
        port = int(url.split(":")[2].split("/")[0])
        answers = []
        for value in (b"\xff\xfe", b"a\x80b", b"a photo of"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /predictions/vidcap HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1\r\nConnection: close\r\nX-Vidcap-Prompt: " + value
                + b"\r\n\r\nx"
            )  # fmt: skip
            answers.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
        return answers

    *refused, good = asyncio.run(with_gate(Upstream(answer), 30.0, scenario))
    for answer in refused:
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b'{"error": "X-Vidcap-Prompt holds text beyond ASCII' in answer, answer
    assert good.startswith(b"HTTP/1.1 200 ") and seen == ["a photo of"]


def test_a_request_cut_off_mid_body_gives_its_share_back() -> None:
    """A client that hangs up while sending its body is not counted against its share any
    more: with a share of one request, its next request is let in."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"caption": request.headers["X-Test"]})

    async def scenario(url: str) -> tuple[int, dict, str | None, float]:
        port = int(url.split(":")[2].split("/")[0])
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /predictions/vidcap HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: image/png\r\nContent-Length: 100\r\n\r\n0123456789")  # fmt: skip
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as session:
            return await post(session, url, "after")

    status, body, _, seconds = asyncio.run(
        with_gate(Upstream(answer), 30.0, scenario, max_client_requests=1)
    )
    assert (status, body) == (200, {"caption": "after"}) and seconds < 1.0


def test_the_client_cap_and_forwarding_limit_must_not_be_negative() -> None:
    from vidcap.errors import UsageError

    with pytest.raises(UsageError, match="--max-client-requests must be >= 0"):
        GateSettings.from_config("http://127.0.0.1:1", ServeConfig(), max_client_requests=-1)
    with pytest.raises(UsageError, match="--max-forwarded must be >= 0"):
        GateSettings.from_config("http://127.0.0.1:1", ServeConfig(), max_forwarded=-1)


def test_a_request_lost_while_later_ones_are_answered_gets_503() -> None:
    async def lose_the_first(request: web.Request) -> web.Response:
        if request.headers["X-Test"] == "lost":
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)
        return web.json_response({"caption": "ok"})

    async def scenario(url: str) -> tuple[list, float]:
        async with aiohttp.ClientSession() as session:
            lost = asyncio.create_task(post(session, url, "lost"))
            await asyncio.sleep(0.05)
            later = time.monotonic()
            others = []
            while not lost.done():  # a busy server: answers keep coming, later ones too
                others.append(await post(session, url, "other"))
            return [await lost, *others], time.monotonic() - later

    answers, seconds = asyncio.run(with_gate(Upstream(lose_the_first), 0.6, scenario))
    lost, *others = answers
    assert lost[0] == 503 and lost[2] == "1"
    assert seconds < 0.6 + 4  # one timeout after the first later answer, not never
    assert others and all(a[0] == 200 for a in others)


# --- against TorchServe: its only worker hung, then killed, under load --------------------


@pytest.fixture(scope="module")
def torchserve_one_worker() -> Iterator[object]:
    from tests.support.torchserve import TorchServeInstance

    with tempfile.TemporaryDirectory(prefix="vidcap-gate-") as root:
        instance = TorchServeInstance.launch(
            Path(root),
            {
                "VIDCAP_MODEL": "tiny",
                "NUM_GPUS": "0",
                "NUM_WORKERS": "1",
                "BATCH_SIZE": "4",
                "MAX_BATCH_DELAY_MS": "20",
                "VIDCAP_BATCH_ALLOWANCE": "2",
            },
        )
        try:
            yield instance
        finally:
            instance.stop()


@pytest.mark.slow
def test_a_hung_then_killed_worker_costs_no_frame_and_no_long_wait(
    torchserve_one_worker, tiny_captioner
) -> None:
    import psutil

    from tests.support.servers import make_frames
    from tests.support.torchserve import http
    from vidcap.client import ClientOptions, RemoteBackend
    from vidcap.settings import GenerationSettings
    from vidcap.wire import encode_image

    server = torchserve_one_worker
    size = (64, 64)
    frames = make_frames(8, size, seed=31)
    expected = tiny_captioner.caption(frames, GenerationSettings())
    token = server.key("inference")
    auth = server.auth("inference")
    options = ClientOptions(
        prebatch=2, inflight=2, retries=40, backoff=0.1, backoff_max=1.0, timeout=60.0
    )
    stop = threading.Event()
    failures: list[str] = []
    rounds = [0]

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with RemoteBackend([server.predictions_url], size, options, token=token) as backend:
            while not stop.is_set():
                picks = rng.integers(0, len(frames), 4)
                got = list(backend.caption_stream([frames[i] for i in picks], GenerationSettings()))
                if got != [expected[i] for i in picks]:
                    failures.append(f"wrong captions {got}")
                rounds[0] += 1

    def probe() -> tuple[int, str | None, object, float]:
        image = encode_image(frames[0], "png")
        started = time.monotonic()
        answer = http(
            "POST", server.predictions_url, image, {**auth, "Content-Type": "image/png"}, 60
        )
        seconds = time.monotonic() - started
        return answer.status, answer.headers.get("Retry-After"), answer.body, seconds

    worker = psutil.Process(server.describe()["workers"][0]["pid"])
    with ThreadPoolExecutor(3) as pool:
        clients = [pool.submit(client, seed) for seed in range(3)]
        time.sleep(2.0)
        before = rounds[0]
        worker.suspend()  # hung with its batch: TorchServe would wait responseTimeout (300 s)
        try:
            status, retry_after, body, seconds = probe()
        finally:
            worker.kill()  # TorchServe starts a new one
        time.sleep(1.0)
        deadline = time.monotonic() + 120
        while rounds[0] < before + 6 and time.monotonic() < deadline:  # served again
            time.sleep(0.2)
        stop.set()
        for job in clients:
            job.result(timeout=180)
    assert (status, retry_after) == (503, "1"), (status, retry_after, body)
    assert "the model did not answer within 2.02s" in body["error"], body
    assert seconds < 2.02 + 5  # the allowance after the batch delay, not 300 s
    assert failures == []
    assert rounds[0] >= before + 6, server.log_tail()
    assert server.describe()["workers"][0]["pid"] != worker.pid


def test_a_key_file_read_half_written_keeps_the_keys_last_read(tmp_path: Path) -> None:
    """TorchServe rewrites its key file in place: a read that meets it half-written keeps
    the last keys (it answered 503 "no key yet" to requests during a key renewal)."""
    import json
    import os

    from vidcap.serve.gate import KeyFile

    path = tmp_path / "key_file.json"
    whole = json.dumps({"inference": {"key": "old"}, "API": {"key": "api"}})
    path.write_text(whole)
    keys = KeyFile(path)
    assert keys.key("inference") == "old"
    path.write_text(json.dumps({"inference": {"key": "new"}})[:12])  # torn
    os.utime(path, ns=(1, 1))
    assert keys.key("inference") == "old" and keys.key("API") == "api"
    path.write_text(json.dumps({"inference": {"key": "new"}}))
    assert keys.key("inference") == "new"
    path.unlink()
    assert keys.key("inference") is None  # gone: no key
    assert KeyFile(tmp_path / "never.json").key("inference") is None
