"""A run stopped part-way through a video keeps the captions the model already made of it
(``OUT/.vidcap/journal/<name>.jsonl``), and the rerun sends the model only the rest.

Real videos and the real tiny model. The stop is a Ctrl-C (``KeyboardInterrupt``) raised
in the run's own thread after a given number of captions came back, or a frame the backend
fails (a server gone bad): ``tests.support.stopping.Counting``, the real embedded backend,
counting what the model is sent. (A ``--ray`` rerun: ``tests/test_ray.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import fsspec
import pytest

from tests.support.stopping import Counting
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.cli import main
from vidcap.commit import Committer
from vidcap.engine import EngineSettings, run
from vidcap.jobs import RunSettings, VideoJob, VideoResult
from vidcap.journal import (
    JOURNAL_AFTER,
    JOURNAL_DIR,
    MAX_OPEN,
    Journal,
    header,
    journal_path,
    read_journal,
)
from vidcap.out_lock import holding
from vidcap.outputs import CaptionedFrame
from vidcap.records import STATE_DIR
from vidcap.remote_out import output_folder
from vidcap.settings import GenerationSettings, SamplingSettings

EVERY = SamplingSettings(fps=None, every_n=1)
FRAMES = 100
FORMATS = ("jsonl", "srt", "vtt")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = VideoSpec("long", "libx264", ".mp4", constant_rate(FRAMES, Fraction(10)))
    return write_video(tmp_path_factory.mktemp("in") / "long.mp4", spec)


def settings_for(out: Path, precision: str = "float32", **generation) -> RunSettings:
    """A run's settings; ``precision``: what its captioner computes in (the tiny model on a
    CPU: float32), as the CLI records it."""
    return RunSettings(
        out_dir=out, sampling=EVERY, generation=GenerationSettings(**generation), model="tiny",
        quiet=True, formats=FORMATS, precision=precision,
    )  # fmt: skip


def caption(video: Path, settings: RunSettings, backend: Counting):
    return run([str(video)], settings, lambda: backend, EngineSettings(decode_workers=1))


def stop(video: Path, settings: RunSettings, captioner, after: int) -> None:
    """A run of ``video`` stopped by Ctrl-C once ``after`` captions came back."""
    with pytest.raises(KeyboardInterrupt):
        caption(video, settings, Counting(captioner, stop_after=after))


def rerun(video: Path, settings: RunSettings, captioner) -> tuple[VideoResult, int]:
    """A run to the end: its result, and how many frames the model was sent."""
    backend = Counting(captioner)
    [result] = caption(video, settings, backend)
    return result, backend.sent


def journal_of(out: Path, name: str = "long") -> Path:
    return out / STATE_DIR / JOURNAL_DIR / f"{name}.jsonl"


def outputs(out: Path) -> dict[str, bytes]:
    return {fmt: (out / f"long.{fmt}").read_bytes() for fmt in FORMATS}


@pytest.fixture(scope="module")
def clean(
    tmp_path_factory: pytest.TempPathFactory, video: Path, tiny_captioner
) -> dict[str, bytes]:
    """The outputs of a run never stopped."""
    out = tmp_path_factory.mktemp("clean")
    [result] = caption(video, settings_for(out), Counting(tiny_captioner))
    assert result.status == "done" and result.kept_frames is None
    assert not journal_of(out).exists()  # (gone once the video's record is written)
    return outputs(out)


@pytest.mark.heavy
def test_a_rerun_sends_the_model_only_the_frames_an_interrupted_run_left(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes], capsys
) -> None:
    out = tmp_path / "out"
    stop(video, settings_for(out), tiny_captioner, 70)
    assert not (out / "long.jsonl").exists()
    lines = journal_of(out).read_text().splitlines()
    assert len(lines) == 1 + 70  # the header, then each caption back before the stop
    # The page and a search show no video stopped part-way, and say so (regression: "0
    # videos" alone, with 70 captions kept), as they say nothing once it is done.
    note = (
        f"vidcap: note: {out}: 1 video is not shown (long: 70 captions so far): a run "
        "stopped part-way through it; its captions are kept for the `vidcap caption` run "
        "that finishes it (the same command again)"
    )
    for command in (["report", str(out)], ["search", str(out), "a"]):
        assert main(command) == 0
        assert note in capsys.readouterr().err.splitlines()
    with holding(out):  # (as a run at it holds the folder)
        assert main(["search", str(out), "a"]) == 0
        assert (
            f"vidcap: note: {out}: 1 video is not shown (long: 70 captions so far): in "
            f"progress, by the run that holds the folder (pid {os.getpid()} on "
        ) in capsys.readouterr().err
    result, sent = rerun(video, settings_for(out), tiny_captioner)
    assert result.status == "done" and result.kept_frames == 70
    assert sent == FRAMES - 70
    assert outputs(out) == clean
    assert not journal_of(out).exists()
    assert main(["report", str(out)]) == 0 and "note" not in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["kept_frames"] == 70
    assert summary["videos"][0]["precision"] == "float32"
    # Regression (an outside-in round): the run's new frames, and its frames/s, counted
    # the kept captions (10,800 frames and 645 frames/s for 5,856 captioned at ~350)
    assert summary["run"]["frames"] == FRAMES - 70 and summary["totals"]["frames"] == FRAMES


@pytest.mark.heavy
def test_captions_kept_from_a_journal_of_another_precision_are_recorded_as_such(
    tmp_path: Path, video: Path, tiny_captioner, caplog: pytest.LogCaptureFixture
) -> None:
    """The precision is no part of a journal's match (nor of the settings key): a video
    begun in bfloat16 and finished in float32 keeps its captions, and its record names both,
    where it named only the last run's."""
    from vidcap.model import Captioner
    from vidcap.settings import ModelSettings

    half = Captioner.load(ModelSettings(model="tiny", device="cpu", batch_size=8, dtype="bfloat16"))
    assert half.precision == "bfloat16"
    out = tmp_path / "out"
    stop(video, settings_for(out, "bfloat16"), half, 70)
    assert json.loads(journal_of(out).read_text().splitlines()[0])["precision"] == "bfloat16"
    stop(video, settings_for(out), tiny_captioner, 10)  # on in float32: the header names both
    lines = journal_of(out).read_text().splitlines()
    assert json.loads(lines[0])["precision"] == "bfloat16,float32" and len(lines) == 1 + 80
    result, sent = rerun(video, settings_for(out, "bfloat16"), half)
    assert result.kept_frames == 80 and sent == FRAMES - 80
    assert result.precision == "bfloat16,float32"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"][0]["precision"] == "bfloat16,float32"
    assert (
        "long.mp4: 80 captions kept from an interrupted run were made in bfloat16,float32, the "
        "others in bfloat16: its record names both" in caplog.text
    )
    # a journal of the same precision, and one older than the field (unknown), go on as such
    out = tmp_path / "same"
    stop(video, settings_for(out), tiny_captioner, 70)
    result, _ = rerun(video, settings_for(out), tiny_captioner)
    assert result.kept_frames == 70 and result.precision == "float32"
    out = tmp_path / "old"
    stop(video, settings_for(out), tiny_captioner, 70)
    path = journal_of(out)
    head, rest = path.read_text().split("\n", 1)
    path.write_text(
        json.dumps({k: v for k, v in json.loads(head).items() if k != "precision"}) + "\n" + rest
    )
    result, _ = rerun(video, settings_for(out), tiny_captioner)
    assert result.kept_frames == 70 and result.precision is None


