"""``OUT/index.html`` and its data files: what the page is given (the browser tests in
test_report_browser.py check what it does with it), written at the end of every run."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.folders import (
    HOSTILE_CAPTION,
    HOSTILE_NAME,
    FakeVideo,
    fake_thumbs,
    library,
    write_folder,
)
from tests.support.page import manifest_of, videos_of
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.backend import EmbeddedBackend
from vidcap.cli import main
from vidcap.engine import run
from vidcap.jobs import RunSettings
from vidcap.records import write_summary
from vidcap.report import PAGE, refresh_report, write_report
from vidcap.report.reuse import INDEX
from vidcap.settings import EngineSettings, SamplingSettings


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    videos = library()
    out = write_folder(tmp_path / "out", videos)
    fake_thumbs(out, "street", (f.index for f in videos[0].frames))
    (out / "beach.scenes.jsonl").write_text(
        json.dumps({"video": "beach.mp4", "scene": 0, "start": 0.0, "end": 1.5, "caption": "a dog"})
        + "\n"
        + json.dumps(
            {"video": "beach.mp4", "scene": 1, "start": 1.5, "end": 3.5, "caption": "waves"}
        )
        + "\n"
    )
    assert main(["mask", str(out / "street.jsonl"), "--query", "red car",
                 "--out", str(out / "street.mask.json")]) == 0  # fmt: skip
    return out


def test_every_video_is_on_the_page_with_what_the_folder_holds(folder: Path) -> None:
    stats = write_report(folder)
    manifest = manifest_of(folder)
    assert (manifest["videos"], manifest["done"], manifest["failed"]) == (6, 5, 1)
    assert manifest["frames"] == stats.frames == 10 + 7 + 4 + 5
    videos = videos_of(folder)
    assert sorted(videos) == sorted(v.name for v in library())
    street, beach = videos["street"], videos["beach"]
    assert street["captions"] == list(library()[0].captions)
    assert street["t"] == [float(i) for i in range(10)] and street["f"] == list(range(0, 100, 10))
    assert street["th"] == 1 and "th" not in beach  # thumbnails where they exist
    assert street["d"] == street["D"] == 10.0
    assert street["mk"]["label"] == "red car" and len(street["mk"]["seg"]) == 4
    assert beach["sc"] == [[0.0, 1.5, "a dog"], [1.5, 3.5, "waves"]]
    assert beach["t"][:3] == [0.0, 0.5, 1.0]
    assert videos["broken"]["s"] == "failed" and "moov" in videos["broken"]["e"]
    assert "t" not in videos["broken"] and "t" not in videos["empty"]
    assert videos[HOSTILE_NAME]["captions"][0] == HOSTILE_CAPTION
    assert street["vf"] == "street.vtt" and street["vt"].startswith("report/vtt/")
    vtt_script = (folder / street["vt"]).read_text()
    assert (
        json.loads(vtt_script[len("vidcapVtt(") : -3].split(",", 1)[1])
        == (folder / "street.vtt").read_text()
    )


def test_nothing_from_the_folder_is_markup_in_the_page(tmp_path: Path) -> None:
    out = write_folder(tmp_path / "<script>alert('folder')<script> \"q\"", library())
    write_report(out)
    page = (out / PAGE).read_text(encoding="utf-8")
    assert page.count("<script") == 2 and page.count("</script") == 2  # the page's own
    assert "<script>alert" not in page and HOSTILE_NAME not in page
    assert manifest_of(out)["title"] == "<script>alert('folder')<script> \"q\""
    for path in (out / "report").rglob("*.js"):
        assert path.read_text(encoding="ascii").isascii()  # data: JSON, \\u-escaped


def test_the_page_reaches_the_source_where_a_browser_can(tmp_path: Path) -> None:
    here = tmp_path / "videos" / "here is.mp4"
    here.parent.mkdir()
    here.write_bytes(b"not really a video")
    edited = tmp_path / "videos" / "edited.mp4"
    edited.write_bytes(b"not really a video")
    clipped = tmp_path / "videos" / "clipped.mp4"  # captioned with --max-frames: no SHA-256
    clipped.write_bytes(b"not really a video")
    out = write_folder(
        tmp_path / "out",
        [
            FakeVideo("local", ("a",), source=str(here)),
            FakeVideo("gone", ("a",), source=str(tmp_path / "videos" / "gone.mp4")),
            FakeVideo("web", ("a",), source="https://example.com/v/clip%201.mp4"),
            FakeVideo("bucket", ("a",), source="s3://bucket/clip.mp4"),
            FakeVideo("edited", ("a",), source=str(edited), digest=True),
            FakeVideo("clipped", ("a",), source=str(clipped)),
        ],
    )
    edited.write_bytes(b"not really a video, edited")  # since it was captioned
    clipped.write_bytes(b"not really a video, edited")
    write_report(out)
    videos = videos_of(out)
    assert videos["local"]["src"] == "../videos/here%20is.mp4" and "why" not in videos["local"]
    assert videos["edited"]["src"] == "../videos/edited.mp4"  # it plays, and the card says
    assert "the source is not the file captioned" in videos["edited"]["why"]
    assert "command run again brings it up to date" in videos["edited"]["why"]
    assert "captions the video again only if its bytes changed" in videos["edited"]["why"]
    # (a record without the file's digest cannot tell: it is captioned again, and says so)
    assert "captions the video again)" in videos["clipped"]["why"]
    assert "src" not in videos["gone"] and "not on this machine" in videos["gone"]["why"]
    assert videos["web"]["src"] == "https://example.com/v/clip%201.mp4"
    assert "src" not in videos["bucket"] and "s3://" in videos["bucket"]["why"]


def test_a_partial_folder_gives_a_page_of_the_finished_videos(tmp_path: Path) -> None:
    out = write_folder(tmp_path / "out", library()[:2])
    (out / "unfinished.jsonl.part").write_text(
        '{"video": "u", "frame": 0, "time": 0, "caption": "a"}\n'
    )
    (out / "unfinished.vtt.part").write_text("WEBVTT\n")
    (out / "summary.json").unlink()  # killed before the summary was rewritten
    write_report(out)
    assert sorted(videos_of(out)) == ["beach", "street"]


def test_report_brings_a_killed_runs_summary_up_to_its_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression (an outside-in round at scale): a run killed (SIGKILL) after 107 more
    videos left summary.json saying 100 until the next ``vidcap caption``, while search,
    export and the page saw 207. ``vidcap report`` now rewrites it from the records first,
    the last run's ``run`` kept; not while a run holds the folder (it writes it at its
    end)."""
    from vidcap.out_lock import holding

    out = write_folder(tmp_path / "out", library()[:2])
    killed = (out / "summary.json").read_text()  # as the killed run found it
    write_folder(out, library()[:4])
    (out / "summary.json").write_text(killed)
    with holding(out):  # a run in the folder: its summary is its own to write
        assert main(["report", str(out)]) == 0
    assert (out / "summary.json").read_text() == killed
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["videos"] == 4 and len(summary["videos"]) == 4
    assert summary["run"] == json.loads(killed)["run"]
    assert manifest_of(out)["videos"] == 4
    again = (out / "summary.json").stat().st_mtime_ns
    assert main(["report", str(out)]) == 0  # (current: not rewritten)
    assert (out / "summary.json").stat().st_mtime_ns == again


