"""``--skip-similar``: the hash, the reuse rule, the events, the Committer and the outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from vidcap.cli import build_parser
from vidcap.cli.args import sampling_from_args
from vidcap.commit import Committer
from vidcap.decode import Decoded, Ended, Reused, SceneFound, encode_event, read_event
from vidcap.errors import UsageError
from vidcap.frames import Frame
from vidcap.jobs import RunSettings, VideoJob
from vidcap.outputs import CaptionedFrame, frame_row
from vidcap.scenes import Scene
from vidcap.settings import SamplingSettings
from vidcap.similar import COLOUR_TOLERANCE, DEFAULT_DISTANCE, SkipSimilar, dhash, signature


def _picture(seed: int, shift: int = 0, level: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rgb = np.zeros((224, 224, 3), np.uint8)
    for _ in range(4):
        x, y = rng.integers(0, 160, 2)
        rgb[y : y + 60, x + shift : x + shift + 60] = rng.integers(40, 255, 3)
    return np.clip(rgb.astype(int) + level, 0, 255).astype(np.uint8)


def test_dhash_is_64_bits_and_tells_pictures_apart() -> None:
    a, b = _picture(1), _picture(2)
    assert 0 <= dhash(a) < 2**64
    assert signature(a).distance(signature(a)) == 0
    assert signature(a).distance(signature(b)) > 10
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).normal(0, 2, a.shape), 0, 255)
    assert signature(a).distance(signature(noisy.astype(np.uint8))) <= DEFAULT_DISTANCE


def test_flat_frames_of_other_colours_are_not_similar() -> None:
    """A dHash sees structure only: flat grey and flat white hash alike; the colour does not."""
    grey, white = np.full((224, 224, 3), 128, np.uint8), np.full((224, 224, 3), 250, np.uint8)
    assert signature(grey).distance(signature(white)) == 0
    assert not signature(grey).similar(signature(white), DEFAULT_DISTANCE)
    near = np.full((224, 224, 3), 128 + int(COLOUR_TOLERANCE) - 1, np.uint8)
    assert signature(grey).similar(signature(near), 0)


def test_reuse_follows_the_last_captioned_sample_only() -> None:
    skip = SkipSimilar(DEFAULT_DISTANCE)
    a = _picture(1)
    assert skip.check(0, a) is None  # the first sample is always captioned
    assert skip.check(10, a.copy()) == 0
    assert skip.check(20, _picture(2)) is None  # different: captioned, the new reference
    assert skip.check(30, _picture(2)) == 20
    assert skip.check(40, a) is None
    with pytest.raises(ValueError):
        SkipSimilar(65)


def test_new_events_round_trip_through_the_encoding() -> None:
    frame = Frame(3, 0.3, np.zeros((4, 4, 3), np.uint8))
    events = [
        Decoded(7, frame),
        Reused(7, 13, 1.3, 3),
        SceneFound(7, Scene(2, 30, 60, 3.0, 6.0)),
        Ended(7, 12, 14.0, 5),
        Ended(8, 2, 1.0),
    ]
    stream = io.BytesIO(b"".join(encode_event(e) for e in events))
    back = [read_event(stream) for _ in events]
    assert back[1:] == events[1:]
    assert back[0].frame.index == 3 and back[0].job == 7
    assert read_event(stream) is None


def test_frame_row_has_same_as_with_skip_similar() -> None:
    assert "same_as" not in frame_row("v.mp4", CaptionedFrame(0, 0.0, "x"))
    assert frame_row("v.mp4", CaptionedFrame(0, 0.0, "x"), same_as=True)["same_as"] is None
    row = frame_row("v.mp4", CaptionedFrame(10, 1.0, "x", same_as=0), same_as=True)
    assert row == {"video": "v.mp4", "frame": 10, "time": 1.0, "caption": "x", "same_as": 0,
                   "damaged": False}  # fmt: skip
    assert list(row) == ["video", "frame", "time", "caption", "same_as", "damaged"]


def _args(*flags: str):
    return build_parser().parse_args(["caption", "v.mp4", "--out", "o", *flags])


def test_flags() -> None:
    assert sampling_from_args(_args()).skip_similar is None
    assert sampling_from_args(_args("--skip-similar")).skip_similar == DEFAULT_DISTANCE
    assert sampling_from_args(_args("--skip-similar=7")).skip_similar == 7
    args = build_parser().parse_args(["caption", "--skip-similar", "v.mp4", "w.mp4", "--out", "o"])
    with pytest.raises(UsageError, match="took 'v.mp4' as its distance"):
        sampling_from_args(args)
    with pytest.raises(UsageError, match="from 0 to 64"):
        sampling_from_args(_args("--skip-similar=65"))


def test_the_settings_key_is_unchanged_unless_the_flags_are_given(tmp_path: Path) -> None:
    """Folders written before --skip-similar/--scenes existed resume with nothing redone."""
    plain = RunSettings(out_dir=tmp_path, model="tiny")
    assert plain.key() == "e85c621cd4f18ae7"  # what vidcap 0.1.0 before #17 computed
    fields = plain.sampling.key_fields()
    assert set(fields) == {"fps", "every_n", "max_frames", "keyframes", "mode"}
    skipping = RunSettings(
        out_dir=tmp_path, model="tiny", sampling=SamplingSettings(skip_similar=4)
    )
    other = RunSettings(out_dir=tmp_path, model="tiny", sampling=SamplingSettings(skip_similar=5))
    assert len({plain.key(), skipping.key(), other.key()}) == 3


def _committer(tmp_path: Path, sampling: SamplingSettings) -> Committer:
    settings = RunSettings(out_dir=tmp_path, sampling=sampling, model="tiny", quiet=True)
    return Committer(settings, [VideoJob(0, "v.mp4", "v", {"path": "v.mp4"})])


def test_committer_resolves_reused_captions_at_commit(tmp_path: Path) -> None:
    """The captioned frame may come back after the frame that reuses it (Ray's order)."""
    committer = _committer(tmp_path, SamplingSettings(skip_similar=4))
    committer.reuse(0, 10, 1.0, same_as=0)
    committer.end(0, 3, 3.0)
    committer.frame(0, CaptionedFrame(20, 2.0, "b"))
    assert not (tmp_path / "v.jsonl").exists()  # frame 0 still out
    committer.frame(0, CaptionedFrame(0, 0.0, "a"))
    rows = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [(r["frame"], r["caption"], r.get("same_as")) for r in rows] == [
        (0, "a", None),
        (10, "a", 0),
        (20, "b", None),
    ]
    summary = committer.close(1.0)
    assert summary[0].reused == 1
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["totals"]["model_calls"] == 2 and data["totals"]["reused"] == 1
    assert data["run"]["model_calls"] == 2 and data["videos"][0]["reused"] == 1


def test_summary_without_the_flag_has_no_new_fields(tmp_path: Path) -> None:
    committer = _committer(tmp_path, SamplingSettings())
    committer.frame(0, CaptionedFrame(0, 0.0, "a"))
    committer.end(0, 1, 1.0)
    committer.close(1.0)
    data = json.loads((tmp_path / "summary.json").read_text())
    assert "reused" not in data["videos"][0] and "scenes" not in data["videos"][0]
    assert "model_calls" not in data["totals"] and "model_calls" not in data["run"]
    record = json.loads((tmp_path / ".vidcap" / "v.json").read_text())
    assert "reused" not in record["result"]
