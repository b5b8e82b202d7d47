"""A ``--server`` run under failing servers, rotating keys and hostile neighbours (#20).

Stub servers (aiohttp, loopback, in this process) speak the wire protocol and fail on cue:
for the frames of one video only (500, 507, a dropped connection), for every request once
the test says so, or by refusing a key as TorchServe 0.12 does (HTTP 400). Each run must
fail only the video that got no caption, list every video it began in ``summary.json``,
re-read a key from its run folder when it stops working, and send a key nowhere but where
it belongs. The slow tests start a real TorchServe (a worker killed mid-run) and a local
Ray cluster (loopback only, private files).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from aiohttp import web

from tests.support.servers import make_frames, pixel_digest, read_wire, run_to_end
from tests.support.videos import read_jsonl
from vidcap import wire
from vidcap.backend import CaptionFailed
from vidcap.cli import main
from vidcap.cli.remote import find_token
from vidcap.client import ClientOptions, RemoteBackend
from vidcap.errors import BadRequest
from vidcap.model import model_input_size
from vidcap.settings import GenerationSettings
from vidcap.torchserve_key import TorchServeKey

SIZE = model_input_size("tiny")
FAST = ClientOptions(prebatch=2, inflight=2, retries=3, backoff=0.01, backoff_max=0.05)
KEY_REFUSED = (
    "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
)
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def colour_of(rgb: np.ndarray) -> str:
    """Which of ``COLOURS`` a decoded frame is (the videos are one colour each)."""
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda name: float(np.abs(mean - COLOURS[name]).sum()))


def write_coloured(path: Path, colour: str, frames: int = 12) -> Path:
    """An H.264 MP4 of ``frames`` frames at 10 fps, all of one colour."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            rgb = np.empty((48, 64, 3), dtype=np.uint8)
            rgb[:] = COLOURS[colour]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("coloured")
    for colour in COLOURS:
        write_coloured(folder / f"{colour}.mp4", colour)
    return folder


# --- a stub server ------------------------------------------------------------------------


@dataclass
class Stub:
    """``POST /predict`` on a free loopback port, in a thread of this process.

    Answers the info question (``model``, ``input_size``); captions each frame with the
    digest of its pixels. ``key``: the key it takes, refused as TorchServe does (400);
    ``fail``: colour → ``500``/``507``/``drop`` for frames of that colour, ``fails`` times
    per request (``None``: always); ``down``: refuse every request with a closed port;
    ``redirect``: answer 307 to that URL; ``hang``: caption requests (counted from 1) never
    answered, as TorchServe never answers a request whose worker was killed. ``down_after``:
    the server goes away after that many caption requests (the next one's connection is
    dropped and the port closed). ``seen``: every request's headers. Every caption answer
    names ``model`` (``X-Vidcap-Model``) and ``revision`` when set (``X-Vidcap-Revision``);
    ``switch_after``: after that many caption requests it is restarted with ``other-model``,
    as an operator might mid-run; ``update_after``: with revision ``updated`` of its model;
    ``precision``: the dtype it says (info and ``X-Vidcap-Precision``), ``bfloat16`` after
    ``recast_after`` caption requests (restarted with another ``VIDCAP_DTYPE``).
    """

    model: str = "stub-model"
    key: str | None = None
    fail: dict[str, str] = field(default_factory=dict)
    fails: int | None = None
    redirect: str | None = None
    hang: set[int] = field(default_factory=set)
    down_after: int | None = None
    switch_after: int | None = None
    revision: str | None = None
    update_after: int | None = None
    precision: str | None = None
    recast_after: int | None = None
    seen: list[dict[str, str]] = field(default_factory=list)
    colours: set[str] = field(default_factory=set)
    statuses: list[int] = field(default_factory=list)
    caption_requests: int = 0
    port: int = 0
    _failed: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/predict"

    def __enter__(self) -> Stub:
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the port: from now on connections are refused."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _serve(self, started: threading.Event) -> None:
        run_to_end(self._loop, self._main(started))

    async def _main(self, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/predict", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.headers))
        response = await self._answer(request)
        self.statuses.append(response.status)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if self.redirect:
            await request.read()
            raise web.HTTPTemporaryRedirect(self.redirect)
        if self.key and request.headers.get("Authorization") != f"Bearer {self.key}":
            await request.read()
            body = {"code": 400, "type": "InvalidKeyException", "message": KEY_REFUSED}
            return web.json_response(body, status=400)
        if request.headers.get("X-Vidcap-Info") and not await request.read():
            info = {"model": self.model, "input_size": list(SIZE), "revision": self.revision}
            if self.precision:
                info["precision"] = self.precision
            return web.json_response(info)
        self.caption_requests += 1
        if self.switch_after is not None and self.caption_requests > self.switch_after:
            self.model = "other-model"
        if self.update_after is not None and self.caption_requests > self.update_after:
            self.revision = "updated"
        if self.recast_after is not None and self.caption_requests > self.recast_after:
            self.precision = "bfloat16"
        if self.down_after is not None and self.caption_requests > self.down_after:
            self._stop.set()  # (the port closes; this connection goes now)
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=599)
        frames, fields, batched = await read_wire(request)
        if self.caption_requests in self.hang:
            await asyncio.sleep(3600)
        try:
            job = wire.build_request(frames, fields, batched, wire.WireLimits())
        except BadRequest as exc:
            return web.json_response(wire.error_response(str(exc)), status=exc.status)
        colours = {colour_of(image) for image in job.images}
        self.colours |= colours
        actions = [self.fail[c] for c in colours if c in self.fail]
        if actions and (self.fails is None or self._failed < self.fails):
            self._failed += 1
            if actions[0] == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=599)
            message = {"500": "the model failed on this request", "507": "Worker died."}
            return web.json_response({"error": message[actions[0]]}, status=int(actions[0]))
        captions = [pixel_digest(image) for image in job.images]
        named = {"X-Vidcap-Model": self.model}
        if self.revision:
            named["X-Vidcap-Revision"] = self.revision
        if self.precision:
            named["X-Vidcap-Precision"] = self.precision
        return web.json_response(wire.caption_response(captions, job.batched), headers=named)


