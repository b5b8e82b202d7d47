"""Issue #16 item 7 and 8: no third-party warnings, frames in the progress line, one line on an
early Ctrl-C, conflicting flags named. (Parquet after a ``--format`` change: test_parquet.py.)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import pytest

from tests.support.terminal import run_on_terminal
from tests.support.videos import VideoSpec, constant_rate, write_video
from vidcap.cli import main
from vidcap.decode import Ended, Planned
from vidcap.engine import Captioned, _Progress
from vidcap.outputs import CaptionedFrame

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_videos"
CMD = [sys.executable, "-m", "vidcap"]
INTERRUPTED = "vidcap: interrupted; rerun the same command to resume"

# What pynvml >= 12 installs (a ``.pth`` file runs it at start-up): an import hook warning
# on any import of ``pynvml``, which ``import torch`` makes. TorchServe's ``nvgpu``
# dependency brings it into the environment the README's TorchServe set-up builds.
PYNVML_HOOK = textwrap.dedent(
    """
    import importlib.abc, sys, warnings

    class PynvmlFinder(importlib.abc.MetaPathFinder):
        warned = False

        def find_spec(self, name, path=None, target=None):
            if name.startswith("pynvml") and not self.warned:
                self.warned = True
                warnings.warn(
                    "The pynvml package is deprecated. Please install nvidia-ml-py instead.",
                    FutureWarning,
                    stacklevel=2,
                )

    sys.meta_path.insert(0, PynvmlFinder())
    """
)


@pytest.fixture(scope="module")
def short_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("short")
    spec = VideoSpec("short", "libx264", ".mp4", constant_rate(20, Fraction(10)))
    return write_video(folder / "short.mp4", spec)


def with_pynvml_hook(tmp_path: Path) -> dict[str, str]:
    """An environment whose interpreters warn as pynvml's does (``sitecustomize``)."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(PYNVML_HOOK)
    paths = [str(tmp_path / "hook"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    # An earlier in-process ``vidcap.cli.main`` has put its filter into this process's
    # environment: start from a clean one, as a user's shell is.
    env.pop("PYTHONWARNINGS", None)
    return env


def not_vidcap(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("vidcap")]


@pytest.mark.slow  # over 3 s: in make test, not make test-fast
def test_no_third_party_warning_on_help_or_a_caption_run(short_video: Path, tmp_path: Path) -> None:
    """Regression (#16.7): ``FutureWarning: The pynvml package is deprecated`` on every command."""
    env = with_pynvml_hook(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util; importlib.util.find_spec('pynvml')"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "The pynvml package is deprecated" in probe.stderr  # the hook does warn

    help_run = subprocess.run([*CMD, "--help"], env=env, capture_output=True, text=True)
    assert help_run.returncode == 0 and help_run.stderr == ""
    run = subprocess.run(
        [*CMD, "caption", str(short_video), "--out", str(tmp_path / "out"), "--model", "tiny"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert not_vidcap(run.stderr) == []
    assert run.stderr.strip().splitlines() == [
        f"vidcap: 1 of 1 videos done, 2 frames; outputs in {tmp_path / 'out'}"
    ]


@pytest.mark.heavy
def test_a_missing_optional_dependency_names_an_install_that_works(
    short_video: Path, tmp_path: Path
) -> None:
    """Regression: ``--format parquet`` without pyarrow (and ``--ray`` without Ray) said
    ``pip install 'vidcap[data]'``, which asks the package index for a project named vidcap
    (vidcap is installed from its checkout). The line names the packages themselves, as
    vidcap's extras list them, and the extra for a checkout."""
    import tomllib

    blocked = "import sys; sys.modules['pyarrow'] = sys.modules['pyarrow.parquet'] = None; "
    code = blocked + "from vidcap.cli import entry; sys.argv[0] = 'vidcap'; entry()"
    result = subprocess.run(
        [sys.executable, "-c", code, "caption", str(short_video), "--model", "tiny",
         "--out", str(tmp_path / "out"), "--format", "parquet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    data = project["project"]["optional-dependencies"]["data"]
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "vidcap: error: --format parquet needs pyarrow: pip install "
        + " ".join(f"'{requirement}'" for requirement in data)
        + " (or pip install -e '.[data]' in a vidcap checkout)"
    )


def test_the_filter_is_narrow(monkeypatch) -> None:
    """Only the named warning is silenced: another FutureWarning still shows."""
    import warnings

    monkeypatch.setenv("PYTHONWARNINGS", "default::DeprecationWarning")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from vidcap.cli import quiet_libraries

        quiet_libraries()
        quiet_libraries()  # twice: the option is not repeated
        warnings.warn("The pynvml package is deprecated. Please …", FutureWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("The pynvml package is deprecated", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "something else is deprecated",
        "The pynvml package is deprecated",
    ]
    assert os.environ["PYTHONWARNINGS"] == (
        "default::DeprecationWarning,ignore:The pynvml package is deprecated:FutureWarning"
    )


def _children(pid: int) -> list[int]:
    """The child processes of ``pid``, from each of its threads (a thread that ends while
    read is skipped)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return found


def _decoders(pid: int) -> list[int]:
    """The decoder processes of ``pid`` still starting: Python's own SIGINT handler is in
    place (a Ctrl-C now raises ``KeyboardInterrupt``), ``vidcap.decode_pool.main`` has not
    yet set SIGINT aside."""
    found: list[int] = []
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            status = Path(f"/proc/{child}/status").read_text().splitlines()
        except OSError:
            continue
        masks = dict(line.split(":\t", 1) for line in status if ":\t" in line)
        sigint = 1 << (signal.SIGINT - 1)
        caught = int(masks.get("SigCgt", "0"), 16) & sigint
        if b"vidcap.decode_pool" in command and caught:
            found.append(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.slow  # over 3 s: in make test, not make test-fast
def test_ctrl_c_while_the_decoders_start_is_one_line_and_130(tmp_path: Path) -> None:
    """Regression (#16.8): two ``KeyboardInterrupt`` tracebacks from decoder processes still
    importing. The terminal's Ctrl-C reaches the whole foreground process group: send it
    to the group the moment the first decoder process exists."""
    proc = subprocess.Popen(
        [*CMD, "caption", str(SAMPLES), "--out", str(tmp_path), "--model", "tiny",
         "--decode-workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (children := _decoders(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.002)
    assert children, "no decoder process started"
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines() == [INTERRUPTED]
    deadline = time.monotonic() + 10
    while any(map(_running, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, children))  # none left behind


# The runs stopped once their first video is done: 8 copies of subject.mp4 (340 frames), a
# caption every 4th frame: 85 frames a video, 7 x 85 still to do when the signal comes.
# (Every frame made the wait for the first video 4 s longer, and checked nothing more.)
EVERY_N = "4"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.slow  # over 3 s: in make test, not make test-fast
@pytest.mark.parametrize("ray", [False, True], ids=["embedded", "ray"])
def test_sigterm_stops_a_run_as_ctrl_c_does_recording_what_is_done(
    tmp_path: Path, ray: bool
) -> None:
    """Regression: SIGTERM (``kill``, ``timeout``, ``docker stop``, a scheduler's pre-emption)
    ended a run on the spot: no ``summary.json``, no page for the videos it had finished,
    exit -15 (with ``--ray``, Ray's own handler: exit 15). It stops as Ctrl-C does: one
    line, exit 143, what is done recorded."""
    if ray:
        pytest.importorskip("ray")
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(8):
        (videos / f"v{i}.mp4").write_bytes((SAMPLES / "subject.mp4").read_bytes())
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*CMD, "caption", str(videos), "--out", str(out), "--model", "tiny", "--every-n", EVERY_N,
         "--quiet", *(["--ray"] if ray else ["--decode-workers", "1"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    records = out / ".vidcap"  # a video is done once its record is written (after its outputs)
    deadline = time.monotonic() + 120
    while not list(records.glob("v*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(records.glob("v*.json")), "no video finished"
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "vidcap: stopped by SIGTERM; rerun the same command to resume"
    assert ray or len(lines) == 1, lines  # (Ray prints its own lines as its actors stop)
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    done = [v["name"] for v in summary["videos"] if v["status"] == "done"]
    assert done and len(done) < 8 and (out / "index.html").is_file()
    assert set(done) <= {p.stem for p in out.glob("*.jsonl")}  # (one may be between the two)
    deadline = time.monotonic() + 10
    while any(map(_running, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, children))  # no decoder left behind


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.slow  # over 3 s: in make test, not make test-fast
def test_a_closed_terminal_stops_a_run_recording_what_is_done(tmp_path: Path) -> None:
    """Regression: an SSH session dropped (or the terminal window closed) sends the run
    SIGHUP, which ended it on the spot: no ``summary.json``, no page for the videos it had
    finished. It stops as on SIGTERM (exit 129), its output going nowhere (the terminal is
    gone: a write to it fails, which must not stop the recording)."""
    import pty

    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(8):
        (videos / f"v{i}.mp4").write_bytes((SAMPLES / "subject.mp4").read_bytes())
    out = tmp_path / "out"
    terminal, tty = pty.openpty()
    proc = subprocess.Popen(
        [*CMD, "caption", str(videos), "--out", str(out), "--model", "tiny", "--every-n", EVERY_N,
         "--decode-workers", "1"],
        stdin=tty, stdout=tty, stderr=tty, start_new_session=True,
    )  # fmt: skip
    os.close(tty)
    os.set_blocking(terminal, False)
    records = out / ".vidcap"
    deadline = time.monotonic() + 120
    while not list(records.glob("v*.json")) and time.monotonic() < deadline:
        try:
            os.read(terminal, 65536)  # (the terminal shows the progress)
        except OSError:
            pass
        time.sleep(0.05)
    assert list(records.glob("v*.json")), "no video finished"
    children = _children(proc.pid)
    os.close(terminal)  # the terminal goes away: its session gets SIGHUP, as from the kernel
    os.killpg(proc.pid, signal.SIGHUP)
    assert proc.wait(timeout=60) == 129
    summary = json.loads((out / "summary.json").read_text())
    done = [v["name"] for v in summary["videos"] if v["status"] == "done"]
    assert done and len(done) < 8 and (out / "index.html").is_file()
    deadline = time.monotonic() + 10
    while any(map(_running, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_running, children))  # no decoder left behind


def test_ctrl_c_while_the_parser_imports_is_one_line_and_130(monkeypatch, capsys) -> None:
    """Ctrl-C while ``main`` imports PyAV and NumPy: an import cut short may surface as
    another error (NumPy raises ``ImportError``); it is still the one line and 130."""

    def interrupted_import():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("PyCapsule_Import could not import module 'datetime'") from None
        pytest.fail("SIGINT did not interrupt")

    monkeypatch.setattr("vidcap.cli.build_parser", interrupted_import)
    handler = signal.getsignal(signal.SIGINT)
    assert main(["--help"]) == 130
    assert capsys.readouterr().err == "vidcap: interrupted\n"  # (no command ran: nothing to resume)
    assert signal.getsignal(signal.SIGINT) is handler  # restored

    monkeypatch.setattr("vidcap.cli.build_parser", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # any other error is not hidden
        main(["--help"])


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


# ---- progress -------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _line(terminal: Terminal) -> str:
    return terminal.getvalue().replace("\n", "\r").split("\r")[-1]


def test_a_decoder_announces_its_frame_count_when_asked(short_video: Path) -> None:
    from vidcap.decode import Decoded, decode_events, encode_event, read_event
    from vidcap.settings import SamplingSettings

    sampling = SamplingSettings(fps=4.0)
    events = list(decode_events(3, str(short_video), sampling, (16, 16), plan=True))
    assert events[0] == Planned(3, 8) and isinstance(events[1], Decoded)
    digest = hashlib.sha256(short_video.read_bytes()).hexdigest()  # for its resume record
    assert events[-1] == Ended(3, 8, pytest.approx(2.0), sha256=digest) and len(events) == 10
    unread = list(decode_events(3, str(short_video), sampling, (16, 16), digest=False))[-1]
    assert unread == Ended(3, 8, pytest.approx(2.0))  # (vidcap mask: no record to keep it in)
    assert not any(
        isinstance(e, Planned) for e in decode_events(3, str(short_video), sampling, (16, 16))
    )
    for planned in (Planned(1, 0), Planned(2, None), Planned(3, 12345)):
        assert read_event(io.BytesIO(encode_event(planned))) == planned


def test_few_videos_count_frames_with_an_eta(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = _Progress(3, 1, quiet=False, jobs=[0, 1], by_frames=True)
    taken = list(progress.plans(iter([Planned(0, 3), Ended(0, 3, 1.0)])))
    assert taken == [Ended(0, 3, 1.0)]  # plans stay in here
    progress.item(Captioned(0, CaptionedFrame(0, 0.0, "a")))
    progress.bar.refresh()
    assert "1 frames [" in _line(terminal) and "1/3 videos" in _line(terminal)  # total unknown
    list(progress.plans(iter([Planned(1, 5)])))
    line = _line(terminal)
    assert "1/8 frames [" in line and "<" in line and "1/3 videos" in line  # ETA from frames
    for index in (1, 2):
        progress.item(Captioned(0, CaptionedFrame(index, index * 1.0, "a")))
    progress.item(Ended(0, 3, 3.0))
    progress.done(None)
    for index in range(4):  # video 1 gives one frame fewer than announced
        progress.item(Captioned(1, CaptionedFrame(index, index * 1.0, "b")))
    progress.item(Ended(1, 4, 4.0))
    progress.done(None)
    progress.close()
    line = terminal.getvalue().rstrip("\n").split("\r")[-1]
    assert "100%" in line and "7/7 frames" in line and "3/3 videos" in line
    assert terminal.getvalue().count("\n") == 1  # one line, redrawn in place


def test_more_frames_than_announced_grow_the_total(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = _Progress(1, 0, quiet=False, jobs=[0], by_frames=True)
    list(progress.plans(iter([Planned(0, 2)])))
    for index in range(3):
        progress.item(Captioned(0, CaptionedFrame(index, index * 1.0, "a")))
    progress.bar.refresh()
    assert "3/3 frames" in _line(terminal) and "100%" in _line(terminal)
    progress.close()


def test_frames_kept_from_a_journal_are_done_but_not_in_the_rate(monkeypatch) -> None:
    # A rerun after a stop: its first frames come from the journal at decoding speed, so
    # counted in the rate they would promise the rest as fast.
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = _Progress(1, 0, quiet=False, jobs=[0], by_frames=True)
    list(progress.plans(iter([Planned(0, 10)])))
    for index in range(6):
        progress.item(Captioned(0, CaptionedFrame(index, index * 1.0, "a"), kept=True))
    progress.bar.refresh()
    line = _line(terminal)
    assert "6/10 frames" in line and "(6 kept)" in line
    assert "<?," in line and "0.0 frames/s" in line  # nothing captioned yet: no ETA
    progress.item(Captioned(0, CaptionedFrame(6, 6.0, "a")))
    progress.bar.refresh()
    line = _line(terminal)
    assert "7/10 frames" in line and "(6 kept)" in line and "<?," not in line
    progress.close()


def test_many_videos_count_videos_and_show_frames(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(_Progress, "REFRESH_S", 0.0)
    progress = _Progress(5, 0, quiet=False, jobs=range(5), by_frames=False)
    for index in range(3):
        progress.item(Captioned(0, CaptionedFrame(index, index * 1.0, "a")))
    assert "0/5 videos" in _line(terminal) and "3 frames," in _line(terminal)
    assert "frames/s" in _line(terminal)
    progress.done(None)
    progress.close()
    assert "1/5 videos" in terminal.getvalue().rstrip("\n").split("\r")[-1]


def test_quiet_shows_nothing(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = _Progress(1, 0, quiet=True, jobs=[0], by_frames=True)
    list(progress.plans(iter([Planned(0, None)])))
    progress.item(Captioned(0, CaptionedFrame(0, 0.0, "a")))
    progress.item(Captioned(0, CaptionedFrame(1, 1.0, "a"), kept=True))  # (a resumed run)
    progress.done(None)
    progress.close()
    assert terminal.getvalue() == ""


@pytest.mark.slow  # a captioning run under a terminal (the line's logic: the tests above)
def test_one_video_on_a_terminal_shows_frames_done_of_total(
    short_video: Path, tmp_path: Path
) -> None:
    """Regression (#16.8): one long video showed ``0/1`` until it was done."""
    code, text = run_on_terminal(
        [
            *CMD,
            "caption",
            str(short_video),
            "--out",
            str(tmp_path),
            "--model",
            "tiny",
            "--every-n",
            "1",
        ]
    )
    assert code == 0, text
    assert "20/20 frames" in text and "1/1 videos" in text and "frames/s" in text
    lines = text.replace("\r\n", "\n").split("\n")
    assert len([line for line in lines if line]) == 2  # the progress line, the final line
    assert lines[-2].startswith("vidcap: 1 of 1 videos done, 20 frames")


# ---- conflicting flags are named ------------------------------------------------------


def test_query_with_question_names_the_conflict(tmp_path: Path, capsys) -> None:
    captions = tmp_path / "c.jsonl"
    captions.write_text('{"video": "v.mp4", "frame": 0, "time": 0.0, "caption": "a red circle"}\n')
    assert main(["mask", str(captions), "--query", "red", "--question", "red?"]) == 2
    assert capsys.readouterr().err == (
        "vidcap: error: --query and --question cannot be used together: give one\n"
    )


def test_clips_out_on_a_file_names_the_conflict(tmp_path: Path, capsys) -> None:
    (tmp_path / "segments.json").write_text('{"segments": [{"start": 0.0, "end": 1.0}]}')
    (tmp_path / "taken").write_text("x")
    argv = ["clips", str(SAMPLES / "shapes.mp4"), str(tmp_path / "segments.json")]
    assert main([*argv, "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == (
        f"vidcap: error: --out {tmp_path / 'taken'} is a file, not a folder: "
        "remove it or choose another\n"
    )


def test_ctrl_c_in_a_command_that_keeps_nothing_does_not_promise_a_resume(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    """Regression: Ctrl-C in ``vidcap mask --question`` said "rerun the same command to
    resume", but only ``vidcap caption`` keeps what it did; a rerun of the mask starts over."""

    def interrupted(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        pytest.fail("SIGINT did not interrupt")

    monkeypatch.setattr("vidcap.cli.mask.ask_frames", interrupted)
    video = SAMPLES / "subject.mp4"
    assert main(["mask", str(video), "--question", "red?", "--model", "tiny", "--quiet"]) == 130
    assert capsys.readouterr().err == "vidcap: interrupted\n"
