"""The decode stage: one video → its sampled frames, resized for the model → its end.

``decode_events`` is the one per-video decode loop, and every executor drives it: the
decoder processes of ``vidcap.decode_pool`` (``vidcap caption``), the Ray decode tasks
(``vidcap.ray``) and ``vidcap mask --question`` (in process). A video that cannot be
decoded is an event too (``Failed``), never an exception: one bad file fails alone.

Frames leave upright and SDR, as players show them (``vidcap.picture``), at the model's
input size; each carries its display size.

With ``--skip-similar`` a sample that looks like the last captioned one leaves as
``Reused`` (no pixels: the model never sees it; ``vidcap.similar``). With ``--scenes``
every frame is decoded and goes through PySceneDetect (``vidcap.scenes``): the samples are
taken inside each shot, and each shot leaves as ``SceneFound`` once it has ended.

Events cross process boundaries in one binary encoding, no pickle: a fixed header (kind,
job id, index / sampled frames / scene number / payload length, time / duration, height /
scenes, width), then raw bytes: a frame's display size (width, height), whether it may show
decoding damage, and RGB pixels (kind ``F``), the captioned frame a reused one follows
(``R``), a scene's frames and end (``S``), a sample's JPEG thumbnail (``T``), the file's
32-byte SHA-256, zeros where there is none (``E``, whose height field counts the video's
scenes and width field its lost frames), nothing (``P``, a plan: the header says it all), a
one-line error (``X``) or warning (``W``).

With ``sampling.thumb_height`` each sample is preceded by its ``Thumbnail``: made here, where
the decoder's frame is, display-shaped (non-square pixels, rotation), as a JPEG. The model's
input and the thumbnail are each scaled straight from the decoder's frame by libswscale
(``DecodedFrame.for_model`` and ``picture``): the whole frame is never converted to RGB.
"""

from __future__ import annotations

import itertools
import logging
import os
import statistics
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from vidcap.errors import VideoError
from vidcap.frames import Frame
from vidcap.scenes import Scene
from vidcap.settings import SamplingSettings

if TYPE_CHECKING:
    from vidcap.decoded import DecodedFrame
    from vidcap.inputs import FileState

log = logging.getLogger(__name__)

HEADER = struct.Struct("<cIqdII")  # kind, job id, index (sampled, length), time, height, width
DISPLAY = struct.Struct("<II?")  # a frame's display (width, height), damaged, before its pixels
SAME_AS = struct.Struct("<q")  # a reused frame: the captioned frame it follows
SCENE = struct.Struct("<qqd")  # a scene: first frame, first frame after it, end (s)
NO_DIGEST = bytes(32)  # an end's file SHA-256 where there is none


@dataclass(frozen=True)
class Decoded:
    """A sampled frame of job ``job``, resized to the model's input size."""

    job: int
    frame: Frame


@dataclass(frozen=True)
class Reused:
    """A sampled frame of job ``job`` that looks like an earlier captioned one (``same_as``,
    its frame index): it takes that caption, and never reaches the model."""

    job: int
    index: int
    time: float
    same_as: int


@dataclass(frozen=True)
class Thumbnail:
    """A JPEG of sample ``index`` of job ``job``, as a player shows it, for people."""

    job: int
    index: int
    jpeg: bytes


@dataclass(frozen=True)
class SceneFound:
    """A shot of job ``job`` has ended (``--scenes``): ``scene`` says where it lies."""

    job: int
    scene: Scene


@dataclass(frozen=True)
class Ended:
    """Job ``job`` is decoded: ``sampled`` frames were sent (captioned and reused alike),
    ``scenes`` scenes (``--scenes``, else 0); the video ends at ``duration``; ``lost``
    frames could not be decoded (a corrupt or truncated file: ``VideoStats.lost_frames``);
    ``sha256``: the SHA-256 of the file decoded, in hex ("" where it was not read whole:
    ``--max-frames``), for its resume record (``inputs.same_source``)."""

    job: int
    sampled: int
    duration: float
    scenes: int = 0
    lost: int = 0
    sha256: str = ""


@dataclass(frozen=True)
class Failed:
    """Job ``job`` cannot be decoded (any frames sent before stand for nothing)."""

    job: int
    error: str


@dataclass(frozen=True)
class Planned:
    """Job ``job`` is open: about ``samples`` frames will be sampled (None: unknown).

    Sent first, and only when asked for (``decode_events(plan=True)``: progress lines).
    """

    job: int
    samples: int | None


