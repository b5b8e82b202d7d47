"""What to caption: files, folders, list files and fsspec URLs, each with its metadata.

``expand_inputs`` turns what a user typed into ``InputVideo``\\ s:

- a video file, or a folder (searched recursively for video extensions, sorted; hidden
  files and folders — names starting with ``.``, macOS's ``__MACOSX`` — are passed over
  with one warning: the ``._clip.mp4`` beside every ``clip.mp4`` copied from a Mac is its
  resource fork, no video);
- a list file: ``.txt`` (one path or URL per line; blank lines and ``#`` comments skipped),
  ``.csv``, ``.tsv`` or ``.parquet`` with a ``path`` column (or the one ``path_column`` names: a
  video2dataset list's ``url``), whose other columns are carried into the outputs as the
  video's metadata. Relative paths in a local list file are relative to it;
- an fsspec URL (``s3://``, ``gs://``, ``https://``, ``file://``, …) of a video, a folder
  or a list file. ``file://`` URLs become plain paths.

A missing path given on the command line is a usage error; a missing entry of a list file
is a per-video failure (a dataset of millions of rows should not stop at one bad row).

``is_url`` is the one test of "is this a URL" (``file://`` ones are local paths). Inputs are
told apart on reruns by ``source_identity``: a local file by its resolved path, size and
modification time, a remote one by what its store says about it (``remote_identity``: size,
ETag, modification time…). Remote videos are decoded from a local copy (``local_copy``).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import csv
import errno
import hashlib
import io
import logging
import os
import posixpath
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from vidcap import regular
from vidcap.errors import EMPTY_PATH, UsageError, VideoError, install_hint
from vidcap.ffmpeg import not_a_video_file
from vidcap.outputs import OUTPUT_COLUMNS
from vidcap.records import STATE_DIR
from vidcap.video import VIDEO_EXTENSIONS
from vidcap.wording import counted

log = logging.getLogger(__name__)

IDENTITY_THREADS = 32  # concurrent metadata requests to a store
# A local file's identity (``source_identity``); a record adds its bytes' SHA-256 under
# ``SHA256`` (``same_source``: a file copied without its times is still the one captioned).
LOCAL_IDENTITY = {"path", "size", "mtime_ns"}
SHA256 = "sha256"
DIGEST_CHUNK = 1 << 20
DIGEST_THREADS = 8  # files read at once to compare their bytes (a local disk, NFS)
SAID_READING = 1 << 30  # bytes: files read to compare their bytes are announced (a second)

_prefetched: dict[str, dict[str, Any]] = {}  # URL → identity, taken once by remote_identity

LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".parquet")
PATH_COLUMN = "path"
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # the lists with columns (a .txt has none)
# URL inputs over HTTP(S): seconds to connect, and without a byte before a download fails.
HTTP_CONNECT_S = 30.0
HTTP_STALL_S = 60.0
PROGRESS_S = 1.0  # how often a download that goes on says so (``local_copy``)
# A list's metadata column named like an output column (``caption``: a dataset's own
# captions) is carried under this prefix, not over vidcap's.
CLASH_PREFIX = "list_"
# What a store says about an object that changes when the object does.
IDENTITY_FIELDS = ("size", "ETag", "etag", "md5Hash", "crc32c", "generation", "LastModified",
                   "last_modified", "mtime", "updated", "version_id", "VersionId")  # fmt: skip


@dataclass(frozen=True)
class InputVideo:
    """One video to caption: a local path or URL, and the metadata carried into its outputs."""

    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def is_url(item: str) -> bool:
    """An fsspec URL that is not a local ``file://`` one."""
    return "://" in item and not item.startswith("file://")


