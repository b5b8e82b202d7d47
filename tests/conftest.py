"""Shared fixtures: generated test videos and the tiny model, loaded once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
sys.path.insert(0, str(TESTS_DIR))

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from videos import SPECS, VideoSpec, write_video  # noqa: E402


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
    """Every spec in ``videos.SPECS`` encoded once: name → (path, spec)."""
    folder = tmp_path_factory.mktemp("videos")
    return {s.name: (write_video(folder / f"{s.name}{s.suffix}", s), s) for s in SPECS}


@pytest.fixture(scope="session")
def tiny_captioner():
    from vidcap.model import Captioner
    from vidcap.settings import ModelSettings

    return Captioner.load(ModelSettings(model="tiny", device="cpu", batch_size=8))
