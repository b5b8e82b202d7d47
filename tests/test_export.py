"""``vidcap export --to fiftyone``: a FiftyOneVideoLabelsDataset.

The schema test always runs, against the format as FiftyOne documents and writes it
(``fiftyone.types.FiftyOneVideoLabelsDataset``: ``manifest.json`` indexing ETA VideoLabels
files). The import test reads the export back with FiftyOne's own importer, where FiftyOne
is importable here or in the interpreter named by ``VIDCAP_FIFTYONE_PYTHON`` (FiftyOne is
heavy and not a dependency: ``python3 -m venv /tmp/fo && /tmp/fo/bin/pip install fiftyone``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.folders import HOSTILE_CAPTION, HOSTILE_NAME, FakeVideo, library, write_folder
from vidcap.cli import main
from vidcap.export import export_fiftyone, frame_support
from vidcap.outputs import CaptionedFrame

SUBJECT = Path(__file__).resolve().parents[1] / "sample_videos" / "subject.mp4"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    # frames that may show decoding damage: street's 10, the hostile one's 30 (no caption)
    damaged = {"street": (10,), HOSTILE_NAME: (30,)}
    videos = [replace(v, damaged=damaged.get(v.name, ())) for v in library()]
    out = write_folder(tmp_path / "out", videos)
    (out / "beach.scenes.jsonl").write_text(
        json.dumps({"scene": 0, "start": 0.0, "end": 1.5, "caption": "a dog on a beach"}) + "\n"
        + json.dumps({"scene": 1, "start": 1.5, "end": 3.5, "caption": "waves"}) + "\n"
    )  # fmt: skip
    return out


def labels(target: Path) -> dict[str, dict]:
    manifest = json.loads((target / "manifest.json").read_text())
    return {
        Path(entry["labels"]).stem: json.loads((target / entry["labels"]).read_text())
        for entry in manifest["index"]
    }


def test_the_export_follows_fiftyones_video_labels_schema(folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "fo"
    stats = export_fiftyone(folder, target, queries=["red car"])
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["type"] == "eta.core.datasets.LabeledVideoDataset"
    assert isinstance(manifest["description"], str)
    assert stats.skipped == 1 and stats.videos == 5  # the failed video is left out
    for entry in manifest["index"]:
        assert set(entry) == {"data", "labels"} and Path(entry["data"]).is_absolute()
        assert entry["labels"].startswith("labels/") and (target / entry["labels"]).is_file()
    docs = labels(target)
    assert sorted(docs) == sorted(v.name for v in library() if v.error is None)
    for doc in docs.values():
        assert set(doc) == {"frames", "events"} and set(doc["events"]) == {"events"}
        for key, frame in doc["frames"].items():
            assert key == str(frame["frame_number"]) and frame["frame_number"] >= 1
            attrs = {a["name"]: a for a in frame["attrs"]["attrs"]}
            assert {a["type"] for a in attrs.values()} == {"eta.core.data.CategoricalAttribute"}
            assert attrs["caption"]["value"].strip() if "caption" in attrs else "damaged" in attrs
            assert set(attrs) <= {"caption", "damaged"}
        for event in doc["events"]["events"]:
            assert event["type"] == "eta.core.events.VideoEvent"
            assert event["name"] in ("scenes", "segments") and isinstance(event["label"], str)
            first, last = map(
                int, re.fullmatch(r"(\d+)-(\d+)", event["support"]["ranges"]).groups()
            )
            assert 1 <= first <= last
            names = {a["name"]: a for a in event["attrs"]["attrs"]}
            found_by = names.pop("found_by", None)  # (a segment's: the report, or a query)
            assert {a["type"] for a in names.values()} == {"eta.core.data.NumericAttribute"}
            assert names["start"]["value"] < names["end"]["value"]
            if event["name"] == "segments":
                assert found_by == {
                    "type": "eta.core.data.CategoricalAttribute",
                    "name": "found_by",
                    "value": "query",
                }
            else:
                assert found_by is None
    street = docs["street"]
    assert street["frames"]["1"]["attrs"]["attrs"] == [
        {
            "type": "eta.core.data.CategoricalAttribute",
            "name": "caption",
            "value": "a red car on a street",
        }
    ]
    damaged = {"type": "eta.core.data.CategoricalAttribute", "name": "damaged", "value": "damaged"}
    assert street["frames"]["11"]["attrs"]["attrs"][1:] == [damaged]  # (after its caption)
    assert (
        sum(damaged in f["attrs"]["attrs"] for d in docs.values() for f in d["frames"].values())
        == 2
    )
    assert [e["support"]["ranges"] for e in street["events"]["events"]] == [
        "1-20", "41-50", "61-80", "91-100",  # [0, 2) s at 10 fps: frames 1-20; to the end: 100
    ]  # fmt: skip
    beach = docs["beach"]["events"]["events"]
    assert [
        (e["name"], e["label"], e["support"]["ranges"]) for e in beach if e["name"] == "scenes"
    ] == [
        ("scenes", "a dog on a beach", "1-15"),
        ("scenes", "waves", "16-35"),
    ]
    hostile = docs[HOSTILE_NAME]["frames"]
    assert hostile["1"]["attrs"]["attrs"][0]["value"] == HOSTILE_CAPTION
    assert hostile["31"]["attrs"]["attrs"] == [damaged]  # an empty caption is no label
    assert docs["empty"] == {"frames": {}, "events": {"events": []}}


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 0.3, (1, 3)),  # up to the frame shown at 0.3 s
        (0.1, 0.3, (2, 3)),  # not a sampled time: placed by the frame rate
        (0.3, 0.9, (4, 9)),
        (0.6, 0.6, (7, 7)),
    ],
)
def test_time_ranges_become_frame_ranges(start: float, end: float, expected: tuple) -> None:
    frames = [CaptionedFrame(i * 3, round(i * 0.3, 6), "x") for i in range(4)]  # 10 fps, every 3rd
    assert frame_support(frames, start, end) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (5.0, 6.5, (1, 15)),  # (placed by the rate from 0 s: 1-65)
        (4.5, 5.2, (1, 2)),  # before the first sample: back from it, never below 1
        (7.0, 9.5, (21, 45)),  # past the last sample: on from it by the rate
    ],
)
def test_times_of_a_late_start_become_its_frames(start: float, end: float, expected) -> None:
    """Regression: a late-start MP4's times (its first frame at 5 s) were placed as if the
    video started at 0 s, far past its last frame."""
    frames = [CaptionedFrame(i * 10, 5.0 + i, "x") for i in range(4)]  # 10 fps, one a second
    assert frame_support(frames, start, end) == expected


def test_moments_of_whole_shots_are_placed_by_the_shots_frames() -> None:
    """Regression: in a ``--scenes`` folder (one sample a shot) a moment of whole shots was
    placed by the rate its samples show: on a variable-rate video (shots of 5, 25 and 10
    frames a second) 1-21, 22-51, 52-85 for 1-10, 11-60, 61-79 (past its last frame); with
    one sample (no rate) 20-21 for 1-40. The shots' bounds are known frames."""
    samples = [CaptionedFrame(5, 1.0, "red"), CaptionedFrame(35, 3.0, "blue"),
               CaptionedFrame(69, 4.9, "green")]  # fmt: skip
    bounds = [(0.0, 0), (2.0, 10), (4.0, 60), (5.9, 79)]
    spans = [(0.0, 2.0), (2.0, 4.0), (4.0, 5.9)]
    assert [frame_support(samples, a, b, bounds) for a, b in spans] == [(1, 10), (11, 60), (61, 79)]
    one = [CaptionedFrame(20, 2.0, "red")]
    assert frame_support(one, 0.0, 4.0, [(0.0, 0), (4.0, 40)]) == (1, 40)


