"""``--format parquet``: one row per sampled frame, in shards, for dataset builders.

Rows: ``video`` (the source), ``name`` (the video's output name: its JSONL file's, its
record's), ``frame``, ``time``, ``caption`` (``outputs.frame_row``, as in the JSONL files),
``damaged`` (true on a frame whose picture may show decoding damage, as the JSONL's
``"damaged": true``; else false), with ``--skip-similar`` ``same_as`` (null on captioned
frames), with ``--scenes`` the frame's ``scene``, ``scene_start`` and ``scene_end`` (s),
the video's metadata columns (from a list file), and ``key`` (the run's settings key). A
run without those flags writes the same columns as before they existed, but for
``damaged`` (added with the concealed-damage marks) and ``name`` (added when two files
given by one text, a relative path from two folders, lost each other's rows): shards of
earlier versions lack them. A shard holds whole videos and is written under a hidden
``.part`` name, then renamed into ``OUT/parquet/part-<run>-<n>.parquet``: a shard is
whole or absent. A video's resume record is written (by the ``Committer``) only once its
shard is durable, so a rerun redoes exactly the videos whose shard never landed. Read the
folder with ``pyarrow.parquet.read_table(OUT / "parquet")`` or ``ray.data.read_parquet``.

A video's rows are those of its latest captioning, as its JSONL file is: a video redone
(other settings, another ``--format`` list, the file changed, or a run killed before its
record was written) has its earlier rows removed from the earlier shards once its new
shard is durable (each such shard rewritten under a ``.part`` name and renamed over, or
deleted when nothing is left in it; ``_drop_earlier_rows`` says which rows). Rows are
unique by (``name``, ``frame``) once a run has finished, except in a remote ``--out``,
whose earlier shards are not downloaded: there a redone video's earlier rows stay, and
rows are unique by (``name``, ``frame``, ``key``). A run that writes no Parquet into a folder
that holds shards still removes the earlier rows of the videos it redoes (the same writer,
writing no shard: ``rows=False``), a batch of ``DROP_BATCH_VIDEOS`` at a time, each such
video's record waiting for its batch (a video no shard holds rows of waits for nothing), so
no shard keeps captions its video's JSONL no longer has.
"""

from __future__ import annotations

import bisect
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidcap.errors import UsageError, install_hint
from vidcap.inputs import gone
from vidcap.jobs import RUN_FORMATS, RunSettings, RunWriter, VideoJob
from vidcap.outputs import CaptionedFrame, frame_row, is_output_name, new_part
from vidcap.records import identity_of, read_record
from vidcap.regular import is_regular, own_folder
from vidcap.scenes import Scene

log = logging.getLogger(__name__)

FORMAT = RUN_FORMATS[0]
SHARD_DIR = "parquet"
DEFAULT_SHARD_ROWS = 100_000
# Redone videos whose earlier rows a run writing no Parquet removes at once (each batch
# rewrites the shards that hold them).
DROP_BATCH_VIDEOS = 1000


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UsageError(f"--format parquet needs pyarrow: {install_hint('data')}") from exc
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
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            # mixed types in one column (a CSV's text, a Parquet list's numbers), or an
            # integer past int64 (a uint64 column): kept as text (``metadata_value``)
            kind = pa.string()
        fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
    return pa.schema(fields)


