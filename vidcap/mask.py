"""Find a subject in a video: captions (or yes/no answers) → per-frame mask → time segments.

A sampled frame at time ``t`` covers ``[t, next frame's time)``; the last frame covers
up to the video's duration when it is known, else one typical (median) frame interval.
Matching frames form runs; gaps shorter than ``merge_gap`` are closed, then segments
shorter than ``min_duration`` are dropped. The mask string is the raw per-frame match,
one ``0``/``1`` per caption line, before any closing or dropping.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import statistics
import warnings
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from vidcap import jsontext
from vidcap.backend import CaptionFailed
from vidcap.decode import Decoded, Ended, Failed, Warned, decode_events
from vidcap.errors import UsageError, VideoError
from vidcap.frames import Frame
from vidcap.inputs import shown_source
from vidcap.outputs import CaptionedFrame, render_jsonl
from vidcap.settings import (
    GenerationSettings,
    SamplingSettings,
    check_field_types,
    question_prompt,
)
from vidcap.terminal import logs_above
from vidcap.video import VideoReader

if TYPE_CHECKING:
    import numpy as np

    from vidcap.backend import Backend

log = logging.getLogger(__name__)

DECIMALS = 6
"""Times are compared and written rounded to a microsecond, so float noise never flips a gap."""
REGEX_TIMEOUT_S = 1.0  # one regular expression on one caption (microseconds, unless it backtracks)
QUESTION_MAX_NEW_TOKENS = 5
"""A yes/no answer needs one or two tokens; a few more keep BLIP-2's "yes, he is" whole."""
_YES = re.compile(r"\s*yes\b", re.IGNORECASE)


@dataclass(frozen=True)
class VideoCaptions:
    """One video's captions (or answers) in time order.

    ``duration``: the end of the video's last decodable frame when it was decoded here
    (question mode: the same number ``vidcap caption`` writes), else None.
    """

    video: str
    frames: tuple[CaptionedFrame, ...]
    duration: float | None = None

    @property
    def times(self) -> list[float]:
        return [frame.time for frame in self.frames]


@dataclass(frozen=True)
class Segment:
    """Subject on screen in [start, end) seconds; ``frames`` sampled frames matched in it."""

    start: float
    end: float
    frames: int = 0

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class MaskSettings:
    """How matches become segments. ``duration`` None: inferred from the frame times."""

    regex: bool = False
    merge_gap: float = 0.0
    min_duration: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        for name, value in (("--merge-gap", self.merge_gap), ("--min-duration", self.min_duration)):
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a number of seconds >= 0, got {value}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise UsageError(f"--duration must be a number of seconds > 0, got {self.duration}")


# --- reading captions -------------------------------------------------------------------


def load_captions(path: Path | str) -> VideoCaptions:
    """Read a caption JSONL (``vidcap caption`` output) of one video, in time order."""
    path = Path(path)
    reject_folder(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            records = list(_parse_lines(path, handle))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a caption JSONL file (not UTF-8 text)") from exc
    if not records:
        raise UsageError(f"{path}: no captions in the file")
    video = _one_video(path, [name for name, _ in records])
    return VideoCaptions(video, tuple(frame for _, frame in records))


def reject_folder(path: Path) -> None:
    """``vidcap mask`` takes one file: a folder is a usage error, said in one line."""
    if path.is_dir():
        raise UsageError(
            f"{path} is a folder: mask takes one caption JSONL (--query) or one video "
            f"(--question), e.g. {path / 'NAME.jsonl'}"
        )


def _parse_lines(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, CaptionedFrame]]:
    previous = -math.inf
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        video, frame = _parse_record(path, number, line)
        if frame.time < previous:
            raise UsageError(
                f"{path}:{number}: time {frame.time} is before the previous frame's "
                f"{previous}; captions must be in time order"
            )
        previous = frame.time
        yield video, frame


def _parse_record(path: Path, number: int, line: str) -> tuple[str, CaptionedFrame]:
    where = f"{path}:{number}"
    try:
        obj = jsontext.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not a caption JSONL file ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
    time, caption = obj.get("time"), obj.get("caption")
    if not is_number(time) or time < 0:
        raise UsageError(f"{where}: 'time' must be a number of seconds >= 0, got {time!r}")
    if not isinstance(caption, str):
        raise UsageError(f"{where}: 'caption' must be a string, got {caption!r}")
    frame = obj.get("frame", number - 1)
    if not isinstance(frame, int) or isinstance(frame, bool):
        raise UsageError(f"{where}: 'frame' must be a whole number, got {frame!r}")
    damaged = obj.get("damaged") is True  # (files from before every row had it: absent)
    return str(obj.get("video", "")), CaptionedFrame(frame, float(time), caption, damaged=damaged)


