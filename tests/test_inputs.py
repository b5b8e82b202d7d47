"""Dataset inputs: folders, list files with metadata, fsspec URLs (a real local HTTP server)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.cli import run_main
from tests.support.servers import QuietHTTPServer, free_port, trickling
from vidcap.errors import UsageError, VideoError
from vidcap.inputs import (
    InputVideo,
    expand_inputs,
    file_sha256,
    local_copy,
    remote_identity,
    same_source,
    source_identity,
)
from vidcap.jobs import RunSettings
from vidcap.plan import plan

SAMPLE = Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4"


def test_a_source_is_the_one_recorded_by_its_times_or_by_its_bytes_at_its_path(
    tmp_path: Path,
) -> None:
    """``same_source``: a local file whose modification time alone changed is the one
    recorded if its SHA-256 is the record's; never a file elsewhere (a record names one
    path), nor one of another size, nor a URL (its store says what changed)."""
    video = tmp_path / "v.mp4"
    video.write_bytes(SAMPLE.read_bytes())
    recorded = {**source_identity(str(video)), "sha256": file_sha256(video)}
    assert recorded["sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert same_source(recorded, source_identity(str(video)))
    os.utime(video, ns=(1, 1))  # touched: the same bytes
    touched = source_identity(str(video))
    assert same_source(recorded, touched)
    assert not same_source(recorded, touched, by_content=False)  # (the page: no reading)
    assert not same_source({k: v for k, v in recorded.items() if k != "sha256"}, touched)
    assert not same_source({**recorded, "sha256": ["not", "a digest"]}, touched)
    elsewhere = tmp_path / "copy.mp4"
    elsewhere.write_bytes(video.read_bytes())
    assert not same_source(recorded, source_identity(str(elsewhere)))
    video.write_bytes(bytes(len(SAMPLE.read_bytes())))  # the same size, other bytes
    assert not same_source(recorded, source_identity(str(video)))
    assert not same_source(None, touched)
    fifo = tmp_path / "live.mp4"  # a record planted in a shared folder: a FIFO is never read
    os.mkfifo(fifo)
    live = source_identity(str(fifo))
    empty = hashlib.sha256(b"").hexdigest()
    assert not same_source({**live, "mtime_ns": live["mtime_ns"] + 1, "sha256": empty}, live)
    url = {"path": "https://host/v.mp4", "size": recorded["size"], "ETag": '"a"'}
    assert not same_source({**url, "ETag": '"b"', "sha256": recorded["sha256"]}, url)


def test_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.mp4", "a.MKV", "sub/c.webm", "notes.md", "d.gif", "e.png", "f.rmvb", "g.MOD"):
        (tmp_path / name).write_bytes(b"x")
    videos = expand_inputs([tmp_path, str(SAMPLE)])
    assert [v.source for v in videos] == [
        str(tmp_path / "a.MKV"),
        str(tmp_path / "b.mp4"),
        str(tmp_path / "d.gif"),  # animated GIFs are video datasets too (TGIF)
        str(tmp_path / "f.rmvb"),  # RealMedia (old archives), a camcorder's MPEG-PS .MOD
        str(tmp_path / "g.MOD"),
        str(tmp_path / "sub" / "c.webm"),
        str(SAMPLE),
    ]
    assert all(v.metadata == {} for v in videos)


HIDDEN = ["._clip.mp4", "__MACOSX/._clip.mp4", ".cache/x.mp4", "sub/.partial.mkv"]


def test_hidden_files_in_a_folder_are_passed_over_with_a_warning(tmp_path: Path, caplog) -> None:
    """Regression: every ``clip.mp4`` copied from a Mac comes with ``._clip.mp4`` (its
    resource fork: no video) and zips carry a ``__MACOSX`` folder of them; a folder run
    counted each as a failed video. Names starting with "." are passed over, with one
    warning; a hidden file named on the command line is still taken."""
    for name in ["clip.mp4", "sub/v.mkv", *HIDDEN]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    videos = expand_inputs([tmp_path])
    assert [v.source for v in videos] == [str(tmp_path / "clip.mp4"), str(tmp_path / "sub/v.mkv")]
    [warning] = [r.getMessage() for r in caplog.records if "hidden" in r.getMessage()]
    assert "passed over 4 hidden files" in warning and str(tmp_path) in warning
    assert [v.source for v in expand_inputs([tmp_path / "._clip.mp4"])] == [
        str(tmp_path / "._clip.mp4")
    ]


def test_linked_folders_are_followed_once_and_links_to_nothing_named(
    tmp_path: Path, caplog
) -> None:
    """Regression: a folder reached through a link (a dataset's disks linked into one tree)
    was passed over without a word, and so was a link to a video that is gone. Linked
    folders are followed, each folder once (a link back up is no loop); a link to nothing
    with a video's name is named in a warning."""
    tree, disk = tmp_path / "tree", tmp_path / "disk2"
    (tree / "a").mkdir(parents=True)
    disk.mkdir()
    for file in (tree / "a" / "x.mp4", disk / "y.mkv"):
        file.write_bytes(b"x")
    (tree / "disk2").symlink_to(disk)  # a folder on another disk
    (tree / "a" / "up").symlink_to(tree)  # a loop
    (tree / "z.mp4").symlink_to(tree / "a" / "x.mp4")  # a file link: a path of its own
    (tree / "gone.mp4").symlink_to(tmp_path / "nothing.mp4")
    (tree / "gone.txt").symlink_to(tmp_path / "nothing.txt")  # not a video's name: no word
    videos = expand_inputs([tree])
    assert [v.source for v in videos] == [
        str(tree / "a" / "x.mp4"),
        str(tree / "disk2" / "y.mkv"),
        str(tree / "z.mp4"),
    ]
    [warning] = [r.getMessage() for r in caplog.records if "link" in r.getMessage()]
    assert warning == (
        f"{tree}: passed over 1 link to nothing with a video's name "
        f"({tree / 'gone.mp4'} → {tmp_path / 'nothing.mp4'})"
    )


def test_a_pipe_is_refused_by_name(tmp_path: Path, caplog) -> None:
    """Regression: a FIFO in a folder was passed over without a word; named on the command
    line it failed as an "empty file", and a shell's ``<(cat clip.mp4)`` as "no such file"
    (the decoder process cannot see the caller's ``/dev/fd``). A video is read more than
    once, so a pipe is refused by name: a usage error on the command line, a warning in a
    folder."""
    (tmp_path / "ok.mp4").write_bytes(b"x")
    os.mkfifo(tmp_path / "live.mp4")
    os.mkfifo(tmp_path / "notes.txt")  # not a video's name: no word
    assert [v.source for v in expand_inputs([tmp_path])] == [str(tmp_path / "ok.mp4")]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning == (
        f"{tmp_path}: passed over 1 pipe or device with a video's name "
        f"({tmp_path / 'live.mp4'} is a pipe, not a file: a video is read more than once, "
        "so save it to a file first)"
    )
    with pytest.raises(UsageError, match=r"live\.mp4: is a pipe, not a file: .* save it to a file"):
        expand_inputs([tmp_path / "live.mp4"])
    read, write = os.pipe()  # what a shell's <(…) hands over: /dev/fd/N
    try:
        with pytest.raises(UsageError, match=rf"^/dev/fd/{read}: is a pipe, not a file"):
            expand_inputs([f"/dev/fd/{read}"])
    finally:
        os.close(read)
        os.close(write)
    with pytest.raises(UsageError, match=r"^/dev/null: is a character device, not a file"):
        expand_inputs(["/dev/null"])


def test_names_and_lists_that_are_not_utf8_are_refused_by_name(tmp_path: Path, caplog) -> None:
    """Regression: a video named in Latin-1 (``caf\\xe9.mp4`` from an old archive or a zip
    made on Windows) stopped the whole run with a UnicodeEncodeError traceback (its name
    goes into JSON, Parquet and the page as UTF-8), and a list file saved as Windows-1252
    (Excel's plain "CSV") with a UnicodeDecodeError. The file is passed over with a warning
    in a folder, named on the command line it is a usage error; the list is a usage error
    naming its first bad byte."""
    folder = os.fsencode(tmp_path)
    with open(folder + b"/caf\xe9.mp4", "wb") as handle:
        handle.write(b"x")
    (tmp_path / "ok.mp4").write_bytes(b"x")
    assert [v.source for v in expand_inputs([tmp_path])] == [str(tmp_path / "ok.mp4")]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(
        f"{tmp_path}: passed over 1 file whose name is not UTF-8 ({tmp_path}/caf\\xe9.mp4): "
        "outputs name each video in UTF-8, so rename it (convmv"
    )
    with pytest.raises(UsageError, match=r"caf\\xe9\.mp4: the name is not UTF-8: .* rename it"):
        expand_inputs([os.fsdecode(folder + b"/caf\xe9.mp4")])
    (tmp_path / "list.txt").write_bytes(b"ok.mp4\ncaf\xe9.mp4\n")
    (tmp_path / "list.csv").write_bytes("path,label\nok.mp4,café\n".encode("cp1252"))
    for name, line in (("list.txt", 2), ("list.csv", 2)):
        with pytest.raises(UsageError, match=rf"{name}: not UTF-8 text \(byte 0xe9 on line {line}\); "
                           r"save the list as UTF-8 \(in Excel: CSV UTF-8\)$"):  # fmt: skip
            expand_inputs([tmp_path / name])


def test_a_utf16_list_with_its_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Windows Notepad's "Unicode" and Excel's "Unicode Text" (tab-separated) save UTF-16
    with a byte-order mark: such a list was "not UTF-8 text (byte 0xff on line 1)"; it is
    read (the mark says the encoding). UTF-16 without one is still refused, in one line."""
    (tmp_path / "ok.mp4").write_bytes(b"x")
    (tmp_path / "list.txt").write_text("ok.mp4\r\n", encoding="utf-16")
    (tmp_path / "excel.csv").write_text("path\tlabel\r\nok.mp4\tcafé\r\n", encoding="utf-16")
    (tmp_path / "be.csv").write_bytes("\ufeffpath,label\nok.mp4,ü\n".encode("utf-16-be"))
    ok = str(tmp_path / "ok.mp4")
    assert [v.source for v in expand_inputs([tmp_path / "list.txt"])] == [ok]
    [excel] = expand_inputs([tmp_path / "excel.csv"])
    assert (excel.source, excel.metadata) == (ok, {"label": "café"})
    [big_endian] = expand_inputs([tmp_path / "be.csv"])
    assert (big_endian.source, big_endian.metadata) == (ok, {"label": "ü"})
    (tmp_path / "bare.txt").write_bytes("ok.mp4\n".encode("utf-16-le"))
    with pytest.raises(UsageError, match="holds a NUL byte"):  # (ASCII as UTF-16: NULs)
        expand_inputs([tmp_path / "bare.txt"])


def test_an_output_folder_inside_the_inputs_is_not_input(tmp_path: Path, caplog) -> None:
    """Regression: with ``--out`` inside the folder captioned (``vidcap caption data --out
    data/captions``), clips cut into the output folder (``vidcap clips … --out
    data/captions/clips``) were captioned by the next run as new videos. A vidcap output
    folder (its ``.vidcap`` state) met in a walk is passed over, saying so; named, it is
    walked."""
    (tmp_path / "data" / "captions" / ".vidcap").mkdir(parents=True)
    (tmp_path / "data" / "captions" / "clips").mkdir()
    (tmp_path / "data" / "a.mp4").write_bytes(b"x")
    (tmp_path / "data" / "captions" / "clips" / "a_0001_0.000-1.000.mp4").write_bytes(b"x")
    assert [v.source for v in expand_inputs([tmp_path / "data"])] == [
        str(tmp_path / "data" / "a.mp4")
    ]
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(
        f"{tmp_path / 'data'}: passed over 1 vidcap output folder inside it "
        f"({tmp_path / 'data' / 'captions'}): what vidcap wrote is not taken as input"
    )
    clips = tmp_path / "data" / "captions" / "clips"
    assert [v.source for v in expand_inputs([clips])] == [str(clips / "a_0001_0.000-1.000.mp4")]
    # (an outside-in round: a link back up walked the folder again, "passed over 2 vidcap
    # output folders" for one)
    (tmp_path / "data" / "deep").mkdir()
    (tmp_path / "data" / "deep" / "up").symlink_to("..")
    caplog.clear()
    assert len(expand_inputs([tmp_path / "data"])) == 1
    [warning] = [r.getMessage() for r in caplog.records]
    assert "passed over 1 vidcap output folder inside it" in warning


def test_the_runs_own_output_folder_is_passed_over_without_a_word(tmp_path: Path, caplog) -> None:
    """Regression: ``vidcap caption data --out data/captions`` warned on every run that it
    had passed over ``data/captions`` — the folder it was writing. The run's own ``out`` is
    passed over silently (named by another path to it too); another output folder is still
    named."""
    (tmp_path / "data" / "captions" / ".vidcap").mkdir(parents=True)
    (tmp_path / "data" / "old" / ".vidcap").mkdir(parents=True)
    (tmp_path / "data" / "a.mp4").write_bytes(b"x")
    (tmp_path / "data" / "captions" / "a.mp4").write_bytes(b"x")
    out = tmp_path / "data" / "." / "captions"
    assert [v.source for v in expand_inputs([tmp_path / "data"], out=out)] == [
        str(tmp_path / "data" / "a.mp4")
    ]
    [warning] = [r.getMessage() for r in caplog.records]
    assert f"passed over 1 vidcap output folder inside it ({tmp_path / 'data' / 'old'})" in (
        warning
    )


def test_the_cli_says_nothing_of_its_own_output_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    shutil.copy(SAMPLE, tmp_path / "data" / "a.mp4")
    for _ in range(2):  # the second run finds the first's output folder in the inputs
        result = run_main("caption", "--model", "tiny", "--max-frames", "1",
                          tmp_path / "data", "--out", tmp_path / "data" / "caps")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "passed over" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "caps").glob("*.jsonl")) == ["a.jsonl"]


def test_a_subfolder_that_cannot_be_read_is_named() -> None:
    """Regression: a subfolder without read permission was passed over silently (its videos
    never captioned, nothing said). Run as a user the folder refuses (``nobody`` where the
    tests run as root, who may read anything)."""
    import subprocess
    import sys
    import tempfile

    as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0:
        as_user = []
    elif shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run as another user")
    folder = Path(tempfile.mkdtemp(prefix="vidcap-unreadable-"))  # (tmp_path: root's only)
    try:
        folder.chmod(0o755)
        for name in ("ok/a.mp4", "locked/b.mp4"):
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(b"x")
        (folder / "locked").chmod(0)
        code = (
            "import logging, sys; logging.basicConfig(format='%(message)s');"
            "from vidcap.inputs import expand_inputs;"
            "print([v.source for v in expand_inputs([sys.argv[1]])])"
        )
        result = subprocess.run(
            [*as_user, sys.executable, "-c", code, str(folder)],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1],
        )  # fmt: skip
    finally:
        (folder / "locked").chmod(0o755)
        shutil.rmtree(folder)
    assert result.stdout.strip() == str([str(folder / "ok" / "a.mp4")]), result.stderr
    assert result.stderr.strip() == (
        f"{folder / 'locked'}: cannot read it (Permission denied): its videos are not captioned"
    )


def test_hidden_files_in_a_store_folder_are_passed_over() -> None:
    import fsspec

    store = fsspec.filesystem("memory")
    for name in ["clip.mp4", *HIDDEN]:
        store.pipe(f"/hidden-test/{name}", b"x")
    try:
        assert [v.source for v in expand_inputs(["memory://hidden-test"])] == [
            "memory:///hidden-test/clip.mp4"
        ]
    finally:
        store.rm("/hidden-test", recursive=True)


def test_file_url_is_a_path() -> None:
    assert expand_inputs([f"file://{SAMPLE}"]) == [InputVideo(str(SAMPLE))]


def test_txt_list_relative_to_itself(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "videos.txt"
    listing.parent.mkdir()
    listing.write_text(
        f"# a comment\n\n../clip.mp4\n{SAMPLE}\nfile://{SAMPLE}\nhttps://example.com/v.mp4\n"
    )
    assert [v.source for v in expand_inputs([listing])] == [
        str(tmp_path / "lists" / "../clip.mp4"),
        str(SAMPLE),
        str(SAMPLE),
        "https://example.com/v.mp4",
    ]


def test_csv_list_carries_metadata(tmp_path: Path) -> None:
    listing = tmp_path / "videos.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "clip_id", "licence"])
        writer.writerow([str(SAMPLE), "7", "cc-by"])
    assert expand_inputs([listing]) == [
        InputVideo(str(SAMPLE), {"clip_id": "7", "licence": "cc-by"})
    ]


@pytest.mark.parametrize("separator", [";", "\t"])
def test_a_csv_separated_by_semicolons_or_tabs_is_read(tmp_path: Path, separator: str) -> None:
    """Regression: a CSV saved by Excel in much of Europe (";") or pasted from a sheet
    (tabs) failed "no 'path' column (columns: path;id)"; its header's separator is used."""
    listing = tmp_path / "videos.csv"
    listing.write_text(f"path{separator}id\n{SAMPLE}{separator}7, or 8\n")
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), {"id": "7, or 8"})]


