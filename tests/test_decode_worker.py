"""Decoding in a child process: same frames as in-process, and a dead decoder fails one video."""

from __future__ import annotations

import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from videos import VideoSpec, constant_rate, write_video

import vidcap.decode_worker as decode_worker
from vidcap.backend import EmbeddedBackend
from vidcap.errors import VideoError
from vidcap.frames import resize_for_model
from vidcap.pipeline import RunSettings, process_video
from vidcap.settings import SamplingSettings
from vidcap.video import VideoReader


@pytest.mark.parametrize("name", ["vfr-mp4", "ntsc-mp4", "mpeg4-avi", "vp9-webm"])
def test_child_frames_equal_in_process_frames(generated_videos, name: str) -> None:
    path, _ = generated_videos[name]
    sampling = SamplingSettings(fps=3.0)
    with VideoReader(path) as reader:
        child = list(decode_worker.decoded_frames(reader, sampling, (32, 48)))
        child_stats = reader.stats
    with VideoReader(path) as reader:
        local = list(reader.frames(sampling))
    assert [(f.index, f.pts_seconds) for f in child] == [(f.index, f.pts_seconds) for f in local]
    for a, b in zip(child, local, strict=True):
        assert np.array_equal(a.rgb, resize_for_model(b.rgb, (32, 48)))
    assert child_stats == reader.stats


def test_child_reports_video_errors(tmp_path: Path, generated_videos) -> None:
    path, _ = generated_videos["h264-mp4"]
    doomed = tmp_path / "doomed.mp4"
    doomed.write_bytes(path.read_bytes())
    with VideoReader(doomed) as reader:
        doomed.unlink()  # gone between the parent's open and the child's
        with pytest.raises(VideoError, match="no such file"):
            list(decode_worker.decoded_frames(reader, SamplingSettings(), (16, 16)))


class DiesSoon(subprocess.Popen):
    """A real decoder process that is killed shortly after it starts (a decoder crash)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        threading.Timer(0.5, self.kill).start()


def long_video(tmp_path: Path) -> Path:
    spec = VideoSpec(
        "long", "libx264", ".mkv", constant_rate(3000, Fraction(25)), rate=Fraction(25)
    )
    return write_video(tmp_path / "long.mkv", spec)


def test_dead_decoder_fails_the_video_alone(tmp_path: Path, monkeypatch, tiny_captioner) -> None:
    video = long_video(tmp_path)
    monkeypatch.setattr(decode_worker.subprocess, "Popen", DiesSoon)
    settings = RunSettings(
        out_dir=tmp_path / "out", sampling=SamplingSettings(every_n=1), quiet=True
    )
    settings.out_dir.mkdir()
    result = process_video(video, "long", EmbeddedBackend(tiny_captioner), settings)
    assert result.status == "failed"
    assert "decoder stopped unexpectedly" in result.error
    assert not (settings.out_dir / "long.jsonl").exists()
    assert not list(settings.out_dir.glob("*.part"))
