"""Thumbnails (#18 item 1): one JPEG per sampled frame, made in the decoder from the upright,
display-shaped picture, written with the video's outputs and covered by resume."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support.videos import VideoSpec, read_jsonl
from vidcap.cli import main
from vidcap.decode import Thumbnail, decode_events, encode_event, read_event
from vidcap.frames import Frame
from vidcap.outputs import thumbs_folder
from vidcap.settings import THUMB_HEIGHT, SamplingSettings


def thumbs_of(out: Path, name: str) -> dict[int, np.ndarray]:
    folder = thumbs_folder(out, name)
    return {int(p.stem): cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))}


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def picked(generated_videos: dict[str, tuple[Path, VideoSpec]], tmp_path_factory) -> Path:
    """An ordinary, a portrait (90° display matrix) and an anamorphic (16:11) video."""
    folder = tmp_path_factory.mktemp("thumb-inputs")
    for name in ("h264-mp4", "h264-portrait-mp4", "h264-anamorphic-mkv"):
        path = generated_videos[name][0]
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def captioned(picked: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("thumb-out")
    assert main(["caption", str(picked), "--out", str(out), "--model", "tiny", "--quiet"]) == 0
    return out


def test_every_sample_has_one_thumbnail(captioned: Path) -> None:
    for entry in summary_of(captioned)["videos"]:
        rows = read_jsonl(captioned / f"{entry['name']}.jsonl")
        thumbs = thumbs_of(captioned, entry["name"])
        assert sorted(thumbs) == [row["frame"] for row in rows]
        assert entry["thumbs"] == len(rows)
        # (never enlarged: these videos are smaller than THUMB_HEIGHT, shown at their size)
        assert len({t.shape for t in thumbs.values()}) == 1
        assert all(t.shape[0] <= THUMB_HEIGHT for t in thumbs.values())


def test_thumbnails_are_upright_and_display_shaped(captioned: Path) -> None:
    ordinary = next(iter(thumbs_of(captioned, "h264-mp4").values()))
    portrait = next(iter(thumbs_of(captioned, "h264-portrait-mp4").values()))
    anamorphic = next(iter(thumbs_of(captioned, "h264-anamorphic-mkv").values()))
    assert ordinary.shape[:2] == (96, 128)
    # Stored landscape, shown portrait (128 high, 96 wide): the thumbnail is portrait, and the
    # red marker the spec draws at the shown top-left is there (BGR: red is channel 2).
    assert portrait.shape[0] > portrait.shape[1]
    corner = portrait[: portrait.shape[0] // 10, : portrait.shape[1] // 10].reshape(-1, 3)
    assert corner.mean(axis=0)[2] > 180 and corner.mean(axis=0)[1] < 80
    # 88×72 stored with 16:11 pixels: shown 128×72.
    assert anamorphic.shape[:2] == (72, 128)


def test_thumbnails_travel_in_the_event_encoding() -> None:
    event = Thumbnail(3, 42, b"\xff\xd8jpeg bytes\xff\xd9")
    assert read_event(io.BytesIO(encode_event(event))) == event


def test_the_decoder_sends_a_thumbnail_before_each_sample(
    generated_videos: dict[str, tuple[Path, VideoSpec]],
) -> None:
    path = generated_videos["h264-portrait-mp4"][0]
    sampling = SamplingSettings(fps=1.0, thumb_height=40)
    events = list(decode_events(0, str(path), sampling, (32, 32)))
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "Ended"
    assert kinds[:-1] == ["Thumbnail", "Decoded"] * (len(kinds) // 2)
    for thumb, decoded in zip(events[:-1:2], events[1:-1:2], strict=True):
        assert thumb.index == decoded.frame.index
        picture = cv2.imdecode(np.frombuffer(thumb.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape[:2] == (40, 30)  # portrait 96×128 shown, 40 high
    without = list(decode_events(0, str(path), SamplingSettings(fps=1.0), (32, 32)))
    assert not any(isinstance(e, Thumbnail) for e in without)


def test_no_thumbs_writes_none_and_resumes(picked: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["caption", str(picked), "--out", str(out), "--model", "tiny", "--quiet"]
    assert main([*args, "--no-thumbs"]) == 0
    assert not (out / "thumbs").exists()
    assert all("thumbs" not in v for v in summary_of(out)["videos"])
    # Thumbnails do not key the outputs: turning them on resumes (it adds none).
    assert main(args) == 0
    assert summary_of(out)["run"]["resumed"] == 3


def test_a_lost_thumbnail_folder_redoes_its_video_only(
    captioned: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """…saying why (regression: removing thumbnails or a subtitle file to save room sent
    the videos back through the model without a word: hours of GPU time on a library)."""
    out = tmp_path / "out"
    shutil.copytree(captioned, out)
    shutil.rmtree(thumbs_folder(out, "h264-mp4"))
    (out / "h264-anamorphic-mkv.srt").unlink()
    inputs = Path(summary_of(out)["videos"][0]["video"]).parent
    with caplog.at_level(logging.WARNING, logger="vidcap.plan"):
        assert main(["caption", str(inputs), "--out", str(out), "--model", "tiny", "--quiet"]) == 0
    assert [r.getMessage() for r in caplog.records if r.name == "vidcap.plan"] == [
        "2 videos done before are captioned again, as their outputs are not all in the folder "
        "(h264-anamorphic-mkv.srt, thumbs/h264-mp4/)"
    ]
    run = summary_of(out)["run"]
    assert (run["done"], run["resumed"]) == (2, 1)
    assert thumbs_of(out, "h264-mp4") and (out / "h264-anamorphic-mkv.srt").is_file()
    assert not list((out / "thumbs").glob("*.part"))
    assert not list((out / ".vidcap" / "thumbs").iterdir())  # (nothing left staged)


@pytest.mark.heavy
def test_a_video_named_like_a_staging_folder_keeps_its_thumbnails(
    generated_videos: dict[str, tuple[Path, VideoSpec]], tmp_path: Path
) -> None:
    """Regression: thumbnails were written into ``thumbs/<name>.part`` beside the others
    and renamed into place: committing a video ``x`` removed the thumbnails of a video
    named ``x.part`` (from ``x.part.mp4``), whose folder that is. They are staged in the
    folder's ``.vidcap/`` now."""
    source, _ = generated_videos["h264-mp4"]
    (tmp_path / "in").mkdir()
    first, second = tmp_path / "in" / "x.part.mp4", tmp_path / "in" / "x.mp4"
    shutil.copy(source, first)
    shutil.copy(source, second)
    out = tmp_path / "out"
    for video in (first, second):  # (x.part's thumbnails first, then x is committed)
        assert main(["caption", str(video), "--out", str(out), "--model", "tiny", "--quiet"]) == 0
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == ["x", "x.part"]
    assert len(thumbs_of(out, "x.part")) == len(thumbs_of(out, "x")) > 0