@pytest.mark.parametrize("separator", [";", ",", "|", "\t"])
def test_excels_sep_line_names_the_separator(tmp_path: Path, separator: str) -> None:
    """Regression: Excel's optional first line ``sep=;`` was read as the header ("column 2
    has no name"); it names the separator, the header follows, and line numbers in
    messages still count it."""
    listing = tmp_path / "videos.csv"
    listing.write_text(f"sep={separator}\r\npath{separator}id\r\n{SAMPLE}{separator}7\r\n")
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), {"id": "7"})]
    listing.write_text(f"sep={separator}\npath{separator}id\n{SAMPLE}{separator}7{separator}8\n")
    with pytest.raises(UsageError, match=r"videos\.csv: line 3 has 3 fields, the header 2"):
        expand_inputs([listing])


def test_a_tsv_list_is_read_with_tabs(tmp_path: Path) -> None:
    """Regression: a ``.tsv`` list (Conceptual Captions', a sheet's export) was taken for a
    video ("not a decodable video"); it is a list, tab-separated whatever its header holds."""
    listing = tmp_path / "videos.tsv"
    listing.write_text(f"path\tnote\n{SAMPLE}\ta, b; c\n")
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), {"note": "a, b; c"})]


@pytest.mark.heavy
def test_a_column_named_like_an_output_column_is_carried_under_a_prefix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a list's ``caption`` column (a video-text dataset's own captions) was a
    usage error, and one named ``same_as``, ``scene`` or ``damaged`` — output columns the
    check did not know — crashed the Parquet writer with a traceback (ArrowInvalid) or was
    overwritten by vidcap's own. Such a column is carried as ``list_<name>``, saying so."""
    listing = tmp_path / "videos.csv"
    listing.write_text(f"path,caption,scene,label\n{SAMPLE},a dog runs,3,x\n")
    with caplog.at_level(logging.WARNING, logger="vidcap.inputs"):
        videos = expand_inputs([listing])
    assert videos == [
        InputVideo(str(SAMPLE), {"list_caption": "a dog runs", "list_scene": "3", "label": "x"})
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"{listing}: columns 'caption', 'scene' are carried as 'list_caption', 'list_scene' "
        "(vidcap's outputs have columns of those names)"
    ]
    out = tmp_path / "out"
    result = run_main("caption", listing, "--out", out, "--model", "tiny", "--scenes",
                      "--skip-similar", "--format", "parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = pq.read_table(out / "parquet").to_pylist()
    assert rows and all(
        (r["list_caption"], r["list_scene"], r["label"]) == ("a dog runs", "3", "x")
        and r["caption"] != "a dog runs"
        and isinstance(r["scene"], int)
        and r["damaged"] is False
        for r in rows
    ), rows


def test_file_urls_are_unescaped(tmp_path: Path) -> None:
    """Regression: ``file:///clips/a%20b.mp4`` (as ``Path.as_uri()``, browsers and dataset
    tools write a file URL) named ``/clips/a%20b.mp4``, no such file, and
    ``file://localhost/…`` a relative ``localhost/…``; both name the local file."""
    video = tmp_path / "a b é.mp4"
    shutil.copy(SAMPLE, video)
    listing = tmp_path / "list.txt"
    localhost = "file://localhost" + video.as_uri().removeprefix("file://")
    listing.write_text(f"{video.as_uri()}\n{localhost}\n")
    assert "%20" in video.as_uri()
    assert [v.source for v in expand_inputs([listing])] == [str(video), str(video)]
    assert [v.source for v in expand_inputs([video.as_uri()])] == [str(video)]


def test_an_out_file_url_is_the_path_it_names_and_another_hosts_is_refused(
    tmp_path: Path, monkeypatch
) -> None:
    """Regression: ``--out file://localhost/ABS`` wrote into ``./localhost/ABS`` and
    ``--out file://server/x`` into ``./server/x``, exit 0 (inputs read the first right).
    The first is ``/ABS``; a file URL naming another machine is a usage error, as an input,
    an ``--out`` or a folder to read."""
    from tests.support.cli import run_main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o u t"
    args = ["--model", "tiny", "--quiet", "--max-frames", "2", "--no-thumbs"]
    localhost = "file://localhost" + out.as_uri().removeprefix("file://")
    assert run_main("caption", SAMPLE, "--out", localhost, *args).returncode == 0
    assert (out / f"{SAMPLE.stem}.jsonl").is_file()
    assert run_main("report", localhost).returncode == 0
    for argv in (
        ["caption", SAMPLE, "--out", "file://server/share/o", *args],
        ["caption", "file://server/share/v.mp4", "--out", str(tmp_path / "x"), *args],
        ["report", "file://server/share/o"],
    ):
        result = run_main(*argv)
        assert result.returncode == 2, result.stderr
        assert "names the machine 'server'" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o u t"]  # (no ./server, ./localhost)


def test_an_unnamed_empty_column_is_no_column(tmp_path: Path) -> None:
    """A spreadsheet's stray trailing commas (unnamed columns left empty) add no metadata."""
    listing = tmp_path / "videos.csv"
    listing.write_text(f"path,id,,\n{SAMPLE},7,,\n")
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), {"id": "7"})]


