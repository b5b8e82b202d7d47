"""What servers answer, read safely: a reply read up to a bound, an error's own words
(from JSON or an HTML page), and the hints a status earns."""

from __future__ import annotations

import html
import re

import aiohttp

from vidcap import jsontext
from vidcap.server_url import ENDPOINT_HELP

# Tags (and what <head> holds) of an HTML error page, dropped from a message.
MARKUP = re.compile(r"<head.*?</head>|<[^>]*>", re.DOTALL | re.IGNORECASE)
# Answers to the info question that say the URL is no caption endpoint: not found, or no
# POST taken there (a web server that is not vidcap's, e.g. Python's http.server: 501).
NO_ENDPOINT = frozenset({404, 405, 501})
HINTS = {
    404: f" (is it the full endpoint URL? {ENDPOINT_HELP})",
    413: " (send fewer frames per request: lower --prebatch)",
}
# A reply is read up to this many bytes (after any decompression): a caption reply is a
# few KB a frame, and a reply read whole could fill the client's memory (a URL that is not a
# caption server streaming a large file, a gzip bomb).
MAX_REPLY_BYTES = 8 << 20

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


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
