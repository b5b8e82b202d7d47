"""Persistent decoder worker processes: several videos decode at once, frames stream back.

Why processes: decoding in a thread of the captioning process competes for the GIL with
the model step, and a decoder crash on a hostile file would take the whole bulk run down.
Each worker is one ``python -m vidcap.decode_pool`` child that decodes the videos it is
sent, one after another, for the whole run (no interpreter start per video). A worker that
dies fails the video it was decoding and is replaced.

The pipes carry no pickle. A job goes down as one JSON line (id, source, sampling,
threads, plan); back come the events of ``vidcap.decode.decode_events`` in their one binary
encoding (``encode_event`` / ``read_event``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

from vidcap.decode import (
    Ended,
    Event,
    Failed,
    Fetching,
    decode_events,
    encode_event,
    read_event,
)
from vidcap.scratch import folder as scratch_folder
from vidcap.scratch import sweep
from vidcap.settings import SamplingSettings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the child's side


def serve(size: tuple[int, int], jobs: IO[str], out: IO[bytes]) -> None:
    """Decode every job read from ``jobs`` (one JSON line each) until it closes. While a
    URL downloads, ``Fetching`` heartbeats go out beside (a thread of the download's)."""
    writing = threading.Lock()
    for line in jobs:
        if line.strip():
            job = json.loads(line)
            sampling = SamplingSettings(**job["sampling"])
            threads = int(job.get("threads", 0))
            plan = bool(job.get("plan", False))
            job_id = int(job["id"])

            def fetching(size_so_far: int, job_id: int = job_id) -> None:
                with writing:
                    out.write(encode_event(Fetching(job_id, size_so_far)))
                    out.flush()

            for event in decode_events(
                job_id, job["source"], sampling, size, threads, plan, progress=fetching
            ):
                with writing:
                    out.write(encode_event(event))
            with writing:
                out.flush()


# What a worker writes once it has imported PyAV and numpy and is ready for jobs: the stall
# clock (--decode-timeout) starts after it, not while a fresh worker starts.
READY = b"vidcap decoder ready\n"
# How long a worker may take to start (at least): a loaded machine imports slowly.
START_TIMEOUT_S = 120.0

# Linux's OOM killer takes the process with the highest oom_score_adj (-1000..1000) first.
OOM_SCORE_ADJ = Path("/proc/self/oom_score_adj")
DIE_FIRST = 1000


def die_first() -> None:
    """Where memory runs out, the kernel kills this decoder before the run's own process
    (a video whose frames need gigabytes, a hostile one declaring 20000x20000, on a machine
    whose captioning process holds more): a decoder killed fails its video alone, and the
    pool starts another. Raising one's own score needs no privilege; elsewhere, nothing."""
    try:
        OOM_SCORE_ADJ.write_text(str(DIE_FIRST))
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidcap.decode_pool")
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    args = parser.parse_args(argv)
    # The parent decides when to stop (the terminal's Ctrl-C does not reach this session
    # anyway: ``DecodePool._spawn``).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="vidcap: %(levelname)s: %(message)s")
    die_first()
    try:
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        serve((args.height, args.width), sys.stdin, sys.stdout.buffer)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# ---------------------------------------------------------------- the parent's side


class DecodePool:
    """``workers`` decoder processes fed from one job list; events go to one bounded queue.

    Frames of one video arrive in order, each video ends with ``Ended`` or ``Failed``;
    frames of different videos interleave; with ``plans``, each video's ``Planned`` (how
    many frames it will give: a progress line) comes first. At most ``max_events`` events
    wait in the queue (then the workers block), so memory stays bounded whatever the
    number of videos.
    A worker that sends nothing for ``stall_timeout`` seconds while it is being waited for
    (a hung download or decoder) is killed, failing its video, and replaced. That clock
    starts once a worker is ready: a fresh one's start (importing PyAV and numpy, seconds on
    a loaded machine) has ``start_timeout``, by default the larger of ``stall_timeout`` and
    ``START_TIMEOUT_S``.
    """

    def __init__(
        self,
        jobs: Sequence[tuple[int, str]],
        sampling: SamplingSettings,
        size: tuple[int, int],
        workers: int,
        max_events: int,
        stall_timeout: float | None = None,
        plans: bool = False,
        start_timeout: float | None = None,
    ) -> None:
        self.sampling = sampling
        self.plans = plans
        self.size = size
        self.stall_timeout = stall_timeout
        self.start_timeout = start_timeout or max(START_TIMEOUT_S, stall_timeout or 0.0)
        # Cores shared out among the workers: FFmpeg's own threads on top would oversubscribe.
        self.threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        self._jobs: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        for job in jobs:
            self._jobs.put(job)
        self._events: queue.Queue[Event | None] = queue.Queue(maxsize=max(1, max_events))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._live = min(workers, len(jobs))
        self._procs: list[subprocess.Popen] = []
        self._running: dict[int, subprocess.Popen] = {}  # job id → its worker
        self._waiting: dict[int, float] = {}  # job id → since when its worker is waited for
        self._stalled: set[int] = set()
        self._starting: set[int] = set()  # job ids whose fresh worker is not ready yet
        self._scratch: dict[int, str] = {}  # worker pid → its temporary folder
        sweep("decoder")  # (what killed runs left)
        self._threads = [
            threading.Thread(target=self._drive, name=f"vidcap-decoder-{i}", daemon=True)
            for i in range(self._live)
        ]
        if stall_timeout and self._threads:
            self._threads.append(
                threading.Thread(target=self._watch, name="vidcap-decoder-watch", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        if not self._threads:
            self._events.put(None)

    @property
    def decoding(self) -> dict[int, int]:
        """Job id → pid of the worker decoding it, now."""
        return {job: proc.pid for job, proc in list(self._running.items())}

    def events(self) -> Iterator[Event]:
        """Every event of every job, until all jobs are done."""
        while (event := self._events.get()) is not None:
            yield event

    def close(self) -> None:
        """Stop the workers (killing any mid-video) and wait for their threads."""
        self._stop.set()
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            left, self._scratch = list(self._scratch.values()), {}
        for scratch in left:  # of workers whose thread did not end in time
            shutil.rmtree(scratch, ignore_errors=True)

    # one thread per worker process
    def _spawn(self) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "vidcap.decode_pool",
            "--height", str(self.size[0]), "--width", str(self.size[1]),
        ]  # fmt: skip
        # A session of its own: the terminal's Ctrl-C goes to the vidcap process alone, which
        # stops the pool, even while a worker is still starting (importing; no handler yet).
        # Its own temporary folder (downloads of remote sources): removed when the worker
        # ends, so a worker killed mid-download (--decode-timeout) leaves nothing behind;
        # those of a run killed whole go at the next run's start (``vidcap.scratch``).
        scratch = str(scratch_folder("decoder"))
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=1 << 20,
            start_new_session=True,
            env={**os.environ, "TMPDIR": scratch},
        )
        with self._lock:
            self._procs.append(proc)
            self._scratch[proc.pid] = scratch
            if self._stop.is_set():  # close() ran while this one started: not waited for
                proc.kill()
        return proc

    def _end(self, proc: subprocess.Popen) -> None:
        _end(proc)
        with self._lock:
            scratch = self._scratch.pop(proc.pid, None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def _put(self, event: Event | None) -> bool:
        while not self._stop.is_set():
            try:
                self._events.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _drive(self) -> None:
        proc: subprocess.Popen | None = None
        try:
            while not self._stop.is_set():
                try:
                    job_id, source = self._jobs.get_nowait()
                except queue.Empty:
                    break
                fresh = proc is None or proc.poll() is not None
                if fresh:
                    if proc is not None:
                        self._end(proc)  # a dead worker: its temporary folder goes
                    proc = self._spawn()
                assert proc is not None
                self._running[job_id] = proc
                try:
                    self._run_job(proc, job_id, source, fresh)
                except Exception as exc:  # noqa: BLE001 - this job fails, not the pool silently
                    log.debug("driving the decoder of %s failed", source, exc_info=True)
                    self._put(Failed(job_id, f"{source}: the decoder could not be driven "
                                             f"({type(exc).__name__}: {exc})"))  # fmt: skip
                    self._end(proc)
                    proc = None
                finally:
                    self._running.pop(job_id, None)
                    self._waiting.pop(job_id, None)
        finally:
            if proc is not None:
                self._end(proc)
            with self._lock:
                self._live -= 1
                last = self._live == 0
            if last:
                self._put(None)

    def _run_job(self, proc: subprocess.Popen, job_id: int, source: str, fresh: bool) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise RuntimeError("decoder pipes missing")  # Popen(stdin=PIPE, stdout=PIPE) sets both
        job = {
            "id": job_id,
            "source": source,
            "sampling": asdict(self.sampling),
            "threads": self.threads,
            "plan": self.plans,
        }
        line = json.dumps(job)
        try:
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()
        except OSError:
            pass  # a dead worker: reported below when its output ends
        if fresh:
            self._starting.add(job_id)
            self._waiting[job_id] = time.monotonic()
            ready = proc.stdout.read(len(READY)) == READY
            self._waiting.pop(job_id, None)
            self._starting.discard(job_id)
            if not ready:
                self._failed(proc, job_id, source, starting=True)
                return
        while True:
            self._waiting[job_id] = time.monotonic()
            event = read_event(proc.stdout)
            self._waiting.pop(job_id, None)
            if event is None:
                self._failed(proc, job_id, source, starting=False)
                return
            if isinstance(event, Fetching):
                continue  # (a download going on: the stall clock starts again, nothing to pass)
            if not self._put(event) or isinstance(event, (Ended, Failed)):
                return

    def _failed(self, proc: subprocess.Popen, job_id: int, source: str, starting: bool) -> None:
        """The worker's output ended before its job did: the job fails, saying why."""
        if self._stop.is_set():
            return
        code = proc.wait()
        if job_id in self._stalled and starting:
            why = f"did not start within {self.start_timeout:g} s; stopped"
        elif job_id in self._stalled:
            why = f"sent nothing for {self.stall_timeout:g} s (--decode-timeout); stopped"
        else:
            why = f"stopped unexpectedly ({_how(code)})"
        self._put(Failed(job_id, f"{source}: the decoder {why}"))

    def _watch(self) -> None:
        """Kill the worker of a job that has kept its driver waiting past ``stall_timeout``."""
        stall = float(self.stall_timeout or 0)
        while not self._stop.wait(min(1.0, stall / 4)):
            now = time.monotonic()
            for job_id, since in list(self._waiting.items()):
                proc = self._running.get(job_id)
                starting = job_id in self._starting
                limit = self.start_timeout if starting else stall
                if proc is not None and now - since > limit and job_id not in self._stalled:
                    what = "did not start" if starting else "stalled"
                    log.warning("decoder of job %d %s for %.0f s: stopping it", job_id, what, limit)
                    self._stalled.add(job_id)
                    proc.kill()
            if self._live == 0:
                return


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _end(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


if __name__ == "__main__":
    sys.exit(main())
