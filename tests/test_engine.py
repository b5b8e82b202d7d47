"""The streaming engine: decoder pool → one frame queue → backend → commit.

Real videos, the real tiny model, outputs parsed back; the engine's results are compared
with each video captioned on its own, straight through the ``Captioner``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import threading
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest
import srt

from tests.support.videos import (
    VideoSpec,
    clip,
    constant_rate,
    magenta_clip,
    read_jsonl,
    write_video,
)
from vidcap.backend import EmbeddedBackend
from vidcap.engine import EngineSettings, run
from vidcap.errors import UsageError
from vidcap.folder import open_folder
from vidcap.jobs import OUTPUTS, RunSettings
from vidcap.settings import GenerationSettings, SamplingSettings
from vidcap.video import VideoReader

EVERY = SamplingSettings(fps=None, every_n=1)


def reference(captioner, path: Path, sampling: SamplingSettings) -> list[tuple[int, float, str]]:
    """One video on its own: decode in this process, caption with the Captioner directly."""
    with VideoReader(path) as reader:
        frames = [s.for_model(captioner.input_size) for s in reader.samples(sampling)]
    images = [f.rgb for f in frames]
    captions = captioner.caption(images, GenerationSettings())
    return [(f.index, round(f.time, 6), c) for f, c in zip(frames, captions, strict=True)]


def rows(out: Path, name: str) -> list[tuple[int, float, str]]:
    return [(r["frame"], r["time"], r["caption"]) for r in read_jsonl(out / f"{name}.jsonl")]


class CountingBackend(EmbeddedBackend):
    """The real embedded backend, noting the size of every batch the model ran."""

    def __init__(self, captioner) -> None:
        super().__init__(captioner)
        self.batches: list[int] = []

    def _run(self, images, settings):
        self.batches.append(len(images))
        return super()._run(images, settings)


def settings_for(out: Path, sampling: SamplingSettings = EVERY, **kw) -> RunSettings:
    return RunSettings(out_dir=out, sampling=sampling, model="tiny", quiet=True, **kw)


@pytest.mark.heavy
def test_batches_cross_video_boundaries(tmp_path: Path, tiny_captioner) -> None:
    videos = [clip(tmp_path / "in", f"v{i}", 3) for i in range(6)]  # 6 videos × 3 frames
    backend = CountingBackend(tiny_captioner)
    results = run(
        [str(v) for v in videos],
        settings_for(tmp_path / "out"),
        lambda: backend,
        EngineSettings(decode_workers=2),
    )
    assert [r.status for r in results] == ["done"] * 6
    assert sum(backend.batches) == 18
    assert backend.batches[:2] == [tiny_captioner.batch_size] * 2  # 8, 8, 2: never 3, 3, 3…
    for video in videos:
        assert rows(tmp_path / "out", video.stem) == reference(tiny_captioner, video, EVERY)


@pytest.mark.heavy
def test_mixed_inputs_each_get_their_own_result(tmp_path: Path, tiny_captioner) -> None:
    folder = tmp_path / "in"
    short = clip(folder, "short", 2)
    long = clip(folder, "long", 120)
    avi = clip(folder, "old", 25, codec="mpeg4", suffix=".avi")
    broken = folder / "broken.mp4"
    broken.write_bytes(random.Random(5000).randbytes(5000))  # fixed noise: never a stream
    text = folder / "notes.mkv"
    text.write_text("not a video")
    truncated = folder / "cut.mp4"
    truncated.write_bytes(long.read_bytes()[: long.stat().st_size // 2])
    whole_mkv = clip(folder, "whole", 120, suffix=".mkv")
    cut_mkv = folder / "cut.mkv"  # (an interrupted download: kept as far as it decodes)
    cut_mkv.write_bytes(whole_mkv.read_bytes()[: whole_mkv.stat().st_size // 2])
    sources = [str(p) for p in (short, broken, long, text, avi, truncated, cut_mkv)]
    sampling = SamplingSettings(fps=2.0)
    out = tmp_path / "out"
    results = run(sources, settings_for(out, sampling), lambda: EmbeddedBackend(tiny_captioner))
    status = {Path(r.video).name: r.status for r in results}
    assert status == {
        "short.mp4": "done",
        "broken.mp4": "failed",
        "long.mp4": "done",
        "notes.mkv": "failed",
        "old.avi": "done",
        "cut.mp4": status["cut.mp4"],  # a truncated mp4 may or may not open; never crashes the run
        "cut.mkv": "done",
    }
    for video in (short, long, avi):
        assert rows(out, video.stem) == reference(tiny_captioner, video, sampling)
    summary = json.loads((out / "summary.json").read_text())
    assert {v["name"]: v["status"] for v in summary["videos"]}["broken"] == "failed"
    assert not list(out.glob("*.part"))
    # the cut-off MKV says how much of it is missing, in its record and the run's totals
    lost = {v["name"]: v.get("lost_frames") for v in summary["videos"] if v["status"] == "done"}
    [cut_result] = [r for r in results if r.video == str(cut_mkv)]
    assert cut_result.lost_frames == lost[cut_result.name] and 40 < lost[cut_result.name] < 80
    assert lost["short"] is lost["long"] is lost["old"] is None
    damaged = [v for v in lost.values() if v]
    assert summary["totals"]["damaged"] == len(damaged)
    assert summary["totals"]["lost_frames"] == sum(damaged)


@pytest.mark.heavy
def test_a_killed_decoder_fails_its_video_alone(
    tmp_path: Path, tiny_captioner, monkeypatch
) -> None:
    folder = tmp_path / "in"
    long_spec = VideoSpec(
        "long", "libx264", ".mkv", constant_rate(3000, Fraction(25)), rate=Fraction(25)
    )
    long = write_video(folder.mkdir(parents=True) or folder / "long.mkv", long_spec)
    others = [clip(folder, f"ok{i}", 5) for i in range(3)]
    backend = EmbeddedBackend(tiny_captioner)
    killed: list[int] = []

    def kill_the_long_one(pool_holder: list) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            pools = [p for p in pool_holder if 0 in p.decoding]
            if pools:
                pid = pools[0].decoding[0]
                time.sleep(0.3)
                os.kill(pid, 9)
                killed.append(pid)
            time.sleep(0.01)

    import vidcap.engine as engine_module

    pools: list = []
    real_pool = engine_module.DecodePool

    def recording_pool(*args, **kwargs):
        pool = real_pool(*args, **kwargs)
        pools.append(pool)
        return pool

    killer = threading.Thread(target=kill_the_long_one, args=(pools,), daemon=True)
    killer.start()
    monkeypatch.setattr(engine_module, "DecodePool", recording_pool)  # to learn the pid
    results = run(
        [str(long), *map(str, others)],
        settings_for(tmp_path / "out"),
        lambda: backend,
        EngineSettings(decode_workers=1),
    )
    killer.join()
    assert killed, "the decoder was not seen running"
    by_name = {r.name: r for r in results}
    assert by_name["long"].status == "failed"
    assert "decoder stopped unexpectedly (killed by SIGKILL)" in by_name["long"].error
    assert [by_name[p.stem].status for p in others] == ["done"] * 3  # the pool replaced it
    assert not (tmp_path / "out" / "long.jsonl").exists()


@pytest.mark.heavy
def test_two_replicas_give_the_same_outputs(tmp_path: Path, tiny_captioner) -> None:
    from vidcap.backend import load_replicas
    from vidcap.settings import ModelSettings

    videos = [clip(tmp_path / "in", f"v{i}", 7) for i in range(4)]
    replicas = load_replicas(ModelSettings(model="tiny", device="cpu,cpu", batch_size=4))
    assert len(replicas) == 2 and replicas[0] is not replicas[1]
    backend = EmbeddedBackend(replicas)
    run([str(v) for v in videos], settings_for(tmp_path / "out"), lambda: backend)
    for video in videos:
        assert rows(tmp_path / "out", video.stem) == reference(tiny_captioner, video, EVERY)


def test_nothing_left_to_do_loads_no_model(tmp_path: Path, tiny_captioner) -> None:
    video = clip(tmp_path / "in", "v", 4)
    settings = settings_for(tmp_path / "out")
    run([str(video)], settings, lambda: EmbeddedBackend(tiny_captioner))

    def must_not_load():
        raise AssertionError("the model was loaded for a run with nothing to do")

    results = run([str(video)], settings, must_not_load)
    assert [r.resumed for r in results] == [True]


@pytest.mark.heavy
def test_resume_tells_files_with_the_same_name_apart(tmp_path: Path, tiny_captioner) -> None:
    a = clip(tmp_path / "a", "shapes", 4)
    b = clip(tmp_path / "b", "shapes", 9)  # the same name, other content
    out = tmp_path / "out"
    backend = lambda: EmbeddedBackend(tiny_captioner)  # noqa: E731
    run([str(a)], settings_for(out), backend)
    results = run([str(b)], settings_for(out), backend)
    assert [r.status for r in results] == ["done"] and not results[0].resumed
    assert results[0].name != "shapes" and results[0].name.startswith("shapes-")
    assert len(rows(out, "shapes")) == 4 and len(rows(out, results[0].name)) == 9
    # a rerun of both resumes both, under the names they have
    again = run([str(a), str(b), str(a)], settings_for(out), backend)  # a twice: one video
    assert sorted((r.name, r.resumed) for r in again) == [("shapes", True), (results[0].name, True)]
    # the same path with new content is redone under its name
    a.write_bytes(clip(tmp_path / "third", "shapes", 6).read_bytes())
    redo = run([str(a)], settings_for(out), backend)
    assert [(r.name, r.resumed) for r in redo] == [("shapes", False)]
    assert len(rows(out, "shapes")) == 6


@pytest.mark.heavy
def test_summary_describes_the_whole_folder(tmp_path: Path, tiny_captioner) -> None:
    out = tmp_path / "out"
    backend = lambda: EmbeddedBackend(tiny_captioner)  # noqa: E731
    first = clip(tmp_path / "in", "first", 3)
    second = clip(tmp_path / "in", "second", 5)
    run([str(first)], settings_for(out), backend)
    run([str(second)], settings_for(out), backend)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(v["name"] for v in summary["videos"]) == ["first", "second"]
    assert summary["totals"]["done"] == 2 and summary["totals"]["frames"] == 8
    assert summary["run"]["videos"] == 1 and summary["run"]["frames"] == 5
    for entry in summary["videos"]:
        assert entry["key"] == settings_for(out).key()
        assert entry["model"] == "tiny" and entry["version"]
        assert Path(entry["video"]).name == f"{entry['name']}.mp4"
        assert entry["identity"]["size"] > 0 and "source" not in entry


def test_a_folder_written_before_identity_was_renamed_resumes_with_nothing_redone(
    tmp_path: Path, tiny_captioner
) -> None:
    """Resume records and summary.json of vidcap 0.1.0 name the source's identity
    ``"source"``; such a folder resumes as it is (its records are not rewritten)."""
    out = tmp_path / "out"
    videos = [str(clip(tmp_path / "in", "one", 3)), str(clip(tmp_path / "in", "two", 4))]
    run(videos, settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["videos"]:  # 0.1.0's layout: the same fields, "source" last
        entry["source"] = entry.pop("identity")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    for path in (out / ".vidcap").glob("*.json"):
        new = json.loads(path.read_text())
        old = {"key": new["key"], "source": new["identity"], "result": new["result"]}
        path.write_text(json.dumps(old, indent=2, ensure_ascii=False) + "\n")
    files = {
        p: p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.name not in ("summary.json", "run.lock")
    }

    def must_not_load():
        raise AssertionError("a video of the old folder was redone")

    results = run(videos, settings_for(out), must_not_load)
    assert [(r.name, r.resumed) for r in results] == [("one", True), ("two", True)]
    assert {p: p.stat().st_mtime_ns for p in files} == files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["resumed"] == 2 and summary["totals"]["frames"] == 7
    assert [v["identity"]["path"] for v in summary["videos"]] == [
        str(Path(v).resolve()) for v in videos
    ]
    assert all("source" not in v for v in summary["videos"])


def test_videos_kept_from_an_earlier_outputs_revision_are_named(
    tmp_path: Path, tiny_captioner, caplog
) -> None:
    """The settings key stays the same across fixes that change what some videos' outputs
    hold (a late start's times, a rotated video's pictures), and every record says version
    0.1.0: a rerun over a folder of an earlier vidcap kept its videos without a word. Each
    record now holds the outputs revision it was made under, and a rerun names the videos
    it keeps from an earlier one (a record without it: before the field), redoing none."""
    out = tmp_path / "out"
    videos = [str(clip(tmp_path / "in", "one", 3)), str(clip(tmp_path / "in", "two", 4))]
    run(videos, settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    record = json.loads((out / ".vidcap" / "one.json").read_text())
    assert record["result"]["outputs"] == OUTPUTS
    del record["result"]["outputs"]  # as a vidcap before the field wrote it
    (out / ".vidcap" / "one.json").write_text(json.dumps(record))

    def must_not_load():
        raise AssertionError("a video was redone")

    with caplog.at_level("WARNING", logger="vidcap"):
        results = run(videos, settings_for(out), must_not_load)
    assert all(r.resumed for r in results)
    assert [r.getMessage() for r in caplog.records] == [
        f"1 video of {out} was captioned by an earlier vidcap (outputs revision 0, this one's "
        f"{OUTPUTS}): kept, as the settings are the same, but fixes since may give it other "
        "frame times, pictures or captions (CHANGELOG.md); to caption it again, remove its "
        f"record, {out / '.vidcap'}/<name>.json (one)"
    ]
    (out / ".vidcap" / "one.json").unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="vidcap"):
        results = run(videos, settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    assert sorted((r.name, r.resumed) for r in results) == [("one", False), ("two", True)]
    assert not caplog.records


@pytest.mark.heavy
def test_a_file_copied_without_its_times_keeps_its_captions_one_changed_in_place_does_not(
    tmp_path: Path, tiny_captioner, caplog, monkeypatch
) -> None:
    """A done video's record keeps its file's SHA-256 (what ``sha256sum`` prints). A rerun
    over files copied without their times (``cp -r``, downloaded again, touched) kept
    nothing: every video was redone. Now one whose size is the record's and whose bytes
    are the same keeps its captions, its record takes the new time (the page stops flagging
    it), and the run says so; one with other bytes at the same size is redone."""
    out = tmp_path / "out"
    same, edited = clip(tmp_path / "in", "same", 3), clip(tmp_path / "in", "edited", 4)
    videos = [str(same), str(edited)]
    run(videos, settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    for path in (same, edited):
        record = json.loads((out / ".vidcap" / f"{path.stem}.json").read_text())
        assert record["identity"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    data = edited.read_bytes()
    at = data.index(b"x264 - core") + len("x264 - ")  # the encoder's note: it still decodes
    edited.write_bytes(data[:at] + b"C" + data[at + 1 :])
    for path in (same, edited):
        later = path.stat().st_mtime_ns + 5_000_000_000
        os.utime(path, ns=(later, later))
    flagged = {v.name: v.source_changed() is not None for v in open_folder(out)}
    assert flagged == {"edited": True, "same": True}

    backend = CountingBackend(tiny_captioner)
    monkeypatch.setattr("vidcap.inputs.SAID_READING", 1)  # (1 GiB: a wait worth a line)
    with caplog.at_level("WARNING", logger="vidcap"):
        results = run(videos, settings_for(out), lambda: backend)
    assert sorted((r.name, r.resumed) for r in results) == [("edited", False), ("same", True)]
    assert sum(backend.batches) == 4  # the edited video's frames only
    said = [r.getMessage() for r in caplog.records if "SHA-256" in r.getMessage()]
    assert said == [
        "reading 2 videos (0.0 GB) whose modification time is not the record's, to compare "
        "their bytes with the ones captioned (SHA-256)",
        "1 video has a new modification time but the bytes it was captioned from (the same "
        "SHA-256): its captions are kept",
    ]
    record = json.loads((out / ".vidcap" / "same.json").read_text())
    assert record["identity"]["mtime_ns"] == same.stat().st_mtime_ns
    assert record["identity"]["sha256"] == hashlib.sha256(same.read_bytes()).hexdigest()
    assert [v.name for v in open_folder(out) if v.source_changed() is not None] == []

    caplog.clear()

    def must_not_load():
        raise AssertionError("a video was redone")

    with caplog.at_level("WARNING", logger="vidcap"):
        results = run(videos, settings_for(out), must_not_load)
    assert all(r.resumed for r in results) and not caplog.records


@pytest.mark.heavy
def test_other_settings_in_the_same_folder_are_listed_with_their_key(
    tmp_path: Path, tiny_captioner
) -> None:
    out = tmp_path / "out"
    video = clip(tmp_path / "in", "v", 6)
    backend = lambda: EmbeddedBackend(tiny_captioner)  # noqa: E731
    run([str(video)], settings_for(out), backend)
    other = settings_for(out, SamplingSettings(fps=None, every_n=2))
    results = run([str(video)], other, backend)
    assert not results[0].resumed and results[0].frames == 3
    summary = json.loads((out / "summary.json").read_text())
    assert [v["key"] for v in summary["videos"]] == [other.key()]


def test_last_cue_ends_at_the_video_end(tmp_path: Path, tiny_captioner) -> None:
    video = clip(tmp_path / "in", "v", 25)  # 2.5 s at 10 fps
    out = tmp_path / "out"
    run(
        [str(video)],
        settings_for(out, SamplingSettings(fps=1.0)),
        lambda: EmbeddedBackend(tiny_captioner),
    )
    cues = list(srt.parse((out / "v.srt").read_text()))
    assert cues and cues[-1].end.total_seconds() == pytest.approx(2.5, abs=1e-3)
    assert all(c.end > c.start for c in cues)


def test_engine_settings_default_to_the_cpu_count() -> None:
    assert EngineSettings().workers() == max(1, os.cpu_count() or 1)
    assert replace(EngineSettings(), decode_workers=3).workers() == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decode_workers": 0}, r"--decode-workers must be a whole number >= 1, got 0"),
        ({"decode_timeout": 0}, r"--decode-timeout must be a number of seconds > 0, got 0"),
        ({"decode_timeout": float("nan")}, r"--decode-timeout .* got nan"),
        ({"queue_mib": 0}, r"queue_mib must be >= 1, got 0"),
    ],
)
def test_engine_settings_validate_themselves(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        EngineSettings(**kwargs)


# Over 3 s (33 files; the HDR one costs its decoder worker ~3 s of tone-mapping tables):
# in make test. Each spec's times and duration: tests/test_video.py; HDR: test_picture.py.
@pytest.mark.slow
def test_a_folder_of_every_kind_of_file_gives_true_outputs(
    generated_videos, tmp_path: Path, tiny_captioner
) -> None:
    """#12's "done when", through the whole engine: every container and codec the tests
    encode (AVI with and without index and B-frames, VFR, TS, PS, short and open GOPs…)
    plus non-videos, in one folder. Per video: times are frame presentation times, the
    duration is the end of the last frame, cues are never empty or zero-length and the last
    one ends at that duration; summary.json lists the folder."""
    from tests.support.videos import probe_times

    folder = tmp_path / "in"
    folder.mkdir()
    for name, (path, _) in generated_videos.items():
        shutil.copy(path, folder / f"{name}{path.suffix}")
    (folder / "notes.mp4").write_text("a text file with a video's name")
    (folder / "noise.avi").write_bytes(random.Random(30_000).randbytes(30_000))  # fixed noise
    out = tmp_path / "out"
    sources = sorted(str(p) for p in folder.iterdir())
    sampling = SamplingSettings(fps=2.0)
    results = run(sources, settings_for(out, sampling), lambda: EmbeddedBackend(tiny_captioner))
    by_name = {r.name: r for r in results}
    assert by_name["notes"].status == by_name["noise"].status == "failed"
    for name, (_, spec) in generated_videos.items():
        result = by_name[name]
        assert result.status == "done", (name, result.error)
        assert result.duration == pytest.approx(spec.duration, abs=1e-6), name
        times = probe_times(folder / f"{name}{spec.suffix}")
        for row in read_jsonl(out / f"{name}.jsonl"):
            assert row["time"] == pytest.approx(times[row["frame"]], abs=1e-6), name
        cues = list(srt.parse((out / f"{name}.srt").read_text()))
        assert cues and all(c.end > c.start and c.content.strip() for c in cues), name
        assert cues[-1].end.total_seconds() == pytest.approx(spec.duration, abs=1e-3), name
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["videos"]) == len(generated_videos) + 2
    assert summary["totals"]["failed"] == 2


@pytest.mark.slow  # over 3 s: in make test, not make test-fast
def test_a_stalled_decoder_fails_its_video_and_the_run_goes_on(
    tmp_path: Path, tiny_captioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An input whose download hangs half-way (a stuck network store): its decoder is stopped
    after --decode-timeout and the video fails alone, with the reason, and its half-done
    download is removed."""
    import http.server
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    good = clip(tmp_path / "in", "good", 6)
    body = clip(tmp_path / "in", "stuck", 6).read_bytes()
    release = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            release.wait(60)  # then never the rest

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stuck.mp4"
    try:
        started = time.monotonic()
        results = run(
            [url, str(good)],
            settings_for(tmp_path / "out"),
            lambda: EmbeddedBackend(tiny_captioner),
            EngineSettings(decode_workers=2, decode_timeout=6),
        )
        elapsed = time.monotonic() - started
    finally:
        release.set()
        server.shutdown()
    by_name = {r.name: r for r in results}
    assert by_name["good"].status == "done"
    assert by_name["stuck"].status == "failed"
    assert "sent nothing for 6 s (--decode-timeout)" in by_name["stuck"].error
    assert elapsed < 45
    assert list(temp.rglob("*")) == []  # no download left behind by the killed worker


