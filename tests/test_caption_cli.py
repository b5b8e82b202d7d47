"""``vidcap caption`` end to end: real videos, the tiny model, outputs parsed back.

Most tests run the command in this process (``run_main``: its exit status and what it
prints on stderr); those about the process itself start ``python -m vidcap``: its exit
status, ``--quiet`` leaving a terminal silent, a model that cannot load, a killed run, a
terminal's progress line."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import srt
import webvtt

from tests.support.cli import in_a_small_folder, run_main
from tests.support.terminal import run_on_terminal
from tests.support.videos import (
    VideoSpec,
    concealed_damage,
    constant_rate,
    probe_times,
    read_jsonl,
    write_video,
)
from vidcap.records import is_damaged

CMD = [sys.executable, "-m", "vidcap"]


def vidcap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CMD, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Different codecs and containers, two files with the same name, one corrupt file."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "cam1").mkdir()
    (root / "cam2").mkdir()
    specs = {
        "cam1/clip.mp4": VideoSpec("a", "libx264", ".mp4", constant_rate(40, Fraction(10))),
        "cam2/clip.mp4": VideoSpec(
            "b",
            "libx264",
            ".mp4",
            constant_rate(25, Fraction(30000, 1001)),
            rate=Fraction(30000, 1001),
        ),
        "cam2/old.avi": VideoSpec(
            "c", "mpeg4", ".avi", constant_rate(30, Fraction(15)), rate=Fraction(15)
        ),
        "web.webm": VideoSpec("d", "libvpx-vp9", ".webm", constant_rate(20, Fraction(10))),
    }
    for rel, spec in specs.items():
        write_video(root / rel, spec)
    # (not random bytes: FFmpeg's probe now and then took 20 KB of them for a stream and
    # decoded a frame of it)
    (root / "broken.mkv").write_bytes(b"this is not a video at all, only text\n" * 500)
    (root / "notes.txt").write_text("not a video, and not picked up by extension")
    return root


@pytest.fixture(scope="module")
def mixed_run(mixed_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("out")
    result = run_main(
        "caption", mixed_folder, "--out", out, "--model", "tiny", "--fps", "2", "--quiet"
    )
    return result, out


def test_exit_code_and_summary_report_the_bad_video(mixed_run) -> None:
    result, out = mixed_run
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    by_video = {Path(v["video"]).name + ":" + v["name"]: v for v in summary["videos"]}
    failed = [v for v in summary["videos"] if v["status"] == "failed"]
    assert [Path(v["video"]).name for v in failed] == ["broken.mkv"]
    assert "not a decodable video" in failed[0]["error"]
    assert summary["totals"]["done"] == 4 and summary["totals"]["failed"] == 1
    assert summary["totals"]["frames"] == sum(v["frames"] for v in by_video.values())


def test_same_file_names_do_not_overwrite(mixed_run) -> None:
    _, out = mixed_run
    clips = sorted(p.name for p in out.glob("clip*.jsonl"))
    assert len(clips) == 2 and clips[0] != clips[1]
    videos = {read_jsonl(out / name)[0]["video"] for name in clips}
    assert len(videos) == 2


def test_jsonl_times_match_the_stream(mixed_run, mixed_folder: Path) -> None:
    _, out = mixed_run
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["videos"]:
        if entry["status"] != "done":
            continue
        rows = read_jsonl(out / f"{entry['name']}.jsonl")
        stream_times = probe_times(Path(entry["video"]))
        assert len(rows) == entry["frames"] > 0
        for row in rows:
            assert set(row) == {"video", "frame", "time", "caption", "damaged"}
            assert row["time"] == pytest.approx(stream_times[row["frame"]], abs=1e-6)
        # --fps 2: one frame per half second tick
        assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
        assert len(rows) == pytest.approx(entry["duration"] * 2, abs=1)


def test_subtitles_parse_and_cover_the_video(mixed_run) -> None:
    _, out = mixed_run
    for srt_file in out.glob("*.srt"):
        subs = list(srt.parse(srt_file.read_text()))
        vtt = webvtt.read(str(srt_file.with_suffix(".vtt")))
        assert len(subs) == len(vtt.captions)
        for a, b in zip(subs, subs[1:], strict=False):
            assert a.end <= b.start
        rows = read_jsonl(srt_file.with_suffix(".jsonl"))
        nonempty = [r for r in rows if r["caption"]]
        if nonempty:
            assert subs[0].start.total_seconds() == pytest.approx(nonempty[0]["time"], abs=1e-3)


def test_the_summary_says_what_each_settings_key_stands_for(
    mixed_run, mixed_folder: Path, tmp_path: Path
) -> None:
    """Regression (an outside-in round): the settings that made a folder's captions (the
    prompt, the sampling) were nowhere in it, only each video's opaque ``key``, so a yes/no
    answer read as a caption and a folder of two runs could not be told apart. The
    summary lists, for each key its videos have, what it stands for, across runs."""
    _, out = mixed_run
    summary = json.loads((out / "summary.json").read_text())
    keys = {v["key"] for v in summary["videos"] if v["status"] == "done"}
    [key] = keys
    assert summary["settings"][key]["sampling"]["fps"] == 2.0
    assert summary["settings"][key]["model"] == "tiny"
    folder = tmp_path / "two"
    for fps, prompt in (("2", []), ("1", ["--prompt", "Question: is it red? Answer:"])):
        video = mixed_folder / ("web.webm" if prompt else "cam1/clip.mp4")
        run_main("caption", video, "--out", folder, "--model", "tiny", "--fps", fps, "--quiet",
                 "--max-frames", "2", *prompt)  # fmt: skip
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary["settings"]
    assert sorted(settings) == sorted(v["key"] for v in summary["videos"])
    by_video = {v["name"]: settings[v["key"]] for v in summary["videos"]}
    assert by_video["clip"]["generation"]["prompt"] is None
    assert by_video["web"]["generation"]["prompt"] == "Question: is it red? Answer:"
    assert by_video["web"]["sampling"]["fps"] == 1.0


def test_rerun_skips_finished_videos(mixed_run, mixed_folder: Path) -> None:
    _, out = mixed_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    result = run_main(
        "caption", mixed_folder, "--out", out, "--model", "tiny", "--fps", "2", "--quiet"
    )
    assert result.returncode == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["resumed"] == 4 and summary["run"]["frames"] == 0
    assert summary["totals"]["done"] == 4  # the folder, not just this run


@pytest.mark.slow
def test_videos_with_names_near_the_length_limit_get_their_outputs(tmp_path: Path) -> None:
    """Regression: a video named after a long title (250 bytes, a download's usual name)
    failed with "File name too long" — its outputs add suffixes (``.scenes.jsonl.part``)
    past 255 bytes — and was missing from summary.json. Output names keep at most 228
    bytes of the stem, ending a longer one with ``~`` and a hash of the whole (two long
    names alike stay apart); a rerun resumes them; clips of such a source are cut too."""
    from vidcap.clips import export_clips
    from vidcap.mask import Segment

    inputs = tmp_path / "in"
    inputs.mkdir()
    spec = VideoSpec("long", "libx264", ".mp4", constant_rate(10, Fraction(10)))
    names = ["x" * 240 + "-a", "x" * 240 + "-b", "é" * 123]  # 242, 242, 246 bytes
    for name in names:
        write_video(inputs / f"{name}.mp4", spec)
    out = tmp_path / "out"
    result = run_main("caption", inputs, "--out", out, "--model", "tiny", "--scenes", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [v["status"] for v in summary["videos"]] == ["done"] * 3
    stems = sorted(p.name.removesuffix(".jsonl") for p in out.glob("*.jsonl")
                   if not p.name.endswith(".scenes.jsonl"))  # fmt: skip
    assert len(stems) == 3 and all(226 < len(s.encode()) <= 228 and "~" in s for s in stems)
    assert len({s.split("~")[1] for s in stems}) == 3  # (242-byte names alike: apart)
    for stem in stems:
        assert list(srt.parse((out / f"{stem}.srt").read_text()))
        assert read_jsonl(out / f"{stem}.jsonl") and (out / f"{stem}.scenes.jsonl").is_file()
    again = run_main("caption", inputs, "--out", out, "--model", "tiny", "--scenes", "--quiet")
    assert again.returncode == 0
    assert json.loads((out / "summary.json").read_text())["run"]["resumed"] == 3
    [clip] = export_clips(inputs / f"{names[2]}.mp4", [Segment(0.0, 0.5)], tmp_path / "clips")
    assert (tmp_path / "clips" / clip.path).is_file() and len(clip.path.encode()) <= 255


@pytest.mark.heavy
def test_changed_settings_redo_videos(mixed_folder: Path, tmp_path: Path) -> None:
    video = mixed_folder / "web.webm"
    assert (
        run_main("caption", video, "--out", tmp_path, "--model", "tiny", "--quiet").returncode == 0
    )
    assert len(read_jsonl(tmp_path / "web.jsonl")) == 2
    again = run_main(
        "caption", video, "--out", tmp_path, "--model", "tiny", "--fps", "5", "--quiet"
    )
    assert again.returncode == 0
    assert len(read_jsonl(tmp_path / "web.jsonl")) == 10


@pytest.mark.heavy
def test_a_redone_video_keeps_no_file_of_a_format_no_longer_written(
    mixed_folder: Path, tmp_path: Path
) -> None:
    """Regression: a video redone with another --format list (and other settings) kept its
    earlier .srt, .vtt and .scenes.jsonl, which no longer matched its captions, and the page
    played the old subtitles. Its outputs are now exactly the new run's formats, and the
    page names no subtitle file."""
    video = mixed_folder / "web.webm"
    args = ["--out", tmp_path, "--model", "tiny", "--quiet"]
    assert (
        run_main("caption", video, *args, "--format", "jsonl,srt,vtt", "--scenes").returncode == 0
    )
    assert {p.name for p in tmp_path.glob("web.*")} == {
        "web.jsonl", "web.srt", "web.vtt", "web.scenes.jsonl",
    }  # fmt: skip
    assert "web.vtt" in next((tmp_path / "report").glob("data-*.js")).read_text()
    again = run_main("caption", video, *args, "--fps", "5", "--format", "jsonl", "--no-thumbs")
    assert again.returncode == 0, again.stderr
    assert {p.name for p in tmp_path.glob("web.*")} == {"web.jsonl"}
    assert len(read_jsonl(tmp_path / "web.jsonl")) == 10
    assert not (tmp_path / "thumbs" / "web").exists()
    assert "web.vtt" not in next((tmp_path / "report").glob("data-*.js")).read_text()


@pytest.mark.heavy
def test_each_video_records_the_precision_it_was_captioned_in(
    mixed_folder: Path, tmp_path: Path
) -> None:
    """The precision is no part of the settings key (a folder begun on a CPU in float32
    resumes on a GPU in float16), so nothing said which videos were captioned in which.
    Each record now holds it, and a rerun in another precision says how many it keeps."""
    web, avi = mixed_folder / "web.webm", mixed_folder / "cam2" / "old.avi"
    args = ["--out", tmp_path, "--model", "tiny", "--quiet"]
    assert run_main("caption", web, *args, "--dtype", "bfloat16").returncode == 0
    again = run_main("caption", web, avi, *args)
    assert again.returncode == 0
    assert (
        again.stderr.count("vidcap: WARNING:") == 1
        and (
            f"1 video of {tmp_path} was captioned in bfloat16, not float32 as this run captions: "
            "kept (the precision is not part of the settings key, so new captions may be worded "
            "differently; --dtype bfloat16 matches them)"
        )
        in again.stderr
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {v["name"]: v["precision"] for v in summary["videos"]} == {
        "web": "bfloat16", "old": "float32",
    }  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_to_identical_outputs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i, frames in enumerate([40, 150, 150]):
        write_video(
            src / f"v{i}.mkv",
            VideoSpec(
                f"v{i}", "libx264", ".mkv", constant_rate(frames, Fraction(25)), rate=Fraction(25)
            ),
        )
    args = ["caption", src, "--model", "tiny", "--every-n", "1", "--batch-size", "8", "--quiet"]
    args += ["--decode-workers", "2"]
    clean = tmp_path / "clean"
    assert run_main(*args, "--out", clean).returncode == 0  # (in this process: quicker)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CMD, *map(str, args), "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Killed once the first video is done, whichever it is: the two decoders race, so the
    # 40-frame v0 need not be first (a worker that started later decodes it after v1, or
    # takes v2 while v0's frames still wait).
    records = [killed / ".vidcap" / f"{name}.json" for name in ["v0", "v1", "v2"]]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(r.exists() for r in records):
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [(killed / f"{name}.jsonl").is_file() for name in ["v0", "v1", "v2"]]
    assert any(done) and not all(done), done  # killed mid-run
    assert not (killed / "summary.json").exists()

    rerun = run_main(*args, "--out", killed)
    assert rerun.returncode == 0, rerun.stderr
    for name in ["v0", "v1", "v2"]:
        for fmt in ["jsonl", "srt", "vtt"]:
            assert (killed / f"{name}.{fmt}").read_bytes() == (clean / f"{name}.{fmt}").read_bytes()
    assert not list(killed.glob("*.part"))
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["run"]["resumed"] >= 1 and summary["totals"]["done"] == 3


@pytest.mark.slow
def test_one_run_at_a_time_in_a_folder_and_the_lock_goes_with_its_process(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    spec = VideoSpec("long", "libx264", ".mkv", constant_rate(100, Fraction(25)), rate=Fraction(25))
    write_video(src / "long.mkv", spec)
    args = ["caption", src, "--model", "tiny", "--every-n", "1", "--quiet", "--out", tmp_path / "o"]
    first = subprocess.Popen([*CMD, *map(str, args)], stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "o" / ".vidcap" / "run.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and f"pid {first.pid} " not in _text(lock):
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)  # held still (its lock with it) while the second tries
    # (the second and third runs in this process, as another process than the first: what
    # they do and say is the point, not how their own process starts)
    second = run_main(*args)
    assert first.poll() is None, "the first run ended before it was held: no overlap"
    assert second.returncode == 2
    assert re.fullmatch(
        rf"vidcap: error: --out {tmp_path / 'o'} is in use by another vidcap run \(pid "
        rf"{first.pid} on \S+, since [-0-9]+ [:0-9]+\): wait for it to end, or give another --out",
        second.stderr.strip(),
    ), second.stderr
    assert not (tmp_path / "o" / "summary.json").exists()  # the second run wrote nothing

    first.send_signal(signal.SIGKILL)  # the kernel lets its lock go: none stale
    first.wait()
    third = run_main(*args)
    assert third.returncode == 0, third.stderr
    assert len(read_jsonl(tmp_path / "o" / "long.jsonl")) == 100


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("thumbs", "size"), [("--no-thumbs", "4k"), ("", "4k"), ("--no-thumbs", "32k")]
)
def test_a_full_output_disk_stops_the_run_and_a_rerun_finishes_it(
    tmp_path: Path, thumbs: str, size: str
) -> None:
    # Without the stop, every video left is decoded and captioned, then fails writing.
    # With thumbnails the folder fills while one is staged, before the video's outputs.
    # In 32k, once some videos are done: then neither a failure record nor the summary
    # nor the page can be written, each of which said so in a line of its own (5 lines).
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        spec = VideoSpec(f"v{i}", "libx264", ".mkv", constant_rate(20, Fraction(10)))
        write_video(src / f"v{i}.mkv", spec)
    run = f'{sys.executable} -m vidcap caption {src} --out "$SMALL/out" --model tiny --fps 2'
    run += f" --format jsonl {thumbs} --quiet"
    script = (
        f"{run} 2>{tmp_path}/full.err; echo $? >{tmp_path}/full.rc; "
        f'cp -r "$SMALL/out" {tmp_path}/full; '  # the folder as the stopped run left it
        f'mount -o remount,size=64m "$SMALL" && {run} && cp -r "$SMALL/out" {tmp_path}/done'
    )
    result = in_a_small_folder(size, script)
    assert result.returncode == 0, result.stderr

    assert (tmp_path / "full.rc").read_text().strip() == "1"
    errors = (tmp_path / "full.err").read_text()
    [line] = errors.splitlines()
    assert re.fullmatch(
        r"vidcap: error: stopped: cannot write outputs in /\S+/out \(No space left on device\);"
        r" the videos done are kept: make room and rerun the same command to resume",
        line,
    ), errors
    recorded = [json.loads(p.read_text()) for p in (tmp_path / "full" / ".vidcap").glob("*.json")]
    unwritten = [r for r in recorded if "cannot write outputs" in (r["result"]["error"] or "")]
    assert len(unwritten) <= 1, recorded  # the first video to find the folder full, only
    if size == "32k":  # (full once some videos were done)
        assert any(r["result"]["status"] == "done" for r in recorded), recorded

    summary = json.loads((tmp_path / "done" / "summary.json").read_text())
    assert summary["totals"] == {
        "videos": 6, "done": 6, "failed": 0, "frames": 24, "duration": 12.0
    }  # fmt: skip
    for i in range(6):
        rows = read_jsonl(tmp_path / "done" / f"v{i}.jsonl")
        assert [row["time"] for row in rows] == [0.0, 0.5, 1.0, 1.5]
    if not thumbs:
        assert len(list((tmp_path / "done" / "thumbs").glob("v?/*.jpg"))) == 24
        staged = tmp_path / "full" / ".vidcap" / "thumbs"  # (the stopped video's: removed)
        assert not staged.exists() or not any(staged.iterdir())


def test_a_read_only_folder_is_not_called_full(tmp_path: Path) -> None:
    """Regression: an output disk turned read-only mid-run (ext4 after an I/O error) stopped
    the run saying "make room". The stop names what to do for each cause."""
    import errno

    from vidcap.commit import Committer
    from vidcap.jobs import RunSettings

    committer = Committer(RunSettings(out_dir=tmp_path), [])
    read_only = committer._full(OSError(errno.EROFS, "Read-only file system"))
    assert str(read_only).endswith(
        "(Read-only file system); the videos done are kept: make it writable and rerun the "
        "same command to resume"
    )
    full = committer._full(OSError(errno.ENOSPC, "No space left on device"))
    assert "make room and rerun" in str(full) and committer.folder_full


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "jsonl,ass"], "supported values are jsonl, srt, vtt"),
        (["--fps", "0"], "--fps"),
        (["--every-n", "-2"], "--every-n"),
        (["--device", "tpu"], "supported values are"),
        (["--max-new-tokens", "0"], "--max-new-tokens"),
        (["--num-beams", "9"], "--num-beams"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "many"], "--batch-size"),
        (["--decode-workers", "0"], "--decode-workers"),
        (["--decode-timeout", "0"], "--decode-timeout"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    mixed_folder: Path, tmp_path: Path, args, message
) -> None:
    result = run_main(
        "caption", mixed_folder / "web.webm", "--out", tmp_path, "--model", "tiny", *args
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_input_is_a_usage_error(tmp_path: Path) -> None:
    """... and leaves no output folder made for it (an empty one was left), nor touches
    one that was there."""
    result = run_main("caption", tmp_path / "nope.mp4", "--out", tmp_path / "o", "--model", "tiny")
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr
    assert not (tmp_path / "o").exists()
    (tmp_path / "empty").mkdir()
    result = run_main("caption", tmp_path / "empty", "--out", tmp_path / "o2", "--model", "tiny")
    assert result.returncode == 2 and "no videos found" in result.stderr
    assert not (tmp_path / "o2").exists()
    (tmp_path / "there").mkdir()
    result = run_main("caption", tmp_path / "nope.mp4", "--out", tmp_path / "there")
    assert result.returncode == 2 and (tmp_path / "there").is_dir()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--device", "cuda:7"], "device 'cuda:7' asked for"),
        (["--server", "127.0.0.1:5719/caption"], "bad server URL '127.0.0.1:5719/caption'"),
        # Regression: flags of a way of running the run did not take were ignored (exit 0)
        (["--prebatch", "0"], "--prebatch applies to --server only"),
        (["--wire-format", "jpeg", "--token", "t"], "--wire-format and --token apply to --server"),
        (["--ray-actors", "2"], "--ray-actors applies to --ray only"),
        (["--shard-rows", "10"], "--shard-rows applies to --format parquet only"),
        # ... and where given at their defaults (a script's flags, a server left out): ignored
        (["--retries=5", "--inflight", "4"], "--inflight and --retries apply to --server"),
        (["--shard-rows", "100000"], "--shard-rows applies to --format parquet only"),
        # ... and the in-process model's flags with --server (its own are used): ignored
        (
            ["--server", "http://127.0.0.1:9/caption", "--device", "cpu"],
            "--device is for the model in this process, not --server's",
        ),
        (
            [
                "--server",
                "http://127.0.0.1:9/caption",
                "--dtype",
                "float32",
                "--batch-size",
                "auto",
            ],
            "--dtype and --batch-size are for the model in this process, not --server's",
        ),
    ],
)
def test_a_run_refused_at_its_start_says_why_and_leaves_no_folder(
    tmp_path: Path, extra: list, said: str
) -> None:
    """Regression: a device it cannot have or a bad server URL was one line, exit 2, but
    left the folder it made (``OUT/.vidcap``), which search and the page then took for an
    output folder."""
    out = tmp_path / "o"
    shapes = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"
    result = run_main("caption", shapes, "--out", out, "--model", "tiny", *extra)
    assert result.returncode == 2 and said in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.heavy
def test_a_rerun_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    """Regression: a rerun that found every video done printed the first run's line word for
    word ("1 of 1 videos done, 30 frames"); only -v said they were passed over."""
    shapes = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"
    out = tmp_path / "o"
    first = run_main("caption", shapes, "--out", out, "--model", "tiny")
    again = run_main("caption", shapes, "--out", out, "--model", "tiny")
    assert first.stderr.strip().splitlines()[-1] == (
        f"vidcap: 1 of 1 videos done, 30 frames; outputs in {out}"
    )
    assert again.returncode == 0 and again.stderr.strip().splitlines() == [
        f"vidcap: 1 of 1 videos done, 30 frames; outputs in {out}; 1 done by an earlier run "
        f"(see {out}/summary.json)"
    ]


@pytest.mark.heavy
def test_unavailable_model_is_one_line(mixed_folder: Path, tmp_path: Path) -> None:
    # A subprocess: in this process, the decoder pool started before the model failed to
    # load takes ~5 s to close (its worker is waited for); ``python -m vidcap`` exits at once.
    out = tmp_path / "out"
    result = vidcap(
        "caption", mixed_folder / "web.webm", "--out", out, "--model", "nobody/no-such-model"
    )
    assert result.returncode == 1
    assert "--local-dir /path/to/blip2) and pass --model /path/to/blip2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # (it held the run's lock alone: made for nothing, removed)


# A subprocess, the only true test of a silent terminal (warnings and log records of a
# fresh interpreter, the decoder workers' stderr): over 3 s, in make test.
@pytest.mark.slow
def test_format_subset_and_quiet(mixed_folder: Path, tmp_path: Path) -> None:
    result = vidcap(
        "caption",
        mixed_folder / "web.webm",
        "--out",
        tmp_path,
        "--model",
        "tiny",
        "--format",
        "srt",
        "--quiet",
    )
    assert result.returncode == 0
    assert result.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "index.html",  # the folder's page and its data
        "report",
        "summary.json",
        "thumbs",  # a thumbnail of each sampled frame, for the page
        "web.srt",
    ]


@pytest.mark.heavy
def test_dead_server_stops_the_run_resumably(mixed_folder: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/caption"
    started = time.monotonic()
    result = run_main(
        "caption", mixed_folder / "cam2", "--out", tmp_path, "--model", "tiny", "--quiet",
        "--server", url, "--retries", "1", "--timeout", "5",
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60
    summary = json.loads((tmp_path / "summary.json").read_text())
    statuses = [v["status"] for v in summary["videos"]]
    assert statuses and set(statuses) == {"failed"}  # stopped with the videos it had begun
    assert not list(tmp_path.glob("*.jsonl"))


def test_out_pointing_at_a_file_is_one_line(mixed_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    result = run_main("caption", mixed_folder / "web.webm", "--out", target, "--model", "tiny")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidcap: error: --out {target} is a file, not a folder"
    ]


@pytest.mark.parametrize("name", ["summary.json", "index.html"])
def test_a_folder_where_the_run_writes_its_summary_is_said_before_any_work(
    mixed_folder: Path, tmp_path: Path, name: str
) -> None:
    """Regression: ``OUT/summary.json`` made a folder failed the run at its end, exit 1,
    after every video was captioned."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    result = run_main("caption", mixed_folder / "web.webm", "--out", out, "--model", "tiny")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidcap: error: --out {out}: {name} there is a folder, where the run writes its own "
        f"{name}: move it"
    ]
    assert sorted(p.name for p in out.iterdir()) == [name]  # (nothing captioned)


