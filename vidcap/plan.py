"""The videos a run must do: each input once, its output name, and whether a previous run
already did it (``plan``).

A video's output name is its file stem, unless another file holds it (in this run, or by
an earlier run's record): then the stem plus a hash of its path. A rerun skips a video only
when its resume record (``vidcap.records``) holds this run's settings key and the source's
identity (``vidcap.inputs.source_identity``: resolved path, size, modification time; or,
retimed, the same SHA-256) and every output exists. The same file changed in place is
redone under its name; the same bytes at a new path, where the recorded path is gone, take
the name over (``vidcap.moved``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vidcap.inputs import (
    SHA256,
    gone,
    is_url,
    read_digests,
    retimed,
    same_source,
    shown_source,
    source_identity,
)
from vidcap.jobs import OUTPUTS, RunSettings, VideoJob, VideoResult
from vidcap.moved import Move, find_moved, held_names, relocate
from vidcap.outputs import is_output_name, remove_output, short_stem, thumbs_folder
from vidcap.records import (
    STATE_DIR,
    folder_videos,
    identity_of,
    read_record,
    record_times,
    write_record,
)
from vidcap.wording import counted

log = logging.getLogger(__name__)


def _stem(source: str) -> str:
    """The output name a source starts from: its file name without its extension (a URL's:
    the last part of its path, unescaped, never its query), control characters as ``_``;
    never ``.`` or ``..`` (a URL ending ``/..`` named its thumbnails' folder
    ``thumbs/..``, the output folder itself, which the commit replaced), nor empty."""
    name = unquote(urlsplit(source).path) if is_url(source) else source
    stem = Path(name.rstrip("/").rsplit("/", 1)[-1]).stem
    stem = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in stem)
    return short_stem(stem if is_output_name(stem) else "video")


def _folded(name: str) -> str:
    """What a case-insensitive file system sees of a name (macOS, SMB shares, exFAT): two
    names equal here are one file there, so one of them must not be taken as is."""
    return unicodedata.normalize("NFC", name).casefold()


def _hashed(stem: str, path: str) -> str:
    """The output name of a file whose stem is taken: the stem and a hash of its path."""
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def _state_path(record: dict | None) -> str | None:
    return (identity_of(record) or {}).get("path")


def _failed_and_gone(record: dict | None) -> bool:
    """Is ``record`` a failed video's whose local file is gone from its path? It vouches
    for no outputs, so its name is free for a new input: the same file moved (whose journal
    then goes on: ``journal.same_file``) or another, whose record replaces it."""
    failed = (record or {}).get("result", {}).get("status") == "failed"
    return failed and gone(_state_path(record))


def _forget_failed_and_gone(out_dir: Path) -> None:
    """The records of failed videos whose local file is gone from its path, removed: they
    hold no caption, only an error, and kept the folder's totals (``summary.json``, the
    page) counting a failure of a file deleted since, a broken download cleaned up. A
    journal such a video left stays: a file moved goes on from it (``journal.same_file``)."""
    forgotten = []
    for video in folder_videos(out_dir):  # (the summary's index, where it is current)
        name = video.get("name")
        if video.get("status") != "failed" or not gone((video.get("identity") or {}).get("path")):
            continue
        if isinstance(name, str) and _failed_and_gone(read_record(out_dir, name)):
            with contextlib.suppress(OSError):
                remove_output(out_dir / STATE_DIR / f"{name}.json")
                forgotten.append(name)
    if forgotten:
        log.info(
            "%s whose %s gone no longer listed: %s", counted(len(forgotten), "failed video"),
            "file is" if len(forgotten) == 1 else "files are", ", ".join(forgotten[:5]),
        )  # fmt: skip


def _now_names(owner: str | None, path: str) -> bool:
    """Does ``owner`` (the path a record's file had, resolved then) lead to the file at
    ``path`` now? A file replaced by a link to another (``ln -sf``, a deduplicating sync):
    what the record captioned is no longer there, and the input given by that path takes
    the name, its outputs replacing the record's (they were kept beside, under the same
    path, as if the old file still stood there)."""
    if owner is None or not os.path.isabs(owner) or is_url(owner):
        return False
    return os.path.realpath(owner) == path


def plan(
    sources: Sequence[str], settings: RunSettings, metadata: Sequence[dict] | None = None
) -> tuple[list[VideoJob], list[VideoResult]]:
    """The videos a run must do, and the results of those a previous run already did.

    The same file given twice is one video. A video's output name is the one a record
    gives its file (by path; or, for a file that moved, ``vidcap.moved``: by its bytes,
    where the recorded path is gone); else its file stem, unless another input of this run
    or an earlier run's record (another file, unless a failed video's whose file is gone:
    no outputs to keep) holds that stem: then the stem plus a hash of the path. Stems are
    compared as a case-insensitive file system compares names (``Clip`` and ``clip``,
    ``café`` composed or not): on one, two such outputs would be one file, the second
    overwriting the first.
    """
    out_dir = settings.out_dir
    _forget_failed_and_gone(out_dir)
    entries = _entries(sources, metadata)
    records: dict[str, dict | None] = {}

    def record_of(name: str) -> dict | None:  # each record read once, however often asked
        if name not in records:
            records[name] = read_record(out_dir, name)
        return records[name]

    key = settings.key()
    names, moved = _names(entries, out_dir, key, record_of)

    def to_read(identity: dict) -> bool:  # done, but its file's modification time changed
        record = record_of(names[identity["path"]]) or {}
        done = record.get("key") == key and record.get("result", {}).get("status") == "done"
        return done and retimed(identity_of(record), identity)

    # read at once, in parallel (a library copied without its times), to compare their bytes
    digests = read_digests(
        [identity for _, identity, _ in entries if to_read(identity)],
        "whose modification time is not the record's, to compare their bytes with the ones "
        "captioned (SHA-256)",
    )
    todo: list[VideoJob] = []
    resumed: list[VideoResult] = []
    moves: list[tuple[VideoJob, Move]] = []
    other_revisions: Counter[str] = Counter()
    kept_by_bytes = 0  # done videos whose file changed its modification time, not its bytes
    lacking: list[str] = []  # an output of each done video the folder no longer holds
    relisted = 0  # done videos whose list row now gives other values (other columns)
    for source, identity, meta in entries:
        name = names[identity["path"]]
        record = record_of(name)
        job = VideoJob(len(todo), source, name, identity, meta)
        recorded = (record or {}).get("result", {})
        done = recorded.get("status") == "done" and (record or {}).get("key") == key
        done_with = recorded.get("revision") if done else None
        if settings.revision and done_with and done_with != settings.revision:
            other_revisions[done_with] += 1  # another commit of the model: redone
        elif done and (missing := _missing_output(out_dir, name, record, settings)):
            lacking.append(missing)
        elif done and "parquet" in settings.formats and _other_values(record, meta):
            relisted += 1  # (its Parquet rows hold the values it was captioned with)
        elif done:
            recorded_as = identity_of(record) or {}
            if identity["path"] in moved and recorded_as == moved[identity["path"]]:
                move = Move(name, record, {**identity, SHA256: recorded_as[SHA256]}, job.shown)
                moves.append((job, move))
                continue
            if same_source(recorded_as, identity, digest=digests.get(identity["path"])):
                if retimed(recorded_as, identity):  # the same bytes, another modification time
                    kept_by_bytes += 1
                    with contextlib.suppress(OSError):  # (a full disk: read again next time)
                        write_record(
                            out_dir, name, key, {**identity, SHA256: recorded_as[SHA256]},
                            record["result"], record.get("metadata") or {},
                        )  # fmt: skip
                resumed.append(_resumed(record["result"]))
                continue
        todo.append(job)
    if moves:
        formats = (*settings.formats, *settings.video_formats())
        relocated = relocate(out_dir, [move for _, move in moves], formats)
        for job, move in moves:
            if move.name in relocated:
                resumed.append(_resumed({**move.record["result"], "video": move.video}))
            else:
                todo.append(replace(job, id=len(todo)))
    if kept_by_bytes:
        one = kept_by_bytes == 1
        log.warning(
            "%s %s a new modification time but the bytes %s captioned from (the same "
            "SHA-256): %s kept", counted(kept_by_bytes, "video"), "has" if one else "have",
            "it was" if one else "they were", "its captions are" if one else "their captions are",
        )  # fmt: skip
    if lacking:
        log.warning(
            "%s done before %s captioned again, as %s outputs are not all in the folder "
            "(%s%s)", counted(len(lacking), "video"), "is" if len(lacking) == 1 else "are",
            "its" if len(lacking) == 1 else "their", ", ".join(lacking[:3]),
            ", …" if len(lacking) > 3 else "",
        )  # fmt: skip
    if relisted:
        one = relisted == 1
        log.warning(
            "%s done before %s captioned again: %s list row gives other values than %s "
            "Parquet rows hold (its other columns, edited or added since)",
            counted(relisted, "video"), "is" if one else "are", "its" if one else "their",
            "its" if one else "their",
        )  # fmt: skip
    say_other_precisions(resumed, settings)
    say_earlier_outputs(resumed, settings)
    for commit, count in sorted(other_revisions.items()):
        log.warning(
            "%s of %s %s captioned with revision %s of %s, not %s, the one this "
            "run captions with: redone (one folder, one model)",
            counted(count, "video"), out_dir, "was" if count == 1 else "were", commit,
            settings.model, settings.revision,
        )  # fmt: skip
    return todo, resumed


def _other_values(record: dict, values: dict) -> bool:
    """Does a list row give other values (its columns but the path) than the video's record
    holds, the ones its Parquet rows were written with? (As JSON, in any order.) An input
    with none (named on the command line, a plain list) keeps the values it had."""
    recorded = record.get("metadata") or {}
    return bool(values) and json.dumps(recorded, sort_keys=True) != json.dumps(
        values, sort_keys=True
    )


def say_other_precisions(resumed: Sequence[VideoResult], settings: RunSettings) -> None:
    """One line per precision other than this run's that kept videos were captioned in
    (``plan`` says it; a Ray run, whose precision is known once its cluster is, says it then)."""
    other = Counter(
        r.precision
        for r in resumed
        if settings.precision and r.precision not in (None, settings.precision)
    )
    for precision, count in sorted(other.items()):
        log.warning(
            "%s of %s %s captioned in %s, not %s as this run captions: kept (the precision is "
            "not part of the settings key, so new captions may be worded differently; --dtype "
            "%s matches them)", counted(count, "video"), settings.out_dir,
            "was" if count == 1 else "were", precision, settings.precision, precision,
        )  # fmt: skip


def say_earlier_outputs(resumed: Sequence[VideoResult], settings: RunSettings) -> None:
    """One line for the kept videos captioned by a vidcap whose outputs revision is older
    than this one's (``OUTPUTS``): fixes since may give some of them other frame times,
    pictures or captions under the same settings, and the settings key cannot tell."""
    earlier = [r for r in resumed if r.outputs < OUTPUTS]
    if earlier:
        one = len(earlier) == 1
        log.warning(
            "%s of %s %s captioned by an earlier vidcap (outputs revision %d, this one's %d): "
            "kept, as the settings are the same, but fixes since may give %s other frame "
            "times, pictures or captions (CHANGELOG.md); to caption %s again, remove %s "
            "record, %s/<name>.json (%s%s)", counted(len(earlier), "video"), settings.out_dir,
            "was" if one else "were", min(r.outputs for r in earlier), OUTPUTS,
            "it" if one else "some of them", "it" if one else "one", "its" if one else "a video's",
            settings.out_dir / STATE_DIR, ", ".join(r.name for r in earlier[:3]),
            ", …" if len(earlier) > 3 else "",
        )  # fmt: skip


def _entries(
    sources: Sequence[str], metadata: Sequence[dict] | None
) -> list[tuple[str, dict, dict]]:
    """Each input once, by its resolved path: (source, identity, metadata). A list file's
    rows that name one file with other values in their other columns (a label, a caption of
    its own) are said in one line: the file is one video, with its first row's values."""
    entries: list[tuple[str, dict, dict]] = []
    seen: dict[str, tuple[str, str]] = {}  # path → the first source naming it, its values
    others: list[str] = []  # sources naming a file again, with other values
    for i, source in enumerate(sources):
        try:
            identity = source_identity(str(source))
        except OSError as exc:
            identity = {"path": str(source), "error": str(exc)}
        if identity["path"] != (shown := shown_source(identity["path"])):  # (a password)
            error = identity.get("error")
            identity["path"] = shown
            if error is not None:
                identity["error"] = error.replace(str(source), shown)
        values = dict(metadata[i]) if metadata else {}
        compared = json.dumps(values, sort_keys=True, default=str)  # (NaN, as NaN: equal)
        if (first := seen.get(identity["path"])) is not None:
            if compared != first[1]:
                others.append(f"{shown_source(str(source))} as {shown_source(first[0])}")
            continue
        seen[identity["path"]] = (str(source), compared)
        entries.append((str(source), identity, values))
    if others:
        log.warning(
            "%s a file that an earlier one names, with other values in the other columns "
            "(%s%s): a file is one video, captioned once, and its outputs carry the first "
            "row's values", counted(len(others), "list row") + (" names" if len(others) == 1
            else " name"), "; ".join(others[:3]), ", …" if len(others) > 3 else "",
        )  # fmt: skip
    return entries


