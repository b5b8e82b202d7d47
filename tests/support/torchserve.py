"""A real TorchServe on loopback for the tests (helpers, not fixtures).

``TorchServeInstance.launch`` builds the archive with ``torchserve/server-create.sh`` and
starts it with ``torchserve/start.sh`` exactly as a user would, on free ports, with its
model store, logs, sockets and pid file in a temporary folder (nothing is written into
the repository); ``stop`` runs ``torchserve/stop.sh``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ts.service import Service

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCHSERVE_DIR = REPO_ROOT / "torchserve"
MODEL_NAME = "vidcap"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def script_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for the scripts: this interpreter's tools first on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    env.update(overrides)
    return env


def run_script(name: str, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``torchserve/<name>``; output captured (stdout and stderr together)."""
    return subprocess.run(
        [str(TORCHSERVE_DIR / name)],
        cwd=TORCHSERVE_DIR,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Response:
    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class TorchServeInstance:
    root: Path
    env: dict[str, str]
    inference_url: str
    management_url: str
    metrics_url: str

    @property
    def run_dir(self) -> Path:
        return Path(self.env["TS_RUN_DIR"])

    @property
    def predictions_url(self) -> str:
        return f"{self.inference_url}/predictions/{MODEL_NAME}"

    @classmethod
    def launch(
        cls, root: Path, settings: Mapping[str, str], timeout: float = 300
    ) -> TorchServeInstance:
        """server-create.sh + start.sh; stops what was started if start fails."""
        inference, management, metrics, backend, grpc, grpc_management = free_ports(6)
        template = root / "config.properties"
        template.write_text(
            (TORCHSERVE_DIR / "config.properties").read_text()
            + "\n# tests: no host metrics collector process\ndisable_system_metrics=true\n"
        )
        env = script_env(
            {
                "MODEL_STORE": str(root / "model_store"),
                "TS_RUN_DIR": str(root / "run"),
                "TS_CONFIG": str(template),
                "INFERENCE_PORT": str(inference),
                "MANAGEMENT_PORT": str(management),
                "METRICS_PORT": str(metrics),
                "BACKEND_INFERENCE_PORT": str(backend),
                # free gRPC ports too, so test runs side by side on one host never collide
                "GRPC_INFERENCE_PORT": str(grpc),
                "GRPC_MANAGEMENT_PORT": str(grpc_management),
                "START_TIMEOUT": str(int(timeout)),
                **settings,
            }
        )
        instance = cls(
            root=root,
            env=env,
            inference_url=f"http://127.0.0.1:{inference}",
            management_url=f"http://127.0.0.1:{management}",
            metrics_url=f"http://127.0.0.1:{metrics}",
        )
        created = run_script("server-create.sh", env, timeout=120)
        if created.returncode != 0:
            raise RuntimeError(f"server-create.sh failed:\n{created.stdout}")
        started = run_script("start.sh", env, timeout=timeout + 60)
        if started.returncode != 0:
            instance.stop()
            raise RuntimeError(f"start.sh failed:\n{started.stdout}")
        log.info("TorchServe up:\n%s", started.stdout)
        return instance

    def stop(self) -> subprocess.CompletedProcess:
        return run_script("stop.sh", self.env, timeout=120)

    def key(self, kind: str) -> str | None:
        """The ``inference``/``management`` token, or None when token auth is off."""
        key_file = self.run_dir / "key_file.json"
        if not key_file.is_file():
            return None
        return json.loads(key_file.read_text())[kind]["key"]

    def auth(self, kind: str) -> dict[str, str]:
        key = self.key(kind)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def predict(
        self, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        all_headers = {**self.auth("inference"), "Content-Type": content_type, **(headers or {})}
        return http("POST", self.predictions_url, body, all_headers)

    def describe(self) -> dict:
        answer = http(
            "GET", f"{self.management_url}/models/{MODEL_NAME}", None, self.auth("management")
        )
        if answer.status != 200 or not isinstance(answer.body, list):
            raise RuntimeError(f"describe failed: {answer}")
        return answer.body[0]

    def frontend_pid(self) -> int | None:
        pid_file = self.run_dir / ".model_server.pid"
        return int(pid_file.read_text().strip()) if pid_file.is_file() else None

    def gate_pid(self) -> int | None:
        pid_file = self.run_dir / "gate.pid"
        return int(pid_file.read_text().strip()) if pid_file.is_file() else None

    def log_tail(self, lines: int = 40) -> str:
        log_file = self.run_dir / "model_log.log"
        return "\n".join(log_file.read_text().splitlines()[-lines:]) if log_file.is_file() else ""


def http(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: float = 120,
) -> Response:
    """One request on loopback: status, JSON body (or text), headers; never raises on 4xx/5xx."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - loopback
            return Response(answer.status, _parse(answer.read()), dict(answer.headers.items()))
    except urllib.error.HTTPError as error:
        return Response(error.code, _parse(error.read()), dict(error.headers.items()))


def _parse(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def multipart(
    parts: list[tuple[str, bytes, str | None]], boundary: str = "vidcap-test-boundary"
) -> tuple[bytes, str]:
    """A multipart/form-data body from (name, data, content type or None for a field)."""
    chunks = []
    for name, data, content_type in parts:
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if content_type is not None:
            disposition += f'; filename="{name}"\r\nContent-Type: {content_type}'
        chunks.append(f"--{boundary}\r\n{disposition}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# --- TorchServe's Python worker path without the Java front end ---


def write_archive(folder: Path, handler_section: Mapping[str, object]) -> Path:
    """An unzipped archive, as ``torch-model-archiver --archive-format no-archive`` writes it."""
    import yaml

    model_dir = folder / MODEL_NAME
    (model_dir / "MAR-INF").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "handlers" / "blip2_handler.py", model_dir)
    (model_dir / "model-config.yaml").write_text(yaml.safe_dump({"handler": dict(handler_section)}))
    manifest = {
        "runtime": "python",
        "model": {
            "modelName": MODEL_NAME,
            "handler": "blip2_handler.py",
            "modelVersion": "1.0",
            "configFile": "model-config.yaml",
        },
    }
    (model_dir / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    return model_dir


def load_worker_service(model_dir: Path, gpu_id: int | None, batch_size: int) -> Service:
    """Load the archive as ``ts/model_service_worker.py`` does for the front end's load command."""
    import ts
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import ModelLoaderFactory

    metrics = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    metrics.model_name = MODEL_NAME
    loader = ModelLoaderFactory.get_model_loader()
    service = loader.load(
        MODEL_NAME, str(model_dir), "blip2_handler.py", gpu_id, batch_size, None, True, metrics
    )
    service.set_cl_socket(None)  # only streaming handlers write to the socket
    return service


@dataclass
class WorkerAnswer:
    status: int
    headers: dict[str, str]
    body: object


def worker_request(
    request_id: str, parameters: list[tuple[str, str, bytes]], headers: Mapping[str, str]
) -> dict:
    """One request as the front end hands it to the worker (``Service.predict``'s input)."""
    return {
        "requestId": request_id.encode(),
        "parameters": [
            {"name": name, "contentType": content_type, "value": value}
            for name, content_type, value in parameters
        ],
        "headers": [{"name": k.encode(), "value": v.encode()} for k, v in headers.items()],
    }


def parse_predict_response(message: bytes) -> list[WorkerAnswer]:
    """Decode the worker's binary predict response (``create_predict_response``)."""
    pos = 0

    def integer() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("!i", message, pos)
        pos += 4
        return value

    def buffer(length: int | None = None) -> bytes:
        nonlocal pos
        length = integer() if length is None else length
        data = message[pos : pos + length]
        pos += length
        return data

    integer(), buffer()  # batch code and message
    answers = []
    while (id_length := integer()) != -1:
        buffer(id_length), buffer()  # request id, content type
        status = integer()
        buffer()  # reason phrase
        headers = {}
        for _ in range(integer()):
            key = buffer().decode()
            headers[key] = buffer().decode()
        answers.append(WorkerAnswer(status, headers, _parse(buffer())))
    return answers
