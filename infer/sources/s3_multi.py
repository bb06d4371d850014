"""S3 GETs many at a time on one thread: libcurl's multi interface (pycurl), signed by
libcurl's own AWS Signature V4.

obstore's GETs from a pool of threads cost the client 0.09-0.12 ms of CPU per
photo-sized object on loopback, about three thread wake-ups each; one thread driving
libcurl's multi handle costs 0.08 ms and well under one wake-up (docs/benchmarks.md).
`fetch_ahead` hands this engine the whole-object GETs of S3 keys it can name plainly
(`reads`); everything else keeps the obstore and botocore paths.

Only a whole answer (HTTP 200 and every byte) is taken from here. Any other outcome (an
HTTP error, a refused connection, a timeout, no credentials) is read again through
`stores.read_bytes` by the caller's `fallback`, so retries, error rows and their one-line
messages are exactly those of that path. The endpoint, region and credentials are those
botocore resolves for the store settings (as for obstore); credentials that expire are
asked for again every CREDENTIALS_CHECK_S.
"""

from __future__ import annotations

import contextlib
import functools
import io
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode, urlsplit
from xml.etree import ElementTree

from cnnbench.infer.sources import stores
from cnnbench.infer.sources.items import Item

POLL_S = 0.005  # longest wait for sockets before looking for new work again
GATHER_S = 0.01  # while nobody waits for a task, its answers are taken this often
_PLAIN = re.compile(r"[A-Za-z0-9._~/-]+")  # a key signed and sent exactly as written


def available() -> bool:
    """Whether pycurl (the `s3` extra brings it) loads and may be used here: not in a
    process that has loaded TensorFlow, whose own libcurl's symbols are global and stand
    in for pycurl's libcurl (pycurl refuses to load after it: "libcurl link-time version
    (8.11.0) is older than compile-time version"; loaded before it, its later calls could
    bind to them). Without it, S3 goes through obstore and botocore alone."""
    return "tensorflow" not in sys.modules and _loads()


@functools.cache
def _loads() -> bool:
    try:
        import pycurl  # noqa: F401
    except ImportError:
        return False
    return True


def reads(url: str) -> bool:
    """Whether this engine reads `url`: pycurl is `available` and the URL is an S3
    object whose key has plain characters only (no percent-encoding to agree on with the
    server) and no empty, '.' or '..' segment."""
    if stores.scheme_of(url) != "s3" or not available():
        return False
    key = url.split("://", 1)[1].partition("/")[2]
    return bool(_PLAIN.fullmatch(key)) and stores._object_store_key(key)


class _Target:
    """Where and as whom libcurl's requests go: the endpoint (path style, as obstore),
    region, CA bundle and credentials botocore resolves for the store settings; the key
    and secret (and session token) taken again when they may have been refreshed."""

    def __init__(self, settings: tuple) -> None:
        client = stores.s3_client(settings)
        endpoint = client.meta.endpoint_url.rstrip("/")
        self.region = client.meta.region_name or "us-east-1"
        if (urlsplit(endpoint).hostname or "").endswith(".amazonaws.com"):
            endpoint = f"https://s3.{self.region}.amazonaws.com"
        self.endpoint = endpoint
        self.ca = dict(settings).get("AWS_CA_BUNDLE") or _certifi()
        self._credentials = stores._botocore_session(settings).get_credentials()
        self._signed_at = -float("inf")
        self.userpwd: str | None = None  # None: no credentials
        self.signed = 0  # times the credentials were taken
        self.headers: list[str] = []

    def handle(self) -> Any:
        """An easy handle that signs for this target (`sign` sets who signs)."""
        import pycurl

        c = pycurl.Curl()
        c.setopt(pycurl.NOSIGNAL, 1)
        c.setopt(pycurl.CONNECTTIMEOUT, stores.CONNECT_TIMEOUT_S)
        c.setopt(pycurl.LOW_SPEED_LIMIT, 1)  # a transfer that receives nothing for
        c.setopt(pycurl.LOW_SPEED_TIME, stores.READ_TIMEOUT_S)  # so long goes to the fallback
        c.setopt(pycurl.AWS_SIGV4, f"aws:amz:{self.region}:s3")
        if self.ca:
            c.setopt(pycurl.CAINFO, self.ca)
        return c

    def refresh(self) -> None:
        if time.monotonic() - self._signed_at < stores.CREDENTIALS_CHECK_S:
            return
        self._signed_at = time.monotonic()
        frozen = self._credentials.get_frozen_credentials() if self._credentials else None
        self.userpwd = f"{frozen.access_key}:{frozen.secret_key}" if frozen else None
        token = frozen.token if frozen else None
        self.headers = [f"x-amz-security-token: {token}"] if token else []
        self.signed += 1  # handles signed before sign again

    def sign(self, c: Any, url: str) -> None:
        """The request of handle `c` to `url`, signed as the target is now (the key,
        secret and headers set again only when they changed since it last signed)."""
        import pycurl

        c.setopt(pycurl.URL, url)
        if getattr(c, "signed", None) != self.signed:
            c.setopt(pycurl.USERPWD, self.userpwd)
            c.setopt(pycurl.HTTPHEADER, self.headers)
            c.signed = self.signed