@pytest.mark.heavy
def test_a_short_video_gets_no_journal_unless_the_run_stops_in_it(
    tmp_path: Path, video: Path, tiny_captioner, monkeypatch
) -> None:
    opened: list[Path] = []

    class Noted(Journal):  # the real journal, noting each one begun
        def __init__(self, path: Path, *args) -> None:
            opened.append(path)
            super().__init__(path, *args)

    monkeypatch.setattr("vidcap.commit.Journal", Noted)
    few = SamplingSettings(fps=4.0)  # 60 samples: fewer than JOURNAL_AFTER
    assert few.fps * FRAMES / 10 < JOURNAL_AFTER
    [result] = caption(
        video, replace(settings_for(tmp_path / "few"), sampling=few), Counting(tiny_captioner)
    )
    assert result.status == "done" and opened == []  # (a short clip costs no file)
    caption(video, settings_for(tmp_path / "many"), Counting(tiny_captioner))
    assert opened == [journal_of(tmp_path / "many")]
    # a stop other than a kill writes the captions of the videos in flight all the same
    stop(video, replace(settings_for(tmp_path / "stop"), sampling=few), tiny_captioner, 10)
    assert len(journal_of(tmp_path / "stop").read_text().splitlines()) == 1 + 10


@pytest.mark.heavy
def test_a_journal_torn_by_a_kill_keeps_its_whole_lines(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes]
) -> None:
    out = tmp_path / "out"
    stop(video, settings_for(out), tiny_captioner, 75)
    path = journal_of(out)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 7])  # the last line cut mid-write
    stop(video, settings_for(out), tiny_captioner, 5)  # again: on from the 74 whole lines
    kept = read_journal(path, json.loads(whole.splitlines()[0]))
    assert kept is not None and sorted(kept.captions) == list(range(74 + 5))
    result, sent = rerun(video, settings_for(out), tiny_captioner)
    assert result.kept_frames == 79 and sent == FRAMES - 79
    assert outputs(out) == clean