def is_number(value: object) -> bool:
    """A finite JSON number (``true`` is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _one_video(path: Path, names: Sequence[str]) -> str:
    videos = sorted(set(names))
    if len(videos) > 1:
        shown = ", ".join(videos[:3]) + (", …" if len(videos) > 3 else "")
        raise UsageError(
            f"{path}: holds captions of {len(videos)} videos ({shown}); mask one video at a time"
        )
    return videos[0]


# --- matching ----------------------------------------------------------------------------


def compile_queries(queries: Sequence[str], regex: bool = False) -> list[Any]:
    r"""Case-insensitive patterns. Plain queries match whole words; a multi-word query the phrase.

    ``regex``: the queries are regular expressions, compiled by the ``regex`` package (in its
    ``re``-compatible mode), whose matching takes a timeout: a pattern with nested repeats
    (``(\w+\s?)+!``) backtracks exponentially on an ordinary caption, and Python's ``re``
    cannot be stopped (``vidcap search`` hung for good)."""
    if isinstance(queries, str):  # (one query, not its characters)
        queries = [queries]
    if not queries:
        raise UsageError("give at least one --query")
    patterns = []
    for query in queries:
        if not query.strip():
            raise UsageError("--query must not be empty")
        if not regex:
            patterns.append(re.compile(phrase_pattern(query), re.IGNORECASE))
            continue
        import regex as regex_package  # (here: 20 ms at every command's start otherwise)

        try:
            with warnings.catch_warnings():  # ("possible nested set": its own line, not ours)
                warnings.simplefilter("ignore")
                patterns.append(
                    regex_package.compile(
                        _turkic(query), regex_package.IGNORECASE | regex_package.V0
                    )
                )
        except regex_package.error as exc:
            raise UsageError(f"bad --regex query {query!r}: {exc}") from exc
    return patterns


_TURKIC = str.maketrans({"\u0130": "i", "\u0131": "i"})


def _turkic(text: str) -> str:
    """The Turkish dotted capital I and dotless i written as i (one character for one):
    Python's ``re.IGNORECASE`` takes each as i, the ``regex`` package (simple case folding)
    only as itself, as the page's JavaScript does, which writes them so too (``turkic``)."""
    return text.translate(_TURKIC)


def phrase_pattern(query: str) -> str:
    """``red  circle`` → a regex for the words in order, any whitespace between, whole words."""
    words = query.split()
    body = r"\s+".join(re.escape(word) for word in words)
    head = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    tail = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return head + body + tail


def match_frames(
    captions: Sequence[CaptionedFrame | str], queries: Sequence[str], regex: bool = False
) -> list[bool]:
    """One flag per caption: True when any query matches it."""
    patterns = compile_queries(queries, regex)
    texts = (c if isinstance(c, str) else c.caption for c in captions)
    if not regex:
        return [any(p.search(text) for p in patterns) for text in texts]
    try:  # (the captions' Turkish i's as the patterns' are: _turkic)
        return [
            any(p.search(_turkic(text), timeout=REGEX_TIMEOUT_S) for p in patterns)
            for text in texts
        ]
    except TimeoutError:
        raise UsageError(
            f"--regex {' / '.join(queries)!r} took over {REGEX_TIMEOUT_S:g} s on one caption: "
            "nested repeats such as (a+)+ backtrack without end; write it without them"
        ) from None


def is_yes(answer: str) -> bool:
    """A question-mode answer counts when it starts with the word "yes" (any case)."""
    return _YES.match(answer) is not None


def mask_string(flags: Iterable[bool]) -> str:
    return "".join("1" if flag else "0" for flag in flags)


# --- segments ----------------------------------------------------------------------------


def typical_interval(times: Sequence[float]) -> float:
    """The median gap between consecutive frame times (0 gaps ignored)."""
    gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    if not gaps:
        raise UsageError(
            "cannot infer the video's duration from a single frame time; pass --duration"
        )
    return statistics.median(gaps)


def frame_ends(times: Sequence[float], duration: float | None = None) -> list[float]:
    """Where each frame's coverage ends: the next frame's time; the last one's at the end."""
    if not times:
        return []
    if duration is None:
        last_end = times[-1] + typical_interval(times)
    elif duration < times[-1]:
        raise UsageError(
            f"--duration {duration} is before the last frame's time {times[-1]}; "
            "is this the right video?"
        )
    else:
        last_end = duration
    return [*times[1:], last_end]


