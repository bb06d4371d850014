"""S3-compatible servers that answer otherwise than AWS, against moto's S3 server on
127.0.0.1 behind a proxy that rewrites its answers the way such a server does (MinIO,
Ceph RGW, rclone serve s3, versitygw, Garage...): the job reads every object where the
server's answers allow it, else one line saying what the server did."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from helpers import (
    Forwarding,
    S3Server,
    assert_one_line_error,
    cnnbench_fast_stores,
    forward,
    paths,
    s3_env,
    s3_with_photos,
    send_answer,
    write_tar,
)

from cnnbench.infer.sources import stores

PHOTOS = 25
NOT_IMPLEMENTED = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NotImplemented</Code>"
    b"<Message>A header or query you provided implies functionality that is not "
    b"implemented</Message></Error>"
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_with_photos(tmp_path_factory.mktemp("moto"), "compat", PHOTOS) as server:
        yield server


class Compat(http.server.ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of an S3 server, answering as an S3-compatible
    server that differs from AWS:
    `v2`: 'native' (forwarded), 'refused' (a ListObjectsV2 request is 501 NotImplemented,
    as servers with ListObjects V1 only answer), 'ignored' (its V2 parameters are dropped
    and the V1 answer comes back: IsTruncated without NextContinuationToken);
    `max_keys`: the most keys a page holds whatever was asked (None: as asked);
    `next_marker`: whether a V1 answer keeps its NextMarker (AWS sends it only with a
    delimiter); `marker`, `token`: whether a V1 request's marker, a V2 request's
    continuation-token are honoured (else dropped: the first page comes back);
    `head`: the status a HEAD is answered with (None: forwarded); `region`: the only
    region a request may be signed for (else 400 AuthorizationHeaderMalformed, as MinIO
    with its MINIO_REGION, Garage and Ceph answer); `slow_down`: for that many seconds
    from the first GET of an object, every GET of an object is answered 503 SlowDown
    with a Retry-After of that many seconds (a server shedding load); `encoding`:
    'asked' (as the request asks), 'unsaid' (keys URL-encoded as asked, but the answer
    has no EncodingType to say so), 'ignored' (the request's encoding-type dropped: raw
    keys); `chunked`: objects' bodies sent chunked, with no Content-Length."""

    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        v2: str = "native",
        max_keys: int | None = None,
        next_marker: bool = True,
        marker: bool = True,
        token: bool = True,
        head: int | None = None,
        region: str | None = None,
        slow_down: float = 0,
        encoding: str = "asked",
        chunked: bool = False,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Rewrite)
        self.upstream = urlsplit(upstream).netloc
        self.v2, self.max_keys, self.head = v2, max_keys, head
        self.next_marker, self.marker, self.token = next_marker, marker, token
        self.region, self.slow_down = region, slow_down
        self.slow_until: float | None = None
        self.slowed = 0  # GETs answered SlowDown
        self.encoding, self.chunked = encoding, chunked
        self.requests: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def _wrong_region(signed: str, region: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AuthorizationHeaderMalformed</Code>"
        f"<Message>The authorization header is malformed; the region '{signed}' is wrong; "
        f"expecting '{region}'</Message><Region>{region}</Region></Error>"
    ).encode()


SLOW_DOWN = (
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)
V2_ONLY = ("list-type", "continuation-token", "start-after", "fetch-owner")