def local_path(item: str) -> str:
    """A ``file:`` URL as the local path it names, its escapes undone (``Path.as_uri()`` and
    browsers write ``file:///a%20b.mp4`` for ``/a b.mp4``; ``file://localhost/…`` names this
    machine too); anything else as it is. One naming another machine
    (``file://server/share/…``) is a usage error: it is not a path here (read as one, it
    was the relative folder ``server/share/…``)."""
    if item[:7].lower() != "file://":
        return item
    rest = item[7:]
    if rest[:10].lower() == "localhost/":
        rest = rest[9:]
    elif rest and not rest.startswith("/"):
        host = rest.split("/", 1)[0]
        raise UsageError(
            f"{shown_source(item)} names the machine {host!r}: give a path of this one "
            f"(file:///… or file://localhost/…), or mount it here"
        )
    return unquote(rest)


def expand_inputs(
    items: Sequence[str | os.PathLike | InputVideo],
    path_column: str = PATH_COLUMN,
    out: Path | None = None,
) -> list[InputVideo]:
    """Every video the inputs name, in order (``InputVideo``\\ s as they are); a CSV or
    Parquet list's paths are in its ``path_column``. ``out``: the run's own output folder,
    passed over without a word where a folder holds it (other vidcap output folders met in
    a walk are passed over with a warning). Raises ``UsageError`` on a bad input."""
    if any(not isinstance(raw, InputVideo) and not os.fspath(raw).strip() for raw in items):
        raise UsageError(f"an input is {EMPTY_PATH}")  # (a library caller's: the CLI's refuses)
    named = [local_path(str(raw)) for raw in items if not isinstance(raw, InputVideo)]
    if path_column != PATH_COLUMN and not any(_suffix(item) in TABLE_SUFFIXES for item in named):
        raise UsageError(
            f"--path-column {path_column!r} names a column of a CSV, TSV or Parquet list, and "
            "no such list is among the inputs"
        )
    videos: list[InputVideo] = []
    for raw in items:
        if isinstance(raw, InputVideo):
            videos.append(raw)
            continue
        item = local_path(str(raw))
        if is_url(item):
            videos.extend(_expand_url(item, path_column))
        else:
            videos.extend(_expand_local(Path(item), path_column, out))
    if not videos:
        raise UsageError("no videos found in the given inputs")
    prefetch_identities([v.source for v in videos if is_url(v.source)])
    return videos


def _hidden(relative: Path) -> bool:
    """Is a path found in a folder (``relative`` to it) hidden: a name starting with ``.``
    on the way (``._clip.mp4``, ``.cache/``), or macOS's ``__MACOSX`` folder of a zip?"""
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _in_folder(folder: str, found: list[str]) -> list[str]:
    """The video paths of ``found`` (under ``folder``), sorted, the hidden ones passed over
    with one warning."""
    videos = sorted(p for p in found if Path(p).suffix.lower() in VIDEO_EXTENSIONS)
    hidden = [p for p in videos if _hidden(Path(p).relative_to(folder))]
    if hidden:
        log.warning(
            "%s: passed over %s with a video's name (names starting with '.', "
            "macOS's __MACOSX folders: %s); name one to caption it",
            folder, counted(len(hidden), "hidden file"), Path(hidden[0]).name,
        )  # fmt: skip
    garbled = [p for p in videos if not _utf8(p)]
    if garbled:
        log.warning(
            "%s: passed over %s whose name is not UTF-8 (%s)%s",
            _shown(folder), counted(len(garbled), "file"), _shown(garbled[0]), RENAME_HINT,
        )  # fmt: skip
    passed_over = set(hidden) | set(garbled)
    return [p for p in videos if p not in passed_over]


# Outputs name their videos in UTF-8 (JSON, Parquet, the page): a name in another encoding
# (Latin-1 from an old archive, a zip made on Windows) cannot be written there.
RENAME_HINT = (
    ": outputs name each video in UTF-8, so rename it (convmv -f latin1 -t utf-8 -r --notest "
    "FOLDER)"
)


