"""The shipped tiny checkpoint as the Hugging Face cache holds a hub model, for tests of
what vidcap does with a hub model's commits (no network: ``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import os
from pathlib import Path

from vidcap.tiny import CHECKPOINT_DIR

HUB_ID = "vidcap-test/tiny"


def hub_snapshot(cache: Path, commit: str) -> None:
    """The tiny checkpoint as ``cache`` holds commit ``commit`` of ``HUB_ID``, made its
    ``main`` (the model updated on the hub, then downloaded)."""
    repo = cache / "models--vidcap-test--tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in CHECKPOINT_DIR.iterdir():
        if file.is_file():
            (repo / "snapshots" / commit / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def hub_env(cache: Path) -> dict[str, str]:
    """A process environment reading ``cache`` only (it is read at import: new processes)."""
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