def frame_spans(
    times: Sequence[float], ends: Sequence[float], scenes: Sequence[tuple[float, float]] = ()
) -> tuple[list[float], list[float]]:
    """Each frame's [start, end): [its time, ``ends``' (the next frame's time)); with
    ``scenes`` (the shots of a ``--scenes`` folder, [start, end) each, in order), a frame
    inside a shot covers its part of it: the shot's first sample from the shot's start, its
    last to the shot's end (a shot is sampled in its middle, or on a grid from its start)."""
    starts, ends = list(times), list(ends)
    if not scenes:
        return starts, ends
    firsts = [round(start, DECIMALS) for start, _ in scenes]

    def shot(time: float) -> int | None:
        at = round(time, DECIMALS)
        k = bisect_right(firsts, at) - 1
        return k if k >= 0 and at < round(scenes[k][1], DECIMALS) else None

    shots = [shot(time) for time in times]
    for i, k in enumerate(shots):
        if k is None:
            continue
        if i == 0 or shots[i - 1] != k:
            starts[i] = scenes[k][0]
        if i == len(shots) - 1 or shots[i + 1] != k:
            ends[i] = scenes[k][1]
    return starts, ends


def segments(
    times: Sequence[float],
    flags: Sequence[bool],
    duration: float | None = None,
    merge_gap: float = 0.0,
    min_duration: float = 0.0,
    scenes: Sequence[tuple[float, float]] = (),
) -> list[Segment]:
    """Runs of matching frames as time segments (each frame covering ``frame_spans``'
    range): gaps < ``merge_gap`` closed, then segments < ``min_duration`` dropped (both in
    seconds)."""
    if len(times) != len(flags):
        raise ValueError(f"{len(times)} times but {len(flags)} flags")
    if not all(map(math.isfinite, times)) or any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError("times must be finite numbers of seconds, in time order")
    MaskSettings(merge_gap=merge_gap, min_duration=min_duration, duration=duration)
    starts, ends = frame_spans(times, frame_ends(times, duration), scenes)
    runs = _runs(starts, ends, flags)
    closed = _close_gaps(runs, merge_gap)
    return [s for s in closed if not _shorter(s.duration, min_duration)]


def _runs(starts: Sequence[float], ends: Sequence[float], flags: Sequence[bool]) -> list[Segment]:
    runs: list[Segment] = []
    start = None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        if start is not None and (not flag or i == len(flags) - 1):
            last = i if flag else i - 1
            runs.append(Segment(starts[start], ends[last], last - start + 1))
            start = None
    return runs


def _close_gaps(runs: Sequence[Segment], merge_gap: float) -> list[Segment]:
    closed: list[Segment] = []
    for run in runs:
        if closed and _shorter(run.start - closed[-1].end, merge_gap):
            previous = closed.pop()
            run = Segment(previous.start, run.end, previous.frames + run.frames)
        closed.append(run)
    return closed


def _shorter(seconds: float, limit: float) -> bool:
    return round(seconds, DECIMALS) < round(limit, DECIMALS)


def damaged_counts(
    found: Sequence[Segment],
    times: Sequence[float],
    flags: Sequence[bool],
    damaged: Sequence[bool],
) -> list[int]:
    """How many of each segment's matching frames may show decoding damage (``damaged``:
    per frame, the caption JSONL's ``"damaged": true``)."""
    marked = [t for t, flag, bad in zip(times, flags, damaged, strict=True) if flag and bad]
    return [bisect_left(marked, s.end) - bisect_left(marked, s.start) for s in found]


# --- the report --------------------------------------------------------------------------


def build_report(
    video: str,
    times: Sequence[float],
    flags: Sequence[bool],
    settings: MaskSettings,
    queries: Sequence[str] = (),
    question: str | None = None,
    extra_settings: Mapping[str, object] | None = None,
    damaged: Sequence[bool] = (),
    scenes: Sequence[tuple[float, float]] = (),
) -> dict:
    """The ``vidcap mask`` JSON: settings, mask string, segments and coverage of the video.
    ``damaged``: per frame, whether its picture may show decoding damage (each segment
    counts its matching frames that may); ``scenes``: the video's shots (``segments``)."""
    found = segments(
        times, flags, settings.duration, settings.merge_gap, settings.min_duration, scenes
    )
    counts = damaged_counts(found, times, flags, damaged) if any(damaged) else [0] * len(found)
    duration = frame_ends(times, settings.duration)[-1] if times else settings.duration or 0.0
    covered = sum(s.duration for s in found)
    return {
        "video": video,
        "queries": list(queries),
        "question": question,
        "settings": {
            "regex": settings.regex,
            "merge_gap": settings.merge_gap,
            "min_duration": settings.min_duration,
            "duration": round(duration, DECIMALS),
            "duration_source": "inferred" if settings.duration is None else "given",
            **(extra_settings or {}),
        },
        "frames": len(flags),
        "mask": mask_string(flags),
        "segments": [{**_rounded(s), "damaged": n} for s, n in zip(found, counts, strict=True)],
        "coverage": round(covered / duration, DECIMALS) if duration > 0 else 0.0,
    }