class _Awaited(Future):
    """A task's Future that hurries its engine while somebody waits for its result."""

    def __init__(self, engine: S3Multi) -> None:
        super().__init__()
        self._engine = engine

    def result(self, timeout: float | None = None) -> Any:
        if self.done():
            return super().result()
        with self._engine.hurried():
            return super().result(timeout)


@dataclass
class _Task:
    """Items submitted together: their slots, filled as their reads end, and how many
    are still to come."""

    future: Future
    items: list[Item]
    left: int = field(init=False)
    done: list[Item | None] = field(init=False)

    def __post_init__(self) -> None:
        self.left = len(self.items)
        self.done = [None] * len(self.items)


class S3Multi:
    """GETs of whole S3 objects, `in_flight` at a time, on a thread of its own.
    `submit(items)` returns a Future of the items with their bytes, in order. An item
    whose GET did not end in a whole answer is handed to `fallback`, which returns a
    Future of it read another way (as a list of one item), and waited for; so is one
    over `max_bytes` (libcurl stops it at its headers' size).

    While somebody waits for a task's result (`hurried`), answers are taken as they
    come; otherwise every GATHER_S, many at a wake-up. On a core shared with the decode
    threads, at normal priority, a wake-up per answer cost 84 us of CPU a GET against 60,
    and mnist_cnn's `infer` job 0.84x local disk's rate against 0.89x (docs/benchmarks.md)."""

    def __init__(
        self,
        settings: tuple,
        in_flight: int,
        fallback: Callable[[Item], Future],
        max_bytes: int | None = None,
    ) -> None:
        import pycurl

        self._pycurl = pycurl
        self._fallback = fallback
        self._target = _Target(settings)
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, in_flight)
        self._free = [self._target.handle() for _ in range(in_flight)]
        if max_bytes is not None:  # a larger object is left to the fallback, which says so
            for c in self._free:
                c.setopt(pycurl.MAXFILESIZE_LARGE, max_bytes)
        self._busy: set = set()
        self._inbox: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # a task's slots, filled here and by fallbacks
        self._waiters = 0  # callers in `hurried`
        self._nudge = threading.Event()  # set when one comes, or on close
        self._broken: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cnnbench-s3multi", daemon=True)
        self._thread.start()

    def submit(self, items: list[Item]) -> Future:
        future = _Awaited(self)
        with self._lock:
            if self._broken is not None:
                future.set_exception(self._broken)
                return future
            self._inbox.put(_Task(future, items))
        return future

    @contextlib.contextmanager
    def hurried(self) -> Iterator[None]:
        """Answers taken as they come while inside (a caller waits for one)."""
        with self._lock:
            self._waiters += 1
        self._nudge.set()
        try:
            yield
        finally:
            with self._lock:
                self._waiters -= 1

    def close(self) -> None:
        """Ends the thread; transfers in flight are dropped, their tasks cancelled."""
        self._inbox.put(None)
        self._nudge.set()
        self._thread.join()
        for c in self._busy:
            self._multi.remove_handle(c)
            c.close()
        for c in self._free:
            c.close()
        self._multi.close()

    def _run(self) -> None:
        waiting: deque = deque()  # (task, index) not started yet
        try:
            while self._step(waiting):
                pass
        except BaseException as e:  # every task waited for gets it, and every later one
            with self._lock:
                self._broken = e
            tasks = [t for t, _ in waiting] + [c.task for c in self._busy]
            while not self._inbox.empty():
                if (got := self._inbox.get_nowait()) is not None:
                    tasks.append(got)
            for task in {id(t): t for t in tasks}.values():
                _settle(task.future, exception=e)
            return
        for task in {id(t): t for t, _ in waiting}.values():
            task.future.cancel()

    def _step(self, waiting: deque) -> bool:
        """New work taken, transfers started and finished; False once closed."""
        pycurl, multi = self._pycurl, self._multi
        try:
            got = self._inbox.get(block=not (self._busy or waiting))
            while True:
                if got is None:
                    return False
                waiting.extend((got, i) for i in range(len(got.items)))
                got = self._inbox.get_nowait()
        except queue.Empty:
            pass
        self._target.refresh()
        while waiting and self._free:
            task, i = waiting.popleft()
            if self._target.userpwd is None:  # no credentials: the fallback says so
                self._give_up(task, i)
                continue
            c = self._free.pop()
            bucket, _, key = task.items[i].path.split("://", 1)[1].partition("/")
            c.task, c.index, c.body = task, i, io.BytesIO()
            self._target.sign(c, f"{self._target.endpoint}/{bucket}/{key}")
            c.setopt(pycurl.WRITEDATA, c.body)
            multi.add_handle(c)
            self._busy.add(c)
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            left, ok, failed = multi.info_read()
            for c in ok:
                self._finish(c, c.getinfo(pycurl.RESPONSE_CODE) == 200)
            for c, _errno, _message in failed:
                self._finish(c, False)
            if not left:
                break
        if self._busy and self._waiters:
            multi.select(POLL_S)
        elif self._busy:
            self._nudge.wait(GATHER_S)
            self._nudge.clear()
        return True

    def _finish(self, c: Any, whole: bool) -> None:
        self._multi.remove_handle(c)
        self._busy.discard(c)
        task, i, body = c.task, c.index, c.body
        c.task = c.body = None
        self._free.append(c)
        if whole:
            self._fill(task, i, replace(task.items[i], data=body.getvalue()))
        else:
            self._give_up(task, i)

    def _give_up(self, task: _Task, i: int) -> None:
        """The item read another way (`fallback`), put in its place when done."""

        def done(f: Future) -> None:
            if f.cancelled():
                _settle(task.future, cancel=True)
            elif f.exception() is not None:
                _settle(task.future, exception=f.exception())
            else:
                self._fill(task, i, f.result()[0])

        self._fallback(task.items[i]).add_done_callback(done)

    def _fill(self, task: _Task, i: int, item: Item) -> None:
        with self._lock:
            task.done[i] = item
            task.left -= 1
            finished = task.left == 0
        if finished:
            _settle(task.future, result=task.done)