def test_copy_media_and_rerun_replace_an_earlier_export(tmp_path: Path, capsys, caplog) -> None:
    out = write_folder(
        tmp_path / "out",
        [
            FakeVideo("subject", ("a red circle",) * 5, source=str(SUBJECT)),
            FakeVideo("gone", ("a",)),
        ],
    )
    target = tmp_path / "fo"
    # ("gone", whose source is not here, cannot be copied: left out, exit 1)
    assert main(["export", str(out), "--to", "fiftyone", str(target), "--copy-media"]) == 1
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["index"] == [{"data": "data/subject.mp4", "labels": "labels/subject.json"}]
    assert (target / "data" / "subject.mp4").read_bytes() == SUBJECT.read_bytes()
    assert "1 video left out" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        assert main(["export", str(out), "--to", "fiftyone", str(target)]) == 0  # replaced
    data = [e["data"] for e in json.loads((target / "manifest.json").read_text())["index"]]
    assert data == [str(tmp_path / "videos" / "gone.mp4"), str(SUBJECT)]
    # Regressions: the source not here was exported without a word; the earlier export's
    # copy stayed in data/, indexed by nothing.
    gone = tmp_path / "videos" / "gone.mp4"
    assert f"gone: exported, but its source is not a file here: {gone}" in caplog.text
    assert not (target / "data").exists()


