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

import contextlib
import functools
import importlib.util
import io
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from cnnbench.infer.decode.probe import oversize
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.sources import web

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import S3Credential

T = TypeVar("T")


@dataclass(frozen=True)
class Scheme:
    protocol: str  # fsspec's name for it
    modules: tuple[str, ...]  # the libraries that must be importable
    extra: str  # cnnbench's extra that installs them


SCHEMES = {
    "s3": Scheme("s3", ("s3fs", "obstore"), "s3"),  # obstore: the GETs (_object_store)
    "gs": Scheme("gcs", ("gcsfs",), "gcs"),
    "gcs": Scheme("gcs", ("gcsfs",), "gcs"),
    "az": Scheme("az", ("adlfs",), "azure"),
    "abfs": Scheme("abfs", ("adlfs",), "azure"),
    "abfss": Scheme("abfs", ("adlfs",), "azure"),
    "http": Scheme("http", ("aiohttp",), "http"),
    "https": Scheme("https", ("aiohttp",), "http"),
}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")

RETRIES = 3  # attempts of a transient failure, the first included
UPLOAD_BYTES_PER_S = 100_000  # the slowest link an upload is given time for
BACKOFF_S = 0.25  # before the 2nd attempt; x4 before each next one
# An answer that asks for fewer requests (`throttled`: a server shedding load) is tried
# this many times, BACKOFF_S x4 apart up to MAX_BACKOFF_S (21 s in all), or as long as
# its Retry-After says, up to web.MAX_RETRY_AFTER_S (one asking for more is not retried)
THROTTLED_RETRIES = 6
MAX_BACKOFF_S = 8
THROTTLE_CODES = ("SlowDown", "Throttling", "TooManyRequests", "RequestLimitExceeded")
CONNECT_TIMEOUT_S = 10  # an S3 connection not made in this long is given up
READ_TIMEOUT_S = 30  # ... and an answer that sends nothing for this long


def scheme_of(text: str) -> str | None:
    """'s3' for 's3://bucket/key'; None for a local path (also 'C:\\x' on Windows)."""
    m = _URL.match(text)
    return m.group(1).lower() if m else None


def is_url(text: str) -> bool:
    return scheme_of(text) is not None


@functools.cache
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _scheme(url: str) -> Scheme:
    name = scheme_of(url) or ""
    scheme = SCHEMES.get(name)
    if scheme is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise InferError(f"unsupported URL scheme in {url}: use one of {known} or a local path")
    _check_extra(name, scheme)
    if not url.split("://", 1)[1].partition("/")[0]:
        if scheme.protocol in ("http", "https"):
            raise InferError(f"{url} names no host: write {name}://HOST/PATH")
        what = bucket_word(scheme.protocol)
        raise InferError(
            f"{url} names no {what}: write {name}://{what.upper()}/PREFIX/ for the "
            f"objects under a prefix, or {name}://{what.upper()}/KEY for one"
        )
    return scheme


def bucket_word(protocol: str) -> str:
    """What the store `protocol` calls the top of its keys: Azure's container, a bucket."""
    return "container" if protocol in ("az", "abfs") else "bucket"


def _check_extra(name: str, scheme: Scheme) -> None:
    """One line naming the extra to install when the scheme's library is missing."""
    for module in scheme.modules:
        if not _installed(module):
            raise InferError(
                f"{name}:// needs {module}, which is not installed: "
                f"pip install 'cnnbench[{scheme.extra}]'"
            )


# The store libraries read credentials and endpoints from the environment when a
# filesystem is made, and fsspec caches filesystems by their arguments only: a change of
# AWS_ENDPOINT_URL or of the keys would be ignored. Filesystems are kept per process,
# scheme and the store-related environment instead.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "STORAGE_EMULATOR_HOST", "AZURE_", "CLOUDSDK_")
_cache: dict[tuple, Any] = {}
_cache_lock = threading.RLock()  # re-entered: a client made from another one


def made_once(key: tuple, make: Callable[[], T]) -> T:
    """What `make()` returns, made once per process and `key` (the store settings in
    it, so a changed environment gets new clients) and kept; read without the lock once
    it is there."""
    key = (os.getpid(), *key)
    made = _cache.get(key)
    if made is None:
        with _cache_lock:
            made = _cache.get(key)
            if made is None:
                made = _cache[key] = make()
    return made


