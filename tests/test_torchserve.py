"""The TorchServe handler: batching and splitting over the watched tiny model with
TorchServe's own ``Context`` (fast), then a real TorchServe started by
``torchserve/start.sh`` with the tiny model on CPU (slow)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ts.context import Context, RequestProcessor

from tests.support.images import black_png
from tests.support.servers import (
    PROTOCOL_CASES,
    PROTOCOL_MAX_REQUEST_MB,
    PROTOCOL_READ_TIMEOUT,
    check_protocol_case,
)
from tests.support.torchserve import (
    MODEL_NAME,
    Response,
    TorchServeInstance,
    http,
    load_worker_service,
    multipart,
    parse_predict_response,
    run_script,
    script_env,
    worker_request,
    write_archive,
)
from tests.support.watched import INJECTED, POISON, Said, Watched
from vidcap.errors import UsageError
from vidcap.serve.config import ServeConfig
from vidcap.serve.core import ServingCore
from vidcap.serve.gate import upstream_answer
from vidcap.serve.torchserve import (
    BATCH_FRAMES_HEADER,
    BATCH_REQUESTS_HEADER,
    Blip2Handler,
    worker_device,
)
from vidcap.settings import GenerationSettings
from vidcap.tiny.scenes import draw_scene, random_scene
from vidcap.wire import (
    encode_image,
    explicit_settings_fields,
    frame_part_name,
    settings_to_headers,
)

PNG = "image/png"


# --- fast: the handler over the watched tiny model and TorchServe's own Context class ---


TOKENS_5 = GenerationSettings(max_new_tokens=5)


class FakeMetrics:
    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def add_time(self, name: str, value: float, *args: object, **kwargs: object) -> None:
        self.times.append((name, value))


@dataclass(frozen=True)
class Scene:
    """A part holding scene ``label`` as a PNG (``tests.support.watched``; written when
    the request is served, once the scenes are known)."""

    label: int


@dataclass
class FakeRequest:
    """One HTTP request as TorchServe hands it to a handler: parts dict + headers."""

    row: dict[str, object]
    headers: dict[str, object] = field(default_factory=dict)


def single(label: int, **headers: str) -> FakeRequest:
    return FakeRequest(
        {"body": Scene(label)},
        {"body": {"content-type": PNG}, "Content-Type": PNG, "explain": "False", **headers},
    )


def prebatch(labels: Sequence[int], **form: str) -> FakeRequest:
    row: dict[str, object] = {frame_part_name(i): Scene(v) for i, v in enumerate(labels)}
    row.update({name: bytearray(value.encode()) for name, value in form.items()})
    return FakeRequest(row, {"Content-Type": "multipart/form-data; boundary=x"})


Served = tuple[list[tuple[int, object, dict[str, str]]], Watched]


@pytest.fixture
def serve(tiny_captioner, scenes) -> Callable[..., Served]:
    """One TorchServe batch through the handler: (status, JSON body, headers) per request,
    and the watched model; ``revision``: the hub commit the captioner says it loaded."""

    def part(value: object) -> object:
        if isinstance(value, Scene):
            return bytearray(encode_image(scenes[value.label], "png"))
        return value

    def serve(
        requests: Sequence[FakeRequest],
        config: ServeConfig | None = None,
        revision: str | None = None,
    ) -> Served:
        captioner = Watched(tiny_captioner, scenes)
        captioner.revision = revision
        handler = Blip2Handler()
        config = config or ServeConfig(max_batch=8, max_frames=4, max_pixels=64 * 64)
        handler.bind(ServingCore(captioner, config), "tiny")
        context = Context("vidcap", "/nonexistent", {"model": {}}, len(requests), None, "0.12.0")
        context.metrics = FakeMetrics()
        context.model_yaml_config = {}
        context.request_processor = [RequestProcessor(r.headers) for r in requests]
        rows = [{name: part(value) for name, value in r.row.items()} for r in requests]
        bodies = handler.handle(rows, context)
        assert len(bodies) == len(requests)
        results = []
        for idx, body in enumerate(bodies):
            status, _ = context.get_response_status(idx)
            results.append((status, json.loads(body), context.get_response_headers(idx)))
        return results, captioner

    return serve


def captions(
    said: Said, labels: Sequence[int], settings: GenerationSettings | None = None
) -> list[dict[str, str]]:
    return [{"caption": caption} for caption in said(labels, settings)]


def test_mixed_batch_one_response_per_request_in_order(serve, said) -> None:
    results, captioner = serve(
        [
            single(1),
            prebatch([2, 3, 4]),
            single(5, **{"X-Vidcap-Max-New-Tokens": "5"}),
            prebatch([6, 7], max_new_tokens="5"),
            prebatch([8]),
        ]
    )
    assert [status for status, _, _ in results] == [200] * 5
    assert [body for _, body, _ in results] == [
        *captions(said, [1]),
        captions(said, [2, 3, 4]),
        *captions(said, [5], TOKENS_5),
        captions(said, [6, 7], TOKENS_5),
        captions(said, [8]),
    ]
    assert said([5], TOKENS_5) != said([5])  # (the settings show in the captions)
    # One model pass per generation setting, every frame of the batch flattened into it.
    assert captioner.values == [[1, 2, 3, 4, 8], [5, 6, 7]]
    headers = results[0][2]
    assert headers["content-type"] == "application/json"
    assert (headers[BATCH_REQUESTS_HEADER], headers[BATCH_FRAMES_HEADER]) == ("5", "8")


def test_parts_are_ordered_by_frame_index_and_form_fields_beat_headers(serve, said) -> None:
    request = prebatch([], max_new_tokens="7")
    request.row = {"frame1": Scene(11), "frame0": Scene(10), **request.row}
    request.headers["X-Vidcap-Max-New-Tokens"] = "3"
    results, captioner = serve([request])
    assert results[0][1] == captions(said, [10, 11], GenerationSettings(max_new_tokens=7))
    assert captioner.values == [[10, 11]]


@pytest.mark.parametrize(
    ("bad", "status", "message"),
    [
        (
            FakeRequest({"body": bytearray(b"not an image")}, {"Content-Type": PNG}),
            400,
            "decodable",
        ),
        (FakeRequest({"body": bytearray()}, {"Content-Type": PNG}), 400, "empty"),
        (FakeRequest({}, {"Content-Type": "multipart/form-data; boundary=x"}), 400, "no image"),
        (
            FakeRequest(
                {"frame0": Scene(1), "frame1": bytearray(b"GIF89a")},
                {"Content-Type": "multipart/form-data; boundary=x"},
            ),
            415,
            "frame 1 is GIF, expected JPEG or PNG",
        ),
        (
            FakeRequest(
                {"frame0": "some text"}, {"Content-Type": "multipart/form-data; boundary=x"}
            ),
            415,
            "not a JPEG or PNG",
        ),
        (prebatch([1, 2, 3, 4, 5]), 413, "5 frames"),
        (
            FakeRequest({"body": bytearray(black_png(65, 64))}, {"Content-Type": PNG}),
            413,
            "pixels",
        ),
        (single(1, **{"X-Vidcap-Max-New-Tokens": "0"}), 400, "max_new_tokens"),
        (prebatch([1], max_new_tokens="many"), 400, "whole number"),
        (prebatch([1], num_beams="99"), 400, "num_beams"),
    ],
)
def test_a_bad_request_fails_alone(
    serve, said, bad: FakeRequest, status: int, message: str
) -> None:
    results, captioner = serve([single(1), bad, prebatch([2, 3])])
    assert (results[0][0], results[0][1]) == (200, *captions(said, [1]))
    assert (results[2][0], results[2][1]) == (200, captions(said, [2, 3]))
    got_status, body, headers = results[1]
    assert got_status == status
    assert set(body) == {"error"} and message in body["error"]
    assert headers["content-type"] == "application/json"
    assert captioner.values == [[1, 2, 3]]


def test_a_request_that_breaks_reading_fails_alone(serve, said, monkeypatch) -> None:
    """Regression: an error other than ``BadRequest`` while reading one request (a 1-byte
    body raised ``struct.error``) escaped ``preprocess``, and TorchServe answered every
    request of the batch 503 "Prediction failed". Whatever goes wrong reading a request is
    now that request's 400."""
    from vidcap.serve import torchserve

    real = torchserve.split_row

    def split_row(row, headers):  # noqa: ANN001, ANN202 - the handler's own signature
        if row.get("body") == bytearray(b"boom"):
            raise KeyError("an unforeseen fault")
        return real(row, headers)

    monkeypatch.setattr(torchserve, "split_row", split_row)
    png = {"body": {"content-type": PNG}, "Content-Type": PNG}
    broken = FakeRequest({"body": bytearray(b"boom")}, png)
    results, captioner = serve([single(1), broken, single(2)])
    assert [r[0] for r in results] == [200, 400, 200]
    assert "the request could not be read" in results[1][1]["error"]
    assert captioner.values == [[1, 2]]
    results, _ = serve([single(1), FakeRequest({"body": bytearray(b"x")}, png), single(2)])
    assert [r[0] for r in results] == [200, 400, 200]  # (a 1-byte body: struct.error before)


