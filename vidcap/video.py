"""Open a video with OpenCV's FFmpeg backend and sample frames with their true timestamps.

Timestamps are each frame's presentation time as the demuxer reports it
(``CAP_PROP_POS_MSEC`` is the stream's pts in OpenCV's FFmpeg backend), so variable
frame rate and 29.97 fps streams get the times ffprobe shows, not index ÷ nominal fps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2

from vidcap.errors import VideoError
from vidcap.frames import Frame
from vidcap.settings import SamplingSettings

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".mpg", ".mpeg",
     ".ts", ".mts", ".m2ts", ".3gp", ".ogv", ".vob", ".divx"}
)  # fmt: skip

# After a failed grab, try this many more before deciding the stream has ended:
# FFmpeg can resume after a damaged stretch of a corrupt file.
MAX_CONSECUTIVE_FAILURES = 32
PTS_EPSILON = 1e-6


@dataclass
class VideoStats:
    """What decoding one video found; filled in as frames are read."""

    width: int = 0
    height: int = 0
    nominal_fps: float = 0.0
    expected_frames: int = 0
    decoded_frames: int = 0
    sampled_frames: int = 0
    last_pts: float = 0.0
    # End of the last decoded frame: its pts plus one frame interval (as ffprobe counts it).
    duration: float = 0.0

    @property
    def skipped_frames(self) -> int:
        return max(0, self.expected_frames - self.decoded_frames)


class VideoReader:
    """One open video. Iterate ``frames(sampling)`` once; ``stats`` is complete afterwards."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video")
        if self.path.stat().st_size == 0:
            raise VideoError(f"{self.path}: empty file")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise VideoError(f"{self.path}: not a decodable video (FFmpeg cannot open it)")
        self._cap = cap
        self.stats = VideoStats(
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            nominal_fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            expected_frames=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))),
        )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cap.release()

    def estimated_samples(self, sampling: SamplingSettings) -> int | None:
        """A best guess of how many frames ``sampling`` takes, for progress bars."""
        stats = self.stats
        if stats.expected_frames <= 0:
            return None
        if sampling.every_n is not None:
            estimate = math.ceil(stats.expected_frames / sampling.every_n)
        elif stats.nominal_fps > 0 and sampling.fps is not None:
            seconds = stats.expected_frames / stats.nominal_fps
            estimate = max(1, math.ceil(seconds * sampling.fps))
        else:
            return None
        return min(estimate, sampling.max_frames) if sampling.max_frames else estimate

    def frames(self, sampling: SamplingSettings) -> Iterator[Frame]:
        """Decode the stream in order, yielding the sampled frames (RGB, true pts)."""
        stats = self.stats
        selector = _selector(sampling)
        last_interval = 1.0 / stats.nominal_fps if stats.nominal_fps > 0 else 0.0
        reached_end = True
        for index, pts in self._grab_all():
            if stats.decoded_frames and pts > stats.last_pts and stats.nominal_fps <= 0:
                last_interval = pts - stats.last_pts
            stats.decoded_frames += 1
            stats.last_pts = pts
            stats.duration = pts + last_interval
            if not selector(index, pts):
                continue
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                continue
            stats.sampled_frames += 1
            yield Frame(index=index, pts_seconds=pts, rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if sampling.max_frames is not None and stats.sampled_frames >= sampling.max_frames:
                reached_end = False
                break
        self._finish(reached_end)

    def _grab_all(self) -> Iterator[tuple[int, float]]:
        index = 0
        failures = 0
        while failures <= MAX_CONSECUTIVE_FAILURES:
            if not self._cap.grab():
                failures += 1
                if index == 0 or index >= self.stats.expected_frames:
                    break
                continue
            failures = 0
            yield index, max(0.0, self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            index += 1

    def _finish(self, reached_end: bool) -> None:
        """Fail a video with no frame; warn once about frames that did not decode."""
        stats = self.stats
        if stats.decoded_frames == 0:
            raise VideoError(f"{self.path}: no decodable frames")
        if reached_end and stats.skipped_frames:
            log.warning(
                "%s: %d of %d frames could not be decoded (corrupt or truncated stream); "
                "kept the %d that decoded",
                self.path,
                stats.skipped_frames,
                stats.expected_frames,
                stats.decoded_frames,
            )


def _selector(sampling: SamplingSettings):
    """A predicate (index, pts) → take this frame?"""
    if sampling.every_n is not None:
        every_n = sampling.every_n
        return lambda index, pts: index % every_n == 0

    interval = 1.0 / float(sampling.fps or 1.0)
    next_time = [0.0]

    def by_time(index: int, pts: float) -> bool:
        if pts + PTS_EPSILON < next_time[0]:
            return False
        # The next sample is due at the first grid point after this frame.
        next_time[0] = (math.floor(pts / interval + PTS_EPSILON) + 1) * interval
        return True

    return by_time


def find_videos(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for video extensions, sorted."""
    found: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found.extend(
                sorted(
                    p
                    for p in item.rglob("*")
                    if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                )
            )
        else:
            found.append(item)
    return found
