"""Captions from running servers: the ``--server URL[,URL…]`` backend (aiohttp).

``RemoteBackend`` is a ``vidcap.backend.Backend``: the pipeline hands it frames already
at its ``input_size`` (the decoder resizes them, once) and gets one answer per frame,
in order. Inside, an asyncio event loop in a background thread sends pre-batches of
``prebatch`` frames as multipart requests, at most ``inflight`` at a time per endpoint,
each to the endpoint with the fewest requests outstanding (``vidcap.balancer``). Frames
are encoded (``vidcap.wire.encode_frames``) in a thread pool, off the event loop.

The retry policy, written once here (``_failure_of``, ``RemoteBackend._caption_batch``;
what a reply says: ``vidcap.replies``):

* **busy or unreachable** (429/502/503/504, cannot connect, no answer within ``timeout``,
  a key the server refuses even after re-reading it): retried with exponential backoff,
  ``Retry-After`` honoured, the endpoint cooling down. A request whose every attempt
  failed so raises ``ServerUnavailable``: no server can caption, the run stops.
* **this request failed** (500, 507 and every other 5xx, 408, a connection dropped
  mid-request while the server still takes new ones, an answer that is not captions or
  not HTTP, anything else aiohttp raises): retried the same way; past the retries, each
  of its frames gets a ``CaptionFailed`` in place of a caption, so only the videos of
  those frames fail and the run goes on.
* **refused** (any other 4xx: the request itself is wrong, it would get the same answer
  again): ``CaptionFailed`` at once.

A server that cannot be connected to (never could, or dropped a request and now takes no
connection: it went away) is said once, in one line naming it, not once per request in
flight there (``RemoteBackend._gone``); a request whose last attempt met such a server is
"unreachable", however it failed before.

``RemoteBackend.connect`` first asks every endpoint what it serves (``X-Vidcap-Info``,
both servers answer it: the model's name and input size; ``vidcap.server_info``) and
returns a backend built for that size, its ``model`` the served model's name. The key
(``Authorization: Bearer``) is given by the caller: a string goes to every endpoint of the
backend (the URLs it was given for); a ``TorchServeKey`` (``vidcap.torchserve_key``) goes
only to the TorchServe whose run folder holds it, and is re-read from there when that
server refuses it (a restart or an expiry renewed it). Finding it (``--token``, ``$VIDCAP_TOKEN``, a run folder) is the command line's job
(``vidcap.cli.remote``). Redirects are never followed: a key goes nowhere else.

The caller's frame iterator is read lazily: never more than about
``prebatch * inflight * endpoints * 2`` frames are held, however long the video.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import aiohttp
import numpy as np

from vidcap import jsontext, server_info, wire
from vidcap.backend import CaptionFailed
from vidcap.balancer import Balancer, Endpoint
from vidcap.errors import ServerChanged, ServerRejected, ServerUnavailable, UsageError
from vidcap.replies import HINTS, TOO_LONG, describe, error_message, read_reply
from vidcap.serve.protocol import (
    MODEL_HEADER,
    PRECISION_HEADER,
    REVISION_HEADER,
    model_from_value,
)
from vidcap.server_url import auth_headers, origin, parse_server_urls
from vidcap.settings import GenerationSettings
from vidcap.torchserve_key import KEY_HINT, TorchServeKey, key_refused
from vidcap.wording import counted

log = logging.getLogger(__name__)

# Busy or gone: 429/503 busy; 502/504 a proxy (or the gate) lost the server.
BUSY_STATUSES = frozenset({429, 502, 503, 504})
# 408: the server gave up reading this request; with every 5xx but the busy ones (500: the
# model failed; 507: TorchServe's "Worker died.") the request failed, not the server.
FAILED_STATUSES = frozenset({408})
# A request with no answer after STALL_FACTOR times the slowest of the last STALL_HISTORY
# answers (at least STALL_FLOOR_S; once STALL_MIN_ANSWERS came back) is sent again, to
# another endpoint if there is one, and the first answer wins: a TorchServe worker killed
# with a request never answers it (the gate says so only after VIDCAP_BATCH_ALLOWANCE, 60 s),
# and every later frame waits for it, since answers come back in order.
STALL_FACTOR = 5.0
STALL_FLOOR_S = 5.0
STALL_HISTORY = 32
STALL_MIN_ANSWERS = 8


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
            at_least(flag, value, least)
        if not self.timeout > 0:
            raise UsageError(f"--timeout must be a number of seconds > 0, got {self.timeout}")
        if not (0 <= self.backoff <= self.backoff_max):
            raise UsageError(f"backoff must be within [0, {self.backoff_max}], got {self.backoff}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (0-based)."""
        return min(self.backoff * 2**attempt, self.backoff_max)