def test_a_file_keeps_its_hashed_name_when_captioned_alone_later(
    tmp_path: Path, tiny_captioner
) -> None:
    """Regression: two x.mp4 got hashed names; captioning a/x.mp4 alone afterwards redid it
    as "x" and summary.json counted it twice."""
    a = clip(tmp_path / "a", "x", 4)
    b = clip(tmp_path / "b", "x", 6)
    out = tmp_path / "out"
    backend = lambda: EmbeddedBackend(tiny_captioner)  # noqa: E731
    first = {r.video: r.name for r in run([str(a), str(b)], settings_for(out), backend)}
    assert len(set(first.values())) == 2 and "x" not in first.values()
    again = run([str(a)], settings_for(out), backend)
    assert [(r.name, r.resumed) for r in again] == [(first[str(a)], True)]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["videos"]) == 2 and summary["totals"]["frames"] == 10


def test_a_video_whose_frames_do_not_all_come_back_fails_instead_of_vanishing(
    tmp_path: Path,
) -> None:
    from vidcap.commit import Committer
    from vidcap.jobs import VideoJob
    from vidcap.outputs import CaptionedFrame
    from vidcap.records import write_summary

    settings = settings_for(tmp_path / "out")
    job = VideoJob(0, "in/v.mp4", "v", {"path": "in/v.mp4"})
    committer = Committer(settings, [job])
    committer.frame(0, CaptionedFrame(0, 0.0, "a"))
    committer.frame(0, CaptionedFrame(0, 0.0, "a"))  # the same index twice
    committer.end(0, sampled_frames=2, duration=1.0)
    committer.fail_unfinished()
    results = committer.close(1.0)
    assert [(r.status, r.error) for r in results] == [
        ("failed", "in/v.mp4: 1 of the 2 sampled frames came back")
    ]
    assert write_summary(tmp_path / "out", results, 0, 1.0)["totals"]["failed"] == 1