def test_tiny_model_onto_an_existing_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("x")
    result = run_main("tiny-model", target)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "is a file" in result.stderr


def test_verbose_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    result = run_main("caption", tmp_path / "none.mp4", "--out", tmp_path / "o", "-v")
    assert result.returncode == 2 and "no such file or folder" in result.stderr


def test_argument_errors_are_one_line_with_the_help_hint(tmp_path: Path) -> None:
    result = run_main("caption", tmp_path, "--out", tmp_path / "o", "--batch-size", "lots")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vidcap caption: error: argument --batch-size: expected 'auto' or a whole number, "
        "got 'lots' (see vidcap caption --help)"
    ]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # argparse's default took any unambiguous prefix: this was `--model all`
        (["--mode", "all"], "--mode; did you mean --model or --decode-mode?"),
        (["--keyf"], "--keyf; did you mean --keyframes? ("),  # was --keyframes, silently
        # (the flags it begins, not "--keyframes or --token": difflib's alone)
        (["--fps=1", "--sceens"], "--sceens; did you mean --scenes"),
        # a short flag vidcap does not have: said, not "the following arguments are required"
        (["-o", "out"], "-o; did you mean --out"),
        (["-fps", "2"], "-fps; did you mean --fps"),
    ],
)
def test_flags_are_never_abbreviated_and_a_slip_names_the_flag(
    tmp_path: Path, args: list[str], said: str
) -> None:
    # No --out: the unknown flag is said before a missing argument.
    result = run_main("caption", tmp_path, *args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("vidcap caption: error: unrecognized arguments: ")
    assert said in line and line.endswith("(see vidcap caption --help)")


@pytest.mark.parametrize(("flag", "value"), [("--ray", "ADDRESS"), ("--skip-similar", "D")])
def test_a_flag_that_took_the_only_input_as_its_value_says_so(
    tmp_path: Path, flag: str, value: str
) -> None:
    """Regression: ``vidcap caption --ray video.mp4 --out o`` said "the following arguments
    are required: INPUT", not that --ray had taken the video as its address."""
    result = run_main("caption", flag, "video.mp4", "--out", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidcap caption: error: {flag} took 'video.mp4' as its {value}, leaving no input; put "
        f"{flag} after the inputs or write {flag}={value} (see vidcap caption --help)"
    ]
    assert not (tmp_path / "o").exists()


def test_flags_before_the_command_are_never_abbreviated(tmp_path: Path) -> None:
    result = run_main("--verb", "caption", tmp_path, "--out", tmp_path / "o")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vidcap: error: unrecognized arguments: --verb; did you mean --verbose? "
        "(see vidcap --help)"  # (the flag it begins: --version does not begin with --verb)
    ]


