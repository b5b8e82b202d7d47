"""Captions from running servers: the ``--server URL[,URL…]`` backend (aiohttp).

``RemoteBackend`` is a ``vidcap.backend.Backend``: the pipeline hands it frames (already
resized to the model's input size) and gets one caption per frame, in order. Inside,
an asyncio event loop in a background thread sends pre-batches of ``prebatch`` frames
as multipart requests, at most ``inflight`` at a time per endpoint, each to the
endpoint with the fewest requests outstanding. Frames are encoded in a thread pool,
off the event loop. 429/502/503/504/507, connection errors and timeouts are retried
with exponential backoff; any other non-2xx status fails with the server's own message.

Before the first frame, ``ask_input_size`` asks every endpoint for its model's input
size (``X-Vidcap-Info``, both servers answer it), so frames are resized once, to the
size the served model wants. The token comes from ``--token``, ``$VIDCAP_TOKEN`` or,
for a loopback server, the TorchServe key file when this user can read it.

The caller's frame iterator is read lazily: never more than about
``prebatch * inflight * endpoints * 2`` frames are held, however long the video.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from vidcap import wire
from vidcap.errors import BackendUnavailable, UsageError, VidcapError
from vidcap.frames import resize_for_model
from vidcap.serve.protocol import INFO_HEADER
from vidcap.settings import DEFAULT_MODEL, GenerationSettings

log = logging.getLogger(__name__)

WIRE_FORMAT_HELP = (
    "frame encoding on the wire: png is lossless, captions equal the in-process run's "
    "(about 50 KB and 3.6 ms per 224x224 frame); jpeg (quality 95) is 5x smaller for slow "
    "links but changes some captions (default: %(default)s; bench/wire_format.py)"
)
# 429/503: busy; 502/504: a proxy lost the server; 507: a TorchServe worker died.
RETRY_STATUSES = frozenset({429, 502, 503, 504, 507})
TOKEN_ENV = "VIDCAP_TOKEN"
# Where a loopback TorchServe keeps its keys: $TS_RUN_DIR, else torchserve/logs/.
KEY_FILE_ENV = "TS_RUN_DIR"
DEFAULT_KEY_FILE = Path(__file__).resolve().parent.parent / "torchserve" / "logs" / "key_file.json"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ENDPOINT_HELP = (
    "http://HOST:PORT/caption (Flask) or http://HOST:PORT/predictions/<model> (TorchServe)"
)
HINTS = {
    401: f" (pass the server's inference key with --token or ${TOKEN_ENV})",
    404: f" (is it the full endpoint URL? {ENDPOINT_HELP})",
    413: " (send fewer frames per request: lower --prebatch)",
}


class RemoteError(VidcapError):
    """A server could not caption a batch of frames."""


class ServerUnavailable(RemoteError, BackendUnavailable):
    """No server answered (connection errors, timeouts, 503/429) within the retries."""


class ServerRejected(RemoteError):
    """A server refused a request (a status not in RETRY_STATUSES) or answered garbage."""


@dataclass(frozen=True)
class ClientOptions:
    """How frames go to the servers.

    ``wire_format``: ``png`` (lossless: captions equal the embedded run's exactly; the
    default, chosen by ``bench/wire_format.py``: JPEG q90 changed 9 of 64 sample captions
    of the tiny model, q95 5) or ``jpeg`` (9 KB instead of 50 KB per 224x224 frame); ``prebatch``: frames per request; ``inflight``: requests in flight per
    endpoint; ``retries``: extra attempts per request; ``timeout``: seconds per attempt;
    ``token``: sent as ``Authorization: Bearer`` (TorchServe token auth); ``backoff``:
    first retry delay in seconds, doubled each retry up to ``backoff_max``.
    """

    wire_format: str = "png"
    jpeg_quality: int = 95
    prebatch: int = 8
    inflight: int = 4
    retries: int = 5
    timeout: float = 120.0
    token: str | None = None
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


def parse_server_urls(value: str | Sequence[str]) -> list[str]:
    """``"URL1,URL2"`` (or a list) → checked endpoint URLs; ``UsageError`` on a bad one."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item.strip() for item in items if item.strip()]
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