def test_a_video_redone_without_thumbnails_drops_its_old_ones(
    captioned: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(captioned, out)
    inputs = Path(summary_of(out)["videos"][0]["video"]).parent
    args = ["caption", str(inputs), "--out", str(out), "--model", "tiny", "--quiet"]
    assert main([*args, "--fps", "2", "--no-thumbs"]) == 0  # other frames: all redone
    assert not any(thumbs_folder(out, v["name"]).exists() for v in summary_of(out)["videos"])


def test_frame_display_size_drives_the_thumbnail_shape() -> None:
    """A frame already at the model's size (the scenes path) is shown at its display shape."""
    from vidcap.decode import thumbnail_jpeg
    from vidcap.picture import display_image

    frame = Frame(
        index=0, time=0.0, rgb=np.zeros((224, 224, 3), np.uint8), display_size=(1024, 576)
    )
    shown = display_image(frame.rgb, frame.display_size, 160)
    picture = cv2.imdecode(np.frombuffer(thumbnail_jpeg(shown, 0), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == (160, 284)


@pytest.mark.parametrize("scenes", [[], ["--scenes"]])
@pytest.mark.heavy
def test_a_picture_wider_than_a_jpeg_can_be_is_narrowed(tmp_path: Path, scenes: list) -> None:
    """Regression: an 8192×16 frame whose pixels are shown 10 times as wide (a hostile or
    broken sample aspect ratio: 81,920 pixels wide at 16 high) made a thumbnail wider than
    a JPEG can be (65,500 pixels), and the whole video failed ("cannot encode a thumbnail
    of frame 0", and an OpenCV error line). A picture for people is at most
    ``MAX_PICTURE_WIDTH`` wide, made shorter to keep its shape."""
    from tests.support.videos import encode_with_ffmpeg
    from vidcap.picture import MAX_PICTURE_WIDTH

    video = encode_with_ffmpeg(tmp_path / "strip.mkv", 20, "10",
                               ["-vf", "setsar=10/1", "-c:v", "libx264"], size=(16, 8192))  # fmt: skip
    out = tmp_path / "out"
    assert (
        main(["caption", str(video), "--out", str(out), "--model", "tiny", "--quiet", *scenes]) == 0
    )
    thumbs = sorted(thumbs_folder(out, "strip").glob("*.jpg"))
    assert thumbs and len(thumbs) == len(read_jsonl(out / "strip.jsonl"))
    for thumb in thumbs:
        height, width = cv2.imread(str(thumb)).shape[:2]
        assert (width, height) == (MAX_PICTURE_WIDTH, 1), thumb


def _committer(out: Path, names: tuple[str, ...] = ("a",)):  # noqa: ANN202 - (Committer)
    from vidcap.commit import Committer
    from vidcap.jobs import RunSettings, VideoJob

    settings = RunSettings(out_dir=out, sampling=SamplingSettings(thumb_height=160), quiet=True)
    jobs = [VideoJob(i, f"/in/{name}.mp4", name, {"path": f"/in/{name}.mp4"}) for i, name in enumerate(names)]  # fmt: skip
    return Committer(settings, jobs)


def _staged(out: Path) -> list[str]:
    staging = out / ".vidcap" / "thumbs"
    return (
        sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) if staging.is_dir() else []
    )


def test_thumbnails_wait_on_disk_not_in_memory(tmp_path: Path) -> None:
    """Regression: a video's thumbnails waited in memory until the video was done, about
    6 kB each: a long video sampled at every frame held gigabytes (a 5-minute 720p clip at
    ``--every-n 1``: 48 MB more than without thumbnails). Each is staged on disk as it
    comes and the folder renamed into place with the video's other outputs."""
    from vidcap.outputs import CaptionedFrame

    out = tmp_path / "out"
    committer = _committer(out)
    committer.thumbnail(0, 0, b"first")
    committer.thumbnail(0, 5, b"second")
    assert _staged(out) == ["a.part", "a.part/000000.jpg", "a.part/000005.jpg"]
    assert not (out / "thumbs").exists()  # (not in place before the video is done)
    committer.frame(0, CaptionedFrame(0, 0.0, "one"))
    committer.frame(0, CaptionedFrame(5, 0.5, "two"))
    committer.end(0, 2, 1.0)
    assert _staged(out) == []
    folder = thumbs_folder(out, "a")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        "000000.jpg": b"first", "000005.jpg": b"second"
    }  # fmt: skip
    [result] = committer.close(1.0)
    assert (result.status, result.thumbs) == ("done", 2)


def test_a_failed_video_leaves_no_thumbnails_staged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    committer = _committer(out)
    committer.thumbnail(0, 0, b"jpeg")
    committer.fail(0, "a.mp4: the decoder stopped", warn=False)
    assert _staged(out) == [] and not (out / "thumbs").exists()


def test_what_a_killed_run_left_staged_goes_when_the_next_run_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    left = out / ".vidcap" / "thumbs" / "gone.part"
    left.mkdir(parents=True)
    (left / "000000.jpg").write_bytes(b"jpeg")
    _committer(out)
    assert _staged(out) == []


@pytest.mark.parametrize("linked", ["thumbs", ".vidcap"])
def test_thumbnails_reach_a_thumbs_folder_on_another_file_system(
    tmp_path: Path, linked: str
) -> None:
    """Regression: with ``OUT/thumbs`` a link to another disk (or a mount), the rename from
    ``OUT/.vidcap/thumbs`` failed (EXDEV) and every video failed, "cannot write outputs:
    Invalid cross-device link"; so with ``OUT/.vidcap`` the link. They are staged in
    ``OUT/thumbs/.vidcap-staging`` then."""
    from vidcap.outputs import CaptionedFrame, is_output_name

    other = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else tmp_path
    try:
        if os.stat(other).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("no second file system here (/dev/shm)")
        out = tmp_path / "out"
        out.mkdir()
        (out / linked).symlink_to(other)
        thumbs = out / "thumbs"
        if linked == "thumbs":
            left = thumbs / ".vidcap-staging" / "gone.part"  # (what a killed run left)
            left.mkdir(parents=True)
        committer = _committer(out)
        committer.thumbnail(0, 0, b"first")
        committer.frame(0, CaptionedFrame(0, 0.0, "one"))
        committer.end(0, 1, 1.0)
        [result] = committer.close(1.0)
        assert (result.status, result.thumbs) == ("done", 1)
        assert [p.name for p in thumbs.iterdir()] == ["a"]  # (no staging folder left)
        assert (thumbs / "a" / "000000.jpg").read_bytes() == b"first"
        assert _staged(out) == []
        assert not is_output_name(".vidcap-staging")  # (never a video's folder)
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_a_thumbnail_that_cannot_be_written_fails_its_video_alone(tmp_path: Path) -> None:
    from vidcap.outputs import CaptionedFrame

    out = tmp_path / "out"
    committer = _committer(out, ("a", "b"))
    committer.thumbnail(1, 0, b"jpeg")  # (b's staged folder exists before the folder breaks)
    (out / ".vidcap" / "thumbs" / "a.part").write_text("not a folder")
    committer.thumbnail(0, 0, b"jpeg")
    committer.frame(0, CaptionedFrame(0, 0.0, "lost"))  # (a is failed: ignored)
    committer.end(0, 1, 1.0)
    committer.frame(1, CaptionedFrame(0, 0.0, "kept"))
    committer.end(1, 1, 1.0)
    results = {r.name: r for r in committer.close(1.0)}
    assert results["a"].status == "failed"
    assert results["a"].error.startswith("cannot write outputs: ")
    assert (results["b"].status, results["b"].thumbs) == ("done", 1)
    assert not (out / "a.jsonl").exists() and read_jsonl(out / "b.jsonl")[0]["caption"] == "kept"