def test_a_decompression_bomb_is_a_413_and_its_batch_mates_are_captioned(serve, said) -> None:
    # The reported request: 64 black 4096x4096 PNGs, 3 MB sent, 3.2 GB once decoded;
    # it used to kill the worker (its batch-mates got 507).
    bomb_png = bytearray(black_png(4096, 4096))
    bomb = FakeRequest(
        {frame_part_name(i): bomb_png for i in range(64)},
        {"Content-Type": "multipart/form-data; boundary=x"},
    )
    over_total = prebatch([4] * 3)  # 3 x 4,096 pixels, over max_request_pixels
    config = ServeConfig(max_batch=8, max_frames=64, max_request_pixels=3 * 4096 - 1)
    results, captioner = serve([single(1), bomb, over_total, prebatch([2, 3])], config)
    assert [status for status, _, _ in results] == [200, 413, 413, 200]
    assert results[1][1] == {"error": "frame 0 has 4096x4096 pixels, more than 8847360"}
    assert results[2][1] == {
        "error": "request has 12288 pixels in its 3 frames, more than the limit of 12287"
    }
    assert (results[0][1], results[3][1]) == (*captions(said, [1]), captions(said, [2, 3]))
    assert captioner.values == [[1, 2, 3]]


def test_describe_and_explain_headers_cannot_hijack_a_batch(serve, said) -> None:
    results, _ = serve([single(1, describe="True", explain="True"), single(2)])
    assert [body for _, body, _ in results] == captions(said, [1, 2])


def test_handler_defaults_apply_when_a_request_sends_no_settings(serve, said) -> None:
    defaults = GenerationSettings(prompt="a photo of", max_new_tokens=9)
    results, captioner = serve([single(1)], ServeConfig(max_new_tokens=9, prompt="a photo of"))
    assert [results[0][1]] == captions(said, [1], defaults)
    assert captioner.calls[0][1] == defaults


def test_a_client_asking_for_no_prompt_gets_none_from_a_server_with_a_default_prompt(
    serve, said
) -> None:
    # what `vidcap caption --server` without --prompt sends: the embedded run's captions,
    # not the ones the server's own default prompt (VIDCAP_PROMPT) would give
    asked = GenerationSettings(max_new_tokens=9)
    fields = explicit_settings_fields(asked)
    config = ServeConfig(max_new_tokens=20, prompt="a photo of")
    results, captioner = serve(
        [single(1, **settings_to_headers(asked)), prebatch([2, 3], **fields)], config
    )
    assert [body for _, body, _ in results] == [
        *captions(said, [1], asked),
        captions(said, [2, 3], asked),
    ]
    assert [settings for _, settings in captioner.calls] == [asked]