@dataclass
class _Endpoint:
    url: str
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _Balancer:
    """Endpoints with at most ``inflight`` requests each; the least loaded healthy one wins.

    An endpoint that failed (connection error, timeout, 503/429) cools down for a time
    that doubles with each consecutive failure; while another endpoint is healthy, new
    requests wait for a free slot there rather than go to the cooling one. When every
    endpoint is cooling, requests go to the least loaded anyway (that is how a restarted
    server is found again). Event-loop thread only: no locks needed.
    """

    def __init__(self, urls: Sequence[str], options: ClientOptions) -> None:
        self.endpoints = [_Endpoint(url) for url in urls]
        self.options = options
        self._changed = asyncio.Event()

    async def acquire(self, avoid: _Endpoint | None = None) -> _Endpoint:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            healthy = [e for e in self.endpoints if e.down_until <= now]
            open_ = [e for e in healthy or self.endpoints if e.outstanding < self.options.inflight]
            if open_:
                best = min(open_, key=lambda e: (e is avoid, e.outstanding, e.failures))
                best.outstanding += 1
                return best
            wake = [e.down_until - now for e in self.endpoints if e.down_until > now]
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(wake, default=None))
            except asyncio.TimeoutError:
                pass

    def release(self, endpoint: _Endpoint, failed: bool, cooldown: float | None = None) -> None:
        endpoint.outstanding -= 1
        if failed:
            endpoint.failures += 1
            if cooldown is None:
                cooldown = self.options.delay(endpoint.failures - 1)
            endpoint.down_until = asyncio.get_running_loop().time() + cooldown
        else:
            endpoint.failures = 0
            endpoint.down_until = 0.0
        self._changed.set()

    def any_healthy_besides(self, endpoint: _Endpoint) -> bool:
        now = asyncio.get_running_loop().time()
        return any(e is not endpoint and e.down_until <= now for e in self.endpoints)


def encode_frames(
    images: Sequence[np.ndarray], input_size: tuple[int, int], options: ClientOptions
) -> list[bytes]:
    """Resize (a no-op for frames already at ``input_size``) and encode for the wire."""
    return [
        wire.encode_image(
            resize_for_model(image, input_size), options.wire_format, options.jpeg_quality
        )
        for image in images
    ]


