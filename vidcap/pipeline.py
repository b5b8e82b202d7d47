"""The bulk driver: inputs → frames → backend → outputs, with resume and a summary."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from vidcap.backend import Backend
from vidcap.decode_worker import decoded_frames
from vidcap.errors import BackendUnavailable, UsageError, VidcapError
from vidcap.frames import Frame, resize_for_model
from vidcap.outputs import CaptionedFrame, JsonlWriter, write_json, write_subtitles
from vidcap.prefetch import prefetch
from vidcap.settings import GenerationSettings, SamplingSettings
from vidcap.video import VideoReader

log = logging.getLogger(__name__)

STATE_DIR = ".vidcap"
PREFETCH_FRAMES = 32


@dataclass(frozen=True)
class RunSettings:
    out_dir: Path
    formats: tuple[str, ...] = ("jsonl", "srt", "vtt")
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    model: str = ""
    quiet: bool = False
    decoder: str = "process"

    def key(self) -> str:
        """Identifies what the outputs depend on; a rerun with other settings redoes videos."""
        data = {
            "formats": sorted(self.formats),
            "sampling": asdict(self.sampling),
            "generation": asdict(self.generation),
            "model": self.model,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class VideoResult:
    video: str
    name: str
    status: str  # "done" or "failed"
    error: str | None = None
    frames: int = 0
    duration: float = 0.0
    seconds: float = 0.0
    resumed: bool = False


DECODERS = ("process", "thread")


def caption_frames(
    reader: VideoReader,
    backend: Backend,
    sampling: SamplingSettings,
    generation: GenerationSettings,
    decoder: str = "process",
) -> Iterator[CaptionedFrame]:
    """Caption one open video's sampled frames, in order.

    Decoding and the resize to the model's input size run ahead of the backend, bounded:
    in a child process (``decoder="process"``, the default; see ``decode_worker``) or in
    a thread of this one (``"thread"``).
    """
    pending: deque[Frame] = deque()
    if decoder == "process":
        source = decoded_frames(reader, sampling, backend.input_size)
    elif decoder == "thread":
        source = (
            Frame(f.index, f.pts_seconds, resize_for_model(f.rgb, backend.input_size))
            for f in reader.frames(sampling)
        )
    else:
        raise UsageError(f"unknown decoder {decoder!r}; supported values are {', '.join(DECODERS)}")

    def images() -> Iterator:
        for frame in prefetch(source, PREFETCH_FRAMES):
            pending.append(frame)
            yield frame.rgb

    for caption in backend.caption_stream(images(), generation):
        frame = pending.popleft()
        yield CaptionedFrame(index=frame.index, time=frame.pts_seconds, caption=caption)


def caption_video(
    path: Path | str,
    backend: Backend,
    sampling: SamplingSettings,
    generation: GenerationSettings,
    decoder: str = "process",
) -> Iterator[CaptionedFrame]:
    """Open ``path`` and caption its sampled frames (raises ``VideoError`` if undecodable)."""
    with VideoReader(path) as reader:
        yield from caption_frames(reader, backend, sampling, generation, decoder)


def output_names(videos: Sequence[Path]) -> dict[Path, str]:
    """Output base name per video: its stem, plus a short path hash where stems collide."""
    stems = Counter(v.stem for v in videos)
    names: dict[Path, str] = {}
    for video in videos:
        if stems[video.stem] == 1:
            names[video] = video.stem
        else:
            digest = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:8]
            names[video] = f"{video.stem}-{digest}"
    return names


def _state_path(settings: RunSettings, name: str) -> Path:
    return settings.out_dir / STATE_DIR / f"{name}.json"


def _finished(settings: RunSettings, name: str) -> VideoResult | None:
    """The recorded result of a previous run with the same settings, if all its files exist."""
    state = _state_path(settings, name)
    if not state.is_file():
        return None
    try:
        record = json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    outputs = [settings.out_dir / f"{name}.{fmt}" for fmt in settings.formats]
    if record.get("key") != settings.key() or not all(p.is_file() for p in outputs):
        return None
    result = VideoResult(**record["result"])
    result.resumed = True
    return result


def process_video(video: Path, name: str, backend: Backend, settings: RunSettings) -> VideoResult:
    """Caption one video into its outputs; failures become a result, never an exception."""
    started = time.monotonic()
    result = VideoResult(video=str(video), name=name, status="failed")
    base = settings.out_dir / name
    writer: JsonlWriter | None = None
    try:
        with VideoReader(video) as reader:
            frames: list[CaptionedFrame] = []
            jsonl = "jsonl" in settings.formats
            writer = JsonlWriter(base.with_name(name + ".jsonl"), str(video)) if jsonl else None
            bar = tqdm(
                total=reader.estimated_samples(settings.sampling),
                desc=name,
                unit="frame",
                disable=True if settings.quiet else None,
                leave=False,
            )
            with bar:
                for item in caption_frames(
                    reader, backend, settings.sampling, settings.generation, settings.decoder
                ):
                    frames.append(item)
                    if writer:
                        writer.write(item)
                    bar.update(1)
            write_subtitles(base, frames, reader.stats.duration, settings.formats)
            if writer:
                writer.commit()
                writer = None
            result.status = "done"
            result.frames = len(frames)
            result.duration = round(reader.stats.duration, 6)
    except BackendUnavailable:
        raise
    except VidcapError as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad video never stops the run
        log.debug("captioning %s failed", video, exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if writer:
            writer.abort()
    result.seconds = round(time.monotonic() - started, 3)
    if result.status == "done":
        write_json(_state_path(settings, name), {"key": settings.key(), "result": asdict(result)})
    else:
        log.warning("failed: %s", result.error)
    return result


def run(videos: Sequence[Path], backend: Backend, settings: RunSettings) -> list[VideoResult]:
    """Caption every video (skipping those a previous identical run finished); write summary.

    When the backend is unavailable altogether (every server down after retries) the run
    stops at once rather than failing each remaining video in turn: the summary is written
    with the videos done so far and ``BackendUnavailable`` propagates. A rerun resumes.
    """
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    (settings.out_dir / STATE_DIR).mkdir(exist_ok=True)
    started = time.monotonic()
    results: list[VideoResult] = []
    try:
        for video, name in output_names(videos).items():
            previous = _finished(settings, name)
            if previous is not None:
                log.info("%s: already done, skipped", video)
                results.append(previous)
                continue
            try:
                results.append(process_video(video, name, backend, settings))
            except BackendUnavailable as exc:
                results.append(
                    VideoResult(video=str(video), name=name, status="failed", error=str(exc))
                )
                raise
    finally:
        write_json(settings.out_dir / "summary.json", summary(results, time.monotonic() - started))
    return results


def summary(results: Sequence[VideoResult], seconds: float) -> dict:
    new_frames = sum(r.frames for r in results if r.status == "done" and not r.resumed)
    return {
        "videos": [asdict(r) for r in results],
        "totals": {
            "videos": len(results),
            "done": sum(r.status == "done" for r in results),
            "failed": sum(r.status == "failed" for r in results),
            "resumed": sum(r.resumed for r in results),
            "frames": sum(r.frames for r in results),
            "seconds": round(seconds, 3),
            "frames_per_second": round(new_frames / seconds, 3) if seconds > 0 else 0.0,
        },
    }
