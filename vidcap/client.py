"""Captions from running servers: the ``--server URL[,URL…]`` backend (aiohttp).

``RemoteBackend`` is a ``vidcap.backend.Backend``: the pipeline hands it frames already
at its ``input_size`` (the decoder resizes them, once) and gets one answer per frame,
in order. Inside, an asyncio event loop in a background thread sends pre-batches of
``prebatch`` frames as multipart requests, at most ``inflight`` at a time per endpoint,
each to the endpoint with the fewest requests outstanding (``vidcap.balancer``). Frames
are encoded (``vidcap.wire.encode_frames``) in a thread pool, off the event loop.

The retry policy, written once here (``_failure_of``, ``RemoteBackend._caption_batch``):

* **busy or unreachable** (429/502/503/504, cannot connect, no answer within ``timeout``,
  a key the server refuses even after re-reading it): retried with exponential backoff,
  ``Retry-After`` honoured, the endpoint cooling down. A request whose every attempt
  failed so raises ``ServerUnavailable``: no server can caption, the run stops.
* **this request failed** (500, 507 and every other 5xx, 408, a connection dropped
  mid-request, an answer that is not captions): retried the same way; past the retries,
  each of its frames gets a ``CaptionFailed`` in place of a caption, so only the videos
  of those frames fail and the run goes on.
* **refused** (any other 4xx: the request itself is wrong, it would get the same answer
  again): ``CaptionFailed`` at once.

``RemoteBackend.connect`` first asks every endpoint what it serves (``X-Vidcap-Info``,
both servers answer it: the model's name and input size) and returns a backend built for
that size, its ``model`` the served model's name. The key (``Authorization: Bearer``) is
given by the caller: a string goes to every endpoint of the backend (the URLs it was
given for); a ``TorchServeKey`` goes only to the TorchServe whose run folder holds it,
and is re-read from there when that server refuses it (a restart or an expiry renewed
it). Finding it (``--token``, ``$VIDCAP_TOKEN``, a run folder) is the command line's job
(``vidcap.cli.remote``). Redirects are never followed: a key goes nowhere else.

The caller's frame iterator is read lazily: never more than about
``prebatch * inflight * endpoints * 2`` frames are held, however long the video.
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import numpy as np

from vidcap import jsontext, wire
from vidcap.backend import CaptionFailed
from vidcap.balancer import Balancer, Endpoint
from vidcap.errors import BackendUnavailable, UsageError, VidcapError
from vidcap.serve.protocol import INFO_HEADER, MODEL_HEADER, REVISION_HEADER, model_from_value
from vidcap.settings import GenerationSettings
from vidcap.wording import counted

log = logging.getLogger(__name__)

# Busy or gone: 429/503 busy; 502/504 a proxy (or the gate) lost the server.
BUSY_STATUSES = frozenset({429, 502, 503, 504})
# 408: the server gave up reading this request; with every 5xx but the busy ones (500: the
# model failed; 507: TorchServe's "Worker died.") the request failed, not the server.
FAILED_STATUSES = frozenset({408})
# Named in the hints; read by the command line only (``vidcap.cli.remote``).
TOKEN_ENV = "VIDCAP_TOKEN"
# TorchServe 0.12 answers a missing, wrong or expired key so (HTTP 400).
TORCHSERVE_KEY_REFUSED = "Token Authorization failed"
ENDPOINT_HELP = (
    "http://HOST:PORT/caption (Flask) or http://HOST:PORT/predictions/<model> (TorchServe)"
)
KEY_HINT = f" (pass the server's inference key with --token or ${TOKEN_ENV})"
# Tags (and what <head> holds) of an HTML error page, dropped from a message.
MARKUP = re.compile(r"<head.*?</head>|<[^>]*>", re.DOTALL | re.IGNORECASE)
# Answers to the info question that say the URL is no caption endpoint: not found, or no
# POST taken there (a web server that is not vidcap's, e.g. Python's http.server: 501).
NO_ENDPOINT = frozenset({404, 405, 501})
HINTS = {
    404: f" (is it the full endpoint URL? {ENDPOINT_HELP})",
    413: " (send fewer frames per request: lower --prebatch)",
}
# The info question is answered without the model: it needs no long wait.
INFO_TIMEOUT_S = 30.0
# A request with no answer after STALL_FACTOR times the slowest of the last STALL_HISTORY
# answers (at least STALL_FLOOR_S; once STALL_MIN_ANSWERS came back) is sent again, to
# another endpoint if there is one, and the first answer wins: a TorchServe worker killed
# with a request never answers it (the gate says so only after VIDCAP_BATCH_ALLOWANCE, 60 s),
# and every later frame waits for it, since answers come back in order.
STALL_FACTOR = 5.0
STALL_FLOOR_S = 5.0
STALL_HISTORY = 32
STALL_MIN_ANSWERS = 8
# A reply is read up to this many bytes (after any decompression): a caption reply is a
# few KB a frame, and a reply read whole could fill the client's memory (a URL that is not a
# caption server streaming a large file, a gzip bomb).
MAX_REPLY_BYTES = 8 << 20
PRECISION = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a torch dtype's name, as servers say it

T = TypeVar("T")


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


@dataclass(frozen=True)
class ClientOptions:
    """How frames go to the servers.

    ``wire_format``: ``png`` (lossless: captions equal the embedded run's exactly; the
    default, chosen by ``bench/wire_format.py``: JPEG q90 changed 9 of 64 sample captions
    of the tiny model, q95 5) or ``jpeg`` (9 KB instead of 50 KB per 224x224 frame);
    ``prebatch``: frames per request; ``inflight``: requests in flight per endpoint;
    ``retries``: extra attempts per request; ``timeout``: seconds per attempt;
    ``backoff``: first retry delay in seconds, doubled each retry up to ``backoff_max``;
    ``encode_workers``: threads encoding frames.
    """

    wire_format: str = "png"
    jpeg_quality: int = 95
    prebatch: int = 8
    inflight: int = 4
    retries: int = 5
    timeout: float = 120.0
    backoff: float = 0.5
    backoff_max: float = 10.0
    encode_workers: int = 2

    def __post_init__(self) -> None:
        if self.wire_format not in wire.WIRE_FORMATS:
            raise UsageError(
                f"unknown --wire-format {self.wire_format!r}; supported values are "
                f"{', '.join(wire.WIRE_FORMATS)}"
            )
        checks = {
            "--prebatch": (self.prebatch, 1),
            "--inflight": (self.inflight, 1),
            "--retries": (self.retries, 0),
            "encode_workers": (self.encode_workers, 1),
        }
        for flag, (value, least) in checks.items():
            if value < least:
                raise UsageError(f"{flag} must be a whole number >= {least}, got {value}")
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be a number of seconds > 0, got {self.timeout}")
        if not (0 <= self.backoff <= self.backoff_max):
            raise UsageError(f"backoff must be within [0, {self.backoff_max}], got {self.backoff}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (0-based)."""
        return min(self.backoff * 2**attempt, self.backoff_max)


