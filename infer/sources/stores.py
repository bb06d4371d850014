"""Object stores and web servers by URL, through fsspec and each store's own library.

`s3://` (s3fs), `gs://` (gcsfs), `az://` and `abfs://` (adlfs), `http://` and `https://`
(fsspec's HTTP, on aiohttp). A scheme whose library is missing is one line naming the
extra that installs it. Credentials and endpoints come the way those libraries take
them (environment variables, profiles, instance roles; `AWS_ENDPOINT_URL` for an
S3-compatible server), never from the command line.

Every failure is turned into one line saying what was asked and what to do
(`describe`); transient ones (5xx, 429, timeouts, dropped connections) are retried with
backoff a few times (`with_retries`) before they become that line.

Imports nothing heavy: fsspec and the store's library load on the first URL.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cnnbench.infer.errors import InferError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Scheme:
    protocol: str  # fsspec's name for it
    module: str  # the library that must be importable
    extra: str  # cnnbench's extra that installs it


SCHEMES = {
    "s3": Scheme("s3", "s3fs", "s3"),
    "gs": Scheme("gcs", "gcsfs", "gcs"),
    "gcs": Scheme("gcs", "gcsfs", "gcs"),
    "az": Scheme("az", "adlfs", "azure"),
    "abfs": Scheme("abfs", "adlfs", "azure"),
    "abfss": Scheme("abfs", "adlfs", "azure"),
    "http": Scheme("http", "aiohttp", "http"),
    "https": Scheme("https", "aiohttp", "http"),
}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")

RETRIES = 3  # attempts of a transient failure, the first included
BACKOFF_S = 0.25  # before the 2nd attempt; x4 before each next one


def scheme_of(text: str) -> str | None:
    """'s3' for 's3://bucket/key'; None for a local path (also 'C:\\x' on Windows)."""
    m = _URL.match(text)
    return m.group(1).lower() if m else None


def is_url(text: str) -> bool:
    return scheme_of(text) is not None


def _scheme(url: str) -> Scheme:
    name = scheme_of(url)
    scheme = SCHEMES.get(name or "")
    if scheme is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise InferError(f"unsupported URL scheme in {url}: use one of {known} or a local path")
    if importlib.util.find_spec(scheme.module) is None:
        raise InferError(
            f"{name}:// needs {scheme.module}, which is not installed: "
            f"pip install 'cnnbench[{scheme.extra}]'"
        )
    return scheme


# The store libraries read credentials and endpoints from the environment when a
# filesystem is made, and fsspec caches filesystems by their arguments only: a change of
# AWS_ENDPOINT_URL or of the keys would be ignored. Filesystems are kept per process,
# scheme and the store-related environment instead.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "STORAGE_EMULATOR_HOST", "AZURE_", "CLOUDSDK_")
_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()


def filesystem(url: str) -> Any:
    """The fsspec filesystem for `url`, made once per process, scheme and store
    settings in the environment; or one line naming the extra to install."""
    import fsspec

    protocol = _scheme(url).protocol
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (os.getpid(), protocol, env)
    with _cache_lock:
        if key not in _cache:
            if protocol == "gcs" and _gcs_emulator():
                _cache[key] = _gcs_emulator_filesystem()
            else:
                _cache[key] = fsspec.filesystem(protocol, skip_instance_cache=True)
        return _cache[key]


def _gcs_emulator() -> bool:
    """STORAGE_EMULATOR_HOST names a GCS emulator (gcsfs and google-cloud-storage read it)."""
    return os.environ.get("STORAGE_EMULATOR_HOST", "") not in ("", "default")


def _gcs_emulator_filesystem() -> Any:
    """gcsfs's filesystem for a GCS emulator: its core one, without credentials, as
    google-cloud-storage's own client reaches an emulator. Two workarounds, remove when
    gcsfs does both itself: with token=None gcsfs looks for Google credentials first and
    asks the cloud metadata server (169.254.169.254); and the filesystem fsspec gives for
    'gcs' since gcsfs 2026 (ExtendedGcsFileSystem) asks each bucket's layout of the
    Storage Control API over gRPC with TLS, which no emulator serves: 60 s of retries
    per call (gcsfs 2026.10.1)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", skip_instance_cache=True)


def store_protocol(url: str) -> str:
    """fsspec's name for the store holding `url` ('s3', 'gcs', 'az', 'abfs', 'https'...),
    or one line naming the extra to install."""
    return _scheme(url).protocol


def store_path(url: str) -> str:
    """What the store's filesystem calls the object or prefix: 'bucket/key' for
    s3://bucket/key; the whole URL for http(s)."""
    scheme = _scheme(url)
    if scheme.protocol in ("http", "https"):
        return url
    return url.split("://", 1)[1]


def join(base: str, name: str) -> str:
    """`name` under the prefix `base` (a URL), with exactly one '/' between them."""
    return f"{base.rstrip('/')}/{name}"


# --- errors ---------------------------------------------------------------------------