def at_least(flag: str, value: int, least: int) -> int:
    """``value``, a whole number of ``flag``'s; ``UsageError`` when under ``least`` (the one
    wording of the client options' checks, the example clients' own options too)."""
    if value < least:
        raise UsageError(f"{flag} must be a whole number >= {least}, got {value}")
    return value


def check_prebatch(prebatch: int, limit: int | None, urls: Sequence[str]) -> None:
    """``UsageError`` when ``prebatch`` frames per request are more than the servers take in
    one (``limit``, their info answer's ``max_frames_per_request``; ``None``: not said): every
    request would be refused (413) and every video fail."""
    if limit is None or prebatch <= limit:
        return
    which = "the server" if len(urls) == 1 else "one of the servers"
    raise UsageError(
        f"--prebatch {prebatch} is more than {which} takes in one request ({limit}): "
        f"use --prebatch {limit} or less"
    )


# --- the retry policy ----------------------------------------------------------------------

BUSY, FAILED, REFUSED, KEY = "busy", "failed", "refused", "key"


# How an attempt's connection failed, where it did: it never connected, or the server
# closed it (or reset it) before answering.
REFUSED_CONNECTION, DROPPED_CONNECTION = "refused", "dropped"
PROBE_TIMEOUT_S = 5.0  # a dropped connection's server asked whether it still takes any


