"""Captions from running servers: the ``--server URL[,URL…]`` backend (aiohttp).

``RemoteBackend`` is a ``vidcap.backend.Backend``: the pipeline hands it frames already
at its ``input_size`` (the decoder resizes them, once) and gets one caption per frame,
in order. Inside, an asyncio event loop in a background thread sends pre-batches of
``prebatch`` frames as multipart requests, at most ``inflight`` at a time per endpoint,
each to the endpoint with the fewest requests outstanding (``vidcap.balancer``). Frames
are encoded (``vidcap.wire.encode_frames``) in a thread pool, off the event loop.
429/502/503/504/507, connection errors and timeouts are retried with exponential
backoff; any other non-2xx status fails with the server's own message.

``RemoteBackend.connect`` first asks every endpoint for its model's input size
(``X-Vidcap-Info``, both servers answer it) and returns a backend built for that size.
The token (``Authorization: Bearer``) is given by the caller; finding it (``--token``,
``$VIDCAP_TOKEN``, a TorchServe key file) is the command line's job
(``vidcap.cli.remote``).

The caller's frame iterator is read lazily: never more than about
``prebatch * inflight * endpoints * 2`` frames are held, however long the video.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from vidcap import wire
from vidcap.balancer import Balancer, Endpoint
from vidcap.errors import BackendUnavailable, UsageError, VidcapError
from vidcap.serve.protocol import INFO_HEADER
from vidcap.settings import GenerationSettings

log = logging.getLogger(__name__)

# 429/503: busy; 502/504: a proxy lost the server; 507: a TorchServe worker died.
RETRY_STATUSES = frozenset({429, 502, 503, 504, 507})
# Named in the 401 hint; read by the command line only (``vidcap.cli.remote``).
TOKEN_ENV = "VIDCAP_TOKEN"
ENDPOINT_HELP = (
    "http://HOST:PORT/caption (Flask) or http://HOST:PORT/predictions/<model> (TorchServe)"
)
HINTS = {
    401: f" (pass the server's inference key with --token or ${TOKEN_ENV})",
    404: f" (is it the full endpoint URL? {ENDPOINT_HELP})",
    413: " (send fewer frames per request: lower --prebatch)",
}
# The size question is answered without the model: it needs no long wait.
INFO_TIMEOUT_S = 30.0

T = TypeVar("T")


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


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


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

        urls = ["http://127.0.0.1:5000/caption"]
        with RemoteBackend.connect(urls, ClientOptions(), expected_size=(224, 224)) as backend:
            for caption in backend.caption_stream(frames, GenerationSettings()):
                ...

    ``RemoteBackend(urls, input_size, options, token=…)`` builds one for a known size.
    ``token`` is sent as ``Authorization: Bearer`` (TorchServe token auth). Frames must
    be at ``input_size`` (a ``ValueError`` otherwise).

    Raises ``ServerUnavailable`` when a request fails ``retries + 1`` times over and
    ``ServerRejected`` when a server refuses one; both are ``VidcapError``s with a
    one-line message. Earlier frames' captions have been yielded by then.
    """

    def __init__(
        self,
        urls: Sequence[str],
        input_size: tuple[int, int],
        options: ClientOptions | None = None,
        *,
        token: str | None = None,
    ) -> None:
        self.urls = parse_server_urls(urls)
        self.input_size = input_size
        self.options = options or ClientOptions()
        self.token = token
        self._mime = wire.WIRE_FORMATS[self.options.wire_format]
        self._encoder = ThreadPoolExecutor(self.options.encode_workers, "vidcap-encode")
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._closed = False
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

    @classmethod
    def connect(
        cls,
        urls: str | Sequence[str],
        options: ClientOptions | None = None,
        *,
        token: str | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> RemoteBackend:
        """Ask every endpoint for its model's input size, then a backend for that size.

        The servers' answer wins over ``expected_size`` (logged when they differ);
        ``expected_size`` is used when no server says (an old server, or none reachable
        yet: the captioning requests then retry as usual). Raises ``ServerRejected``
        when endpoints serve models of different sizes or refuse the token, and when
        no size is known at all (``ServerUnavailable`` if no endpoint answered).
        """
        urls = parse_server_urls(urls)
        options = options or ClientOptions()
        timeout = min(options.timeout, INFO_TIMEOUT_S)
        sizes, unreachable = _run_apart(ask_input_sizes(urls, token, timeout))
        if len(set(sizes.values())) > 1:
            found = ", ".join(f"{url}: {h}x{w}" for url, (h, w) in sizes.items())
            raise ServerRejected(f"the servers serve models of different input sizes ({found})")
        served = next(iter(sizes.values()), None)
        if served is not None:
            if expected_size is not None and served != expected_size:
                log.info("the server's model takes %dx%d frames", *served)
            return cls(urls, served, options, token=token)
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
        return cls(urls, expected_size, options, token=token)

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
        headers = auth_headers(self.token)
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
            self._encoder,
            wire.encode_frames,
            images,
            self.input_size,
            self.options.wire_format,
            self.options.jpeg_quality,
        )
        del images
        avoid: Endpoint | None = None
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

    def _form(self, frames: list[bytes], fields: dict[str, str]) -> aiohttp.FormData:
        form = aiohttp.FormData()
        extension = self.options.wire_format
        for index, frame in enumerate(frames):
            name = wire.frame_part_name(index)
            form.add_field(name, frame, filename=f"{name}.{extension}", content_type=self._mime)
        for name, value in fields.items():
            form.add_field(name, value)
        return form


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def ask_input_sizes(
    urls: Sequence[str], token: str | None, timeout: float
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Each endpoint's model input size (those that say it) and why the unreachable ones
    did not answer. Raises ``ServerRejected`` on a 401."""
    sizes: dict[str, tuple[int, int]] = {}
    unreachable: dict[str, str] = {}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(headers=auth_headers(token)) as session:
        for url in urls:
            try:
                async with session.post(
                    url, data=b"", headers={INFO_HEADER: "1"}, timeout=client_timeout
                ) as resp:
                    body = await resp.read()
                    status = resp.status
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                # Unreachable: the captioning requests that follow retry, then say so.
                log.info("%s did not say its input size: %s", url, _describe(exc))
                unreachable[url] = f"{url}: {_describe(exc)}"
                continue
            if status == 401:
                raise ServerRejected(f"{url} answered HTTP 401: {error_message(body)}{HINTS[401]}")
            try:
                size = json.loads(body)["input_size"]
                sizes[url] = int(size[0]), int(size[1])
            except (ValueError, KeyError, IndexError, TypeError):
                log.warning("%s did not say its input size (HTTP %d)", url, status)
    return sizes, unreachable


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
