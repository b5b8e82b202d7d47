"""What ``OUT/index.html`` is given, read back: its manifest, its data shards, each video's
entry (the report's own format, checked strictly as it is read)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vidcap.report import PAGE

SHARD_START, SHARD_END = "vidcapShard(JSON.parse(", "));\n"


def manifest_of(out: Path) -> dict:
    page = (out / PAGE).read_text(encoding="utf-8")
    found = re.search(
        r'<script type="application/json" id="vidcap-manifest">(.*?)</script>', page, re.S
    )
    assert found, "the page holds its manifest"
    return json.loads(found.group(1))


def shards_of(out: Path) -> list[dict]:
    shards = []
    for name in manifest_of(out)["shards"]:
        text = (out / name).read_text(encoding="ascii")
        assert text.startswith(SHARD_START) and text.endswith(SHARD_END)
        shards.append(json.loads(json.loads(text[len(SHARD_START) : -len(SHARD_END)])))
    return shards


def videos_of(out: Path) -> dict[str, dict]:
    """Each video's entry by name, with ``captions``: its caption texts, in frame order."""
    entries = {}
    for shard in shards_of(out):
        for video in shard["videos"]:
            video["captions"] = [shard["captions"][i] for i in video.get("c", [])]
            entries[video["n"]] = video
    return entries