def caption_run(folder: Path, out: Path, url: str, *extra: str) -> tuple[int, dict]:
    """``vidcap caption FOLDER --server URL`` in this process: (exit code, summary.json)."""
    code = main(
        ["caption", str(folder), "--out", str(out), "--fps", "5", "--quiet", "--server", url]
        + ["--prebatch", "2", "--retries", "1", "--decode-workers", "1", "--timeout", "20"]
        + [*extra]
    )
    return code, json.loads((out / "summary.json").read_text())


def by_name(summary: dict) -> dict[str, dict]:
    return {v["name"]: v for v in summary["videos"]}


# --- item 3: a request that keeps failing fails its video, not the run ----------------------


@pytest.mark.parametrize("answer", ["500", "507", "drop"])
@pytest.mark.heavy
def test_a_video_the_server_keeps_failing_fails_alone(
    three_videos: Path, tmp_path: Path, answer: str
) -> None:
    with Stub(fail={"green": answer}) as stub:
        code, summary = caption_run(three_videos, tmp_path, stub.url)
    videos = by_name(summary)
    assert code == 1  # a video failed
    assert videos["red"]["status"] == videos["blue"]["status"] == "done"
    assert videos["red"]["frames"] == videos["blue"]["frames"] == 6
    failed = videos["green"]
    assert failed["status"] == "failed" and "no caption for frame" in failed["error"]
    expected = {"500": "HTTP 500", "507": "HTTP 507", "drop": "Disconnected"}[answer]
    assert expected in failed["error"] and "after 1 retry" in failed["error"]
    assert (tmp_path / "red.jsonl").is_file() and not (tmp_path / "green.jsonl").exists()
    assert summary["totals"] == {**summary["totals"], "done": 2, "failed": 1}


@pytest.mark.heavy
def test_a_password_in_a_server_url_is_sent_but_never_written(
    three_videos: Path, tmp_path: Path, capsys
) -> None:
    """Regression: ``--server http://user:password@host/…`` (a server behind a proxy asking
    for Basic authorization) put the password into every warning, ``summary.json``, the
    resume records and the report page; with ``--token`` too, aiohttp refused the request
    with a traceback. The credentials go in the Authorization header only; every line
    names the URL without them; with a token as well it is a usage error."""
    import base64

    with Stub(fail={"green": "500"}) as stub:
        url = stub.url.replace("http://", "http://ann:s3cret%40pw@")
        code, summary = caption_run(three_videos, tmp_path / "out", url)
        both = ["caption", str(three_videos), "--out", str(tmp_path / "out2"), "--server", url]
        assert main([*both, "--token", "t0ken", "--quiet"]) == 2
    assert "one Authorization header; give one of the two" in capsys.readouterr().err
    assert code == 1 and by_name(summary)["red"]["status"] == "done"
    basic = "Basic " + base64.b64encode(b"ann:s3cret@pw").decode()
    assert {seen.get("Authorization") for seen in stub.seen} == {basic}
    assert stub.url in by_name(summary)["green"]["error"]  # named, without the credentials
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert written and not [p for p in written if b"s3cret" in p.read_bytes()]