@pytest.mark.slow  # over 3 s: in make test, not make test-fast
def test_one_progress_line_for_the_run_on_a_terminal(mixed_folder: Path, tmp_path: Path) -> None:
    """One bar for the run; a warning is printed on a line of its own above it.
    Regression: a warning (a video failed; a decoder's, for a cut-off file) was written
    onto the bar's line ("… 36 frames, 306.0 frames/s]vidcap: WARNING: …")."""
    folder = tmp_path / "in"
    shutil.copytree(mixed_folder, folder)
    spec = VideoSpec("cut", "libx264", ".ts", constant_rate(40, Fraction(10)))
    whole = write_video(tmp_path / "whole.ts", spec).read_bytes()
    (folder / "cut.ts").write_bytes(whole[: len(whole) // 2 // 188 * 188 + 100])
    _, text = run_on_terminal(
        [*CMD, "caption", str(folder), "--out", str(tmp_path / "out"), "--model", "tiny"]
    )
    assert "6/6" in text and "video" in text and "frames/s" in text  # videos done/total, rate
    assert text.count("vidcap:") >= 1  # the final line; no per-video bars
    warnings = [m.start() for m in re.finditer("vidcap: WARNING: ", text)]
    assert len(warnings) >= 3  # broken.mkv failed; cut.ts cut off, and frames lost
    assert all(at == 0 or text[at - 1] in "\r\n" for at in warnings), text


def test_an_out_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_main("caption", tmp_path, "--out", blocker / "sub", "--model", "tiny")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"vidcap: error: --out {blocker / 'sub'}: cannot create the folder (Not a directory)"
    ]


def test_an_infinite_fps_is_a_usage_error(mixed_folder: Path, tmp_path: Path) -> None:
    result = run_main("caption", mixed_folder / "web.webm", "--out", tmp_path, "--fps", "inf")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "vidcap: error: --fps must be a number > 0, got inf"
    ]


