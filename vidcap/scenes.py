"""``--scenes``: shot boundaries from PySceneDetect, found in the decoder, and the samples
taken inside each shot.

``SceneSampler`` sits in ``vidcap.decode.decode_events`` (so in the decoder processes, the
Ray decode tasks, anywhere that generator runs) and sees every decoded frame of a video
once, in presentation order (``VideoReader.decoded_frames``: one decode per video, nothing
skipped). For each frame it:

1. feeds PySceneDetect's detector (``ContentDetector`` by default; ``AdaptiveDetector``,
   ``HashDetector``, ``HistogramDetector``) the picture as PySceneDetect's own
   ``SceneManager`` would: the stored pixels in BGR (PyAV's ``bgr24``, what PySceneDetect's
   PyAV backend reads), shrunk by ``SceneManager``'s automatic factor (to about 256 pixels
   on the longer side, ``cv2.INTER_LINEAR``), with a timecode from the frame's presentation
   time. So the cuts are those ``scenedetect.detect(path, ContentDetector())`` finds in the
   same file;
2. holds the frame in a short delay line. A detector may report a cut up to its
   ``event_buffer_length`` frames in the past (``ContentDetector``: ``min_scene_len``, 15
   frames, because of its flash filter; ``AdaptiveDetector``: its window, 2); a frame that
   leaves the delay line has its scene settled;
3. hands the settled frame to the open scene's sampler. At a cut the open scene closes: its
   samples (``Frame``, resized for the model) and then the ``Scene`` itself come out.

Sampling inside a scene:

- ``scene_frames`` N (the default, N = 1): N frames evenly spaced — the frames nearest the
  middles of N equal parts of the scene (N = 1: the middle frame). The scene's length is
  known only at its end, so candidates are kept as the scene plays, **bounded**: frames at
  a stride (first every frame); when ``capacity`` candidates are held, every other one is
  dropped and the stride doubles. A scene of n frames is thus sampled within
  n / capacity frames of the exact targets (exactly, up to ``capacity`` frames). The
  candidates are the decoded frames themselves, converted (upright RGB, model size) only
  once picked, while ``capacity`` of them fit in ``CANDIDATE_BYTES`` (64 MiB: ``capacity``
  is ``max(32, 4 N)`` frames, fewer where they do not fit — 20 at 1080p, 5 at 4K); where
  not even 2 N + 2 fit, each is converted to model size as it is taken (``max(32, 4 N)``
  of 150 KB). Converting only the picks matters: converting every frame of a short scene
  cost more than detecting the cuts (bench/scenes.py);
- ``fps`` F or ``every_n`` N (``--fps``/``--every-n`` with ``--scenes``): the grid starts
  again at each scene's first frame (so every scene has a sample at its start), and samples
  leave as soon as their frame is settled.

Memory per video: the delay line (the detector's look-back plus about three decoded frames
at the stored resolution, ``av.VideoFrame``\\ s not yet converted: 18 frames of 1080p YUV
is about 56 MB, for the default ``ContentDetector``) and the candidates (at most 64 MiB).
Nothing grows with the video's length.

PySceneDetect is imported only when a sampler is built: reading these classes (the engine,
the outputs) needs none of it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from vidcap.frames import Frame
from vidcap.sampling import PTS_EPSILON, grid_selector
from vidcap.settings import SamplingSettings

if TYPE_CHECKING:
    from vidcap.decoded import DecodedFrame

log = logging.getLogger(__name__)

MIN_CAPACITY = 32  # candidates held per scene with --scene-frames (times 4 N when larger)
CANDIDATE_BYTES = 64 << 20  # decoded frames a scene may hold as candidates (see _capacity)
_MICROSECOND = Fraction(1, 1_000_000)


@dataclass(frozen=True)
class Scene:
    """One shot: ``number`` (from 1), its first frame and the first frame after it
    (``end_frame``, exclusive), and its presentation times [``start``, ``end``): ``start`` is
    its first frame's time, ``end`` the next scene's first frame's time, or the video's end
    (the last frame's time plus one frame interval). Scenes are contiguous and cover the video.
    """

    number: int
    start_frame: int
    end_frame: int
    start: float
    end: float


MIN_RATE = 5.0  # frames a second: a stated rate below is not taken for the detector's clock


def make_detector(name: str, threshold: float | None) -> Any:  # -> scenedetect.SceneDetector
    """PySceneDetect's detector ``name`` at its defaults, or with ``threshold``."""
    import scenedetect

    kinds = {
        "content": (scenedetect.ContentDetector, "threshold"),
        "adaptive": (scenedetect.AdaptiveDetector, "adaptive_threshold"),
        "hash": (scenedetect.HashDetector, "threshold"),
        "histogram": (scenedetect.HistogramDetector, "threshold"),
    }
    kind, argument = kinds[name]
    return kind() if threshold is None else kind(**{argument: threshold})


def detector_input(rgb_or_bgr: Any, factor: float) -> Any:
    """A frame shrunk as PySceneDetect's ``SceneManager`` shrinks it (``factor`` > 1)."""
    if factor <= 1.0:
        return rgb_or_bgr
    height, width = rgb_or_bgr.shape[:2]
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    return cv2.resize(rgb_or_bgr, size, interpolation=cv2.INTER_LINEAR)


class SceneSampler:
    """One video's decoded frames in, its samples and scenes out (see the module docstring).

    ``push(frame)`` for every decoded frame in presentation order, then ``finish(duration)``;
    each returns what is ready: sampled ``Frame``\\ s (resized to ``size``) and closed
    ``Scene``\\ s, in order, each scene after its samples.
    """

    def __init__(
        self,
        sampling: SamplingSettings,
        size: tuple[int, int],
        rate: float,
        tolerance: float = PTS_EPSILON,
    ) -> None:
        from av.video.reformatter import VideoReformatter
        from scenedetect import FrameTimecode
        from scenedetect.common import Timecode
        from scenedetect.scene_manager import compute_downscale_factor

        from vidcap.picture import has_alpha, to_sdr_rgb

        self._timecode = lambda seconds: FrameTimecode(
            Timecode(pts=round(seconds * 1_000_000), time_base=_MICROSECOND), fps=self._rate
        )
        self._downscale_factor = compute_downscale_factor
        # One colour converter for the video: the same pixels as ``to_ndarray(format="bgr24")``
        # (PySceneDetect's PyAV backend), a third of its cost (that builds one per frame).
        self._reformatter = VideoReformatter()
        self._has_alpha, self._composited = has_alpha, to_sdr_rgb  # (PyAV, imported here)
        self.sampling = sampling
        self.size = size
        # A time into a shot is two stamps' difference: each rounded by the container's clock.
        self._tolerance = 2 * tolerance
        # A stated rate under MIN_RATE is no frame rate (a slideshow MP4 states one frame in
        # 10 s): the detector's shortest shot, 15 frames, would be 150 s and no shot found.
        # Such a video is timed at 25 frames a second (PySceneDetect itself finds no shot).
        ok = rate >= MIN_RATE
        self._rate = Fraction(rate).limit_denominator(1001) if ok else Fraction(25)
        self._detector = make_detector(sampling.scene_detector, sampling.scene_threshold)
        self._lag = int(self._detector.event_buffer_length)
        self._factor: float | None = None
        self._size: tuple[int, int] | None = None
        self._delay: deque[DecodedFrame] = deque()
        self._cuts: set[float] = set()
        self._scene: _OpenScene | None = None
        self._last: DecodedFrame | None = None
        self._number = 0

    def push(self, frame: DecodedFrame) -> list[Frame | Scene]:
        av_frame = frame.av_frame
        size = (av_frame.width, av_frame.height)
        if self._factor is None:  # SceneManager's automatic downscale, from the frame size
            self._factor = self._downscale_factor(max(size))
            self._size = size
        # A frame of another size (a stream that changes resolution: a WebRTC recording, an
        # adaptive stream saved, recordings joined) is scaled to the first frame's, so shots
        # are still found after the change (SceneManager skips such frames: it found none).
        width, height = self._size
        if self._has_alpha(av_frame):  # as shown: onto white, as the model sees it
            bgr = np.ascontiguousarray(self._composited(av_frame)[..., ::-1])
            if size != self._size:
                bgr = cv2.resize(bgr, self._size, interpolation=cv2.INTER_AREA)
        else:  # (at the frame's own size, a conversion only)
            bgr = self._reformatter.reformat(
                av_frame, format="bgr24", width=width, height=height
            ).to_ndarray()
        small = detector_input(bgr, self._factor)
        for cut in self._detector.process_frame(self._timecode(frame.time), small):
            self._cut(cut.seconds)
        self._delay.append(frame)
        out: list[Frame | Scene] = []
        while self._settled():
            out += self._release(self._delay.popleft())
        return out

    def finish(self, duration: float) -> list[Frame | Scene]:
        """The video ended at ``duration`` (s): the remaining samples and scenes."""
        out: list[Frame | Scene] = []
        if self._delay:
            for cut in self._detector.post_process(self._timecode(self._delay[-1].time)):
                self._cut(cut.seconds)
        while self._delay:
            out += self._release(self._delay.popleft())
        if self._scene is not None and self._last is not None:
            end = max(duration, self._last.time)
            out += self._close(self._last.index + 1, end)
        return out

    # ---- the delay line -------------------------------------------------------------------

    def _settled(self) -> bool:
        """Can no cut come any more for the oldest frame held? A detector reports cuts at most
        ``lag`` frames back — frames by count (AdaptiveDetector's window) or by nominal frame
        intervals (the flash filter's length): both must have passed."""
        if len(self._delay) <= self._lag:
            return False
        if self._lag == 0:
            return True
        previous = self._delay[-2].time if len(self._delay) > 1 else self._delay[-1].time
        return self._delay[0].time < previous - (self._lag + 1) / float(self._rate)

    def _cut(self, seconds: float) -> None:
        key = round(seconds, 6)
        if self._delay and key < round(self._delay[0].time, 6) - 1e-6:
            # (never seen: the delay line covers every detector's look-back) a cut for a
            # frame already settled starts the next scene at the first frame still held
            log.debug(
                "a scene cut at %.3f s came late; placed at %.3f s", seconds, self._delay[0].time
            )
            key = round(self._delay[0].time, 6)
        self._cuts.add(key)

    def _release(self, frame: DecodedFrame) -> list[Frame | Scene]:
        out: list[Frame | Scene] = []
        if self._scene is not None and round(frame.time, 6) in self._cuts:
            out += self._close(frame.index, frame.time)
        if self._scene is None:
            self._number += 1
            self._scene = _OpenScene(
                self._number, frame, self.sampling, self._model_frame, self._tolerance
            )
        sample = self._scene.add(frame)
        if sample is not None:
            out.append(sample)
        self._last = frame
        return out

    def _close(self, end_frame: int, end: float) -> list[Frame | Scene]:
        scene, self._scene = self._scene, None
        if scene is None:
            return []
        out: list[Frame | Scene] = list(scene.picks())
        out.append(Scene(scene.number, scene.start_frame, end_frame, scene.start, end))
        return out

    def _model_frame(self, frame: DecodedFrame) -> Frame:
        return frame.for_model(self.size)


class _OpenScene:
    """The scene being played: its start, and its sampler (a grid, or bounded candidates)."""

    def __init__(
        self,
        number: int,
        first: DecodedFrame,
        sampling: SamplingSettings,
        convert: Callable[[DecodedFrame], Frame],
        tolerance: float,
    ) -> None:
        self.number = number
        self.start_frame = first.index
        self.start = first.time
        self.convert = convert
        self.count = 0  # frames of the scene seen so far
        self.wanted = sampling.scene_frames
        self.grid: Callable[[int, float], bool] | None = None
        if self.wanted is not None:
            self.capacity, self.lazy = _capacity(self.wanted, _frame_bytes(first))
            self.stride = 1
            # (position in the scene, the decoded frame (lazy) or its model-size Frame)
            self.candidates: list[tuple[int, Any]] = []
        elif sampling.every_n is not None:
            every = sampling.every_n
            self.grid = lambda position, seconds: position % every == 0
        else:
            take = grid_selector(1.0 / float(sampling.fps or 1.0), tolerance)
            self.grid = lambda position, seconds: take(seconds)

    def add(self, frame: DecodedFrame) -> Frame | None:
        """Take ``frame`` (the scene's next one); a sample ready now (grid sampling), or None."""
        position = self.count
        self.count += 1
        if self.grid is not None:
            return self.convert(frame) if self.grid(position, frame.time - self.start) else None
        if position % self.stride == 0:
            self.candidates.append((position, frame if self.lazy else self.convert(frame)))
            if len(self.candidates) >= self.capacity:  # full: keep every other, stride doubles
                self.stride *= 2
                self.candidates = [c for c in self.candidates if c[0] % self.stride == 0]
        return None

    def picks(self) -> list[Frame]:
        """With ``scene_frames`` N: the candidates nearest the middles of N equal parts."""
        if self.grid is not None or not self.candidates:
            return []
        wanted = self.wanted or 1
        chosen: list[int] = []
        if len(self.candidates) <= wanted:
            chosen = list(range(len(self.candidates)))
        for part in range(wanted if not chosen else 0):
            target = math.floor((2 * part + 1) * self.count / (2 * wanted))
            free = [i for i in range(len(self.candidates)) if i not in chosen]
            chosen.append(min(free, key=lambda i: (abs(self.candidates[i][0] - target), i)))
        picked = [self.candidates[i][1] for i in sorted(chosen)]
        return [self.convert(p) if self.lazy else p for p in picked]


def _frame_bytes(frame: DecodedFrame) -> int:
    try:
        return sum(plane.buffer_size for plane in frame.av_frame.planes)
    except AttributeError:  # (not a decoded frame: tests)
        return 0


def _capacity(wanted: int, frame_bytes: int) -> tuple[int, bool]:
    """Candidates a scene holds for ``wanted`` frames, and whether they stay decoded frames
    (converted only once picked: within ``CANDIDATE_BYTES``) or are converted to model size
    as they are taken (frames too large to hold enough of)."""
    most = max(MIN_CAPACITY, 4 * wanted)
    fit = CANDIDATE_BYTES // frame_bytes if frame_bytes else most
    if fit >= 2 * wanted + 2:
        return min(most, fit), True
    return most, False
