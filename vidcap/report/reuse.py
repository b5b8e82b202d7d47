"""Which of the page's data files still hold what the folder holds: the end of a run
rewrites only the shards whose videos changed.

A shard's fingerprint covers everything its entries are made from: each video's record
(its ``FolderVideo``), the signature (size, modification time, inode) of each file beside
it that the page reads (captions, scenes, mask report, the thumbnails' folder), where the
page finds its source, its ``.vtt`` script, which videos the shard holds, and the source of
the code that writes entries. Outputs are written under a ``.part`` name and renamed into
place, so a rewritten file has a new inode even where its size and time are alike.
``report/shards.json`` keeps each shard's fingerprint, size and frame count; a shard is
reused only when its fingerprint and its file's size are both unchanged.

Only folders whose finished videos all have their ``.jsonl`` are fingerprinted: there a
shard is a run of videos in name order that ends where a video's name says
(``vidcap.report._runs``), and is named by its fingerprint. Captions read from Parquet
shards come in the shards' order, not the videos', and such a folder's page is written
whole, as before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from vidcap import jsontext, regular
from vidcap.folder import MASK_SUFFIX, SCENES_SUFFIX, FolderVideo
from vidcap.outputs import THUMBS_DIR

INDEX = "shards.json"
SUFFIXES = (".jsonl", ".vtt", SCENES_SUFFIX, MASK_SUFFIX)  # the files beside a video it reads
RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(FolderVideo) if f.name != "folder")
# The code an entry comes from: a changed reader or writer means every shard is rewritten.
CODE = (("vidcap.report", "__init__.py"), ("vidcap", "folder.py"), ("vidcap", "mask.py"))


@dataclass(frozen=True)
class Cached:
    fingerprint: str
    size: int
    frames: int


def read_index(data: Path) -> dict[str, Cached]:
    """``report/shards.json``: what the last page's shards were made from (empty when it
    is absent, unreadable or written by other code)."""
    try:
        index = jsontext.loads(regular.read_text(data / INDEX))
        if index.get("code") != code_hash():
            return {}
        return {name: Cached(**entry) for name, entry in index["shards"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def index_text(shards: dict[str, Cached]) -> str:
    entries = {name: dataclasses.asdict(cached) for name, cached in shards.items()}
    return json.dumps({"code": code_hash(), "shards": entries}, indent=1) + "\n"


@cache
def code_hash() -> str:
    digest = hashlib.sha1()
    for package, name in CODE:
        digest.update(resources.files(package).joinpath(name).read_bytes())
    return digest.hexdigest()


def fingerprint(videos: Sequence[FolderVideo], beside: Sequence[Any]) -> str:
    """The fingerprint of a shard of ``videos``; ``beside``: per video, what the page
    computes without reading captions (where it finds the source, the ``.vtt`` script)."""
    parts = [
        [[getattr(video, name) for name in RECORD_FIELDS], _files(video), extra]
        for video, extra in zip(videos, beside, strict=True)
    ]
    text = json.dumps(parts, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1(text.encode("ascii")).hexdigest()


def has_captions_file(video: FolderVideo) -> bool:
    """A failed video, or a finished one whose captions are in its ``.jsonl``."""
    return not video.done or _signature(f"{_base(video)}.jsonl") is not None


def _files(video: FolderVideo) -> list[tuple[int, int, int] | None]:
    base = _base(video)
    thumbs = os.path.join(os.fspath(video.folder), THUMBS_DIR, video.name)
    return [_signature(base + suffix) for suffix in SUFFIXES] + [_signature(thumbs)]


def _base(video: FolderVideo) -> str:
    """``OUT/<name>`` as a string (``FolderVideo.output`` less the cost of a ``Path``)."""
    return os.path.join(os.fspath(video.folder), video.name)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns, stat.st_ino