def test_a_data_file_holds_a_bounded_number_of_frames(folder: Path, monkeypatch) -> None:
    """Regression (an outside-in round at scale): data files were cut by videos alone, so
    250 three-hour videos sampled every second made one of 2.7 million frames, parsed in
    one task of the page. A data file now ends before it would pass FRAMES_PER_SHARD."""
    import vidcap.report

    write_report(folder)
    videos = videos_of(folder)
    counts = sorted(len(v.get("t", [])) for v in videos.values())
    monkeypatch.setattr(vidcap.report, "VIDEOS_PER_SHARD", 10_000)  # (no cut by names)
    monkeypatch.setattr(vidcap.report, "FRAMES_PER_SHARD", counts[-1])
    stats = write_report(folder)
    assert 1 < stats.shards < len(videos)
    monkeypatch.setattr(vidcap.report, "FRAMES_PER_SHARD", 1)  # (a video over it: alone)
    assert write_report(folder).shards == len(videos)
    times = {name: video.get("t") for name, video in videos.items()}
    assert {name: video.get("t") for name, video in videos_of(folder).items()} == times


def test_rewriting_drops_data_files_of_videos_gone(folder: Path, monkeypatch) -> None:
    import vidcap.report

    monkeypatch.setattr(vidcap.report, "VIDEOS_PER_SHARD", 2)
    before = write_report(folder).shards
    assert before >= 3  # 6 videos in runs of about 2
    vtts = {p.name for p in (folder / "report" / "vtt").iterdir()}
    written = {p: p.stat().st_mtime_ns for p in [folder / PAGE, *(folder / "report").rglob("*")]}
    again = write_report(folder)
    assert again.vtt_written == 0  # the same folder: the same page, no file rewritten
    assert {p: p.stat().st_mtime_ns for p in written} == written
    for name in ("street", "beach", "empty", HOSTILE_NAME):
        (folder / ".vidcap" / f"{name}.json").unlink()
    after = write_report(folder)
    assert after.shards < before
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.glob("report/data-*.js"))
    assert on_disk == sorted(after.files)  # (files named by fingerprint: any order)
    assert len(list((folder / "report" / "vtt").iterdir())) < len(vtts)
    assert sorted(videos_of(folder)) == ["broken", "café Straße"]