class ServerURL(str):
    """An endpoint URL as it is shown, logged and recorded: without the ``user:password@``
    it may have been given with (a server behind a proxy asking for Basic authorization),
    which would otherwise reach warnings, ``summary.json``, resume records and the report
    page. ``authorization``: the header those credentials make (None: none given)."""

    authorization: str | None

    def __new__(cls, url: str) -> ServerURL:
        if isinstance(url, ServerURL):
            return url
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            made = super().__new__(cls, url)
            made.authorization = None
            return made
        credentials, _, place = parts.netloc.rpartition("@")
        user, _, password = credentials.partition(":")
        made = super().__new__(cls, urlunsplit(parts._replace(netloc=place)))
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        made.authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        return made


def parse_server_urls(value: str | Sequence[str]) -> list[ServerURL]:
    """``"URL1,URL2"`` (or a list) → checked endpoint URLs; ``UsageError`` on a bad one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item if isinstance(item, ServerURL) else ServerURL(item.strip()) for item in items]
    urls = [url for url in urls if url]
    if not urls:
        raise UsageError(f"--server needs at least one endpoint URL, e.g. {ENDPOINT_HELP}")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"bad server URL {url!r}: expected {ENDPOINT_HELP}")
        if parts.path in ("", "/"):
            raise UsageError(f"server URL {url!r} has no endpoint path: expected {ENDPOINT_HELP}")
        try:
            _ = parts.port
        except ValueError:
            raise UsageError(f"bad port in server URL {url!r}") from None
    return urls


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL: where a request to it goes."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


# --- keys --------------------------------------------------------------------------------

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


# --- the retry policy ----------------------------------------------------------------------

BUSY, FAILED, REFUSED, KEY = "busy", "failed", "refused", "key"


class _Failure(Exception):
    """One failed attempt: ``kind`` says what it means (the module docstring)."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.retry_after = retry_after