def _rounded(segment: Segment) -> dict:
    row = asdict(segment)
    row["start"] = round(segment.start, DECIMALS)
    row["end"] = round(segment.end, DECIMALS)
    return row


def mask_captions(
    captions: VideoCaptions,
    queries: Sequence[str],
    settings: MaskSettings,
    scenes: Sequence[tuple[float, float]] = (),
    extra_settings: Mapping[str, object] | None = None,
) -> dict:
    """A video's captions + queries → the report (query mode, the whole of it); ``scenes``:
    its shots, when its captions were sampled per shot (``frame_spans``)."""
    if isinstance(queries, str):  # (one query, not its characters)
        queries = [queries]
    flags = match_frames(captions.frames, queries, settings.regex)
    damaged = [frame.damaged for frame in captions.frames]
    return build_report(
        captions.video,
        captions.times,
        flags,
        settings,
        queries=queries,
        damaged=damaged,
        scenes=scenes,
        extra_settings=extra_settings,
    )


# --- question mode -----------------------------------------------------------------------


def ask_frames(
    video: Path | str,
    backend: Backend,
    question: str,
    sampling: SamplingSettings,
    generation: GenerationSettings | None = None,
    quiet: bool = False,
) -> VideoCaptions:
    """Ask ``question`` of every sampled frame of ``video``; the answers, and its duration.

    ``generation`` sets the token limit and beams (default: ``QUESTION_MAX_NEW_TOKENS``);
    the prompt is always BLIP-2's ``Question: … Answer:`` form of ``question``. Frames are
    decoded in this process by ``decode_events``, as ``vidcap caption`` decodes them, so the
    times and the duration are the ones it writes. A progress bar shows on a terminal
    unless ``quiet``.
    """
    generation = replace(
        generation or GenerationSettings(max_new_tokens=QUESTION_MAX_NEW_TOKENS),
        prompt=question_prompt(question),
    )
    log.info("asking %r of %s", generation.prompt, video)
    with VideoReader(video) as reader:  # the bar's total: a demux pass, nothing decoded
        total = reader.estimated_samples(sampling)
    pending: deque[Frame] = deque()
    answers: list[CaptionedFrame] = []
    shown = shown_source(str(video))  # (a URL's password is never written)
    duration = 0.0

    def images() -> Iterator[np.ndarray]:
        nonlocal duration
        for event in decode_events(0, str(video), sampling, backend.input_size, digest=False):
            if isinstance(event, Decoded):
                pending.append(event.frame)
                yield event.frame.rgb
            elif isinstance(event, Failed):
                raise VideoError(event.error)
            elif isinstance(event, Warned):
                log.warning("%s", event.message)
            elif isinstance(event, Ended):
                duration = event.duration
            # (thumbnails, scenes: what sampling settings ask of the decoder; not asked here)

    bar = tqdm(
        total=total,
        desc=Path(video).name,
        unit="frame",
        disable=True if quiet else None,  # None: shown on a terminal only
        leave=False,
    )
    with bar, logs_above(bar):
        for answer in backend.caption_stream(images(), generation):
            frame = pending.popleft()
            if isinstance(answer, CaptionFailed):
                raise VideoError(f"{shown}: no answer for frame {frame.index}: {answer.reason}")
            answers.append(CaptionedFrame(frame.index, frame.time, answer, damaged=frame.damaged))
            bar.update(1)
    return VideoCaptions(shown, tuple(answers), duration)


def mask_answers(
    answers: VideoCaptions,
    question: str,
    settings: MaskSettings,
    extra_settings: Mapping[str, object] | None = None,
) -> dict:
    """Answers → the report (question mode): frames answered "yes…" match."""
    flags = [is_yes(a.caption) for a in answers.frames]
    extra = {"answer_rule": "starts with yes", **(extra_settings or {})}
    damaged = [frame.damaged for frame in answers.frames]
    return build_report(
        answers.video,
        answers.times,
        flags,
        settings,
        question=question,
        extra_settings=extra,
        damaged=damaged,
    )


def records_jsonl(captions: VideoCaptions) -> str:
    """Captions in the caption JSONL format (question mode saves its answers this way)."""
    return render_jsonl(captions.video, captions.frames)
