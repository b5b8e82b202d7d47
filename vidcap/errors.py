"""Errors a user can cause. Each carries a one-line message fit to print as is."""

from __future__ import annotations

import errno
import shlex
from importlib import metadata


def reason(exc: BaseException) -> str:
    """What an error from a library says, in a few words: its text, else its kind (for a
    line of our own around it; ``replies.describe`` names the kind too)."""
    return str(exc).strip() or type(exc).__name__


class VidcapError(Exception):
    """Base class: a problem the user can fix, reported in one line, no traceback."""


# An empty path or URL given: never taken for the working folder, as ``Path("")`` would be.
EMPTY_PATH = "an empty path (an unset shell variable?); give a file or folder ('.' for this one)"


class UsageError(VidcapError):
    """A bad option or setting (CLI exit code 2, HTTP 400)."""


class SettingError(UsageError):
    """A setting's value refused, said with its command-line flag (``--num-beams: …``);
    ``reason`` says it without (a server's client sent a field, not a flag)."""

    def __init__(self, flag: str, reason: str) -> None:
        super().__init__(f"{flag}: {reason}")
        self.reason = reason


class ModelLoadError(VidcapError):
    """The model could not be loaded (not cached, unreachable, or not a BLIP-2 checkpoint)."""


class BackendUnavailable(VidcapError):
    """Captions cannot be had at all (every server down): the run stops, resumable."""


# --- servers (``--server``: ``vidcap.client``) ---


class RemoteError(VidcapError):
    """A server could not caption a batch of frames."""


class ServerUnavailable(RemoteError, BackendUnavailable):
    """No server answered (connection errors, timeouts, 503/429) within the retries."""


class ServerChanged(RemoteError, BackendUnavailable):
    """A server (``url``) answered with another model's captions than the run began with
    (restarted with another model, or another commit of it, mid-run). Its answer is
    dropped and the server no longer used; when it was the last, the run stops rather
    than mix two models' captions."""

    def __init__(self, message: str, url: str = "", change: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.change = change or message  # what the server now answers with, in words


class ServerRejected(RemoteError):
    """The servers cannot be used as asked (another model size, a refused key, a wrong URL)."""


class NodeMismatch(VidcapError):
    """A Ray worker runs another vidcap, outputs revision or model than the driver records
    (``vidcap.ray_nodes``): the run stops rather than commit what it made."""


class OutFolderFull(VidcapError):
    """The output folder takes no more outputs (disk full, over quota, read-only): the run
    stops, resumable, rather than fail every video left after captioning it."""


# The errors of a write that say the output folder takes nothing more, whichever video is
# written (``OutFolderFull``): a run stops at the first, as when the backend goes, instead
# of captioning every video left only to fail writing it.
FOLDER_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


class UploadFailed(VidcapError):
    """A remote ``--out`` did not take the run's outputs at its end; they are left in the
    staging folder the message names."""


class VideoError(VidcapError):
    """One input is not a decodable video: that file fails alone."""


class BadRequest(VidcapError):
    """A server request that cannot be served; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def install_hint(extra: str) -> str:
    """How to install what vidcap's optional ``extra`` needs: the packages themselves, as
    vidcap's own metadata lists them (they install anywhere), then the extra, which only a
    vidcap checkout can install (vidcap is installed from its repository)."""
    try:
        requires = metadata.requires("vidcap") or []
    except metadata.PackageNotFoundError:
        requires = []
    marker = f'extra == "{extra}"'
    packages = [r.split(";")[0].strip() for r in requires if marker in r]
    checkout = f"pip install -e '.[{extra}]' in a vidcap checkout"
    if not packages:
        return checkout
    return f"pip install {' '.join(shlex.quote(p) for p in packages)} (or {checkout})"