def agreeing_schema(schema: Any, folder: Path) -> Any:  # -> pyarrow.Schema
    """The run's metadata ``schema`` made to agree with the shards ``folder`` holds (an
    earlier run's, from other lists): a column they hold as text is text here too (each
    value its JSON text, as for one run's lists that disagree), whole numbers where they
    hold floats are floats. Readers that merge the shards' schemas (``ray.data.
    read_parquet``, ``pyarrow.unify_schemas``) fail on a column of two types, and
    ``read_table`` casts to the first shard's. Where no such change makes them agree
    (numbers there, text here), a warning names the column."""
    pa, pq = _pyarrow()
    wanted = set(schema.names)
    earlier: dict[str, Any] = {}
    for shard in _shards(folder) if wanted else ():  # (footers only; until each is found)
        try:
            for held in pq.read_schema(shard):
                if held.name in wanted:
                    earlier.setdefault(held.name, held.type)
        except (OSError, pa.ArrowException):
            continue  # (not a shard: a reader of the folder says so)
        if len(earlier) == len(wanted):
            break
    fields = []
    for column in schema:
        had = earlier.get(column.name)
        kind = column.type
        if had is None or had == kind:
            pass
        elif pa.types.is_string(had) or pa.types.is_large_string(had):
            kind = pa.string()
        elif pa.types.is_floating(had) and pa.types.is_integer(kind):
            kind = had
        else:
            log.warning(
                "%s: the column %r is %s in the shards there and %s in this run's lists: "
                "readers that merge the shards' schemas (ray.data.read_parquet) refuse the "
                "folder; give it one type in every list (or another --out)",
                folder, column.name, had, kind,
            )  # fmt: skip
        fields.append(pa.field(column.name, kind))
    return pa.schema(fields)