def _settle(
    future: Future, result: Any = None, exception: BaseException | None = None, cancel: bool = False
) -> None:
    """The future's outcome, unless it has one already (cancelled on close)."""
    with contextlib.suppress(InvalidStateError):
        if cancel:
            future.cancel()
        elif exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)


def _certifi() -> str | None:
    """certifi's CA bundle (botocore's default) for https endpoints, when installed."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def list_page(
    settings: tuple, bucket: str, prefix: str, token: str | None, delimiter: str | None, limit: int
) -> tuple[list[tuple[str, int | None]], list[str], str | None, bool, bool] | None:
    """One ListObjectsV2 page through libcurl: (key, size) of the objects, the common
    prefixes, the next page's token, whether the answer says more keys follow (a
    server that answers ListObjects V1 to a V2 request says so with no token), and
    whether it says its keys are URL-encoded (they are decoded then); or None
    for anything but a 200 with a page in it, which the caller asks botocore for instead
    (its retries and errors). Parsing a page here costs a fraction of botocore's (~70 us
    a key)."""
    import pycurl

    target = _target(settings)
    target.refresh()
    if target.userpwd is None:
        return None
    query = {"list-type": "2", "encoding-type": "url", "max-keys": str(limit), "prefix": prefix}
    if delimiter:
        query["delimiter"] = delimiter
    if token:
        query["continuation-token"] = token
    body = io.BytesIO()
    c = target.handle()
    try:
        target.sign(c, f"{target.endpoint}/{bucket}?{urlencode(query, quote_via=quote)}")
        c.setopt(pycurl.WRITEDATA, body)
        c.perform()
        if c.getinfo(pycurl.RESPONSE_CODE) != 200:
            return None
    except pycurl.error:
        return None
    finally:
        c.close()
    try:
        root = ElementTree.fromstring(body.getvalue())
    except ElementTree.ParseError:
        return None
    if not root.tag.endswith("ListBucketResult"):  # any namespace: s3rver's differs
        return None
    ns = root.tag[: -len("ListBucketResult")]  # exact tags: ElementTree's fast path
    # Keys are URL-encoded only where the answer says so (as botocore decodes them)
    decode = unquote_plus if root.findtext(ns + "EncodingType") == "url" else str
    objects = []
    for o in root.iterfind(ns + "Contents"):
        size = o.findtext(ns + "Size")
        objects.append((decode(o.findtext(ns + "Key") or ""), int(size) if size else None))
    common = [decode(p.findtext(ns + "Prefix") or "") for p in root.iterfind(ns + "CommonPrefixes")]
    truncated = root.findtext(ns + "IsTruncated") == "true"
    token = root.findtext(ns + "NextContinuationToken") if truncated else None
    return objects, common, token, truncated, decode is unquote_plus


def _target(settings: tuple) -> _Target:
    """The target for the store settings, made once per process and settings."""
    return stores.made_once(("curl-s3", settings), lambda: _Target(settings))
