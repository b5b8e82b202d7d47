"""``vidcap search``: every moment a query matches, across whole output folders.

A moment is a ``vidcap mask`` segment: the same matching (``vidcap.mask.match_frames``:
case-insensitive whole words, or regular expressions) and the same segments
(``vidcap.mask.segments``: a frame covers [its time, the next frame's time) — in a
``--scenes`` folder its part of its shot, ``vidcap.mask.frame_spans`` — gaps shorter
than ``merge_gap`` closed, then moments shorter than ``min_duration`` dropped), applied to
each video of the folders. The last frame of a video covers up to the video's duration as
``summary.json`` records it (``vidcap mask --duration``), else what ``vidcap mask`` infers.

Ranking: most matching frames first, then the longest, then the folders' order (by output
name; videos read from Parquet after those with a JSONL), then the earliest.

Videos are read one at a time (``vidcap.folder.read_captions``); only the moments are kept.
A word query skips parsing a caption file in which one of its words does not occur at all
(``might_match``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidcap.folder import VideoRead, open_folder, read_captions, thumb_path
from vidcap.mask import (
    DECIMALS,
    MaskSettings,
    compile_queries,
    damaged_counts,
    match_frames,
    segments,
)


@dataclass(frozen=True)
class Moment:
    """A time range of one video whose captions match: ``frames`` matching sampled frames
    in [start, end); ``caption``, ``frame`` and ``thumb`` are those of its first match
    (``thumb``: path relative to ``folder``, None when no thumbnail exists); ``damaged``:
    how many of the matching frames may show decoding damage (their captions may describe
    the damage, not the scene)."""

    folder: str
    name: str
    video: str
    start: float
    end: float
    frames: int
    caption: str
    frame: int
    thumb: str | None = None
    damaged: int = 0
    order: int = field(default=0, compare=False, repr=False)

    @property
    def duration(self) -> float:
        return self.end - self.start

    def row(self) -> dict:
        """The moment as ``--json``/``--csv`` write it."""
        return {
            "folder": self.folder,
            "name": self.name,
            "video": self.video,
            "start": round(self.start, DECIMALS),
            "end": round(self.end, DECIMALS),
            "duration": round(self.duration, DECIMALS),
            "frames": self.frames,
            "caption": self.caption,
            "frame": self.frame,
            "thumb": self.thumb,
            "damaged": self.damaged,
        }


def rank_key(moment: Moment) -> tuple:
    """Most matching frames, then longest, then folder order, then earliest."""
    return (-moment.frames, -moment.duration, moment.order, moment.start)


def video_moments(
    read: VideoRead, queries: Sequence[str], settings: MaskSettings, order: int = 0
) -> list[Moment]:
    """One video's moments, in time order (``vidcap mask``'s segments of its captions)."""
    frames = read.frames
    if not frames:
        return []
    flags = match_frames(frames, queries, settings.regex)
    if not any(flags):
        return []
    times = read.times
    found = segments(
        times,
        flags,
        read.segment_duration(),
        settings.merge_gap,
        settings.min_duration,
        read.shots(),
    )
    video = read.video
    damaged = read.damaged()
    counts = (
        damaged_counts(found, times, flags, [f.index in damaged for f in frames])
        if damaged
        else [0] * len(found)
    )
    moments = []
    first = 0
    for segment, count in zip(found, counts, strict=True):
        while not (flags[first] and times[first] >= segment.start):
            first += 1
        hit = frames[first]
        thumb = thumb_path(video.folder, video.name, hit.index)
        moments.append(
            Moment(
                folder=str(video.folder),
                name=video.name,
                video=video.video,
                start=segment.start,
                end=segment.end,
                frames=segment.frames,
                caption=hit.caption,
                frame=hit.index,
                thumb=thumb.relative_to(video.folder).as_posix() if thumb.is_file() else None,
                damaged=count,
                order=order,
            )
        )
    return moments


def fold(text: str) -> str:
    """``text`` case-folded as coarsely as ``re.IGNORECASE`` matches: two characters the
    regex takes as one case-insensitively fold alike (checked over all of Unicode by
    ``tests/test_search.py``). ``str.casefold`` alone folds the Turkish dotted capital I to
    i + a combining dot, and the dotless i to itself, where the regex takes both as i."""
    return text.casefold().replace("i\u0307", "i").replace("\u0131", "i")


def might_match(queries: Sequence[str], settings: MaskSettings) -> Callable[[str], bool] | None:
    """For word queries: whether a caption file's text holds every word of some query, in
    any case — a file that does not cannot match. (A caption matched case-insensitively
    holds each word with the same folding, ``fold``.) None for regular expressions."""
    if settings.regex:
        return None
    wanted = [[fold(word) for word in query.split()] for query in queries]

    def check(text: str) -> bool:
        folded = fold(text)
        return any(all(word in folded for word in words) for words in wanted)

    return check


@dataclass
class SearchStats:
    folders: int = 0
    videos: int = 0
    frames: int = 0
    seconds: float = 0.0
    unread: int = 0  # done videos whose captions could not be read (``VideoRead.problem``)
    first_problem: str = ""  # the first of them, "<name>: <why>"


def iter_moments(
    folders: Sequence[Path | str],
    queries: Sequence[str],
    settings: MaskSettings,
    stats: SearchStats | None = None,
) -> Iterator[Moment]:
    """Every moment of every video of ``folders``, folder by folder, video by video (a
    folder given twice, by any path, searched once: ``distinct_folders``)."""
    compile_queries(queries, settings.regex)  # a bad query fails before any folder is read
    stats = stats if stats is not None else SearchStats()
    started = time.monotonic()
    prefilter = might_match(queries, settings)
    order = 0
    for folder in distinct_folders(folders):
        videos = open_folder(folder)
        stats.folders += 1
        for read in read_captions(videos, prefilter):
            if read.problem:  # (none read: not searched)
                stats.unread += 1
                stats.first_problem = stats.first_problem or f"{read.video.name}: {read.problem}"
            else:
                stats.videos += 1
            stats.frames += len(read.frames) + read.unread
            yield from video_moments(read, queries, settings, order)
            order += 1
    stats.seconds = time.monotonic() - started


def distinct_folders(folders: Sequence[Path | str]) -> list[Path | str]:
    """``folders`` in their order, each folder once: ``out`` and ``./out/`` (or a link to
    it) are one folder, whose moments would otherwise be listed, and cut, twice."""
    seen: set[Path] = set()
    kept = []
    for folder in folders:
        resolved = Path(folder).resolve()
        if resolved not in seen:
            seen.add(resolved)
            kept.append(folder)
    return kept


def search(
    folders: Sequence[Path | str],
    queries: Sequence[str],
    settings: MaskSettings | None = None,
    stats: SearchStats | None = None,
) -> list[Moment]:
    """Every moment of ``folders`` matching any of ``queries``, ranked (``rank_key``)."""
    settings = settings or MaskSettings()
    return sorted(iter_moments(folders, queries, settings, stats), key=rank_key)