def test_a_csv_field_longer_than_csvs_own_limit_is_read(tmp_path: Path) -> None:
    """Regression: a metadata field over 128 KiB (a transcript, a long description) ended
    the run with ``_csv.Error: field larger than field limit`` and a traceback."""
    listing = tmp_path / "videos.csv"
    transcript = "word " * 60_000  # 300 KB
    listing.write_text(f"path,transcript\n{SAMPLE},{transcript}\n")
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), {"transcript": transcript})]
    assert csv.field_size_limit() == 131072  # (the reader's own limit is given back)


def test_parquet_list_carries_typed_metadata(tmp_path: Path) -> None:
    listing = tmp_path / "videos.parquet"
    pq.write_table(
        pa.table({"clip_id": [3, 4], "path": ["a.mp4", "/abs/b.mp4"], "score": [0.5, None]}),
        listing,
    )
    assert expand_inputs([listing]) == [
        InputVideo(str(tmp_path / "a.mp4"), {"clip_id": 3, "score": 0.5}),
        InputVideo("/abs/b.mp4", {"clip_id": 4, "score": None}),
    ]


def test_the_column_of_paths_is_named_by_path_column(tmp_path: Path) -> None:
    """A list written for another tool (video2dataset's ``url``, WebVid's ``contentUrl``,
    a Hugging Face dataset's ``video``) is read as it is, ``--path-column`` naming the
    column of paths; a ``path`` column in it is then metadata like any other."""
    listing = tmp_path / "webvid.parquet"
    pq.write_table(
        pa.table({"videoid": [7], "contentUrl": [str(SAMPLE)], "path": ["street/0007"]}), listing
    )
    assert expand_inputs([listing], "contentUrl") == [
        InputVideo(str(SAMPLE), {"videoid": 7, "path": "street/0007"})
    ]
    hub = tmp_path / "hub.csv"
    hub.write_text(f"video,label\n{SAMPLE},a street\n")  # ("video": an output column's name)
    with pytest.raises(UsageError, match=r"no 'path' column \(columns: video, label\); --path-col"):
        expand_inputs([hub])
    out = tmp_path / "out"
    result = run_main("caption", hub, "--path-column", "video", "--out", out, "--model", "tiny",
                      "--max-frames", "1", "--format", "jsonl,parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = pq.read_table(out / "parquet").to_pylist()
    assert row["video"] == str(SAMPLE) and row["label"] == "a street"
    result = run_main("caption", hub, "--path-column", " ", "--out", out, "--model", "tiny")
    assert result.returncode == 2 and "--path-column: expected a column name" in result.stderr
    # (was ignored without a word: a list of paths alone, a .txt, has no columns)
    listed = tmp_path / "paths.txt"
    listed.write_text(f"{SAMPLE}\n")
    result = run_main("caption", listed, SAMPLE, "--path-column", "url", "--out", out)
    assert result.returncode == 2
    assert result.stderr == (
        "vidcap: error: --path-column 'url' names a column of a CSV, TSV or Parquet list, and "
        "no such list is among the inputs\n"
    )


def test_parquet_metadata_of_any_type_is_carried_as_json(tmp_path: Path) -> None:
    """Regression: a Parquet list with a decimal column (prices), binary, a duration or a
    struct holding a date ended the run with "Object of type Decimal is not JSON
    serializable" and a traceback, after captioning. Every value is made plain (exact
    text, base64, seconds, ISO dates) and the run writes it, in JSON and in Parquet."""
    import datetime
    import decimal

    listing = tmp_path / "typed.parquet"
    when = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    pq.write_table(
        pa.table({
            "path": [str(SAMPLE)],
            "price": pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)),
            "blob": pa.array([b"\x00\xff"], pa.binary()),
            "length": pa.array([datetime.timedelta(seconds=3)], pa.duration("s")),
            "info": pa.array([{"day": datetime.date(2020, 1, 2), "tags": ["x"]}]),
            "at": pa.array([when], pa.timestamp("us", tz="UTC")),
        }),
        listing,
    )  # fmt: skip
    plain = {
        "price": "1.50",
        "blob": "AP8=",
        "length": 3.0,
        "info": {"day": "2020-01-02", "tags": ["x"]},
        "at": "2020-01-01T00:00:00+00:00",
    }
    assert expand_inputs([listing]) == [InputVideo(str(SAMPLE), plain)]
    out = tmp_path / "out"
    result = run_main("caption", listing, "--out", out, "--model", "tiny", "--max-frames", "1",
                      "--format", "jsonl,parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = pq.read_table(out / "parquet").to_pylist()
    assert {key: row[key] for key in plain} == plain


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.csv", "file,id\na.mp4,1\n", r"v\.csv: no 'path' column \(columns: file, id\)"),
        ("v.csv", "path,frame,list_frame\na.mp4,1,2\n", r"columns 'frame' and 'list_frame'"),
        ("v.csv", "path,id\n,1\n", r"v\.csv: row 1 has an empty 'path'"),
        ("v.parquet", "not parquet", r"v\.parquet: not a readable Parquet file"),
        ("v.txt", "# only a comment\n", r"no videos found in the given inputs"),
        # (a ValueError traceback from the path check: "embedded null byte")
        ("v.txt", "a.mp4\nb\0c.mp4\n", r"/v\.txt: row 2's 'path' holds a NUL byte$"),
        # a row longer than the header: a traceback with --format parquet (a metadata field
        # named None); a column twice: one's values silently lost; an unnamed one with values
        (
            "v.csv",
            "path,id\na.mp4,1,2\n",
            r"v\.csv: line 2 has 3 fields, the header 2: a "
            r"field holding a comma needs quotes$",
        ),
        ("v.csv", "path,id,id\na.mp4,1,2\n", r"v\.csv: column 'id' appears more than once"),
        ("v.csv", "path,,id\na.mp4,x,1\n", r"v\.csv: column 2 has no name; name it or remove it"),
        # a quote never closed swallowed every later row into one field, and the run said
        # "1 of 1 videos done"; text after a closing quote was silently dropped
        ("v.csv", 'path,title\na.mp4,"12"" screen\nb.mp4,x\n', r"a quote opened and never closed"),
        ("v.tsv", 'path\ttitle\na.mp4\t"open\nb.mp4\tx\n', r"v\.tsv: .* never closed"),
        ("v.tsv", 'path\ttitle\na.mp4\t"Hi" she said\n', r"text after a field's closing quote"),
    ],
)
def test_bad_list_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(UsageError, match=message):
        expand_inputs([tmp_path / name])


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        # (a multi-line Arrow error about "FieldRef.Name(a)")
        ({"path": ["a.mp4"], "a": [1], "a ": [2]}, r"column 'a' appears more than once"),
        # (bytes became the path "b'a.mp4'": each video failed "no such file")
        ({"path": [b"a.mp4"]}, r"'path' holds bytes values, not text \(row 1: b'a\.mp4'\)"),
    ],
)
def test_bad_parquet_lists(tmp_path: Path, columns: dict, message: str) -> None:
    names = [name.strip() for name in columns]  # ("a " names the second "a")
    table = pa.Table.from_arrays([pa.array(v) for v in columns.values()], names=names)
    pq.write_table(table, tmp_path / "v.parquet")
    with pytest.raises(UsageError, match=message) as raised:
        expand_inputs([tmp_path / "v.parquet"])
    assert "\n" not in str(raised.value)


