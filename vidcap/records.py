"""What an output folder remembers of its runs: resume records and ``summary.json``.

``OUT/.vidcap/<name>.json`` is one video's resume record, written once its outputs are
durable (or it failed)::

    {"key": <settings key>, "identity": <source_identity>, "result": <VideoResult>,
     "metadata": <list-file columns, when any>}

Records written by earlier versions hold the identity under ``"source"``; ``identity_of``
reads both, so an output folder written by an earlier version resumes with nothing redone.

``OUT/summary.json`` holds the totals of the folder and of the last run, then every video
the folder holds a record of (its result, with the identity beside it), one a line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidcap import __version__, jsontext, regular
from vidcap.outputs import write_atomic, write_json

if TYPE_CHECKING:
    from vidcap.jobs import VideoResult

STATE_DIR = ".vidcap"
SUMMARY = "summary.json"


def read_record(out_dir: Path, name: str) -> dict | None:
    """The resume record of output name ``name``; None when absent or unreadable, or when
    its result is not one vidcap writes (``sound_result``: a folder from elsewhere may hold
    anything, and one record whose frame count is a string ended every later run's summary
    with a TypeError)."""
    try:
        record = jsontext.loads(regular.read_text(out_dir / STATE_DIR / f"{name}.json"))
    except (OSError, ValueError):  # (ValueError: JSON or UTF-8 malformed)
        return None
    if not isinstance(record, dict):
        return None
    result = record.get("result")
    return record if result is None or sound_result(result) else None


def sound_result(result: object) -> bool:
    """Is ``result`` a video's result as vidcap writes it (``VideoResult.record``)? The
    fields that are counted and summed have their types: status, names, counts, duration."""
    if not isinstance(result, dict) or result.get("status") not in ("done", "failed"):
        return False
    if not all(isinstance(result.get(field), str) for field in ("video", "name")):
        return False
    if not _whole(result.get("frames", 0)) or not _seconds(result.get("duration", 0.0)):
        return False
    counts = ("reused", "scenes", "thumbs", "lost_frames", "kept_frames")
    if not all(result.get(field) is None or _whole(result[field]) for field in counts):
        return False
    damaged = result.get("damaged_frames")
    return damaged is None or (isinstance(damaged, list) and all(map(_whole, damaged)))


def _whole(value: object) -> bool:
    """A whole number >= 0 (a boolean is none)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


def identity_of(record: Mapping[str, Any] | None) -> dict | None:
    """The source identity a record holds (under ``"source"`` in earlier versions' records)."""
    if record is None:
        return None
    identity = record.get("identity", record.get("source"))
    return identity if isinstance(identity, dict) else None