@pytest.mark.heavy
def test_a_server_that_fails_everything_stops_the_run_not_one_video_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that answers 500 to every request (its model broken) stops the run after
    ``FAILING_VIDEOS_STOP`` videos in a row got no caption: not every video failed one by
    one after its retries. Videos captioned before stay done; a rerun resumes."""
    from vidcap.engine import FAILING_VIDEOS_STOP

    folder = tmp_path / "in"
    folder.mkdir()
    count = FAILING_VIDEOS_STOP + 8
    write_coloured(folder / "a-first.mp4", "blue", frames=4)
    for i in range(count):
        write_coloured(folder / f"red{i:02d}.mp4", "red", frames=4)
    with Stub(fail={"red": "500"}) as stub:
        code, summary = caption_run(folder, tmp_path / "out", stub.url)
        attempted = {v["name"] for v in summary["videos"]}
        requests = stub.caption_requests
    assert code == 1
    assert "stopped: the last 16 videos got no caption" in capsys.readouterr().err
    videos = by_name(summary)
    assert videos["a-first"]["status"] == "done"
    failed = [v for v in videos.values() if v["status"] == "failed"]
    assert len(failed) < count and len(attempted) < count + 1  # stopped early
    assert requests < 2 * 2 * count  # fewer than every video's requests with a retry each
    assert all("HTTP 500" in v["error"] or "stopped" in v["error"] for v in failed)
    with Stub() as healthy:  # the server mended: the rerun does the rest, the done one kept
        code, summary = caption_run(folder, tmp_path / "out", healthy.url)
    assert code == 0 and summary["run"]["resumed"] == 1
    assert {v["status"] for v in summary["videos"]} == {"done"}


@pytest.mark.heavy
def test_a_server_restarted_with_another_model_stops_the_run_never_mixing_captions(
    three_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: a server restarted with another model in the middle of a run (an operator
    rolling out a new checkpoint) went on answering, and the rest of the run's captions came
    from the other model, recorded as the first one's. Every answer names its model; one
    that is not the run's stops the run (nothing of it written as done); a rerun captions
    every video with the model then served."""
    with Stub(switch_after=3) as stub:
        code, summary = caption_run(three_videos, tmp_path / "out", stub.url)
    assert code == 1
    err = capsys.readouterr().err
    assert "now answers with the captions of other-model, not of stub-model" in err
    videos = by_name(summary)
    assert {v["status"] for v in videos.values()} <= {"done", "failed"}
    assert any(v["status"] == "failed" for v in videos.values())
    for video in videos.values():  # a done video's captions are all stub-model's
        assert video["status"] != "done" or video["model"] == "stub-model"
    with Stub(model="other-model") as other:
        code, summary = caption_run(three_videos, tmp_path / "out", other.url)
    assert code == 0 and summary["run"]["resumed"] == 0  # every video again, with it
    assert {v["model"] for v in summary["videos"]} == {"other-model"}


