"""Prefixes listed page by page, as folders: a prefix of millions of objects is never held.

Each store's own listing request, one page of at most PAGE_KEYS keys at a time: S3's
ListObjectsV2 through botocore's client, GCS's objects.list (the JSON API's `pageToken`)
through gcsfs's request method, Azure's List Blobs (`marker`) through azure-storage-blob's
pager on adlfs's client. fsspec's `find` and `ls` would hold the whole listing (and its
directory cache) in memory. Each page is one request, retried as any read is
(`stores.with_retries`), with the credentials and endpoint of the filesystem that reads
the objects, so listing and reading reach the same server as the same user.

Every store lists keys in code-point order (S3 and GCS by their UTF-8 bytes, Azure
lexicographically), which is the order a folder scan gives its relative paths: a prefix
and a folder of the same files give the same rows in the same order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from cnnbench.infer.errors import InferError
from cnnbench.infer.sources import s3_multi, stores

PAGE_KEYS = 1000  # keys per listing request (the most S3 and GCS send)
FIRST_PAGE_KEYS = 100  # ... but the first pages: their objects' reads start sooner
PAGE_GROWTH = 3  # each page asks for this many times the keys of the one before
PROBE_THREADS = 32


@dataclass(frozen=True)
class Entry:
    """One object under a prefix: its URL, its name relative to the prefix, its size."""

    url: str
    name: str
    size: int | None


@dataclass(frozen=True)
class Page:
    """One answer of a store's listing: keys in key order, with their sizes; the
    'sub-folders' when asked with a delimiter (whole keys, ending in it); where the
    next page starts (None: this is the last)."""

    objects: list[tuple[str, int | None]]
    prefixes: list[str]
    token: str | None


# (prefix, token, delimiter, max keys) -> one page of one bucket or container
Pager = Callable[[str, str | None, str | None, int], Page]


def list_prefix(url: str, page_keys: int = PAGE_KEYS) -> Iterator[Entry]:
    """Every object under the prefix `url`, in key order, streamed one page of
    `page_keys` at a time; zero-byte 'folder marker' objects (keys ending in '/') are
    not files. The first page asks for FIRST_PAGE_KEYS, each next one PAGE_GROWTH times
    more, up to `page_keys`: a store answers a short page sooner (s3rver 100 keys in 17
    ms, 1,000 in 70-90), and a job's first reads wait for the first page, and at a
    server that answers one request at a time, behind the second."""
    page_of, base, prefix = _pager(url)
    if page_of is None:
        raise stores.StoreError(
            f"{base} is not a prefix: web URLs are single files; name each one, "
            "or write them one per line in an @list file"
        )
    token, keys, last = None, min(page_keys, FIRST_PAGE_KEYS), ""
    while True:
        page = stores.with_retries(functools.partial(page_of, prefix, token, None, keys), base)
        keys = min(page_keys, PAGE_GROWTH * keys)
        if (page.objects and page.objects[0][0] <= last) or (page.token and page.token == token):
            raise InferError(_not_paged(base, last, page))
        for key, size in page.objects:
            if not key.endswith("/"):
                name = key[len(prefix) :]
                yield Entry(base + name, name, size)
        if not page.token:
            return
        token, last = page.token, page.objects[-1][0] if page.objects else last


def _not_paged(base: str, last: str, page: Page) -> str:
    """The line for a store whose next listing page does not go on after the last one
    (it ignored where the page starts): asked again and again, the listing never ended."""
    again = f"from {page.objects[0][0]} again" if page.objects else "empty, with the same token"
    return (
        f"cannot list {base} past {last or 'its first page'}: the store answered the next "
        f"page {again} (it ignores where a listing page starts, and the listing would never "
        "end); give the objects in an @list file, one URL a line"
    )


def missing_object(url: str, e: stores.StoreError) -> stores.StoreError:
    """The failure to read the object `url`, saying what to write instead when no
    object has its key but objects are under it as a prefix (`s3://b/set` in an @list,
    where a prefix ends in '/'): one listing request, made only for such a failure."""
    page_of, base, prefix = _pager(url)
    if page_of is None or url.endswith("/") or not stores.no_such_object(e.__cause__ or e):
        return e
    try:
        page = stores.with_retries(functools.partial(page_of, prefix, None, None, 1), base)
    except stores.StoreError:
        return e
    if not page.objects:
        return e
    return stores.StoreError(
        f"{e}: no object has this key, but objects are under it as a prefix: write {base} "
        "(a prefix in a list ends in '/') to read them"
    )


def has_subprefix(url: str, names: set[str], page_keys: int = FIRST_PAGE_KEYS) -> bool:
    """True when the prefix `url` has a 'sub-folder' named as one of `names` (the
    model's labels, for class-folder accuracy): one page of `page_keys` of a
    '/'-delimited listing, then, if the prefix holds more, one 1-key listing per name
    that sorts after that page, in parallel, so a prefix of a million flat objects
    costs a handful of requests, not a thousand pages. A page lists keys and sub-folders
    in key order, so a name whose sub-folder sorts within it and is not in it has none
    (a flat prefix of 'photo_00001.jpg'... settles '0' to '9' with that one page). The
    page is as short as a listing's first: it runs beside the job's first reads."""
    page_of, _, prefix = _pager(url)
    if page_of is None:
        return False
    page = stores.with_retries(functools.partial(page_of, prefix, None, "/", page_keys), url)
    if {p[len(prefix) :].rstrip("/") for p in page.prefixes} & names:
        return True
    if not page.token:
        return False
    last = max([k for k, _ in page.objects[-1:]] + page.prefixes[-1:], default="")
    left = [n for n in sorted(names) if f"{prefix}{n}/" > last]  # code points: UTF-8 order
    if not left:
        return False

    def probe(name: str) -> bool:
        page = stores.with_retries(
            functools.partial(page_of, f"{prefix}{name}/", None, None, 1), url
        )
        return bool(page.objects)

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        return any(pool.map(probe, left))


def _pager(url: str) -> tuple[Pager | None, str, str]:
    """The listing request of the store holding the prefix `url`, bound to its bucket or
    container (None for http(s)://), the prefix URL ending in one '/', and the key
    prefix in it. The scheme is checked on `url` as given: one line for a URL that
    names no bucket ('s3://', which the trailing '/' cut would make 's3:/')."""
    protocol = stores.store_protocol(url)
    base = url.rstrip("/") + "/"
    bucket, prefix = base.split("://", 1)[1].split("/", 1)
    if protocol == "s3":
        return functools.partial(s3_page, stores.store_settings(), bucket), base, prefix
    if protocol == "gcs":
        return functools.partial(_gcs_page, stores.filesystem(base), bucket), base, prefix
    if protocol in ("az", "abfs"):
        container = bucket.split("@", 1)[0]  # abfs://container@account.dfs.core.windows.net/
        return functools.partial(_azure_page, stores.filesystem(base), container), base, prefix
    return None, base, prefix  # a web server: no listing to ask for


class Marker(str):
    """Where a ListObjects (V1) page starts: after this key or common prefix. The token
    of an S3 listing whose server does not page ListObjectsV2 (`s3_page`)."""


# (store settings, bucket) whose server refused ListObjectsV2: asked with V1 from then on
_V1_ONLY: set[tuple[tuple, str]] = set()
# What servers without ListObjectsV2 answer it with (501, or this code): Scality's
# cloudserver, DigitalOcean Spaces, older Ceph RGW and StorageGRID
V2_REFUSED = {"NotImplemented", "XNotImplemented", "NotSupported"}


def s3_page(
    settings: tuple, bucket: str, prefix: str, token: str | None, delimiter: str | None, limit: int
) -> Page:
    """A ListObjectsV2 page through libcurl where pycurl is available (a tenth of
    botocore's CPU a key), else, and for any answer but a page, through botocore. A
    server that refuses ListObjectsV2 is asked with ListObjects V1 instead (`marker`
    paging), and so is the next page of one that answered with a V1 page (more keys
    follow, and no continuation token): that answer was taken for the last page, and
    every key after its first page was lost."""
    v1 = isinstance(token, Marker) or (settings, bucket) in _V1_ONLY
    got = None
    if not v1 and s3_multi.available():
        got = s3_multi.list_page(settings, bucket, prefix, token, delimiter, limit)
    if got is None:
        try:
            got = _botocore_page(settings, bucket, prefix, token, delimiter, limit, v1)
        except Exception as e:
            if v1 or not _v2_refused(e):
                raise
            _V1_ONLY.add((settings, bucket))
            v1 = True
            got = _botocore_page(settings, bucket, prefix, None, delimiter, limit, v1)
    objects, common, following, truncated, said = got
    if not said and _encodes_unsaid(settings, bucket, objects, common, v1):
        objects = [(unquote_plus(k), size) for k, size in objects]
        common = [unquote_plus(p) for p in common]
        following = unquote_plus(following) if v1 and following else following
    if not truncated:
        return Page(objects, common, None)
    if following:
        return Page(objects, common, Marker(following) if v1 else following)
    return Page(objects, common, _after(objects, common))


def _botocore_page(
    settings: tuple,
    bucket: str,
    prefix: str,
    token: str | None,
    delimiter: str | None,
    limit: int,
    v1: bool,
) -> tuple[list[tuple[str, int | None]], list[str], str | None, bool, bool]:
    """A ListObjectsV2 page through botocore, as `s3_multi.list_page` gives one; or with
    `v1` a ListObjects page from after the marker `token`, and its NextMarker (AWS sends
    it only with a delimiter; without, the next page starts after the page's last key)."""
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": limit}
    if token:
        args["Marker" if v1 else "ContinuationToken"] = token
    if delimiter:
        args["Delimiter"] = delimiter
    client = stores.s3_client(settings)
    answer = client.list_objects(**args) if v1 else client.list_objects_v2(**args)
    return (
        [(o["Key"], o.get("Size")) for o in answer.get("Contents", ())],
        [p["Prefix"] for p in answer.get("CommonPrefixes", ())],
        answer.get("NextMarker" if v1 else "NextContinuationToken"),
        bool(answer.get("IsTruncated")),
        answer.get("EncodingType") == "url",  # botocore decoded the keys then
    )


_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# (store settings, bucket) -> whether its server URL-encodes listed keys without saying so
_UNSAID: dict[tuple[tuple, str], bool] = {}


def _encodes_unsaid(
    settings: tuple, bucket: str, objects: list[tuple[str, int | None]], common: list[str], v1: bool
) -> bool:
    """Whether a listing answer that does not say its keys are URL-encoded (no
    EncodingType, though every request asks for it) has them encoded all the same (HCP,
    Apache Ozone): their objects were read by the encoded key, `not found: s3://b/a%20b.jpg`
    for each. Told apart from a server that ignores the request's encoding-type, and
    whose keys may hold '%41' as it is, by one 1-key listing of the first such key
    decoded, per bucket: a server that encodes lists that key as it listed it before."""
    escaped = next((k for k in [k for k, _ in objects] + common if _ESCAPE.search(k)), None)
    if escaped is None:
        return False
    if (settings, bucket) not in _UNSAID:
        listed = _botocore_page(settings, bucket, unquote_plus(escaped), None, None, 1, v1)[0]
        _UNSAID[(settings, bucket)] = bool(listed) and listed[0][0].startswith(escaped)
    return _UNSAID[(settings, bucket)]


def _after(objects: list[tuple[str, int | None]], common: list[str]) -> Marker:
    """The marker after a page that says more keys follow: its last key or prefix."""
    last = max([k for k, _ in objects[-1:]] + common[-1:], default=None)
    if last is None:
        raise InferError(
            "the S3 server answered a listing page with no keys and no continuation token, "
            "yet said more keys follow: there is no way to ask for them; check the server "
            "(AWS_ENDPOINT_URL), or give the objects in an @list file, one URL a line"
        )
    return Marker(last)


def _v2_refused(e: BaseException) -> bool:
    """Whether botocore's failure `e` is a server saying it has no ListObjectsV2."""
    response = getattr(e, "response", None)  # botocore's ClientError's; None on others
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return stores.status_of(e) == 501 or code in V2_REFUSED


GCS_FIELDS = "items(name,size),prefixes,nextPageToken"  # what the answer carries


def _gcs_page(
    fs: Any, bucket: str, prefix: str, token: str | None, delimiter: str | None, limit: int
) -> Page:
    """objects.list through gcsfs's own request method (`call`: its session,
    credentials, endpoint and retries). google-cloud-storage's paged `list_blobs` would
    do as well, but with a client of its own that resolves credentials and project
    apart from gcsfs, which reads the objects."""
    try:
        answer = fs.call(
            "GET",
            "b/{}/o",
            bucket,
            json_out=True,
            prefix=prefix,
            delimiter=delimiter,
            pageToken=token,
            maxResults=limit,
            fields=GCS_FIELDS,
        )
    except FileNotFoundError as e:  # gcsfs says only the path; an empty prefix is no 404
        raise FileNotFoundError(f"bucket {bucket} does not exist") from e
    return Page(
        [(i["name"], int(i["size"])) for i in answer.get("items", ())],
        list(answer.get("prefixes", ())),
        answer.get("nextPageToken"),
    )


def _azure_page(
    fs: Any, container: str, prefix: str, token: str | None, delimiter: str | None, limit: int
) -> Page:
    """List Blobs through azure-storage-blob's pager on adlfs's client (its credentials
    and endpoint, its event loop): one page from `token` (the service's marker)."""
    from azure.storage.blob.aio import BlobPrefix
    from fsspec.asyn import sync

    async def one_page() -> Page:
        client = fs.service_client.get_container_client(container)
        if delimiter:
            items = client.walk_blobs(
                name_starts_with=prefix, delimiter=delimiter, results_per_page=limit
            )
        else:
            items = client.list_blobs(name_starts_with=prefix, results_per_page=limit)
        pages = items.by_page(continuation_token=token)
        objects, prefixes = [], []
        async for item in await pages.__anext__():
            if isinstance(item, BlobPrefix):
                prefixes.append(item.name)
            else:
                objects.append((item.name, item.size))
        return Page(objects, prefixes, pages.continuation_token or None)

    return sync(fs.loop, one_page)
