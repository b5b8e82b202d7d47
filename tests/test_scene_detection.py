"""``--scenes``: shots from PySceneDetect in the decoder, samples per shot, the outputs,
clips per scene — on generated footage with known hard cuts, a fade, static and moving shots.

(``tests/test_scenes.py`` is the tiny model's scene *generator*.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import scenedetect
import srt

from tests.support.videos import (
    SPECS,
    encode_with_ffmpeg,
    ffmpeg_has_encoder,
    probe_times,
    read_jsonl,
    write_video,
)
from vidcap import engine
from vidcap.backend import EmbeddedBackend
from vidcap.cli import main
from vidcap.clips import load_scenes, scene_pieces
from vidcap.commit import Committer
from vidcap.decode import Decoded, Ended, Failed, Reused, SceneFound, decode_events
from vidcap.frames import Frame
from vidcap.jobs import RunSettings, VideoJob
from vidcap.parquet import SHARD_DIR, run_writers_for
from vidcap.scenes import MIN_CAPACITY, _OpenScene
from vidcap.settings import EngineSettings, SamplingSettings
from vidcap.similar import DEFAULT_DISTANCE
from vidcap.tiny.footage import Footage, Part, cuts_and_fades, mostly_static, render_footage
from vidcap.video import VideoReader

SIZE = (224, 224)
SCENES = SamplingSettings(scenes=True, scene_frames=1)
DETECTORS = {
    "content": scenedetect.ContentDetector,
    "adaptive": scenedetect.AdaptiveDetector,
    "hash": scenedetect.HashDetector,
    "histogram": scenedetect.HistogramDetector,
}


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Footage]]:
    """cuts: 14 s, hard cuts at frames 30, 60, 120, a fade over [80, 90), static and moving
    shots; static: three static shots of 4 s; short: 5 frames (shorter than one scene)."""
    folder = tmp_path_factory.mktemp("footage")
    videos = {}
    for name, parts in (
        ("cuts", cuts_and_fades()),
        ("static", mostly_static(seconds=4.0)),
        ("short", [Part(mostly_static()[0].shot.__class__(mostly_static()[0].shot.scene, 0.5))]),
    ):
        path = folder / f"{name}.mp4"
        videos[name] = (path, render_footage(path, parts))
    return videos


def scene_events(path: Path, sampling: SamplingSettings = SCENES) -> tuple[list, list, Ended]:
    events = list(decode_events(0, str(path), sampling, SIZE))
    assert isinstance(events[-1], Ended), events[-1]
    scenes = [e.scene for e in events if isinstance(e, SceneFound)]
    samples = [e.frame for e in events if isinstance(e, Decoded)]
    return scenes, samples, events[-1]


def test_every_hard_cut_is_found_and_scenes_are_frame_times(footage) -> None:
    path, truth = footage["cuts"]
    scenes, samples, ended = scene_events(path)
    found = [scene.start_frame for scene in scenes[1:]]
    for cut in truth.cuts:
        assert any(abs(f - cut) <= 1 for f in found), (cut, found)
    for first, last in truth.fades:  # a cross-fade: at most one boundary, inside it
        assert len([f for f in found if first - 1 <= f <= last]) <= 1
    times = probe_times(path)
    assert scenes[0].start == times[0] == 0.0 and scenes[0].start_frame == 0
    for scene, following in zip(scenes, scenes[1:], strict=False):
        assert scene.end == following.start == pytest.approx(times[following.start_frame], abs=1e-9)
        assert scene.end_frame == following.start_frame
    assert scenes[-1].end == pytest.approx(ended.duration) == pytest.approx(truth.duration)
    assert scenes[-1].end_frame == truth.frames
    assert [s.number for s in scenes] == list(range(1, len(scenes) + 1))
    assert ended.scenes == len(scenes) and ended.sampled == len(samples) == len(scenes)


@pytest.mark.parametrize("name", list(DETECTORS))
@pytest.mark.heavy
def test_the_same_boundaries_as_pyscenedetect(footage, name: str) -> None:
    """As ``scenedetect.detect(path, Detector())`` on the same file (PyAV and OpenCV backends)."""
    path, _ = footage["cuts"]
    sampling = SamplingSettings(scenes=True, scene_detector=name, scene_frames=1)
    scenes, _, _ = scene_events(path, sampling)
    ours = [round(s.start, 6) for s in scenes[1:]]
    backends = ("pyav", "opencv") if name == "content" else ("pyav",)
    for backend in backends:
        theirs = scenedetect.detect(str(path), DETECTORS[name](), backend=backend)
        assert ours == [round(start.seconds, 6) for start, _ in theirs[1:]], backend


def slideshow(path: Path, colours: list[str], seconds: float = 6.0) -> Path:
    """One frame per slide, each shown ``seconds`` (FFmpeg's concat demuxer, as slideshow
    tools write them), and a last frame closing the last slide."""
    import subprocess

    import imageio_ffmpeg
    from PIL import Image

    lines = []
    for number, colour in enumerate(colours):
        picture = path.parent / f"{path.stem}-{number}.png"
        Image.new("RGB", (128, 96), colour).save(picture)
        lines += [f"file '{picture.name}'", f"duration {seconds}"]
    listing = path.parent / f"{path.stem}.txt"
    listing.write_text("\n".join([*lines, lines[-2]]) + "\n")
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "concat", "-i", str(listing),
         "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_slideshow_that_states_a_rate_of_one_frame_in_seconds_has_its_shots(
    tmp_path: Path, suffix: str
) -> None:
    """Regression: an MP4 slideshow (a frame when the slide changes) states a rate of one
    frame in 6 s; the detector's shortest shot, 15 frames, became 90 s, and its five slides
    were one scene with one caption (as ``scenedetect.detect`` finds: none). A stated rate
    under 5 frames a second is not taken for the detector's clock."""
    path = slideshow(tmp_path / f"slides{suffix}", ["red", "blue", "green", "yellow", "purple"])
    times = [0.0, 6.0, 12.0, 18.0, 24.0]
    assert probe_times(path)[:5] == times
    scenes, samples, _ = scene_events(path)
    assert [scene.start for scene in scenes] == list(times)
    assert [scene.start_frame for scene in scenes] == [0, 1, 2, 3, 4] and len(samples) == 5