def test_one_of_several_servers_restarted_with_another_model_is_left_and_the_run_goes_on(
    three_videos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: one endpoint of several restarted with another model stopped the whole
    run (the videos in flight recorded failed, to redo) while the others still served the
    run's model. Its answer is dropped, that server is no longer used (one warning line),
    and its frames go to the others: every video done, all with the run's model."""
    with Stub(switch_after=1) as switched, Stub() as steady:
        code, summary = caption_run(three_videos, tmp_path / "out", f"{switched.url},{steady.url}")
        after_switch = switched.caption_requests
    assert code == 0, caplog.text
    err = caplog.text
    assert f"{switched.url} now answers with the captions of other-model, not of stub-model" in err
    assert "that server is no longer used: the run goes on with the 1 other" in err
    assert switched.model == "other-model" and after_switch >= 2  # it did answer, once changed
    videos = by_name(summary)
    assert {v["status"] for v in videos.values()} == {"done"}
    assert {v["model"] for v in videos.values()} == {"stub-model"}
    for name, video in videos.items():  # every frame, each captioned by the steady server
        rows = read_jsonl(tmp_path / "out" / f"{name}.jsonl")
        assert len(rows) == video["frames"] and len({r["frame"] for r in rows}) == len(rows)


@pytest.mark.heavy
def test_a_server_restarted_with_another_commit_stops_the_run_and_the_rerun_redoes_it(
    three_videos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: a ``--server`` run recorded no commit of the served hub model, and a
    server restarted after the model was updated on the hub (the same name, other
    weights) went on answering: one folder held two commits' captions as one model. The
    servers name their commit; an answer of another stops the run, the rerun redoes the
    videos of the old commit."""
    with Stub(revision="first", update_after=3) as stub:
        code, summary = caption_run(three_videos, tmp_path / "mid-run", stub.url)
    assert code == 1
    assert "now answers with revision updated of stub-model, not first" in capsys.readouterr().err
    videos = by_name(summary)
    assert any(v["status"] == "failed" for v in videos.values())
    assert all(v["revision"] == "first" for v in videos.values() if v["status"] == "done")
    with Stub(revision="first") as stub:  # a whole run, then the model updated
        code, summary = caption_run(three_videos, tmp_path / "out", stub.url)
    assert code == 0 and {v["revision"] for v in summary["videos"]} == {"first"}
    with Stub(revision="updated") as updated:
        code, summary = caption_run(three_videos, tmp_path / "out", updated.url)
    assert code == 0 and summary["run"]["resumed"] == 0  # the first commit's videos redone
    assert {v["revision"] for v in summary["videos"]} == {"updated"}
    assert "3 videos of" in caplog.text
    assert "were captioned with revision first of stub-model, not updated" in caplog.text


@pytest.mark.heavy
def test_a_server_restarted_in_another_precision_stops_the_run_never_misrecording_it(
    three_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (outside-in round 61): a server restarted with another ``VIDCAP_DTYPE``
    mid-run (float32, then bfloat16: 8 of 20 test videos' captions differ with the tiny
    model) went on answering, and every video's record said the precision of the start:
    exit 0, and the rerun kept them. Every answer names its precision; one that no server
    said at the start stops the run like another model; the rerun records the new one."""
    with Stub(precision="float32", recast_after=3) as stub:
        code, summary = caption_run(three_videos, tmp_path / "out", stub.url)
    assert code == 1
    assert "now answers with stub-model in bfloat16, not float32" in capsys.readouterr().err
    videos = by_name(summary)
    assert any(v["status"] == "failed" for v in videos.values())
    assert all(v["precision"] == "float32" for v in videos.values() if v["status"] == "done")
    with Stub(precision="bfloat16") as recast:
        code, summary = caption_run(three_videos, tmp_path / "out", recast.url)
    assert code == 0 and {v["status"] for v in summary["videos"]} == {"done"}
    done_before = {n for n, v in videos.items() if v["status"] == "done"}
    for name, video in by_name(summary).items():  # (a journal's float32 captions: both)
        expected = {"float32"} if name in done_before else {"bfloat16", "bfloat16,float32"}
        assert video["precision"] in expected


@pytest.mark.heavy
def test_a_request_that_fails_once_is_retried_and_costs_nothing(
    three_videos: Path, tmp_path: Path
) -> None:
    with Stub(fail={"green": "500", "blue": "drop"}, fails=1) as stub:
        code, summary = caption_run(three_videos, tmp_path, stub.url)
    assert code == 0
    assert {v["status"] for v in summary["videos"]} == {"done"}
    assert stub.statuses.count(500) + stub.statuses.count(599) == 1


@pytest.mark.heavy
def test_servers_gone_stop_the_run_with_every_video_begun_listed(
    three_videos: Path, tmp_path: Path
) -> None:
    with Stub(down_after=2) as stub:  # 9 requests would caption every frame
        code, summary = caption_run(three_videos, tmp_path, stub.url)
    assert code == 1
    videos = by_name(summary)
    assert stub.colours <= set(videos)  # every video whose frames went out is listed
    assert {v["status"] for v in videos.values()} <= {"done", "failed"}
    assert any(v["status"] == "failed" for v in videos.values())


@pytest.mark.heavy
def test_a_request_never_answered_is_sent_again_alongside(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vidcap import client

    monkeypatch.setattr(client, "STALL_MIN_ANSWERS", 2)
    monkeypatch.setattr(client, "STALL_FLOOR_S", 2.0)  # (a busy CI: not a normal answer)
    frames = make_frames(12, SIZE)
    options = ClientOptions(prebatch=2, inflight=1, timeout=60)
    with Stub(hang={3}) as stub, RemoteBackend([stub.url], SIZE, options) as backend:
        started = time.monotonic()
        got = list(backend.caption_stream(frames, GenerationSettings()))
        seconds = time.monotonic() - started
    assert got == [pixel_digest(f) for f in frames]
    assert stub.caption_requests == 7 and seconds < 10  # not the 60 s of --timeout


# --- #16 item 8: the served model names the outputs ----------------------------------------


@pytest.mark.heavy
def test_the_served_model_names_the_outputs_and_keys_resume(
    three_videos: Path, tmp_path: Path
) -> None:
    with Stub(model="served-model") as stub:
        code, summary = caption_run(three_videos, tmp_path, stub.url)
        assert code == 0
        assert {v["model"] for v in summary["videos"]} == {"served-model"}
        before = stub.caption_requests
        code, summary = caption_run(three_videos, tmp_path, stub.url)  # the same server
        assert code == 0 and stub.caption_requests == before  # resumed: nothing sent
        assert summary["run"]["resumed"] == 3
    with Stub(model="another-model") as other:  # another model at the same --server flags
        code, summary = caption_run(three_videos, tmp_path, other.url)
    assert code == 0 and other.caption_requests > 0 and summary["run"]["resumed"] == 0
    assert {v["model"] for v in summary["videos"]} == {"another-model"}


# --- items 4 and 7: keys ------------------------------------------------------------------


@pytest.fixture
def gate_process() -> Iterator[subprocess.Popen]:
    """A live process whose command line names the gate, standing in for a running server."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "vidcap.serve.gate"]
    )
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"vidcap.serve.gate" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd its command
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


def run_folder(folder: Path, key: str, address: str, gate_pid: int) -> Path:
    """What ``torchserve/start.sh`` leaves in its run folder that the client reads."""
    folder.mkdir(exist_ok=True)
    keys = {"management": {"key": "m-" + key}, "inference": {"key": key}}
    (folder / "key_file.json").write_text(json.dumps(keys))
    (folder / "inference_url").write_text(address + "\n")
    (folder / "gate.pid").write_text(f"{gate_pid}\n")
    return folder


def test_a_run_folder_key_goes_to_its_own_server_only(
    tmp_path: Path, gate_process: subprocess.Popen
) -> None:
    frames = make_frames(4, SIZE)
    with Stub(key="k1") as server, Stub() as recorder:
        folder = run_folder(
            tmp_path / "run", "k1", f"http://127.0.0.1:{server.port}", gate_process.pid
        )
        env = {"TS_RUN_DIR": str(folder)}
        key = find_token(None, [server.url, recorder.url], env)
        assert isinstance(key, TorchServeKey) and key.key == "k1"
        assert find_token(None, [recorder.url], env) is None  # another port: no key at all
        assert find_token(None, [server.url.replace("127.0.0.1", "localhost")], env) is None
        with RemoteBackend([server.url, recorder.url], SIZE, FAST, token=key) as backend:
            got = list(backend.caption_stream(frames * 4, GenerationSettings()))
        assert got == [pixel_digest(f) for f in frames * 4]
        assert server.caption_requests and recorder.caption_requests  # both captioned
        assert {h.get("Authorization") for h in server.seen} == {"Bearer k1"}
        assert all("Authorization" not in h for h in recorder.seen)
        # a key given with --token or $VIDCAP_TOKEN goes to the URLs given, and no further
        server.redirect = recorder.url
        seen = len(recorder.seen)
        with RemoteBackend([server.url], SIZE, FAST, token="given") as backend:
            [answer] = list(backend.caption_stream(frames[:1], GenerationSettings()))
        assert isinstance(answer, CaptionFailed) and "HTTP 307" in answer.reason
        assert len(recorder.seen) == seen  # the redirect was not followed


def test_a_run_folder_key_needs_its_server_running(
    tmp_path: Path, gate_process: subprocess.Popen
) -> None:
    url = "http://127.0.0.1:8080/predictions/vidcap"
    folder = run_folder(tmp_path / "run", "k1", "http://0.0.0.0:8080", gate_process.pid)
    key = TorchServeKey(folder).read()
    assert key.for_url(url) == "k1"  # bound to every interface: reached on loopback
    assert key.for_url("http://127.0.0.1:8081/predictions/vidcap") is None
    gate_process.kill()
    gate_process.wait(10)
    assert TorchServeKey(folder).read().key is None  # a stale folder: its port may be anyone's
    not_the_gate = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)  # past its exec
    try:
        run_folder(folder, "k1", "http://127.0.0.1:8080", not_the_gate.pid)
        assert TorchServeKey(folder).read().key is None
    finally:
        not_the_gate.kill()
        not_the_gate.wait(10)


def test_a_key_renewed_mid_run_is_reread_from_the_run_folder(
    tmp_path: Path, gate_process: subprocess.Popen
) -> None:
    frames = make_frames(24, SIZE)
    with Stub(key="old") as server:
        folder = run_folder(
            tmp_path / "run", "old", f"http://127.0.0.1:{server.port}", gate_process.pid
        )
        key = find_token(None, [server.url], {"TS_RUN_DIR": str(folder)})
        assert isinstance(key, TorchServeKey)

        def frames_with_a_new_key() -> Iterator[np.ndarray]:
            for i, frame in enumerate(frames):
                if i == 8:  # as stop.sh && start.sh, or an expiry renewed by the server
                    run_folder(folder, "new", f"http://127.0.0.1:{server.port}", gate_process.pid)
                    server.key = "new"
                yield frame

        with RemoteBackend([server.url], SIZE, FAST, token=key) as backend:
            got = list(backend.caption_stream(frames_with_a_new_key(), GenerationSettings()))
    assert got == [pixel_digest(f) for f in frames]
    assert 400 in server.statuses  # the old key was refused, then the new one read
    assert server.seen[-1]["Authorization"] == "Bearer new"


def test_a_refused_key_is_one_error_before_any_video(three_videos: Path, tmp_path: Path) -> None:
    with Stub(key="another") as server:
        code = main(
            ["caption", str(three_videos), "--out", str(tmp_path), "--quiet"]
            + ["--server", server.url, "--token", "given"]
        )
    assert code == 1 and not (tmp_path / "summary.json").exists()


# --- item 9: the prompt cache is bounded ---------------------------------------------------


def test_the_prompt_cache_keeps_the_prompts_used_last(
    tiny_captioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidcap import model

    monkeypatch.setattr(model, "PROMPT_CACHE_SIZE", 3)
    cache = tiny_captioner._prompt_ids
    cache.clear()
    for prompt in ["a", "b", "c", "a", "d", "e"]:  # "a" used again: kept over "b" and "c"
        ids = tiny_captioner._prompt_inputs(f"prompt {prompt}", 2)
        assert ids["input_ids"].shape[0] == 2
    assert list(cache) == ["prompt a", "prompt d", "prompt e"]
    assert model.PROMPT_CACHE_SIZE == 3 and len(cache) == 3
    monkeypatch.undo()
    for i in range(model.PROMPT_CACHE_SIZE + 5):
        tiny_captioner._prompt_inputs(f"prompt number {i}", 1)
    assert len(cache) == model.PROMPT_CACHE_SIZE == 64
    cache.clear()


# --- slow: a real TorchServe, a real Ray cluster --------------------------------------------


def worker_cpu(pid: int) -> float:
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


# Copies of each of the 4 videos: a run long enough for two kills. The kills come within
# about a second of the first caption (a busy worker is looked for every 0.5 s); after the
# first, the one worker left has the rest of the run to do alone, so 8 copies (32 videos,
# some 800 frames) leave it busy for seconds more even on an idle machine. (16 copies
# doubled the run, the half after the kills, for nothing more checked.)
COPIES = 8


@pytest.mark.slow
def test_torchserve_worker_kills_during_a_caption_run_lose_no_frame(
    tmp_path: Path, generated_videos
) -> None:
    """``vidcap caption --server`` on a 2-worker TorchServe, a worker killed twice mid-run:
    every video done, outputs equal to the embedded run's, the key found in the run folder."""
    import shutil

    import psutil

    from tests.support.torchserve import TorchServeInstance

    folder, originals = tmp_path / "videos", tmp_path / "originals"
    folder.mkdir()
    originals.mkdir()
    for name in ("h264-mp4", "vfr-mp4", "mpeg4-avi", "vp9-webm"):
        path, _ = generated_videos[name]
        shutil.copy(path, originals / path.name)
        for copy in range(COPIES):
            shutil.copy(path, folder / f"{copy}-{path.name}")
    common = ["--model", "tiny", "--fps", "10", "--quiet"]
    embedded = ["caption", str(originals), *common, "--out", str(tmp_path / "embedded")]
    assert main([*embedded, "--device", "cpu"]) == 0  # each video once: the copies are equal
    common = ["caption", str(folder), *common]
    # a short run folder: worker sockets live there (at most 107 bytes a path)
    with tempfile.TemporaryDirectory(prefix="vidcap-kill-") as run_root:
        server = TorchServeInstance.launch(
            Path(run_root),
            {"VIDCAP_MODEL": "tiny", "NUM_GPUS": "0", "NUM_WORKERS": "2", "BATCH_SIZE": "4",
             "MAX_BATCH_DELAY_MS": "20"},
        )  # fmt: skip
        try:
            assert (server.run_dir / "inference_url").read_text().strip() == server.inference_url
            env = {**os.environ, "TS_RUN_DIR": str(server.run_dir), "PYTHONPATH": os.getcwd()}
            command = [sys.executable, "-m", "vidcap", *common, "--out", str(tmp_path / "remote")]
            command += ["--server", server.predictions_url, "--prebatch", "2", "-v"]
            started = time.monotonic()
            run = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
            kills = []
            for _ in range(2):  # wait until a worker computes, then kill it
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and run.poll() is None:
                    workers = [w for w in server.describe()["workers"] if w["status"] == "READY"]
                    if workers:
                        pid = int(workers[-1]["pid"])
                        base = worker_cpu(pid)
                        time.sleep(0.3)
                        if worker_cpu(pid) - base > 0.05:
                            psutil.Process(pid).kill()
                            kills.append(round(time.monotonic() - started, 1))
                            break
                    time.sleep(0.2)
            _, stderr = run.communicate(timeout=300)
            seconds = time.monotonic() - started
        finally:
            server.stop()
    retries = [line for line in stderr.splitlines() if "retry" in line or " too" in line]
    print(f"worker kills at {kills} s; run took {seconds:.1f} s; {len(retries)} retries:")
    print("\n".join(retries[:20]))
    assert run.returncode == 0, stderr[-3000:]
    assert len(kills) == 2, (kills, stderr[-2000:])
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert {v["status"] for v in summary["videos"]} == {"done"}
    assert {v["model"] for v in summary["videos"]} == {"tiny"}
    remote = sorted((tmp_path / "remote").glob("*.jsonl"))
    assert len(remote) == 4 * COPIES
    for path in remote:  # each copy's rows are its original's, but for the source named
        copy, original = path.name.split("-", 1)
        want = read_jsonl(tmp_path / "embedded" / original)
        for row in want:
            row["video"] = str(folder / f"{copy}-{Path(row['video']).name}")
        assert read_jsonl(path) == want, path.name


@pytest.mark.heavy
def test_a_caption_no_utf8_file_holds_fails_nothing(tmp_path: Path) -> None:
    """Regression: a server's caption holding a lone surrogate (JSON ``"\\ud800"``) stopped
    the run with a UnicodeEncodeError traceback while writing the outputs, recorded the
    next video failed with that error, and every rerun from the journal did the same. It is
    written with U+FFFD in its place, as a UTF-8 reader shows what it cannot read; a model
    name of that kind is refused in one line before any video."""
    from tests.support.cli import run_main
    from tests.support.servers import ScriptedServer

    samples = Path(__file__).resolve().parent.parent / "sample_videos"
    videos = [samples / "shapes.mp4", samples / "subject.mp4"]
    with ScriptedServer(input_size=(32, 32), said="bad \ud800 x") as server:
        result = run_main("caption", *videos, "--out", tmp_path / "out", "--server", server.url,
                          "--max-frames", "2", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [
        json.loads(line) for line in (tmp_path / "out" / "shapes.jsonl").read_text().splitlines()
    ]
    assert [row["caption"] for row in rows] == ["bad \ufffd x"] * 2
    assert "bad \ufffd x" in (tmp_path / "out" / "subject.srt").read_text(encoding="utf-8")
    with ScriptedServer(input_size=(32, 32), model="evil\ud800model") as server:
        result = run_main("caption", videos[0], "--out", tmp_path / "o2", "--server", server.url)
    assert result.returncode != 0 and "names its model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
