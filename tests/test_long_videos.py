"""What a decoder holds for a long video: per packet, a few bytes of Python, whatever the
sampling (a 48-hour 60 fps recording has ten million packets, and a GPU server runs a
decoder per core)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import pytest

from tests.support.videos import encode_with_ffmpeg
from vidcap.outputs import SCENE_FORMATS, SCENES_FORMAT, VIDEO_FORMATS, CaptionedFrame
from vidcap.scenes import Scene
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

RATE = 100
SHORT, LONG = 2000, 8000  # frames
# Python bytes a decode holds at its peak for each packet more in the video: the demux
# pass's times (8 bytes each, in presentation and in decode order), a keyframe flag, the
# skipped packets' times, and the samples' own bookkeeping (sets of their times: at
# --fps 10 of a 100 fps video, a tenth of the packets; 41 bytes a packet in all there).
# Lists of floats and a count of every decoded frame's time took about 170, and 350 at
# --every-n 1 (every packet's time in those sets; every frame is decoded as `all` does now).
MAX_BYTES_PER_PACKET = 50


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("long")
    videos = {
        frames: encode_with_ffmpeg(
            folder / f"{frames}.mkv",
            frames,
            str(RATE),
            ["-c:v", "libx264", "-preset", "ultrafast", "-g", "250"],
            size=(16, 16),
        )  # fmt: skip
        for frames in (SHORT, LONG)
    }
    _peak(videos[SHORT], None)  # (what a first decode sets up once is no video's)
    return videos


def _peak(video: Path, sampling: SamplingSettings | None) -> tuple[int, int]:
    """(samples, peak bytes of Python allocations) of one decode of ``video``; sampling
    None: every frame, as scene detection decodes them."""
    reader = VideoReader(video)
    tracemalloc.start()
    try:
        frames = reader.decoded_frames() if sampling is None else reader.samples(sampling)
        return sum(1 for _ in frames), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingSettings(),
        SamplingSettings(fps=10.0),
        SamplingSettings(mode="all"),
        SamplingSettings(every_n=1),
    ],
    ids=["fps1-exact", "fps10-exact", "fps1-all", "every-frame-exact"],
)
@pytest.mark.heavy
def test_a_decode_holds_a_few_bytes_per_packet(videos: dict[int, Path], sampling) -> None:  # noqa: ANN001
    """Regression: the demux pass kept each packet's time as Python floats in a sorted list
    and in a tuple of (time, keyframe) pairs, and the decode pass counted every decoded
    frame's time in a dict: about 170 bytes a packet, 280 with FFmpeg's own index (a
    3-hour 25 fps MP4 grew a decoder by 76 MB at --fps 1; 48 hours at 60 fps would take
    gigabytes)."""
    (short_samples, short_peak), (long_samples, long_peak) = (
        _peak(videos[n], sampling) for n in (SHORT, LONG)
    )
    per_second = RATE if sampling.every_n else int(sampling.fps or 1)
    assert (short_samples, long_samples) == (SHORT // RATE * per_second, LONG // RATE * per_second)
    per_packet = (long_peak - short_peak) / (LONG - SHORT)
    assert per_packet < MAX_BYTES_PER_PACKET, f"{per_packet:.0f} bytes a packet"


@pytest.mark.heavy
def test_decoding_every_frame_for_scenes_holds_a_few_bytes_per_packet(
    videos: dict[int, Path],
) -> None:
    """Regression: the decode counted each frame it sent by its time, so that a second
    pass would not send it again: 70 bytes a frame where every frame is sent (``--scenes``).
    The latest time sent, and how many frames of it, say as much."""
    (short_frames, short_peak), (long_frames, long_peak) = (
        _peak(videos[n], None) for n in (SHORT, LONG)
    )
    assert (short_frames, long_frames) == (SHORT, LONG)
    per_packet = (long_peak - short_peak) / (LONG - SHORT)
    assert per_packet < MAX_BYTES_PER_PACKET, f"{per_packet:.0f} bytes a packet"


class _Counted(Sequence[CaptionedFrame]):
    """A video's samples that count how many of them are looked at."""

    def __init__(self, frames: list[CaptionedFrame]) -> None:
        self._frames, self.looked = frames, 0

    def __len__(self) -> int:
        return len(self._frames)

    @overload
    def __getitem__(self, i: int) -> CaptionedFrame: ...
    @overload
    def __getitem__(self, i: slice) -> list[CaptionedFrame]: ...
    def __getitem__(self, i: int | slice) -> CaptionedFrame | list[CaptionedFrame]:
        got = self._frames[i]
        self.looked += len(got) if isinstance(got, list) else 1
        return got


@pytest.mark.parametrize("fmt", ["srt", "vtt", SCENES_FORMAT])
def test_a_long_videos_scenes_look_at_each_sample_a_few_times(fmt: str) -> None:
    # Hours of 4 s shots sampled every second (--scenes --fps 1): each scene once took a
    # pass over every sample (3 hours' outputs, 20 s of one core; 10 hours', minutes).
    rate, shot, shots = 25, 4, 500
    frames = _Counted(
        [CaptionedFrame(s * rate, float(s), f"shot {s // shot}") for s in range(shots * shot)]
    )
    scenes = [
        Scene(n + 1, n * shot * rate, (n + 1) * shot * rate, float(n * shot), float((n + 1) * shot))
        for n in range(shots)
    ]
    text = {**VIDEO_FORMATS, **SCENE_FORMATS}[fmt].render("v", frames, shots * shot, scenes)
    assert "shot 499" in text and "shot 0" in text
    assert frames.looked < 20 * (len(frames) + shots * 12)  # (not shots × samples: 1,000,000)