def error_message(body: bytes) -> str:
    """The server's own words: ``{"error": …}`` (Flask), ``{"message": …}`` (TorchServe)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in ("error", "message"):
            if isinstance(payload.get(key), str):
                text = payload[key]
                break
    return " ".join(text.split())[:300] or "(empty body)"


class RemoteBackend:
    """A ``Backend`` that captions on one or more servers; see the module docstring.

    ::

        with RemoteBackend(["http://127.0.0.1:5000/caption"], (224, 224)) as backend:
            for caption in backend.caption_stream(frames, GenerationSettings()):
                ...

    Raises ``ServerUnavailable`` when a request fails ``retries + 1`` times over and
    ``ServerRejected`` when a server refuses one; both are ``VidcapError``s with a
    one-line message. Earlier frames' captions have been yielded by then.
    """

    def __init__(
        self,
        urls: Sequence[str],
        input_size: tuple[int, int],
        options: ClientOptions | None = None,
    ) -> None:
        self.urls = parse_server_urls(urls)
        self.input_size = input_size
        self.options = options or ClientOptions()
        self._mime = wire.WIRE_FORMATS[self.options.wire_format]
        self._encoder = ThreadPoolExecutor(self.options.encode_workers, "vidcap-encode")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
        self.unreachable: set[str] = set()  # endpoints that did not answer the size question
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
    ) -> Iterator[str]:
        if self._closed or not self._thread.is_alive():
            raise RuntimeError("RemoteBackend is closed")
        window = self.options.inflight * len(self.urls) * 2
        pending: deque[Future[list[str]]] = deque()
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

    def ask_input_size(self) -> tuple[int, int] | None:
        """The served model's input size, agreed by every endpoint, or None if none says.

        Raises ``ServerRejected`` when endpoints serve models of different sizes.
        """
        if self._closed:
            raise RuntimeError("RemoteBackend is closed")
        sizes: dict[str, tuple[int, int]] = {}
        for url in self.urls:
            future = asyncio.run_coroutine_threadsafe(self._info(url), self._loop)
            size = future.result()
            if size is not None:
                sizes[url] = size
        if len(set(sizes.values())) > 1:
            found = ", ".join(f"{url}: {h}x{w}" for url, (h, w) in sizes.items())
            raise ServerRejected(f"the servers serve models of different input sizes ({found})")
        return next(iter(sizes.values()), None)

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
        self._balancer = _Balancer(self.urls, self.options)
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            self._session = session
            self._ready.set()
            await self._stop.wait()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _caption_batch(
        self, images: list[np.ndarray], settings: GenerationSettings
    ) -> list[str]:
        loop = asyncio.get_running_loop()
        frames = await loop.run_in_executor(
            self._encoder, encode_frames, images, self.input_size, self.options
        )
        del images
        avoid: _Endpoint | None = None
        reason = ""
        for attempt in range(self.options.retries + 1):
            endpoint = await self._balancer.acquire(avoid)
            try:
                captions = await self._post(endpoint.url, frames, settings)
            except _Retryable as exc:
                reason = f"{endpoint.url}: {exc}"
                delay = self.options.delay(attempt)
                cooldown = None
                if exc.retry_after is not None:
                    cooldown = min(exc.retry_after, self.options.backoff_max)
                    delay = max(delay, cooldown)
                self._balancer.release(endpoint, failed=True, cooldown=cooldown)
            except BaseException:
                self._balancer.release(endpoint, failed=False)
                raise
            else:
                self._balancer.release(endpoint, failed=False)
                return captions
            if attempt == self.options.retries:
                break
            if self._balancer.any_healthy_besides(endpoint):
                delay = 0.0
            log.info("retry %d/%d in %.2fs: %s", attempt + 1, self.options.retries, delay, reason)
            avoid = endpoint
            await asyncio.sleep(delay)
        raise ServerUnavailable(
            f"no server captioned {len(frames)} frame(s) after {self.options.retries} "
            f"retries; last error: {reason}"
        )

    async def _post(self, url: str, frames: list[bytes], settings: GenerationSettings) -> list[str]:
        fields = wire.explicit_settings_fields(settings)
        headers: dict[str, str] = {}
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
        try:
            async with self._session.post(url, data=data, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = _seconds(resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            raise _Retryable(f"no answer within {self.options.timeout:g}s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Retryable(_describe(exc)) from None
        if status in RETRY_STATUSES:
            raise _Retryable(f"HTTP {status}: {error_message(body)}", retry_after)
        if not 200 <= status < 300:
            hint = HINTS.get(status, "")
            raise ServerRejected(f"{url} answered HTTP {status}: {error_message(body)}{hint}")
        try:
            return wire.captions_from_response(json.loads(body), len(frames))
        except ValueError as exc:
            raise ServerRejected(f"{url} answered HTTP {status} with a bad body: {exc}") from None

    async def _info(self, url: str) -> tuple[int, int] | None:
        timeout = aiohttp.ClientTimeout(total=min(self.options.timeout, 30.0))
        try:
            async with self._session.post(
                url, data=b"", headers={INFO_HEADER: "1"}, timeout=timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            # Unreachable: the captioning requests that follow retry, then say so in one line.
            log.info("%s did not say its input size: %s", url, _describe(exc))
            self.unreachable.add(url)
            return None
        if status == 401:
            raise ServerRejected(f"{url} answered HTTP 401: {error_message(body)}{HINTS[401]}")
        try:
            size = json.loads(body)["input_size"]
            return int(size[0]), int(size[1])
        except (ValueError, KeyError, IndexError, TypeError):
            log.warning("%s did not say its input size (HTTP %d)", url, status)
            return None

    def _form(self, frames: list[bytes], fields: dict[str, str]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        extension = self.options.wire_format
        for index, frame in enumerate(frames):
            name = wire.frame_part_name(index)
            form.add_field(name, frame, filename=f"{name}.{extension}", content_type=self._mime)
        for name, value in fields.items():
            form.add_field(name, value)
        return form


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


# --- command-line wiring shared by ``vidcap caption`` and clients/ ---


def retries_help() -> str:
    statuses = "/".join(str(s) for s in sorted(RETRY_STATUSES))
    return f"retries per request on HTTP {statuses}, connection errors and timeouts"


def add_client_arguments(
    parser: argparse.ArgumentParser,
    require_server: bool = False,
    server_flags: Sequence[str] = ("--server",),
    omit: Collection[str] = (),
) -> None:
    """``--server`` (or ``server_flags``, e.g. ``--url``) and how frames travel to it.

    ``omit``: options a caller fixes itself (e.g. ``("--inflight",)``), left out of
    the parser and its help; ``options_from_args`` then takes their defaults.
    """
    default = ClientOptions()
    group = parser.add_argument_group("remote servers")
    group.add_argument(
        *server_flags,
        dest="server",
        metavar="URL[,URL...]",
        required=require_server,
        help=f"caption on running servers instead of in-process: {ENDPOINT_HELP}; "
        "several comma-separated endpoints share the work",
    )

    def add(flag: str, **kwargs: object) -> None:
        if flag not in omit:
            group.add_argument(flag, **kwargs)  # type: ignore[arg-type]

    add(
        "--wire-format",
        choices=tuple(wire.WIRE_FORMATS),
        default=default.wire_format,
        help=WIRE_FORMAT_HELP,
    )
    add(
        "--prebatch",
        type=int,
        default=default.prebatch,
        metavar="K",
        help="frames per request (default: %(default)s)",
    )
    add(
        "--inflight",
        type=int,
        default=default.inflight,
        metavar="C",
        help="requests in flight per endpoint (default: %(default)s)",
    )
    add(
        "--retries",
        type=int,
        default=default.retries,
        help=retries_help() + " (default: %(default)s)",
    )
    add(
        "--timeout",
        type=float,
        default=default.timeout,
        metavar="SECONDS",
        help="per request attempt (default: %(default)s)",
    )
    add(
        "--token",
        default=None,
        help="sent as 'Authorization: Bearer TOKEN' (TorchServe token auth); default: "
        f"${TOKEN_ENV}, else for a loopback server the inference key of its key_file.json "
        f"(${KEY_FILE_ENV}/key_file.json or torchserve/logs/key_file.json) when readable",
    )


def options_from_args(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> ClientOptions:
    """Client options from parsed arguments; those a parser omitted keep their defaults."""
    default = ClientOptions()
    env = os.environ if env is None else env
    urls = parse_server_urls(args.server) if getattr(args, "server", None) else []
    return ClientOptions(
        wire_format=getattr(args, "wire_format", default.wire_format),
        prebatch=getattr(args, "prebatch", default.prebatch),
        inflight=getattr(args, "inflight", default.inflight),
        retries=getattr(args, "retries", default.retries),
        timeout=getattr(args, "timeout", default.timeout),
        token=find_token(getattr(args, "token", None), urls, env),
    )


def find_token(given: str | None, urls: Sequence[str], env: Mapping[str, str]) -> str | None:
    """``--token``, else ``$VIDCAP_TOKEN``, else the key file of a loopback TorchServe."""
    if given:
        return given
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    if not urls or not all(urlsplit(url).hostname in LOOPBACK_HOSTS for url in urls):
        return None
    run_dir = env.get(KEY_FILE_ENV)
    key_file = Path(run_dir) / "key_file.json" if run_dir else DEFAULT_KEY_FILE
    try:
        key = json.loads(key_file.read_text(encoding="utf-8"))["inference"]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    log.info("using the inference key from %s", key_file)
    return str(key)


def backend_from_args(
    args: argparse.Namespace, input_size: tuple[int, int], options: ClientOptions | None = None
) -> RemoteBackend | None:
    """A ``RemoteBackend`` when ``--server`` was given, else ``None`` (caption in-process).

    ``input_size`` is what ``--model`` implies; the servers' own answer wins. When
    ``--model`` was named and its size differs from the served model's, that is a
    ``UsageError`` (frames would be resized twice and captions change silently).
    """
    if not args.server:
        return None
    options = options or options_from_args(args)
    backend = RemoteBackend(parse_server_urls(args.server), input_size, options)
    try:
        served = backend.ask_input_size()
    except BaseException:
        backend.close()
        raise
    model = getattr(args, "model", DEFAULT_MODEL)
    if served is None:
        if backend.unreachable != set(backend.urls):
            log.warning(
                "the server did not say its input size: resizing frames to %dx%d (--model %s)",
                *input_size,
                model,
            )
    elif served != input_size:
        if model != DEFAULT_MODEL:
            backend.close()
            raise UsageError(
                f"--model {model} takes {input_size[0]}x{input_size[1]} frames but the server's "
                f"model takes {served[0]}x{served[1]}: drop --model or name the served model"
            )
        log.info("the server's model takes %dx%d frames", *served)
        backend.input_size = served
    return backend