@pytest.mark.heavy
def test_a_frame_the_model_fails_on_fails_its_video_alone(
    tmp_path: Path, tiny_captioner, monkeypatch
) -> None:
    """A model error in-process stopped the whole run, every video in flight recorded failed.
    Now the batch is captioned again frame by frame, as the servers retry a request alone:
    only the video whose frame breaks the model fails, saying why, and its batch-mates from
    the other videos get the captions each gets alone."""
    one, two = clip(tmp_path / "in", "one", 3), clip(tmp_path / "in", "two", 4)
    poison = magenta_clip(tmp_path / "in" / "poison.mp4", 3)
    real = tiny_captioner.caption
    calls: list[int] = []

    def caption(images, settings=None):
        calls.append(len(images))
        if any(image[..., 1].mean() < 60 and image[..., 0].mean() > 180 for image in images):
            raise RuntimeError("CUDA error: device-side assert triggered")
        return real(images, settings)

    monkeypatch.setattr(tiny_captioner, "batch_size", 16)  # the 10 frames in one batch
    monkeypatch.setattr(tiny_captioner, "caption", caption)
    out = tmp_path / "out"
    results = run(
        [str(one), str(poison), str(two)],
        settings_for(out),
        lambda: EmbeddedBackend(tiny_captioner),
        EngineSettings(decode_workers=1),
    )
    assert {r.name: r.status for r in results} == {"one": "done", "poison": "failed", "two": "done"}
    [failed] = [r for r in results if r.status == "failed"]
    assert "no caption for frame 0" in failed.error
    assert "the model failed on this frame: RuntimeError: CUDA error" in failed.error
    assert calls == [10] + [1] * 10  # the batch, then each frame alone
    for video in (one, two):
        with VideoReader(video) as reader:
            frames = [s.for_model(tiny_captioner.input_size) for s in reader.samples(EVERY)]
        alone = [real([f.rgb], GenerationSettings())[0] for f in frames]
        rows = read_jsonl(out / f"{video.stem}.jsonl")
        assert [row["caption"] for row in rows] == alone
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["failed"] == 1 and summary["totals"]["done"] == 2


