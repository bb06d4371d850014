"""A store that stops answering in the middle of a job, against moto's S3 server on
127.0.0.1 behind a proxy that fails it on cue: the job stops with one line instead of
making every object after that an error row (which --resume would skip: files lost),
and a --resume once the store answers again finishes it."""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from helpers import (
    Forwarding,
    S3Server,
    assert_one_line_error,
    cnnbench_fast_stores,
    errors_of,
    forward,
    paths,
    s3_env,
    s3_with_photos,
    send_answer,
    write_tar,
)

from cnnbench.infer.sources import fetch, stores
from cnnbench.infer.sources.items import Item

PHOTOS = 200
UNANSWERED = b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
EXPIRED = b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message>"
EXPIRED += b"</Error>"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_with_photos(tmp_path_factory.mktemp("moto"), "outage", PHOTOS) as server:
        yield server


class _Outage(http.server.ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of an S3 server that answers `answers` GETs of
    objects, then fails. `mode` 'gone': the listener closes and every connection is cut
    at its next request (a store that died); '503': every GET of an object is answered
    503, listings still pass (a store down behind its load balancer); '400' or '403':
    each GET of an object is refused with ExpiredToken, as S3 answers once the session
    token of the credentials expired (listings pass); 'cut': the first object's answer is
    cut in the middle and no request after it is answered (a store that died while it
    sent a shard); 'cut once': that answer cut, and every other one whole. `answered`:
    the keys whose objects it served."""

    daemon_threads = True
    request_queue_size = 256  # connections made while it goes down are refused, not dropped

    def __init__(
        self, upstream: str, answers: int, mode: str, token_life: float | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urlsplit(upstream).netloc
        self.answers, self.mode = answers, mode
        self.token_life = token_life  # seconds a session token 'tok-TIME' is taken
        self.tokens: set[str] = set()  # the session tokens requests came with
        self.expired = 0  # requests refused for a token older than token_life
        self.cuts = 0  # answers cut in the middle
        self.answered: list[str] = []
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def admit(self, path: str) -> bool:
        """Whether the request for `path` goes through; the store fails after the last."""
        if self.mode == "cut" and self.answers == 0:  # gone since an answer was cut
            return False
        with self.lock:
            if "list-type=" in path:
                return not self.down.is_set() or self.mode != "gone"
            if self.down.is_set():
                return False
            if len(self.answered) >= self.answers:
                self.down.set()
                if self.mode == "gone":
                    self.socket.close()  # new connections are refused from now on
                    threading.Thread(target=self.shutdown, daemon=True).start()
                return False
            return True

    def close(self) -> None:
        if not self.down.is_set():
            self.shutdown()
        self.server_close()


class _Forward(Forwarding):
    server: _Outage

    def answer(self) -> None:
        if self._expired():
            send_answer(self, 400, [], EXPIRED)
            return
        if not self.server.admit(self.path):
            if self.server.mode not in ("gone", "cut"):
                body = UNANSWERED if self.server.mode == "503" else EXPIRED
                send_answer(self, int(self.server.mode), [], body)
            else:
                self.close_connection = True  # cut, without an answer
            return
        status, headers, body = forward(self, self.server.upstream)
        if status == 200 and self.command == "GET" and "list-type=" not in self.path:
            with self.server.lock:
                self.server.answered.append(self.path.split("/", 2)[2])
            if self.server.mode.startswith("cut") and not self.server.cuts:
                self._cut(headers, body)  # the store dies (or stumbles) as it sends it
                return
        send_answer(self, status, headers, body)

    def _cut(self, headers: list[tuple[str, str]], body: bytes) -> None:
        """Half of `body` sent under its whole length, then the connection cut and the
        store gone: no request after it gets an answer."""
        self.send_response(200)
        for name, value in headers:
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        with self.server.lock:
            self.server.cuts += 1
            if self.server.mode == "cut":
                self.server.answers = 0  # every later request is refused

    def _expired(self) -> bool:
        """Whether the request's session token ('tok-' and when it was made) is older
        than the server's `token_life`, as S3 refuses a token past its expiry."""
        if self.server.token_life is None:
            return False
        token = self.headers.get("x-amz-security-token", "tok-0")
        with self.server.lock:
            self.server.tokens.add(token)
            if time.time() - float(token.removeprefix("tok-")) <= self.server.token_life:
                return False
            self.server.expired += 1
        return True


def _cnnbench(args: list[str], endpoint: str) -> subprocess.CompletedProcess:
    """`cnnbench ARGS` in a process of its own against `endpoint`, retries 10 ms apart."""
    return cnnbench_fast_stores(args, os.environ | s3_env(endpoint), timeout=300)


def _paths(out: Path) -> list[str]:
    return paths(out) if out.exists() else []


# A Parquet output: the job's listings before its reads (the class-folder check) are made
# before any read, and are not cut by the store going (CSV makes them while it reads).
# --io-threads 0: the decode threads read (fetch.DecodeReads), and every object after the
# store went was an error row, the job exiting 0
@pytest.mark.parametrize(
    ("mode", "output", "io_threads"),
    [
        ("gone", "out.parquet", None),
        ("503", "out.csv", None),
        ("503", "out.csv", "0"),
        ("gone", "out.csv", "0"),
    ],
)
def test_a_store_that_stops_answering_stops_the_job_and_resume_finishes_it(
    mode: str, output: str, io_threads: str | None, tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """The store fails after 50 of 200 reads: every object after that was an error row
    ('cannot connect for s3://...', or HTTP 503 after the retries), the job exited 0, and
    a --resume skipped them all. Now the job stops with one line, holds rows of objects
    it read only, and a --resume once the store answers reads every object once."""
    out = tmp_path / output
    errors = errors_of(out)
    args = ["infer", str(tiny_model), "s3://outage/set/", "-o", str(out), "--no-progress"]
    args += ["--batch-size", "8", *(["--block-size", "8"] if output.endswith(".parquet") else [])]
    args += ["--io-threads", io_threads, "--workers", "4"] if io_threads else []
    proxy = _Outage(s3.url, answers=50, mode=mode)
    start = time.monotonic()
    try:
        done = _cnnbench(args, proxy.url)
    finally:
        proxy.close()
    assert time.monotonic() - start < 60
    assert_one_line_error(
        done.returncode, done.stderr, "the store stopped answering", "rows so far are saved",
        "when it answers, run the same command with --resume",
    )  # fmt: skip
    assert proxy.down.is_set()
    read = {key.removeprefix("set/") for key in proxy.answered}
    assert set(_paths(out)) <= read, done.stderr
    assert _paths(errors) == [], done.stderr  # no row for what the store did not answer

    done = _cnnbench([*args, "--resume"], s3.url)
    assert done.returncode == 0, done.stderr
    assert sorted(_paths(out)) == [f"{i:04d}.jpg" for i in range(PHOTOS)]
    assert _paths(errors) == []


@pytest.mark.parametrize("status", ["403", "400"])
def test_credentials_that_expire_mid_job_stop_it_and_resume_finishes_it(
    status: str, tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """The session token expires after 50 of 200 reads, and S3 refuses every later GET
    (ExpiredToken): each object after that was an error row 'access denied', the job
    exited 0 and a --resume skipped them all. Now the job stops with one line naming the
    credentials, no error rows, and a --resume with new credentials reads every object."""
    out = tmp_path / "out.csv"
    errors = errors_of(out)
    args = ["infer", str(tiny_model), "s3://outage/set/", "-o", str(out), "--no-progress"]
    proxy = _Outage(s3.url, answers=50, mode=status)
    try:
        env = os.environ | s3_env(proxy.url) | {"AWS_SESSION_TOKEN": "session"}
        done = cnnbench_fast_stores(args, env, timeout=300)
    finally:
        proxy.close()
    assert_one_line_error(
        done.returncode, done.stderr, "credentials in AWS_SESSION_TOKEN", "expired in the middle",
        "(ExpiredToken)", "rows so far are saved", "run the same command with --resume",
    )  # fmt: skip
    read = {key.removeprefix("set/") for key in proxy.answered}
    assert set(_paths(out)) <= read, done.stderr
    assert _paths(errors) == [], done.stderr

    done = _cnnbench([*args, "--resume"], s3.url)
    assert done.returncode == 0, done.stderr
    assert sorted(_paths(out)) == [f"{i:04d}.jpg" for i in range(PHOTOS)]
    assert _paths(errors) == []


CREDENTIAL_PROCESS = """#!/bin/sh
printf '{"Version": 1, "AccessKeyId": "testing", "SecretAccessKey": "testing", \
"SessionToken": "tok-%s", "Expiration": "%s"}' "$(date +%s.%N)" \
"$(date -u -d '+60 seconds' +%Y-%m-%dT%H:%M:%SZ)"
"""


def test_credentials_that_refresh_are_taken_again_before_they_expire(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A profile's credential_process gives session tokens that the store takes for
    0.5 s, in a job that reads for longer (2 reads in flight): botocore runs it again as
    they near their end, and every reader (libcurl's, obstore's, botocore's listings)
    asks again every CREDENTIALS_CHECK_S (here 0.05 s): no request is refused."""
    process = tmp_path / "credentials.sh"
    process.write_text(CREDENTIAL_PROCESS)
    process.chmod(0o755)
    config = tmp_path / "config"
    config.write_text(f"[profile short]\ncredential_process = {process}\nregion = us-east-1\n")
    out = tmp_path / "out.csv"
    args = ["infer", str(tiny_model), "s3://outage/set/", "-o", str(out), "--no-progress"]
    proxy = _Outage(s3.url, answers=PHOTOS, mode="503", token_life=0.5)
    env = os.environ | s3_env(proxy.url) | {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "short"}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(key)
    try:
        done = cnnbench_fast_stores(
            [*args, "--io-threads", "2"], env, timeout=300, credentials_check_s=0.05
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    # asked again every 300 s, 179 requests were refused (libcurl's, read again by obstore)
    assert proxy.expired == 0 and len(proxy.tokens) > 3
    assert sorted(_paths(out)) == [f"{i:04d}.jpg" for i in range(PHOTOS)]
    assert _paths(errors_of(out)) == []


def test_objects_denied_or_missing_are_error_rows_and_the_job_finishes(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A 403 or a 404 is the store's answer about that object, not a store gone: more
    of them in a row than stop a job are each an error row, and the job finishes."""
    client = s3.client()
    denied = [f"set/{i:04d}.jpg" for i in range(20, 40)]
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": [f"arn:aws:s3:::outage/{key}" for key in denied],
    }
    client.put_bucket_policy(
        Bucket="outage", Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    urls = [f"s3://outage/set/{i:04d}.jpg" for i in range(60)]
    missing = [f"s3://outage/gone/{i:04d}.jpg" for i in range(20)]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(urls[:50] + missing + urls[50:]) + "\n")
    out = tmp_path / "out.csv"
    try:
        done = _cnnbench(["infer", str(tiny_model), f"@{listed}", "-o", str(out)], s3.url)
    finally:
        client.delete_bucket_policy(Bucket="outage")
    assert done.returncode == 0, done.stderr
    assert len(denied) > fetch.STOP_AFTER and len(missing) > fetch.STOP_AFTER
    with open(tmp_path / "out.errors.csv", newline="", encoding="utf-8") as f:
        errors = {row["path"]: row["error"] for row in csv.DictReader(f)}
    assert sorted(errors) == sorted([f"s3://outage/{key}" for key in denied] + missing)
    assert all(errors[f"s3://outage/{key}"].startswith("access denied") for key in denied)
    assert all(errors[url] == f"not found: {url}" for url in missing)
    assert len(_paths(out)) == 40


class _Dead(http.server.BaseHTTPRequestHandler):
    """An S3 server of one photo: keys with 'dead' in them are answered 500."""

    protocol_version = "HTTP/1.1"
    photo = b""

    def do_GET(self) -> None:
        dead = "dead" in self.path
        body = UNANSWERED if dead else self.photo
        self.send_response(500 if dead else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _dead_store(photo: bytes, monkeypatch: pytest.MonkeyPatch) -> http.server.HTTPServer:
    """A `_Dead` server of `photo` on 127.0.0.1, this process's S3 endpoint, retries
    10 ms apart; the caller shuts it down."""
    _Dead.photo = photo
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dead)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for key, value in s3_env(f"http://127.0.0.1:{server.server_address[1]}").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(stores, "BACKOFF_S", 0.01)
    return server


def test_reads_without_an_answer_are_held_until_one_after_them_is_answered(
    photo_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch_ahead, in order: fewer unanswered reads than stop a job, with answered
    ones after them, are error rows as before (a passing failure); STOP_AFTER of them in
    a row stop it with one line, and no item from the first of them on is handed on."""
    server = _dead_store(photo_jpeg, monkeypatch)
    stop = fetch.STOP_AFTER
    dead = [f"dead{i}.jpg" for i in range(stop)]
    names = ["a.jpg", *dead[:-1], "b.jpg", "c.jpg"]
    try:
        got = list(fetch.fetch_ahead([Item(f"s3://bkt/{n}", n) for n in names], 8))
        handed: list[str] = []
        with pytest.raises(stores.StoreDown) as down:
            for item in fetch.fetch_ahead([Item(f"s3://bkt/{n}", n) for n in [*dead, "b.jpg"]], 8):
                handed.append(item.name)
    finally:
        server.shutdown()
    assert [i.name for i in got] == names
    assert [i.name for i in got if i.error is None] == ["a.jpg", "b.jpg", "c.jpg"]
    why = "HTTP 500: ServiceUnavailable: down (after 3 tries)"
    assert got[1].error == f"cannot read s3://bkt/dead0.jpg: {why}"
    assert handed == []
    assert str(down.value) == (
        f"the store stopped answering: {stop} reads in a row failed "
        f"(cannot read s3://bkt/dead{stop - 1}.jpg: {why})"
    )


def _big_shard(s3: S3Server, folder: Path) -> list[str]:
    """A shard of 150 noisy photos (about 145 KB each: more than the first 8 MB chunk
    of its stream) as s3://outage/shards/big.tar; its members' paths."""
    rng = np.random.default_rng(7)
    members = []
    for i in range(150):
        ok, data = cv2.imencode(".jpg", rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
        assert ok
        members.append((f"{i:04d}.jpg", data.tobytes()))
    shard = write_tar(folder / "big.tar", members)
    assert shard.stat().st_size > 18 << 20  # cut in half, a first chunk of 8 MB comes whole
    s3.client().put_object(Bucket="outage", Key="shards/big.tar", Body=shard.read_bytes())
    return [f"big.tar/{name}" for name, _ in members]


def test_a_shard_whose_store_dies_mid_stream_stops_the_job_and_resume_finishes_it(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """The store dies halfway through a shard's answer: the shard was one error row
    'shard unreadable' and the job exited 0 (its rows for members read before the cut
    stayed beside it). Now the stream is asked for again from where it was cut, finds
    no store, and the job stops with the outage line; the --resume reads the members
    after the cut, each member once, and no error row is left."""
    paths_of_members = _big_shard(s3, tmp_path)
    out = tmp_path / "out.csv"
    args = ["infer", str(tiny_model), "s3://outage/shards/big.tar", "-o", str(out)]
    args += ["--no-progress", "--batch-size", "4"]
    proxy = _Outage(s3.url, answers=PHOTOS, mode="cut")
    try:
        done = _cnnbench(args, proxy.url)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert_one_line_error(
        done.returncode, done.stderr, "the store stopped answering while",
        "s3://outage/shards/big.tar was read after", "rows so far are saved",
        "run the same command with --resume",
    )  # fmt: skip
    first = _paths(out)
    assert 0 < len(first) < len(paths_of_members), done.stderr
    assert _paths(errors_of(out)) == []

    done = _cnnbench([*args, "--resume"], s3.url)
    assert done.returncode == 0, done.stderr
    assert sorted(_paths(out)) == paths_of_members  # each once
    assert _paths(errors_of(out)) == []


def test_a_shard_stream_cut_once_goes_on_from_where_it_was_cut(
    tiny_model: Path, s3: S3Server, tmp_path: Path
) -> None:
    """A shard's answer cut once, the store answering after: it was the shard's error
    row (the job exited 0, its members after the cut unread, for a --resume to read
    beside the row); now the rest of the stream is asked for and every member read."""
    paths_of_members = _big_shard(s3, tmp_path)
    out = tmp_path / "out.csv"
    args = ["infer", str(tiny_model), "s3://outage/shards/big.tar", "-o", str(out)]
    proxy = _Outage(s3.url, answers=PHOTOS, mode="cut once")
    try:
        done = _cnnbench([*args, "--no-progress"], proxy.url)
    finally:
        proxy.close()
    assert proxy.cuts == 1
    assert done.returncode == 0, done.stderr
    assert sorted(_paths(out)) == paths_of_members
    assert _paths(errors_of(out)) == []


def test_decode_threads_reading_tell_a_dead_object_from_a_dead_store(
    photo_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch.DecodeReads (--io-threads 0), 4 threads: objects the store answers 500 to
    among ones it answers are each their error (NoAnswer) once reads started after them
    are answered; only unanswered reads, STOP_AFTER in a row, stop the job."""
    server = _dead_store(photo_jpeg, monkeypatch)

    def read_all(names: list[str]) -> list[str]:
        reads = fetch.DecodeReads()

        def one(name: str) -> str:
            try:
                return "ok" if reads(Item(f"s3://bkt/{name}", name)) == photo_jpeg else "?"
            except stores.NoAnswer:
                return "error row"

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, names))

    try:
        dead = ["dead0.jpg", "dead1.jpg"] * 2  # as many as threads: none left to tell
        names = [f"{i}.jpg" for i in range(20)] + dead + [f"{i}.jpg" for i in range(20, 40)]
        mixed = read_all(names)
        with pytest.raises(stores.StoreDown) as down:
            read_all([f"dead{i}.jpg" for i in range(40)])
    finally:
        server.shutdown()
    assert mixed == ["ok"] * 20 + ["error row"] * 4 + ["ok"] * 20
    assert str(down.value).startswith(
        f"the store stopped answering: {fetch.STOP_AFTER} reads in a row failed (cannot read "
    )