def metadata_value(value: Any, text: bool) -> Any:
    """A metadata value for its Parquet column; ``text``: the column holds text (its
    values' types differ), where a value that is not text is written as its JSON text
    (``5``, ``true``, ``["k", 1]``), never failing the shard."""
    if not text or value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class ParquetShardWriter:
    """A ``RunWriter``: buffers finished videos' rows, writes a shard every ``shard_rows``.
    With ``rows=False`` it writes none: it only removes the earlier rows of the videos
    redone (a run without ``--format parquet`` into a folder that holds shards)."""

    def __init__(
        self,
        out_dir: Path,
        key: str,
        metadata: Sequence[dict[str, Any]] = (),
        shard_rows: int = DEFAULT_SHARD_ROWS,
        same_as: bool = False,
        scenes: bool = False,
        rows: bool = True,
    ) -> None:
        self.rows = rows
        if shard_rows < 1:
            raise UsageError(f"--shard-rows must be >= 1, got {shard_rows}")
        self.pa, self.pq = _pyarrow()
        self.folder = out_dir / SHARD_DIR
        self.key = key
        self.shard_rows = shard_rows
        self.meta_schema = metadata_schema(metadata)
        if rows:  # (the columns' types as the folder's shards hold them)
            self.meta_schema = agreeing_schema(self.meta_schema, self.folder)
        pa = self.pa
        self.schema = pa.schema(
            [
                pa.field("video", pa.string()),
                pa.field("name", pa.string()),
                pa.field("frame", pa.int64()),
                pa.field("time", pa.float64()),
                pa.field("caption", pa.string()),
                pa.field("damaged", pa.bool_()),
                *([pa.field("same_as", pa.int64())] if same_as else []),
                *(
                    [
                        pa.field("scene", pa.int64()),
                        pa.field("scene_start", pa.float64()),
                        pa.field("scene_end", pa.float64()),
                    ]
                    if scenes
                    else []
                ),
                *self.meta_schema,
                pa.field("key", pa.string()),
            ]
        )
        # Unique per run, so a rerun never overwrites a shard of an earlier one.
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        self.shards: list[Path] = []
        self._rows: list[dict[str, Any]] = []
        self._pending: list[int] = []
        self._redone = _Redone()  # the videos whose earlier rows must go
        self._earlier: dict[tuple[str, str], set[Path]] | None = None  # ``_shard_index``

    def add(
        self, job: VideoJob, frames: Sequence[CaptionedFrame], scenes: Sequence[Scene] = ()
    ) -> list[int]:
        names = self._names_of(job)
        if not self.rows:
            return self._drop_later(job, names)
        meta = {
            field.name: metadata_value(job.metadata.get(field.name), field.type == self.pa.string())
            for field in self.meta_schema
        }
        starts = [scene.start_frame for scene in scenes]
        for frame in frames:
            row = {
                "damaged": False, **frame_row(job.shown, frame), "name": job.name, **meta,
                "key": self.key,
            }  # fmt: skip
            if scenes:
                scene = scenes[max(0, bisect.bisect_right(starts, frame.index) - 1)]
                row.update(
                    scene=scene.number,
                    scene_start=round(scene.start, 6),
                    scene_end=round(scene.end, 6),
                )
            self._rows.append(row)
        self._hold(job, names)
        return self._flush() if len(self._rows) >= self.shard_rows else []

    def _hold(self, job: VideoJob, names: set[str]) -> None:
        """``job`` durable at the next flush, which removes its earlier rows (``names``:
        the ``video`` values they may hold)."""
        self._pending.append(job.id)
        self._redone.names.add(job.name)
        self._redone.videos.update(names)

    def _drop_later(self, job: VideoJob, names: set[str]) -> list[int]:
        """(``rows=False``) A video no shard holds rows of is durable at once; one whose
        rows are there waits for its batch, which removes them."""
        if self._earlier is None:
            self._earlier = self._index()
        keys = {("name", job.name)} | {("video", name) for name in names}
        if keys.isdisjoint(self._earlier):
            return [job.id]
        self._hold(job, names)
        return self._flush() if len(self._pending) >= DROP_BATCH_VIDEOS else []

    def remove(self, job: VideoJob) -> list[str]:
        """A failed video's earlier rows, at once (its JSONL file goes as it fails): they
        were of another file at its path, or of other settings."""
        if self._earlier is None:
            self._earlier = self._index()
        dropped = self._drop_earlier_rows(_Redone({job.name}, self._names_of(job)))
        return [f"{dropped} rows in {self.folder.name}/"] if dropped else []

    def close(self) -> list[int]:
        return self._flush()

    def _flush(self) -> list[int]:
        if not self._pending:
            return []
        if self._earlier is None:  # before this run's first shard: the earlier runs' ones
            self._earlier = self._index()
            # and the shards a killed run (SIGKILL) was writing: hidden, skipped by readers,
            # never renamed in; none is being written now (the run holds the folder,
            # ``out_lock``, as it did not yet when this writer was made)
            for stale in self.folder.glob(".part-*.parquet.part") if self.folder.is_dir() else ():
                stale.unlink(missing_ok=True)
        if self.rows:
            own_folder(self.folder, parents=False)
            path = self.folder / f"part-{self.run_id}-{len(self.shards):05d}.parquet"
            write_shard(self.pa.Table.from_pylist(self._rows, schema=self.schema), path)
            log.info("wrote %s (%d rows, %d videos)", path, len(self._rows), len(self._pending))
            self.shards.append(path)
        self._drop_earlier_rows(self._redone)
        durable, self._pending, self._rows, self._redone = self._pending, [], [], _Redone()
        return durable

    def _names_of(self, job: VideoJob) -> set[str]:
        """The ``video`` values this video's earlier rows may hold: its source now, and the
        one its earlier record names (the same file, given under another path; or a file
        gone from its path, whose name this video took: ``vidcap.moved``)."""
        names = {job.shown}
        record = read_record(self.folder.parent, job.name)
        earlier = (identity_of(record) or {}).get("path")
        result = record.get("result") if record else None
        if _same_or_gone(earlier, job.identity.get("path")) and isinstance(result, dict):
            if isinstance(result.get("video"), str):
                names.add(result["video"])
        return names

    def _index(self) -> dict[tuple[str, str], set[Path]]:
        """Which earlier shard holds rows of which video (``_shard_index``)."""
        return {key: set(shards) for key, shards in _shard_index(self.folder).items()}

    def _drop_earlier_rows(self, redone: _Redone) -> int:
        """Remove the rows of the ``redone`` videos from the earlier shards (now in this
        run's): rows of their output names; and rows of their sources but those of another
        video's, whose record holds the row's name and names that source (what is left: a
        run killed before it wrote the record, the name given to another file since) or, in
        a shard from before the ``name`` column, every row of their sources. Another video that shares a source's text (``clip.mp4`` given from
        two folders) keeps its rows."""
        earlier = self._earlier or {}
        keys = {("name", n) for n in redone.names} | {("video", v) for v in redone.videos}
        shards = sorted({shard for key in keys for shard in earlier.pop(key, ())})
        if not shards:
            return 0
        import pyarrow.compute as pc

        dropped = 0
        names = self.pa.array(sorted(redone.names), self.pa.string())
        videos = self.pa.array(sorted(redone.videos), self.pa.string())
        for shard in shards:
            table = self.pq.read_table(shard)
            drop = pc.is_in(table.column("video"), value_set=videos)
            if "name" in table.column_names:
                for name in pc.unique(table.filter(drop).column("name")).to_pylist():
                    video = None if name in redone.names else self._held_by(name)
                    if video is not None:  # another video's rows: they stay
                        theirs = pc.and_(
                            pc.equal(table.column("name"), name),
                            pc.equal(table.column("video"), video),
                        )
                        drop = pc.and_(drop, pc.invert(pc.fill_null(theirs, False)))
                drop = pc.or_(drop, pc.is_in(table.column("name"), value_set=names))
            kept = table.filter(pc.invert(pc.fill_null(drop, False)))
            if kept.num_rows == 0:
                shard.unlink()
            else:
                write_shard(kept, shard)
            log.info("%s: removed %d rows of videos redone", shard, table.num_rows - kept.num_rows)
            dropped += table.num_rows - kept.num_rows
        return dropped

    def _held_by(self, name: object) -> str | None:
        """The source (``video``) of the video whose record holds output name ``name`` (a
        row's, so checked first), if any."""
        if not (isinstance(name, str) and is_output_name(name)):
            return None
        result = (read_record(self.folder.parent, name) or {}).get("result")
        video = result.get("video") if isinstance(result, dict) else None
        return video if isinstance(video, str) else None