@pytest.mark.heavy
def test_metadata_of_other_types_across_lists_is_kept_as_text(tmp_path: Path) -> None:
    """Regression: a column holding text in one list and numbers in another (a CSV beside a
    typed Parquet list), an integer past int64 (uint64) or a map column failed the run
    after every video was captioned (an Arrow error writing the shard, no summary, no
    record: each rerun captioned everything again and failed the same way). Such a column
    is text, each value that is not text written as its JSON."""
    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(SAMPLE, videos / "a.mp4")
    shutil.copy(SAMPLE, videos / "b.mp4")
    (tmp_path / "text.csv").write_text("path,tag\nv/a.mp4,red\n")
    typed = {
        "path": pa.array(["v/b.mp4"]),
        "tag": pa.array([5]),
        "big": pa.array([2**64 - 1], pa.uint64()),
        "map": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
    }
    pq.write_table(pa.table(typed), tmp_path / "typed.parquet")
    out = tmp_path / "out"
    result = run_main("caption", tmp_path / "text.csv", tmp_path / "typed.parquet", "--out", out,
                      "--model", "tiny", "--max-frames", "1", "--format", "jsonl,parquet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {Path(r["video"]).name: r for r in pq.read_table(out / "parquet").to_pylist()}
    assert rows["a.mp4"]["tag"] == "red" and rows["a.mp4"]["big"] is None
    assert (rows["b.mp4"]["tag"], rows["b.mp4"]["big"], rows["b.mp4"]["map"]) == (
        "5", "18446744073709551615", '[["k", 1]]'
    )  # fmt: skip


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no such file or folder: .*nothing\.mp4"):
        expand_inputs([tmp_path / "nothing.mp4"])
    with pytest.raises(UsageError, match=r"no videos found"):
        expand_inputs([tmp_path])
    with pytest.raises(UsageError, match=r"cannot open nosuchproto://x\.mp4"):
        expand_inputs(["nosuchproto://x.mp4"])


def test_mask_and_clips_refuse_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Regression: ``vidcap mask --question`` on a video named in Latin-1 printed its
    report with the raw byte in it (not UTF-8 JSON), where ``vidcap caption`` refuses the
    name; ``mask`` and ``clips`` now refuse it the same way, before any work."""
    name = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.mp4")
    shutil.copy(SAMPLE, name)
    (tmp_path / "segments.json").write_text('{"segments": []}')
    for args in (
        ["mask", name, "--question", "is there a dog?", "--model", "tiny"],
        ["clips", name, tmp_path / "segments.json", "--out", tmp_path / "clips"],
    ):
        result = run_main(*args)
        assert result.returncode == 2 and not result.stdout
        assert result.stderr.strip().splitlines() == [
            f"vidcap: error: {tmp_path}/caf\\xe9.mp4: the name is not UTF-8: outputs name each "
            "video in UTF-8, so rename it (convmv -f latin1 -t utf-8 -r --notest FOLDER)"
        ]


def test_http_inputs_lists_and_copies(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base = http_root
    shutil.copy(SAMPLE, root / "shapes.mp4")
    (root / "list.txt").write_text(f"{base}/shapes.mp4\n")
    [video] = expand_inputs([f"{base}/list.txt"])
    assert video == InputVideo(f"{base}/shapes.mp4")

    identity = remote_identity(video.source)
    assert identity["path"] == video.source
    assert identity["size"] == SAMPLE.stat().st_size
    assert source_identity(video.source) == identity

    with local_copy(video.source) as path:
        assert path.suffix == ".mp4"
        assert path.read_bytes() == SAMPLE.read_bytes()
    assert not path.exists()
    with local_copy(f"file://{SAMPLE}") as same:
        assert same == SAMPLE

    with pytest.raises(OSError):
        remote_identity(f"{base}/missing.mp4")
    # A download that fails is one line naming the URL (it was "URL: FileNotFoundError:
    # URL", and "ClientConnectorError: …" for a server that is not there).
    with pytest.raises(VideoError) as failed, local_copy(f"{base}/missing.mp4"):
        pass
    assert str(failed.value) == f"{base}/missing.mp4: cannot download: not found"
    gone = f"http://127.0.0.1:{free_port()}/x.mp4"
    with pytest.raises(VideoError, match=r"^\S+/x\.mp4: cannot download \(Cannot connect"):
        with local_copy(gone):
            pass
    with pytest.raises(UsageError, match=r"no such file or folder: .*/missing\.txt"):
        expand_inputs([f"{base}/missing.txt"])

    # A missing remote video fails alone at plan time, with its URL as identity.
    todo, _ = plan([f"{base}/missing.mp4", video.source], RunSettings(out_dir=tmp_path))
    assert [job.identity["path"] for job in todo] == [f"{base}/missing.mp4", video.source]
    assert "error" in todo[0].identity


def test_identities_asked_together_and_taken_once(http_root: tuple[Path, str]) -> None:
    root, base = http_root
    names = [f"p{i}.mp4" for i in range(3)]
    for name in names:
        shutil.copy(SAMPLE, root / name)
    (root / "three.txt").write_text("".join(f"{base}/{name}\n" for name in names))
    videos = expand_inputs([f"{base}/three.txt"])  # asks the server about all three at once
    for name in names:
        (root / name).unlink()
    for video in videos:  # answered from what was asked during the expansion …
        assert remote_identity(video.source)["size"] == SAMPLE.stat().st_size
    with pytest.raises(OSError):  # … once: the next question goes to the server again
        remote_identity(videos[0].source)


@pytest.mark.heavy
def test_a_password_in_an_input_url_is_used_never_written(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    """Regression: a video URL given with ``user:password@`` (a server asking for Basic
    authorization) put the password into every JSONL row, Parquet row, ``summary.json``,
    the resume records, the page's data and every message. It is used to download; the
    outputs and messages name the URL without it (``user@host``), and a rerun resumes."""
    root, base = http_root
    shutil.copy(SAMPLE, root / "pw.mp4")
    secret = base.replace("http://", "http://ann:s3cretpw@")
    out = tmp_path / "out"
    args = ["caption", f"{secret}/pw.mp4", f"{secret}/gone.mp4", "--out", out, "--model", "tiny"]
    first = run_main(*args, "--format", "jsonl,srt,vtt,parquet", "--max-frames", "2")
    assert first.returncode == 1  # (gone.mp4 is not there)
    shown = base.replace("http://", "http://ann@")
    assert f"failed: {shown}/gone.mp4: cannot download: not found" in first.stderr
    assert "s3cretpw" not in first.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and not [p for p in written if b"s3cretpw" in p.read_bytes()]
    rows = [json.loads(line) for line in (out / "pw.jsonl").read_text().splitlines()]
    assert {row["video"] for row in rows} == {f"{shown}/pw.mp4"} and len(rows) == 2
    missing = run_main("caption", f"{secret}/missing.txt", "--out", tmp_path / "o2")
    assert missing.returncode == 2  # (a usage error names the list without the password)
    assert missing.stderr.strip() == f"vidcap: error: no such file or folder: {shown}/missing.txt"
    again = run_main(*args, "--format", "jsonl,srt,vtt,parquet", "--max-frames", "2")
    summary = json.loads((out / "summary.json").read_text())
    assert again.returncode == 1 and summary["run"]["resumed"] == 1


def test_a_remote_lists_relative_entries_are_beside_it(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    """Regression: a list file read from a URL (a manifest in a bucket, beside its clips)
    had its relative entries taken as local paths: every video failed "no such file",
    though "relative paths are relative to the list file". They are now resolved against
    the list's URL (its folder, its credentials, not its query), escaped over HTTP. And a
    list URL with a query (a presigned link) was taken for a video: it is a list."""
    root, base = http_root
    (root / "set" / "clips").mkdir(parents=True)
    for name in ("clips/a b.mp4", "top.mp4"):
        shutil.copy(SAMPLE, root / "set" / name if "/" in name else root / name)
    (root / "set" / "list.txt").write_text(
        f"clips/a b.mp4\n../top.mp4\n{base}/top.mp4\n{tmp_path}/local.mp4\n"
    )
    videos = expand_inputs([f"{base}/set/list.txt?v=2"])
    assert [v.source for v in videos] == [
        f"{base}/set/clips/a%20b.mp4",
        f"{base}/top.mp4",
        f"{base}/top.mp4",
        f"{tmp_path}/local.mp4",  # (an absolute path: a shared file system)
    ]
    with local_copy(videos[0].source) as path:
        assert path.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.heavy
def test_a_url_ending_in_dot_dot_never_names_the_output_folder(tmp_path: Path) -> None:
    """Regression: a video URL ending ``/..`` (a server that answers any path, a list
    entry cut at a separator) got the output name "..": its thumbnails' folder was
    ``OUT/thumbs/..``, the output folder itself, which the commit replaces whole — every
    earlier output and resume record was deleted. Such a name is "video" now; escapes and
    control characters in a URL's name are undone or replaced, its query never used."""
    import http.server
    import threading

    from vidcap.outputs import thumbs_folder
    from vidcap.plan import _stem

    data = SAMPLE.read_bytes()

    class AnyPath(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), AnyPath)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run's")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clips/.."
        result = run_main("caption", url, "--out", out, "--model", "tiny", "--max-frames", "2")
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert (out / "keep.txt").read_text() == "an earlier run's"
    assert len((out / "video.jsonl").read_text().splitlines()) == 2
    assert len(list((out / "thumbs" / "video").glob("*.jpg"))) == 2
    assert [_stem(u) for u in ("s3://b/.", "https://h/%2e%2e", "https://h/a%00b.mp4")] == [
        "video",
        "video",
        "a_b",
    ]
    assert _stem("https://h/c/dog.mp4?X-Amz-Credential=AKIA/2026/us/s3/aws4_request") == "dog"
    with pytest.raises(ValueError, match="not an output name"):
        thumbs_folder(out, "..")


