"""The ``--server`` options of ``vidcap caption`` and ``clients/``: flags → a ``RemoteBackend``.

``add_client_arguments`` adds ``--server`` and how frames travel; ``backend_from_args``
finds the key (``find_token``: ``--token``, ``$VIDCAP_TOKEN``, or the inference key of the
TorchServe that ``torchserve/start.sh`` runs from ``$TS_RUN_DIR`` or ``torchserve/logs``,
for that server's own address only) and connects
(``vidcap.client.RemoteBackend.connect``). The library never reads these flags or the
environment; it reads a run folder only where it is handed one (``TorchServeKey``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import vidcap
from vidcap import wire
from vidcap.client import ClientOptions, RemoteBackend
from vidcap.errors import UsageError
from vidcap.server_info import served_model
from vidcap.server_url import ENDPOINT_HELP, origin, parse_server_urls
from vidcap.settings import DEFAULT_MODEL
from vidcap.torchserve_key import ADDRESS_FILE_NAME, TOKEN_ENV, TorchServeKey

log = logging.getLogger(__name__)

WIRE_FORMAT_HELP = (
    "frame encoding on the wire: png is lossless, captions equal the in-process run's "
    "(about 50 KB and 3.6 ms per 224x224 frame); jpeg (quality 95) is 5x smaller for slow "
    "links but changes some captions (default: %(default)s; bench/wire_format.py)"
)
# Where a TorchServe started by start.sh keeps its keys and its address: $TS_RUN_DIR, else
# torchserve/logs/ of the checkout vidcap runs from (start.sh's default run folder).
KEY_FILE_ENV = "TS_RUN_DIR"
DEFAULT_RUN_DIR = Path(vidcap.__file__).resolve().parent.parent / "torchserve" / "logs"


def retries_help() -> str:
    return (
        "retries per request on HTTP 408, 429 and 5xx, connection errors and timeouts; a "
        "request still failing fails its frames' videos only, unless no server could be "
        "reached at all"
    )


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
        help="sent as 'Authorization: Bearer TOKEN' to the --server URLs (TorchServe token "
        f"auth); default: ${TOKEN_ENV}, else the inference key in the run folder of a "
        f"TorchServe started by start.sh (${KEY_FILE_ENV}, else torchserve/logs), sent only "
        f"to the address that server listens on ({ADDRESS_FILE_NAME} there) and re-read "
        "when the server refuses it",
    )


def options_from_args(args: argparse.Namespace) -> ClientOptions:
    """Client options from parsed arguments; those a parser omitted keep their defaults."""
    default = ClientOptions()
    return ClientOptions(
        wire_format=getattr(args, "wire_format", default.wire_format),
        prebatch=getattr(args, "prebatch", default.prebatch),
        inflight=getattr(args, "inflight", default.inflight),
        retries=getattr(args, "retries", default.retries),
        timeout=getattr(args, "timeout", default.timeout),
    )


def find_token(
    given: str | None,
    urls: Sequence[str],
    env: Mapping[str, str],
    default_run_dir: Path = DEFAULT_RUN_DIR,
) -> str | TorchServeKey | None:
    """``--token``, else ``$VIDCAP_TOKEN`` (both for every URL given), else the inference
    key of the TorchServe running from ``$TS_RUN_DIR`` (``default_run_dir`` when unset)
    when one of ``urls`` is that server's address (``TorchServeKey``: for it alone)."""
    explicit = given or env.get(TOKEN_ENV)
    if explicit and any(getattr(url, "authorization", None) for url in urls):
        raise UsageError(
            "a server URL with user:password@ and a token (--token or $VIDCAP_TOKEN): a "
            "request carries one Authorization header; give one of the two"
        )
    if explicit:
        if not explicit.isprintable() or not explicit.isascii():
            where = "--token" if given else f"${TOKEN_ENV}"
            raise UsageError(
                f"{where} holds a character a header cannot carry (a line break, a control "
                "or non-ASCII character): give the token alone"
            )
        return explicit
    run_dir = env.get(KEY_FILE_ENV)
    key = TorchServeKey(Path(run_dir) if run_dir else default_run_dir).read()
    if key.key is None:
        return None
    if not any(key.for_url(url) for url in urls):
        # The same port under another name (localhost for 127.0.0.1) is likely a slip.
        slip = any(origin(url)[2] in {port for _, _, port in key.origins} for url in urls)
        (log.warning if slip else log.info)(
            "not sending the inference key of %s: it is for %s only", key.run_dir, key.address
        )
        return None
    log.info("using the inference key from %s for %s", key.run_dir, key.address)
    return key


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
    urls = parse_server_urls(args.server)
    options = options or options_from_args(args)
    token = find_token(getattr(args, "token", None), urls, os.environ)
    backend = RemoteBackend.connect(urls, options, token=token, expected_size=input_size)
    model = getattr(args, "model", DEFAULT_MODEL)
    if backend.input_size != input_size and model != DEFAULT_MODEL:
        backend.close()
        served = backend.input_size
        raise UsageError(
            f"--model {model} takes {input_size[0]}x{input_size[1]} frames but the server's "
            f"model takes {served[0]}x{served[1]}: drop --model or name the served model"
        )
    return backend


def lossy_wire(args: argparse.Namespace) -> str:
    """``"jpeg"`` where frames cross to the servers lossily (it changes some captions, so it
    is part of the resume key); ``""`` for PNG, which gives the embedded run's captions."""
    wire_format = getattr(args, "wire_format", ClientOptions().wire_format)
    return "" if wire_format == "png" else wire_format


def served_model_name(args: argparse.Namespace) -> tuple[str, str, str]:
    """The model a ``--server`` run names in its outputs (``summary.json``, the resume key),
    its hub commit and its precision (each video's record; ``""`` when unknown).

    The one the servers say they run (their info answer), so that a rerun against the same
    servers resumes and one against servers running another model (or commit) redoes the
    videos; ``--model`` when no server says (an old server, or none reachable yet).
    """
    named = getattr(args, "model", DEFAULT_MODEL)
    urls = parse_server_urls(args.server)
    token = find_token(getattr(args, "token", None), urls, os.environ)
    info = served_model(urls, options_from_args(args).timeout, token=token)
    served, revision, precision = info.model, info.revision or "", info.precision or ""
    if served is None:
        log.info("no server said which model it runs: the outputs name --model %s", named)
        return named, revision, precision
    if named not in (DEFAULT_MODEL, served):
        log.warning(
            "--model %s given, but the servers run %s: the outputs name %s", named, served, served
        )
    return served, revision, precision
