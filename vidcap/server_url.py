"""Where ``--server`` requests go: endpoint URLs as given, shown and checked, and the
Authorization a request to one carries."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

from vidcap.errors import UsageError

ENDPOINT_HELP = (
    "http://HOST:PORT/caption (Flask) or http://HOST:PORT/predictions/<model> (TorchServe)"
)


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
    try:
        urls = [item if isinstance(item, ServerURL) else ServerURL(item.strip()) for item in items]
    except ValueError as exc:  # (urlsplit: "Invalid IPv6 URL", a bracket left open)
        raise UsageError(f"bad server URL in {value!r}: {exc}; expected {ENDPOINT_HELP}") from None
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


def auth_headers(key: str | None, url: str = "") -> dict[str, str]:
    """The Authorization header of a request to ``url``: the Basic authorization its
    ``user:password@`` asked for (``ServerURL``), else the bearer ``key``, if any."""
    basic = getattr(url, "authorization", None)
    if basic:
        return {"Authorization": basic}
    return {"Authorization": f"Bearer {key}"} if key else {}
