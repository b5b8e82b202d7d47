"""Past one machine: the same stages as a Ray Data pipeline (``vidcap caption --ray``).

::

    jobs (plan: dedup, names, resume)        on the driver
      │  from_items: a block per video (up to 2,000 blocks)
      ▼
    decode tasks (CPUs)                      decode.decode_events, as embedded; a row per
      │  rows: one encoded event each        event (encode_event): each sampled frame, then
      │  (job, event bytes)                  the video's end or failure
      ▼
    Captioner actor pool (GPUs)              one Captioner per actor, batches across videos
      │  the same rows without pixels,
      │  plus their captions
      ▼
    Committer                                on the driver, fed by engine.deliver: per-video
                                             files, Parquet shards, resume records,
                                             summary.json — as embedded

Nothing is lost or doubled when a worker dies: Ray retries the decode task or restarts the
actor and retries its batch, and the ``Committer`` keeps one caption per frame index. A
decode task that keeps dying (after ``decode_retries``) fails the videos of its block (one
video per block up to 2,000 videos) and no other; a batch the model raises on is captioned
again frame by frame (``backend.caption_each``, as embedded), so only the video of a frame
the model fails on by itself fails; such videos are listed in ``summary.json`` and redone by
a rerun. The rerun of a run stopped part-way through a video takes the captions its
journal holds (``vidcap.journal``): the decode task sends those frames on without their
pixels, and the actors caption only the rest.

Ray is an optional dependency (``pip install -e '.[ray]'``), imported only here.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vidcap import errors, scratch
from vidcap.backend import CaptionFailed, caption_each
from vidcap.commit import Committer, check_out_dir
from vidcap.decode import (
    Decoded,
    Event,
    Failed,
    Warned,
    decode_events,
    encode_event,
    read_event,
)
from vidcap.engine import Captioned, FailingStreak, Uncaptioned, deliver
from vidcap.errors import EMPTY_PATH, UsageError, VidcapError, install_hint
from vidcap.inputs import PATH_COLUMN, InputVideo, expand_inputs, is_url, local_path
from vidcap.jobs import RunSettings, RunWriter, VideoJob, VideoResult, split_formats
from vidcap.model import (
    auto_batch_size,
    ensure_loadable,
    pinned,
    precision_of,
    resolve_model_path,
)
from vidcap.out_lock import gone_if_unused, holding
from vidcap.outputs import CaptionedFrame
from vidcap.parquet import DEFAULT_SHARD_ROWS, run_writers_for
from vidcap.plan import plan, say_other_precisions
from vidcap.ray_nodes import Reports, captioner_report, decoder_report
from vidcap.remote_out import output_folder
from vidcap.report import refresh_report
from vidcap.settings import (
    GenerationSettings,
    ModelSettings,
    SamplingSettings,
    check_field_types,
)
from vidcap.wording import counted

log = logging.getLogger(__name__)
# Ray's logger whose notice says nothing to a vidcap user, shown with -v only: that the
# local cluster uses token authentication (vidcap's own choice; the notice tells how to
# turn it off). Ray Data's progress lines ("Starting execution", its plan, "execution
# finished", "Progress bars disabled") are kept back where the pipeline is made.
RAY_AUTH_NOTICE = "ray._private.authentication.authentication_token_setup"

# Videos are split into at most this many blocks, each a decode task (and the unit Ray
# retries): one per video up to here; past it, a block per video would cost the driver
# about a millisecond each before anything runs (17 s for 20,000 videos).
MAX_DECODE_BLOCKS = 2000


@dataclass(frozen=True)
class RaySettings:
    """Where the pipeline runs and how wide each stage is; ``None`` picks from the cluster.

    ``address``: ``None`` starts a local cluster, else joins one (``auto``, ``HOST:PORT``,
    ``ray://HOST:10001``). ``gpus_per_actor``: 1 when the cluster has GPUs, else 0.
    ``actors``: Captioner actors, default one per GPU (``GPUs // gpus_per_actor``), 1 on
    CPUs. ``decode_tasks``: decode tasks at once, default Ray's choice (one per free CPU).
    ``frames_per_block``: sampled frames per block out of a decode task.
    """

    address: str | None = None
    gpus_per_actor: float | None = None
    actors: int | None = None
    decode_tasks: int | None = None
    frames_per_block: int = 32
    decode_retries: int = 3

    def __post_init__(self) -> None:
        check_field_types(self)  # (``actors="2"``: one line, not a TypeError from ``<``)
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise UsageError(f"--ray-gpus-per-actor must be >= 0, got {self.gpus_per_actor}")
        if self.actors is not None and self.actors < 1:
            raise UsageError(f"--ray-actors must be >= 1, got {self.actors}")
        if self.decode_tasks is not None and self.decode_tasks < 1:
            raise UsageError(f"--ray-decode-tasks must be >= 1, got {self.decode_tasks}")
        if self.frames_per_block < 1:
            raise UsageError(f"frames_per_block must be >= 1, got {self.frames_per_block}")
        if self.address is not None:  # (its form, always: a run with nothing to do too)
            address_parts(self.address)


# ---- decode stage (Ray tasks on CPUs) ---------------------------------------------------


def decode_video(
    job: int,
    source: str,
    sampling: SamplingSettings,
    size: tuple[int, int],
    frames_per_block: int,
    kept: frozenset[tuple[int, float]] = frozenset(),
    given: str | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One video's events (frames resized for the model, then its end), in blocks of rows;
    a frame in ``kept`` (index, time: its caption journaled by a stopped run) without its
    pixels, which the model stage passes over. ``given``: the source as the driver was
    given it (relative), named in its warnings and failure instead of ``source``
    (``task_source``: absolute), as an embedded run names it."""
    rows: list[bytes] = []
    # One decoder thread: a decode task holds one CPU, and a node runs one task per CPU.
    # (its warnings travel as events: a Ray worker's own output is not shown with --quiet)
    for event in decode_events(job, source, sampling, size, threads=1):
        if isinstance(event, Decoded) and (event.frame.index, event.frame.time) in kept:
            event = _without_pixels(event)
        elif given is not None and given != source:
            event = _as_given(event, source, given)
        rows.append(encode_event(event))
        if len(rows) >= frames_per_block:
            yield _rows(job, rows)
            rows = []
    if rows:
        yield _rows(job, rows)


def _as_given(event: Event, source: str, given: str) -> Event:
    if isinstance(event, Failed):
        return replace(event, error=event.error.replace(source, given))
    if isinstance(event, Warned):
        return replace(event, message=event.message.replace(source, given))
    return event


def _rows(job: int, events: list[bytes]) -> dict[str, np.ndarray]:
    return {
        "job": np.full(len(events), job, dtype=np.int64),
        "event": np.array(events, dtype=object),
        "decoder": np.full(len(events), decoder_report(), dtype=object),  # (vidcap.ray_nodes)
    }


def _event(data: bytes) -> Event:
    event = read_event(io.BytesIO(data))
    if event is None:
        raise ValueError("a row holds a truncated decoder event")
    return event


def _decode_batch(
    batch: dict[str, np.ndarray],
    sampling: SamplingSettings,
    size: tuple[int, int],
    frames_per_block: int,
) -> Iterator[dict[str, np.ndarray]]:
    rows = zip(batch["job"], batch["source"], batch["kept"], batch["given"], strict=True)
    for job, source, kept, given in rows:
        journaled = frozenset((int(i), float(t)) for i, t in json.loads(str(kept)))
        yield from decode_video(
            int(job), str(source), sampling, size, frames_per_block, journaled, str(given)
        )


# ---- model stage (Ray actors, one Captioner each) ---------------------------------------


class CaptionActor:
    """Holds one ``Captioner``; captions the frame rows of a batch, passes the others on
    (``failed``: why the model failed on a frame by itself, else empty; ``kept``: a frame
    without pixels, its caption journaled by a stopped run, not captioned)."""

    def __init__(self, model: ModelSettings, generation: GenerationSettings) -> None:
        from vidcap.model import Captioner

        self.captioner = Captioner.load(model)
        self.generation = generation
        self.report = captioner_report(self.captioner.revision, self.captioner.precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        events = [_event(data) for data in batch["event"]]
        decoded = [i for i, event in enumerate(events) if isinstance(event, Decoded)]
        kept = np.zeros(len(events), dtype=bool)
        kept[[i for i in decoded if events[i].frame.rgb.size == 0]] = True
        frames = [i for i in decoded if not kept[i]]
        captions = np.full(len(events), "", dtype=object)
        failed = np.full(len(events), "", dtype=object)
        if frames:
            images = [events[i].frame.rgb for i in frames]
            answers = caption_each(self.captioner, images, self.generation)
            for i, answer in zip(frames, answers, strict=True):
                if isinstance(answer, CaptionFailed):
                    failed[i] = answer.reason
                else:
                    captions[i] = answer
        # The pixels stay here: the driver needs each frame's index and time only.
        rows = [encode_event(_without_pixels(event)) for event in events]
        return {
            "job": batch["job"],
            "event": np.array(rows, dtype=object),
            "caption": captions,
            "failed": failed,
            "kept": kept,
            # What decoded and captioned each row (vidcap.ray_nodes: the driver checks them)
            "decoder": batch.get("decoder", np.full(len(events), "", dtype=object)),
            "captioner": np.full(len(events), self.report, dtype=object),
        }


_NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)


def _without_pixels(event: Event) -> Event:
    if isinstance(event, Decoded):
        return Decoded(event.job, replace(event.frame, rgb=_NO_PIXELS))
    return event


# ---- the driver ---------------------------------------------------------------------------


@contextmanager
def ray_cluster(address: str | None, quiet: bool = False) -> Iterator[None]:
    """Connected to Ray for the block: a new local cluster (``None``) or ``address``.

    A local cluster started here is shut down on exit, its processes with it, and is this
    user's alone (``local_cluster``). When this process is already connected (e.g. a
    notebook called ``ray.init``), that connection is used and left as it was. ``quiet``:
    Ray's Python warnings are not printed, nor are its workers' logs forwarded (a failed
    video's error is in ``summary.json``); Ray's C++ core still prints its own (one line
    about actor restarts in Ray 2.60). Without ``quiet`` the run says what an embedded run
    says (``RAY_AUTH_NOTICE``), unless ``-v`` asks for more.
    """
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray: {install_hint('ray')}") from exc
    if ray.is_initialized():
        yield
        return
    level = logging.ERROR if quiet else logging.WARNING
    if not log.isEnabledFor(logging.INFO):  # (-v: Ray's own lines too)
        logging.getLogger(RAY_AUTH_NOTICE).setLevel(logging.ERROR)
    if address is None:
        with local_cluster(ray, level):
            yield
        return
    reachable(address)
    try:
        log.info("joining the Ray cluster at %s", address)
        with _own_sigterm():
            ray.init(address=address, logging_level=level, log_to_driver=not quiet)
    except (ConnectionError, ValueError, RuntimeError, ray.exceptions.RayError) as exc:
        raise UsageError(f"cannot join the Ray cluster at {address}: {_refusal(exc)}") from exc
    try:
        yield
    finally:
        with _own_sigterm():  # (Ray 2.60's shutdown leaves SIGTERM to end the process)
            ray.shutdown()


# Where Ray 2.60 joins a cluster with token authentication and no token, or another: it
# retries for 20 s (its own lines, ``InvalidAuthToken``), then says it failed to connect
# to the address the GCS gave, its cause (this) in a traceback's text only.
_NO_TOKEN = "InvalidAuthToken"
_TOKEN_HELP = (
    "RAY_AUTH_TOKEN=TOKEN, or RAY_AUTH_TOKEN_PATH=FILE (`ray get-auth-token` on the "
    "cluster's head prints it)"
)


def _refusal(exc: BaseException) -> str:
    """Why ``ray.init`` could not join, in words: a cluster that wants a token said so."""
    said = f"{exc} {exc.__cause__ or ''}"
    token_mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"
    if _NO_TOKEN in said and not token_mode:
        return (
            "it wants a token (Ray's token authentication): set RAY_AUTH_MODE=token and "
            + _TOKEN_HELP
        )
    if _NO_TOKEN in said:
        return f"it refused this driver's token: give the cluster's, {_TOKEN_HELP}"
    if "no authentication token was found" in said:  # (RAY_AUTH_MODE=token alone)
        return f"RAY_AUTH_MODE=token but no token found: give the cluster's, {_TOKEN_HELP}"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# Seconds to open a TCP connection to a cluster's address before joining: Ray itself
# retries an address nothing answers at for minutes, printing a line every 40 s.
REACH_TIMEOUT_S = 10.0


def address_parts(address: str) -> tuple[str, int] | None:
    """``address``'s host and port (``HOST:PORT``, ``ray://HOST:PORT``; None for ``auto``,
    Ray's to find); ``UsageError`` for anything else. Checked when the settings are made,
    whether or not a video is left to do; whether a cluster answers there only when one is
    (``reachable``): a rerun with nothing to do needs no cluster (one taken down already),
    and an address nothing answers at would cost it ``REACH_TIMEOUT_S``."""
    if address == "auto":
        return None
    where = address.removeprefix("ray://")
    host, colon, port = where.rpartition(":")
    # (ASCII digits only: str.isdigit takes '³', which int() refuses; a port past 65535
    # is no port: Python wraps it, connecting to another)
    number = int(port) if port.isascii() and port.isdigit() else 0
    if not colon or not host or not 0 < number <= 65535 or "/" in where:
        raise UsageError(
            f"--ray={address}: give auto, HOST:PORT or ray://HOST:PORT (a cluster's address)"
        )
    return host, number


def reachable(address: str) -> None:
    """A usage error unless ``address`` (``HOST:PORT``, ``ray://HOST:PORT``; ``auto``
    is Ray's to find) answers a TCP connection within ``REACH_TIMEOUT_S``."""
    parts = address_parts(address)
    if parts is None:
        return
    host, port = parts
    tls = os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true")  # (no h2 check)
    try:
        with socket.create_connection((host.strip("[]"), port), REACH_TIMEOUT_S) as conn:
            speaks = tls or speaks_grpc(conn)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot reach the Ray cluster at {address} ({reason})") from exc
    if not speaks:
        raise UsageError(
            f"{address} answers, but not as a Ray cluster does (gRPC): is it the right port? "
            "(a cluster's is 6379, or 10001 for ray://; the dashboard's, 8265, is not one)"
        )


# HTTP/2's client connection preface and an empty SETTINGS frame: a gRPC server (Ray's GCS
# and its client server) answers with a SETTINGS frame of its own.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def speaks_grpc(conn: socket.socket) -> bool:
    """Does the server on ``conn`` answer HTTP/2's preface with a SETTINGS frame (gRPC,
    as Ray's servers are), within ``REACH_TIMEOUT_S``? An HTTP/1 server (a dashboard, a
    web server given by mistake) answers otherwise or not at all; ``ray.init`` would wait
    on it for minutes."""
    conn.settimeout(REACH_TIMEOUT_S)
    head = b""
    try:
        conn.sendall(_H2_PREFACE)
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:  # (reset, or silent past the timeout)
        return False
    return len(head) == 9 and head[3] == 0x04


def check_resources(
    actors: int,
    gpus: float,
    local: bool,
    have: Mapping[str, float] | None = None,
    free: Mapping[str, float] | None = None,
) -> None:
    """Where the cluster cannot hold the pipeline, say so: it would wait for ever. Each
    Captioner actor takes a CPU (and ``gpus``), each decode task a CPU: the actors must
    leave one. ``have``: the cluster's resources (default: the connected cluster's). A
    usage error on a local cluster; on a joined one, whose autoscaler may add nodes, a
    warning. On a joined cluster, also one where other jobs hold what the run needs now
    (``free``: its free resources, default the connected cluster's): it waited saying
    nothing until they let go."""
    if have is None:
        import ray

        have = ray.cluster_resources()
    cpus, cluster_gpus = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    problem = None
    if gpus > 0 and actors * gpus > cluster_gpus:
        problem = (
            f"{counted(actors, 'Captioner actor')} of {gpus:g} GPU each need "
            f"{actors * gpus:g} GPUs; the cluster has {cluster_gpus:g}"
        )
    elif actors >= cpus:
        problem = (
            f"{counted(actors, 'Captioner actor')} take one CPU each, and the cluster has "
            f"{cpus:g}: none is left to decode (give fewer --ray-actors)"
        )
    if problem is None:
        if not local:
            _say_busy(actors, gpus, free)
        return
    if local:
        raise UsageError(problem)
    log.warning("%s: the run waits until the cluster has them", problem)


def _say_busy(actors: int, gpus: float, free: Mapping[str, float] | None) -> None:
    """A warning where a joined cluster's free CPUs or GPUs cannot start the actors and a
    decode task now: other jobs hold them, and the run waits (Ray says nothing)."""
    if free is None:
        import ray

        free = ray.available_resources()
    cpus, free_gpus = float(free.get("CPU", 0)), float(free.get("GPU", 0))
    if actors + 1 <= cpus and actors * gpus <= free_gpus:
        return
    log.warning(
        "the cluster has %g CPUs and %g GPUs free (other jobs hold the rest); %s and a "
        "decode task need %g and %g: the run waits until they are free",
        cpus, free_gpus, counted(actors, "Captioner actor"), actors + 1, actors * gpus,
    )  # fmt: skip


def local_resources() -> dict[str, float] | None:
    """The CPUs and GPUs of the local cluster ``ray_cluster(None)`` would start, as Ray 2.60
    counts them when it starts one (``ResourceAndLabelSpec``: its CPU count, and the GPUs
    its NVIDIA manager finds, no more than ``CUDA_VISIBLE_DEVICES`` shows), so that a run
    the cluster cannot hold is refused at once, not after the cluster's start. None where
    it would start none (this process is connected already) or Ray is missing
    (``ray_cluster`` says so)."""
    try:
        import ray
        from ray._private import accelerators, utils  # Ray is pinned to 2.60 (pyproject.toml)
    except ImportError:
        return None
    if ray.is_initialized():
        return None

    gpus = 0
    manager = accelerators.get_accelerator_manager_for_resource("GPU")
    if manager is not None:
        gpus = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        if visible is not None:
            gpus = min(gpus, len(visible))
    return {"CPU": float(utils.get_num_cpus()), "GPU": float(gpus)}


@contextmanager
def _own_sigterm() -> Iterator[None]:
    """The process's SIGTERM handler kept across the block: ``ray.init`` installs its own
    (``sys.exit(15)``), which would end a run without its "stopped by SIGTERM" line and
    exit status (``vidcap.cli.main`` stops a run on SIGTERM as on Ctrl-C)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


# What Ray 2.60 needs told so that a local cluster is one user's on one machine.
LOCAL_UMASK = 0o077


@contextmanager
def local_cluster(ray, level: int = logging.WARNING) -> Iterator[None]:  # noqa: ANN001 - ray
    """A new single-machine Ray cluster for the block, reachable by this user only.

    * Every listener on loopback: Ray 2.60 gives a new node the host's address and then
      binds its gRPC servers (GCS, raylet, workers, driver) on every interface and its
      runtime-env agent on that address; a node at 127.0.0.1 binds them all to loopback.
      Ray picks 127.0.0.1 itself where ``ENABLE_RAY_CLUSTER`` is off (its single-machine
      mode, the default on macOS and Windows; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), so
      that is switched off while the cluster starts. No dashboard.
    * Files for this user only: the session folders (which Ray makes mode 777) live in a
      new mode-700 folder (``tempfile.mkdtemp``), removed afterwards; the cluster's
      processes start under umask 077, so what they create (Ray's token file
      ``~/.ray/auth_token`` when it makes one, logs, sockets) is mode 600/700; a token file
      Ray made earlier readable by others is made mode 600.
    """
    from ray._private import ray_constants  # Ray is pinned to 2.60 (pyproject.toml)

    log.info("starting a local Ray cluster (loopback only)")
    temp_root = cluster_folder()
    _private_token_file()
    umask = os.umask(LOCAL_UMASK)
    cluster_mode = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _own_sigterm():
            ray.init(
                address="local",  # (a new cluster, whatever RAY_ADDRESS says)
                include_dashboard=False,
                logging_level=level,
                log_to_driver=level < logging.ERROR,
                _temp_dir=str(temp_root / "ray"),
            )
    except BaseException as exc:
        shutil.rmtree(temp_root, ignore_errors=True)
        if isinstance(exc, OSError | RuntimeError):  # (not Ctrl-C)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise VidcapError(f"cannot start a local Ray cluster: {reason}") from exc
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_mode
        os.umask(umask)
    _private_token_file()
    node_ip = ray.util.get_node_ip_address()
    if node_ip != "127.0.0.1":
        log.warning("the local Ray cluster listens on %s, not on loopback only", node_ip)
    try:
        yield
    finally:
        with _own_sigterm():  # (Ray 2.60's shutdown leaves SIGTERM to end the process)
            ray.shutdown()
        shutil.rmtree(temp_root, ignore_errors=True)


# The longest path Ray 2.60 gives a socket below the cluster's folder (the plasma store's, in the
# session folder it names after the time and this process), and the longest path a Unix
# socket may have: Ray refuses to start past it.
_SOCKET_TAIL = "/ray/session_2026-12-07_19-16-57_796708_{pid}/sockets/plasma_store"
SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107


def sockets_fit(folder: Path) -> bool:
    """Do the socket paths of a Ray cluster whose temp folder is ``folder`` fit?"""
    longest = os.fsencode(f"{folder}{_SOCKET_TAIL.format(pid=os.getpid())}")
    return len(longest) <= SOCKET_PATH_MAX


def cluster_folder() -> Path:
    """A new mode-700 folder for this run's local cluster, in ``$TMPDIR``, else in ``/tmp``
    where ``$TMPDIR``'s path leaves Ray's sockets no room (``/var/tmp``, a scheduler's
    ``/tmp/slurm-123``, macOS's ``/var/folders/…``), as Ray itself uses ``/tmp`` on macOS.
    What killed runs' clusters left there is removed first."""
    for root in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        try:
            scratch.sweep("ray", root)  # (what a killed run's cluster left: sessions, logs)
            folder = scratch.folder("ray", root)
        except OSError:
            continue
        if sockets_fit(folder):
            return folder
        folder.rmdir()
    raise VidcapError(
        f"cannot start a local Ray cluster: the path of $TMPDIR ({tempfile.gettempdir()}) "
        "is too long for its sockets' paths; set TMPDIR to a shorter folder"
    )


def _private_token_file() -> None:
    """Ray's default token file (``~/.ray/auth_token``), if any, readable by this user only."""
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return  # the user's own file: theirs to protect
    token = Path.home() / ".ray" / "auth_token"
    try:
        mode = token.stat().st_mode
        if mode & 0o077:
            token.chmod(0o600)
            log.info("made %s readable by you only (it was mode %o)", token, mode & 0o777)
    except OSError:
        pass


def _actor_gpus(settings: RaySettings, have: Mapping[str, float] | None = None) -> float:
    """Each Captioner actor's GPUs: ``settings``', else one where the cluster has a GPU.
    ``have``: the cluster's resources (default: the connected cluster's)."""
    if settings.gpus_per_actor is not None:
        return settings.gpus_per_actor
    if have is None:
        import ray

        have = ray.cluster_resources()
    return 1.0 if float(have.get("GPU", 0)) >= 1 else 0.0


def stage_widths(
    settings: RaySettings, have: Mapping[str, float] | None = None
) -> tuple[int, float]:
    """Captioner actors, and each one's GPUs: ``settings``', else one actor per GPU of the
    cluster (1 without GPUs). ``have``: the cluster's resources (default: the connected
    cluster's)."""
    if have is None:
        import ray

        have = ray.cluster_resources()
    gpus = _actor_gpus(settings, have)
    actors = settings.actors
    if actors is None:
        actors = max(1, int(float(have.get("GPU", 0)) // gpus)) if gpus > 0 else 1
    return actors, gpus


def actor_device(settings: RaySettings) -> str:
    """Each Captioner actor's device (Ray must be connected). Ray gives an actor its GPU(s)
    as CUDA_VISIBLE_DEVICES: the device is "cuda"."""
    return "cuda" if _actor_gpus(settings) > 0 else "cpu"


def build_pipeline(
    jobs: Sequence[VideoJob],
    model: ModelSettings,
    sampling: SamplingSettings,
    generation: GenerationSettings,
    settings: RaySettings,
    quiet: bool = False,
    kept: Mapping[int, list[tuple[int, float]]] | None = None,
):  # -> ray.data.Dataset
    """decode tasks → Captioner actors, over the jobs of a run (Ray must be connected);
    ``kept``: per job, the frames (index, time) whose captions a stopped run journaled."""
    import ray
    import ray.data

    from vidcap.model import model_input_size

    actors, gpus = stage_widths(settings)
    device = actor_device(settings)
    log.info(
        "Ray pipeline: %s, %s with %g GPU each, decode tasks %s",
        counted(len(jobs), "video"),
        counted(actors, "Captioner actor"),
        gpus,
        settings.decode_tasks or "as CPUs allow",
    )
    kept = kept or {}
    items = [
        {
            "job": job.id,
            "source": task_source(job.source),
            "given": job.source,
            "kept": json.dumps(kept.get(job.id, [])),
        }
        for job in jobs
    ]
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), MAX_DECODE_BLOCKS))
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for task retries yet and warns about the generic one.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            _decode_batch,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={
                "sampling": sampling,
                "size": model_input_size(model.model),
                "frames_per_block": settings.frames_per_block,
            },
            num_cpus=1,
            compute=ray.data.TaskPoolStrategy(size=settings.decode_tasks),
            # Finite retries: a video that kills its decoder every time must not stall the run.
            max_retries=settings.decode_retries,
        )
    ds = ds.map_batches(
        CaptionActor,
        # Frames per actor call: --batch-size, else the device's auto batch (the Captioner
        # halves it on CUDA out-of-memory).
        batch_size=model.batch_size or auto_batch_size(device),
        batch_format="numpy",
        fn_constructor_kwargs={
            "model": replace(model, device=device),
            "generation": generation,
        },
        num_cpus=1,
        num_gpus=gpus or None,
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
    # A block that fails past its retries fails its videos (listed, redone by a rerun),
    # not the run.
    ds.context.max_errored_blocks = len(items)
    ds.context.enable_progress_bars = not quiet and sys.stderr.isatty()  # else log spam
    if quiet or not log.isEnabledFor(logging.INFO):  # (Ray Data configures its logging
        # as it is imported; --quiet: not a task's traceback either, its videos fail saying
        # why in a line each)
        logging.getLogger("ray.data").setLevel(logging.CRITICAL if quiet else logging.ERROR)
    return ds


def task_source(source: str) -> str:
    """A video's source as a decode task opens it: a local path made absolute against the
    driver's working folder. A relative one was opened against the worker's (the folder
    its node's ``ray start`` ran in), so each of the driver's relative inputs, and a
    relative list file's entries, failed "no such file" on a cluster joined with
    ``--ray ADDRESS``. URLs (``file://`` ones too) are left as they are."""
    if is_url(source) or source[:7].lower() == "file://":
        return source
    return os.path.abspath(source)


def feed(committer: Committer, batches: Iterator[dict[str, np.ndarray]]) -> None:
    """The pipeline's output rows → the Committer (any order, duplicates welcome). A model
    that fails every frame stops the run as the engine's does (``FailingStreak``); a batch
    from a worker that runs another vidcap or model than the run records stops it before
    any of its rows is delivered (``NodeMismatch``)."""
    streak = FailingStreak()
    uncaptioned: set[int] = set()
    reports = Reports(committer.settings.revision, committer.settings.precision)
    for batch in batches:
        reports.check("decode task", batch.get("decoder"))
        reports.check("Captioner actor", batch.get("captioner"))
        rows = zip(batch["event"], batch["caption"], batch["failed"], batch["kept"], strict=True)
        for data, caption, failed, kept in rows:
            event = _event(data)
            if isinstance(event, Decoded):
                decoded = event.frame
                journaled = committer.known(event.job, decoded.index, decoded.time)
                if kept and journaled is not None:
                    frame = CaptionedFrame(
                        decoded.index, decoded.time, journaled, damaged=decoded.damaged
                    )
                    deliver(committer, Captioned(event.job, frame, kept=True))
                    continue
                if kept:  # (a retried task's duplicate of a video finished already)
                    continue
                if failed:
                    why = Uncaptioned(event.job, decoded.index, decoded.time, str(failed))
                    deliver(committer, why)
                    if event.job not in uncaptioned:
                        uncaptioned.add(event.job)
                        streak.uncaptioned(str(failed))
                    continue
                streak.captioned()
                frame = CaptionedFrame(
                    decoded.index, decoded.time, str(caption), damaged=decoded.damaged
                )
                deliver(committer, Captioned(event.job, frame))
            else:
                deliver(committer, event)


def _vidcap_cause(exc: BaseException) -> VidcapError | None:
    """The user-facing error inside a Ray error (e.g. a model that cannot load), if any.

    Ray keeps the exception of a failed task as a cause, but that of a failed actor
    constructor only as text (``vidcap.errors.ModelLoadError: …`` on its last lines).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, VidcapError):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    for line in reversed(str(exc).splitlines()):
        match = re.match(r"\s*vidcap\.errors\.(\w+): (.+)", line)
        kind = getattr(errors, match.group(1), None) if match else None
        if isinstance(kind, type) and issubclass(kind, VidcapError):
            return kind(match.group(2).strip())
    return None


def caption_dataset(
    inputs: Sequence[str | os.PathLike | InputVideo],
    out: str | os.PathLike,  # a folder, or an fsspec URL (vidcap.remote_out)
    *,
    model: ModelSettings | None = None,
    sampling: SamplingSettings | None = None,
    generation: GenerationSettings | None = None,
    formats: Sequence[str] = RunSettings.formats,
    ray_settings: RaySettings | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    quiet: bool = False,
    on_done: Callable[[VideoResult], None] | None = None,
    path_column: str = PATH_COLUMN,
) -> list[VideoResult]:
    """Caption videos on a Ray cluster into ``out``: the same outputs as an embedded run.

    ``inputs``: paths, folders, list files, URLs (expanded as the CLI does; a list's paths
    in its ``path_column``, ``--path-column``) or ``InputVideo``\\ s. Returns every video's
    result (resumed ones included); failed videos are results, not exceptions. Thumbnails,
    which ``vidcap caption`` writes unless ``--no-thumbs``, are written when ``sampling``
    asks (``SamplingSettings(thumb_height=vidcap.settings.THUMB_HEIGHT)``).
    """
    _check_kinds(model=model, sampling=sampling, generation=generation,
                 ray_settings=ray_settings)  # fmt: skip
    if isinstance(inputs, str | os.PathLike | InputVideo):  # one input, not its characters
        inputs = [inputs]
    elif isinstance(inputs, Iterable):  # (``Path.glob``: read once, as a list)
        inputs = list(inputs)
    else:
        raise TypeError(f"inputs must be paths, URLs or InputVideos, got {inputs!r}")
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be a folder's path or an fsspec URL, got {out!r}")
    if not os.fspath(out).strip():  # (``Path("")`` is the working folder)
        raise UsageError(f"out: {EMPTY_PATH}")
    if isinstance(formats, str):  # "jsonl,srt", as --format takes them
        formats = split_formats(formats)
    model = pinned(model or ModelSettings())  # every actor loads this one commit
    local = None if is_url(str(out)) else Path(local_path(str(out)))
    videos = expand_inputs(inputs, path_column, out=local)
    if not _ONE_RUN.acquire(blocking=False):
        raise UsageError(
            "caption_dataset is already running in this process (another thread): one run "
            "at a time, each on its own Ray connection; give one run all the inputs"
        )
    try:
        return _caption(videos, out, model, sampling, generation, formats, ray_settings,
                        shard_rows, quiet, on_done)  # fmt: skip
    finally:
        _ONE_RUN.release()


# Two runs at once in one process shared, and fought over, its one Ray connection: each
# started a local cluster ("called ray.init twice?", a node timed out) and left processes.
_ONE_RUN = threading.Lock()


def _caption(
    videos: Sequence[InputVideo],
    out: str | os.PathLike,
    model: ModelSettings,
    sampling: SamplingSettings | None,
    generation: GenerationSettings | None,
    formats: Sequence[str],
    ray_settings: RaySettings | None,
    shard_rows: int,
    quiet: bool,
    on_done: Callable[[VideoResult], None] | None,
) -> list[VideoResult]:
    with output_folder(out) as out_dir, gone_if_unused(out_dir):  # (could not start: gone)
        settings = RunSettings(
            out_dir=out_dir,
            formats=tuple(formats),
            sampling=sampling or SamplingSettings(),
            generation=generation or GenerationSettings(),
            model=model.model,
            quiet=quiet,
            revision=model.revision or "",
        )
        run_writers = run_writers_for(settings, [v.metadata for v in videos], shard_rows)
        return run(videos, settings, model, ray_settings or RaySettings(), run_writers, on_done)


def _check_kinds(**given: object) -> None:
    """``caption_dataset``'s settings each of its class (or None), before anything starts:
    a dict or a string given instead is a TypeError naming it."""
    kinds = {"model": ModelSettings, "sampling": SamplingSettings,
             "generation": GenerationSettings, "ray_settings": RaySettings}  # fmt: skip
    for name, value in given.items():
        if value is not None and not isinstance(value, kinds[name]):
            raise TypeError(f"{name} must be a {kinds[name].__name__} or None, got {value!r}")


def run(
    videos: Sequence[InputVideo],
    settings: RunSettings,
    model: ModelSettings,
    ray_settings: RaySettings,
    run_writers: Sequence[RunWriter] = (),
    on_done: Callable[[VideoResult], None] | None = None,
) -> list[VideoResult]:
    """``vidcap.engine.run`` on Ray: the run ``settings`` describes, into ``settings.out_dir``.

    ``model`` loads in each Captioner actor (its device chosen per actor); ``settings.model``
    names the same model (it keys the outputs).
    """
    if settings.model != model.model:
        raise ValueError(f"settings.model {settings.model!r} is not model.model {model.model!r}")
    check_out_dir(settings.out_dir)
    with holding(settings.out_dir):  # one run at a time in a folder
        return _run(videos, settings, model, ray_settings, run_writers, on_done)


def _run(
    videos: Sequence[InputVideo],
    settings: RunSettings,
    model: ModelSettings,
    ray_settings: RaySettings,
    run_writers: Sequence[RunWriter],
    on_done: Callable[[VideoResult], None] | None,
) -> list[VideoResult]:
    started = time.monotonic()
    jobs, resumed = plan([v.source for v in videos], settings, [v.metadata for v in videos])
    log.info("%d videos to caption, %d done already", len(jobs), len(resumed))
    with ExitStack() as cluster:
        if jobs:  # (a cluster it cannot join or use: said before anything is written)
            if ray_settings.address is None:  # a local cluster: fail fast, as embedded does
                ensure_loadable(model.model, resolve_model_path(model.model), model.revision)
                if (have := local_resources()) is not None:  # (refused before its start)
                    check_resources(*stage_widths(ray_settings, have), local=True, have=have)
            cluster.enter_context(ray_cluster(ray_settings.address, settings.quiet))
            actors, gpus = stage_widths(ray_settings)
            check_resources(actors, gpus, local=ray_settings.address is None)
        committer = Committer(settings, jobs, run_writers, on_done)
        try:
            if jobs:  # (connected to the cluster)
                # (known once the cluster is: what its actors compute in, in every record)
                precision = precision_of(model, actor_device(ray_settings))
                committer.settings = replace(committer.settings, precision=precision)
                say_other_precisions(resumed, committer.settings)
                ds = build_pipeline(
                    jobs,
                    model,
                    settings.sampling,
                    settings.generation,
                    ray_settings,
                    settings.quiet,
                    {job.id: committer.journaled(job.id) for job in jobs},
                )
                try:
                    feed(committer, ds.iter_batches(batch_size=None, batch_format="numpy"))
                except Exception as exc:
                    cause = _vidcap_cause(exc)
                    # (the videos begun: failed, saying why; a rerun redoes them)
                    committer.fail_open(str(cause or f"{type(exc).__name__}: {exc}"))
                    if cause is not None and cause is not exc:
                        raise cause from exc
                    raise
                finished = {r.name for r in committer.results}
                for job in jobs:
                    if job.name not in finished:
                        committer.fail(
                            job.id,
                            f"{job.shown}: lost in the Ray pipeline (a task failed past its "
                            "retries); rerun to redo it",
                        )
        finally:
            results = committer.close(time.monotonic() - started, resumed)
            if not committer.folder_full:  # (else the run stops saying so; the rerun writes it)
                refresh_report(settings.out_dir, committer.summary)  # also after an interruption
    return results
