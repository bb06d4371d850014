"""Single files by `http://` and `https://` URL, through fsspec's HTTP filesystem (aiohttp).

What the web brings that object stores do not: presigned and CDN URLs whose query
string is part of the address (`photo.jpg?X-Amz-Signature=...`), servers that refuse a
HEAD (a URL presigned for GET), redirects, and refusals whose reason is in the body
(`Request has expired`) or in a header (`WWW-Authenticate`, `Retry-After`). An object
is read by one GET (`get`), its size checked from that answer's headers; a failed
answer is an `HttpError` that carries what the server said.

Imports nothing heavy: aiohttp loads with the first URL.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

MAX_RETRY_AFTER_S = 30.0  # the longest Retry-After a read waits before its next try
_BODY_BYTES = 4096  # of a refusal's body, read for its reason
_S3_CODE = re.compile(r"<Code>([^<]*)</Code>(?:.*?<Message>([^<]*)</Message>)?", re.S)


def is_web(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def address_path(url: str) -> str:
    """The path of an http(s) URL, without its query and fragment (`/a/s.tar` for
    `https://h/a/s.tar?X-Amz-Signature=...#x`); any other text as it is."""
    return urlsplit(url).path if is_web(url) else url


def request_key(url: str) -> str:
    """The URL as it is asked for: an http(s) URL as yarl (under aiohttp) sends it, its
    spelling normalised (`%20` or a space, `%c3%bc` or `ü`, `HTTP://H:80/`) and its
    fragment left out, none of which the server sees; any other URL as it is. Two URLs
    of one key are one file, read once."""
    if not is_web(url):
        return url
    import yarl

    try:
        return str(yarl.URL(url).with_fragment(None))
    except ValueError:  # no URL yarl takes: its read says so
        return url


def options(connect_s: float, read_s: float) -> dict[str, Any]:
    """fsspec's HTTP filesystem options: a connection not made in `connect_s` and an
    answer that sends nothing for `read_s` are given up, as for S3 (aiohttp's default is
    5 minutes for a whole request, so a server that accepts and never answers held each
    read 5 minutes, three tries); proxies (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) and
    ~/.netrc logins are taken from the environment, as curl and requests take them; and
    connections are not capped by aiohttp (`_client`)."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)
    return {"client_kwargs": {"timeout": timeout, "trust_env": True}, "get_client": _client}