@dataclass(frozen=True)
class Warned:
    """A warning the decoder gave about job ``job`` (a cut-off file, frames lost), in its
    place among the events, for the process that reads them to show: a decoder process's
    own output may never be seen (a Ray worker's is not shown with ``--quiet``)."""

    job: int
    message: str


@dataclass(frozen=True)
class Fetching:
    """Job ``job``'s source is still downloading: ``size`` bytes so far. Written by a
    decoder process beside its events while ``decode_events``' ``progress`` is called (its
    pool takes it for a heartbeat, not a stall, and passes it on to no consumer)."""

    job: int
    size: int


Event = Decoded | Reused | Thumbnail | SceneFound | Ended | Failed | Planned | Warned | Fetching


def decode_events(
    job: int,
    source: str,
    sampling: SamplingSettings,
    size: tuple[int, int],
    threads: int = 0,
    plan: bool = False,
    digest: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Event]:
    """Decode ``source`` (a path or a URL, fetched first): its sampled frames, upright and
    SDR, resized to ``size`` (height, width) and carrying their display size (``Decoded``,
    or ``Reused`` with ``sampling.skip_similar``), each scene once it has ended
    (``SceneFound``, with ``sampling.scenes``), then ``Ended``, or ``Failed`` wherever
    decoding stops (a scene still open then is never sent: the video fails whole).

    ``threads``: FFmpeg decoder threads (0: one per core). ``plan``: first send ``Planned``
    (the count comes from the demux pass that decoding needs anyway: no extra read; with
    ``--scenes`` the count is unknown until the end). ``digest``: read the file once more
    when it is decoded, for ``Ended.sha256`` (a run's resume record; not ``vidcap mask``).
    ``progress(bytes)``: called, from another thread, while a URL's download goes on
    (``inputs.local_copy``).

    The warnings vidcap logs on this thread while it decodes leave as ``Warned`` events
    instead of being printed. A URL's temporary copy is named by the URL in every message
    (``inputs.shown_source``: without a password it was given with).
    """
    held = _Held(source)
    events = _events(job, source, sampling, size, threads, plan, held, digest, progress)
    try:
        while True:
            with held.installed():  # (only while decoding: not while the consumer runs)
                event = next(events, None)
            for message in held.take():
                yield Warned(job, message)
            if event is None:
                return
            yield event
    finally:
        events.close()  # (a consumer that stops early: the temporary copy goes now)


class _Held(logging.Handler):
    """The warnings vidcap logs on this thread while decoding, held for the event stream;
    every other record goes on to the root logger's handlers, as it would have."""

    def __init__(self, source: str) -> None:
        from vidcap.inputs import shown_source

        super().__init__()
        self.thread = threading.get_ident()
        self.source = source
        self.shown = shown_source(source)  # (a URL's password is never in a message)
        self.local = source  # the file decoded: a URL's temporary copy
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and record.levelno >= logging.WARNING:
            self.messages.append(self.named(record.getMessage()))
        else:
            logging.getLogger().handle(record)

    def named(self, text: str) -> str:
        """``text`` with the file decoded named as the user named it (without a password)."""
        for name in {self.local, self.source} - {self.shown}:
            text = text.replace(name, self.shown)
        return text

    def take(self) -> list[str]:
        messages, self.messages = self.messages, []
        return messages

    @contextmanager
    def installed(self) -> Iterator[None]:
        logger = logging.getLogger("vidcap")
        propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.propagate = propagate