def _failure_of(url: str, status: int, body: bytes, retry_after: float | None) -> _Failure:
    """What a non-2xx answer means for the request (the one table of the policy)."""
    message = error_message(body)
    reason = f"{url} answered HTTP {status}: {message}"
    if key_refused(status, message):
        return _Failure(KEY, reason + KEY_HINT, retry_after)
    if status in BUSY_STATUSES:
        return _Failure(BUSY, reason, retry_after)
    if status >= 500 or status in FAILED_STATUSES:
        return _Failure(FAILED, reason, retry_after)
    return _Failure(REFUSED, reason + HINTS.get(status, ""))


def error_message(body: bytes) -> str:
    """The server's own words: ``{"error": …}`` (Flask), ``{"message": …}`` (TorchServe)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = jsontext.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in ("error", "message"):
            if isinstance(payload.get(key), str):
                text = payload[key]
                break
    elif text.startswith("<"):  # an HTML error page (not a vidcap server): its text
        text = html.unescape(MARKUP.sub(" ", text))
    return " ".join(text.split())[:300] or "(empty body)"


class RemoteBackend:
    """A ``Backend`` that captions on one or more servers; see the module docstring.

    ::

        urls = ["http://127.0.0.1:5000/caption"]
        with RemoteBackend.connect(urls, ClientOptions(), expected_size=(224, 224)) as backend:
            for answer in backend.caption_stream(frames, GenerationSettings()):
                ...  # a caption, or a CaptionFailed

    ``RemoteBackend(urls, input_size, options, token=…)`` builds one for a known size.
    ``token``: a string, sent as ``Authorization: Bearer`` to every endpoint, or a
    ``TorchServeKey``, sent to its own TorchServe only. Frames must be at ``input_size``
    (a ``ValueError`` otherwise). ``model``, ``revision``: the served model's name and hub
    commit, when the servers said them (``connect``): an answer from another is refused
    (``ServerChanged``).

    Raises ``ServerUnavailable`` when a request found no server able to take it,
    ``retries + 1`` times over; earlier frames' answers have been yielded by then.
    """

    def __init__(
        self,
        urls: Sequence[str],
        input_size: tuple[int, int],
        options: ClientOptions | None = None,
        *,
        token: str | TorchServeKey | None = None,
        model: str | None = None,
        revision: str | None = None,
    ) -> None:
        self.urls = parse_server_urls(urls)
        self.input_size = input_size
        self.options = options or ClientOptions()
        self.token = token
        self.model = model
        self.revision = revision
        self._mime = wire.WIRE_FORMATS[self.options.wire_format]
        self._encoder = ThreadPoolExecutor(self.options.encode_workers, "vidcap-encode")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        self._latencies: deque[float] = deque(maxlen=STALL_HISTORY)  # seconds, event loop's
        self._thread = threading.Thread(target=self._run_loop, name="vidcap-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._closed = True
            self._encoder.shutdown()
            raise RuntimeError("the client's event loop failed to start") from self._startup_error

    # --- the Backend protocol (caller's thread) ---

    def caption_stream(
        self, images: Iterable[np.ndarray], settings: GenerationSettings
    ) -> Iterator[str | CaptionFailed]:
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("RemoteBackend is closed")
        window = self.options.inflight * len(self.urls) * 2
        pending: deque[Future[list[str | CaptionFailed]]] = deque()
        frames = iter(images)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    chunk = list(islice(frames, self.options.prebatch))
                    if not chunk:
                        exhausted = True
                        break
                    coro = self._caption_batch(chunk, settings)
                    pending.append(asyncio.run_coroutine_threadsafe(coro, self._loop))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    @classmethod
    def connect(
        cls,
        urls: str | Sequence[str],
        options: ClientOptions | None = None,
        *,
        token: str | TorchServeKey | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> RemoteBackend:
        """Ask every endpoint what it serves, then a backend for that input size and model.

        The servers' answer wins over ``expected_size`` (logged when they differ);
        ``expected_size`` is used when no server says (an old server, or none reachable
        yet: the captioning requests then retry as usual). Raises ``ServerRejected``
        when endpoints serve different models or sizes, refuse the key or are not
        endpoints (404), and when no size is known at all (``ServerUnavailable`` if no
        endpoint answered).
        """
        urls = parse_server_urls(urls)
        options = options or ClientOptions()
        infos, unreachable = _run_apart(ask_info(urls, token, min(options.timeout, INFO_TIMEOUT_S)))
        agreed = _agreed(infos)
        model, revision = agreed.model, agreed.revision
        if agreed.input_size is not None:
            if expected_size is not None and agreed.input_size != expected_size:
                log.info("the server's model takes %dx%d frames", *agreed.input_size)
            return cls(
                urls, agreed.input_size, options, token=token, model=model, revision=revision
            )
        if expected_size is None:
            if set(unreachable) == set(urls):
                raise ServerUnavailable(
                    "no server answered the input size question; last error: "
                    + list(unreachable.values())[-1]
                )
            raise ServerRejected("no server said its model's input size: give expected_size")
        if set(unreachable) != set(urls):
            log.warning(
                "the server did not say its input size: sending %dx%d frames", *expected_size
            )
        return cls(urls, expected_size, options, token=token, model=model, revision=revision)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._loop.close()
        self._encoder.shutdown(wait=True)

    def __enter__(self) -> RemoteBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the event loop thread ---

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread
            if self._ready.is_set():
                log.exception("the client's event loop stopped")
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._balancer = Balancer(self.urls, self.options.inflight, self.options.delay)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self._session = session
            self._ready.set()
            await self._stop.wait()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _key_for(self, url: str) -> str | None:
        if isinstance(self.token, TorchServeKey):
            return self.token.for_url(url)
        return self.token  # given for every URL of this backend

    def _renewed(self, url: str, sent: str | None) -> bool:
        """After ``url`` refused the key ``sent``: is there another one to try?

        A ``TorchServeKey`` is re-read from its run folder (a restart or an expiry
        renewed it); a key given as a string stays what it is.
        """
        if isinstance(self.token, TorchServeKey) and self.token.for_url(url) == sent:
            self.token.read()
            if self.token.key is not None:
                log.info("re-read the inference key from %s", self.token.run_dir)
        return self._key_for(url) not in (sent, None)

    async def _caption_batch(
        self, images: list[np.ndarray], settings: GenerationSettings
    ) -> list[str | CaptionFailed]:
        """One request's answers, retried as the module docstring says."""
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(
            self._encoder,
            wire.encode_frames,
            images,
            self.input_size,
            self.options.wire_format,
            self.options.jpeg_quality,
        )
        del images
        avoid: Endpoint | None = None
        failed: _Failure | None = None  # the last answer that failed this request itself
        reason = ""
        attempt = renewals = 0
        while True:
            endpoint = await self._balancer.acquire(avoid)
            key = self._key_for(endpoint.url)
            try:
                captions = await self._send(endpoint, frames, settings, key)
            except _Failure as exc:
                reason = str(exc)
                if exc.kind == KEY and renewals <= self.options.retries:
                    if self._renewed(endpoint.url, key):
                        renewals += 1  # a new key: try it at once, not counted as a retry
                        self._balancer.release(endpoint, failed=False)
                        continue
                if exc.kind == REFUSED:
                    self._balancer.release(endpoint, failed=False)
                    return [CaptionFailed(reason)] * len(frames)
                if exc.kind == FAILED:
                    failed = exc
                delay = self.options.delay(attempt)
                cooldown = None
                if exc.retry_after is not None:
                    cooldown = min(exc.retry_after, self.options.backoff_max)
                    delay = max(delay, cooldown)
                self._balancer.release(endpoint, failed=True, cooldown=cooldown)
            except ServerChanged as exc:  # (from this endpoint, or one asked alongside)
                self._balancer.release(endpoint, failed=False)
                if not self._retire(exc):
                    raise
                continue  # the frames go to a server still serving the run's model
            except BaseException:
                self._balancer.release(endpoint, failed=False)
                raise
            else:
                self._balancer.release(endpoint, failed=False)
                return list(captions)
            if attempt == self.options.retries:
                break
            if self._balancer.any_healthy_besides(endpoint):
                delay = 0.0
            log.info("retry %d/%d in %.2fs: %s", attempt + 1, self.options.retries, delay, reason)
            attempt += 1
            avoid = endpoint
            await asyncio.sleep(delay)
        retries = self.options.retries
        after = f"after {counted(retries, 'retry', 'retries')}"
        if failed is not None:  # a server took the request and failed it: these frames fail
            last = "" if str(failed) == reason else f"; last error: {reason}"
            log.warning(
                "%s got no caption %s: %s%s", counted(len(frames), "frame"), after, failed, last
            )
            return [CaptionFailed(f"no caption {after}: {failed}{last}")] * len(frames)
        raise ServerUnavailable(
            f"no server captioned {counted(len(frames), 'frame')} {after}; last error: {reason}"
        )

    def _retire(self, changed: ServerChanged) -> bool:
        """Stop using the server that answered with another model (its answer dropped);
        False when it is the last one serving the run's model (the run stops)."""
        retired = self._balancer.retire(changed.url)
        if retired is None:
            return False
        if retired:
            log.warning(
                "%s; that server is no longer used: the run goes on with the %s",
                changed.change,
                counted(len(self._balancer.endpoints), "other"),
            )
        return True

    def _stall_time(self) -> float | None:
        """Seconds after which an attempt with no answer is sent again alongside."""
        if len(self._latencies) < STALL_MIN_ANSWERS:
            return None
        stall = max(STALL_FLOOR_S, STALL_FACTOR * max(self._latencies))
        return stall if stall < self.options.timeout else None

    async def _send(
        self, endpoint: Endpoint, frames: list[bytes], settings: GenerationSettings, key: str | None
    ) -> list[str]:
        """One attempt at ``endpoint``; if it stalls (``_stall_time``), the same request goes
        again to the best other endpoint (this one when it is the only one) and the first
        answer wins; the attempt fails only when both do (with the first one's failure)."""
        first = asyncio.ensure_future(self._post(endpoint.url, frames, settings, key))
        tasks = [first]
        other: Endpoint | None = None
        second_failed = False
        try:
            stall = self._stall_time()
            if stall is None:
                return await first
            done, _ = await asyncio.wait(tasks, timeout=stall)
            if done:
                return first.result()
            other = self._balancer.acquire_extra(avoid=endpoint)
            log.info(
                "no answer from %s for %.1fs: sending the request to %s too",
                endpoint.url,
                stall,
                other.url,
            )
            tasks.append(
                asyncio.ensure_future(
                    self._post(other.url, frames, settings, self._key_for(other.url))
                )
            )
            for task in asyncio.as_completed(tasks):
                try:
                    return await task
                except _Failure:
                    if tasks[1].done() and tasks[1].exception() is not None:
                        second_failed = True
            return first.result()  # both failed: raises the first one's failure
        finally:
            for task in tasks:
                task.cancel()
            if other is not None:
                self._balancer.release(other, failed=second_failed)

    async def _post(
        self, url: str, frames: list[bytes], settings: GenerationSettings, key: str | None
    ) -> list[str]:
        fields = wire.explicit_settings_fields(settings)
        headers = auth_headers(key, url)
        data: bytes | aiohttp.FormData
        if (
            self.options.prebatch == 1
            and len(frames) == 1
            and all(v.isascii() for v in fields.values())
        ):
            data = frames[0]
            headers["Content-Type"] = self._mime
            headers.update(wire.settings_to_headers(settings))
        else:
            data = self._form(frames, fields)
        timeout = aiohttp.ClientTimeout(total=self.options.timeout)
        started = asyncio.get_running_loop().time()
        try:
            async with self._session.post(
                url, data=data, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                body, whole = await read_reply(resp)
                status = resp.status
                retry_after = _seconds(resp.headers.get("Retry-After"))
                served = resp.headers.get(MODEL_HEADER)
                commit = resp.headers.get(REVISION_HEADER)
        except asyncio.TimeoutError:
            raise _Failure(BUSY, f"{url}: no answer within {self.options.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # never reached the server
            raise _Failure(BUSY, f"{url}: {_describe(exc)}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # The server took the request, then dropped it (a dying worker or server).
            raise _Failure(FAILED, f"{url}: {_describe(exc)}") from None
        if not 200 <= status < 300:
            raise _failure_of(url, status, body, retry_after)
        if not whole:
            raise _Failure(FAILED, f"{url} answered HTTP {status} with {TOO_LONG}")
        try:
            captions = wire.captions_from_response(jsontext.loads(body), len(frames))
        except ValueError as exc:
            raise _Failure(FAILED, f"{url} answered HTTP {status} with a bad body: {exc}") from None
        self._check_same_model(url, served, commit)
        self._latencies.append(asyncio.get_running_loop().time() - started)
        return captions

    def _check_same_model(self, url: str, served: str | None, commit: str | None) -> None:
        """``ServerChanged`` when an answer names another model, or another commit of it,
        than the run began with (``served``, ``commit``: its headers, where sent)."""
        served = model_from_value(served) if served else None
        commit = model_from_value(commit) if commit else None
        if served and self.model is not None and served != self.model:
            said = f"the captions of {served}, not of {self.model}"
            why = "with another model"
        elif commit and self.revision is not None and commit != self.revision:
            said = f"revision {commit} of {self.model}, not {self.revision}"
            why = "after the model was updated"
        else:
            return
        change = (
            f"{url} now answers with {said}, which this run began with (a server restarted {why}?)"
        )
        raise ServerChanged(
            f"{change}: the run stops rather than mix two models' captions in one folder; a "
            "rerun captions every video with the model the servers then serve",
            url,
            change,
        )

    def _form(self, frames: list[bytes], fields: dict[str, str]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        extension = self.options.wire_format
        for index, frame in enumerate(frames):
            name = wire.frame_part_name(index)
            form.add_field(name, frame, filename=f"{name}.{extension}", content_type=self._mime)
        for name, value in fields.items():
            form.add_field(name, value)
        return form


TOO_LONG = f"a reply longer than {MAX_REPLY_BYTES >> 20} MiB (a caption reply is a few KB a frame)"


async def read_reply(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """``resp``'s body, read up to ``MAX_REPLY_BYTES`` (decompressed), and whether that is
    all of it; a longer one is cut there and its connection closed, never read whole."""
    if resp.content_length is not None and resp.content_length > MAX_REPLY_BYTES:
        resp.close()
        return b"", False
    chunks, size = [], 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            resp.close()
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def auth_headers(key: str | None, url: str = "") -> dict[str, str]:
    """The Authorization header of a request to ``url``: the Basic authorization its
    ``user:password@`` asked for (``ServerURL``), else the bearer ``key``, if any."""
    basic = getattr(url, "authorization", None)
    if basic:
        return {"Authorization": basic}
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class ServerInfo:
    """What an endpoint said it serves (``None``: it did not say)."""

    input_size: tuple[int, int] | None = None
    model: str | None = None
    revision: str | None = None  # the model's hub commit
    precision: str | None = None  # what its language model computes in (``float16``…)


async def ask_info(
    urls: Sequence[str], token: str | TorchServeKey | None, timeout: float
) -> tuple[dict[str, ServerInfo], dict[str, str]]:
    """What each endpoint that answered serves, and why the unreachable ones did not answer.

    Raises ``ServerRejected`` when an endpoint refuses the key (a ``TorchServeKey`` is
    re-read first) or is no endpoint (404).
    """
    infos: dict[str, ServerInfo] = {}
    unreachable: dict[str, str] = {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    def key_for(url: str) -> str | None:
        return token.for_url(url) if isinstance(token, TorchServeKey) else token

    async with aiohttp.ClientSession() as session:

        async def ask(url: str) -> tuple[int, bytes]:
            headers = {INFO_HEADER: "1", **auth_headers(key_for(url), url)}
            async with session.post(
                url, data=b"", headers=headers, timeout=client_timeout, allow_redirects=False
            ) as resp:
                body, whole = await read_reply(resp)
                return resp.status, body if whole else TOO_LONG.encode()

        for url in urls:
            try:
                status, body = await ask(url)
                if key_refused(status, error_message(body)) and isinstance(token, TorchServeKey):
                    sent = key_for(url)
                    if token.read().for_url(url) not in (sent, None):
                        status, body = await ask(url)
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                # Unreachable: the captioning requests that follow retry, then say so.
                log.info("%s did not say what it serves: %s", url, _describe(exc))
                unreachable[url] = f"{url}: {_describe(exc)}"
                continue
            message = error_message(body)
            if key_refused(status, message):
                raise ServerRejected(f"{url} answered HTTP {status}: {message}{KEY_HINT}")
            if status in NO_ENDPOINT:  # (no such path; a server that takes no POST there)
                raise ServerRejected(f"{url} answered HTTP {status}: {message}{HINTS[404]}")
            infos[url] = _info(url, status, body)
    return infos, unreachable


def served_model(
    urls: str | Sequence[str],
    options: ClientOptions | None = None,
    *,
    token: str | TorchServeKey | None = None,
) -> ServerInfo:
    """What the servers say they run (each field ``None`` when none says: an old server,
    or none reachable). ``ServerRejected`` as ``RemoteBackend.connect`` raises it."""
    timeout = min((options or ClientOptions()).timeout, INFO_TIMEOUT_S)
    infos, _ = _run_apart(ask_info(parse_server_urls(urls), token, timeout))
    return _agreed(infos)


def _agreed(infos: dict[str, ServerInfo]) -> ServerInfo:
    """The input size, model and commit every endpoint that said them serves (``None``:
    none said); ``ServerRejected`` when endpoints serve different ones. The precisions they
    compute in, comma-separated where they differ."""
    sizes = {url: info.input_size for url, info in infos.items() if info.input_size}
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{url}: {h}x{w}" for url, (h, w) in sizes.items())
        raise ServerRejected(f"the servers serve models of different input sizes ({found})")
    models = {url: info.model for url, info in infos.items() if info.model}
    if len(set(models.values())) > 1:
        found = ", ".join(f"{url}: {name}" for url, name in models.items())
        raise ServerRejected(f"the servers serve different models ({found})")
    commits = {url: info.revision for url, info in infos.items() if info.revision}
    if len(set(commits.values())) > 1:
        found = ", ".join(f"{url}: {commit}" for url, commit in commits.items())
        raise ServerRejected(f"the servers serve different revisions of the model ({found})")
    first = next(iter(sizes.values()), None), next(iter(models.values()), None)
    # (servers on a CPU and on a GPU may differ: a video's captions may come from either)
    precisions = sorted({info.precision for info in infos.values() if info.precision})
    return ServerInfo(*first, next(iter(commits.values()), None), ",".join(precisions) or None)


def _info(url: str, status: int, body: bytes) -> ServerInfo:
    try:
        answer = jsontext.loads(body)
    except ValueError:
        answer = None
    size = model = revision = precision = None
    if isinstance(answer, dict):
        try:
            size = int(answer["input_size"][0]), int(answer["input_size"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            pass
        if isinstance(answer.get("model"), str) and answer["model"]:
            model = answer["model"]
        if isinstance(answer.get("revision"), str) and answer["revision"]:
            revision = answer["revision"]
        if isinstance(answer.get("precision"), str) and PRECISION.fullmatch(answer["precision"]):
            precision = answer["precision"]  # (a dtype's name: recorded with every video)
    if size is None:
        log.warning("%s did not say its input size (HTTP %d)", url, status)
    return ServerInfo(size, model, revision, precision)


def _run_apart(coro: Coroutine[object, object, T]) -> T:
    """Run ``coro`` to the end on an event loop of its own (in a thread, so a caller that
    runs a loop itself is not disturbed)."""
    with ThreadPoolExecutor(1, "vidcap-connect") as pool:
        return pool.submit(asyncio.run, coro).result()


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