def test_a_relative_name_with_a_colon_is_captioned(
    mixed_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    # `vidcap caption *.mp4` among recorder files named by the clock: FFmpeg reads a
    # relative "10:30.mp4" as the protocol "10" unless it is given the absolute name.
    (tmp_path / "10:30.mp4").write_bytes((mixed_folder / "cam1" / "clip.mp4").read_bytes())
    monkeypatch.chdir(tmp_path)
    result = run_main("caption", "10:30.mp4", "--out", "o", "--model", "tiny", "--fps", "2")
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "o" / "10:30.jsonl")
    assert [row["time"] for row in rows] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert {row["video"] for row in rows} == {"10:30.mp4"}


def test_a_cut_off_video_is_done_and_named_damaged(tmp_path: Path) -> None:
    """A cut-off download is captioned as far as it decodes (exit 0), and the run says so."""
    spec = VideoSpec("cut", "libx264", ".mkv", constant_rate(100, Fraction(10)))
    whole = write_video(tmp_path / "whole.mkv", spec)
    cut = tmp_path / "in" / "cut.mkv"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    result = run_main("caption", cut, "--out", out, "--model", "tiny")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    [warned] = [i for i, line in enumerate(lines) if "could not be decoded" in line]
    assert lines[warned].startswith(f"vidcap: WARNING: {cut}: ")
    # (the decoder process's warning is shown by the run, in its place: before the end)
    assert (
        lines.index(
            f"vidcap: 1 of 1 videos done, 4 frames; outputs in {out}; "
            f"1 damaged, captioned as far as they decode (see {out}/summary.json)"
        )
        > warned
    )
    [video] = json.loads((out / "summary.json").read_text())["videos"]
    assert video["status"] == "done" and video["lost_frames"] > 40


