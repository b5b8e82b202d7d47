"""Videos whose file moved: the same bytes at another path keep their captions.

A library moved or mounted elsewhere (another disk, a container, a machine that mounts the
share at another path) names every video by a new path, and a rerun into the same folder
captioned each again under a new name. Now a done video whose recorded file is gone from
its path is taken over by a new input of the same size and SHA-256 (the digest its record
holds, ``inputs.SHA256``): the input gets that video's output name, and its outputs are
rewritten to name the new path — ``video`` in its JSONL and scene rows and in its Parquet
rows, its record's identity and ``video`` — instead of captioning it again.

Only inputs that no record names by their path are looked at, only against records of this
run's settings key whose file is gone, and a file is read only where its size is one such
record's. A file whose old path still exists (a copy) is another video, as before. Outputs
are checked before they are rewritten: every row must name the old or the new path, and
there must be one per frame (per scene) the record counts; otherwise (a folder edited by
hand; Parquet shards of a remote ``--out``, which are not downloaded) the video is captioned
again. A remote ``--out``'s JSONL files are downloaded to be rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcap import jsontext, regular
from vidcap.inputs import LOCAL_IDENTITY, SHA256, gone, is_url, read_digests
from vidcap.outputs import SCENES_FORMAT, write_atomic
from vidcap.records import write_record
from vidcap.wording import counted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Move:
    """A done video (``name``, its ``record``) whose file is now at ``identity``'s path."""

    name: str
    record: dict[str, Any]
    identity: dict[str, Any]  # the file's now, with the record's SHA-256
    video: str  # how outputs name the source now (``VideoJob.shown``)

    @property
    def old_video(self) -> str:
        return self.record["result"]["video"]


def held_names(videos: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The output name each path that ``videos`` (``records.folder_videos``) record holds."""
    held = {}
    for entry in videos:
        identity = entry.get("identity")
        if isinstance(identity, dict) and isinstance(identity.get("path"), str):
            held[identity["path"]] = entry["name"]
    return held


def find_moved(
    unnamed: Sequence[dict[str, Any]],
    videos: Sequence[dict[str, Any]],
    key: str,
    free: Callable[[str], bool],
) -> dict[str, dict[str, Any]]:
    """Which of ``unnamed`` (identities no record names) is the file of a done video of
    ``key`` whose path is gone: path → that video's entry (its name one ``free`` to take)."""
    sizes = {identity["size"] for identity in unnamed if _local(identity)}
    missing: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for entry in videos:
        identity = entry.get("identity")
        if (
            isinstance(identity, dict)
            and entry.get("status") == "done"
            and entry.get("key") == key
            and _local({k: v for k, v in identity.items() if k != SHA256})
            and isinstance(identity.get(SHA256), str)
            and identity["size"] in sizes
            and gone(identity["path"])
        ):
            missing.setdefault((identity["size"], identity[SHA256]), []).append(entry)
    sizes = {size for size, _ in missing}
    read = [identity for identity in unnamed if _local(identity) and identity["size"] in sizes]
    digests = read_digests(
        read,
        "that no record names, of the size of captioned videos whose file is gone, to "
        "compare their bytes (SHA-256)",
    )
    found: dict[str, dict[str, Any]] = {}
    for identity in read:
        entries = missing.get((identity["size"], digests[identity["path"]] or ""), [])
        if entry := next((entry for entry in entries if free(entry["name"])), None):
            entries.remove(entry)
            found[identity["path"]] = entry
    return found


def _local(identity: Mapping[str, Any]) -> bool:
    return (
        set(identity) == LOCAL_IDENTITY
        and isinstance(identity["path"], str)
        and not is_url(identity["path"])
        and isinstance(identity["size"], int)
    )


def relocate(out_dir: Path, moves: Sequence[Move], formats: Sequence[str]) -> set[str]:
    """Rewrite each move's outputs and record to name its new path; the names done.

    ``formats``: the run's (``jsonl``, ``scenes.jsonl`` and ``parquet`` hold the path).
    A move whose outputs do not check (see the module) is left as it is. Raises
    ``OSError`` (naming the file) where a rewrite fails; a rerun finishes it."""
    from vidcap.remote_out import fetch_placeholders

    rows = {move.name: _row_files(out_dir, move, formats) for move in moves}
    fetch_placeholders([path for files in rows.values() for path in files])  # (one call)
    texts: dict[str, dict[Path, str]] = {}
    for move in moves:
        rewritten = _rewritten_rows(move, rows[move.name])
        if rewritten is not None:
            texts[move.name] = rewritten
    if "parquet" in formats:
        from vidcap.parquet import rename_videos

        ready = [m for m in moves if m.name in texts]
        renamed = rename_videos(
            out_dir,
            {m.name: (m.old_video, m.video) for m in ready},
            {m.name: m.record["result"]["frames"] for m in ready},
        )
        texts = {m.name: texts[m.name] for m in ready if m.name in renamed}
    for move in moves:
        if move.name not in texts:
            log.info("%s: its outputs do not check; captioned again", move.video)
            continue
        for path, text in texts[move.name].items():
            write_atomic(path, text)
        record = move.record
        write_record(
            out_dir, move.name, record["key"], move.identity,
            {**record["result"], "video": move.video}, record.get("metadata") or {},
        )  # fmt: skip
    if texts:
        one = len(texts) == 1
        log.warning(
            "%s moved (the same bytes; %s): %s, and %s not captioned again",
            counted(len(texts), "video"),
            "its old path is gone" if one else "their old paths are gone",
            "its outputs now name its new path"
            if one
            else "their outputs now name their new paths",
            "it is" if one else "they are",
        )
    return set(texts)


def _row_files(out_dir: Path, move: Move, formats: Sequence[str]) -> dict[Path, Any]:
    """The move's files of rows that name its source, each with the rows it must hold."""
    result = move.record["result"]
    expected = {"jsonl": result.get("frames"), SCENES_FORMAT: result.get("scenes")}
    return {out_dir / f"{move.name}.{fmt}": expected[fmt] for fmt in formats if fmt in expected}


def _rewritten_rows(move: Move, paths: Mapping[Path, Any]) -> dict[Path, str] | None:
    """The move's JSONL files with ``video`` renamed (None where they do not check)."""
    texts = {}
    for path, count in paths.items():
        try:
            rows = [jsontext.loads(line) for line in regular.read_text(path).splitlines()]
        except (OSError, ValueError):
            return None
        names = (move.old_video, move.video)
        if len(rows) != count or not all(
            isinstance(row, dict) and row.get("video") in names for row in rows
        ):
            return None
        texts[path] = "".join(jsontext.line({**row, "video": move.video}) for row in rows)
    return texts