def test_copy_media_copies_only_the_file_captioned(tmp_path: Path, caplog) -> None:
    """A record from elsewhere may name any file as its source (a key, a password store),
    and a source changed since it was captioned is not the video its captions describe:
    neither is copied into the export."""
    secret = tmp_path / "id_ed25519"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(SUBJECT.read_bytes())
    out = write_folder(
        tmp_path / "out",
        [
            FakeVideo("subject", ("a red circle",) * 5, source=str(SUBJECT)),
            FakeVideo("edited", ("a red circle",) * 5, source=str(edited)),
        ],
    )
    with open(edited, "ab") as handle:
        handle.write(b"\0")  # changed since it was captioned
    record = json.loads((out / ".vidcap" / "subject.json").read_text())
    record["identity"] = {"path": str(secret), "size": 1, "mtime_ns": 1}  # a planted record
    record["result"]["video"] = str(secret)
    (out / ".vidcap" / "key.json").write_text(
        json.dumps(record | {"result": record["result"] | {"name": "key"}})
    )
    (out / "key.jsonl").write_text((out / "subject.jsonl").read_text())
    (out / "summary.json").unlink()
    target = tmp_path / "fo"
    assert main(["export", str(out), "--to", "fiftyone", str(target), "--copy-media"]) == 1
    assert sorted(p.name for p in (target / "data").iterdir()) == ["subject.mp4"]
    assert f"key: not exported: {secret} is not the file captioned" in caplog.text
    assert f"edited: not exported: {edited} is not the file captioned" in caplog.text
    caplog.clear()  # without copies: each exported where it is, and said
    assert main(["export", str(out), "--to", "fiftyone", str(tmp_path / "in-place")]) == 0
    index = json.loads((tmp_path / "in-place" / "manifest.json").read_text())["index"]
    assert sorted(item["data"] for item in index) == sorted(map(str, (SUBJECT, secret, edited)))
    assert caplog.text.count("is not the file captioned") == 2
    assert f"edited: {edited} is not the file captioned" in caplog.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["{full}"], "not empty and holds no earlier export"),
        (["{target}", "--query", "(", "--regex"], "bad --regex query"),
        (["{target}", "--query", " "], "--query must not be empty"),
        (["{target}", "--merge-gap", "2"], "--merge-gap applies to --query"),  # (was ignored)
        (["{target}", "--regex", "--min-duration", "1"], "--regex and --min-duration apply"),
    ],
)
def test_usage_errors(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    out = write_folder(tmp_path / "out", library()[:1])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    names = {"target": tmp_path / "fo", "full": tmp_path / "full"}
    argv = ["export", str(out), "--to", "fiftyone", *(a.format(**names) for a in extra)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_an_unknown_format_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(tmp_path), "--to", "labelstudio", str(tmp_path / "x")])
    assert exit_.value.code == 2 and "choose from 'fiftyone'" in capsys.readouterr().err


def fiftyone_python() -> str | None:
    if importlib.util.find_spec("fiftyone") is not None:
        return sys.executable
    named = os.environ.get("VIDCAP_FIFTYONE_PYTHON")
    return named if named and Path(named).is_file() else None


