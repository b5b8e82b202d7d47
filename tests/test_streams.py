"""Where a command's output goes: a closed standard output (a cron job's ``>&-``), a reader
that stops (``| head``), an output encoding that cannot hold a caption, a file or a pipe
rather than a terminal, an output name that is not UTF-8, and an output folder or disk that
takes nothing. Each is the real ``vidcap`` program in a process of its own, or ``main``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.folders import FakeVideo, write_folder
from vidcap.cli import main

ROOT = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "vidcap"]
ACCENTED = "a café on a quiet street at night"
LONG_CAPTION = "a red car " * 30  # 300 characters: wider than any terminal's fallback


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("streams") / "out"
    many = tuple(f"a red car number {i}" for i in range(3000))  # ~0.5 MB as JSON: a pipe's fill
    write_folder(out, [FakeVideo("many", many), FakeVideo("accents", (ACCENTED, LONG_CAPTION))])
    return out


def vidcap(*args: str, **options) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **options.pop("env", {})}
    return subprocess.run(
        [*CMD, *args], capture_output=True, text=True, timeout=120, env=env, **options
    )


@pytest.mark.heavy
def test_a_closed_standard_output_is_no_failure(folder: Path, tmp_path: Path) -> None:
    """Regression: with standard output closed, every command ended in a traceback
    (``sys.stdout`` is None) and exit 1, after its work was done; a usage error too."""
    run = subprocess.run(
        f"{' '.join(CMD)} search {folder} 'red car' >&-; echo rc=$? >&2",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.stderr.splitlines()[-1] == "rc=0", run.stderr
    assert "Traceback" not in run.stderr
    report = subprocess.run(
        f"{' '.join(CMD)} report {folder} >&-; echo rc=$? >&2",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.stderr.splitlines()[-1] == "rc=0" and "Traceback" not in report.stderr
    usage = subprocess.run(
        f"{' '.join(CMD)} search {tmp_path / 'missing'} 'red' >&-; echo rc=$? >&2",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = usage.stderr.splitlines()
    assert lines[-1] == "rc=2" and lines[0].startswith("vidcap: error:"), usage.stderr


@pytest.mark.parametrize("flags", [["--json"], ["--csv"], []])
@pytest.mark.heavy
def test_a_reader_that_stops_early_ends_the_command_quietly(folder: Path, flags: list) -> None:
    """Regression: ``vidcap search OUT q | head -1`` printed "vidcap: error: Broken pipe"
    and exited 1, so a script under ``set -o pipefail`` failed (here: always, as the reader
    leaves before half a megabyte is written)."""
    command = " ".join([*CMD, "search", str(folder), "'red car'", *flags])
    run = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -c 1 >/dev/null"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Broken pipe" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.heavy
def test_a_caption_its_output_cannot_encode_is_written_escaped(folder: Path) -> None:
    """Regression: an ASCII or Latin-1 standard output (``PYTHONIOENCODING``, an old locale)
    ended the table at the first accented caption with a UnicodeEncodeError traceback."""
    run = vidcap("search", str(folder), "café", env={"PYTHONIOENCODING": "ascii"})
    assert run.returncode == 0, run.stderr
    assert "a caf\\xe9 on a quiet street" in run.stdout


def test_a_table_in_a_file_or_a_pipe_is_whole(folder: Path, capsys, monkeypatch) -> None:
    """Regression: the table was cut to 120 columns (the fallback width) in a file or a pipe,
    where no terminal is: ``vidcap search OUT q > moments.txt`` lost the captions' ends."""
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["search", str(folder), "red car", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert LONG_CAPTION.strip() in out and "…" not in out


def test_an_output_name_that_is_not_utf8_is_refused(tmp_path: Path, capsys) -> None:
    """Regression: ``--out`` named with bytes that are not UTF-8 was taken, and its name then
    went raw into the JSON and CSV that search prints (not UTF-8: no reader takes them)."""
    video = tmp_path / "v.mp4"
    shutil.copy(ROOT / "sample_videos" / "shapes.mp4", video)
    name = os.fsdecode(b"out-\xff")
    assert main(["caption", str(video), "--model", "tiny", "--out", str(tmp_path / name)]) == 2
    error = capsys.readouterr().err
    assert error.strip().endswith("out-\\xff: the name is not UTF-8 (outputs and messages name "
                                  "it in UTF-8): choose another")  # fmt: skip
    assert not (tmp_path / name).exists()


def test_a_clips_folder_that_cannot_be_made_is_refused_before_the_search(
    folder: Path, capsys
) -> None:
    """Regression: ``search --clips DIR`` printed the whole table, then failed (exit 1) where
    DIR could not be made; ``clips`` and ``export`` the same."""
    for argv in (
        ["search", str(folder), "red car", "--clips", "/proc/vidcap-clips"],
        ["export", str(folder), "--to", "fiftyone", "/proc/vidcap-export"],
    ):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and "cannot write there" in err, (argv, err)


@pytest.mark.heavy
def test_a_page_the_full_disk_cannot_take_stops_the_run(tmp_path: Path) -> None:
    """Regression: a run whose page could not be written for a full disk said it was done
    and exited 0 with no ``index.html``: it stops saying so, as for a caption file."""
    from tests.support.cli import in_a_small_folder

    video = tmp_path / "v.mp4"
    shutil.copy(ROOT / "sample_videos" / "shapes.mp4", video)
    run = f'{" ".join(CMD)} caption {video} --out "$SMALL/out" --model tiny --quiet'
    script = (
        f'{run} && rm "$SMALL/out/index.html" && '
        '(cat /dev/zero > "$SMALL/fill" 2>/dev/null; true) && rm "$SMALL/out/summary.json" && '
        f'{run} 2>{tmp_path}/err; echo $? >{tmp_path}/rc; ls "$SMALL/out" >{tmp_path}/ls'
    )
    result = in_a_small_folder("2m", script)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rc").read_text().strip() == "1"
    [line] = (tmp_path / "err").read_text().splitlines()
    assert line.startswith("vidcap: error: stopped: cannot write ") and "index.html" in line
    assert "(No space left on device); the videos done are kept" in line
    assert "v.jsonl" in (tmp_path / "ls").read_text().split()  # the captions stand


@pytest.mark.parametrize("broken", [False, True])
@pytest.mark.heavy
def test_a_run_whose_reader_stops_early_still_says_how_it_went(
    tmp_path: Path, broken: bool
) -> None:
    """A run's status is its exit code even where nothing it prints is read: ``vidcap
    caption … 2>&1 | head -c 1`` exits 1 when a video failed (the review of the broken-pipe
    fix: its final line's broken pipe made every such run exit 0) and 0 when none did."""
    library = tmp_path / "lib"
    library.mkdir()
    shutil.copy(ROOT / "sample_videos" / "shapes.mp4", library / "a.mp4")
    if broken:
        (library / "b.mp4").write_bytes(b"not a video" * 100)
    command = " ".join([*CMD, "caption", str(library), "--out", str(tmp_path / "out"),
                        "--model", "tiny", "--every-n", "10"])  # fmt: skip
    run = subprocess.run(
        ["bash", "-c", f"{command} 2>&1 | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.stdout.strip() == ("1" if broken else "0"), run.stderr
