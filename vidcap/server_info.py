"""What the servers say they serve (the ``X-Vidcap-Info`` question, answered by Flask and
TorchServe without the model): input size, model, hub commit, precision and the most frames
one request may carry, checked to agree across endpoints before a run sends any frame. An
endpoint that answers the question 2xx with something that is no vidcap answer (a metrics
page, a web server's text) is no caption server: ``ServerRejected`` at once."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from vidcap import jsontext
from vidcap.errors import ServerRejected
from vidcap.replies import HINTS, NO_ENDPOINT, TOO_LONG, describe, error_message, read_reply
from vidcap.serve.protocol import INFO_HEADER
from vidcap.server_url import auth_headers, parse_server_urls
from vidcap.torchserve_key import KEY_HINT, TorchServeKey, key_refused

log = logging.getLogger(__name__)

# The info question is answered without the model: it needs no long wait.
INFO_TIMEOUT_S = 30.0
PRECISION = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a torch dtype's name, as servers say it


T = TypeVar("T")


@dataclass(frozen=True)
class ServerInfo:
    """What an endpoint said it serves (``None``: it did not say)."""

    input_size: tuple[int, int] | None = None
    model: str | None = None
    revision: str | None = None  # the model's hub commit
    precision: str | None = None  # what its language model computes in (``float16``…)
    max_frames: int | None = None  # the most frames one request may carry


async def ask_info(
    urls: Sequence[str], token: str | TorchServeKey | None, timeout: float, *, warn: bool = True
) -> tuple[dict[str, ServerInfo], dict[str, str]]:
    """What each endpoint that answered serves, and why the unreachable ones did not answer.

    Raises ``ServerRejected`` when an endpoint refuses the key (a ``TorchServeKey`` is
    re-read first), is no endpoint (404, 405, 501) or answers 2xx with no vidcap answer.
    ``warn``: an endpoint that did not say its input size is a warning (else logged as
    information: a question asked again before frames are sent, which warns then).
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
                log.info("%s did not say what it serves: %s", url, describe(exc))
                unreachable[url] = f"{url}: {describe(exc)}"
                continue
            message = error_message(body)
            if key_refused(status, message):
                raise ServerRejected(f"{url} answered HTTP {status}: {message}{KEY_HINT}")
            if status in NO_ENDPOINT:  # (no such path; a server that takes no POST there)
                raise ServerRejected(f"{url} answered HTTP {status}: {message}{HINTS[404]}")
            infos[url] = _info(url, status, body, warn)
    return infos, unreachable


def served_model(
    urls: str | Sequence[str],
    timeout: float = INFO_TIMEOUT_S,
    *,
    token: str | TorchServeKey | None = None,
) -> ServerInfo:
    """What the servers say they run (each field ``None`` when none says: an old server,
    or none reachable). ``ServerRejected`` as ``RemoteBackend.connect`` raises it; an
    endpoint that does not say its input size is not warned of here (``connect``, which
    sends the frames, does)."""
    infos, _ = asked(parse_server_urls(urls), token, timeout, warn=False)
    return agreed(infos)


def asked(
    urls: Sequence[str], token: str | TorchServeKey | None, timeout: float, *, warn: bool = True
) -> tuple[dict[str, ServerInfo], dict[str, str]]:
    """``ask_info`` from a caller's thread, each endpoint given at most ``timeout`` (and
    ``INFO_TIMEOUT_S``: the question needs no long wait)."""
    return _run_apart(ask_info(urls, token, min(timeout, INFO_TIMEOUT_S), warn=warn))


def agreed(infos: dict[str, ServerInfo]) -> ServerInfo:
    """The input size, model and commit every endpoint that said them serves (``None``:
    none said); ``ServerRejected`` when endpoints serve different ones. The precisions they
    compute in, comma-separated where they differ; the fewest frames per request any of
    them takes (a request may go to any)."""
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
    limits = [info.max_frames for info in infos.values() if info.max_frames is not None]
    return ServerInfo(
        *first,
        next(iter(commits.values()), None),
        ",".join(precisions) or None,
        min(limits, default=None),
    )


# The largest side an info answer's input size may have: a frame of a 4K video (models take
# 224 or 364; a client resizes every frame to it and holds a queue of them).
MAX_INPUT_SIDE = 4096


def _info(url: str, status: int, body: bytes, warn: bool = True) -> ServerInfo:
    try:
        answer = jsontext.loads(body)
    except ValueError:
        answer = None
    if 200 <= status < 300 and not _vidcap_answer(answer):
        # (TorchServe's metrics port, a web server's page: it took the POST and said
        # something else; its captioning answers would too, each video failing after retries)
        said = error_message(body)
        said = said if len(said) <= 160 else said[:159] + "…"
        raise ServerRejected(
            f"{url} answered HTTP {status} with no vidcap answer (not a caption server?): "
            f"{said}{HINTS[404]}"
        )
    size = model = revision = precision = max_frames = None
    if isinstance(answer, dict) and "input_size" in answer:
        said = answer["input_size"]
        if not (
            isinstance(said, list)
            and len(said) == 2
            and all(type(n) is int and 1 <= n <= MAX_INPUT_SIDE for n in said)
        ):
            raise ServerRejected(
                f"{url} says its model takes frames of {str(said)[:40]}: not an input size "
                f"(two whole numbers, 1 to {MAX_INPUT_SIDE}); is it a vidcap server?"
            )
        size = said[0], said[1]
        for key in ("model", "revision"):  # (recorded with every video: text a file holds)
            said = answer.get(key)
            if isinstance(said, str) and (jsontext.storable(said) != said or "\x00" in said):
                raise ServerRejected(
                    f"{url} names its {key} {said!r:.80}: not text; is it a vidcap server?"
                )
        if isinstance(answer.get("model"), str) and answer["model"]:
            model = answer["model"]
        if isinstance(answer.get("revision"), str) and answer["revision"]:
            revision = answer["revision"]
        if isinstance(answer.get("precision"), str) and PRECISION.fullmatch(answer["precision"]):
            precision = answer["precision"]  # (a dtype's name: recorded with every video)
        said = answer.get("max_frames_per_request")
        if type(said) is int and said >= 1:  # (else not said: no limit the client knows)
            max_frames = said
    if size is None:
        (log.warning if warn else log.info)("%s did not say its input size (HTTP %d)", url, status)
    return ServerInfo(size, model, revision, precision, max_frames)


def _vidcap_answer(answer: object) -> bool:
    """Is ``answer`` (parsed JSON, ``None`` for none) what a vidcap server answers with 2xx:
    the info object (``input_size``) or captions (``{"caption": …}``, or a list of them)?"""
    if isinstance(answer, dict) and "input_size" in answer:
        return True
    items = answer if isinstance(answer, list) and answer else [answer]
    return all(isinstance(item, dict) and isinstance(item.get("caption"), str) for item in items)


def _run_apart(coro: Coroutine[object, object, T]) -> T:
    """Run ``coro`` to the end on an event loop of its own (in a thread, so a caller that
    runs a loop itself is not disturbed)."""
    with ThreadPoolExecutor(1, "vidcap-connect") as pool:
        return pool.submit(asyncio.run, coro).result()