class _Rewrite(Forwarding):
    server: Compat

    def do_HEAD(self) -> None:
        if self.server.head is not None:
            self.server.requests.append(f"HEAD {self.path}")
            send_answer(self, self.server.head, [], b"")
            return
        self.answer()

    def answer(self) -> None:
        server = self.server
        server.requests.append(f"{self.command} {self.path}")
        signed = re.search(r"Credential=[^/]+/\d+/([^/]+)/", self.headers.get("Authorization", ""))
        if server.region and signed and signed[1] != server.region:
            send_answer(self, 400, [], _wrong_region(signed[1], server.region))
            return
        path, _, query = self.path.partition("?")
        params = parse_qsl(query, keep_blank_values=True)
        listing = path.count("/") == 1 and self.command == "GET"
        if server.slow_down and not listing and self._slowed_down():
            return
        if listing and ("list-type", "2") in params:
            if server.v2 == "refused":
                send_answer(self, 501, [], NOT_IMPLEMENTED)
                return
            if server.v2 == "ignored":
                params = [(k, v) for k, v in params if k not in V2_ONLY]
        if listing and server.max_keys is not None:
            asked = int(dict(params).get("max-keys", 1000))
            params = [(k, v) for k, v in params if k != "max-keys"]
            params.append(("max-keys", str(min(asked, server.max_keys))))
        if listing and not server.marker:
            params = [(k, v) for k, v in params if k != "marker"]
        if listing and not server.token:
            params = [(k, v) for k, v in params if k != "continuation-token"]
        if listing and server.encoding == "ignored":
            params = [(k, v) for k, v in params if k != "encoding-type"]
        target = f"{path}?{urlencode(params)}" if params else path
        status, headers, body = forward(self, server.upstream, target)
        if listing and not server.next_marker:
            body = re.sub(rb"<NextMarker>[^<]*</NextMarker>", b"", body)
        if listing and server.encoding == "unsaid":
            body = body.replace(b"<EncodingType>url</EncodingType>", b"")
        send_answer(self, status, headers, body, chunked=server.chunked and not listing)

    def _slowed_down(self) -> bool:
        """Whether this GET was answered 503 SlowDown (while the server sheds load)."""
        server = self.server
        now = time.monotonic()
        if server.slow_until is None:
            server.slow_until = now + server.slow_down
        if now >= server.slow_until:
            return False
        wait = str(round(server.slow_down))
        server.slowed += 1
        send_answer(self, 503, [("Retry-After", wait)], SLOW_DOWN)
        return True


def _cnnbench(args: list[str], endpoint: str, **env: str) -> subprocess.CompletedProcess:
    """`cnnbench ARGS` in a process of its own against `endpoint` (and `env`), retries
    10 ms apart."""
    return cnnbench_fast_stores(args, os.environ | s3_env(endpoint) | env, timeout=120)


ALL = [f"{i:04d}.jpg" for i in range(PHOTOS)]


def _through(
    s3: S3Server, model: Path, out: Path, given: str = "s3://compat/set/", **compat: Any
) -> tuple[subprocess.CompletedProcess, Compat]:
    """`cnnbench infer MODEL GIVEN -o OUT` through a proxy answering as `compat` says."""
    proxy = Compat(s3.url, **compat)
    try:
        args = ["infer", str(model), given, "-o", str(out), "--no-progress"]
        return _cnnbench(args, proxy.url), proxy
    finally:
        proxy.close()


@pytest.mark.parametrize(
    ("v2", "next_marker", "given"),
    [
        ("ignored", False, "s3://compat/set/"),  # old Ceph RGW, eucalyptus: V1's page, no token
        ("ignored", True, "s3://compat/set/"),
        ("refused", True, "s3://compat/set/"),  # Scality, DigitalOcean Spaces: 501
        ("refused", True, "s3://compat/set"),  # ... asked whether it is a prefix
    ],
)
def test_a_server_without_list_objects_v2_is_listed_with_v1(
    v2: str, next_marker: bool, given: str, tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A server that answers ListObjectsV2 with ListObjects V1's page (IsTruncated and no
    NextContinuationToken) had its first page taken for the whole prefix: 3 of 25 rows,
    exit 0, the rest lost. One that refuses V2 (501 NotImplemented) was one line,
    `cannot read s3://compat/set/: HTTP 501 ...`, where V1 would have listed it. Both are
    listed through V1 now, page by page (`marker`), every object once."""
    out = tmp_path / "out.csv"
    done, proxy = _through(s3, tiny_model, out, given, v2=v2, max_keys=3, next_marker=next_marker)
    assert done.returncode == 0, done.stderr
    assert paths(out) == ALL
    # paged by V1's marker: the last key listed where the answer has no NextMarker
    marker = "marker=set%2F0002.jpg" if not next_marker else "&marker="
    assert any(marker in r and "list-type" not in r for r in proxy.requests), proxy.requests


@pytest.mark.parametrize(
    "ignores", [{"v2": "ignored", "next_marker": False, "marker": False}, {"token": False}]
)
def test_a_server_that_ignores_where_a_page_starts_is_one_line(
    ignores: dict, tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A server that answers every page from the first key on (V1's marker, or V2's
    continuation-token ignored) was listed for ever (V2: the job hung, its first rows
    written again and again); it is one line naming what it did, exit 1."""
    done, proxy = _through(s3, tiny_model, tmp_path / "out.csv", max_keys=3, **ignores)
    assert_one_line_error(
        done.returncode, done.stderr, "cannot list s3://compat/set/ past set/0002.jpg",
        "answered the next page from set/0000.jpg again", "@list file",
    )  # fmt: skip
    assert len(proxy.requests) < 20