def test_a_model_error_is_retried_per_request_so_batch_mates_get_captions(serve, said) -> None:
    results, captioner = serve([single(1), single(POISON), prebatch([2, 3])])
    assert (results[0][0], results[0][1]) == (200, *captions(said, [1]))
    assert (results[2][0], results[2][1]) == (200, captions(said, [2, 3]))
    assert results[1][0] == 500
    assert results[1][1] == {"error": f"the model failed on this request: RuntimeError: {INJECTED}"}
    assert captioner.values == [[1, POISON, 2, 3], [1], [POISON], [2, 3]]


def test_an_info_request_is_answered_alone_with_the_input_size(serve, said, tiny_captioner) -> None:
    info = FakeRequest({"body": bytearray()}, {"Content-Type": PNG, "X-Vidcap-Info": "1"})
    results, captioner = serve([info, single(1)])
    limit = tiny_captioner.model.config.text_config.max_position_embeddings
    assert results[0][:2] == (
        200,
        {
            "model": "tiny",
            "input_size": [64, 64],
            "max_frames_per_request": 4,
            "max_batch": 8,
            "token_limit": limit,
            "precision": "float32",  # (what a client records with each video)
        },
    )
    assert [results[1][1]] == captions(said, [1])
    assert results[1][2]["X-Vidcap-Input-Size"] == "64x64"
    assert results[1][2]["X-Vidcap-Model"] == "tiny"
    assert "X-Vidcap-Revision" not in results[1][2]  # a local checkpoint: no commit
    assert captioner.values == [[1]]


def test_a_hub_models_commit_is_named_in_the_info_and_every_answer(serve) -> None:
    info = FakeRequest({"body": bytearray()}, {"Content-Type": PNG, "X-Vidcap-Info": "1"})
    results, _ = serve([info, single(1)], revision="c" * 40)
    assert results[0][1]["revision"] == "c" * 40
    assert results[1][2]["X-Vidcap-Revision"] == "c" * 40


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected"),
    [
        (413, "text/plain", b"", {"error": "Request Entity Too Large"}),
        (503, "text/plain", b"busy\n", {"error": "busy"}),
        (507, "application/json", b'{"code": 507, "message": "Worker died."}', None),
        (200, "application/json", b'{"caption": "a"}', None),
    ],
)
def test_the_gate_wraps_torchserve_errors_that_are_not_json(
    status: int, content_type: str, body: bytes, expected: dict | None
) -> None:
    headers = {"Content-Type": content_type, "X-Vidcap-Input-Size": "64x64", "Server": "x"}
    answer = upstream_answer(status, headers, body)
    assert answer.status == status
    assert json.loads(answer.body) == (expected or json.loads(body))  # type: ignore[arg-type]
    assert answer.content_type == "application/json"
    assert answer.headers["X-Vidcap-Input-Size"] == "64x64" and "Server" not in answer.headers


def test_a_servers_local_model_folder_is_named_by_its_absolute_path(tmp_path, monkeypatch) -> None:
    """Regression: a server named its model by how ``VIDCAP_MODEL`` was spelled, and a
    ``--server`` run's outputs are keyed by that name: ``ck`` served from two working
    folders (two checkpoints) was one model to the client, as ``--model ck`` was
    embedded. Servers, as the CLI, name a local folder by its absolute path."""
    (tmp_path / "ck").mkdir()
    monkeypatch.chdir(tmp_path)
    config = ServeConfig.from_sources({}, {"VIDCAP_MODEL": "ck"})
    assert config.model == str(tmp_path / "ck")
    assert ServeConfig.from_sources({}, {"VIDCAP_MODEL": "tiny"}).model == "tiny"
    assert ServeConfig.from_sources({}, {"VIDCAP_MODEL": "org/name"}).model == "org/name"


def test_config_from_yaml_section_with_env_overrides() -> None:
    config = ServeConfig.from_sources(
        {"model": "tiny", "max_chunk": 4, "profile": True},
        {"VIDCAP_MAX_BATCH": "2", "VIDCAP_DTYPE": "bfloat16", "OTHER": "x"},
    )
    assert (config.model, config.max_batch, config.dtype) == ("tiny", 2, "bfloat16")
    assert ServeConfig.from_sources({"max_chunk": 4}, {}).max_batch == 4  # the old name
    assert config.model_settings("cuda:1").dtype == "bfloat16"
    assert config.model_settings("cpu").dtype == "float32"
    assert config.model_settings("cuda:1").batch_size == 2