@pytest.mark.heavy
def test_samples_that_may_show_decoding_damage_are_marked(tmp_path: Path) -> None:
    """A corrupt stream's frames with concealed errors are captioned and marked: the JSONL
    row says ``"damaged": true``, the Parquet row ``damaged`` true (false on the others),
    summary.json lists them and counts the video damaged."""
    (tmp_path / "in").mkdir()
    found = concealed_damage(tmp_path / "in" / "damaged.mp4")
    if found is None:
        pytest.skip("no damage tried was concealed without a packet failing")
    out = tmp_path / "out"
    result = run_main("caption", found[0], "--out", out, "--model", "tiny", "--every-n", "1",
                      "--format", "jsonl,parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(out / "damaged.jsonl")
    marked = [row["frame"] for row in rows if row.get("damaged")]
    assert 0 < len(marked) < len(rows) == 120
    assert all(row["damaged"] in (True, False) for row in rows)  # every row has the key
    # Parquet: the same marks (the column was missing: the flag silently dropped)
    table = pq.read_table(out / "parquet").to_pylist()
    assert [row["frame"] for row in table if row["damaged"]] == marked
    assert {row["damaged"] for row in table} == {True, False}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["damaged_frames"] == marked
    assert (summary["totals"]["damaged"], summary["totals"]["damaged_frames"]) == (1, len(marked))
    assert "1 damaged, captioned as far as they decode" in result.stderr
    page = (out / "index.html").read_text()  # the page counts it by the same rule
    assert '"damaged": 1,' in re.search(r'id="vidcap-manifest">(.*?)</script>', page, re.S)[1]


@pytest.mark.parametrize(
    ("lost", "marked", "damaged"),
    [(None, None, False), (0, [], False), (0, 0, False), (3, None, True), (None, [4], True),
     (0, 2, True), (-1, None, False), ("2", None, False), (True, None, False)],
)  # fmt: skip
def test_one_rule_says_a_video_is_damaged(lost: object, marked: object, damaged: bool) -> None:
    """A record's values (counts, lists of frame indices, None) and a folder's counts alike;
    what is no positive count is no damage (a garbled record)."""
    assert is_damaged(lost, marked) is damaged


@pytest.mark.heavy
def test_a_library_of_broken_files_shows_twenty_warnings_then_one_line(
    mixed_folder: Path, tmp_path: Path
) -> None:
    """Thousands of missing or broken files must not bury the run's own lines: the first
    SHOWN_WARNINGS failures each on a line, then one line saying the rest are not shown;
    every failure is still in summary.json, and the run still ends with its count."""
    from vidcap.commit import SHOWN_WARNINGS

    missing = [tmp_path / f"gone{i}.mp4" for i in range(SHOWN_WARNINGS + 5)]
    listed = tmp_path / "list.txt"
    listed.write_text("".join(f"{p}\n" for p in [mixed_folder / "web.webm", *missing]))
    result = run_main("caption", listed, "--out", tmp_path / "o", "--model", "tiny", "--no-thumbs")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len([line for line in lines if "WARNING: failed:" in line]) == SHOWN_WARNINGS
    assert len([line for line in lines if "not shown from here on" in line]) == 1
    assert lines[-1].endswith(f"{len(missing)} failed (see {tmp_path / 'o'}/summary.json)")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    errors = [v["error"] for v in summary["videos"] if v["status"] == "failed"]
    assert sorted(errors) == sorted(f"{p}: no such file" for p in missing)


def test_verbose_shows_every_warning(caplog: pytest.LogCaptureFixture) -> None:
    from vidcap.commit import WarningLines

    with caplog.at_level(logging.WARNING, logger="vidcap.commit"):
        lines = WarningLines(limit=2)
        for n in range(4):
            lines.show(f"w{n}")
    assert [r.getMessage()[:2] for r in caplog.records] == ["w0", "w1", "mo"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vidcap.commit"):
        lines = WarningLines(limit=2)
        for n in range(4):
            lines.show(f"w{n}")
    assert [r.getMessage() for r in caplog.records] == ["w0", "w1", "w2", "w3"]


@pytest.mark.slow
def test_an_output_folder_removed_mid_run_stops_it(tmp_path: Path) -> None:
    """Regression: ``rm -rf OUT`` during a run: the next video's outputs made the folder
    again, the run ended "14 of 15 videos done" and wrote a summary counting videos whose
    files were gone (and without the lock it had held). It stops at the next video, saying
    so, and writes nothing more there; a rerun captions everything. Regression too: the
    videos in flight made it again (their staged thumbnails, journals, failure records)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(10):
        spec = VideoSpec(f"v{i}", "libx264", ".mp4", constant_rate(40, Fraction(10)))
        write_video(src / f"v{i}.mp4", spec)
    args = [*CMD, "caption", str(src), "--out", str(out), "--model", "tiny", "--fps", "10"]
    run = subprocess.Popen(
        [*args, "--decode-workers", "1", "--quiet"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("v*.jsonl")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    while out.exists():  # as `rm -rf` does it: a file the run renames meanwhile is no failure
        shutil.rmtree(out, ignore_errors=True)
    _, errors = run.communicate(timeout=300)
    assert run.returncode == 1, errors
    assert errors.splitlines()[-1] == (
        f"vidcap: error: stopped: the output folder {out} was removed while the run wrote in "
        "it, with what the run had written there: rerun the same command to begin again"
    )
    # (nor its staged thumbnails, journals or failure records: the folder stays gone)
    assert not out.exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    again = run_main("caption", src, "--out", out, "--model", "tiny", "--fps", "10")  # (quicker)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["totals"]["done"] == 10


@pytest.mark.parametrize(
    ("argv", "argument"),
    [
        (["caption", "", "--out", "{tmp}/o"], "INPUT"),  # (captioned the working folder)
        (["caption", "{video}", "--out", ""], "--out"),  # (wrote into the working folder)
        (["caption", "{video}", "--out", "{tmp}/o", "--model", " "], "--model"),  # (exit 1)
        (["report", ""], "OUT"),  # (rewrote the working folder's page)
        (["search", "", "red"], "OUT"),
        (["export", "{tmp}", "--to", "fiftyone", ""], "DIR"),
        (["mask", "", "--query", "red"], "source"),
        (["clips", "{video}", "", "--out", "{tmp}/c"], "segments"),
        (["tiny-model", ""], "DIR"),
    ],
)
def test_an_empty_path_is_a_usage_error_not_the_working_folder(
    tmp_path: Path, monkeypatch, argv: list[str], argument: str
) -> None:
    """Regression: ``vidcap caption "$VIDEOS" --out o`` with the variable unset took ``""``
    for the working folder (``Path("")`` is ``.``) and captioned everything under it; an
    empty ``--out`` wrote there, ``vidcap report ""`` rewrote its page. An empty path is a
    usage error naming the argument, and nothing is read or written."""
    from tests.support.cli import run_main

    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(
        Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4", work / "v.mp4"
    )
    monkeypatch.chdir(work)
    values = {"{tmp}": str(tmp_path), "{video}": str(work / "v.mp4")}
    result = run_main(*[values.get(a, a.replace("{tmp}", str(tmp_path))) for a in argv])
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert f"error: argument {argument}: an empty " in line and "unset shell variable" in line
    assert sorted(p.name for p in work.iterdir()) == ["v.mp4"]  # nothing written here
    assert not (tmp_path / "o").exists()
