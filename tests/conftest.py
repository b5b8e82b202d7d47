"""Shared fixtures: generated test videos, the tiny model, a local HTTP server.

Helpers (video generation, test servers, TorchServe) are modules of ``tests.support``;
pytest's ``pythonpath`` setting (pyproject.toml) puts the repository root on the import path.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.browser"]  # the `browser` fixture: Chromium via Playwright

# Under pytest-xdist each worker would run torch (and OpenMP in its helpers) on every core,
# so two workers on two cores fought over them: one thread per core share instead, set
# before torch is imported here or in a subprocess a test starts. (Measured on the 2-core
# CI machine: ``make test-fast`` 161 s with the default threads, 137 s with this.)
if (_workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")).isdigit():
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(_workers))))

from tests.support.servers import QuietHTTPServer  # noqa: E402 - after the env

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.support.videos import SPECS, VideoSpec, write_video  # noqa: E402 - after the env


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def generated_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, VideoSpec]]:
    """Every spec in ``tests.support.videos.SPECS`` encoded once: name → (path, spec)."""
    folder = tmp_path_factory.mktemp("videos")
    return {s.name: (write_video(folder / f"{s.name}{s.suffix}", s), s) for s in SPECS}


@pytest.fixture(scope="session")
def tiny_captioner():
    from vidcap.model import Captioner
    from vidcap.settings import ModelSettings

    return Captioner.load(ModelSettings(model="tiny", device="cpu", batch_size=8))


@pytest.fixture(scope="session")
def scenes(tiny_captioner):
    """Pictures the tiny model captions each differently, the last one ``POISON``
    (``tests.support.watched``)."""
    from tests.support.watched import distinct_scenes

    return distinct_scenes(tiny_captioner)


@pytest.fixture(scope="session")
def said(tiny_captioner, scenes):
    """What the tiny model says of each of ``scenes`` alone."""
    from tests.support.watched import Said

    return Said(tiny_captioner, scenes)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A real HTTP server (a thread) over an empty folder, one per test module: (folder, base URL)."""
    root = tmp_path_factory.mktemp("http")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = QuietHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