@pytest.mark.parametrize(
    ("section", "env", "message"),
    [
        ({"modle": "tiny"}, {}, "unknown server setting.*supported keys are"),
        ({"max_chunk": "lots"}, {}, "VIDCAP_MAX_BATCH must be a whole number, got 'lots'"),
        ({}, {"VIDCAP_MAX_FRAMES": "0"}, "VIDCAP_MAX_FRAMES must be >= 1"),
        ({}, {"VIDCAP_READ_TIMEOUT": "0"}, "VIDCAP_READ_TIMEOUT must be > 0"),
        ({"num_beams": 50}, {}, "num_beams must be between"),
        ({}, {"VIDCAP_DTYPE": "float8"}, "unknown dtype 'float8'; supported values are"),
        # (an outside-in round: each of these was a traceback, or taken and served wrong)
        (
            {},
            {"VIDCAP_LOG_LEVEL": "LOUD"},
            "VIDCAP_LOG_LEVEL must be one of CRITICAL, .*, got .LOUD.",
        ),
        (
            {"max_frames": 8},
            {"VIDCAP_MAX_PARTS": "5"},
            r"VIDCAP_MAX_PARTS must be at least VIDCAP_MAX_FRAMES \+ 3 \(11: a full",
        ),
    ],
)
def test_config_errors_name_the_problem(
    section: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        ServeConfig.from_sources(section, env)


def test_the_settings_check_says_a_misspelt_name_and_a_yaml_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (an outside-in round): ``VIDCAP_MAX_FRAME=2`` was ignored without a word
    (a misspelt ``handler:`` key is an error); a ``handler:`` section that is not a mapping,
    or a YAML that does not parse, was a worker's traceback, and a file that is a list was
    taken as no settings at all. The check start.sh and server-create.sh run names each in
    one line."""
    from vidcap.serve.config import main

    for name in [n for n in os.environ if n.startswith("VIDCAP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("VIDCAP_MODEL", "tiny")
    monkeypatch.setenv("VIDCAP_MAX_FRAME", "2")
    monkeypatch.setenv("VIDCAP_TOKEN", "a client's: no server setting, and no mistake")
    assert main(["start.sh", "--model", "--device"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "start.sh: warning: VIDCAP_MAX_FRAME is no server setting (did you mean "
        "VIDCAP_MAX_FRAMES?); ignored"
    ]
    assert main(["--device"]) == 0  # (run by hand, without a program: "error: warning:" was)
    assert capsys.readouterr().err.startswith("vidcap: warning: VIDCAP_MAX_FRAME is no server")
    monkeypatch.delenv("VIDCAP_MAX_FRAME")
    for text, said in (
        ("handler: [1, 2]\n", "its handler: section must be a mapping of settings"),
        ("- handler:\n    max_frames: 3\n", "must be a mapping of sections"),  # was taken as {}
        ("handler: {model: tiny\n", "while parsing a flow mapping"),
        ("handler:\n  max_frame: 3\n", "unknown server setting max_frame; supported keys"),
    ):
        (tmp_path / "model-config.yaml").write_text(text)
        assert main(["start.sh", "--section", str(tmp_path / "model-config.yaml")]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("start.sh: ") and said in line, line
    monkeypatch.setenv("VIDCAP_MODEL", "nobody/no-such-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["start.sh", "--model"]) == 2  # (what to do, said for a server too)
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith("and pass --model /path/to/blip2 (a server: VIDCAP_MODEL=/path/to/blip2)")
    )
    monkeypatch.setenv("VIDCAP_MODEL", str(tmp_path / "nothing-here"))
    assert main(["start.sh", "--model"]) == 2
    assert capsys.readouterr().err == (
        f"start.sh: cannot load model {str(tmp_path / 'nothing-here')!r}: no such directory, "
        "and not a hub id (owner/name)\n"
    )


def test_worker_device_follows_gpu_id_and_falls_back_to_cpu() -> None:
    assert worker_device(1, cuda_available=True) == "cuda:1"
    assert worker_device("0", cuda_available=True) == "cuda:0"
    assert worker_device(None, cuda_available=True) == "cpu"
    assert worker_device(1, cuda_available=False) == "cpu"


def test_initialize_loads_the_tiny_model_from_the_yaml_section(tiny_captioner) -> None:
    context = Context(
        "vidcap", "/nonexistent", {"model": {}}, 1, None, "0.12.0",
        model_yaml_config={"handler": {"model": "tiny", "max_chunk": 3}},
    )  # fmt: skip
    context.metrics = FakeMetrics()
    handler = Blip2Handler()
    handler.initialize(context)
    assert handler.core is not None
    assert (handler.core.captioner.device, handler.core.config.max_batch) == ("cpu", 3)
    image = scene_frames(1, tiny_captioner.input_size)[0]
    context.request_processor = [RequestProcessor({"Content-Type": PNG})]
    body = handler.handle([{"body": bytearray(encode_image(image, "png"))}], context)
    assert json.loads(body[0]) == {"caption": tiny_captioner.caption([image])[0]}


@pytest.mark.parametrize("gpu_id", [None, pytest.param(0, marks=pytest.mark.needs_cuda)])
def test_torchserve_worker_path_serves_a_mixed_batch(
    gpu_id: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive loaded and served by TorchServe's own worker code (no Java front end):
    gpu_id → device, float16 on a GPU, float32 on CPU; per-request statuses."""
    model_dir = write_archive(tmp_path, {"model": "tiny", "max_chunk": 2, "max_new_tokens": 6})
    monkeypatch.syspath_prepend(str(model_dir))
    monkeypatch.delitem(sys.modules, "blip2_handler", raising=False)
    service = load_worker_service(model_dir, gpu_id, batch_size=4)
    handler = sys.modules["blip2_handler"]._service
    captioner = handler.core.captioner
    assert captioner.device == ("cpu" if gpu_id is None else f"cuda:{gpu_id}")
    assert str(captioner.dtype) == ("torch.float32" if gpu_id is None else "torch.float16")

    frames = [encode_image(f, "png") for f in scene_frames(4, captioner.input_size)]
    form = "multipart/form-data; boundary=x"
    batch = [
        worker_request("a", [("body", PNG, frames[0])], {"Content-Type": PNG}),
        worker_request(
            "b",
            [(frame_part_name(i), PNG, f) for i, f in enumerate(frames[1:])]
            + [("max_new_tokens", "", b"4")],
            {"Content-Type": form},
        ),
        worker_request("c", [("body", PNG, b"")], {"Content-Type": PNG}),
    ]
    answers = parse_predict_response(service.predict(batch))
    assert [a.status for a in answers] == [200, 200, 400]
    assert set(answers[0].body) == {"caption"}
    assert len(answers[1].body) == 3 and all(set(item) == {"caption"} for item in answers[1].body)
    assert answers[2].body == {"error": "image is empty"}
    assert answers[1].headers[BATCH_REQUESTS_HEADER] == "3"
    expected = captioner.caption([decode(frames[0])], GenerationSettings(max_new_tokens=6))
    assert answers[0].body == {"caption": expected[0]}


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.mark.heavy
def test_start_mistakes_are_one_line_before_anything_runs(tmp_path: Path) -> None:
    """Regression (an outside-in round): a model that cannot load kept start.sh waiting
    its whole START_TIMEOUT (900 s) while TorchServe restarted the worker; ``BATCH_SIZE=abc``,
    a ``job_queue_size`` with a comment after it or a broken ``models`` line in the config
    template were Python tracebacks; ``BATCH_SIZE=0`` was taken (batches of 1, and the
    gate's client turns switched off). Each is one line now, before the gate or TorchServe
    starts."""
    store = tmp_path / "store" / "vidcap"
    (store / "MAR-INF").mkdir(parents=True)
    (store / "MAR-INF" / "MANIFEST.json").write_text("{}")
    (store / "model-config.yaml").write_text("handler:\n  model: tiny\n")
    template = tmp_path / "config.properties"
    from tests.support.torchserve import free_ports

    ports = dict(zip(("INFERENCE_PORT", "MANAGEMENT_PORT", "METRICS_PORT",
                      "BACKEND_INFERENCE_PORT", "GRPC_INFERENCE_PORT", "GRPC_MANAGEMENT_PORT"),
                     map(str, free_ports(6)), strict=True))  # fmt: skip
    base = {"MODEL_STORE": str(tmp_path / "store"), "TS_RUN_DIR": str(tmp_path / "run"),
            "NUM_GPUS": "0", "VIDCAP_MODEL": "", **ports}  # fmt: skip
    cases = [
        ({"BATCH_SIZE": "0"}, "start.sh: BATCH_SIZE must be a whole number >= 1 (got 0)"),
        ({"MAX_BATCH_DELAY_MS": "-5x"}, "start.sh: MAX_BATCH_DELAY_MS must be a whole number"),
        ({"START_TIMEOUT": "soon"}, "start.sh: START_TIMEOUT must be a whole number of seconds"),
        ({"VIDCAP_MODEL": str(tmp_path / "gone")}, "start.sh: cannot load model "),
        ({"TS_CONFIG": str(template), "T": "job_queue_size=128 # requests"},
         f"start.sh: {template}: job_queue_size must be a whole number, got '128 # requests'"),
        ({"TS_CONFIG": str(template), "T": 'models={"vidcap": '},
         f"start.sh: {template}: models must be TorchServe's JSON of one model's settings"),
    ]  # fmt: skip
    for settings, said in cases:
        template.write_text(settings.get("T", "") + "\n")
        result = run_script("start.sh", script_env({**base, **settings}), timeout=60)
        assert result.returncode != 0
        assert result.stdout.strip().splitlines()[-1].startswith(said), result.stdout
        assert not (tmp_path / "run" / "gate.pid").exists()
        assert not (tmp_path / "run" / ".model_server.pid").exists()
    (store / "model-config.yaml").write_text("handler:\n  model: tiny\n  max_frame: 3\n")
    result = run_script("start.sh", script_env(base), timeout=60)
    assert result.stdout.strip() == (
        "start.sh: unknown server setting max_frame; supported keys are "
        + ", ".join(f.name for f in dataclasses.fields(ServeConfig))
    )


def test_server_create_refuses_a_model_it_cannot_have_in_one_line(tmp_path: Path) -> None:
    """Regression (an outside-in round): a mistyped local path as VIDCAP_MODEL ended
    server-create.sh in a huggingface_hub traceback."""
    for model in (str(tmp_path / "no" / "dir"), "bad model"):
        env = script_env({"VIDCAP_MODEL": model, "MODEL_STORE": str(tmp_path / "store")})
        result = run_script("server-create.sh", env, timeout=60)
        assert result.returncode == 2
        assert result.stdout.strip() == (
            f"server-create.sh: cannot load model {model!r}: no such directory, and not a hub "
            "id (owner/name)"
        )
        assert not (tmp_path / "store" / "vidcap").exists()


def test_start_refuses_to_disable_tokens_on_a_public_address(tmp_path: Path) -> None:
    (tmp_path / "store" / "vidcap" / "MAR-INF").mkdir(parents=True)
    (tmp_path / "store" / "vidcap" / "MAR-INF" / "MANIFEST.json").write_text("{}")
    env = script_env(
        {
            "MODEL_STORE": str(tmp_path / "store"),
            "TS_RUN_DIR": str(tmp_path / "run"),
            "INFERENCE_HOST": "0.0.0.0",
            "TOKEN_AUTH": "off",
            "NUM_GPUS": "0",
        }
    )
    result = run_script("start.sh", env, timeout=30)
    assert result.returncode != 0
    assert "TOKEN_AUTH=off is refused" in result.stdout
    assert not (tmp_path / "run" / ".model_server.pid").exists()


# --- slow: a real TorchServe, 2 CPU workers, batchSize 8, tiny model ---

SERVER_DEFAULT_TOKENS = 8
MAX_FRAMES = 6
MAX_PIXELS = 128 * 128


def scene_frames(count: int, size: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Frames of the tiny model's synthetic world, already at its input size."""
    rng = np.random.default_rng(seed)
    height, width = size
    return [draw_scene(random_scene(rng), width, height, rng) for _ in range(count)]


@pytest.fixture(scope="module")
def torchserve() -> Iterator[TorchServeInstance]:
    """One TorchServe for the module. Its folder is a private temporary one rather than
    pytest's ``tmp_path``: pytest deletes old base folders when other sessions start, and
    the server must keep its model store and worker sockets while it runs."""
    with tempfile.TemporaryDirectory(prefix="vidcap-torchserve-") as root:
        instance = TorchServeInstance.launch(
            Path(root),
            {
                "VIDCAP_MODEL": "tiny",
                "NUM_GPUS": "0",
                "NUM_WORKERS": "2",
                "BATCH_SIZE": "8",
                "MAX_BATCH_DELAY_MS": "300",
                "VIDCAP_MAX_CHUNK": "4",
                "VIDCAP_MAX_FRAMES": str(MAX_FRAMES),
                "VIDCAP_MAX_PIXELS": str(MAX_PIXELS),
                "VIDCAP_MAX_NEW_TOKENS": str(SERVER_DEFAULT_TOKENS),
                "VIDCAP_MAX_REQUEST_MB": str(PROTOCOL_MAX_REQUEST_MB),
                "VIDCAP_READ_TIMEOUT": str(PROTOCOL_READ_TIMEOUT),
            },
        )
        try:
            yield instance
        finally:
            stopped = instance.stop()
            assert stopped.returncode == 0, stopped.stdout


@dataclass
class Call:
    """One HTTP request to fire, and the captions it must come back with (None: an error)."""

    body: bytes
    content_type: str
    expected: list[str] | None
    batched: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def fire_together(server: TorchServeInstance, calls: Sequence[Call]) -> list[Response]:
    """Send every call at the same instant from its own thread; answers in call order."""
    barrier = threading.Barrier(len(calls))

    def send(call: Call) -> Response:
        barrier.wait()
        return server.predict(call.body, call.content_type, call.headers)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(send, calls))


def assert_answered(calls: Sequence[Call], responses: Sequence[Response]) -> None:
    for call, response in zip(calls, responses, strict=True):
        if call.expected is None:
            assert 400 <= response.status < 500, response
            assert isinstance(response.body, dict) and set(response.body) == {"error"}, response
            continue
        assert response.status == 200, response
        expected = [{"caption": c} for c in call.expected]
        assert response.body == (expected if call.batched else expected[0])


SINGLE = 0  # in a call shape: one frame as the request body (not multipart)


@pytest.fixture(scope="module")
def caption_calls(tiny_captioner) -> Callable[..., list[Call]]:
    """Calls of a given shape, with the embedded captioner's answers for their frames.

    ``shape``: one entry per request, ``SINGLE`` for a single-image body, ``n`` for a
    multipart pre-batch of n frames; ``tokens``: sent as ``X-Vidcap-Max-New-Tokens``.
    """

    def build(shape: Sequence[int], seed: int, tokens: int | None = None) -> list[Call]:
        settings = GenerationSettings(max_new_tokens=tokens or SERVER_DEFAULT_TOKENS)
        headers = {"X-Vidcap-Max-New-Tokens": str(tokens)} if tokens else {}
        sizes = [max(size, 1) for size in shape]
        frames = scene_frames(sum(sizes), tiny_captioner.input_size, seed)
        expected = tiny_captioner.caption(frames, settings)
        calls, start = [], 0
        for kind, size in zip(shape, sizes, strict=True):
            chunk, answers = frames[start : start + size], expected[start : start + size]
            start += size
            if kind == SINGLE:
                calls.append(Call(encode_image(chunk[0], "png"), PNG, answers, headers=headers))
                continue
            parts = [(frame_part_name(i), encode_image(f, "png"), PNG) for i, f in enumerate(chunk)]
            body, content_type = multipart(parts)
            calls.append(Call(body, content_type, answers, batched=True, headers=headers))
        return calls

    return build


@pytest.mark.slow
def test_single_and_prebatched_requests_match_the_embedded_captioner(
    torchserve: TorchServeInstance, caption_calls: Callable[..., list[Call]]
) -> None:
    calls = caption_calls([SINGLE, 3, SINGLE, 1, SINGLE, 4], seed=1)
    assert_answered(calls, fire_together(torchserve, calls))


@pytest.mark.slow
def test_mixed_server_batch_keeps_one_response_per_request_in_order(
    torchserve: TorchServeInstance, caption_calls: Callable[..., list[Call]]
) -> None:
    mixed_batch_seen = False
    for seed in range(10, 13):
        calls = caption_calls([SINGLE, 2, SINGLE, 3, SINGLE, 1], seed=seed)
        calls += caption_calls([2, SINGLE], seed=seed + 100, tokens=5)  # other settings, same batch
        responses = fire_together(torchserve, calls)
        assert_answered(calls, responses)
        for response in responses:
            requests = int(response.headers[BATCH_REQUESTS_HEADER])
            frames = int(response.headers[BATCH_FRAMES_HEADER])
            mixed_batch_seen |= 2 <= requests < frames
        if mixed_batch_seen:
            break
    assert mixed_batch_seen, "no TorchServe batch held singles and pre-batches together"


def bad_calls(size: tuple[int, int]) -> list[Call]:
    good = encode_image(scene_frames(1, size, seed=99)[0], "png")
    too_big = encode_image(np.zeros((129, 128, 3), dtype=np.uint8), "png")
    return [
        Call(
            *multipart([("frame0", good, PNG), ("frame1", b"<html>no</html>", "text/html")]), None
        ),
        Call(*multipart([("frame0", b"\x89PNG broken", PNG)]), None),
        Call(b"", PNG, None),
        Call(*multipart([(frame_part_name(i), good, PNG) for i in range(MAX_FRAMES + 1)]), None),
        Call(too_big, PNG, None),
        Call(good, PNG, None, headers={"X-Vidcap-Max-New-Tokens": "100000"}),
        Call(*multipart([("frame0", good, PNG), ("max_new_tokens", b"ten", None)]), None),
        Call(good, PNG, None, headers={"X-Vidcap-Num-Beams": "0"}),
        # 250 short words: under the 500-character limit, over the model's 128 tokens.
        Call(good, PNG, None, headers={"X-Vidcap-Prompt": " ".join(["a"] * 250)}),
        Call(*multipart([("frame0", good, PNG), ("prompt", b" ".join([b"a"] * 250), None)]), None),
    ]


@pytest.mark.slow
def test_bad_requests_fail_alone_and_the_workers_stay_up(
    torchserve: TorchServeInstance, caption_calls: Callable[..., list[Call]], tiny_captioner
) -> None:
    workers_before = {w["pid"] for w in torchserve.describe()["workers"]}
    goods = caption_calls([SINGLE, 2, SINGLE, 1, SINGLE], seed=20)
    bads = bad_calls(tiny_captioner.input_size)
    calls = [call for pair in zip(goods * 2, bads, strict=True) for call in pair]
    assert_answered(calls, fire_together(torchserve, calls))
    # Still serving, with the same worker processes.
    again = caption_calls([SINGLE, 2], seed=21)
    assert_answered(again, fire_together(torchserve, again))
    workers = torchserve.describe()["workers"]
    assert {w["pid"] for w in workers} == workers_before
    assert all(w["status"] == "READY" for w in workers)


def fake_store(root: Path) -> Path:
    (root / "store" / "vidcap" / "MAR-INF").mkdir(parents=True)
    (root / "store" / "vidcap" / "MAR-INF" / "MANIFEST.json").write_text("{}")
    return root / "store"


def test_start_names_a_taken_grpc_port(tmp_path: Path) -> None:
    """A second TorchServe on the same host: start.sh says which port is taken."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = script_env(
            {
                "MODEL_STORE": str(fake_store(tmp_path)),
                "TS_RUN_DIR": str(tmp_path / "run"),
                "NUM_GPUS": "0",
                "GRPC_INFERENCE_PORT": str(port),
                "VIDCAP_MODEL": "tiny",  # (the default, not in this cache, is refused first)
            }
        )
        result = run_script("start.sh", env, timeout=30)
    assert result.returncode != 0
    assert (
        f"start.sh: port {port} on 127.0.0.1 (GRPC_INFERENCE_PORT) is not free: "
        "Address already in use; another TorchServe may be running: set GRPC_INFERENCE_PORT"
    ) in result.stdout
    assert not (tmp_path / "run" / ".model_server.pid").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PROTOCOL_CASES))
def test_protocol_errors_are_the_same_4xx_json_as_flask(
    torchserve: TorchServeInstance, case: str
) -> None:
    """Issue #10 item 7: the gate in front of TorchServe answers as Flask does."""
    port = int(torchserve.inference_url.rsplit(":", 1)[1])
    path = f"/predictions/{MODEL_NAME}"
    check_protocol_case(port, path, PROTOCOL_CASES[case], torchserve.auth("inference"))


@pytest.mark.slow
def test_token_auth_is_on_by_default_and_the_keys_are_private(
    torchserve: TorchServeInstance,
) -> None:
    key_file = torchserve.run_dir / "key_file.json"
    assert key_file.is_file() and torchserve.key("inference")
    assert key_file.stat().st_mode & 0o077 == 0
    assert torchserve.run_dir.stat().st_mode & 0o077 == 0
    config = (torchserve.run_dir / "config.properties").read_text()
    assert "disable_token_authorization=false" in config
    assert "grpc_inference_address=127.0.0.1" in config


@pytest.mark.slow
def test_the_gate_caps_one_clients_requests_and_forwards_two_batches_per_worker(
    torchserve: TorchServeInstance,
) -> None:
    """start.sh gives the gate ``--max-client-requests``: what the workers run at once
    (workers x batchSize) plus half of TorchServe's job queue, and ``--max-forwarded``:
    twice what the workers run at once, from the run's config."""
    props = dict(
        line.split("=", 1)
        for line in (torchserve.run_dir / "config.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    model = next(iter(json.loads(props["models"]).values()))["1.0"]
    running = model["minWorkers"] * model["batchSize"]
    gate = torchserve.gate_pid()
    assert gate is not None
    argv = Path(f"/proc/{gate}/cmdline").read_bytes().split(b"\0")
    share = running + int(props["job_queue_size"]) // 2
    assert argv[argv.index(b"--max-client-requests") + 1] == str(share).encode()
    assert argv[argv.index(b"--max-forwarded") + 1] == str(2 * running).encode()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["other_store", "traversal"])
def test_workflow_registration_is_refused_and_nothing_is_copied(
    torchserve: TorchServeInstance, tmp_path: Path, target: str
) -> None:
    """Issue #10 items 1 and 2, against the real front end, with the management key."""
    other = tmp_path / "other" / "model_store"
    other.mkdir(parents=True)
    (other / "x.war").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    store = torchserve.root / "model_store"
    if target == "other_store":
        url = f"file://{other}/x.war"
    else:
        url = f"file://{store}/" + "../" * 8 + "etc/passwd"
    before = {p: sorted(p.rglob("*")) for p in (store, other, torchserve.run_dir)}
    answer = http(
        "POST",
        f"{torchserve.management_url}/workflows?url={url}",
        b"",
        torchserve.auth("management"),
    )
    assert 400 <= answer.status < 500, answer
    listed = http(
        "GET", f"{torchserve.management_url}/workflows", None, torchserve.auth("management")
    )
    assert listed.body == {"workflows": []}, listed
    for path, files in before.items():
        now = [p for p in sorted(path.rglob("*")) if not p.name.endswith((".log", ".out"))]
        assert now == [p for p in files if not p.name.endswith((".log", ".out"))], path
    assert not list(store.rglob("passwd")) and not list(torchserve.run_dir.rglob("passwd"))
    assert list((torchserve.run_dir / "workflow_store").iterdir()) == []


@pytest.mark.slow
def test_the_input_size_is_told_by_header_and_info_request(torchserve: TorchServeInstance) -> None:
    info = torchserve.predict(b"", PNG, {"X-Vidcap-Info": "1"})
    assert info.status == 200 and info.body["input_size"] == [64, 64], info
    assert info.body["model"] == "tiny" and info.body["token_limit"] == 128
    image = encode_image(np.zeros((64, 64, 3), dtype=np.uint8), "png")
    answered = torchserve.predict(image, PNG)
    assert answered.status == 200 and answered.headers["X-Vidcap-Input-Size"] == "64x64"
    assert answered.headers["X-Vidcap-Model"] == "tiny"  # passed on by the gate


@pytest.mark.slow
def test_inference_needs_the_token(torchserve: TorchServeInstance) -> None:
    image = encode_image(np.zeros((16, 16, 3), dtype=np.uint8), "png")
    refused = torchserve.predict(image, PNG, {"Authorization": "Bearer wrong"})
    assert refused.status in (400, 401) and "Token" in str(refused.body)


@pytest.mark.slow
def test_prometheus_metrics_endpoint(torchserve: TorchServeInstance) -> None:
    metrics = http("GET", f"{torchserve.metrics_url}/metrics", None, {})
    assert metrics.status == 200
    assert "ts_inference_requests_total" in str(metrics.body)


@pytest.mark.slow
def test_model_registration_through_the_api_is_off(torchserve: TorchServeInstance) -> None:
    url = f"{torchserve.management_url}/models?url=https://example.com/evil.mar"
    answer = http("POST", url, b"", torchserve.auth("management"))
    assert answer.status == 405, answer


@pytest.mark.slow
def test_a_start_whose_worker_or_front_end_cannot_start_says_why_at_once(tmp_path: Path) -> None:
    """Regression (an outside-in round): a model that passes every check but cannot load
    (here a folder with an empty config.json) kept start.sh waiting its whole START_TIMEOUT
    while TorchServe restarted the worker, then printed 30 lines of traceback; a front end
    that refused its configuration was said with another line (``InterruptedException``),
    or an earlier start's, from logs the run folder appends to. Now the worker's reason
    stops the start at once, and the front end's own line of this start is said."""
    import psutil

    from tests.support.torchserve import free_ports

    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    ports = dict(zip(("INFERENCE_PORT", "MANAGEMENT_PORT", "METRICS_PORT",
                      "BACKEND_INFERENCE_PORT", "GRPC_INFERENCE_PORT", "GRPC_MANAGEMENT_PORT"),
                     map(str, free_ports(6)), strict=True))  # fmt: skip
    env = script_env({"MODEL_STORE": str(tmp_path / "store"), "TS_RUN_DIR": str(tmp_path / "run"),
                      "NUM_GPUS": "0", "VIDCAP_MODEL": str(fake), "START_TIMEOUT": "600",
                      **ports})  # fmt: skip
    assert run_script("server-create.sh", env, timeout=120).returncode == 0
    started = time.monotonic()
    result = run_script("start.sh", env, timeout=700)
    assert result.returncode == 1 and time.monotonic() - started < 120, result.stdout
    assert (
        f"the model worker cannot start: cannot load model from {str(fake)!r}: not a BLIP-2 "
        "checkpoint"
    ) in result.stdout
    assert "Traceback" not in result.stdout and "TorchServe stopped" in result.stdout

    template = tmp_path / "config.properties"
    template.write_text("max_request_size=64MB\n")
    result = run_script("start.sh", {**env, "TS_CONFIG": str(template)}, timeout=300)
    assert result.returncode == 1
    assert (
        'TorchServe exited during start: Invalid configuration: For input string: "64MB" '
        f"(from {tmp_path / 'run'}/torchserve.out)"
    ) in result.stdout, result.stdout
    assert "cannot load model" not in result.stdout  # (the first start's, in the same logs)
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if str(tmp_path / "run") in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert not left


@pytest.mark.slow
def test_the_client_over_torchserve_equals_the_embedded_run(
    torchserve: TorchServeInstance, tiny_captioner
) -> None:
    """``vidcap caption --server``'s client (``RemoteBackend``, PNG, the inference key) on
    the real TorchServe: the embedded captioner's captions, one frame a request and
    pre-batched, with the client's default settings (sent with every request: the server's
    default differs) and others; refused without the key. (From test_client.py: on this
    module's server rather than a TorchServe of its own.)"""
    from tests.support.servers import make_frames
    from vidcap.backend import EmbeddedBackend
    from vidcap.client import ClientOptions, RemoteBackend
    from vidcap.errors import ServerUnavailable

    size = tiny_captioner.input_size
    assert GenerationSettings().max_new_tokens != SERVER_DEFAULT_TOKENS

    def remote(token: str | None = None, **options: object) -> RemoteBackend:
        fast = {"wire_format": "png", "backoff": 0.01, "backoff_max": 0.05, "timeout": 10.0}
        return RemoteBackend(
            [torchserve.predictions_url], size, ClientOptions(**{**fast, **options}), token=token
        )

    frames = make_frames(14, size, seed=6)
    token = torchserve.key("inference")
    embedded = EmbeddedBackend(tiny_captioner)
    for settings in (
        GenerationSettings(),
        GenerationSettings(prompt="a picture of", max_new_tokens=6),
    ):
        expected = list(embedded.caption_stream(frames, settings))
        for prebatch in (1, 3):
            with remote(token, prebatch=prebatch, inflight=3) as backend:
                got = list(backend.caption_stream(frames, settings))
                assert got == expected, (settings, prebatch)
    with (
        remote(retries=1) as backend,
        pytest.raises(ServerUnavailable, match="HTTP 40[01]: Token Authorization failed"),
    ):
        list(backend.caption_stream(frames[:1], GenerationSettings()))


@pytest.mark.slow
def test_stop_leaves_no_process_behind(torchserve: TorchServeInstance) -> None:
    import psutil

    frontend, gate = torchserve.frontend_pid(), torchserve.gate_pid()
    assert frontend is not None and gate is not None
    processes = [psutil.Process(frontend), *psutil.Process(frontend).children(recursive=True)]
    processes.append(psutil.Process(gate))
    assert {p.pid for p in processes} >= {w["pid"] for w in torchserve.describe()["workers"]}
    stopped = torchserve.stop()
    assert stopped.returncode == 0, stopped.stdout
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    assert not (torchserve.run_dir / ".model_server.pid").exists()
    assert not (torchserve.run_dir / "gate.pid").exists()
    # TorchServe's own keys go; the clients' inference key stays for the next start (#20).
    assert not (torchserve.run_dir / "backend" / "key_file.json").exists()
    assert (torchserve.run_dir / "key_file.json").stat().st_mode & 0o077 == 0
    # (an outside-in round: the management and API keys, dead once TorchServe stops, were
    # left in the clients' key file)
    assert list(json.loads((torchserve.run_dir / "key_file.json").read_text())) == ["inference"]
