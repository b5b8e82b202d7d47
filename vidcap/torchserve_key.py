"""A TorchServe's inference key, found in the run folder ``torchserve/start.sh`` leaves,
and how a server says it refused a key. Finding which folder (``--token``,
``$VIDCAP_TOKEN``, a run folder) is the command line's job (``vidcap.cli.remote``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vidcap import jsontext
from vidcap.server_url import origin

# Named in the hints; read by the command line only (``vidcap.cli.remote``).
TOKEN_ENV = "VIDCAP_TOKEN"
# TorchServe 0.12 answers a missing, wrong or expired key so (HTTP 400).
TORCHSERVE_KEY_REFUSED = "Token Authorization failed"
KEY_HINT = f" (pass the server's inference key with --token or ${TOKEN_ENV})"

# What ``torchserve/start.sh`` leaves in a TorchServe's run folder (``$TS_RUN_DIR``).
KEY_FILE_NAME = "key_file.json"  # TorchServe's keys (mode 600)
ADDRESS_FILE_NAME = "inference_url"  # the address its inference API (the gate) listens on
GATE_PID_NAME = "gate.pid"  # the gate's process: the server runs while it does
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - a recorded bind address


@dataclass
class TorchServeKey:
    """The inference key of the TorchServe that ``torchserve/start.sh`` runs from ``run_dir``.

    It goes to that TorchServe only: to URLs whose scheme, host and port are the inference
    address ``start.sh`` recorded in the same folder (``inference_url``; a server bound to
    ``0.0.0.0`` or ``::`` is reached at ``127.0.0.1`` or ``::1``), and only while the
    server's gate runs (``gate.pid``: a live process of this user's that is the gate).
    ``read`` (re)reads all three; the client calls it again when the server refuses the
    key. ``key`` is ``None`` when any of it is missing or unreadable.
    """

    run_dir: Path
    key: str | None = None
    address: str | None = None
    origins: frozenset[tuple[str, str, int]] = field(default_factory=frozenset)

    def read(self) -> TorchServeKey:
        self.key, self.address, self.origins = None, None, frozenset()
        try:
            keys = jsontext.loads((self.run_dir / KEY_FILE_NAME).read_text(encoding="utf-8"))
            key = keys["inference"]["key"]
            address = (self.run_dir / ADDRESS_FILE_NAME).read_text(encoding="utf-8").strip()
        except (OSError, ValueError, KeyError, TypeError):
            return self
        if not isinstance(key, str) or not key or not _gate_runs(self.run_dir / GATE_PID_NAME):
            return self
        scheme, host, port = origin(address)
        origins = {(scheme, host, port)}
        if host in _WILDCARDS:
            origins = {(scheme, _WILDCARDS[host], port)}
        self.key, self.address, self.origins = key, address, frozenset(origins)
        return self

    def for_url(self, url: str) -> str | None:
        """The key, when ``url`` is this TorchServe's; else ``None``."""
        return self.key if origin(url) in self.origins else None


def _gate_runs(pid_file: Path) -> bool:
    """The process named in ``pid_file`` runs, is this user's, and is vidcap's gate."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
        os.kill(pid, 0)  # PermissionError: another user's process, not this server's gate
    except (OSError, ValueError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.is_dir():  # no /proc here: the live pid is all there is to go on
        return True
    try:
        return b"vidcap.serve.gate" in cmdline.read_bytes()
    except OSError:
        return False


def key_refused(status: int, message: str) -> bool:
    """A server's answer that the key is missing, wrong or expired."""
    return status == 401 or (status == 400 and message.startswith(TORCHSERVE_KEY_REFUSED))