def require_utf8_name(path: str | Path, flag: str | None = None) -> None:
    """A usage error for a video whose name is not UTF-8: outputs (JSON, the page, file
    names) name each video in UTF-8 (``vidcap caption``, ``mask``, ``clips`` alike).
    ``flag``: the option naming an output instead (``--out``), which outputs and messages
    name in UTF-8 too (its bytes were written raw into JSON and CSV)."""
    if _utf8(str(path)):
        return
    if flag is not None:
        raise UsageError(
            f"{flag} {_shown(str(path))}: the name is not UTF-8 (outputs and messages name it "
            "in UTF-8): choose another"
        )
    raise UsageError(f"{_shown(str(path))}: the name is not UTF-8{RENAME_HINT}")


def _utf8(path: str) -> bool:
    """Is ``path`` valid UTF-8 (no bytes Python keeps as lone surrogates)?"""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(path: str) -> str:
    """``path`` printable: bytes that are not UTF-8 as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _files_under(folder: Path, out: Path | None = None) -> list[str]:
    """Every file under ``folder``, into linked folders too (a dataset's folders are often
    links to other disks), each folder once (a link back up is no loop). A link to nothing
    with a video's name, a pipe or device with one, a folder that cannot be read, and a
    vidcap output folder inside (its ``.vidcap`` state: clips cut there are no new
    videos), are passed over with a warning — the run's own ``out`` without one: the
    videos a user expects are never dropped silently."""
    found: list[str] = []
    broken: list[str] = []
    special: list[str] = []
    unreadable: list[OSError] = []
    walked: set[tuple[int, int]] = set()
    outputs: list[str] = []
    for root, dirs, files in os.walk(folder, onerror=unreadable.append, followlinks=True):
        try:
            stat = os.stat(root)
        except OSError as exc:  # (gone while the walk went on)
            unreadable.append(exc)
            dirs[:] = []
            continue
        if (stat.st_dev, stat.st_ino) in walked:
            dirs[:] = []  # reached again through a link (its output folders counted once)
            continue
        walked.add((stat.st_dev, stat.st_ino))
        ours = [d for d in dirs if os.path.isdir(os.path.join(root, d, STATE_DIR))]
        if ours:  # a vidcap output folder inside the inputs: its clips are no new videos
            outputs += [p for d in ours if not _same(p := os.path.join(root, d), out)]
            dirs[:] = [d for d in dirs if d not in ours]
        for name in files:
            file = os.path.join(root, name)
            if os.path.isfile(file):
                found.append(file)
            elif Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                (special if os.path.exists(file) else broken).append(file)
    if broken:
        log.warning(
            "%s: passed over %s to nothing with a video's name (%s → %s)",
            folder, counted(len(broken), "link"), broken[0], os.readlink(broken[0]),
        )  # fmt: skip
    if outputs:
        log.warning(
            "%s: passed over %s inside it (%s): what vidcap wrote is "
            "not taken as input; name such a folder to caption what is in it",
            _shown(str(folder)), counted(len(outputs), "vidcap output folder"), _shown(outputs[0]),
        )  # fmt: skip
    if special:
        log.warning("%s: passed over %s with a video's name (%s %s)", folder,
                    counted(len(special), "pipe or device", "pipes or devices"), special[0],
                    not_a_video_file(special[0]))  # fmt: skip
    for error in unreadable:
        log.warning("%s: cannot read it (%s): its videos are not captioned", error.filename,
                    error.strerror)  # fmt: skip
    return found


def _same(folder: str, out: Path | None) -> bool:
    try:
        return out is not None and os.path.samefile(folder, out)
    except OSError:
        return False


def _suffix(item: str) -> str:
    """The suffix of a path or URL (a URL's query is no part of it)."""
    return Path(urlsplit(item).path if is_url(item) else item).suffix.lower()


def _expand_local(path: Path, path_column: str, out: Path | None = None) -> list[InputVideo]:
    if path.is_dir():
        return [InputVideo(p) for p in _in_folder(str(path), _files_under(path, out))]
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    if (reason := not_a_video_file(path)) is not None:
        raise UsageError(f"{_shown(str(path))}: {reason}")
    if path.suffix.lower() in LIST_SUFFIXES:
        return _read_list(str(path), path.read_bytes(), str(path.parent), path_column)
    require_utf8_name(path)
    return [InputVideo(str(path))]


def _expand_url(url: str, path_column: str) -> list[InputVideo]:
    fs, path = _filesystem(url)
    suffix = _suffix(url)
    shown = shown_source(url)  # (what messages name: without a password)
    try:
        if suffix in LIST_SUFFIXES:
            with fs.open(path, "rb") as handle:
                return _read_list(shown, handle.read(), url, path_column)
        if suffix not in VIDEO_EXTENSIONS and fs.isdir(path):
            found = _in_folder(path.rstrip("/"), fs.find(path))
            return [InputVideo(fs.unstrip_protocol(p)) for p in found]
    except FileNotFoundError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, FileNotFoundError) or _not_found(cause):
            raise UsageError(f"no such file or folder: {shown}") from exc
        # (fsspec's HTTP says FileNotFoundError of a host it cannot reach: that is told)
        reason = str(cause).replace(url, shown) or type(cause).__name__
        raise UsageError(f"cannot read {shown}: {reason}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {str(exc).replace(url, shown)}") from exc
    return [InputVideo(url)]