def write_record(
    out_dir: Path,
    name: str,
    key: str,
    identity: dict[str, Any],
    result: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    record: dict[str, Any] = {"key": key, "identity": identity, "result": result}
    if metadata:
        record["metadata"] = metadata
    write_json(out_dir / STATE_DIR / f"{name}.json", record)


def write_summary(
    out_dir: Path,
    run: Sequence[VideoResult],
    new_frames: int,
    seconds: float,
    keyed: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """``summary.json``: every video the folder holds a record of (``folder_videos``), and
    this run's totals; ``settings``: for each settings key a video of the folder has, what
    it stands for (``keyed``: this run's, ``RunSettings.keyed``; others as the summary
    before listed them)."""
    read_from = next_tick(out_dir)  # before any record is looked at
    new = [r for r in run if r.status == "done" and not r.resumed]
    this_run = {
        "videos": len(run),
        "done": len(new),
        "failed": sum(r.status == "failed" for r in run),
        "resumed": sum(r.resumed for r in run),
        "frames": new_frames,
        "seconds": round(seconds, 3),
        "frames_per_second": round(new_frames / seconds, 3) if seconds > 0 else 0.0,
        "version": __version__,
    }
    if any(r.reused is not None for r in new):
        this_run["reused"] = sum(r.reused or 0 for r in new)
        this_run["model_calls"] = new_frames - this_run["reused"]
    return _write_summary(out_dir, read_from, _summary_document(out_dir), this_run, keyed)


def refresh_summary(out_dir: Path) -> dict | None:
    """``summary.json`` brought up to the folder's records where they changed since it was
    written (a run killed before its end wrote it, records copied in or removed): the
    totals, settings and videos as they are now, the last run's ``run`` kept as it was.
    None where it was current, or the folder holds no record (nothing written)."""
    read_from = next_tick(out_dir)
    if not record_times(out_dir):
        return None
    before = _summary_document(out_dir)
    if current_summary(out_dir, before) is not None:
        return None
    last_run = before.get("run") if isinstance(before, dict) else None
    return _write_summary(
        out_dir, read_from, before, last_run if isinstance(last_run, dict) else None, None
    )


def _write_summary(
    out_dir: Path,
    read_from: int | None,
    before: object,
    this_run: dict | None,
    keyed: Mapping[str, Mapping[str, Any]] | None,
) -> dict:
    """``summary.json`` of the folder's records (``read_from``: when they are read), with
    ``this_run`` as its ``run`` (none: left out); ``before``: the summary it replaces."""
    videos, indexed = _folder_videos(out_dir, before)  # (read once: a big folder's is large)
    indexed = indexed and read_from is not None
    done = [v for v in videos if v.get("status") == "done"]
    totals = {
        "videos": len(videos),
        "done": len(done),
        "failed": len(videos) - len(done),
        "frames": sum(v.get("frames", 0) for v in done),
        "duration": round(sum(v.get("duration", 0.0) for v in done), 3),
    }
    lost = [v["lost_frames"] for v in done if _count(v.get("lost_frames"))]
    marked = [len(v["damaged_frames"]) for v in done if isinstance(v.get("damaged_frames"), list)]
    damaged = [v for v in done if is_damaged(v.get("lost_frames"), v.get("damaged_frames"))]
    if damaged:  # corrupt or truncated files: captioned as far as they decode
        totals["damaged"] = len(damaged)
        totals["lost_frames"] = sum(lost)
        totals["damaged_frames"] = sum(marked)
    if any(v.get("reused") is not None for v in done):  # --skip-similar: frames not captioned
        totals["reused"] = sum(v.get("reused") or 0 for v in done)
        totals["model_calls"] = totals["frames"] - totals["reused"]
    data: dict[str, Any] = {"totals": totals}
    if this_run is not None:
        data["run"] = this_run
    if indexed:  # (else, a record garbled or naming another video: they are read each time)
        data[READ_STAMP] = read_from
    used = {v.get("key") for v in videos}
    known = {**_summary_settings(before), **(keyed or {})}
    data["settings"] = {key: known[key] for key in sorted(known) if key in used}
    data["videos"] = videos
    write_atomic(out_dir / SUMMARY, _summary_text(data))
    return data


_UNREAD = object()  # (a summary not read yet: read it)


def folder_videos(out_dir: Path) -> list[dict]:
    """Every video the folder holds a readable record of, as ``summary.json`` lists them
    (its result, with ``identity``), in name order."""
    return _folder_videos(out_dir)[0]


def _folder_videos(out_dir: Path, summary: object = _UNREAD) -> tuple[list[dict], bool]:
    """``folder_videos``, and whether every record read named the video of its file name.
    A record unchanged since the last summary was written (its change time before the
    summary's ``records_read_ns``) is taken from that summary (``summary``: its document,
    where the caller read it), not read again."""
    times = record_times(out_dir)
    previous = summary_videos(out_dir, summary) if times else None
    kept, stamp = previous if previous is not None else ({}, 0)
    videos: list[dict] = []
    indexed = True
    for name in sorted(times):
        entry = kept.get(name) if times[name] < stamp else None
        if entry is None:
            record = read_record(out_dir, name)
            if not (record and isinstance(record.get("result"), dict)):
                indexed = False
                continue
            entry = dict(record["result"])
            entry["identity"] = identity_of(record) or {}
            entry.pop("resumed", None)
            indexed = indexed and entry.get("name") == name
        videos.append(entry)
    return videos, indexed


# --- summary.json as the folder's index -------------------------------------------------
#
# Reading 100,000 records costs seconds; summary.json lists them all in one file. It says
# when its records were read (``records_read_ns``, by the file system's clock), so a
# record whose change time (ctime: set by every write, rename or copy, never by hand) is
# before that is in it as it is now. Change times come from the kernel's clock at its
# tick, so "now" is read the same way: the change time of a file just made. Only a summary
# whose every record was readable and named its own file's video says when: its entries
# are then each record's, one for one, by name.

READ_STAMP = "records_read_ns"


def file_system_now(folder: Path) -> int | None:
    """The time by the clock ``folder``'s files are stamped with (ns), or None when no file
    can be made there."""
    try:
        handle, name = tempfile.mkstemp(prefix=".clock-", dir=folder)
    except OSError:
        return None
    try:
        os.close(handle)
        return os.stat(name).st_ctime_ns
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def next_tick(folder: Path, wait: float = 0.02) -> int | None:
    """``file_system_now`` once that clock has moved on (at most ``wait`` seconds): a file
    changed before this call has an earlier change time, even one changed in the same tick
    of the kernel's clock (a record committed just before the summary is written)."""
    first = file_system_now(folder)
    deadline = time.monotonic() + wait
    now = first
    while now is not None and now == first and time.monotonic() < deadline:
        time.sleep(0.001)
        now = file_system_now(folder)
    return now


def record_times(out_dir: Path) -> dict[str, int]:
    """Each resume record's output name and change time (ns)."""
    times: dict[str, int] = {}
    try:
        with os.scandir(out_dir / STATE_DIR) as entries:
            for entry in entries:
                if entry.name.endswith(".json"):
                    with contextlib.suppress(OSError):
                        times[entry.name[: -len(".json")]] = entry.stat().st_ctime_ns
    except OSError:
        pass
    return times


def _summary_document(out_dir: Path) -> object:
    """``summary.json`` parsed (None where it is absent or not JSON)."""
    try:
        return jsontext.loads(regular.read_text(out_dir / SUMMARY))
    except (OSError, ValueError):
        return None


def _summary_settings(data: object) -> dict[str, Any]:
    """A summary's ``settings`` (none where it has none as vidcap writes them)."""
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        return {}
    return {k: v for k, v in settings.items() if isinstance(k, str) and isinstance(v, dict)}


def summary_videos(out_dir: Path, data: object = _UNREAD) -> tuple[dict[str, dict], int] | None:
    """``summary.json``'s videos by output name, and when their records were read; None
    when it is absent, unreadable or from a version that did not say when (``data``: the
    document, where the caller read it)."""
    if data is _UNREAD:
        data = _summary_document(out_dir)
    stamp = data.get(READ_STAMP) if isinstance(data, dict) else None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(stamp, int) or isinstance(stamp, bool) or not isinstance(videos, list):
        return None
    named = {}
    for entry in videos:
        if not sound_result(entry):
            return None  # not as vidcap wrote it: the records are read instead
        named[entry["name"]] = entry
    return named, stamp


def current_summary(out_dir: Path, data: object = _UNREAD) -> list[dict] | None:
    """``summary.json``'s videos when they are the folder's records as they are now — every
    record listed, none changed since they were read — in name order; else None (read the
    records). ``data``: the summary's document, where the caller read it."""
    times = record_times(out_dir)
    listed = summary_videos(out_dir, data) if times else None
    if listed is None:
        return None
    named, stamp = listed
    if named.keys() != times.keys() or any(time >= stamp for time in times.values()):
        return None
    return [named[name] for name in sorted(named)]


def _summary_text(data: dict) -> str:
    """``summary.json`` as text: the totals and the run first, indented, then one video a
    line, through the C JSON encoder: a quarter smaller and encoded in under half the time."""
    head = {key: value for key, value in data.items() if key != "videos"}
    text = json.dumps(head, indent=2, ensure_ascii=False)[:-2]  # less the closing "\n}"
    lines = ",\n    ".join(json.dumps(video, ensure_ascii=False) for video in data["videos"])
    return (
        f'{text},\n  "videos": [\n    {lines}\n  ]\n}}\n'
        if lines
        else f'{text},\n  "videos": []\n}}\n'
    )


def is_damaged(lost_frames: object, damaged_frames: object) -> bool:
    """The one rule for a damaged video (captioned as far as it decodes): it lost frames, or
    some of its frames are marked as showing damage. Takes a record's values (a count, a
    list or tuple of frame indices, None) or a folder's (``FolderVideo``)."""
    marked = len(damaged_frames) if isinstance(damaged_frames, list | tuple) else damaged_frames
    return _count(lost_frames) or _count(marked)


def _count(value: object) -> bool:
    """A positive whole number (a count a record holds; a boolean is none)."""
    return _whole(value) and value > 0  # type: ignore[operator]