def store_settings() -> tuple:
    """The store settings in the environment now (the variables the store libraries
    read), which clients are kept per. Reading them scans os.environ (~20 us, a quarter of
    an S3 GET's client CPU): a job that makes many reads takes them once and passes them
    to `read_bytes` and `read_range`, which otherwise read them anew."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)))


def filesystem(url: str) -> Any:
    """The fsspec filesystem for `url`, made once per process, scheme and store
    settings in the environment; or one line naming the extra to install."""
    import fsspec

    protocol = _scheme(url).protocol
    options = {"account_name": account} if (account := _azure_account(url)) else {}
    if protocol == "gcs" and _gcs_emulator():
        make = _gcs_emulator_filesystem
    elif protocol == "s3":
        make = _s3fs
    elif protocol in ("http", "https"):
        http = web.options(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        make = functools.partial(fsspec.filesystem, protocol, skip_instance_cache=True, **http)
    else:
        make = functools.partial(fsspec.filesystem, protocol, skip_instance_cache=True, **options)
    if protocol in ("az", "abfs"):
        make = functools.partial(_adlfs, make, url)
    if protocol == "gcs":
        _quiet_gcsfs()
    return made_once((protocol, store_settings(), account), make)


def _adlfs(make: Callable[[], Any], url: str) -> Any:
    """adlfs's filesystem, or one line where it cannot be made: with no account in the
    environment (nor in the URL) adlfs raised a ValueError, which was a traceback."""
    try:
        fs = make()
    except ValueError as e:
        raise InferError(
            f"no Azure storage account for {url}: set AZURE_STORAGE_CONNECTION_STRING, or "
            f"AZURE_STORAGE_ACCOUNT_NAME and its credentials ({first_line(e)})"
        ) from e
    # azure-storage-blob's own retries (3, 15 s + 3^n s apart) under ours: a read of a
    # store that stopped answering took 82 s before its line. One try of theirs, as for
    # s3fs: `with_retries` tries again what is worth it. The pipelines of the container
    # and blob clients share this policy object.
    policy = fs.service_client._config.retry_policy
    for attr in ("total_retries", "connect_retries", "read_retries", "status_retries"):
        setattr(policy, attr, 0)
    return fs


def _quiet_gcsfs() -> None:
    """gcsfs logs each failure it gives up on with its traceback (`logger.exception`),
    which Python's last-resort handler printed above the failure's one line (a 403, a
    stopped endpoint); its failures are raised and described anyway. Left as the user
    set it, where they set a level."""
    import logging

    logger = logging.getLogger("gcsfs")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def upload_timeout(size: int) -> float:
    """How long one upload of `size` bytes (an output's part, its manifest) may take
    before it is given up (and tried again, `with_retries`): botocore asks S3 for `Expect:
    100-continue`, and aiohttp waits for that answer with no timeout at all, so a store
    that stopped answering held the run on its part for good (killed at 400 s;
    marin-community/marin#6719). READ_TIMEOUT_S, and the bytes at UPLOAD_BYTES_PER_S."""
    return 2 * READ_TIMEOUT_S + size / UPLOAD_BYTES_PER_S


def _s3fs() -> Any:
    """s3fs's filesystem, its requests (the outputs' parts, a prefix's check) given up as
    the reads' are: botocore's standard retries (3 tries) unless the user chose a mode,
    and no retry loop of s3fs's own on top (`S3FileSystem.retries`: `with_retries` is
    ours). s3fs's own timeouts stay (5 s to connect, 15 s for an answer). With botocore's
    5 legacy tries under s3fs's 5, a run whose output endpoint stopped answering waited
    on its part for good (killed at 400 s)."""
    import fsspec

    retries = _retries(_botocore_session(store_settings()))
    options = {"config_kwargs": {"retries": retries}} if retries else {}
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
    fs.retries = 1  # one try of s3fs's loop: botocore's and ours retry
    return fs


_AZURE_AUTHORITY = re.compile(r"^[^@/]+@(?P<account>[a-z0-9]+)\.(?:dfs|blob)\.core\.windows\.net$")


def _azure_account(url: str) -> str | None:
    """The storage account that an `abfs://container@ACCOUNT.dfs.core.windows.net/...`
    URL names (adlfs's long form; `.blob.` too), or None where the URL names none and the
    environment's account applies. The URL's account is the one read, as adlfs does for
    fsspec.open; credentials still come from the environment, so one that names another
    account is one line rather than a read of the wrong account's container."""
    authority = urlsplit(url).netloc
    if "@" not in authority or _scheme(url).protocol not in ("az", "abfs"):
        return None
    match = _AZURE_AUTHORITY.match(authority)
    if match is None:
        raise InferError(
            f"cannot tell the storage account in {url}: write abfs://CONTAINER@ACCOUNT"
            ".dfs.core.windows.net/..., or az://CONTAINER/... with the account (or an"
            " emulator's endpoint) in AZURE_STORAGE_CONNECTION_STRING"
        )
    account = match["account"]
    connection = dict(
        part.split("=", 1)
        for part in os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "").split(";")
        if "=" in part
    )
    for source, named in (
        ("AZURE_STORAGE_CONNECTION_STRING", connection.get("AccountName")),
        ("AZURE_STORAGE_ACCOUNT_NAME", os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")),
    ):
        if named and named != account:
            raise InferError(
                f"{url} names the storage account {account}, but {source} is for {named}:"
                f" set credentials for {account}, or write az://CONTAINER/... to read {named}"
            )
    return account


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


TRANSIENT_KINDS = {"Timeout", "Interrupted", "Request"}  # reqwest's, through obstore
# An answer that ended before its length (the connection closed mid-body)
CUT_NAMES = {"ClientPayloadError", "IncompleteReadError", "ResponseStreamingError"}
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
    "ServiceResponseError",  # azure-core's: sent, but no whole answer (cut, timed out)
}


def is_transient(e: BaseException) -> bool:
    """Worth another try: the server said 5xx or 429, or the request timed out or was
    cut. A missing object, a refusal, bad credentials or a dead endpoint is not."""
    if _names(e) & TRANSIENT_NAMES:  # before the status: a cut answer's parser error
        return True  # carries aiohttp's code 400, which no server sent
    status = status_of(e)
    if status is not None:
        return status >= 500 or status == 429
    return getattr(e, "kind", None) in TRANSIENT_KINDS


def _cannot_connect(e: BaseException) -> bool:
    """No connection to the endpoint could be made (refused, unreachable, not resolved)."""
    names = _names(e)
    connect = getattr(e, "kind", None) == "Connect"  # reqwest's, through obstore
    azure = "ServiceRequestError" in names  # azure-core's: the request could not be sent
    return bool(names & {"EndpointConnectionError", "ClientConnectorError"}) or connect or azure


def unanswered(e: BaseException) -> bool:
    """Whether the store gave no answer about the object: no connection, none in time, a
    connection cut, a 5xx or 429. That is the store's failure, not the object's: any
    other read would fail the same way now. A 403 or a 404 is an answer."""
    return _cannot_connect(e) or is_transient(e)


def describe(e: BaseException, url: str) -> str:
    """One line: what went wrong with `url`, and what to do about it."""
    names, status = _names(e), status_of(e)
    text = first_line(e)
    if web.is_web(url) and (said := web.describe(e, url, text)):
        return said
    if "NoCredentialsError" in names or "DefaultCredentialsError" in names:
        return (
            f"no credentials for {url}: set them as the store's library reads them "
            "(for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if _cannot_connect(e):
        return f"cannot connect for {url}: {text}; {_check_endpoint(url)}"
    if "FSTimeoutError" in names:  # fsspec's deadline (`upload_timeout`): no message
        return f"no answer for {url} in time; {_check_endpoint(url)}"
    if _timed_out_in_botocore(e):
        return (
            f"no answer for {url}: {text}; the endpoint accepts no connection or sends "
            f"nothing: {_check_endpoint(url)}"
        )
    if isinstance(e, PermissionError) or status in (401, 403) or _gcs_forbidden(e):
        return f"access denied to {url} ({text}): check the credentials and what they may read"
    if (missing := _missing(e)) in ("bucket", "container"):
        return f"no such {missing} for {url}: {text}"
    if missing:
        return f"not found: {url}"
    if names & CUT_NAMES:
        return f"cannot read {url}: the answer was cut short ({text})"
    where = f"HTTP {status}: " if status and not text.startswith("HTTP ") else ""
    return f"cannot read {url}: {where}{text}"


def _gcs_forbidden(e: BaseException) -> bool:
    """gcsfs's 403: a bare OSError 'Forbidden: PATH' (its own code tells it by that
    text too); it was 'cannot read ...: Forbidden: b/b/o', the credentials unnamed."""
    return type(e) is OSError and str(e).startswith("Forbidden: ")


def _check_endpoint(url: str) -> str:
    """What to check when the store behind `url` cannot be reached: where its library
    takes the endpoint from (it named AWS_ENDPOINT_URL for a gs:// or az:// URL too)."""
    where = {
        "s3": "AWS_ENDPOINT_URL for S3",
        "gcs": "STORAGE_EMULATOR_HOST for a GCS emulator",
        "az": "BlobEndpoint in AZURE_STORAGE_CONNECTION_STRING for Azurite",
        "abfs": "BlobEndpoint in AZURE_STORAGE_CONNECTION_STRING for Azurite",
    }.get(scheme.protocol if (scheme := SCHEMES.get(scheme_of(url) or "")) else "")
    return f"check the endpoint ({where})" if where else "check the host and the network"


def no_such_object(e: BaseException) -> bool:
    """Whether the store's failure `e` says the object is not there (its bucket or
    container is)."""
    return _missing(e) == "object"


def _missing(e: BaseException) -> str | None:
    """What a not-found lacks: 'bucket' or 'container' where the store's message names
    one, else 'object'; None for any other failure."""
    if not (isinstance(e, FileNotFoundError) or status_of(e) == 404):
        return None
    said = _NO_SUCH_STORE.search(first_line(e))
    return ("bucket" if "bucket" in said[0].lower() else "container") if said else "object"


# What the stores say of a missing bucket or container (S3's NoSuchBucket, GCS's and
# Azure's 'The specified ... does not exist', Azure's ContainerNotFound). The words alone
# were taken for it, and those are in the path the libraries put in a missing object's
# error: gs://b/my-bucket/x.jpg, gone, was 'no such bucket'.
_NO_SUCH_STORE = re.compile(
    r"NoSuchBucket|ContainerNotFound|BucketNotFound|(bucket|container) (\S+ )?does not exist"
    r"|no such (bucket|container)",
    re.I,
)


class StoreError(OSError):
    """A store's failure, already described in one line (`describe`)."""


class NoAnswer(StoreError):
    """A store's failure that is no answer about the object (`unanswered`), after the
    retries: the store itself is gone, or stopped answering for a while."""


class StoreDown(InferError):
    """A store stopped answering in the middle of a job: the job stops, rather than make
    every object after it an error row (which --resume would then skip)."""


class CredentialsExpired(InferError):
    """The store refused a request because the credentials' token expired (or is no
    longer valid): every later request would be refused alike, so the job stops with
    its rows so far saved, rather than make each object after it an error row (which
    --resume would then skip: files lost)."""


# What S3 (and S3-compatible servers) answer, 400 or 403, to a request signed with a
# session token that expired or is no longer valid
_EXPIRED = re.compile(
    r"\b(ExpiredToken(?:Exception)?|TokenRefreshRequired|InvalidToken)\b"
    r"|provided token has expired|security token included in the request is expired",
    re.I,
)


def expired_credentials(e: BaseException, url: str) -> CredentialsExpired | None:
    """The one line for a request refused for its expired (or invalid) session token;
    None for any other failure. Credentials that refresh (a profile's role or
    credential_process, SSO) are taken again before they expire (botocore's refresh,
    `CREDENTIALS_CHECK_S`); those given as they are (AWS_SESSION_TOKEN) cannot be."""
    status = status_of(e)
    if status not in (400, 401, 403):
        return None
    response = getattr(e, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    said = _EXPIRED.search(f"{code} {first_line(e)}")
    if not said:
        return None
    if os.environ.get("AWS_SESSION_TOKEN"):
        whose = "the temporary credentials in AWS_SESSION_TOKEN (with AWS_ACCESS_KEY_ID)"
        renew = "set new ones"
    elif os.environ.get("AWS_PROFILE"):
        whose = f"the credentials of profile {os.environ['AWS_PROFILE']}"
        renew = "renew them (aws sso login, or the profile's source)"
    else:
        whose = "the store's credentials"
        renew = "renew them"
    return CredentialsExpired(
        f"{whose} expired in the middle of the job: the store refused {url} "
        f"({said[0]}); rows so far are saved; {renew} and run the same command with --resume"
    )


def _timed_out_in_botocore(e: BaseException) -> bool:
    """A botocore request that timed out: botocore's own retries tried it again already
    (each try waits up to READ_TIMEOUT_S), so another round would only multiply the wait
    for an endpoint that does not answer."""
    timeouts = {"ReadTimeoutError", "ConnectTimeoutError"}
    return type(e).__module__.startswith("botocore") and bool(_names(e) & timeouts)


_SIGNED = re.compile(r"region '([^']*)' is wrong")
_EXPECTED = re.compile(r"expecting '([^']+)'")


def wrong_region(e: BaseException, url: str) -> InferError | None:
    """The one line for an S3 server's refusal of a request signed for another region
    than its own (AuthorizationHeaderMalformed: MinIO with MINIO_REGION, Garage, Ceph,
    AWS), which says the region it expects; None for any other failure. Every request
    signed so would fail alike: botocore's listings follow the region the answer names,
    but libcurl's and obstore's reads do not, so a prefix was listed and each of its
    objects was an error row, and the job exited 0."""
    text = first_line(e)
    if "AuthorizationHeaderMalformed" not in text:
        return None
    said = _SIGNED.search(text)
    expected = _EXPECTED.search(text)
    region = expected[1] if expected else None
    response = getattr(e, "response", None)
    if region is None and isinstance(response, dict):
        region = response.get("Error", {}).get("Region")
    signed = f" signed for region {said[1]!r}" if said else ""
    fix = f"set AWS_DEFAULT_REGION={region}" if region else "set AWS_DEFAULT_REGION to its region"
    expects = f" expects region {region!r}" if region else " expects another region"
    return InferError(
        f"the S3 server refused a request for {url}{signed}: it{expects} "
        f"(AuthorizationHeaderMalformed); {fix} (or the profile's region)"
    )


def with_retries(call: Callable[[], T], url: str, attempts: int = RETRIES) -> T:
    """`call()`, tried again after a transient failure (backoff BACKOFF_S, x4 each time;
    an answer that asks to slow down: THROTTLED_RETRIES tries, as long apart as its
    Retry-After asks where it says); any failure that stays becomes a StoreError whose
    message is one line (a NoAnswer where the store gave no answer about the object). A
    request signed for the wrong region is an InferError (`wrong_region`): the job stops."""
    attempt = 0
    while True:
        try:
            return call()
        except Exception as e:
            if isinstance(e, InferError | TooLarge):
                raise
            if (region := wrong_region(e, url)) is not None:
                raise region from e
            if (expired := expired_credentials(e, url)) is not None:
                raise expired from e
            asked = _retry_after(e)  # None where the server did not say
            most = max(attempts, THROTTLED_RETRIES) if attempts > 1 and throttled(e) else attempts
            if (
                attempt + 1 < most
                and is_transient(e)
                and not _timed_out_in_botocore(e)
                and (asked is None or asked <= web.MAX_RETRY_AFTER_S)
            ):
                time.sleep(asked or min(BACKOFF_S * 4**attempt, MAX_BACKOFF_S))
                attempt += 1
                continue
            tries = f" (after {attempt + 1} tries)" if attempt else ""
            failure = NoAnswer if unanswered(e) else StoreError
            raise failure(describe(e, url) + tries) from e


def throttled(e: BaseException) -> bool:
    """Whether the store's answer asks for fewer requests (S3's 503 SlowDown, a 429): a
    server shedding load for a while, which three tries 1.25 s in all took for a store
    gone (16 reads so ended stopped the job: 'the store stopped answering')."""
    return status_of(e) == 429 or any(code in first_line(e) for code in THROTTLE_CODES)


def _retry_after(e: BaseException) -> float | None:
    """The seconds the answer's Retry-After asks for (a web server's, `web.retry_after`;
    botocore's answers carry their headers; obstore's errors do not), None where it did
    not say. One that asks for more than web.MAX_RETRY_AFTER_S is not tried again."""
    if (asked := web.retry_after(e)) is not None:
        return asked
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return None
    value = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after", "")
    try:
        return max(float(value), 0.0) or None
    except ValueError:
        return None


# --- reading and listing --------------------------------------------------------------


S3_CONNECTIONS = 64  # kept open per process: at least the reads in flight


def _botocore_session(settings: tuple) -> Any:
    """botocore's session, made once per process and store `settings`: where the
    credentials, profile, region and endpoint (AWS_ENDPOINT_URL) are resolved, as s3fs's
    aiobotocore resolves them."""
    import botocore.session

    return made_once(("botocore-session", settings), botocore.session.get_session)


def s3_client(settings: tuple | None = None) -> Any:
    """botocore's own (synchronous, thread-safe) S3 client, made once per process and
    store settings (None: those of now). Listing pages go through it (s3fs's find and ls
    hold the whole listing), and the GETs of keys object_store cannot name
    (`_object_store_key`)."""
    _check_extra("s3", SCHEMES["s3"])
    settings = store_settings() if settings is None else settings

    def make() -> Any:
        import botocore.config

        session = _botocore_session(settings)
        config = botocore.config.Config(
            max_pool_connections=S3_CONNECTIONS,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries=_retries(session),
            response_checksum_validation=_checksums(session),
        )
        return session.create_client("s3", config=config)

    return made_once(("botocore-s3", settings), make)


def _retries(session: Any) -> dict | None:
    """botocore's 'standard' retry mode (3 tries, throttling backed off) unless the
    environment or profile chose one (AWS_RETRY_MODE, retry_mode): its default,
    'legacy', tries 5 times, and an endpoint that sends nothing held a run 5 x
    READ_TIMEOUT_S before its one line."""
    if os.environ.get("AWS_RETRY_MODE") or session.get_scoped_config().get("retry_mode"):
        return None
    return {"mode": "standard"}


def _checksums(session: Any) -> str | None:
    """'when_required' (a whole object's checksum is checked where `_botocore_get` asks
    for it) unless the environment or profile chose (AWS_RESPONSE_CHECKSUM_VALIDATION,
    response_checksum_validation): by botocore's default every answer with a checksum
    header is checked, and rclone's `serve s3` sends the whole object's with a range,
    so each ranged read failed (FlexibleChecksumError)."""
    chosen = os.environ.get("AWS_RESPONSE_CHECKSUM_VALIDATION")
    if chosen or session.get_scoped_config().get("response_checksum_validation"):
        return None
    return "when_required"


CREDENTIALS_CHECK_S = 300  # how often obstore asks again for credentials that expire


class _BotocoreCredentials:
    """obstore's credential provider: botocore's credentials (environment, profiles,
    SSO, roles), refreshed by botocore; obstore asks again every CREDENTIALS_CHECK_S
    when they are of a kind that expires."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> S3Credential:
        import botocore.credentials

        frozen = self.credentials.get_frozen_credentials()
        expires = None
        if isinstance(self.credentials, botocore.credentials.RefreshableCredentials):
            expires = datetime.now(UTC) + timedelta(seconds=CREDENTIALS_CHECK_S)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": expires,
        }


def _object_store(bucket: str, settings: tuple) -> Any:
    """obstore's S3Store for `bucket` (Rust's object_store), made once per process,
    store settings and bucket, for whole-object and ranged GETs: 0.25-0.35 ms of
    client CPU per photo-sized object here, against botocore's 1.2-1.4 ms and pyarrow's
    0.7-1.0 ms (which also sends a HEAD before each GET): docs/benchmarks.md. It gets the
    endpoint, region and credentials botocore resolves, so both clients reach the same
    server as the same user; an endpoint is passed only when one is configured
    (AWS_ENDPOINT_URL...), never looked up. Its own retries are off: `with_retries`
    does them, as for every store."""

    def make() -> Any:
        from botocore.exceptions import NoCredentialsError
        from obstore.store import S3Store

        client = s3_client(settings)
        credentials = _botocore_session(settings).get_credentials()
        if credentials is None:
            raise NoCredentialsError()
        endpoint = client.meta.endpoint_url
        custom = not (urlsplit(endpoint).hostname or "").endswith(".amazonaws.com")
        return S3Store(
            bucket,
            region=client.meta.region_name,
            **({"endpoint": endpoint} if custom else {}),
            client_options={"allow_http": endpoint.startswith("http://")},
            retry_config={"max_retries": 0},
            credential_provider=_BotocoreCredentials(credentials),
        )

    return made_once(("obstore-s3", settings, bucket), make)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _object_store_key(key: str) -> bool:
    """Whether object_store can name the S3 key exactly. Its paths have no empty,
    '.' or '..' segment and no control character; given one, it refuses the key or
    drops the empty segment (a leading '/' would read another object). S3 allows
    them: such keys go through botocore."""
    parts = key.split("/")
    return not _CONTROL.search(key) and all(p not in ("", ".", "..") for p in parts)


class ObjectStoreError(OSError):
    """An obstore failure, with what `describe` and `is_transient` read: the HTTP
    status, or how the request failed (reqwest's kind: Connect, Timeout...)."""

    def __init__(self, message: str, status: int | None, kind: str | None) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


_STATUS = re.compile(r"status code: (\d{3})")
_KIND = re.compile(r"kind: (\w+)")
_S3_CODE = re.compile(r"<Code>([^<]*)</Code>(?:.*?<Message>([^<]*)</Message>)?", re.S)


def _from_obstore(e: Exception) -> Exception:
    """obstore's exception as one the rest of this module reads: its first line is the
    S3 error code and message when the server sent them, else the cause after ' - '."""
    import obstore.exceptions as ox

    if not isinstance(e, (ox.BaseError, FileNotFoundError)):
        return e
    text = str(e)
    status = _STATUS.search(text)
    kind = _KIND.search(text)
    code = _S3_CODE.search(text)
    head = text.splitlines()[0] if text else type(e).__name__
    message = head.rsplit(" - ", 1)[-1].rstrip(": ")
    if code:
        message = f"{code.group(1)}: {code.group(2)}" if code.group(2) else code.group(1)
    if isinstance(e, ox.UnauthenticatedError):
        message = "unauthenticated: " + message
    return ObjectStoreError(
        message, int(status.group(1)) if status else None, kind.group(1) if kind else None
    )


class TooLarge(OSError):
    """An object over the size the caller reads at all (said before its body is read)."""


def check_size(size: int | None, max_bytes: int | None) -> None:
    """`TooLarge` for a file or object of `size` bytes over `max_bytes` (None: no limit)."""
    if max_bytes is not None and (why := oversize(size, max_bytes)):
        raise TooLarge(why)


def _s3_get(
    url: str, span: tuple[int, int] | None, settings: tuple, max_bytes: int | None = None
) -> bytes:
    """The object at `url`, or `span` (offset, size) of it: through obstore when it can
    name the key, else botocore. A whole object over `max_bytes` is refused by the size
    its answer's headers give, its body unread. An answer obstore refuses and botocore
    reads (`_BOTOCORE_READS`) is read again through botocore."""
    bucket, key = _bucket_key(url)
    if not _object_store_key(key):
        return _botocore_get(url, span, settings, max_bytes)
    import obstore

    store = _object_store(bucket, settings)
    try:
        if span is None:
            got = obstore.get(store, key)
            check_size(got.meta["size"], max_bytes)
            return bytes(got.bytes())
        return bytes(obstore.get_range(store, key, start=span[0], length=span[1]))
    except TooLarge:
        raise
    except Exception as e:
        if _botocore_reads(e):
            return _botocore_get(url, span, settings, max_bytes)
        raise _from_obstore(e) from e


# Answers of S3-compatible servers that obstore refuses and botocore reads: a range sent
# with status 200 (rclone's `serve s3`, lakeFS's gateway), a 206 without Content-Range,
# a body sent chunked, with no Content-Length (each was an error row)
_BOTOCORE_READS = ("NotPartial", "NoContentRange", "MissingContentLength")


def _botocore_reads(e: Exception) -> bool:
    """Whether obstore's failure `e` refused an answer that botocore reads."""
    return any(why in str(e) for why in _BOTOCORE_READS)


_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/")


def _botocore_get(
    url: str, span: tuple[int, int] | None, settings: tuple, max_bytes: int | None = None
) -> bytes:
    """`_s3_get` through botocore: for a span, the bytes the server sent from the span's
    start (its Content-Range says where they start), or the whole object where it
    ignored the range (`read_range` cuts the span from it). A whole object's checksum is
    checked where the server sends one; a range's is not (`_checksums`)."""
    bucket, key = _bucket_key(url)
    if span is None:
        args = {"ChecksumMode": "ENABLED"}
    else:
        args = {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"}
    answer = s3_client(settings).get_object(Bucket=bucket, Key=key, **args)
    with contextlib.closing(answer["Body"]) as body:
        check_size(answer.get("ContentLength"), max_bytes)
        data = body.read()
    sent = _CONTENT_RANGE.match(answer.get("ContentRange") or "")
    if span is not None and sent and int(sent.group(1)) != span[0]:
        raise StoreError(
            f"cannot read {url}: the server sent bytes from {sent.group(1)} when asked for "
            f"bytes from {span[0]}; check the server (an S3-compatible store's Range support)"
        )
    return data


def _bucket_key(url: str) -> tuple[str, str]:
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def read_bytes(url: str, settings: tuple | None = None, max_bytes: int | None = None) -> bytes:
    """The whole object at `url`, read with the store `settings` (None: those of now).
    One over `max_bytes` (None: any size) is `TooLarge`, its body unread: S3 says the size
    in its answer's headers; another store is asked for it first (one request more; a
    server that does not say reads it whole)."""
    if _scheme(url).protocol == "s3":
        settings = store_settings() if settings is None else settings
        return with_retries(lambda: _s3_get(url, None, settings, max_bytes), url)
    fs = filesystem(url)
    path = store_path(url)
    if web.is_web(url):  # one GET: a HEAD first was refused by URLs presigned for GET,
        # and fsspec then asked for the size by a GET of its own, so each was read twice
        return with_retries(lambda: web.get(fs, path, max_bytes, TooLarge), url)

    def read() -> bytes:
        if max_bytes is not None:
            try:
                size = fs.size(path)
            except Exception:  # the read itself says what is wrong, as it always has
                size = None
            check_size(size, max_bytes)
        return fs.cat_file(path)

    return with_retries(read, url)


def read_range(url: str, offset: int, size: int, settings: tuple | None = None) -> bytes:
    """`size` bytes from `offset` of the object at `url` (one ranged GET), read with the
    store `settings` (None: those of now); fewer where the object ends first."""
    if size == 0:
        return b""
    if _scheme(url).protocol == "s3":
        settings = store_settings() if settings is None else settings
        return _RANGES.read(
            (settings, _bucket_key(url)[0]),
            url,
            (offset, size),
            lambda: _s3_get(url, (offset, size), settings),
            lambda: _s3_get(url, None, settings),
        )
    fs = filesystem(url)
    path = store_path(url)
    return _RANGES.read(
        urlsplit(url).netloc,
        url,
        (offset, size),
        lambda: fs.cat_file(path, start=offset, end=offset + size),
        lambda: fs.cat_file(path),
    )


class _Ranges:
    """Ranged reads, and what each server did with them. A server may ignore a range and
    send the whole object (RFC 9110 lets it; Python's http.server does): reading a
    shard's members one by one would then download the whole shard for each. So the
    first ranged read from each server in a process goes alone; if its answer is more
    than the range, the server is known to send whole objects, each object is then read
    once (one thread reads, the others wait) and its members are cut from it, the last
    KEEP objects kept."""

    KEEP = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[Hashable, threading.Event] = {}  # set at its first answer
        self._whole: set[Hashable] = set()  # servers that sent a whole object for a range
        self._objects: dict[tuple, Future[bytes]] = {}  # the last KEEP whole objects

    def read(
        self,
        server: Hashable,
        url: str,
        span: tuple[int, int],
        ranged: Callable[[], bytes],
        whole: Callable[[], bytes],
    ) -> bytes:
        """`span` (offset, size) of `url` on `server` (a bucket and its store settings, or
        a host): by the `ranged` read, or cut from the object read `whole` where that
        server sent a whole object for a range before."""
        offset, size = span
        with self._lock:
            answered = self._servers.get(server)
            first = answered is None
            if answered is None:
                answered = self._servers[server] = threading.Event()
        if not first:
            answered.wait()
        if server in self._whole:
            return self._object((server, url), url, whole)[offset : offset + size]
        try:
            data = with_retries(ranged, url)
        finally:
            answered.set()
        if len(data) <= size:
            return data
        with self._lock:  # the whole object, not the range: cut from it from now on
            self._whole.add(server)
            self._keep((server, url), data)
        return data[offset : offset + size]

    def _object(self, key: tuple, url: str, whole: Callable[[], bytes]) -> bytes:
        with self._lock:
            got = self._objects.get(key)
            mine = got is None
            if got is None:
                got = Future()
                self._keep(key, got)
        if mine:
            try:
                got.set_result(with_retries(whole, url))
            except BaseException as e:
                got.set_exception(e)
                with self._lock:
                    if self._objects.get(key) is got:
                        del self._objects[key]
        return got.result()

    def _keep(self, key: tuple, data: bytes | Future[bytes]) -> None:
        if not isinstance(data, Future):
            done: Future[bytes] = Future()
            done.set_result(data)
            data = done
        self._objects.pop(key, None)
        self._objects[key] = data
        while len(self._objects) > self.KEEP:
            del self._objects[next(iter(self._objects))]


_RANGES = _Ranges()


def open_stream(url: str, block_size: int = 8 << 20) -> Any:
    """A binary file object reading `url` front to back (a tar shard), with readahead:
    for S3, obstore's streamed GET (half the client CPU of s3fs's reads, measured in
    docs/benchmarks.md); else the store's fsspec file."""
    if _scheme(url).protocol == "s3" and _object_store_key(_bucket_key(url)[1]):
        return with_retries(lambda: _s3_stream(url, block_size), url)
    fs = filesystem(url)
    path = store_path(url)
    if _scheme(url).protocol in ("http", "https"):
        block_size = 0  # one streamed GET: a server may ignore ranges (fsspec's blocks
        # then failed at the second one, and the shard's members after it were lost)
    return _Described(with_retries(lambda: fs.open(path, "rb", block_size=block_size), url), url)


class _Described:
    """A store library's file whose failed read is a StoreError, an OSError as a failed
    read of a file is: fsspec's HTTP, GCS and Azure files raise aiohttp's own errors (a
    shard cut short by the server was a traceback)."""

    def __init__(self, f: Any, url: str) -> None:
        self._f, self._url = f, url

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._f.read(size)
        except OSError:
            raise
        except Exception as e:
            raise StoreError(describe(e, self._url)) from e

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Described:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _s3_stream(url: str, chunk: int) -> _Chunks | _Described:
    import obstore

    bucket, key = _bucket_key(url)
    settings = store_settings()
    store = _object_store(bucket, settings)
    try:
        got = obstore.get(store, key)
    except Exception as e:
        if _botocore_reads(e):  # botocore streams its body
            body = s3_client(settings).get_object(Bucket=bucket, Key=key)["Body"]
            return _Described(body, url)
        raise _from_obstore(e) from e
    etag = got.meta.get("e_tag")

    def rest(offset: int) -> Iterator[Any]:
        """The chunks from byte `offset` on, of the same object (If-Match its ETag)."""
        options: GetOptions = {"range": {"offset": offset}, "if_match": etag}
        try:
            return iter(obstore.get(store, key, options=options).stream(min_chunk_size=chunk))
        except Exception as e:
            raise _from_obstore(e) from e

    return _Chunks(iter(got.stream(min_chunk_size=chunk)), url, rest)


class _Chunks(io.RawIOBase):
    """A file object over the chunks of a streamed GET, fetched as they are read. A
    stream cut in the middle (the connection closed, no answer in time) is asked for
    again from the byte it stopped at (`rest`, with the retries of `with_retries`), as a
    read is tried again: a shard's stream cut once was an error row 'shard unreadable',
    and a store gone for good was one too, where its members after the cut were then
    read by a --resume with the row left behind. A failure that stays is a StoreError
    (a NoAnswer where the store gave no answer), as a failed read of a file would be.
    A read returns at most what is left of the current chunk, copied once (no buffer
    between: tarscan and gzip read in big reads and take short ones)."""

    def __init__(
        self, chunks: Any, url: str = "", rest: Callable[[int], Iterator[Any]] | None = None
    ) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")
        self._url, self._rest = url, rest
        self._at = 0  # bytes of the object received

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 30), b""))
        if not self._next():
            return b""
        data = bytes(self._left[:size])
        self._left = self._left[len(data) :]
        return data

    def readinto(self, buffer: Any) -> int:
        if not self._next():
            return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def _next(self) -> bool:
        """Whether bytes are left, the next chunk fetched when the current one is done."""
        while not self._left:
            try:
                self._left = memoryview(next(self._chunks))
            except StopIteration:
                return False
            except Exception as e:
                failure = _from_obstore(e)
                if self._rest is None or not is_transient(failure):
                    raise failure from e
                self._chunks = with_retries(
                    functools.partial(_first_of, self._rest, self._at), self._url
                )
                continue
            self._at += len(self._left)
        return True


def _first_of(rest: Callable[[int], Iterator[Any]], offset: int) -> Iterator[Any]:
    """The chunks `rest(offset)` gives, the first one fetched already (a failure to fetch
    it is raised here, where `with_retries` tries again), then the others as they come."""
    chunks = rest(offset)
    try:
        first = next(chunks, None)
    except Exception as e:
        raise _from_obstore(e) from e
    return chain([first] if first is not None else [], chunks)


def kind(url: str) -> str:
    """'file' or 'directory' (a prefix with objects under it); one line when neither
    exists or the store cannot be reached."""
    if _scheme(url).protocol == "s3":
        settings = store_settings()
        try:
            return with_retries(lambda: _s3_kind(url, settings), url)
        except StoreError as e:
            raise InferError(_what_to_do(e, url)) from e
    fs = filesystem(url)
    path = store_path(url)
    if web.is_web(url):  # a file, if it answers
        if url.endswith("/"):  # it was an error row, or 'not found' where no host answered
            raise InferError(
                f"{url} ends in '/', as a folder: a web URL is one file, and no server lists "
                "its files; name each file, or write them one per line in an @list file"
            )
        try:
            with_retries(lambda: web.answers(fs, path), url)
        except StoreError as e:
            raise InferError(str(e)) from e
        return "file"
    if url.endswith("/") and not path.endswith("://"):
        path = path.rstrip("/")
    try:
        info = with_retries(lambda: fs.info(path), url)
    except StoreError as e:
        raise InferError(_missing_container(fs, url, path, e) or _what_to_do(e, url)) from e
    return "directory" if info.get("type") == "directory" else "file"


def _what_to_do(e: StoreError, url: str) -> str:
    """A command-line input's failure, with what to do when the store found nothing
    there: no object has the key and none is under it (a typo, an empty prefix, or a
    glob, which no store expands)."""
    if e.__cause__ is None or _missing(e.__cause__) != "object":  # another failure, or the
        return str(e)  # bucket or container missing: said already
    glob = re.search(r"[*?[]", url)
    if glob:
        prefix = url[: glob.start()].rpartition("/")[0] + "/"
        hint = f"a pattern is not expanded: name the prefix {prefix} (--extensions picks files)"
    else:
        hint = "check the name (keys are case-sensitive)"
    return f"{e}: no object has this key and none is under it as a prefix; {hint}"


# A HEAD refused by a server that may still allow GET; or a 400, whose reason (a wrong
# region) a HEAD's answer cannot say, having no body
HEAD_REFUSED = (400, 403, 405, 501)


def _s3_get_answers(client: Any, bucket: str, key: str) -> bool:
    """Whether a GET of the object is answered (its body not read); False when it is
    not there (404); any other failure raised, as the HEAD's would be."""
    try:
        client.get_object(Bucket=bucket, Key=key)["Body"].close()
    except client.exceptions.ClientError as e:
        if status_of(e) != 404:
            raise
        return False
    return True


def _s3_kind(url: str, settings: tuple) -> str:
    """`kind` for S3, asked as s3fs's `info` asks (an object's HEAD, then a 1-key
    listing under it as a prefix) through botocore's client, which the reads use
    anyway: importing s3fs (aiobotocore, aiohttp) and making its client cost an `infer`
    by s3:// 0.2-0.3 s of its start for these two requests. A bucket that does not exist
    says so in the listing's answer (a HEAD's 404 has no body). A server that refuses
    HEAD where GET is allowed (HEAD_REFUSED: a proxy that turns HEAD into GET, or one
    that has no HEAD) is asked with a GET instead, closed at its headers."""
    from cnnbench.infer.sources import prefixes  # it lists through this module

    bucket, key = _bucket_key(url)
    client = s3_client(settings)
    if key and not url.endswith("/"):
        try:
            client.head_object(Bucket=bucket, Key=key)
            return "file"
        except client.exceptions.ClientError as e:
            if status_of(e) not in (404, *HEAD_REFUSED):
                raise
            if status_of(e) != 404 and _s3_get_answers(client, bucket, key):
                return "file"
    under = key.rstrip("/") + "/" if key else ""
    page = prefixes.s3_page(settings, bucket, under, None, "/", 1)  # V1 where V2 is refused
    if key and not (page.objects or page.prefixes):
        raise FileNotFoundError(f"no object or prefix {bucket}/{key}")
    return "directory"


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