def _not_found(cause: BaseException) -> bool:
    """Is ``cause`` (of fsspec's FileNotFoundError) a server's answer that there is no such
    file (HTTP 404 or 410), not a failure to reach it?"""
    return getattr(cause, "status", None) in (404, 410)


@contextmanager
def _told_while_growing(name: str, progress: Callable[[int], None] | None) -> Iterator[None]:
    """While the block runs, ``progress(size)`` every ``PROGRESS_S`` in which the file
    ``name`` grew (from a thread of its own)."""
    if progress is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        told = 0
        while not done.wait(PROGRESS_S):
            with contextlib.suppress(OSError):
                size = os.path.getsize(name)
                if size > told:
                    told = size
                    progress(size)

    watcher = threading.Thread(target=watch, name="vidcap-download-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def _filesystem(url: str):
    """fsspec's filesystem for ``url`` and its path there. Over HTTP(S), a download may take
    as long as it takes while data comes (aiohttp's default, which fsspec keeps, fails any
    request after 300 s in all: a 1 GB video at 3 MB/s), and fails once none has come for
    ``HTTP_STALL_S``."""
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with torch/transformers
        raise UsageError(f"URL inputs need fsspec: {install_hint('data')}") from exc
    options: dict[str, Any] = {}
    if urlsplit(url).scheme.lower() in ("http", "https"):
        import aiohttp

        stall = aiohttp.ClientTimeout(
            total=None, sock_connect=HTTP_CONNECT_S, sock_read=HTTP_STALL_S
        )
        options["client_kwargs"] = {"timeout": stall}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        shown = shown_source(url)
        raise UsageError(f"cannot open {shown}: {fsspec_error(exc).replace(url, shown)}") from exc


def fsspec_error(exc: Exception) -> str:
    """What fsspec says of a URL it cannot open, with the command that installs what it
    misses ("Install s3fs to access S3" gives no ``pip install``)."""
    text = str(exc)
    if isinstance(exc, ImportError) and (found := re.search(r"[Ii]nstall (\w[\w.-]*) to ", text)):
        text += f" (pip install {found.group(1)})"
    return text


def _read_list(name: str, data: bytes, base: str | None, path_column: str) -> list[InputVideo]:
    """The videos of one list file, a CSV's or Parquet's paths in ``path_column``; ``base``
    resolves relative paths (``_resolve``)."""
    suffix = _suffix(name)
    if suffix == ".txt":
        rows = [
            {path_column: line.strip()}
            for line in _text(name, data).splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    elif suffix in (".csv", ".tsv"):
        rows = _csv_rows(name, _text(name, data), path_column, "\t" if suffix == ".tsv" else None)
    else:
        rows = _parquet_rows(name, data, path_column)
    videos = []
    for number, row in enumerate(rows, start=1):
        path = row.pop(path_column)
        if path is None or not str(path).strip():
            raise UsageError(f"{name}: row {number} has an empty {path_column!r}")
        if not isinstance(path, str):  # (a Parquet column of bytes, lists, numbers)
            raise UsageError(
                f"{name}: {path_column!r} holds {type(path).__name__} values, not text "
                f"(row {number}: {str(path)[:60]}); give paths or URLs as strings"
            )
        if "\0" in str(path):
            raise UsageError(f"{name}: row {number}'s {path_column!r} holds a NUL byte")
        meta = {CLASH_PREFIX + k if k in OUTPUT_COLUMNS else k: v for k, v in row.items()}
        videos.append(InputVideo(_resolve(str(path).strip(), base), _plain(meta)))
    return videos


# Excel's optional first line of a CSV, naming its separator ("sep=;").
EXCEL_SEPARATOR = re.compile(r"\ufeff?sep=([^\w\r\n \"'])")
# A CSV field may be as long as this (csv's own limit, 128 KiB, is short of a transcript).
CSV_FIELD_MAX = 256 * 2**20


def _csv_rows(
    name: str, text: str, path_column: str, delimiter: str | None
) -> list[dict[str, Any]]:
    """The rows of a CSV (``delimiter`` None: found from the file) or TSV list file, its
    columns checked; a malformed file is a usage error naming its line."""
    header, _, rest = text.partition("\n")
    skipped = 0  # lines before the header
    if (hint := EXCEL_SEPARATOR.fullmatch(header.rstrip("\r"))) is not None:
        # Excel's first line "sep=;" names the separator, and is no header
        text, header, delimiter = rest, rest.partition("\n")[0], delimiter or hint[1]
        skipped = 1
    if delimiter is None:
        # Excel in much of Europe separates with ";" (tab: a "CSV" pasted from a sheet); a
        # header holding no comma but one of those is read with it.
        delimiter = next((d for d in ";\t" if d in header), ",") if "," not in header else ","
    # strict: a quote left open (``"12"" screen``) or text after a closing one is an error
    # naming its line, not the rest of the file swallowed into one field without a word
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter, strict=True)
    limit = csv.field_size_limit(CSV_FIELD_MAX)
    try:
        columns = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            extra = row.pop(None, None)  # (csv's key for fields past the header's)
            if extra:
                raise UsageError(
                    f"{name}: line {reader.line_num + skipped} has {len(columns) + len(extra)} "
                    f"fields, the header {len(columns)}: a field holding a comma needs quotes"
                )
            rows.append(row)
        unnamed = [i for i, column in enumerate(columns) if not column.strip()]
        for row in rows:  # an unnamed column left empty (a spreadsheet's stray comma) is none
            for i in unnamed:
                if not (row.get(columns[i]) or "").strip():
                    row.pop(columns[i], None)
        kept = [c for c in columns if c.strip() or any(c in r for r in rows)]
        _check_columns(name, kept, path_column)
        return rows
    except csv.Error as exc:
        why = str(exc)
        if why in ("unexpected end of data", "EOF inside string"):
            why = 'a quote opened and never closed (a quote inside a field is written twice: "")'
        elif "expected after" in why:
            why = "text after a field's closing quote (a quote inside a field is written twice)"
        raise UsageError(
            f"{name}: not a readable CSV file (after line {reader.line_num + skipped}: {why})"
        ) from None
    finally:
        csv.field_size_limit(limit)


def _text(name: str, data: bytes) -> str:
    """A list file's text: UTF-8 (a byte-order mark allowed), or UTF-16 that starts with
    its byte-order mark (Windows Notepad's "Unicode", Excel's "Unicode Text"); anything
    else is a usage error naming the first byte that is not UTF-8 (Excel's plain "CSV" is
    Windows-1252)."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and data[:4] != codecs.BOM_UTF32_LE:
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass  # (then said as UTF-8's first bad byte)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{_shown(name)}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save the list as UTF-8 (in Excel: CSV UTF-8)"
        ) from None


def _parquet_rows(name: str, data: bytes, path_column: str) -> list[dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UsageError(
            f"{name}: Parquet list files need pyarrow: {install_hint('data')}"
        ) from exc
    try:
        columns = pq.read_schema(pa.BufferReader(data)).names
    except pa.ArrowException as exc:
        raise UsageError(f"{name}: not a readable Parquet file ({_one_line(exc)})") from exc
    _check_columns(name, columns, path_column)  # (before reading: a column named twice)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise UsageError(f"{name}: not a readable Parquet file ({_one_line(exc)})") from exc
    return table.to_pylist()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_columns(name: str, columns: Sequence[str], path_column: str) -> None:
    """A list's columns: ``path_column``, and every other one named once (it becomes a
    metadata field, a Parquet column); one named like an output column is carried as
    ``list_<name>`` (saying so), unless the list has a column of that name too."""
    unnamed = [i + 1 for i, column in enumerate(columns) if not str(column).strip()]
    if unnamed:
        raise UsageError(f"{name}: column {unnamed[0]} has no name; name it or remove it")
    twice = sorted({column for column in columns if list(columns).count(column) > 1})
    if twice:
        raise UsageError(
            f"{name}: column {', '.join(map(repr, twice))} appears more than once: the values "
            "of one would be lost; rename or remove one"
        )
    if path_column not in columns:
        raise UsageError(
            f"{name}: no {path_column!r} column (columns: {', '.join(columns) or 'none'}); "
            "--path-column names the one that holds the videos' paths or URLs"
        )
    clashes = sorted(OUTPUT_COLUMNS & (set(columns) - {path_column}))
    taken = [c for c in clashes if CLASH_PREFIX + c in columns]
    if taken:
        raise UsageError(
            f"{name}: columns {taken[0]!r} and {CLASH_PREFIX + taken[0]!r}: the first is named "
            f"like an output column and would be carried as the second; rename one"
        )
    if clashes:
        many = len(clashes) > 1
        log.warning(
            "%s: %s %s %s carried as %s (vidcap's outputs have %s)",
            name, "columns" if many else "column", ", ".join(map(repr, clashes)),
            "are" if many else "is", ", ".join(repr(CLASH_PREFIX + c) for c in clashes),
            "columns of those names" if many else "a column of that name",
        )  # fmt: skip


def _resolve(path: str, base: str | None) -> str:
    """A list entry: a URL or absolute path as is; a relative path against the list's folder
    (``base``: the folder of a local list, the URL of a remote one)."""
    path = local_path(path)
    if is_url(path) or base is None or os.path.isabs(path):
        return path
    if is_url(base):
        return _beside(base, path)
    return os.path.join(base, path)


def _beside(url: str, path: str) -> str:
    """Relative ``path`` against the folder of the list at ``url`` (``s3://b/lists/a.txt``
    and ``clips/x.mp4``: ``s3://b/lists/clips/x.mp4``), with the list's credentials and
    without its query; over HTTP, spaces and other characters a URL cannot hold are escaped."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        path = quote(path, safe="/%:@!$&'()*+,;=~")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path) or "/", path))
    return urlunsplit(parts._replace(path=joined, query="", fragment=""))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """Metadata as JSON values: what a Parquet list's typed columns hold made plain —
    dates and times as ISO strings, decimals as their exact text, durations as seconds,
    bytes as base64, structs and lists value by value."""
    return {str(key): _plain_value(value) for key, value in row.items()}


def _plain_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return str(value)  # (a Decimal's exact text; anything else as it prints)


def prefetch_identities(urls: Sequence[str]) -> None:
    """Ask the store about many objects at once (a dataset's URLs one by one would take
    hours); the answers wait for ``remote_identity``, which takes each one once."""
    if len(urls) < 2:
        return
    with ThreadPoolExecutor(IDENTITY_THREADS) as pool:
        for url, identity in zip(urls, pool.map(_identity_or_none, urls), strict=True):
            if identity is not None:
                _prefetched[url] = identity


def _identity_or_none(url: str) -> dict[str, Any] | None:
    try:
        return _ask_identity(url)
    except OSError:
        return None  # asked again by remote_identity, which reports the error


def source_identity(source: str) -> dict[str, Any]:
    """What tells one input from another (its ``"path"`` names it): a local file's resolved
    path, size and modification time, or a URL's ``remote_identity``. Raises ``OSError``
    when the input cannot be reached."""
    source = local_path(source)
    if is_url(source):
        return remote_identity(source)
    path = Path(source).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def gone(path: object) -> bool:
    """Is ``path`` a local file's path (absolute, not a URL) at which nothing stands now,
    not even a broken link: a file moved or deleted since a record or journal named it?"""
    return (
        isinstance(path, str)
        and os.path.isabs(path)
        and not is_url(path)
        and not os.path.lexists(path)
    )


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hex (what ``sha256sum`` prints). Raises ``OSError``,
    ``regular.NotRegular`` for a FIFO or a device (never read: a record planted in a shared
    folder may make a FIFO given as input look like a file to check, and reading it hangs)."""
    return file_sha256_and_state(path)[0]


def file_sha256_and_state(path: str | Path) -> tuple[str, FileState]:
    """``file_sha256``, and the state (``file_state``) of the very file it read: read from
    the descriptor its bytes came through, so a file renamed over ``path`` meanwhile is not
    taken for it."""
    digest = hashlib.sha256()
    with regular.open_regular(path) as file:
        while chunk := file.read(DIGEST_CHUNK):
            digest.update(chunk)
        state = file_state(os.fstat(file.fileno()))
    return digest.hexdigest(), state


# A file's state as a record knows it: (size, modification time in ns). Another state
# between two moments: written, replaced (renamed over) or touched in between. Not its
# device and inode: FUSE mounts (s3fs, sshfs without use_ino) may number a file anew at
# each lookup, and every long decode would look like a file replaced.
FileState = tuple[int, int]


def file_state(info: os.stat_result) -> FileState:
    return (info.st_size, info.st_mtime_ns)


def same_source(
    recorded: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    by_content: bool = True,
    digest: str | None = None,
) -> bool:
    """Is ``current`` (``source_identity`` now) the source a record's identity names?

    Its identity unchanged, or (``by_content``) a file ``retimed`` whose bytes are the
    ones captioned: the SHA-256 the record holds (``SHA256``, kept by the run that
    captioned it). ``digest``: the file's, where the caller has read it (``file_digests``);
    else it is read here."""
    if not recorded:
        return False
    if _without_digest(recorded) == current:
        return True
    if not (by_content and retimed(recorded, current)):
        return False
    if digest is None:
        digest = sha256_or_none(current["path"])
    return digest == recorded[SHA256]


def retimed(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Is ``current`` a local file whose modification time alone is not the one ``recorded``
    holds (copied without its times, downloaded again, touched), with a SHA-256 recorded
    to tell by its bytes? The same path and size: a file elsewhere is another video (a
    record names one path), one of another size other bytes."""
    if not recorded or not isinstance(recorded.get(SHA256), str):
        return False
    known = _without_digest(recorded)
    return (
        set(known) == set(current) == LOCAL_IDENTITY
        and known != current
        and all(known[field] == current[field] for field in ("path", "size"))
    )


def _without_digest(identity: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in identity.items() if name != SHA256}


def read_digests(identities: Sequence[Mapping[str, Any]], why: str) -> dict[str, str | None]:
    """``file_digests`` of local files (``source_identity``s), by path; files that make
    ``SAID_READING`` bytes or more are announced first: ``reading N videos (X GB) <why>``."""
    if (size := sum(identity["size"] for identity in identities)) >= SAID_READING:
        log.warning("reading %s (%.1f GB) %s", counted(len(identities), "video"), size / 1e9, why)
    return file_digests([identity["path"] for identity in identities])


def file_digests(paths: Sequence[str]) -> dict[str, str | None]:
    """Each file's SHA-256 (None where it cannot be read), read ``DIGEST_THREADS`` at a time:
    a rerun over a library copied without its times reads every file once."""
    if len(paths) < 2:
        return {path: sha256_or_none(path) for path in paths}
    with ThreadPoolExecutor(DIGEST_THREADS) as pool:  # (hashlib and reads release the GIL)
        return dict(zip(paths, pool.map(sha256_or_none, paths), strict=True))


def sha256_or_none(path: str | Path) -> str | None:
    """``file_sha256``, or None where the file cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def remote_identity(url: str) -> dict[str, Any]:
    """What tells one remote object from another: its URL plus what the store says (size,
    ETag, modification time…). Raises ``OSError`` when the object cannot be reached."""
    prefetched = _prefetched.pop(url, None)
    return prefetched if prefetched is not None else _ask_identity(url)


def _ask_identity(url: str) -> dict[str, Any]:
    fs, path = _filesystem(url)
    try:
        info = fs.info(path)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - stores raise their own types; one OSError out
        raise OSError(f"{url}: {exc}") from exc
    identity: dict[str, Any] = {"path": url}
    for key in IDENTITY_FIELDS:
        value = info.get(key)
        if value is not None:
            identity[key] = value if isinstance(value, (int, float, str)) else str(value)
    return identity


def shown_source(source: str) -> str:
    """``source`` as it is written and shown: a URL without the password of a
    ``user:password@`` it was given with (used to download, never written into outputs,
    ``summary.json``, resume records, the page or messages); anything else as it is."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    if "@" not in parts.netloc:
        return source
    credentials, _, place = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{place}" if user else place))


@contextmanager
def local_copy(source: str, progress: Callable[[int], None] | None = None) -> Iterator[Path]:
    """A local path to decode ``source`` from: the path itself for local files, else a
    temporary copy downloaded with fsspec (deleted on exit). ``progress(bytes)``: called
    every ``PROGRESS_S`` while the copy grows (the decoder's heartbeat: a download that goes
    on is no stalled decoder, however long it takes; one that stops is ``HTTP_STALL_S``')."""
    source = local_path(source)
    if not is_url(source):
        yield Path(source)
        return
    fs, path = _filesystem(source)
    suffix = Path(path).suffix if Path(path).suffix.lower() in VIDEO_EXTENSIONS else ""
    handle, name = tempfile.mkstemp(prefix="vidcap-", suffix=suffix)
    os.close(handle)
    try:
        log.info("downloading %s", source)
        try:
            with _told_while_growing(name, progress):
                fs.get_file(path, name)
        except FileNotFoundError:  # (fsspec's word for HTTP 404 and a missing key alike)
            raise VideoError(f"{source}: cannot download: not found") from None
        except TimeoutError:  # (aiohttp's, where no byte came for HTTP_STALL_S)
            raise VideoError(
                f"{source}: cannot download: nothing came for {HTTP_STALL_S:g} s (the server "
                "stopped sending)"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # this machine's disk, not the URL
                raise
            raise VideoError(f"{source}: cannot download ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - stores raise their own types: one line out
            raise VideoError(f"{source}: cannot download ({type(exc).__name__}: {exc})") from None
        yield Path(name)
    finally:
        os.unlink(name)