def _events(
    job: int,
    source: str,
    sampling: SamplingSettings,
    size: tuple[int, int],
    threads: int,
    plan: bool,
    held: _Held,
    digest: bool,
    progress: Callable[[int], None] | None,
) -> Iterator[Event]:
    # Imported here: a process that only reads events (the engine) needs no PyAV or fsspec.
    from vidcap.inputs import local_copy
    from vidcap.picture import display_image
    from vidcap.similar import SkipSimilar
    from vidcap.video import VideoReader

    similar = SkipSimilar(sampling.skip_similar) if sampling.skip_similar is not None else None
    sampled = scenes = 0
    times: list[float] = []  # the samples' (with --max-frames: at most that many)
    stated: float | None = None  # where the header says the picture ends (--max-frames)

    def sample(item: DecodedFrame | Frame) -> Iterator[Event]:
        """A sample: straight from the decoder, or (scenes) already at the model's size."""
        nonlocal sampled
        sampled += 1
        if sampling.max_frames is not None:
            times.append(item.time)
        if sampling.thumb_height is not None:
            if isinstance(item, Frame):
                picture = display_image(
                    item.rgb, item.display_size, min(sampling.thumb_height, item.display_size[1])
                )
            else:
                picture = item.picture(sampling.thumb_height)
            yield Thumbnail(job, item.index, thumbnail_jpeg(picture, item.index))
        frame = item if isinstance(item, Frame) else item.for_model(size)
        same_as = similar.check(frame.index, frame.rgb) if similar is not None else None
        if same_as is not None:
            yield Reused(job, frame.index, frame.time, same_as)
        else:
            yield Decoded(job, frame)

    def found(items: list[Frame | Scene]) -> Iterator[Event]:
        nonlocal scenes
        for item in items:
            if isinstance(item, Scene):
                scenes += 1
                yield SceneFound(job, item)
            else:
                yield from sample(item)

    try:
        with local_copy(source, progress) as path:
            held.local = str(path)
            whole = digest and sampling.max_frames is None  # (else the file is not read whole)
            before = _state_or_none(path) if whole else None
            with VideoReader(path, threads=threads) as reader:
                reader.warn_if_untimed()
                reader.warn_of_other_views()
                if sampling.scenes:
                    from vidcap.scenes import SceneSampler

                    if plan:
                        yield Planned(job, None)
                    sampler = SceneSampler(
                        sampling, size, reader.detector_rate, reader.tick_tolerance
                    )
                    for decoded in reader.decoded_frames():
                        yield from found(sampler.push(decoded))
                    yield from found(sampler.finish(reader.stats.duration))
                else:
                    if plan:
                        yield Planned(job, reader.estimated_samples(sampling))
                    for decoded in reader.samples(sampling):
                        yield from sample(decoded)
                stats = reader.stats
                stated = reader.stated_end() if stats.stopped_early else None
            # (read once decoded, its pages still cached: ~1.4 GB/s, milliseconds for a clip)
            sha256 = _digest_of_decoded(path, before) if whole else ""
    except VideoError as exc:
        yield Failed(job, held.named(str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - any decoder failure fails this video alone
        log.debug("decoding %s failed", source, exc_info=True)
        yield Failed(job, held.named(f"{source}: {type(exc).__name__}: {exc}"))
        return
    duration = stats.duration
    if stats.stopped_early and times:  # --max-frames: the end of what was sampled
        duration = sampled_end(times, sampling, stats.nominal_fps, stats.duration)
        if stated is not None and max(times[-1], stats.duration) <= stated < duration:
            duration = stated  # (no further than the video goes: its last sample was its last)
    yield Ended(job, sampled, duration, scenes, stats.lost_frames, sha256)


def _state_or_none(path: str) -> FileState | None:
    from vidcap.inputs import file_state

    try:
        return file_state(os.stat(path))
    except OSError:
        return None  # (the decoder says what is wrong with it)


def _digest_of_decoded(path: str, before: FileState | None) -> str:
    """The SHA-256 of the file just decoded ("" where it cannot be read). Raises
    ``VideoError`` where the file read is not the one decoding began with (``before``: its
    ``inputs.file_state`` then): a file written, renamed over or touched meanwhile (a sync,
    a download) was decoded in part from other bytes, and a digest of the new ones would
    vouch for captions of the old."""
    from vidcap.inputs import file_sha256_and_state

    try:
        sha256, after = file_sha256_and_state(path)
    except OSError:
        after, sha256 = None, ""
    if before is not None and after != before:
        raise VideoError(
            f"{path}: the file changed while it was decoded (written, replaced or touched): "
            "its captions are not kept; run again to caption it as it is now"
        )
    return sha256


def sampled_end(
    times: Sequence[float], sampling: SamplingSettings, nominal_fps: float, decoded_to: float
) -> float:
    """Where the last sample's time runs to when sampling stopped early (``--max-frames``):
    where the next sample would be — one ``--fps`` step on; one typical (median) interval
    of the samples for ``--every-n`` or ``--keyframes`` — not the end of the last frame the
    decoder happened to reach (threads and look-ahead decode past it: a keyframe 10 s on),
    which made the last cue, and a mask's last segment, that long. One sample of no rate:
    its frame's end."""
    last = times[-1]
    if sampling.every_n is None and not sampling.keyframes and sampling.fps:
        return last + 1.0 / sampling.fps
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    if gaps:
        return last + statistics.median(gaps)
    return last + 1.0 / nominal_fps if nominal_fps > 0 else decoded_to


def thumbnail_jpeg(picture: np.ndarray, index: int, quality: int = 80) -> bytes:
    """RGB ``picture`` (frame ``index``'s thumbnail, display-shaped) as a JPEG."""
    import cv2

    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"cannot encode a thumbnail of frame {index}")
    return data.tobytes()


def encode_event(event: Event) -> bytes:
    """``event`` as bytes for a pipe or a Ray row (``read_event`` reads it back)."""
    if isinstance(event, Decoded):
        frame = event.frame
        height, width = frame.rgb.shape[:2]
        header = HEADER.pack(b"F", event.job, frame.index, frame.time, height, width)
        shown = DISPLAY.pack(*frame.display_size, frame.damaged)
        return b"".join((header, shown, np.ascontiguousarray(frame.rgb).data))
    if isinstance(event, Reused):
        header = HEADER.pack(b"R", event.job, event.index, event.time, 0, 0)
        return header + SAME_AS.pack(event.same_as)
    if isinstance(event, Thumbnail):
        return HEADER.pack(b"T", event.job, event.index, 0.0, len(event.jpeg), 0) + event.jpeg
    if isinstance(event, SceneFound):
        scene = event.scene
        header = HEADER.pack(b"S", event.job, scene.number, scene.start, 0, 0)
        return header + SCENE.pack(scene.start_frame, scene.end_frame, scene.end)
    if isinstance(event, Ended):
        header = HEADER.pack(
            b"E", event.job, event.sampled, event.duration, event.scenes, event.lost
        )
        return header + (bytes.fromhex(event.sha256) if event.sha256 else NO_DIGEST)
    if isinstance(event, Planned):
        samples = -1 if event.samples is None else event.samples
        return HEADER.pack(b"P", event.job, samples, 0.0, 0, 0)
    if isinstance(event, Fetching):
        return HEADER.pack(b"D", event.job, event.size, 0.0, 0, 0)
    kind, message = (b"W", event.message) if isinstance(event, Warned) else (b"X", event.error)
    data = message.encode()
    return HEADER.pack(kind, event.job, len(data), 0.0, 0, 0) + data


def read_event(stream: IO[bytes]) -> Event | None:
    """The next event on ``stream``; None where the stream ends (or is cut short)."""
    header = _read(stream, HEADER.size)
    if len(header) < HEADER.size:
        return None
    kind, job, number, time, height, width = HEADER.unpack(header)
    if kind == b"P":
        return Planned(job, None if number < 0 else number)
    if kind == b"D":
        return Fetching(job, number)
    lengths = {b"R": SAME_AS.size, b"S": SCENE.size, b"X": number, b"W": number, b"T": height}
    lengths[b"E"] = len(NO_DIGEST)
    if kind != b"F" and kind not in lengths:
        raise ValueError(f"not a vidcap decoder event (kind {kind!r})")
    length = DISPLAY.size + height * width * 3 if kind == b"F" else lengths[kind]
    payload = _read(stream, length)
    if len(payload) < length:
        return None
    if kind == b"E":
        return Ended(
            job, number, time, height, width, "" if payload == NO_DIGEST else payload.hex()
        )
    if kind == b"X":
        return Failed(job, payload.decode(errors="replace"))
    if kind == b"W":
        return Warned(job, payload.decode(errors="replace"))
    if kind == b"T":
        return Thumbnail(job, number, payload)
    if kind == b"R":
        return Reused(job, number, time, SAME_AS.unpack(payload)[0])
    if kind == b"S":
        start_frame, end_frame, end = SCENE.unpack(payload)
        return SceneFound(job, Scene(number, start_frame, end_frame, time, end))
    shown_width, shown_height, damaged = DISPLAY.unpack_from(payload)
    rgb = np.frombuffer(payload, dtype=np.uint8, offset=DISPLAY.size).reshape(height, width, 3)
    return Decoded(job, Frame(number, time, rgb, (shown_width, shown_height), damaged))


def _read(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    return data if data is not None else b""