@pytest.mark.heavy
def test_a_journal_of_other_settings_or_a_changed_file_is_not_used(
    tmp_path: Path, video: Path, tiny_captioner
) -> None:
    out = tmp_path / "out"
    stop(video, settings_for(out), tiny_captioner, 70)
    result, sent = rerun(
        video, settings_for(out, max_new_tokens=5), tiny_captioner
    )  # other settings
    assert result.status == "done" and result.kept_frames is None and sent == FRAMES

    stop(video, settings_for(out), tiny_captioner, 70)
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file changed
    try:
        result, sent = rerun(video, settings_for(out), tiny_captioner)
    finally:
        os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert result.kept_frames is None and sent == FRAMES


@pytest.mark.heavy
def test_a_journal_goes_on_after_its_file_moved_not_for_a_copy_or_a_touched_file(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes], caplog
) -> None:
    """A library moved or mounted elsewhere while a run was stopped part-way: the same size
    and modification time, nothing left at the old path. A copy (the old path still holds
    the file) or a moved file changed since is another video, as before."""
    caplog.set_level("INFO")

    def placed(path: Path, source: Path, move: bool) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        (os.rename if move else shutil.copy2)(source, path)
        return path

    out = tmp_path / "out"
    old = placed(tmp_path / "a" / "long.mp4", video, move=False)
    stop(old, settings_for(out), tiny_captioner, 70)
    new = placed(tmp_path / "moved $(x) 'q'" / "long.mp4", old, move=True)
    result, sent = rerun(new, settings_for(out), tiny_captioner)
    assert result.kept_frames == 70 and sent == FRAMES - 70
    assert f"of the same file at {old}, gone from there since" in caplog.text
    rows = [json.loads(line) for line in (out / "long.jsonl").read_text().splitlines()]
    assert {row["video"] for row in rows} == {str(new)}
    assert [{**row, "video": ""} for row in rows] == [
        {**json.loads(line), "video": ""} for line in clean["jsonl"].splitlines()
    ]  # (the captions an uninterrupted run makes, each in its place)

    # it goes on, with the header naming the new path, through a second stop
    out = tmp_path / "twice"
    stop(new, settings_for(out), tiny_captioner, 70)
    newer = placed(tmp_path / "c" / "long.mp4", new, move=True)
    stop(newer, settings_for(out), tiny_captioner, 10)
    head = json.loads(journal_of(out).read_text().splitlines()[0])
    assert head["identity"]["path"] == str(newer) and "moved" not in head
    result, sent = rerun(newer, settings_for(out), tiny_captioner)
    assert result.kept_frames == 80 and sent == FRAMES - 80

    out = tmp_path / "copy"
    stop(newer, settings_for(out), tiny_captioner, 70)
    copy = placed(tmp_path / "d" / "long.mp4", newer, move=False)
    result, sent = rerun(copy, settings_for(out), tiny_captioner)
    assert result.kept_frames is None and sent == FRAMES

    out = tmp_path / "touched"
    stop(newer, settings_for(out), tiny_captioner, 70)
    touched = placed(tmp_path / "e" / "long.mp4", newer, move=True)
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    result, sent = rerun(touched, settings_for(out), tiny_captioner)
    assert result.kept_frames is None and sent == FRAMES


@pytest.mark.heavy
def test_a_failed_video_keeps_its_journal_for_the_rerun(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes]
) -> None:
    out = tmp_path / "out"
    [failed] = caption(video, settings_for(out), Counting(tiny_captioner, fail_at=30))
    assert failed.status == "failed" and "no caption for frame 30" in failed.error
    result, sent = rerun(video, settings_for(out), tiny_captioner)
    assert result.kept_frames == 30 and sent == FRAMES - 30
    assert outputs(out) == clean