@pytest.mark.heavy
def test_a_slideshow_is_cut_into_clips_per_shot_end_to_end(tmp_path: Path) -> None:
    """``vidcap caption --scenes`` then ``vidcap clips --scenes --max-duration`` on an MP4
    slideshow, end to end: every slide a shot, every piece (most inside one slide: no frame
    begins in them) opening on its slide and as long as asked."""
    import av
    import numpy as np

    colours = ["red", "blue", "green", "yellow", "purple"]
    path = slideshow(tmp_path / "slides.mp4", colours)
    out, clips = tmp_path / "out", tmp_path / "clips"
    assert main(["caption", str(path), "--model", "tiny", "--scenes", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert main(["clips", "--scenes", str(out), "--out", str(clips), "--max-duration", "4"]) == 0
    manifest = json.loads((clips / "slides" / "manifest.json").read_text())
    assert manifest["clips"]
    rgb = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0),
           "yellow": (255, 255, 0), "purple": (128, 0, 128)}  # fmt: skip
    for clip in manifest["clips"]:
        assert clip["start"] < 30.04
        slide = colours[min(int(clip["start"] // 6), 4)]
        with av.open(str(clips / "slides" / clip["path"])) as container:
            first = next(container.decode(video=0)).to_ndarray(format="rgb24")
        assert np.abs(first.mean(axis=(0, 1)) - rgb[slide]).max() < 20, (clip, slide)
        assert clip["duration"] == pytest.approx(clip["end"] - clip["start"], abs=0.05), clip


def test_a_threshold_changes_what_is_found(footage) -> None:
    path, truth = footage["cuts"]
    loose = SamplingSettings(scenes=True, scene_threshold=90.0, scene_frames=1)
    scenes, _, _ = scene_events(path, loose)
    assert len(scenes) < len(truth.cuts) + 1


def test_scene_frames_are_evenly_spaced(footage) -> None:
    path, _ = footage["cuts"]
    scenes, samples, _ = scene_events(path)
    for scene, sample in zip(scenes, samples, strict=True):  # one each: the middle frame
        assert sample.index == scene.start_frame + (scene.end_frame - scene.start_frame) // 2
        assert sample.rgb.shape == (*SIZE, 3)
    scenes, samples, _ = scene_events(path, SamplingSettings(scenes=True, scene_frames=3))
    for scene in scenes:
        n = scene.end_frame - scene.start_frame
        inside = [
            s.index - scene.start_frame
            for s in samples
            if scene.start_frame <= s.index < scene.end_frame
        ]
        targets = [n // 6, n // 2, 5 * n // 6]  # the middles of three equal parts
        assert all(abs(a - b) <= n / MIN_CAPACITY for a, b in zip(inside, targets, strict=True))
        if n <= MIN_CAPACITY:
            assert inside == targets


def test_fps_within_a_scene_meets_frames_stamped_in_milliseconds(tmp_path: Path) -> None:
    """Regression: in a 30 fps Matroska file (times in whole milliseconds) ``--scenes
    --fps 3`` sampled each shot's frames 0, 11, 20, 30 from its start: frame 10, due
    333.33 ms in, is stamped 333 (``video.tick_tolerance``), a shot's time the difference of
    two such stamps."""
    import subprocess

    import imageio_ffmpeg

    path = tmp_path / "cuts30.mkv"
    shots = ["testsrc2=s=160x120:r=30:d=1.1", "testsrc2=s=160x120:r=30:d=1.3,negate",
             "testsrc=s=160x120:r=30:d=1.2"]  # fmt: skip
    inputs = [arg for shot in shots for arg in ("-f", "lavfi", "-i", shot)]
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *inputs, "-filter_complex",
         "concat=n=3:v=1,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
    )  # fmt: skip
    scenes, samples, _ = scene_events(path, SamplingSettings(scenes=True, fps=3.0))
    assert [scene.start_frame for scene in scenes] == [0, 33, 72]
    for scene in scenes:
        inside = [s.index for s in samples if scene.start_frame <= s.index < scene.end_frame]
        assert inside == list(range(scene.start_frame, scene.end_frame, 10)), (scene, inside)


def test_fps_within_scenes_starts_again_at_each_scene(footage) -> None:
    path, _ = footage["cuts"]
    scenes, samples, _ = scene_events(path, SamplingSettings(scenes=True, fps=1.0))
    for scene in scenes:
        inside = [s for s in samples if scene.start_frame <= s.index < scene.end_frame]
        assert inside[0].index == scene.start_frame
        assert [round(s.time - scene.start, 6) for s in inside] == list(range(len(inside)))


@dataclass
class _Fake:
    index: int
    time: float


def test_long_scenes_keep_a_bounded_number_of_candidates() -> None:
    def convert(fake: _Fake) -> Frame:
        import numpy as np

        return Frame(fake.index, fake.time, np.zeros((1, 1, 3), np.uint8))

    for frames in (7, 40, 1000, 12345):
        scene = _OpenScene(
            1, _Fake(0, 0.0), SamplingSettings(scenes=True, scene_frames=1), convert, 1e-6
        )
        held = 0
        for i in range(frames):
            scene.add(_Fake(i, i / 25))
            held = max(held, len(scene.candidates))
        assert held <= MIN_CAPACITY
        [middle] = scene.picks()
        exact = frames // 2
        assert abs(middle.index - exact) <= max(0, frames / MIN_CAPACITY), (frames, middle.index)
        if frames < MIN_CAPACITY:
            assert middle.index == exact


def test_a_video_shorter_than_one_scene_and_one_without_cuts(footage) -> None:
    path, truth = footage["short"]
    scenes, samples, ended = scene_events(path)
    assert [(s.start, s.end, s.start_frame, s.end_frame) for s in scenes] == [
        (0.0, pytest.approx(truth.duration), 0, truth.frames)
    ]
    assert [s.index for s in samples] == [truth.frames // 2]
    path, truth = footage["static"]
    scenes, _, _ = scene_events(path)
    assert [s.start_frame for s in scenes[1:]] == truth.cuts  # two cuts, no more


def test_a_file_that_fails_half_way_writes_no_scenes(footage, monkeypatch, tmp_path) -> None:
    path, _ = footage["cuts"]
    real = VideoReader.decoded_frames

    def breaks(self):
        for number, frame in enumerate(real(self)):
            if number == 75:
                raise RuntimeError("the decoder died")
            yield frame

    monkeypatch.setattr(VideoReader, "decoded_frames", breaks)
    events = list(decode_events(0, str(path), SCENES, SIZE))
    assert isinstance(events[-1], Failed) and "the decoder died" in events[-1].error
    assert not any(isinstance(e, Ended) for e in events)
    found = [e.scene for e in events if isinstance(e, SceneFound)]
    assert all(s.end_frame <= 75 for s in found)  # no scene ends where decoding stopped
    settings = RunSettings(out_dir=tmp_path, sampling=SCENES, model="tiny", quiet=True)
    committer = Committer(settings, [VideoJob(0, str(path), "cuts", {"path": str(path)})])
    for event in events:
        if isinstance(event, Decoded):
            engine.deliver(
                committer,
                engine.Captioned(
                    0, engine.CaptionedFrame(event.frame.index, event.frame.time, "x")
                ),
            )
        else:
            engine.deliver(committer, event)
    [result] = committer.close(1.0)
    assert result.status == "failed" and "the decoder died" in result.error
    assert not list(tmp_path.glob("cuts.*"))


def test_flag_errors_are_one_line(capsys, tmp_path: Path) -> None:
    video = str(Path(__file__).parents[1] / "sample_videos" / "shapes.mp4")
    for flags, message in (
        (["--scenes", "--keyframes"], "--scenes decodes every frame"),
        (["--scene-frames", "2"], "--scene-frames needs --scenes"),
        (["--scenes", "--max-frames", "3"], "--max-frames cannot be used with --scenes"),
        (["--scenes", "--scene-frames", "2", "--fps", "2"], "--scene-frames and --fps"),
        (["--scenes", "--scene-threshold", "0"], "--scene-threshold must be a number > 0"),
        (
            ["--scenes", "--scene-detector", "hash", "--scene-threshold", "2"],
            "--scene-threshold of --scene-detector hash is a relative difference, from 0 to 1",
        ),
        (["--scene-detector", "hash", "--scene-threshold", "0.5"], "and --scene-threshold need"),
    ):
        code = main(["caption", video, "--out", str(tmp_path / "o"), "--model", "tiny", *flags])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (flags, err)
    assert not (tmp_path / "o").exists()


def _run(paths: list[Path], out: Path, captioner, sampling: SamplingSettings, formats=None):
    settings = RunSettings(
        out_dir=out,
        formats=formats or RunSettings.formats,
        sampling=sampling,
        model="tiny",
        quiet=True,
    )
    return engine.run(
        [str(p) for p in paths],
        settings,
        lambda: EmbeddedBackend(captioner),
        EngineSettings(decode_workers=1),
        run_writers=run_writers_for(settings),
        input_size=captioner.input_size,
    )


@pytest.mark.heavy
def test_caption_with_scenes_writes_every_output(footage, tiny_captioner, tmp_path: Path) -> None:
    path, truth = footage["cuts"]
    formats = ("jsonl", "srt", "vtt", "parquet")
    [result] = _run([path], tmp_path, tiny_captioner, SCENES, formats)
    assert result.status == "done" and result.scenes == len(truth.cuts) + 2  # + the fade
    rows = [json.loads(line) for line in (tmp_path / "cuts.scenes.jsonl").read_text().splitlines()]
    assert list(rows[0]) == [
        "video", "scene", "start", "end", "start_frame", "end_frame", "caption", "captions"
    ]  # fmt: skip
    frames = read_jsonl(tmp_path / "cuts.jsonl")
    assert [c["frame"] for r in rows for c in r["captions"]] == [f["frame"] for f in frames]
    for row in rows:
        assert row["caption"] == row["captions"][0]["caption"]
    assert rows[0]["caption"] == truth.captions[0]  # the static first shot, right
    cues = list(srt.parse((tmp_path / "cuts.srt").read_text()))
    assert [(c.start.total_seconds(), c.end.total_seconds(), c.content) for c in cues] == [
        (r["start"], r["end"], r["caption"]) for r in rows
    ]
    table = pq.read_table(tmp_path / SHARD_DIR).to_pylist()
    assert [(t["frame"], t["scene"], t["scene_start"]) for t in table] == [
        (c["frame"], r["scene"], r["start"]) for r in rows for c in r["captions"]
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["videos"][0]["scenes"] == len(rows)
    # A rerun resumes; without its scenes file the video is redone.
    assert _run([path], tmp_path, tiny_captioner, SCENES, formats)[0].resumed
    (tmp_path / "cuts.scenes.jsonl").unlink()
    assert not _run([path], tmp_path, tiny_captioner, SCENES, formats)[0].resumed


def test_skip_similar_in_the_decoder_halves_the_samples_sent(footage) -> None:
    """On a mostly static video, at the default D, at least half the samples reuse a caption."""
    path, truth = footage["static"]
    sampling = SamplingSettings(skip_similar=DEFAULT_DISTANCE)
    events = list(decode_events(0, str(path), sampling, SIZE))
    sent = [e.frame.index for e in events if isinstance(e, Decoded)]
    reused = [e for e in events if isinstance(e, Reused)]
    assert len(sent) + len(reused) == events[-1].sampled == 12
    assert len(sent) * 2 <= events[-1].sampled and sent[0] == 0
    assert all(r.same_as in sent and r.same_as < r.index for r in reused)


@pytest.mark.slow
def test_skip_similar_keeps_every_caption_and_saves_calls(
    footage, tiny_captioner, tmp_path
) -> None:
    """At the default D: the same captions as without it on the project's videos, and at
    least 2× fewer model calls on a mostly static one."""
    samples = Path(__file__).parents[1] / "sample_videos"
    paths = [footage["static"][0], footage["cuts"][0], samples / "shapes.mp4"]
    plain = _run(paths, tmp_path / "plain", tiny_captioner, SamplingSettings())
    skipping = _run(
        paths, tmp_path / "skip", tiny_captioner, SamplingSettings(skip_similar=DEFAULT_DISTANCE)
    )
    for before, after in zip(plain, skipping, strict=True):
        rows = read_jsonl(tmp_path / "skip" / f"{after.name}.jsonl")
        assert [r["caption"] for r in rows] == [
            r["caption"] for r in read_jsonl(tmp_path / "plain" / f"{before.name}.jsonl")
        ]
        assert all(rows[[r["frame"] for r in rows].index(r["same_as"])]["same_as"] is None
                   for r in rows if r["same_as"] is not None)  # fmt: skip
        assert {tuple(r) for r in rows} == {
            ("video", "frame", "time", "caption", "same_as", "damaged")
        }  # every row: one set of keys
    static = skipping[0]
    assert static.frames >= 2 * (static.frames - static.reused) and static.reused > 0
    for name in ("srt", "vtt"):
        assert (tmp_path / "skip" / f"static.{name}").read_text() == (
            tmp_path / "plain" / f"static.{name}"
        ).read_text()
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["run"]["model_calls"] == sum(r.frames - r.reused for r in skipping)


def test_scene_pieces_split_long_scenes_and_drop_short_ones() -> None:
    rows = [
        {"scene": 1, "start": 0.0, "end": 1.5, "caption": "a", "captions": []},
        {"scene": 2, "start": 1.5, "end": 9.0, "caption": "b",
         "captions": [{"frame": 50, "time": 5.0, "caption": "c"}]},
    ]  # fmt: skip
    pieces = scene_pieces(rows, min_duration=2.0, max_duration=3.0)
    assert [(p.row["scene"], p.part, p.start, p.end) for p in pieces] == [
        (2, 1, 1.5, 4.5),
        (2, 2, 4.5, 7.5),
    ]  # the 1.5 s scene and the last 1.5 s piece dropped
    assert [p.caption() for p in pieces] == ["b", "c"]
    assert [(p.start, p.end) for p in scene_pieces(rows)] == [(0.0, 1.5), (1.5, 9.0)]


@pytest.mark.heavy
def test_clips_per_scene(footage, tiny_captioner, tmp_path: Path, capsys) -> None:
    path, truth = footage["cuts"]
    _run([path], tmp_path / "out", tiny_captioner, SCENES)
    scenes = tmp_path / "out" / "cuts.scenes.jsonl"
    assert main(["clips", str(path), "--scenes", str(scenes), "--out", str(tmp_path / "one"),
                 "--max-duration", "2.5", "--min-duration", "1"]) == 0  # fmt: skip
    clips = sorted((tmp_path / "one").glob("*.mp4"))
    pairs = [json.loads(c.with_suffix(".json").read_text()) for c in clips]
    rows = load_scenes(scenes)
    expected = scene_pieces(rows, 1.0, 2.5)
    assert [(p["scene"], p["part"], p["start"], p["end"]) for p in pairs] == [
        (e.row["scene"], e.part, e.start, e.end) for e in expected
    ]
    assert all(p["caption"] and p["duration"] > 0 for p in pairs)
    # The folder form: every scenes file of an output folder, each video in its own folder.
    assert main(["clips", "--scenes", str(tmp_path / "out"), "--out", str(tmp_path / "all"),
                 "--precise"]) == 0  # fmt: skip
    precise = sorted((tmp_path / "all" / "cuts").glob("*.json"))
    assert len([p for p in precise if p.name != "manifest.json"]) == len(rows)
    first = json.loads(precise[0].read_text())
    assert first["mode"] == "precise" and abs(first["duration"] - rows[0]["end"]) < 0.15
    capsys.readouterr()
    assert (
        main(["clips", str(path), "--scenes", str(tmp_path / "out"), "--out", str(tmp_path / "x")])
        == 2
    )
    assert "give no VIDEO" in capsys.readouterr().err


@pytest.mark.heavy
def test_a_folder_of_scene_files_is_cut_on_past_videos_that_cannot_be(
    footage, tiny_captioner, tmp_path: Path, capsys
) -> None:
    """Regression: ``clips --scenes FOLDER`` stopped at the first video that could not be
    cut (its source gone, or no longer a video), leaving the rest of the folder uncut."""
    path, _ = footage["cuts"]
    out = tmp_path / "out"
    _run([path], out, tiny_captioner, SCENES)
    rows = (out / "cuts.scenes.jsonl").read_text().splitlines()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    for name, video in (("a-gone", tmp_path / "gone.mp4"), ("b-notes", text)):  # cut first
        moved = [json.dumps({**json.loads(row), "video": str(video)}) for row in rows]
        (out / f"{name}.scenes.jsonl").write_text("\n".join(moved) + "\n")
    # (and, regression, a video shorter than its scenes — a file copied over it — and a
    # scenes file with a bad row stopped the whole folder with exit 2, the first leaving
    # half its clips without a manifest)
    short, _ = footage["short"]
    moved = [json.dumps({**json.loads(row), "video": str(short)}) for row in rows]
    (out / "c-short.scenes.jsonl").write_text("\n".join(moved) + "\n")
    bad = json.dumps({**json.loads(rows[0]), "captions": "a string"})
    (out / "d-bad.scenes.jsonl").write_text(bad + "\n")
    assert main(["clips", "--scenes", str(out), "--out", str(tmp_path / "all")]) == 1
    err = capsys.readouterr().err
    assert f"a-gone.scenes.jsonl: no clips: its video {tmp_path / 'gone.mp4'} is not a file" in err
    assert f"b-notes.scenes.jsonl: no clips: {text}: not a readable video" in err
    assert "c-short.scenes.jsonl: no clips: scene 2 starts at" in err
    assert "d-bad.scenes.jsonl: line 1: 'captions' must be a list" in err
    assert "Traceback" not in err
    assert err.rstrip().endswith("vidcap: 4 videos not cut (see above)")
    assert len(list((tmp_path / "all" / "cuts").glob("*.mp4"))) == len(rows)
    assert not (tmp_path / "all" / "c-short").exists()  # checked before any clip is cut


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"captions": "x"}, "'captions' must be a list, got 'x'"),
        ({"captions": [{"frame": 1}]}, "each of 'captions' must be an object with a number"),
        ({"captions": [{"time": "a", "caption": "y"}]}, "a number 'time' and a text 'caption'"),
        ({"caption": 5}, "'caption' must be text, got 5"),
        ({"scene": 2.7}, "'scene' must be a whole number from 1 to"),  # (was scene0002)
        ({"scene": 1e30}, "'scene' must be a whole number from 1 to"),  # (a 31-digit name)
    ],
)
def test_a_scene_row_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys, change: dict, message: str
) -> None:
    """Regression: a scene row whose 'captions' was not a list of samples ended
    ``vidcap clips --scenes`` with a TypeError or KeyError traceback."""
    row = {"video": "v.mp4", "scene": 1, "start": 0.0, "end": 1.0, "caption": "a", **change}
    path = tmp_path / "v.scenes.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert main(["clips", "--scenes", str(path), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.heavy