IMPORT_SCRIPT = """
import json, sys
import fiftyone.utils.data as foud
importer = foud.FiftyOneVideoLabelsDatasetImporter(sys.argv[1])
importer.setup()
samples = []
for path, metadata, label, frames in importer:
    samples.append({
        "path": path,
        "events": {field: [[d.label, d.support, d.start, d.end,
                            d.get_field("damaged") if d.has_field("damaged") else None]
                           for d in value.detections]
                   for field, value in (label or {}).items()},
        "captions": {str(n): f["caption"].label for n, f in (frames or {}).items()
                     if f.get("caption") is not None},
        "damaged": {str(n): f["damaged"].label for n, f in (frames or {}).items()
                    if f.get("damaged") is not None},
    })
dataset = None
try:  # the whole import, where FiftyOne's database can start here
    import fiftyone as fo
    ds = fo.Dataset.from_dir(sys.argv[1], dataset_type=fo.types.FiftyOneVideoLabelsDataset)
    dataset = {"samples": len(ds), "frames": ds.count("frames"),
               "segments": ds.count("segments.detections")}
    ds.delete()
except Exception as exc:  # no database (MongoDB) on this machine
    dataset = repr(exc)[:300]
print(json.dumps({"samples": samples, "dataset": dataset}))
"""