@pytest.mark.heavy
def test_a_journal_under_another_output_name_is_taken_over_by_its_file(
    tmp_path: Path, video: Path, tiny_captioner, caplog
) -> None:
    """A journal is named after its video's output name, which can change between runs: a
    stem another input now shares is hashed, and a hashed name is its path's (a moved file
    gets another). The same file's journal (or the same file moved) is found under its old
    name and renamed to the new one, where it was begun again."""
    caplog.set_level("INFO")
    other = tmp_path / "b" / "long.mp4"  # another file of the same stem
    other.parent.mkdir()
    write_video(other, VideoSpec("long", "libx264", ".mp4", constant_rate(20, Fraction(10))))

    out = tmp_path / "shared"
    stop(video, settings_for(out), tiny_captioner, 70)  # named "long"
    backend = Counting(tiny_captioner)
    settings = settings_for(out)
    results = run(
        [str(video), str(other)], settings, lambda: backend, EngineSettings(decode_workers=1)
    )
    mine = next(r for r in results if r.video == str(video))
    assert mine.name.startswith("long-") and mine.kept_frames == 70
    assert backend.sent == FRAMES - 70 + 20
    assert not list((out / STATE_DIR / JOURNAL_DIR).iterdir())  # (done: gone)

    out = tmp_path / "hashed"
    caption(other, settings_for(out), Counting(tiny_captioner))  # holds "long"
    (tmp_path / "a").mkdir()
    old = shutil.copy2(video, tmp_path / "a" / "long.mp4")
    stop(old, settings_for(out), tiny_captioner, 70)  # named by the hash of its path
    new = tmp_path / "c" / "long.mp4"
    new.parent.mkdir()
    os.rename(old, new)
    result, sent = rerun(new, settings_for(out), tiny_captioner)
    assert result.kept_frames == 70 and sent == FRAMES - 70
    assert f"of the same file at {old}, gone from there since" in caplog.text
    assert len({p.name for p in out.glob("long-*.jsonl")}) == 1  # (the new name's outputs)


@pytest.mark.heavy
def test_a_failed_video_whose_file_moved_keeps_its_name_and_its_journal(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes]
) -> None:
    """A failed video's record vouches for no outputs: once its file is gone, its name is
    free for a new input (here the same file, moved: its journal goes on), where a hashed
    name was given and the gone file's failed record stayed listed in ``summary.json``."""
    out = tmp_path / "out"
    (tmp_path / "a").mkdir()
    old = shutil.copy2(video, tmp_path / "a" / "long.mp4")
    [failed] = caption(old, settings_for(out), Counting(tiny_captioner, fail_at=30))
    assert failed.status == "failed" and failed.name == "long"
    (tmp_path / "b").mkdir()
    new = tmp_path / "b" / "long.mp4"
    os.rename(old, new)
    result, sent = rerun(new, settings_for(out), tiny_captioner)
    assert result.name == "long" and result.kept_frames == 30 and sent == FRAMES - 30
    summary = json.loads((out / "summary.json").read_text())
    assert [(v["name"], v["status"], v["video"]) for v in summary["videos"]] == [
        ("long", "done", str(new))
    ]
    assert sorted(p.name for p in out.glob("long*")) == [f"long.{fmt}" for fmt in FORMATS]
    # a failed video whose file is still there keeps its name: another file gets a hash
    (tmp_path / "c").mkdir()
    [failed] = caption(
        new, settings_for(out := tmp_path / "kept"), Counting(tiny_captioner, fail_at=30)
    )
    other = shutil.copy2(video, tmp_path / "c" / "long.mp4")
    result, _ = rerun(other, settings_for(out), tiny_captioner)
    assert failed.status == "failed" and result.name.startswith("long-")


