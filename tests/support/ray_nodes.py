"""Ray clusters started as on a real one (``ray start --head``, ``ray start --address``),
their nodes on this machine, each under the environment a test gives it: another
``PYTHONPATH`` (a node whose image holds another vidcap), a ``HOME`` of the test's own
(Ray's token file, ``~/.ray/auth_token``, is the test's, never the user's).

Every process of such a cluster carries a marker in its environment; they are found by it
(``marked_processes``) and killed by their ids when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import free_port

MARKER = "VIDCAP_RAY_TEST_MARKER"
RAY = str(Path(sys.executable).parent / "ray")


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """Processes whose environment carries ``marker``: (pid, command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ:
            found.append((int(proc.name), cmdline))
    return found


def without_ray(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without Ray's variables: a ``ray.init`` earlier in this process (another test
    file's local cluster) leaves ``RAY_AUTH_MODE=token`` in ``os.environ`` (Ray 2.60 turns
    token authentication on for the clusters it starts), which processes started with it
    would take for a cluster of their own that wants one."""
    return {key: value for key, value in env.items() if not key.startswith("RAY_")}


class RayNodes:
    """A head (started at once) and the nodes a test adds; ``address`` is the head's."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.marker = uuid.uuid4().hex
        self.home = home
        self.env = {**without_ray(env), "HOME": str(home), MARKER: self.marker}
        self.env |= {"RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
        # (not under tmp_path: Ray's socket paths must fit in 107 bytes)
        self.temp = Path(tempfile.mkdtemp(prefix="vrn-", dir="/tmp"))
        self.address = f"127.0.0.1:{free_port()}"

    def start_head(self, cpus: int) -> None:
        port = self.address.split(":")[1]
        self._start(["--head", "--port", port, "--include-dashboard", "false"], {}, cpus)

    def add(self, cpus: int, env: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
        """A node joining the head, its processes under ``env`` over the cluster's."""
        self._start(["--address", self.address], env, cpus)

    def _start(self, args: list[str], env: Mapping[str, str], cpus: int) -> None:
        common = ["--num-cpus", str(cpus), "--num-gpus", "0", "--disable-usage-stats"]
        if "--head" in args:
            common += ["--temp-dir", str(self.temp)]
        started = subprocess.run(
            [RAY, "start", *args, *common], env={**self.env, **env},
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr[-3000:]

    def stop(self) -> None:
        for pid, _ in marked_processes(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


@contextmanager
def ray_nodes(home: Path, env: Mapping[str, str], cpus: int = 1) -> Iterator[RayNodes]:
    """A ``ray start`` cluster of one head of ``cpus`` CPUs for the block; nothing of it
    left after."""
    home.mkdir(parents=True, exist_ok=True)
    nodes = RayNodes(home, env)
    try:
        nodes.start_head(cpus)
        yield nodes
    finally:
        nodes.stop()