def test_stems_equal_on_a_case_insensitive_file_system_get_apart(tmp_path: Path) -> None:
    """Regression: ``Clip.mp4`` and ``clip.mp4`` (or ``café`` composed and decomposed) were
    named ``Clip`` and ``clip``: on macOS, an SMB share or exFAT those are one file, and the
    second video's outputs overwrote the first's."""
    sources = []
    for folder, name in [("a", "Clip"), ("b", "clip"), ("a", "caf\u00e9"), ("b", "cafe\u0301")]:
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(SAMPLE, tmp_path / folder / f"{name}.mp4")
        sources.append(str(tmp_path / folder / f"{name}.mp4"))
    sources.append(str(tmp_path / "a" / "alone.mp4"))
    shutil.copy(SAMPLE, sources[-1])
    todo, _ = plan(sources, RunSettings(out_dir=tmp_path / "out"))
    names = [job.name for job in todo]
    assert names[-1] == "alone"
    folded = [unicodedata.normalize("NFC", name).casefold() for name in names]
    assert len(set(folded)) == len(folded), names
    assert [name.rsplit("-", 1)[0] for name in names[:4]] == [
        "Clip",
        "clip",
        "caf\u00e9",
        "cafe\u0301",
    ]


@pytest.mark.heavy
def test_a_download_goes_on_while_data_comes_and_fails_once_none_does(monkeypatch) -> None:
    """Regression: URL inputs kept aiohttp's default of 300 s for a whole request (fsspec
    sets none), so a large video still arriving at a few MB/s failed after five minutes,
    and one whose server stopped sending mid-way held its decoder those five minutes. A
    download now takes as long as data keeps coming, and fails once none has come for
    ``HTTP_STALL_S``, saying so."""
    import time

    import aiohttp.client

    import vidcap.inputs

    monkeypatch.setattr(vidcap.inputs, "HTTP_STALL_S", 2.0)
    # aiohttp's default limit on a whole request, 300 s, shortened to what this test takes
    monkeypatch.setattr(aiohttp.client, "DEFAULT_TIMEOUT", aiohttp.ClientTimeout(total=2))
    data = SAMPLE.read_bytes()
    # 0.3 s after each of 9 pieces: well under the stall limit; 2.7 s in all, past the 2 s
    with trickling(data, 8, 0.3, stalls="/stalled.mp4") as base:
        with local_copy(f"{base}/slow.mp4") as path:
            assert path.read_bytes() == data
        started = time.monotonic()
        with pytest.raises(VideoError) as stalled, local_copy(f"{base}/stalled.mp4"):
            pass
        assert time.monotonic() - started < 15
        assert str(stalled.value) == (
            f"{base}/stalled.mp4: cannot download: nothing came for 2 s (the server stopped "
            "sending)"
        )