def test_a_folder_in_use_is_refused_before_anything_is_planned(tmp_path: Path) -> None:
    from vidcap.out_lock import holding

    out = tmp_path / "out"
    with holding(out):
        with pytest.raises(
            UsageError, match=rf"--out {out} is in use by another vidcap run \(pid "
        ):
            run(["nothing.mp4"], RunSettings(out), lambda: pytest.fail("no backend built"))
        assert not (out / "summary.json").exists()
    with holding(out):  # let go when the block ended
        pass


def test_a_file_system_without_locks_runs_unguarded_saying_so(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """Regression: on a file system that takes no locks (Lustre mounted without flock
    answers ENOSYS, NFS mounted nolock ENOLCK: the scratch space of many GPU clusters) the
    run lock's flock raised, and every run ended with a traceback. The run goes on,
    unguarded, with a warning. (No such file system can be mounted here: flock is made to
    answer as Lustre's does.)"""
    import errno
    import fcntl

    from vidcap import out_lock

    answer = OSError(errno.ENOSYS, "Function not implemented")

    def no_locks(fd: int, operation: int) -> None:
        raise answer

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out"
    with out_lock.holding(out):
        assert "since" in (out / ".vidcap" / "run.lock").read_text()
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (
        f"--out {out}: its file system takes no locks (Function not implemented): a second "
        "run started in this folder while this one runs is not kept out"
    )
    answer = OSError(errno.EIO, "Input/output error")  # any other failure still raises
    with pytest.raises(OSError, match="Input/output error"), out_lock.holding(out):
        pass