@pytest.mark.slow
def test_fiftyone_imports_the_export(folder: Path, tmp_path: Path) -> None:
    python = fiftyone_python()
    if python is None:
        pytest.skip(
            "fiftyone is not installed here (set VIDCAP_FIFTYONE_PYTHON to a Python that has it)"
        )
    target = tmp_path / "fo"
    export_fiftyone(folder, target, queries=["red car"])
    done = subprocess.run(
        [python, "-c", IMPORT_SCRIPT, str(target)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "FIFTYONE_DO_NOT_TRACK": "true"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    samples = {Path(s["path"]).stem: s for s in result["samples"]}
    assert sorted(samples) == sorted(v.name for v in library() if v.error is None)
    street = samples["street"]
    assert street["captions"]["1"] == "a red car on a street" and len(street["captions"]) == 10
    assert street["damaged"] == {"11": "damaged"}
    assert samples[HOSTILE_NAME]["damaged"] == {"31": "damaged"}
    assert "31" not in samples[HOSTILE_NAME]["captions"]
    # the first moment holds frame 10, which may show damage: the count is the attribute
    assert street["events"]["segments"][0] == ["red car", [1, 20], 0.0, 2.0, 1]
    assert [e[4] for e in street["events"]["segments"][1:]] == [None] * 3
    assert [e[:2] for e in samples["beach"]["events"]["scenes"]] == [
        ["a dog on a beach", [1, 15]], ["waves", [16, 35]],
    ]  # fmt: skip
    assert samples[HOSTILE_NAME]["captions"]["1"] == HOSTILE_CAPTION
    if isinstance(result["dataset"], dict):  # FiftyOne's database ran: the whole import
        assert result["dataset"]["samples"] == 5


def test_labels_are_synced_once_not_one_by_one(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (an outside-in round at scale): each video's labels file was fsynced on
    its own, half an export's time at 10,000 videos; they are written, then synced in one
    go before the manifest that names them (which is fsynced, as every output is)."""
    import os

    calls: list[str] = []
    real_fsync, real_sync = os.fsync, os.sync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "sync", lambda: calls.append("sync") or real_sync())
    stats = export_fiftyone(folder, tmp_path / "fo", queries=[])
    assert stats.videos == 5 and len(labels(tmp_path / "fo")) == 5
    assert calls.count("sync") == 1 and calls.count("fsync") <= 2, calls  # (the manifest's)
    assert calls.index("sync") < len(calls) - 1  # (before the manifest's own)


def test_each_video_left_out_is_accounted_for(tmp_path: Path) -> None:
    """Regression: a folder captioned with ``--format srt`` only (no JSONL, no Parquet)
    exported nothing and said "1 video left out (failed, or no local source; see the
    warnings)" with no warning, and neither reason true. Each video left out is now named
    with its reason, or counted as failed, in the last line."""
    from tests.support.cli import run_main

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    out = tmp_path / "out"
    args = ["--out", out, "--model", "tiny", "--quiet", "--max-frames", "2"]
    run_main("caption", SUBJECT, broken, *args, "--format", "srt")
    result = run_main("export", out, "--to", "fiftyone", tmp_path / "fo")
    assert result.returncode == 1, result.stderr  # (was 0: a dataset of nothing, and no sign)
    assert result.stderr.splitlines() == [
        "vidcap: WARNING: subject: not exported: its captions are in neither subject.jsonl "
        "nor Parquet",
        "vidcap: 0 videos, 0 captioned frames, 0 temporal detections exported; 2 videos left "
        "out (1 failed (summary.json says why), 1 as the warnings above say)",
    ]


def test_a_variable_rate_videos_last_frame_is_in_a_segment_to_its_end(tmp_path: Path) -> None:
    """Regression: a segment to the end of a variable-rate video (10 frames 0.05 s apart,
    then 30 frames 0.2 s apart; the muxer gives the last frame one nominal 0.05 s) left
    out its last frame: "1-39" for 40 frames. Its end (6.35 s) was placed 0.85 s × the
    rate after the last sample (5.5 s, frame 36): 4.25 frames, rounded down; every frame
    that begins before the end is now covered."""
    from fractions import Fraction

    from tests.support.cli import run_main
    from tests.support.videos import VideoSpec, write_video

    times = tuple([i * 0.05 for i in range(10)] + [0.5 + i * 0.2 for i in range(30)])
    spec = VideoSpec("vfr", "libx264", ".mp4", times, rate=Fraction(20))
    video = write_video(tmp_path / "vfr.mp4", spec)
    out, target = tmp_path / "out", tmp_path / "fo"
    run_main("caption", video, "--out", out, "--model", "tiny", "--quiet", "--every-n", "5")
    result = run_main("export", out, "--to", "fiftyone", target, "--regex", "--query", ".")
    assert result.returncode == 0, result.stderr
    events = labels(target)["vfr"]["events"]["events"]
    assert [(e["support"]["ranges"], e["attrs"]["attrs"][1]["value"]) for e in events] == [
        (f"1-{len(times)}", pytest.approx(times[-1] + 0.05))
    ]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 2.35, (1, 20)),  # to the end: the last frame (2.3 s) lasts 0.05 s, not 0.2
        (0.0, 2.4, (1, 20)),
        (0.5, 1.3, (11, 14)),  # in the slow stretch: by its own rate, not the fast one's
        (0.0, 0.4, (1, 8)),  # in the fast stretch: 0.0 … 0.35 s
    ],
)
def test_a_variable_rate_is_placed_by_its_own_stretch(start: float, end: float, expected) -> None:
    """Frames 0.05 s apart to 0.45 s (0-9), then 0.2 s apart (10-19, to 2.3 s), sampled
    every 5th: a time is placed by the rate of the samples around it, and an end counts
    every frame that begins before it."""
    times = [i * 0.05 for i in range(10)] + [0.5 + i * 0.2 for i in range(10)]
    frames = [CaptionedFrame(i, round(times[i], 6), "x") for i in range(0, 20, 5)]
    assert frame_support(frames, start, end) == expected


def test_a_moment_the_report_and_a_query_both_find_is_told_apart(folder: Path, tmp_path: Path):
    """Regression: a `vidcap mask` report and an export ``--query`` of the same words gave
    each moment twice among the ``segments``, the two alike: a count in FiftyOne doubled.
    Each segment now says what found it (``found_by``). A failed video alone (the folder
    has one) leaves the exit status 0."""
    mask = ["mask", str(folder / "street.jsonl"), "--query", "red car"]
    assert main([*mask, "--out", str(folder / "street.mask.json")]) == 0
    target = tmp_path / "fo"
    assert main(["export", str(folder), "--to", "fiftyone", str(target), "--query", "red car"]) == 0
    segments = [e for e in labels(target)["street"]["events"]["events"] if e["name"] == "segments"]
    by = {}
    for event in segments:
        [found_by] = [a["value"] for a in event["attrs"]["attrs"] if a["name"] == "found_by"]
        by.setdefault(found_by, []).append(event["support"]["ranges"])
    assert set(by) == {"mask", "query"} and by["mask"] == by["query"]  # the same moments