@pytest.mark.heavy
def test_a_slow_download_is_no_stalled_decoder(tmp_path: Path) -> None:
    """Regression: a video downloading slowly but steadily was killed by ``--decode-timeout``
    as a stalled decoder ("the decoder sent nothing for 4 s"): with the default 600 s, any
    download over ten minutes failed while data kept coming. A download that goes on is the
    decoder's heartbeat; one that stops fails after ``HTTP_STALL_S``, as before."""
    with trickling(SAMPLE.read_bytes(), 10, 0.4) as base:  # 4 s: twice the timeout below
        result = run_main("caption", f"{base}/slow.mp4", "--out", tmp_path / "out", "--model",
                          "tiny", "--max-frames", "2", "--decode-timeout", "2", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "stalled" not in result.stderr and (tmp_path / "out" / "slow.jsonl").is_file()


@pytest.mark.heavy
def test_list_rows_naming_one_file_with_other_values_are_said_not_dropped_silently(
    tmp_path: Path,
) -> None:
    """Regression: a list file whose rows name one file (by other spellings, through a link)
    with other labels captioned it once, carrying the first row's label, and said nothing
    of the others. Rows with the same values (or the same file given twice on the command
    line) are one video without a word, as before."""
    video = tmp_path / "a.mp4"
    shutil.copy(SAMPLE, video)
    (tmp_path / "link.mp4").symlink_to(video)
    listing = tmp_path / "videos.csv"
    listing.write_text(
        f"path,label\na.mp4,cat\n./a.mp4,cat\n{video},dog\nlink.mp4,bird\nb.mp4,cat\n"
    )
    shutil.copy(SAMPLE, tmp_path / "b.mp4")
    out = tmp_path / "out"
    result = run_main("caption", listing, "--out", out, "--model", "tiny", "--max-frames", "2",
                      "--format", "jsonl,parquet", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "earlier one names" in line]
    assert len(said) == 1, result.stderr
    assert said[0].startswith("vidcap: WARNING: 2 list rows name a file that an earlier")
    assert f"{video} as " in said[0] and "link.mp4 as " in said[0], said[0]
    assert "its outputs carry the first row's values" in said[0]
    rows = pq.read_table(out / "parquet").to_pylist()
    assert {(r["name"], r["label"]) for r in rows} == {("a", "cat"), ("b", "cat")}

    quiet = run_main("caption", video, tmp_path / "./a.mp4", "--out", tmp_path / "o2",
                     "--model", "tiny", "--max-frames", "1", "--quiet")  # fmt: skip
    assert quiet.returncode == 0 and "earlier one names" not in quiet.stderr, quiet.stderr


@pytest.mark.parametrize(
    ("argv", "package"),
    [
        (["caption", "{video}", "--out", "s3://bucket/out"], "s3fs"),
        (["caption", "gs://bucket/v.mp4", "--out", "{out}"], "gcsfs"),
    ],
)
def test_a_url_whose_file_system_is_not_installed_says_what_to_install(
    tmp_path: Path, argv: list[str], package: str
) -> None:
    """Regression: fsspec's own words ("Install s3fs to access S3") gave no command; the
    other missing extras name a pip install that works."""
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except ImportError:
        pass
    video = tmp_path / "v.mp4"
    shutil.copy(Path(__file__).resolve().parent.parent / "sample_videos" / "shapes.mp4", video)
    args = [a.format(video=video, out=tmp_path / "out") for a in argv]
    result = run_main(*args, "--model", "tiny")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("vidcap: error: ") and line.endswith(f"(pip install {package})"), line


def test_a_list_at_a_host_that_cannot_be_reached_says_so(http_root: tuple[Path, str]) -> None:
    """Regression: a list file at a URL whose host refused the connection was "no such file
    or folder", which sends one checking paths; fsspec says FileNotFoundError of both. A
    failure to reach the host is told as one; a 404 is still no such file."""
    from tests.support.servers import free_port

    _, base = http_root
    with pytest.raises(UsageError, match="no such file or folder: .*/absent.csv$"):
        expand_inputs([f"{base}/absent.csv"])
    dead = f"http://127.0.0.1:{free_port()}/list.csv"
    with pytest.raises(UsageError, match=f"cannot read {re.escape(dead)}: Cannot connect to host"):
        expand_inputs([dead])