async def _client(**kwargs: Any) -> Any:
    """aiohttp's session with no cap of its own on the connections open at once: its
    default, 100, held `--io-threads 256` to 100 reads in flight; the job bounds them."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), **kwargs)


class HttpError(OSError):
    """A server's answer that is no file: its status, and what it said of why (the
    start of its body, WWW-Authenticate), and how long it asked to wait (Retry-After)."""

    def __init__(
        self, message: str, status: int, retry_after: float | None = None, asks: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.retry_after, self.asks = status, retry_after, asks


def get(fs: Any, url: str, max_bytes: int | None, too_large: type[Exception]) -> bytes:
    """The body of one GET of `url` through the fsspec filesystem `fs`. One over
    `max_bytes` (None: any size) is `too_large`: by the length its answer's headers give,
    its body unread; where they give none (chunked, or compressed), once the body grows
    past it."""
    from fsspec.asyn import sync

    return sync(fs.loop, _get, fs, url, max_bytes, too_large)


def answers(fs: Any, url: str) -> None:
    """That `url` answers a GET with a file (its body not read): one request, where
    fsspec's `info` sends a HEAD, then a GET where that fails (a URL presigned for GET
    refuses a HEAD), and makes any failure of the GET a FileNotFoundError: a dead host,
    an untrusted certificate or an expired signature were all 'not found'."""
    from fsspec.asyn import sync

    sync(fs.loop, _answers, fs, url)


async def _answers(fs: Any, url: str) -> None:
    session = await fs.set_session()
    async with session.get(fs.encode_url(url), **fs.kwargs) as r:
        if r.status >= 400:
            raise await _refusal(r)


async def _get(fs: Any, url: str, max_bytes: int | None, too_large: type[Exception]) -> bytes:
    from cnnbench.infer.decode.probe import oversize

    session = await fs.set_session()
    async with session.get(fs.encode_url(url), **fs.kwargs) as r:
        if r.status >= 400:
            raise await _refusal(r)
        if max_bytes is None:
            return await r.read()
        compressed = r.headers.get("Content-Encoding", "identity") not in ("identity", "")
        if not compressed and (why := oversize(r.content_length, max_bytes)):
            raise too_large(why)
        data = await r.content.read(max_bytes + 1)
        while len(data) <= max_bytes and (more := await r.content.read(max_bytes + 1 - len(data))):
            data += more
        if len(data) > max_bytes:
            raise too_large(
                f"too large: more than {max_bytes:,} bytes (its length not said before its "
                "body: chunked or compressed), more than an image within --max-pixels takes"
            )
        return data


async def _refusal(r: Any) -> HttpError:
    """The failed answer `r` as an HttpError: 'HTTP 403 Forbidden' and the server's own
    reason (an S3-style error's Code and Message, or a plain-text body's first line)."""
    body = await r.content.read(_BODY_BYTES)
    text = body.decode("utf-8", "replace")
    said = ""
    if code := _S3_CODE.search(text):
        said = f"{code.group(1)}: {code.group(2)}" if code.group(2) else code.group(1)
    elif r.content_type == "text/plain" and text.strip():
        said = text.strip().splitlines()[0][:200]
    message = f"HTTP {r.status} {r.reason or ''}".rstrip() + (f": {said}" if said else "")
    asks = r.headers.get("WWW-Authenticate", "")
    return HttpError(message, r.status, _seconds(r.headers.get("Retry-After")), asks)


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header's wait in seconds (it is seconds, or an HTTP date)."""
    if not retry_after:
        return None
    if retry_after.strip().isdigit():
        return float(retry_after)
    try:
        when = parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def describe(e: BaseException, url: str, text: str) -> str | None:
    """One line for what only the web does (`text`: the failure's first line), or None
    where the stores' own wording fits."""
    status = getattr(e, "status", None)
    names = {c.__name__ for c in type(e).__mro__}
    if status == 401:
        asks = f", asking for {said}" if (said := getattr(e, "asks", "")) else ""
        return (
            f"the server wants a login for {url} ({text}{asks}): put it in ~/.netrc (or the "
            "file NETRC names), or give a URL that carries its own access (a presigned URL)"
        )
    if status == 403:
        return (
            f"access denied to {url} ({text}): the server refused this URL; a presigned "
            "URL may have expired or been signed for another request: sign a new one"
        )
    if "TooManyRedirects" in names:
        return f"cannot read {url}: too many redirects (a redirect loop?)"
    if "NonHttpUrlRedirectClientError" in names or "InvalidUrlRedirectClientError" in names:
        return f"cannot read {url}: the server redirected to {text}, which is no http(s) URL"
    if "ClientConnectorCertificateError" in names:
        return (
            f"cannot connect for {url}: its certificate is not trusted ({text}); to trust "
            "its CA, set SSL_CERT_FILE to a PEM file holding it"
        )
    wait = getattr(e, "retry_after", None)
    if wait is not None and wait > MAX_RETRY_AFTER_S:
        return (
            f"cannot read {url}: {text}; the server asked for {wait:.0f} s before another try "
            f"(Retry-After), more than the {MAX_RETRY_AFTER_S:.0f} s a read waits: not tried again"
        )
    if "WRONG_VERSION_NUMBER" in text and url.lower().startswith("https:"):
        return f"cannot connect for {url}: no TLS at this port ({text}); is it http://?"
    return None


def retry_after(e: BaseException) -> float | None:
    """How long the server asked to wait before the next try (its Retry-After), or None
    where it did not say. A read waits that long up to MAX_RETRY_AFTER_S; past it, the
    read is not tried again and its line says so."""
    return getattr(e, "retry_after", None)
