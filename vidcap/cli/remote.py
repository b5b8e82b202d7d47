"""The ``--server`` options of ``vidcap caption`` and ``clients/``: flags → a ``RemoteBackend``.

``add_client_arguments`` adds ``--server`` and how frames travel; ``backend_from_args``
finds the token (``find_token``: ``--token``, ``$VIDCAP_TOKEN``, or the key file of a
loopback TorchServe) and connects (``vidcap.client.RemoteBackend.connect``). The
library never reads these flags, the environment or the key file itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import vidcap
from vidcap import wire
from vidcap.client import (
    ENDPOINT_HELP,
    RETRY_STATUSES,
    TOKEN_ENV,
    ClientOptions,
    RemoteBackend,
    parse_server_urls,
)
from vidcap.errors import UsageError
from vidcap.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

WIRE_FORMAT_HELP = (
    "frame encoding on the wire: png is lossless, captions equal the in-process run's "
    "(about 50 KB and 3.6 ms per 224x224 frame); jpeg (quality 95) is 5x smaller for slow "
    "links but changes some captions (default: %(default)s; bench/wire_format.py)"
)
# Where a loopback TorchServe keeps its keys: $TS_RUN_DIR, else torchserve/logs/ of the
# checkout vidcap runs from (start.sh's default run folder).
KEY_FILE_ENV = "TS_RUN_DIR"
DEFAULT_RUN_DIR = Path(vidcap.__file__).resolve().parent.parent / "torchserve" / "logs"
KEY_FILE_NAME = "key_file.json"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


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
        f"${TOKEN_ENV}, else for a loopback server the inference key of its {KEY_FILE_NAME} "
        f"(${KEY_FILE_ENV}/{KEY_FILE_NAME} or torchserve/logs/{KEY_FILE_NAME}) when readable",
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
) -> str | None:
    """``--token``, else ``$VIDCAP_TOKEN``, else the inference key of a loopback TorchServe
    from ``$TS_RUN_DIR/key_file.json`` (``default_run_dir`` when unset), when readable."""
    if given:
        return given
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    if not urls or not all(urlsplit(url).hostname in LOOPBACK_HOSTS for url in urls):
        return None
    run_dir = env.get(KEY_FILE_ENV)
    key_file = (Path(run_dir) if run_dir else default_run_dir) / KEY_FILE_NAME
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
