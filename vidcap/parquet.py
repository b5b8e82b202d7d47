"""``--format parquet``: one row per sampled frame, in shards, for dataset builders.

Rows: ``video`` (the source), ``frame``, ``time``, ``caption`` (``outputs.frame_row``, as
in the JSONL files), the video's metadata columns (from a list file), and ``key`` (the
run's settings key). A shard holds whole videos and is written under a hidden ``.part``
name, then renamed into ``OUT/parquet/part-<run>-<n>.parquet``: a shard is whole or absent.
A video's resume record is written (by the ``Committer``) only once its shard is durable,
so a rerun redoes exactly the videos whose shard never landed. Read the folder with
``pyarrow.parquet.read_table(OUT / "parquet")`` or ``ray.data.read_parquet``.

One caveat: a run killed between a shard's rename and its videos' resume records (a few
small file writes) redoes those videos on the rerun, so their rows appear twice; rows are
unique by (``video``, ``frame``, ``key``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vidcap.commit import RunSettings, RunWriter, VideoJob
from vidcap.errors import UsageError
from vidcap.outputs import CaptionedFrame, frame_row

log = logging.getLogger(__name__)

FORMAT = "parquet"
RUN_FORMATS = (FORMAT,)  # formats written across videos (beside the per-video ones)
SHARD_DIR = "parquet"
DEFAULT_SHARD_ROWS = 100_000


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UsageError("--format parquet needs pyarrow: pip install 'vidcap[data]'") from exc
    return pa, pq


def metadata_schema(metadata: Sequence[dict[str, Any]]):  # -> pyarrow.Schema
    """One schema for the metadata of every input of the run, so every shard agrees."""
    pa, _ = _pyarrow()
    names: dict[str, None] = {}
    for meta in metadata:
        names.update(dict.fromkeys(meta))
    fields = []
    for name in names:
        values = [meta.get(name) for meta in metadata]
        try:
            kind = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            kind = pa.string()  # mixed types in one column: keep their text
        fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
    return pa.schema(fields)


class ParquetShardWriter:
    """A ``RunWriter``: buffers finished videos' rows, writes a shard every ``shard_rows``."""

    def __init__(
        self,
        out_dir: Path,
        key: str,
        metadata: Sequence[dict[str, Any]] = (),
        shard_rows: int = DEFAULT_SHARD_ROWS,
    ) -> None:
        if shard_rows < 1:
            raise UsageError(f"--shard-rows must be >= 1, got {shard_rows}")
        self.pa, self.pq = _pyarrow()
        self.folder = out_dir / SHARD_DIR
        self.key = key
        self.shard_rows = shard_rows
        self.meta_schema = metadata_schema(metadata)
        pa = self.pa
        self.schema = pa.schema(
            [
                pa.field("video", pa.string()),
                pa.field("frame", pa.int64()),
                pa.field("time", pa.float64()),
                pa.field("caption", pa.string()),
                *self.meta_schema,
                pa.field("key", pa.string()),
            ]
        )
        # Unique per run, so a rerun never overwrites a shard of an earlier one.
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        self.shards: list[Path] = []
        self._rows: list[dict[str, Any]] = []
        self._pending: list[int] = []

    def add(self, job: VideoJob, frames: Sequence[CaptionedFrame]) -> list[int]:
        meta = {name: job.metadata.get(name) for name in self.meta_schema.names}
        for frame in frames:
            self._rows.append({**frame_row(job.source, frame), **meta, "key": self.key})
        self._pending.append(job.id)
        return self._flush() if len(self._rows) >= self.shard_rows else []

    def close(self) -> list[int]:
        return self._flush()

    def _flush(self) -> list[int]:
        if not self._pending:
            return []
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"part-{self.run_id}-{len(self.shards):05d}.parquet"
        tmp = self.folder / f".{path.name}.part"  # hidden: readers of the folder skip it
        table = self.pa.Table.from_pylist(self._rows, schema=self.schema)
        try:
            self.pq.write_table(table, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("wrote %s (%d rows, %d videos)", path, len(self._rows), len(self._pending))
        self.shards.append(path)
        durable, self._pending, self._rows = self._pending, [], []
        return durable


def run_writers_for(
    settings: RunSettings,
    metadata: Sequence[dict[str, Any]] = (),
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> list[RunWriter]:
    """The writers across videos that ``settings.formats`` asks for (none, or Parquet).

    ``metadata``: every input's metadata (``InputVideo.metadata``), for the shards' schema.
    """
    if FORMAT not in settings.formats:
        return []
    return [ParquetShardWriter(settings.out_dir, settings.key(), metadata, shard_rows)]