@pytest.mark.parametrize("head", [403, 405])
def test_a_server_that_refuses_head_is_asked_with_a_get(
    head: int, tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A server that refuses HEAD but answers GET (403 from a proxy that turns HEAD into
    GET, 405 from one without HEAD): an object or a prefix without its '/' given on the
    command line was one line, `access denied to s3://compat/set/0001.jpg (... HeadObject
    operation: Forbidden)` or `HTTP 405`, the job never run. The object is asked with a
    GET instead (its body not read); a missing object, or one whose GET is denied too, is
    still one line."""
    client = s3.client()
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::compat/set/0003.jpg",
    }
    policy = json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    client.put_bucket_policy(Bucket="compat", Policy=policy)
    proxy = Compat(s3.url, head=head)
    given = ["s3://compat/set/0001.jpg", "s3://compat/set", "s3://compat/set/no.jpg"]
    given.append("s3://compat/set/0003.jpg")
    outs = [tmp_path / f"out{i}.csv" for i in range(len(given))]
    try:
        runs = [
            _cnnbench(["infer", str(tiny_model), one, "-o", str(out), "--no-progress"], proxy.url)
            for one, out in zip(given, outs, strict=True)
        ]
    finally:
        proxy.close()
        client.delete_bucket_policy(Bucket="compat")
    assert runs[0].returncode == 0 and runs[1].returncode == 0, runs[0].stderr + runs[1].stderr
    assert paths(outs[0]) == ["s3://compat/set/0001.jpg"]
    assert paths(outs[1]) == [n for n in ALL if n != "0003.jpg"]  # and an error row
    assert_one_line_error(
        runs[2].returncode, runs[2].stderr, "not found: s3://compat/set/no.jpg", "no object"
    )
    assert_one_line_error(
        runs[3].returncode, runs[3].stderr, "access denied to s3://compat/set/0003.jpg"
    )
    assert any(r.startswith("HEAD ") for r in proxy.requests)


def test_a_server_of_another_region_is_one_line_naming_it(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A server whose region is not the one requests are signed for (Garage's 'garage',
    MinIO's MINIO_REGION) answers AuthorizationHeaderMalformed, naming its own. botocore
    followed it for the listing, libcurl and obstore did not for the reads: every object
    of s3://compat/set/ was an error row and the job exited 0 (--resume skips them); an
    object given alone was `HTTP 400: ... HeadObject operation: Bad Request`. Now both are
    one line naming the region to set, and with it set the job reads every object."""
    proxy = Compat(s3.url, region="garage")
    out = tmp_path / "out.csv"
    try:
        runs = [
            _cnnbench(["infer", str(tiny_model), one, "-o", str(out), "--no-progress"], proxy.url)
            for one in ("s3://compat/set/", "s3://compat/set/0001.jpg")
        ]
        args = ["infer", str(tiny_model), "s3://compat/set/", "-o", str(out), "--no-progress"]
        fixed = _cnnbench(args, proxy.url, AWS_DEFAULT_REGION="garage")
    finally:
        proxy.close()
    for done in runs:
        assert_one_line_error(
            done.returncode, done.stderr, "signed for region 'us-east-1'",
            "it expects region 'garage'", "set AWS_DEFAULT_REGION=garage",
        )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert paths(out) == ALL


def test_a_server_that_asks_to_slow_down_is_waited_for(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A server shedding load answers 503 SlowDown for a while: three tries (here 50 ms
    in all; 1.25 s unpatched) took it for a store gone, and 16 such reads stopped the
    job, `the store stopped answering: ... SlowDown: Please reduce your request rate.`.
    Such an answer is now tried THROTTLED_RETRIES times, further apart (3.4 s in all
    here, 21 s unpatched), and a shedding that passes costs the job nothing."""
    out = tmp_path / "out.csv"
    done, proxy = _through(s3, tiny_model, out, slow_down=2)
    assert done.returncode == 0, done.stderr
    assert paths(out) == ALL
    assert proxy.slowed > 16  # more than a store gone takes to stop a job


ODD = ["a b.jpg", "pct%41.jpg", "x+y.jpg", "é.jpg"]  # in key order


@pytest.mark.parametrize("encoding", ["unsaid", "ignored"])
def test_listed_keys_are_read_as_the_server_encoded_them(
    encoding: str, tiny_model: Path, photo_jpeg: bytes, s3: S3Server, tmp_path: Path
) -> None:
    """A server that URL-encodes listed keys without saying so (no EncodingType: HCP,
    Apache Ozone) had its objects read by their encoded keys: `not found:
    s3://compat/odd/a%20b.jpg`, an error row each. They are decoded now; and a server
    that ignores encoding-type, whose raw keys may hold '%41' as they are, keeps them."""
    client = s3.client()
    for name in ODD:
        client.put_object(Bucket="compat", Key=f"odd/{name}", Body=photo_jpeg)
    out = tmp_path / "out.csv"
    done, _ = _through(s3, tiny_model, out, "s3://compat/odd/", encoding=encoding)
    assert done.returncode == 0, done.stderr
    assert paths(out) == ODD
    assert not (tmp_path / "out.errors.csv").exists() or paths(tmp_path / "out.errors.csv") == []


def test_bodies_sent_chunked_without_a_length_are_read(
    tiny_model: Path,
    photo_jpeg: bytes,
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects sent chunked, with no Content-Length: obstore refuses the answer ('Content-
    Length Header missing from response'), so keys it reads (odd ones; libcurl reads
    plain ones) and shards were error rows. botocore reads them now."""
    client = s3.client()
    for name in ODD:
        client.put_object(Bucket="compat", Key=f"chunked/{name}", Body=photo_jpeg)
    shard = write_tar(tmp_path / "s.tar", [(f"{k}.jpg", photo_jpeg) for k in range(3)])
    client.put_object(Bucket="compat", Key="chunked-shards/s.tar", Body=shard.read_bytes())
    out = tmp_path / "out.csv"
    args = ["infer", str(tiny_model), "s3://compat/chunked/", "s3://compat/chunked-shards/s.tar"]
    proxy = Compat(s3.url, chunked=True)
    try:
        done = _cnnbench([*args, "-o", str(out), "--no-progress"], proxy.url)
        for name, value in s3_env(proxy.url).items():
            monkeypatch.setenv(name, value)
        # a member by its range, as the Ray engine's workers read it
        assert (
            stores.read_range("s3://compat/chunked-shards/s.tar", 512, 600)
            == (shard.read_bytes()[512:1112])
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    shard_rows = [f"s3://compat/chunked-shards/s.tar/{k}.jpg" for k in range(3)]
    assert paths(out) == [f"s3://compat/chunked/{name}" for name in ODD] + shard_rows
    assert not (tmp_path / "out.errors.csv").exists() or paths(tmp_path / "out.errors.csv") == []
