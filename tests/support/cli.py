"""``vidcap`` run in this process, with what it would print on a terminal captured.

Starting ``python -m vidcap`` costs a test a second or more (importing torch and
transformers again); ``run_main`` calls ``vidcap.cli.main`` instead, for tests whose point is
what the command does and says, not how its process starts or exits (those keep the
subprocess). Everything the command's process would print on stderr is collected: its own
lines, its log records (formatted as ``main``'s ``logging.basicConfig`` would, which does
nothing under pytest: pytest's handlers are already on the root logger), any warning raised
while it ran, and whatever reaches file descriptor 2 (FFmpeg, the decoder processes it
starts), so a "one line on stderr" or "no traceback" check stays as strict.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import tempfile
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    """As ``subprocess.CompletedProcess`` has it: exit status, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


def run_main(*args: object) -> Result:
    """``vidcap ARGS`` in this process; argparse's ``SystemExit`` becomes the exit status."""
    from vidcap.cli import main

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("vidcap: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as fd_err:
        os.dup2(fd_err.fileno(), 2)
        try:
            with (
                warnings.catch_warnings(record=True) as caught,
                contextlib.redirect_stdout(out),
                contextlib.redirect_stderr(err),
            ):
                try:
                    code = main([str(a) for a in args])
                except SystemExit as exc:  # argparse: usage errors, --help
                    code = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            root.removeHandler(handler)
        fd_err.seek(0)
        below = fd_err.read().decode(errors="replace")
    for warning in caught:
        err.write(
            warnings.formatwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
        )
    return Result(code, out.getvalue(), err.getvalue() + below)


def obeying_permissions(command: list[str]) -> list[str]:
    """``command`` as a process that file permissions bind: as root (which reads any file)
    without its permission-override capabilities (``setpriv``); skips where that cannot be."""
    import shutil

    import pytest

    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("root reads any file; setpriv (util-linux) drops that here")
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", drop, "--inh-caps", drop, *command]


def in_a_small_folder(size: str, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` (sh) run with a fresh tmpfs of ``size`` mounted at ``$SMALL``, in a mount
    namespace of its own (nothing is left mounted); skips where namespaces are not allowed."""
    import pytest

    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    try:
        subprocess.run([*unshare, "true"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no mount namespace for a small tmpfs here: {exc}")
    prelude = f'SMALL="$(mktemp -d)" && mount -t tmpfs -o size={size} tmpfs "$SMALL" && '
    return subprocess.run(
        [*unshare, "sh", "-c", prelude + script], capture_output=True, text=True, timeout=600
    )