def test_a_scenes_file_of_two_videos_or_of_another_video_is_told(
    footage, tiny_captioner, tmp_path: Path, capsys, caplog
) -> None:
    """Regression: a scenes file whose rows name two videos was cut from the first one's
    file, and a VIDEO given with another video's scenes (60 s of scenes on a 0.5 s file)
    was cut without a word."""
    path, _ = footage["cuts"]
    short, _ = footage["short"]
    out = tmp_path / "out"
    _run([path], out, tiny_captioner, SCENES)
    rows = (out / "cuts.scenes.jsonl").read_text().splitlines()
    other = json.dumps({**json.loads(rows[-1]), "video": str(short)})
    (tmp_path / "mixed.scenes.jsonl").write_text("\n".join([*rows[:-1], other]) + "\n")
    argv = ["clips", "--scenes", str(tmp_path / "mixed.scenes.jsonl"), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    assert "its rows name more than one video" in capsys.readouterr().err
    first = json.dumps({**json.loads(rows[0]), "scene": 1})
    (tmp_path / "one.scenes.jsonl").write_text(first + "\n")  # (the first shot only: 0 to 1 s)
    samples = [{"frame": 900, "time": 30.0, "caption": "x"}]
    long = {**json.loads(rows[0]), "end": 60.0, "captions": samples}
    (tmp_path / "long.scenes.jsonl").write_text(json.dumps(long) + "\n")
    argv = ["clips", str(short), "--scenes", str(tmp_path / "long.scenes.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "l")]) == 0
    err = capsys.readouterr().err
    assert f"its scenes are of cuts.mp4, not short.mp4: cut from {short} as asked" in err
    assert "the scenes' samples reach 30.000 s, the video ends at 0.500 s: is it" in caplog.text
    argv = ["clips", str(path), "--scenes", str(tmp_path / "one.scenes.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert "warning" not in capsys.readouterr().err.lower()  # its own video: no warning
    assert caplog.text.count("is it the video") == 1


def test_moments_in_a_scenes_folder_cover_their_shots(
    footage, tiny_captioner, tmp_path: Path, capsys
) -> None:
    """Regression: in a ``--scenes`` folder (one sample in each shot's middle) a matching
    sample covered [its time, the next sample's time): ``vidcap search``, ``mask`` and
    ``export`` gave a moment from the middle of its shot to the middle of the next, and
    clips cut from it crossed a cut. A sample now covers its shot. ``export`` gives a
    scene the frame range its row holds (it placed times by the rate from 0 s)."""
    from vidcap.export import export_fiftyone
    from vidcap.mask import MaskSettings, load_captions, mask_captions
    from vidcap.search import search

    path, _ = footage["cuts"]
    out = tmp_path / "out"
    _run([path], out, tiny_captioner, SCENES)
    rows = [json.loads(line) for line in (out / "cuts.scenes.jsonl").read_text().splitlines()]
    query = "^" + re.escape(rows[1]["caption"]) + "$"  # the second shot's caption, whole
    settings = MaskSettings(regex=True)
    moments = search([out], [query], settings)
    shots = [(r["start"], r["end"]) for r in rows if re.fullmatch(query[1:-1], r["caption"])]
    assert moments and shots
    merged: list[tuple[float, float]] = []  # (adjacent shots of that caption are one moment)
    for start, end in shots:
        if merged and merged[-1][1] == start:
            start = merged.pop()[0]
        merged.append((start, end))
    assert sorted((m.start, m.end) for m in moments) == merged
    assert main(["mask", str(out / "cuts.jsonl"), "--query", query, "--regex"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["start"], s["end"]) for s in report["segments"]] == merged
    assert report["settings"]["scenes"] == str(out / "cuts.scenes.jsonl")
    plain = mask_captions(load_captions(out / "cuts.jsonl"), [query], settings)  # no shots
    assert [(s["start"], s["end"]) for s in plain["segments"]] != merged
    export_fiftyone(out, tmp_path / "fo", [query], settings)
    labels = json.loads((tmp_path / "fo" / "labels" / "cuts.json").read_text())
    events = labels["events"]["events"]
    ranges = [e["support"]["ranges"] for e in events if e["name"] == "scenes"]
    assert ranges == [f"{r['start_frame'] + 1}-{r['end_frame']}" for r in rows]
    # (a moment of whole shots is the frames of those shots: it was placed by the rate
    # one sample a shot shows, off by frames, and past the video's last one at its end)
    firsts = {r["start"]: r["start_frame"] for r in rows}
    ends = {r["end"]: r["end_frame"] for r in rows}
    found = [e["support"]["ranges"] for e in events if e["name"] == "segments"]
    assert found == [f"{firsts[start] + 1}-{ends[end]}" for start, end in merged]


@pytest.mark.heavy
def test_scene_clips_of_a_source_changed_since_it_was_captioned_say_so(
    footage, tiny_captioner, tmp_path: Path, capsys
) -> None:
    """``clips --scenes OUT`` cut a source edited since it was captioned at the scenes'
    times without a word; the folder's record of it tells (``FolderVideo.source_changed``)."""
    path, _ = footage["cuts"]
    source = Path(shutil.copy2(path, tmp_path / "cuts.mp4"))
    out = tmp_path / "out"
    _run([source], out, tiny_captioner, SCENES)
    capsys.readouterr()
    assert main(["clips", "--scenes", str(out), "--out", str(tmp_path / "same")]) == 0
    assert "warning" not in capsys.readouterr().err  # the very file captioned
    os.utime(source, ns=(0, source.stat().st_mtime_ns + 10**9))
    assert main(["clips", "--scenes", str(out), "--out", str(tmp_path / "later")]) == 0
    err = capsys.readouterr().err
    assert f"cuts.scenes.jsonl: warning: {source} is not the file captioned" in err
    assert len(list((tmp_path / "later" / "cuts").glob("*.mp4"))) > 0  # cut all the same


@pytest.mark.heavy
def test_a_scene_clip_cut_short_at_the_videos_end_is_named_by_the_times_cut(
    footage, tiny_captioner, tmp_path: Path
) -> None:
    """Regression: the scenes of a video cut on a shorter copy gave the last shot's clip
    its scene's full span in its name (``…_scene0004_01_6.000-8.000.mp4``) while it holds
    6–7 s, as its JSON said: the name now says the times cut, as a segment clip's does."""
    from vidcap.ffmpeg import run_ffmpeg

    path, _ = footage["cuts"]
    _run([path], tmp_path / "out", tiny_captioner, SCENES)
    rows = load_scenes(tmp_path / "out" / "cuts.scenes.jsonl")
    last = rows[-1]
    end = round((last["start"] + last["end"]) / 2, 1)  # (inside the last shot)
    short = tmp_path / "short" / "cuts.mp4"
    short.parent.mkdir()
    run_ffmpeg(["-i", str(path), "-t", str(end), "-c:v", "libx264", "-y", str(short)])
    scenes = tmp_path / "out" / "cuts.scenes.jsonl"
    assert main(["clips", str(short), "--scenes", str(scenes), "--out", str(tmp_path / "c")]) == 0
    pairs = sorted((tmp_path / "c").glob("*_scene*.json"))
    final = json.loads(pairs[-1].read_text())
    assert final["scene"] == last["scene"] and final["end"] < last["end"]
    assert pairs[-1].stem.endswith(f"_{final['start']:.3f}-{final['end']:.3f}")


def test_reused_and_scene_events_pass_the_engine_in_order(footage, tiny_captioner) -> None:
    """``caption_video`` (mask, clients, benches) gives reused frames their caption."""
    path, _ = footage["static"]
    sampling = SamplingSettings(skip_similar=DEFAULT_DISTANCE)
    frames = list(
        engine.caption_video(
            path, EmbeddedBackend(tiny_captioner), sampling, engine.GenerationSettings()
        )
    )
    assert any(f.same_as is not None for f in frames)
    by_index = {f.index: f for f in frames}
    assert all(by_index[f.same_as].caption == f.caption for f in frames if f.same_as is not None)


BACKEND_FILES = ("jsonl", "srt", "vtt", "scenes.jsonl")


def _cli_run(path: Path, out: Path, *extra: str) -> None:
    flags = ["--model", "tiny", "--quiet", "--scenes", "--fps", "2"]
    assert main(["caption", str(path), "--out", str(out), *flags, "--skip-similar", *extra]) == 0


@pytest.fixture(scope="module")
def embedded_cuts(footage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded run of ``cuts`` each other way of running is compared with: one run for
    the module (its outputs are only read)."""
    out = tmp_path_factory.mktemp("embedded")
    _cli_run(footage["cuts"][0], out, "--device", "cpu")
    return out


def _same_outputs(one: Path, other: Path, name: str) -> None:
    for suffix in BACKEND_FILES:
        assert (one / f"{name}.{suffix}").read_text() == (other / f"{name}.{suffix}").read_text()
    rows = read_jsonl(one / f"{name}.jsonl")
    assert any(row["same_as"] is not None for row in rows)


@pytest.mark.slow
def test_the_same_outputs_over_a_flask_server(footage, embedded_cuts: Path, tmp_path: Path) -> None:
    """``--scenes --skip-similar`` through ``--server`` (a real gunicorn + Flask server with
    the tiny model) writes what the embedded run writes."""
    from tests.support.servers import FlaskServer

    path, _ = footage["cuts"]
    server = FlaskServer(tmp_path / "flask.log").start()
    try:
        _cli_run(path, tmp_path / "server", "--server", server.url)
    finally:
        server.stop()
    _same_outputs(embedded_cuts, tmp_path / "server", "cuts")


@pytest.mark.slow
def test_the_same_outputs_on_ray(footage, embedded_cuts: Path, tmp_path: Path) -> None:
    """``--ray``: the decode tasks run the same generator; the Captioner actors pass the
    Reused and SceneFound events through; the driver's Committer writes the same files."""
    import os
    import subprocess
    import sys

    path, _ = footage["cuts"]
    command = [sys.executable, "-m", "vidcap", "caption", str(path), "--out", str(tmp_path / "ray")]
    command += ["--model", "tiny", "--device", "cpu", "--scenes", "--fps", "2"]
    command += ["--skip-similar", "--ray"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_outputs(embedded_cuts, tmp_path / "ray", "cuts")
    # It says what the embedded run says, not Ray's token notice or Ray Data's progress
    # lines (Ray's C++ core still prints one line of every actor pool).
    said = result.stderr.splitlines()
    assert said[-1].startswith("vidcap: 1 of 1 videos done, "), said
    for notice in ("Token authentication", "streaming_executor", "Progress bars disabled"):
        assert not any(notice in line for line in said), said


def test_shots_are_found_after_the_picture_changes_size(footage, tmp_path: Path) -> None:
    """Regression: frames of another size than the first were skipped, as PySceneDetect's
    SceneManager skips them, so after a mid-stream resolution change (a WebRTC recording,
    an adaptive stream saved, recordings joined) no shot was found. Such frames are scaled
    to the first frame's size: the cut at frame 120 of the half-size second part is found,
    and the change of size itself (the same shot going on) is no cut."""
    import subprocess

    import imageio_ffmpeg

    path, truth = footage["cuts"]
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    rate = truth.frames / truth.duration
    split = 100 / rate  # frame 100: between the cuts at 60 and 120
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    common = ["-v", "error", "-y", "-i", str(path), "-c:v", "libx264", "-g", "10"]
    subprocess.run([ffmpeg, *common, "-t", f"{split}", str(first)], check=True)
    subprocess.run([ffmpeg, "-v", "error", "-y", "-ss", f"{split}", "-i", str(path),
                    "-vf", "scale=iw/2:ih/2", "-c:v", "libx264", "-g", "10",
                    "-output_ts_offset", f"{split}", str(second)], check=True)  # fmt: skip
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with VideoReader(joined) as reader:
        sizes = {
            (s.av_frame.width, s.av_frame.height)
            for s in reader.samples(SamplingSettings(every_n=1))
        }
    assert len(sizes) == 2  # the case exists
    scenes, _, _ = scene_events(joined)
    found = [scene.start_frame for scene in scenes[1:]]
    assert any(abs(f - 120) <= 1 for f in found), found
    assert not any(abs(f - 100) <= 1 for f in found), found


def test_settings_that_make_no_difference_do_not_redo_a_folder(tmp_path: Path) -> None:
    """Regression (an outside-in round): ``--scene-threshold 27`` (the content detector's
    own), ``--decode-mode all`` with ``--scenes`` (every frame is decoded either way) and
    ``--format jsonl,jsonl,srt,vtt`` each changed the settings key, so a rerun captioned
    every video again for outputs byte for byte the same."""
    import inspect

    from vidcap.jobs import split_formats
    from vidcap.settings import SCENE_THRESHOLDS, SamplingSettings

    detectors = {"content": (scenedetect.ContentDetector, "threshold"),
                 "adaptive": (scenedetect.AdaptiveDetector, "adaptive_threshold"),
                 "hash": (scenedetect.HashDetector, "threshold"),
                 "histogram": (scenedetect.HistogramDetector, "threshold")}  # fmt: skip
    for name, (kind, argument) in detectors.items():  # (as PySceneDetect has them)
        assert inspect.signature(kind).parameters[argument].default == SCENE_THRESHOLDS[name]

    def key(formats: str = "jsonl,srt,vtt", **sampling: object) -> str:
        settings = SamplingSettings(**sampling)  # type: ignore[arg-type]
        return RunSettings(tmp_path, split_formats(formats), settings, model="tiny").key()

    assert key(scenes=True) == key(scenes=True, scene_threshold=27.0)
    assert key(scenes=True) == key(scenes=True, mode="all")
    adaptive = {"scenes": True, "scene_detector": "adaptive"}
    assert key(**adaptive) == key(**adaptive, scene_threshold=3.0)
    assert key(**adaptive) != key(**adaptive, scene_threshold=2.5)
    assert key() == key("jsonl,jsonl,srt,vtt") == key("vtt,srt,jsonl")
    assert key() != key(mode="all")  # (without --scenes the mode decides the frames)
    assert split_formats("jsonl, jsonl,srt") == ("jsonl", "srt")


@pytest.mark.parametrize("name", ["h264-bframes-avi", "h264-bframes-asf", "xvid-packed-avi"])
def test_the_frames_scenes_read_are_timed_as_ffprobe_times_them(tmp_path: Path, name: str) -> None:
    """Regression: ``decoded_frames`` (what ``--scenes`` reads) left PyAV's generated pts on,
    where ``samples`` reads packets as ffprobe does. On one decoder thread (the decoder pool's
    default) an AVI or ASF with B-frames had frames timed by libavformat's guesses: H.264 in
    AVI started at 0.1 s, not 0.2 (ffprobe's), its end a frame short, with a "timeline lost"
    warning; a packed XviD AVI's third frame took the fourth's time."""
    if name == "xvid-packed-avi":
        if not ffmpeg_has_encoder("libxvid"):
            pytest.skip("imageio-ffmpeg's ffmpeg has no libxvid encoder")
        path = encode_with_ffmpeg(
            tmp_path / "xvid.avi", 40, "25", ["-c:v", "libxvid", "-bf", "2", "-vtag", "XVID"]
        )
    else:
        spec = next(spec for spec in SPECS if spec.name == name)
        path = write_video(tmp_path / f"{name}{spec.suffix}", spec)
    truth = probe_times(path)
    with VideoReader(path, threads=1) as reader:
        every = [(frame.index, frame.time) for frame in reader.decoded_frames()]
        stats = reader.stats
    assert every == [(index, pytest.approx(time, abs=1e-6)) for index, time in enumerate(truth)]
    assert stats.same_time_frames == 0
    with VideoReader(path, threads=1) as reader:
        list(reader.samples(SamplingSettings(every_n=1)))
    assert stats.duration == pytest.approx(reader.stats.duration)
    events = list(decode_events(0, str(path), SCENES, SIZE, threads=1))
    scenes = [event.scene for event in events if isinstance(event, SceneFound)]
    assert scenes[0].start == pytest.approx(truth[0])
    assert scenes[-1].end == pytest.approx(reader.stats.duration)


def variable_rate_shots(path: Path) -> Path:
    """A screen recording's variable frame rate: a red shot of 50 frames and a blue one of 18
    at 25 frames a second, then a green one of 20 frames 0.5 s apart (the picture still)."""
    import av
    import numpy as np

    times = [i * 40 for i in range(68)] + [2720 + i * 500 for i in range(20)]
    colours = [(200, 30, 30)] * 50 + [(30, 30, 200)] * 18 + [(30, 200, 30)] * 20
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 96, 128, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for time, colour in zip(times, colours, strict=True):
            frame = av.VideoFrame.from_ndarray(np.full((96, 128, 3), colour, np.uint8), "rgb24")
            frame.pts, frame.time_base = time, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("name", ["adaptive", "histogram"])
def test_a_variable_rate_video_has_the_shots_pyscenedetect_finds(tmp_path: Path, name: str) -> None:
    """Regression: the detector was timed by the average frame rate (here 6.9 frames a
    second), where PySceneDetect's readers take FFmpeg's ``r_frame_rate`` (here 50): its
    shortest shot, 15 frames, was 2.2 s, not 0.3, and the 18-frame blue shot at 2.0 s was
    merged into the next, which ``scenedetect.detect`` on the same file finds."""
    path = variable_rate_shots(tmp_path / "vfr.mp4")
    sampling = SamplingSettings(scenes=True, scene_detector=name, scene_frames=1)
    scenes, _, _ = scene_events(path, sampling)
    assert [(s.start_frame, s.end_frame) for s in scenes] == [(0, 50), (50, 68), (68, 88)]
    assert [s.start for s in scenes] == pytest.approx([0.0, 2.0, 2.72])
    theirs = scenedetect.detect(str(path), DETECTORS[name](), backend="pyav")
    assert [round(s.start, 6) for s in scenes[1:]] == [round(a.seconds, 6) for a, _ in theirs[1:]]