def test_reading_a_journal_takes_only_its_own_header_and_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    head = header("k1", "", {"path": "/v.mp4", "size": 5, "mtime": 1.5})
    journal = Journal(path, head, None)
    for i in range(3):
        journal.add(CaptionedFrame(i, i / 3, f"caption \u2028 {i}\n"))
    journal.close()
    kept = read_journal(path, head)
    assert kept is not None and kept.captions == {
        i: (i / 3, f"caption \u2028 {i}\n") for i in range(3)
    }
    assert kept.end == path.stat().st_size
    assert read_journal(path, {**head, "key": "k2"}) is None
    assert read_journal(path, header("k1", "rev", head["identity"])) is None
    other = read_journal(path, header("k1", "", head["identity"], "bfloat16"))
    assert other is not None and other.captions == kept.captions  # (no part of the match)
    assert other.precision == ""
    assert read_journal(tmp_path / "none.jsonl", head) is None
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1] + b'{"frame": "x"}\n' + lines[2])  # not a row: stop
    assert list(read_journal(path, head).captions) == [0]
    path.write_bytes(b"\xff\xfe\n" + lines[1])
    assert read_journal(path, head) is None
    # going on with a journal cuts its torn tail before appending
    path.write_bytes(lines[0] + lines[1] + lines[2][:9])
    kept = read_journal(path, head)
    journal = Journal(path, head, kept)
    journal.add(CaptionedFrame(7, 2.0, "on"))
    journal.close()
    assert read_journal(path, head).captions == {0: (0.0, "caption \u2028 0\n"), 7: (2.0, "on")}


@pytest.mark.heavy
def test_an_interrupted_run_to_a_url_goes_on_from_the_uploaded_journal(
    tmp_path: Path, video: Path, tiny_captioner, clean: dict[str, bytes]
) -> None:
    """``--out`` an object store: the journal is uploaded with the records (at the end,
    also of an interrupted run), and a rerun from a fresh staging folder reads it."""
    url = f"memory://vidcap-{uuid.uuid4().hex}/run"
    fs, root = fsspec.core.url_to_fs(url)
    with pytest.raises(KeyboardInterrupt), output_folder(url) as local:
        caption(video, settings_for(local), Counting(tiny_captioner, stop_after=70))
    assert fs.exists(f"{root}/{STATE_DIR}/{JOURNAL_DIR}/long.jsonl")
    with output_folder(url) as local:
        result, sent = rerun(video, settings_for(local), tiny_captioner)
    assert result.kept_frames == 70 and sent == FRAMES - 70
    assert {fmt: fs.cat_file(f"{root}/long.{fmt}") for fmt in FORMATS} == clean
    assert not fs.exists(f"{root}/{STATE_DIR}/{JOURNAL_DIR}/long.jsonl")  # (done: gone there too)


@pytest.mark.heavy
def test_more_videos_in_flight_than_open_files_keep_every_caption(tmp_path: Path) -> None:
    """Captions of many long videos at once, interleaved (a Ray cluster's decode tasks):
    the run holds at most ``MAX_OPEN`` journal files open, and each journal gets all."""
    jobs = [
        VideoJob(i, f"/in/v{i}.mp4", f"v{i}", {"path": f"/in/v{i}.mp4", "size": i})
        for i in range(MAX_OPEN + 36)
    ]
    committer = Committer(settings_for(tmp_path), jobs)
    open_before = len(os.listdir("/proc/self/fd"))
    most_open = 0
    samples = JOURNAL_AFTER + 10
    for k in range(samples):
        for job in jobs:
            committer.frame(job.id, CaptionedFrame(k, k / 10, f"{job.name} at {k}"))
        most_open = max(most_open, len(os.listdir("/proc/self/fd")) - open_before)
    assert 0 < most_open <= MAX_OPEN
    for job in jobs:
        path = journal_path(tmp_path / STATE_DIR, job.name)
        kept = read_journal(path, header(committer.key, "", job.identity))
        assert kept is not None
        assert kept.captions == {k: (k / 10, f"{job.name} at {k}") for k in range(samples)}
    for job in jobs:
        committer.end(job.id, samples, samples / 10)
    results = committer.close(1.0)
    assert [r.status for r in results] == ["done"] * len(jobs)
    assert not list((tmp_path / STATE_DIR / JOURNAL_DIR).iterdir())


@pytest.mark.parametrize("planted", ["link to a file", "link to /dev/zero", "fifo"])
@pytest.mark.heavy
def test_a_journal_planted_in_the_folder_is_neither_written_through_nor_read(
    tmp_path: Path, video: Path, tiny_captioner, planted: str
) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("a user's file\n")
    path = journal_of(out)
    path.parent.mkdir(parents=True)
    if planted == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(victim if planted == "link to a file" else Path("/dev/zero"))
    # the run reads what holds the journal's name as it starts (passed over: no hang), then
    # journals its own captions in its place
    stop(video, settings_for(out), tiny_captioner, 70)
    assert victim.read_text() == "a user's file\n"
    assert path.is_file() and not path.is_symlink()
    assert len(path.read_text().splitlines()) == 1 + 70