class _Failure(Exception):
    """One failed attempt: ``kind`` says what it means (the module docstring);
    ``connection``: how its connection failed, where it did (``REFUSED_CONNECTION``…)."""

    def __init__(
        self, kind: str, reason: str, retry_after: float | None = None, *, connection: str = ""
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.retry_after = retry_after
        self.connection = connection


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
    (a ``ValueError`` otherwise). ``model``, ``revision``, ``precision``: the served model's
    name, hub commit and dtype (several joined by commas, as ``server_info.agreed`` gives
    them), when the servers said them (``connect``): an answer from another is refused
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
        precision: str | None = None,
    ) -> None:
        self.urls = parse_server_urls(urls)
        self.input_size = input_size
        self.options = options or ClientOptions()
        self.token = token
        self.model = model
        self.revision = revision
        self.precision = precision
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
        pending: deque[Future[list[str | CaptionFailed] | Exception]] = deque()
        frames = iter(images)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window:
                    chunk = list(islice(frames, self.options.prebatch))
                    if not chunk:
                        exhausted = True
                        break
                    coro = self._outcome(chunk, settings)
                    pending.append(asyncio.run_coroutine_threadsafe(coro, self._loop))
                if not pending:
                    return
                answers = pending.popleft().result()
                if isinstance(answers, Exception):
                    raise answers
                yield from answers
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
        endpoints (404, or a 2xx that is no vidcap answer), and when no size is known at
        all (``ServerUnavailable`` if no endpoint answered); ``UsageError`` when
        ``options.prebatch`` is more frames than a server takes in one request.
        """
        urls = parse_server_urls(urls)
        options = options or ClientOptions()
        infos, unreachable = server_info.asked(urls, token, options.timeout)
        agreed = server_info.agreed(infos)
        check_prebatch(options.prebatch, agreed.max_frames, urls)
        served = {"model": agreed.model, "revision": agreed.revision, "precision": agreed.precision}
        if agreed.input_size is not None:
            if expected_size is not None and agreed.input_size != expected_size:
                log.info("the server's model takes %dx%d frames", *agreed.input_size)
            return cls(urls, agreed.input_size, options, token=token, **served)
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
        return cls(urls, expected_size, options, token=token, **served)

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

    async def _outcome(
        self, images: list[np.ndarray], settings: GenerationSettings
    ) -> list[str | CaptionFailed] | Exception:
        """``_caption_batch``'s answers, or what it raised, returned: the caller raises the
        first; the others, done as it stopped reading (the requests in flight when every
        server went away fail together), would each print "Task exception was never
        retrieved" and a traceback."""
        try:
            return await self._caption_batch(images, settings)
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            return exc

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
        unreachable = False  # its last attempt could not connect
        reason = ""
        attempt = renewals = 0
        while True:
            endpoint = await self._balancer.acquire(avoid)
            key = self._key_for(endpoint.url)
            try:
                captions = await self._send(endpoint, frames, settings, key)
            except _Failure as exc:
                reason = str(exc)
                unreachable = await self._gone(endpoint, exc)
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
                self._answered(endpoint)
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
        if failed is not None and not unreachable:  # a server took the request and failed
            # it: these frames fail (a request last met a server it cannot reach is the
            # server gone, however it failed before: its connection dropped as it died)
            last = "" if str(failed) == reason else f"; last error: {reason}"
            log.warning(
                "%s got no caption %s: %s%s", counted(len(frames), "frame"), after, failed, last
            )
            return [CaptionFailed(f"no caption {after}: {failed}{last}")] * len(frames)
        raise ServerUnavailable(
            f"no server captioned {counted(len(frames), 'frame')} {after}; last error: {reason}"
        )

    async def _gone(self, endpoint: Endpoint, failure: _Failure) -> bool:
        """Is ``endpoint``'s server gone, after ``failure`` there? Yes when the attempt could
        not connect, or its connection was dropped and no new one can be made (a server
        killed: the requests in flight there are dropped, the port then closed; a worker
        killed by one request drops only that one). Said once (``_lost``)."""
        if failure.connection == REFUSED_CONNECTION:
            self._lost(endpoint, str(failure))
            return True
        if failure.kind != KEY:
            endpoint.answered = True  # (it took the request: a 5xx, a dropped connection …)
        if failure.connection != DROPPED_CONNECTION:
            return False
        _, host, port = origin(endpoint.url)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), min(PROBE_TIMEOUT_S, self.options.timeout)
            )
        except (OSError, asyncio.TimeoutError) as exc:
            self._lost(endpoint, f"{failure}; then {describe(exc)}")
            return True
        writer.close()
        return False

    def _lost(self, endpoint: Endpoint, reason: str) -> None:
        """``endpoint`` could not be connected to: said once (not for each request in
        flight there, each retried on), until it answers again (``_answered``)."""
        others = self._balancer.reachable_besides(endpoint)
        if endpoint.lost or not (endpoint.answered or others):
            return  # (the only server, never reached: the stop line says so, if it stays away)
        endpoint.lost = True
        what = "went away" if endpoint.answered else "is unreachable"
        why = reason.replace(f"{endpoint.url}: ", "")
        if others:
            servers = "server" if len(others) == 1 else f"{len(others)} servers"
            then = f"the run goes on with the other {servers}, trying it again now and then"
        else:
            then = f"retrying (--retries {self.options.retries}); the run stops if it stays away"
        log.warning("the server at %s %s (%s): %s", endpoint.url, what, why, then)

    def _answered(self, endpoint: Endpoint) -> None:
        endpoint.answered = True
        if endpoint.lost:
            endpoint.lost = False
            log.warning("the server at %s answers again: it is used again", endpoint.url)

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
            and all(_header_holds(v) for v in fields.values())
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
                precision = resp.headers.get(PRECISION_HEADER)
        except asyncio.TimeoutError:
            raise _Failure(BUSY, f"{url}: no answer within {self.options.timeout:g}s") from None
        except aiohttp.ClientConnectorError as exc:  # never reached the server
            raise _Failure(BUSY, f"{url}: {describe(exc)}", connection=REFUSED_CONNECTION) from None
        except aiohttp.ClientConnectionError as exc:
            # The server took the request, then dropped it (a dying worker or server).
            why = f"{url}: {describe(exc)}"
            raise _Failure(FAILED, why, connection=DROPPED_CONNECTION) from None
        except aiohttp.ClientPayloadError as exc:  # (its answer cut short)
            raise _Failure(FAILED, f"{url}: {describe(exc)}") from None
        except aiohttp.ClientResponseError as exc:  # an answer aiohttp cannot read as HTTP
            said = " ".join(str(exc.message).split())[:200]
            raise _Failure(FAILED, f"{url} answered outside HTTP: {said}") from None
        except aiohttp.ClientError as exc:  # whatever else aiohttp meets: this request's
            raise _Failure(FAILED, f"{url}: {describe(exc)}") from None
        if not 200 <= status < 300:
            raise _failure_of(url, status, body, retry_after)
        if not whole:
            raise _Failure(FAILED, f"{url} answered HTTP {status} with {TOO_LONG}")
        try:
            captions = wire.captions_from_response(jsontext.loads(body), len(frames))
        except ValueError as exc:
            raise _Failure(FAILED, f"{url} answered HTTP {status} with a bad body: {exc}") from None
        self._check_same_model(url, served, commit, precision)
        self._latencies.append(asyncio.get_running_loop().time() - started)
        return captions

    def _check_same_model(
        self, url: str, served: str | None, commit: str | None, precision: str | None = None
    ) -> None:
        """``ServerChanged`` when an answer names another model, another commit of it, or
        a precision none of the servers said at the start (its captions differ, and every
        video's record names the run's), than the run began with (``served``, ``commit``,
        ``precision``: its headers, where sent)."""
        served = model_from_value(served) if served else None
        commit = model_from_value(commit) if commit else None
        precision = model_from_value(precision) if precision else None
        stop = "mix two models' captions in one folder"
        if served and self.model is not None and served != self.model:
            said = f"the captions of {served}, not of {self.model}"
            why = "with another model"
            rerun = "captions every video with the model the servers then serve"
        elif commit and self.revision is not None and commit != self.revision:
            said = f"revision {commit} of {self.model}, not {self.revision}"
            why = "after the model was updated"
            rerun = "captions every video with the model the servers then serve"
        elif precision and self.precision and precision not in self.precision.split(","):
            said = f"{self.model} in {precision}, not {self.precision}"
            why = "with another VIDCAP_DTYPE"
            rerun = f"captions the videos left in {precision}, and records it"
            stop = f"record captions computed in {precision} as {self.precision}'s"
        else:
            return
        change = (
            f"{url} now answers with {said}, which this run began with (a server restarted {why}?)"
        )
        raise ServerChanged(
            f"{change}: the run stops rather than {stop}; a rerun {rerun}",
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


def _header_holds(value: str) -> bool:
    """Does a header carry ``value`` as it is? Not text beyond ASCII, nor a control
    character (a line break in a prompt: aiohttp refuses to send it, and the request never
    went), nor spaces or tabs at either end (a server reads a header's value without them:
    ``"a photo of "`` was captioned as ``"a photo of"``): such a setting goes as a form field."""
    return value.isascii() and value.isprintable() and value == value.strip(" \t")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
