"""An MPEG-TS that lost packets on the way (a security camera's recording over a flaky link,
a broadcast capture): whole 188-byte packets missing, its continuity counters skipping."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.videos import encode_with_ffmpeg, frame_number
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader

PACKET = 188
SAMPLINGS = {
    "fps": SamplingSettings(fps=1.0),
    "every-n": SamplingSettings(fps=None, every_n=7),
    "keyframes": SamplingSettings(keyframes=True),
    "all": SamplingSettings(fps=1.0, mode="all"),
}


def without_packets(data: bytes, at: list[int], count: int = 5) -> bytes:
    """``data`` (an MPEG-TS) with ``count`` packets removed at each fraction of ``at`` (%)."""
    total = len(data) // PACKET
    dropped = {start * total // 100 + i for start in at for i in range(count)}
    return b"".join(data[i * PACKET : (i + 1) * PACKET] for i in range(total) if i not in dropped)


@pytest.fixture(scope="module")
def lossy_ts(tmp_path_factory) -> Path:
    """12 s of numbered H.264 frames at 25 fps, a keyframe every 2 s, packets lost at a
    quarter, half and three quarters of the file: the decoder conceals it without a word,
    showing frames after the loss predicted from the wrong pictures."""
    folder = tmp_path_factory.mktemp("lossy")
    whole = encode_with_ffmpeg(
        folder / "whole.ts", 300, "25",
        ["-c:v", "libx264", "-g", "50", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "mpegts"],
        size=(144, 256),
    )  # fmt: skip
    path = folder / "lossy.ts"
    path.write_bytes(without_packets(whole.read_bytes(), [25, 50, 75]))
    return path


@pytest.mark.parametrize("mode", SAMPLINGS)
def test_packets_lost_in_a_transport_stream_are_warned_and_marked(
    lossy_ts: Path, mode: str, caplog
) -> None:
    """Regression: vidcap captioned such a file without a word (nor does `ffmpeg -v error`
    print one), the damaged pictures unmarked. The demuxer flags the packets it found gaps
    in corrupt: one warning counts them, in every mode, and every sample from such a packet
    to the next keyframe is marked damaged; a sample whose picture is another frame's is
    among them."""
    with caplog.at_level(logging.WARNING, logger="vidcap.video"):
        with VideoReader(lossy_ts) as reader:
            samples = [
                (s.index, s.time, s.damaged, frame_number(s.shown().rgb))
                for s in reader.samples(SAMPLINGS[mode])
            ]
    said = [r.getMessage() for r in caplog.records if "arrived damaged" in r.getMessage()]
    # (of the 3 losses, the one just before a keyframe, the clock jumping on to it, looks
    # like a recording joined on: not counted, its frames after the keyframe whole)
    assert len(said) == 1 and "2 packets of its video" in said[0], said
    assert samples
    # (a frame whose number is not its own shows another picture: the damage; every
    # such sample is marked)
    wrong = [s for s in samples if s[2] is False and s[3] != round(s[1] * 25)]
    assert not wrong, wrong
    if mode != "keyframes":  # (keyframes are whole: the damage is between them)
        assert any(damaged for _, _, damaged, _ in samples)
    assert not any(damaged for _, t, damaged, _ in samples if t < 2.0)  # before the first loss


def test_whole_and_joined_transport_streams_are_not_warned(lossy_ts: Path, caplog) -> None:
    """Two recordings joined with ``cat``: the second's continuity counters start again
    (FFmpeg flags a packet there) with its clock, on a keyframe: nothing was lost."""
    whole = lossy_ts.with_name("whole.ts")
    joined = lossy_ts.with_name("joined.ts")
    joined.write_bytes(whole.read_bytes() * 2)
    for path, count in ((whole, 12), (joined, 24)):
        with caplog.at_level(logging.WARNING, logger="vidcap.video"):
            caplog.clear()
            with VideoReader(path) as reader:
                samples = list(reader.samples(SamplingSettings(fps=1.0)))
        assert len(samples) == count and not any(s.damaged for s in samples)
        assert not caplog.records, caplog.text