@dataclass
class _Redone:
    """The videos a shard holds, whose earlier rows must go: by output name, and by the
    ``video`` values their earlier rows may hold (``_names_of``)."""

    names: set[str] = field(default_factory=set)
    videos: set[str] = field(default_factory=set)


def write_shard(table: Any, path: Path) -> None:
    """``table`` to ``path``: whole or not at all (a hidden ``.part``, fsynced, renamed)."""
    hidden = path.with_name(f".{path.name}.part")  # readers of the folder skip it
    with new_part(path, hidden) as handle:
        _pyarrow()[1].write_table(table, handle)


def _same_or_gone(earlier: object, path: object) -> bool:
    """Does a record of ``earlier`` name this video's rows: the same file, or a file whose
    path is gone (``vidcap.moved``: its name now this file's)?"""
    return isinstance(earlier, str) and (earlier == path or gone(earlier))


def _shards(folder: Path) -> list[Path]:
    """The shards of ``folder`` to read. An empty file is the placeholder of a shard in a
    remote ``--out`` (``vidcap.remote_out``), not downloaded: its rows are left as they are."""
    shards = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return [shard for shard in shards if is_regular(shard) and shard.stat().st_size > 0]


def _shard_index(folder: Path) -> dict[tuple[str, str], dict[Path, int]]:
    """Which shard of ``folder`` holds how many rows of which video: by ``("name", output
    name)`` and by ``("video", source)``. A shard from before the ``name`` column is known
    by its sources only."""
    pa, pq = _pyarrow()
    import pyarrow.compute as pc

    index: dict[tuple[str, str], dict[Path, int]] = {}
    for shard in _shards(folder):
        try:
            columns = [c for c in ("video", "name") if c in pq.read_schema(shard).names]
            table = pq.read_table(shard, columns=columns)
        except (OSError, pa.ArrowException) as exc:
            log.warning("%s: not a vidcap shard (%s); left as it is", shard, exc)
            continue
        for column in columns:
            for count in pc.value_counts(table.column(column)).to_pylist():
                if isinstance(count["values"], str):
                    index.setdefault((column, count["values"]), {})[shard] = count["counts"]
    return index