def status_of(e: BaseException) -> int | None:
    """The HTTP status behind a store's exception, when it carries one."""
    for attr in ("status", "status_code", "code"):
        value = getattr(e, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(e, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status if isinstance(status, int) else None
    cause = e.__cause__ or e.__context__
    return status_of(cause) if cause is not None and cause is not e else None


def _names(e: BaseException) -> set[str]:
    return {c.__name__ for c in type(e).__mro__}


TRANSIENT_NAMES = {
    "TimeoutError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "FSTimeoutError",
    "ServerDisconnectedError",
    "ClientPayloadError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "ConnectionResetError",
}


def is_transient(e: BaseException) -> bool:
    """Worth another try: the server said 5xx or 429, or the request timed out or was
    cut. A missing object, a refusal, bad credentials or a dead endpoint is not."""
    status = status_of(e)
    if status is not None:
        return status >= 500 or status == 429
    return bool(_names(e) & TRANSIENT_NAMES)


def describe(e: BaseException, url: str) -> str:
    """One line: what went wrong with `url`, and what to do about it."""
    names, status = _names(e), status_of(e)
    text = first_line(e)
    if "NoCredentialsError" in names or "DefaultCredentialsError" in names:
        return (
            f"no credentials for {url}: set them as the store's library reads them "
            "(for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if "EndpointConnectionError" in names or "ClientConnectorError" in names:
        return f"cannot connect for {url}: {text}; check the endpoint (AWS_ENDPOINT_URL for S3)"
    if isinstance(e, PermissionError) or status in (401, 403):
        return f"access denied to {url} ({text}): check the credentials and what they may read"
    if isinstance(e, FileNotFoundError) or status == 404:
        for what in ("bucket", "container"):
            if what in text.lower():
                return f"no such {what} for {url}: {text}"
        return f"not found: {url}"
    where = f"HTTP {status}: " if status else ""
    return f"cannot read {url}: {where}{text}"


class StoreError(OSError):
    """A store's failure, already described in one line (`describe`)."""


def with_retries(call: Callable[[], T], url: str, attempts: int = RETRIES) -> T:
    """`call()`, tried again after a transient failure (backoff BACKOFF_S, x4 each time);
    any failure that stays becomes a StoreError whose message is one line."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:
            if isinstance(e, InferError):
                raise
            if attempt + 1 < attempts and is_transient(e):
                time.sleep(BACKOFF_S * 4**attempt)
                continue
            tries = f" (after {attempt + 1} tries)" if attempt else ""
            raise StoreError(describe(e, url) + tries) from e
    raise AssertionError("unreachable: the last attempt returns or raises")


# --- reading and listing --------------------------------------------------------------


S3_CONNECTIONS = 64  # kept open per process: at least the reads in flight


def s3_client() -> Any:
    """botocore's own (synchronous, thread-safe) S3 client, made once per process and
    store environment, as s3fs's async one is: the same credentials, profile, region
    and AWS_ENDPOINT_URL. Whole-object GETs and listing pages go through it: s3fs's
    cat_file took 3.0 ms of client CPU per small object here and ran one GET at a time
    through its event loop (116 objects/s with 16 threads), botocore 1.3 ms (362/s)."""
    _scheme("s3://")  # the extra's check
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))
    key = (os.getpid(), "botocore-s3", env)
    with _cache_lock:
        if key not in _cache:
            import botocore.config
            import botocore.session

            config = botocore.config.Config(max_pool_connections=S3_CONNECTIONS)
            session = botocore.session.get_session()
            _cache[key] = session.create_client("s3", config=config)
        return _cache[key]


def _bucket_key(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def read_bytes(url: str) -> bytes:
    """The whole object at `url`."""
    if _scheme(url).protocol == "s3":
        client = s3_client()
        bucket, key = _bucket_key(url)
        return with_retries(lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read(), url)
    fs = filesystem(url)
    path = store_path(url)
    return with_retries(lambda: fs.cat_file(path), url)


def read_range(url: str, offset: int, size: int) -> bytes:
    """`size` bytes from `offset` of the object at `url` (one ranged GET)."""
    if size == 0:
        return b""
    if _scheme(url).protocol == "s3":
        client = s3_client()
        bucket, key = _bucket_key(url)
        span = f"bytes={offset}-{offset + size - 1}"
        return with_retries(
            lambda: client.get_object(Bucket=bucket, Key=key, Range=span)["Body"].read(), url
        )
    fs = filesystem(url)
    path = store_path(url)
    return with_retries(lambda: fs.cat_file(path, start=offset, end=offset + size), url)


def open_stream(url: str, block_size: int = 8 << 20) -> Any:
    """A binary file object reading `url` front to back (a tar shard), with readahead."""
    fs = filesystem(url)
    path = store_path(url)
    return with_retries(lambda: fs.open(path, "rb", block_size=block_size), url)


def kind(url: str) -> str:
    """'file' or 'directory' (a prefix with objects under it); one line when neither
    exists or the store cannot be reached."""
    fs = filesystem(url)
    path = store_path(url)
    if url.endswith("/") and not path.endswith("://"):
        path = path.rstrip("/")
    try:
        info = with_retries(lambda: fs.info(path), url)
    except StoreError as e:
        raise InferError(_missing_container(fs, url, path, e) or str(e)) from e
    return "directory" if info.get("type") == "directory" else "file"


def _missing_container(fs: Any, url: str, path: str, e: StoreError) -> str | None:
    """'no such bucket' when GCS's or Azure's not-found is for want of the bucket or
    container (gcsfs and adlfs say only 'not found' and the path); else None."""
    protocol = store_protocol(url)
    if not isinstance(e.__cause__, FileNotFoundError) or protocol not in ("gcs", "az", "abfs"):
        return None
    bucket = path.split("/", 1)[0]
    if fs.exists(bucket):
        return None
    return f"no such {'bucket' if protocol == 'gcs' else 'container'} for {url}: {bucket}"
