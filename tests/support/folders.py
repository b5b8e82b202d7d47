"""Output folders written directly (no model, no decoding): what ``vidcap caption`` leaves,
for the report, search and export tests and benches.

``FakeVideo`` describes one video's outcome; ``write_folder`` writes its JSONL, SRT and VTT
through the real formats (``vidcap.outputs``), its resume record (``vidcap.records``) and
then ``summary.json``. ``big_folder`` makes thousands of them with varied captions.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vidcap.inputs import source_identity
from vidcap.jobs import VideoResult
from vidcap.outputs import VIDEO_FORMATS, CaptionedFrame
from vidcap.records import write_record, write_summary

KEY = "0123456789abcdef"


@dataclass(frozen=True)
class FakeVideo:
    """A video as a run finished it: ``captions`` at ``times`` (frame index = time × rate)."""

    name: str
    captions: tuple[str, ...] = ()
    step: float = 1.0  # seconds between sampled frames
    rate: int = 10  # frames per second of the "video"
    error: str | None = None  # a failed video
    source: str | None = None  # default: OUT/../videos/<name>.mp4 (need not exist)
    extra: dict = field(default_factory=dict)
    damaged: tuple[int, ...] = ()  # frame indices that may show decoding damage
    digest: bool = False  # its record holds the source's SHA-256 (a run without --max-frames)

    @property
    def frames(self) -> tuple[CaptionedFrame, ...]:
        frames = []
        for i, caption in enumerate(self.captions):
            index = round(i * self.step * self.rate)
            frames.append(
                CaptionedFrame(
                    index, round(i * self.step, 6), caption, damaged=index in self.damaged
                )
            )
        return tuple(frames)

    @property
    def duration(self) -> float:
        return round(len(self.captions) * self.step, 6)


def source_of(out: Path, video: FakeVideo) -> str:
    """The source a record names: ``video.source``, else ``OUT/../videos/<name>.mp4``."""
    return video.source or str(out.parent / "videos" / f"{video.name}.mp4")


def write_folder(
    out: Path,
    videos: Iterable[FakeVideo],
    formats: Sequence[str] = ("jsonl", "srt", "vtt"),
    durable: bool = True,
) -> Path:
    """Each video's outputs and resume record, then ``summary.json``. ``durable=False`` writes
    the records without fsync (fast, for thousands of videos)."""
    (out / ".vidcap").mkdir(parents=True, exist_ok=True)
    for video in videos:
        source = source_of(out, video)
        frames = video.frames
        if video.error is None:
            for fmt in formats:
                text = VIDEO_FORMATS[fmt].render(source, frames, video.duration)
                (out / f"{video.name}.{fmt}").write_text(text, encoding="utf-8")
        result = VideoResult(
            video=source,
            name=video.name,
            status="failed" if video.error else "done",
            error=video.error,
            frames=0 if video.error else len(frames),
            duration=video.duration,
            key=KEY,
            model="tiny",
            damaged_frames=list(video.damaged) or None,
        )
        # (a source that exists here: its own identity, as a run records it)
        exists = "://" not in source and Path(source).is_file()
        identity = source_identity(source) if exists else {"path": source, "size": 1, "mtime_ns": 1}
        if exists and video.digest:
            identity["sha256"] = hashlib.sha256(Path(source).read_bytes()).hexdigest()
        if durable:
            write_record(out, video.name, KEY, identity, result.__dict__, {})
        else:
            record = {"key": KEY, "identity": identity, "result": result.__dict__}
            (out / ".vidcap" / f"{video.name}.json").write_text(json.dumps(record))
    write_summary(out, [], 0, 0.0)
    return out


def fake_thumbs(
    out: Path, name: str, frames: Iterable[int], color: tuple[int, int, int] = (200, 40, 40)
) -> None:
    """Thumbnails per the contract: ``thumbs/<name>/<frame:06d>.jpg``, 160 px high."""
    folder = out / "thumbs" / name
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (284, 160), color).save(buffer, format="JPEG", quality=70)
    for frame in frames:
        (folder / f"{frame:06d}.jpg").write_bytes(buffer.getvalue())


HOSTILE_NAME = "hostile <script>alert(1)<script> <img src=x onerror=alert(2)> \"q\" 'x' ü &amp;"
HOSTILE_CAPTION = "</script><script>alert('caption')</script> a \"quoted\" red car"


def library() -> list[FakeVideo]:
    """A small folder of every kind of video the page, search and export must survive."""
    return [
        FakeVideo(
            "street",
            (
                "a red car on a street",
                "a red car on a street",
                "a man walking",
                "a man walking",
                "a red car parked",
                "a bus on a street",
                "a red  car turning",
                "a red car turning",
                "a dog",
                "a red car",
            ),
        ),  # fmt: skip
        FakeVideo(
            "beach",
            (
                "a dog running on a beach",
                "a dog running on a beach",
                "waves",
                "a red car on a beach",
                "waves",
                "waves",
                "a dog on a beach",
            ),
            step=0.5,
        ),  # fmt: skip
        FakeVideo(HOSTILE_NAME, (HOSTILE_CAPTION, "a man walking", HOSTILE_CAPTION, "")),
        FakeVideo(
            "café Straße",
            ("un CAFÉ à Paris", "die Straße bei Nacht", "cafés", "STRASSE", "İSTANBUL"),
        ),  # fmt: skip
        FakeVideo("empty"),  # done, no frames sampled
        FakeVideo("broken", error="videos/broken.mp4: cannot decode <b>moov</b> atom not found"),
    ]


SUBJECTS = ("a man", "a woman", "a dog", "a cat", "a child", "a red car", "a bus", "a horse",
            "a group of people", "a bird", "a boat", "a train", "a bicycle", "an old man")  # fmt: skip
ACTIONS = ("standing", "walking", "sitting", "running", "talking", "driving", "parked",
           "playing", "eating", "looking at the camera", "holding a phone")  # fmt: skip
PLACES = ("in a kitchen", "on a street", "in a park", "on a beach", "in an office",
          "at night", "in the snow", "next to a building", "on a stage", "in a field",
          "in front of a white wall", "on a bridge")  # fmt: skip
NEEDLE = "a purple giraffe juggling oranges"


def caption_stream(rng: random.Random) -> Iterable[str]:
    """BLIP-2-like captions, each often repeated over a few frames as a scene holds."""
    while True:
        text = f"{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}"
        for _ in range(rng.choice((1, 1, 2, 3, 5))):
            yield text


def big_folder(
    out: Path,
    videos: int = 10_000,
    captions: int = 60,
    seed: int = 0,
    formats: Sequence[str] = ("jsonl", "vtt"),
) -> Path:
    """``videos`` videos of ``captions`` frames each; every 1000th holds ``NEEDLE`` at frames
    10–12 (one moment of 3 frames each), every 997th failed. ``formats``: the files each
    video gets (the ``.vtt`` — two thirds of the time this takes — only the page uses)."""
    rng = random.Random(seed)
    stream = iter(caption_stream(rng))

    def make(i: int) -> FakeVideo:
        name = f"clip{i:05d}"
        if i % 997 == 996:
            return FakeVideo(name, error=f"videos/{name}.mp4: cannot decode (moov atom not found)")
        texts = [next(stream) for _ in range(captions)]
        if i % 1000 == 0:
            texts[10:13] = [NEEDLE] * 3
        return FakeVideo(name, tuple(texts))

    return write_folder(out, (make(i) for i in range(videos)), formats, durable=False)