def rename_videos(
    out_dir: Path, renames: Mapping[str, tuple[str, str]], frames: Mapping[str, int]
) -> set[str]:
    """The rows of each video ``name`` in ``renames`` (its output name → its ``(old, new)``
    source text) made to name ``new``, in every shard of ``out_dir``, for the videos whose
    rows number ``frames[name]`` (``vidcap.moved``: a video whose file moved); the names
    done. A video's rows are those holding its name; in a shard from before the ``name``
    column, those holding its old (or, half renamed, its new) text. Each shard touched is
    rewritten whole under a hidden ``.part`` name and renamed over."""
    index = _shard_index(out_dir / SHARD_DIR)
    named = {shard for (column, _), counts in index.items() if column == "name" for shard in counts}

    def unnamed(key: tuple[str, str]) -> dict[Path, int]:  # (shards without the column)
        return {shard: n for shard, n in index.get(key, {}).items() if shard not in named}

    def shards_of(name: str, old: str, new: str) -> dict[Path, int]:
        found = dict(index.get(("name", name), {}))
        for text in {old, new}:
            for shard, count in unnamed(("video", text)).items():
                found[shard] = found.get(shard, 0) + count
        return found

    ready = {
        name: texts
        for name, texts in renames.items()
        if sum(shards_of(name, *texts).values()) == frames[name]
    }
    shards = sorted(
        {
            shard
            for name, (old, new) in ready.items()
            if new != old
            for shard in shards_of(name, old, new)
        }
    )
    if shards:
        pa, pq = _pyarrow()
        import pyarrow.compute as pc

        moving = {name: new for name, (old, new) in ready.items() if new != old}
        by_text = {ready[name][0]: new for name, new in moving.items()}
        for shard in shards:
            table = pq.read_table(shard)
            column = table.column("video")
            key, renamed_to = ("name", moving) if shard in named else ("video", by_text)
            values = pa.array(sorted(renamed_to), pa.string())
            news = pa.array([renamed_to[value] for value in values.to_pylist()], pa.string())
            at = pc.index_in(table.column(key), value_set=values)
            renamed = pc.if_else(pc.is_valid(at), pc.take(news, at), column)
            write_shard(
                table.set_column(table.schema.get_field_index("video"), "video", renamed), shard
            )
            log.info("%s: rows of videos that moved renamed", shard)
    return set(ready)


def run_writers_for(
    settings: RunSettings,
    metadata: Sequence[dict[str, Any]] = (),
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> list[RunWriter]:
    """The writers across videos that ``settings.formats`` asks for (none, or Parquet), and
    without Parquet where the folder holds shards, one that removes the earlier rows of
    the videos redone (``rows=False``).

    ``metadata``: every input's metadata (``InputVideo.metadata``), for the shards' schema.
    """
    rows = FORMAT in settings.formats
    if not rows and not _shards(settings.out_dir / SHARD_DIR):
        return []
    if not rows:
        try:
            _pyarrow()
        except UsageError:
            log.warning(
                "%s holds Parquet shards, and pyarrow is not installed: the rows there of "
                "videos this run redoes stay as they were (%s)",
                settings.out_dir / SHARD_DIR, install_hint("data"),
            )  # fmt: skip
            return []
    sampling = settings.sampling
    return [
        ParquetShardWriter(
            settings.out_dir,
            settings.key(),
            metadata,
            shard_rows,
            same_as=sampling.skip_similar is not None,
            scenes=sampling.scenes,
            rows=rows,
        )
    ]