def _names(
    entries: Sequence[tuple[str, dict, dict]],
    out_dir: Path,
    key: str,
    record_of: Callable[[str], dict | None],
) -> tuple[dict[str, str], dict[str, dict]]:
    """Each entry's output name (see ``plan``), by path; and the paths of files that moved,
    each with the identity its record holds (``vidcap.moved``)."""
    stems = Counter(_folded(_stem(source)) for source, _, _ in entries)
    names: dict[str, str] = {}
    taken: set[str] = set()  # folded

    def take(path: str, name: str) -> None:
        names[path] = name
        taken.add(_folded(name))

    def held(path: str, name: str) -> bool:
        return _folded(name) not in taken and _state_path(record_of(name)) == path

    for source, identity, _ in entries:  # a name stays with the file that has it
        stem = _stem(source)
        name = next(
            (n for n in (stem, _hashed(stem, identity["path"])) if held(identity["path"], n)), None
        )
        if name is not None:
            take(identity["path"], name)
    moved: dict[str, dict] = {}
    unnamed = [identity for _, identity, _ in entries if identity["path"] not in names]
    if unnamed and record_times(out_dir):  # names given to a file that moved, or by its bytes
        videos = folder_videos(out_dir)
        by_path = held_names(videos)
        for identity in unnamed:
            name = by_path.get(identity["path"])
            if name is not None and held(identity["path"], name):
                take(identity["path"], name)
        unnamed = [identity for identity in unnamed if identity["path"] not in names]
        for path, entry in find_moved(
            unnamed, videos, key, lambda n: _folded(n) not in taken
        ).items():
            take(path, entry["name"])
            moved[path] = entry["identity"]
    for source, identity, _ in entries:
        if identity["path"] in names:
            continue
        stem = _stem(source)
        owner = _state_path(record_of(stem))
        folded = _folded(stem)
        free = (
            owner in (None, identity["path"])
            or _failed_and_gone(record_of(stem))
            or _now_names(owner, identity["path"])
        )
        if stems[folded] == 1 and folded not in taken and free:
            take(identity["path"], stem)
        else:
            take(identity["path"], _hashed(stem, identity["path"]))
    return names, moved


def _missing_output(
    out_dir: Path, name: str, record: dict | None, settings: RunSettings
) -> str | None:
    """The first output a done video's ``record`` vouches for that the folder does not hold
    (relative to it), or None: every one is there."""
    for fmt in settings.video_formats():
        if not (out_dir / f"{name}.{fmt}").is_file():
            return f"{name}.{fmt}"
    thumbs = (record or {}).get("result", {}).get("thumbs")
    if thumbs and not (folder := thumbs_folder(out_dir, name)).is_dir():
        return f"{folder.relative_to(out_dir).as_posix()}/"
    return None


def _resumed(result: dict[str, Any]) -> VideoResult:
    known = {f.name for f in fields(VideoResult)}
    resumed = VideoResult(**{k: v for k, v in result.items() if k in known})
    resumed.resumed = True
    outputs = result.get("outputs")  # (none in a record written before the field: 0)
    if not isinstance(outputs, int) or isinstance(outputs, bool):
        resumed.outputs = 0
    return resumed