def test_the_page_from_a_runs_summary_is_the_page_from_the_records(folder: Path) -> None:
    # The end of a run hands refresh_report the summary.json it has just written, rather
    # than reading every record of the folder a second time: the same page, byte for byte.
    summary = write_summary(folder, [], 0, 1.0)
    refresh_report(folder, summary)
    files = [folder / PAGE, *(p for p in (folder / "report").rglob("*") if p.is_file())]
    from_summary = {p: p.read_bytes() for p in files}
    for path in files:
        path.unlink()
    write_report(folder)
    assert {p: p.read_bytes() for p in from_summary} == from_summary
    assert len(videos_of(folder)) == len(summary["videos"]) == 6


def test_summary_json_holds_the_totals_first_then_one_video_a_line(folder: Path) -> None:
    summary = write_summary(folder, [], 0, 1.0)
    text = (folder / "summary.json").read_text(encoding="utf-8")
    assert list(json.loads(text)) == ["totals", "run", "records_read_ns", "settings", "videos"]
    assert json.loads(text) == summary
    lines = text.splitlines()
    start = lines.index('  "videos": [') + 1
    rows = [json.loads(line.strip().removesuffix(",")) for line in lines[start:-2]]
    assert rows == summary["videos"] and lines[-2:] == ["  ]", "}"]


def page_files(out: Path) -> dict[str, bytes]:
    files = [out / PAGE, *(p for p in (out / "report").rglob("*") if p.is_file())]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files if p.name != INDEX}


def rewrite(path: Path, text: str) -> None:
    """In place, as an editor would (same inode), and the same size where ``text`` is."""
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write(text)
        handle.truncate()


def test_an_unchanged_shard_is_kept_and_every_page_equals_one_from_scratch(
    folder: Path, monkeypatch
) -> None:
    # The end of a run rewrites only the shards whose videos changed. After each kind of
    # change to the folder the page must be exactly the page written from scratch.
    import vidcap.report

    monkeypatch.setattr(vidcap.report, "VIDEOS_PER_SHARD", 2)
    videos = folder.parent / "videos"
    videos.mkdir()

    def street_caption(text: str) -> None:
        path = folder / "street.jsonl"
        old = path.read_text(encoding="utf-8")
        rewrite(path, old.replace("a red car parked", text))

    def add_video() -> None:
        write_folder(folder, [FakeVideo("aardvark", ("an aardvark",))])

    # (label, change, how many data files it may rewrite: one video's changes, its run)
    changes = [
        ("nothing", lambda: None, {0}),
        ("a caption, same size", lambda: street_caption("a red van parked"), {1}),
        ("a caption, longer", lambda: street_caption("a red car parked here"), {1}),
        ("thumbnails", lambda: fake_thumbs(folder, "beach", range(0, 70, 10)), {1}),
        ("scenes", lambda: (folder / "empty.scenes.jsonl").write_text(
            json.dumps({"video": "empty.mp4", "scene": 0, "start": 0.0, "end": 1.0,
                        "caption": "x"}) + "\n"), {1}),
        ("a mask report gone", lambda: (folder / "street.mask.json").unlink(), {1}),
        ("the source appears", lambda: (videos / "beach.mp4").write_bytes(b"x"), {1}),
        ("the source goes", lambda: (videos / "beach.mp4").unlink(), {1}),
        ("a .vtt gone", lambda: (folder / "beach.vtt").unlink(), {1}),
        ("a record", lambda: rewrite(folder / ".vidcap" / "broken.json", (
            folder / ".vidcap" / "broken.json").read_text().replace("moov", "MOOV")), {1}),
        # first by name: its run only (two, where its name ends a run and splits one)
        ("a new video, first by name", add_video, {1, 2}),
        ("a data file deleted", lambda: (folder / manifest_of(folder)["shards"][1]).unlink(),
         {1}),
        ("the index garbled", lambda: (folder / "report" / INDEX).write_text("{"), None),
    ]  # fmt: skip
    assert write_report(folder).shards >= 3  # 6 videos in runs of about 2
    for label, change, rewritten in changes:
        change()
        stats = write_report(folder)
        incremental = page_files(folder)
        assert stats.shards - stats.reused in (rewritten or {stats.shards}), label
        for path in [folder / PAGE, *(folder / "report").glob("data-*.js")]:
            path.unlink()
        write_report(folder)
        assert page_files(folder) == incremental, label


