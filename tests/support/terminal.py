"""Run a command with its stderr on a pseudo-terminal (as a user's shell has it)."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Sequence


def run_on_terminal(command: Sequence[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``command`` with stderr on a 120-column terminal; its exit status and what it drew."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(list(command), stdout=subprocess.DEVNULL, stderr=child_fd)
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=timeout)
    os.close(main_fd)
    return proc.returncode, b"".join(chunks).decode(errors="replace")
