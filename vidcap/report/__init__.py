"""``OUT/index.html``: the output folder as a page a person opens (``vidcap report``).

Written at the end of every run (engine and Ray) and on demand. Self-contained: no network,
works from ``file://`` and from any static web server. Layout::

    OUT/index.html               the page: its CSS and JS inline, and a small manifest
                                 (<script type="application/json" id="vidcap-manifest">)
    OUT/report/data-<id>.js      about VIDEOS_PER_SHARD videos each (FRAMES_PER_SHARD
                                 frames at most), in name order:
                                 vidcapShard(JSON.parse("{...}")) (<id>: the fingerprint
                                 of what it is made from, ``reuse.py``; data-00000.js, …
                                 in a folder whose captions are in Parquet shards)
    OUT/report/shards.json       what each data file was made from
    OUT/report/vtt/<id>.js       one video's WebVTT text: vidcapVtt("<id>", "..."), loaded
                                 when its player opens (<id>: a hash of the output name)

Data travels in script files, not JSON fetched by the page, because browsers refuse
``fetch()`` of local files under ``file://``; the shards load one after another and the
page is usable while they do. A shard's data is a JSON string given to ``JSON.parse``:
browsers parse that several times faster than the same data as a JavaScript literal, so
no shard holds the page up for long (measured: BENCHMARKS.md). A shard is ``{"captions":
[...], "videos": [...]}``: each distinct caption once per shard, and per video (``VIDEO_KEYS``) its frames
as three parallel arrays of decoder index, time and caption number. Searching tests each
distinct caption once, then turns the matches of each video into moments by the same rules
as ``vidcap mask`` and ``vidcap search`` (``vidcap.mask.segments``), ported to the page.

Every string from the folder (captions, names, errors) reaches the page as JSON data and is
put into the document with ``textContent``, never as markup.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vidcap import __version__, regular
from vidcap.errors import FOLDER_FULL, OutFolderFull
from vidcap.folder import (
    SHARD_DIR,
    SOURCE_CHANGED,
    FolderVideo,
    VideoRead,
    open_folder,
    read_captions,
    read_mask,
    thumb_frames,
)
from vidcap.inputs import is_url
from vidcap.mask import DECIMALS
from vidcap.outputs import write_atomic
from vidcap.records import is_damaged
from vidcap.remote_out import page_folder, shown_name  # (a staged URL --out)
from vidcap.report import reuse

log = logging.getLogger(__name__)

PAGE = "index.html"
SCRIPTS = ("strip.js", "report.js")  # the page's program, inlined in this order
DATA_DIR = "report"
VIDEOS_PER_SHARD = 250
# And at most about this many frames a data file (a few MB, parsed in one task of the page):
# 250 three-hour videos sampled every second were one data file of 2.7 million frames.
FRAMES_PER_SHARD = 100_000
VIDEO_KEYS = {
    "n": "output name",
    "v": "source, as given to vidcap caption",
    "s": "status: done or failed",
    "e": "error (failed videos)",
    "L": "frames that could not be decoded (a corrupt or truncated file)",
    "dm": "decoder indices of the sampled frames that may show decoding damage (a corrupt stream)",
    "D": "duration in seconds (summary.json)",
    "d": "where the last frame's coverage ends (segments)",
    "F": "frames (summary.json)",
    "f": "decoder index of each sampled frame",
    "t": "time of each sampled frame (s)",
    "c": "caption of each sampled frame: its number in the shard's captions",
    "th": "1: every frame has a thumbnail; else the frame indices that have one",
    "src": "the source as the page can reach it: relative to the page, or http(s)",
    "why": "why the page cannot play the source",
    "vt": "the video's WebVTT as a script (report/vtt/<id>.js)",
    "vf": "the .vtt file, relative to the page",
    "sc": "scenes: [start, end, caption]",
    "mk": "the vidcap mask report beside it: {label, seg: [[start, end, frames, damaged]]}",
    "p": "why its captions could not be read",
}


@dataclass
class ReportStats:
    videos: int = 0
    frames: int = 0
    shards: int = 0
    reused: int = 0  # shards whose videos had not changed: kept as they were
    seconds: float = 0.0
    vtt_written: int = 0
    files: list[str] = field(default_factory=list)


def write_report(out: Path | str, videos: Sequence[FolderVideo] | None = None) -> ReportStats:
    """Write ``OUT/index.html`` and its data files from the folder as it is now
    (``videos``: ``open_folder(out)``, when the caller has it already).

    The page is a function of the folder (no time of writing in it), and a file that would
    not change is not rewritten: a rerun with nothing to do leaves every file as it was.
    A shard whose videos have not changed is not even read again (``vidcap.report.reuse``)."""
    out = Path(out)
    started = time.monotonic()
    videos = open_folder(out) if videos is None else videos
    data = out / DATA_DIR
    for folder in (data, data / "vtt"):  # (stale files in them are removed: never elsewhere)
        regular.own_folder(folder)
    shards = _Shards(out, data)
    if all(reuse.has_captions_file(video) for video in videos):
        cached = reuse.read_index(data)
        for members in _runs(videos):
            vtts = {video.name: _vtt_script(out, video, shards.keep) for video in members}
            beside = [(_source(out, v), (vtts[v.name] or (None,))[0]) for v in members]
            fingerprint = reuse.fingerprint(members, beside)
            if not shards.keep_unchanged(cached, fingerprint, len(members)):
                for read in read_captions(members):
                    shards.add(read, vtts[read.video.name])
                shards.flush(fingerprint)
        _write(data / reuse.INDEX, reuse.index_text(shards.index))
    else:  # captions from Parquet shards, in their order: the page is written whole
        (data / reuse.INDEX).unlink(missing_ok=True)
        for read in read_captions(videos):
            if shards.entries and shards.frames + len(read.frames) > FRAMES_PER_SHARD:
                shards.flush()
            shards.add(read, _vtt_script(out, read.video, shards.keep))
            if len(shards.entries) >= VIDEOS_PER_SHARD:
                shards.flush()
    if shards.entries or not shards.stats.shards:
        shards.flush()
    stats, keep = shards.stats, shards.keep
    _remove_stale(data, keep)
    manifest = {
        "title": shown_name(out),
        "version": __version__,
        "shards": stats.files,
        "videos": stats.videos,
        "done": sum(v.done for v in videos),
        "failed": sum(not v.done for v in videos),
        "damaged": sum(v.done and is_damaged(v.lost_frames, v.damaged_frames) for v in videos),
        "frames": stats.frames,
        "duration": round(sum(v.duration for v in videos if v.done), 3),
    }
    _write(out / PAGE, render_page(manifest))
    stats.seconds = time.monotonic() - started
    log.info(
        "wrote %s: %d videos, %d frames, %d data files (%d unchanged) in %.2f s",
        out / PAGE, stats.videos, stats.frames, stats.shards, stats.reused, stats.seconds,
    )  # fmt: skip
    return stats


def refresh_report(out: Path, summary: Mapping[str, Any] | None = None) -> None:
    """``write_report`` at the end of a run (``summary``: the ``summary.json`` it has just
    written, which lists the folder's videos): the run's outputs stand whatever happens
    here, so a failure to write the page is a warning. A folder whose earlier captions are
    only empty placeholders (an ``--out`` URL's staging folder) keeps its page as it was.
    A full disk stops the run (``OutFolderFull``), unless the run is stopping already (an
    interruption, the page written on its way out: that says why)."""
    stopping = sys.exc_info()[1] is not None
    try:
        videos = open_folder(out, summary)
        placeholders = [
            v.name for v in videos if v.done and v.frames and _empty(v.output(".jsonl"))
        ] + [p.name for p in (out / SHARD_DIR).glob("part-*.parquet") if _empty(p)]
        if placeholders:
            log.warning(
                "%s not rewritten: the captions of earlier videos (%d files: %s, …) are not "
                "in this folder; run `vidcap report` on a full copy of it",
                PAGE, len(placeholders), placeholders[0],
            )  # fmt: skip
            return
        write_report(out, videos)
    except OSError as exc:
        if exc.errno in FOLDER_FULL and not stopping:
            # (the disk is full: the run stops saying so, as one that could not write a
            # caption file does, rather than end "done" without the page it promised)
            fix = "make it writable" if exc.errno == errno.EROFS else "make room"
            raise OutFolderFull(
                f"stopped: cannot write {out / PAGE} ({exc.strerror}); the videos done are "
                f"kept: {fix} and rerun the same command (or `vidcap report {out}`)"
            ) from None
        log.warning("%s not written: %s", out / PAGE, exc)
    except Exception as exc:  # noqa: BLE001 - the page is derived; the run's outputs stand
        log.warning("%s not written: %s", out / PAGE, exc)


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _runs(videos: Sequence[FolderVideo]) -> Iterator[list[FolderVideo]]:
    """The videos in runs, in name order, one data file each: about ``VIDEOS_PER_SHARD``
    (never over four times as many), and ``FRAMES_PER_SHARD`` frames at most unless one
    video has more. Where a run ends is said by its last video's name (a hash: one name in
    ``VIDEOS_PER_SHARD``), not by counting, so a video added or removed changes its own run
    only (content-defined chunking, as rsync cuts files): a top-up run whose new names fall
    anywhere among the old ones keeps every other data file (of long videos, those up to
    the next name that ends a run)."""
    run: list[FolderVideo] = []
    frames = 0
    for video in videos:
        if run and frames + video.frames > FRAMES_PER_SHARD:
            yield run
            run, frames = [], 0
        run.append(video)
        frames += video.frames
        if len(run) >= 4 * VIDEOS_PER_SHARD or _ends_run(video.name):
            yield run
            run, frames = [], 0
    if run:
        yield run


def _ends_run(name: str) -> bool:
    digest = hashlib.sha1(name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % VIDEOS_PER_SHARD == 0


class _Shards:
    """The page's data files, in the page's order: named by their fingerprint where they
    have one (a data file that is kept keeps its name wherever it now falls), else by
    their number (``data-00000.js``, …)."""

    def __init__(self, out: Path, data: Path) -> None:
        self.out, self.data = out, data
        self.stats = ReportStats()
        self.keep: set[str] = set()  # the data files the page uses
        self.index: dict[str, reuse.Cached] = {}  # what each shard was made from
        self.entries: list[dict] = []  # the shard being made
        self.table: dict[str, int] = {}  # its distinct captions
        self.frames = 0

    def add(self, read: VideoRead, vtt: tuple[str, int] | None) -> None:
        entry = _entry(self.out, read, self.table)
        if vtt is not None:
            entry["vt"], self.stats.vtt_written = vtt[0], self.stats.vtt_written + vtt[1]
        self.entries.append(entry)
        self.frames += len(read.frames)

    def flush(self, fingerprint: str | None = None) -> None:
        path = self.data / _name(fingerprint, self.stats.shards)
        body = {"captions": list(self.table), "videos": self.entries}
        text = f"vidcapShard(JSON.parse({_js(_js(body))}));\n"
        _write(path, text)
        if fingerprint is not None:
            self.index[path.name] = reuse.Cached(fingerprint, len(text), self.frames)
        self._done(path, len(self.entries), self.frames)
        self.entries, self.table, self.frames = [], {}, 0

    def keep_unchanged(self, index: dict[str, reuse.Cached], fingerprint: str, videos: int) -> bool:
        """Keep the data file of a run as it is, when it was made from what it is now."""
        path = self.data / _name(fingerprint, self.stats.shards)
        cached = index.get(path.name)
        if cached is None or cached.fingerprint != fingerprint or _size(path) != cached.size:
            return False
        self.index[path.name] = cached
        self.stats.reused += 1
        self._done(path, videos, cached.frames)
        return True

    def _done(self, path: Path, videos: int, frames: int) -> None:
        self.keep.add(os.fspath(path))
        self.stats.files.append(path.relative_to(self.out).as_posix())
        self.stats.shards += 1
        self.stats.videos += videos
        self.stats.frames += frames


def _name(fingerprint: str | None, number: int) -> str:
    return f"data-{fingerprint[:20]}.js" if fingerprint else f"data-{number:05d}.js"


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --- one video ---------------------------------------------------------------------------


def _entry(out: Path, read: VideoRead, table: dict[str, int]) -> dict:
    video = read.video
    entry: dict = {"n": video.name, "v": video.video, "s": video.status}
    if video.error:
        entry["e"] = video.error
    if video.lost_frames:
        entry["L"] = video.lost_frames
    damaged = read.damaged()
    if damaged:
        entry["dm"] = sorted(damaged)
    if read.problem:
        entry["p"] = read.problem
    entry["D"] = round(video.duration, DECIMALS)
    entry["F"] = video.frames
    frames = read.frames
    if frames:
        entry["d"] = read.segment_duration()
        entry["f"] = [frame.index for frame in frames]
        entry["t"] = [frame.time for frame in frames]
        entry["c"] = [table.setdefault(frame.caption, len(table)) for frame in frames]
        have = thumb_frames(video)
        if have:
            wanted = set(entry["f"])
            entry["th"] = 1 if wanted <= have else sorted(wanted & have)
    entry.update(_source(out, video))
    vtt = video.output(".vtt")
    if vtt.is_file():
        entry["vf"] = quote(vtt.name)
    scenes = read.scenes
    if scenes:
        entry["sc"] = [[s.start, s.end, s.label] for s in scenes]
    mask = read_mask(video)
    if mask is not None:
        entry["mk"] = {
            "label": mask.label,
            "seg": [[s.start, s.end, s.frames, s.damaged] for s in mask.segments],
        }
    return entry


def _source(out: Path, video: FolderVideo) -> dict:
    """Where the page's player finds the source, or why it cannot."""
    source = video.video
    if is_url(source):
        scheme = source.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            return {"src": source}
        return {"why": f"a browser cannot open {scheme}:// URLs; thumbnails and times only"}
    path = video.local_source()
    if path is None:
        where = video.identity.get("path") or source
        return {"why": f"the source is not on this machine any more: {where}"}
    base = page_folder(out)  # (a staged URL --out: the remote folder, or None)
    try:
        if base is None:
            raise ValueError("a page read elsewhere: no relative link to this machine")
        relative = os.path.relpath(path.resolve(), base)
    except ValueError:  # another drive (Windows), or the page is not on this machine
        where = {"src": path.resolve().as_uri()}
    else:
        where = {"src": quote(Path(relative).as_posix())}
    if video.source_changed(path) is not None:  # it plays, and the card says why times may be off
        again = (  # (a --max-frames record holds no SHA-256: its bytes cannot be compared)
            "again" if "sha256" not in video.identity else "again only if its bytes changed"
        )
        where["why"] = (
            f"the source {SOURCE_CHANGED}: captions and times may not match it; the same "
            f"vidcap caption command run again brings it up to date (it captions the video "
            f"{again})"
        )
    return where


def _vtt_script(out: Path, video: FolderVideo, keep: set[str]) -> tuple[str, int] | None:
    """``report/vtt/<id>.js`` holding the video's .vtt text (rewritten only when the .vtt
    is newer); (its path relative to the page, 1 if written now). Paths as strings: this
    runs for every video at the end of every run."""
    vtt = os.path.join(os.fspath(video.folder), f"{video.name}.vtt")
    try:
        source = os.stat(vtt)
    except OSError:
        return None
    ident = hashlib.sha1(video.name.encode("utf-8")).hexdigest()[:16]
    relative = f"{DATA_DIR}/vtt/{ident}.js"
    path = os.path.join(os.fspath(out), DATA_DIR, "vtt", f"{ident}.js")
    keep.add(path)
    try:
        if os.stat(path).st_mtime_ns >= source.st_mtime_ns:
            return relative, 0
    except OSError:
        pass
    try:
        text = regular.read_text(vtt)
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: not read: %s", vtt, exc)
        return None
    _write(Path(path), f"vidcapVtt({_js(ident)}, {_js(text)});\n")
    return relative, 1


# --- files ---------------------------------------------------------------------------------


def _js(value: object) -> str:
    """JSON as a JavaScript expression, ASCII only (no encoding to agree on)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _write(path: Path, text: str) -> None:
    """Whole or absent (``.part`` + rename); not fsynced: the page is rebuilt at will. A
    file that already holds ``text`` is left as it is."""
    try:
        if path.stat().st_size == len(text.encode("utf-8")) and regular.read_text(path) == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text, durable=False)


def _remove_stale(data: Path, keep: set[str]) -> None:
    for path in _files(data):
        if os.fspath(path) not in keep:
            path.unlink(missing_ok=True)


def _files(data: Path) -> Iterable[Path]:
    yield from data.glob("data-*.js")
    yield from (data / "vtt").glob("*.js")


def render_page(manifest: dict) -> str:
    """The page: the template with its CSS, its scripts and ``manifest`` inlined (one
    script element: ``strip.js``, the strips of frames, then ``report.js``, which uses it)."""
    assets = resources.files(__package__)
    template = assets.joinpath("page.html").read_text(encoding="utf-8")
    script = "\n".join(assets.joinpath(name).read_text(encoding="utf-8") for name in SCRIPTS)
    style = assets.joinpath("report.css").read_text(encoding="utf-8")
    data = json.dumps(manifest, ensure_ascii=True)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        data = data.replace(char, escaped)  # nothing in it can close the script element
    return (
        template.replace("/*STYLE*/", style)
        .replace("/*SCRIPT*/", script)
        .replace("/*MANIFEST*/", data)
    )