def test_report_command(folder: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / PAGE)
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_page_is_not_rewritten_over_placeholders(folder: Path, caplog) -> None:
    write_report(folder)
    before = (folder / PAGE).read_text()
    (folder / "street.jsonl").write_text("")  # as an --out URL's staging folder holds it
    with caplog.at_level(logging.WARNING):
        refresh_report(folder)
    assert "not rewritten" in caplog.text and (folder / PAGE).read_text() == before


def test_a_page_is_not_rewritten_over_parquet_placeholders(tmp_path: Path, caplog) -> None:
    out = write_folder(tmp_path / "out", library()[:1], formats=())
    (out / "parquet").mkdir()
    (out / "parquet" / "part-x-00000.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        refresh_report(out)
    assert "not rewritten" in caplog.text and not (out / PAGE).exists()


def test_a_failure_to_write_the_page_is_a_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        refresh_report(tmp_path / "not a folder")
    assert "not written" in caplog.text


def clip(folder: Path, name: str, frames: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = VideoSpec(name, "libx264", ".mp4", constant_rate(frames, Fraction(10)))
    return write_video(folder / f"{name}.mp4", spec)


def settings_for(out: Path) -> RunSettings:
    every = SamplingSettings(fps=None, every_n=1)
    return RunSettings(out_dir=out, sampling=every, model="tiny", quiet=True)


@pytest.mark.heavy
def test_every_run_leaves_the_page(tmp_path: Path, tiny_captioner) -> None:
    out = tmp_path / "out"
    first = clip(tmp_path / "in", "first", 4)
    run([str(first)], settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    assert sorted(videos_of(out)) == ["first"]
    second = clip(tmp_path / "in", "second", 3)
    run([str(first), str(second)], settings_for(out), lambda: EmbeddedBackend(tiny_captioner))
    videos = videos_of(out)
    assert sorted(videos) == ["first", "second"] and len(videos["second"]["t"]) == 3
    assert videos["first"]["src"] == "../in/first.mp4"
    (out / PAGE).unlink()
    run([str(first)], settings_for(out), lambda: pytest.fail("nothing to do"))
    assert (out / PAGE).is_file()  # a run with nothing to do rewrites it too


class Interrupting(EmbeddedBackend):
    """The real backend, until Ctrl-C arrives during its second batch."""

    calls = 0

    def _run(self, images, settings):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return super()._run(images, settings)


def test_an_interrupted_run_leaves_a_page_of_the_finished_videos(
    tmp_path: Path, tiny_captioner
) -> None:
    out = tmp_path / "out"
    short, long = clip(tmp_path / "in", "short", 3), clip(tmp_path / "in", "long", 40)
    with pytest.raises(KeyboardInterrupt):
        run(
            [str(short), str(long)],
            settings_for(out),
            lambda: Interrupting(tiny_captioner),
            EngineSettings(decode_workers=1),  # in order: short's frames, then long's
        )
    assert sorted(videos_of(out)) == ["short"]
    assert manifest_of(out)["videos"] == 1
