"""Inputs by URL and tar shards, against real servers on 127.0.0.1: moto's S3 server
(a process of its own) and Python's http.server. Nothing resolves a cloud host: every
S3 client gets the endpoint from the environment the test sets (AWS_ENDPOINT_URL)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import gzip
import http.server
import io
import json
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    S3Server,
    assert_one_line_error,
    cnnbench_fast_stores,
    free_port,
    run,
    write_tar,
)
from helpers import s3_env as s3_environment

from cnnbench.infer.engines.job import BUSY_IDLE, InferConfig
from cnnbench.infer.engines.local import _Head
from cnnbench.infer.sources import prefixes, s3_multi, shards, stores
from cnnbench.infer.sources.fetch import fetch_ahead, read_item
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import scan_inputs
from cnnbench.infer.sources.s3_multi import S3Multi


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "server.log")
    yield server
    server.stop()


@pytest.fixture()
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _infer(model: Path, out: Path, *inputs: str, extra: tuple[str, ...] = ()) -> str:
    code, output = run(["infer", str(model), *inputs, "-o", str(out), "--no-progress", *extra])
    assert code == 0, output
    return output


def test_a_prefix_gives_the_rows_of_the_same_folder(
    tiny_model: Path, photos: Path, s3_env: S3Server, tmp_path: Path
) -> None:
    s3_env.upload("photos", photos, "set/")
    local = _infer(
        tiny_model,
        tmp_path / "local.csv",
        str(photos),
        extra=("--summary", str(tmp_path / "l.json")),
    )
    remote = _infer(
        tiny_model,
        tmp_path / "s3.csv",
        "s3://photos/set/",
        extra=("--summary", str(tmp_path / "r.json")),
    )
    assert (tmp_path / "s3.csv").read_text() == (tmp_path / "local.csv").read_text()
    names = [r["path"] for r in _rows(tmp_path / "s3.csv")]
    assert names == sorted(names)  # key order, as the folder scan orders paths
    assert names.index("a.jpg") < names.index("a/x.jpg")
    summaries = [json.loads((tmp_path / f).read_text()) for f in ("l.json", "r.json")]
    assert summaries[1]["labelled"] == 7  # class-folder accuracy from the prefix
    for key in ("accuracy", "per_class", "skipped_by_extension", "images"):
        assert summaries[1][key] == summaries[0][key], key
    assert "accuracy" in remote and "accuracy" in local
    # a prefix without the trailing '/' is the same folder; several inputs: URL-named rows
    _infer(tiny_model, tmp_path / "noslash.csv", "s3://photos/set")
    assert (tmp_path / "noslash.csv").read_text() == (tmp_path / "local.csv").read_text()
    _infer(tiny_model, tmp_path / "two.csv", "s3://photos/set/cat/", "s3://photos/set/top.jpg")
    two = [r["path"] for r in _rows(tmp_path / "two.csv")]
    assert two == [f"s3://photos/set/cat/{i}.jpg" for i in range(4)] + ["s3://photos/set/top.jpg"]


def test_a_prefix_is_listed_and_read_while_the_session_is_built(
    tiny_model: Path, photos: Path, s3_env: S3Server, tmp_path: Path
) -> None:
    """The head of a run over a prefix holds its first objects' bytes and whether the
    prefix has class folders before the session is there."""
    s3_env.upload("photos", photos, "head/")
    cfg = InferConfig(str(tiny_model), ("s3://photos/head/",), str(tmp_path / "p.csv"))
    with ThreadPoolExecutor(1) as pool:
        head = _Head.start(cfg, cfg.inputs, pool)
        assert head is not None and head.fetched is not None
        items = [item for batch, _, _ in head.submitted for item in batch]
        assert items and all(item.data is not None for item in items)
        assert items[0].data == (photos / items[0].name).read_bytes()
        assert head.classes.result() == (True, None)  # cat/ and dog/, the model's labels
        head.close()


def test_listing_streams_pages_in_key_order(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = s3_env.client()
    client.create_bucket(Bucket="many")
    keys = [f"p/{i % 7}/{i:05d}.jpg" for i in range(2100)]  # three pages of 1,000
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket="many", Key=k, Body=b""), keys))
    client.put_object(Bucket="many", Key="p/", Body=b"")  # a folder marker: not a file
    entries = prefixes.list_prefix("s3://many/p/")
    assert not isinstance(entries, list)
    names = [e.name for e in entries]
    assert names == sorted(k.removeprefix("p/") for k in keys)
    assert prefixes.has_subprefix("s3://many/p/", {"3", "x"})
    assert not prefixes.has_subprefix("s3://many/p/", {"x", "y"})
    # Past a first page of 3 (the folder marker, 0/ and 1/), only names sorting after 1/
    # are probed: 0x/ would have been in it
    asked: list[str] = []
    pager = prefixes._pager

    def counted(url: str) -> tuple[Callable, str, str]:
        page_of, base, prefix = pager(url)
        return lambda p, *rest: asked.append(p) or page_of(p, *rest), base, prefix

    monkeypatch.setattr(prefixes, "_pager", counted)
    assert not prefixes.has_subprefix("s3://many/p/", {"0x"}, page_keys=3)
    assert asked == ["p/"]
    assert prefixes.has_subprefix("s3://many/p/", {"0x", "5"}, page_keys=3)
    assert not prefixes.has_subprefix("s3://many/p/", {"9"}, page_keys=3)
    assert asked == ["p/", "p/", "p/5/", "p/", "p/9/"]


def test_object_access_denied_is_an_error_row(
    tiny_model: Path, photos: Path, s3_env: S3Server, tmp_path: Path
) -> None:
    client = s3_env.client()
    s3_env.upload("guarded", photos)
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::guarded/cat/1.jpg",
    }
    policy = {"Version": "2012-10-17", "Statement": [deny]}
    client.put_bucket_policy(Bucket="guarded", Policy=json.dumps(policy))
    _infer(tiny_model, tmp_path / "out.csv", "s3://guarded/")
    errors = _rows(tmp_path / "out.errors.csv")
    assert [e["path"] for e in errors] == ["cat/1.jpg"]
    assert "access denied" in errors[0]["error"]
    assert len(_rows(tmp_path / "out.csv")) == 10


def test_store_failures_are_one_line(
    tiny_model: Path, s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path / "out.csv")
    code, output = run(["infer", str(tiny_model), "s3://no-such-bucket/x/", "-o", out])
    assert_one_line_error(code, output, "no-such-bucket")
    code, output = run(["infer", str(tiny_model), "s3://", "-o", out])
    assert_one_line_error(code, output, "s3:// names no bucket", "s3://BUCKET/PREFIX/")
    listed = tmp_path / "list.txt"
    listed.write_text("s3://\n")
    code, output = run(["infer", str(tiny_model), f"@{listed}", "-o", out])
    assert_one_line_error(code, output, "s3:// names no bucket")
    assert not os.path.exists(out)
    client = s3_env.client()
    client.create_bucket(Bucket="typos")
    client.put_object(Bucket="typos", Key="set/a.jpg", Body=b"")
    code, output = run(["infer", str(tiny_model), "s3://typos/sett/", "-o", out])
    assert_one_line_error(code, output, "not found: s3://typos/sett/", "check the name")
    code, output = run(["infer", str(tiny_model), "s3://typos/set/*.jpg", "-o", out])
    assert_one_line_error(code, output, "not expanded", "name the prefix s3://typos/set/ ")
    code, output = run(["infer", str(tiny_model), "s3://typos", "s3://typos/set/", "-o", out])
    assert_one_line_error(code, output, "input s3://typos/set/ is inside input s3://typos/")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, output = run(["infer", str(tiny_model), "s3://photos/set/", "-o", out])
    assert_one_line_error(code, output, "no credentials", "AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    code, output = run(["infer", str(tiny_model), "s3://photos/set/", "-o", out])
    assert_one_line_error(code, output, "cannot connect", "AWS_ENDPOINT_URL")


def test_wrong_credentials_are_one_line(
    tiny_model: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server(tmp_path / "auth.log", auth_after=2)  # creates the bucket, one object
    try:
        client = server.client()
        client.create_bucket(Bucket="locked")
        client.put_object(Bucket="locked", Key="a.jpg", Body=b"")
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        code, output = run(
            ["infer", str(tiny_model), "s3://locked/", "-o", str(tmp_path / "o.csv")]
        )
        assert_one_line_error(code, output, "access denied", "s3://locked/")
    finally:
        server.stop()


def test_s3_without_obstore_names_the_extra(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An s3 extra installed before obstore joined it: one line, not an error per row."""
    for key, value in s3_environment(f"http://127.0.0.1:{free_port()}").items():
        monkeypatch.setenv(key, value)  # were the check missed: nothing to reach but loopback
    monkeypatch.setitem(sys.modules, "obstore", None)  # what find_spec reads: not installed
    stores._installed.cache_clear()
    try:
        code, output = run(["infer", str(tiny_model), "s3://b/x/", "-o", str(tmp_path / "o.csv")])
    finally:
        stores._installed.cache_clear()
    assert_one_line_error(code, output, "cnnbench[s3]", "obstore")


def _members(photos: Path) -> list[tuple[str, bytes]]:
    """WebDataset layout: key.jpg and key.cls per sample."""
    out = []
    for i, path in enumerate(sorted(photos.rglob("*.jpg"))):
        out += [(f"{i:06d}.jpg", path.read_bytes()), (f"{i:06d}.cls", b"0")]
    return out


def test_a_shard_is_a_folder_of_its_members(
    tiny_model: Path, photos: Path, tmp_path: Path, s3_env: S3Server
) -> None:
    members = _members(photos)
    half = len(members) // 2
    write_tar(tmp_path / "shard-0.tar", members[:half])
    write_tar(tmp_path / "shard-1.tar.gz", members[half:])
    (tmp_path / "plain").mkdir()
    for name, data in members:
        (tmp_path / "plain" / name).write_bytes(data)
    _infer(tiny_model, tmp_path / "plain.csv", str(tmp_path / "plain"))
    plain = {r["path"]: r["label"] for r in _rows(tmp_path / "plain.csv")}
    _infer(tiny_model, tmp_path / "one.csv", str(tmp_path / "shard-0.tar"))
    rows = _rows(tmp_path / "one.csv")
    assert [r["path"] for r in rows] == [f"shard-0.tar/{n}" for n, _ in members[:half:2]]
    _infer(
        tiny_model,
        tmp_path / "both.csv",
        str(tmp_path / "shard-0.tar"),
        str(tmp_path / "shard-1.tar.gz"),
    )
    both = {r["path"].rsplit("/", 1)[1]: r["label"] for r in _rows(tmp_path / "both.csv")}
    assert both == plain
    client = s3_env.client()
    client.create_bucket(Bucket="shards")
    for i in range(3):
        write_tar(tmp_path / f"s-{i}.tar", members[i::3])
        client.upload_file(str(tmp_path / f"s-{i}.tar"), "shards", f"train/s-{i}.tar")
    code, output = run(
        ["infer", str(tiny_model), "s3://shards/train/", "-o", str(tmp_path / "x.csv")]
    )
    assert_one_line_error(code, output, "3 .tar", "name the shards", "{000000..000099}.tar")
    for pattern in (str(tmp_path / "s-{0..2}.tar"), "s3://shards/train/s-{0..2}.tar"):
        out = _infer(
            tiny_model, tmp_path / "p.csv", pattern, extra=("--summary", str(tmp_path / "p.json"))
        )
        got = {r["path"].rsplit("/", 1)[1]: r["label"] for r in _rows(tmp_path / "p.csv")}
        assert got == plain, out
        assert {r["path"].split("/")[0] for r in _rows(tmp_path / "p.csv")} == {
            f"s-{i}.tar" for i in range(3)
        }
        assert json.loads((tmp_path / "p.json").read_text())["skipped_by_extension"] == {".cls": 11}
        # another process (a Ray worker) reads a member alone, by its range in the shard
        for item in scan_inputs((pattern,), (".jpg",)):
            assert item.offset is not None and item.data is not None
            assert read_item(dataclasses.replace(item, data=None)) == item.data
    gz = next(scan_inputs((str(tmp_path / "shard-1.tar.gz"),), (".jpg",)))
    assert gz.offset is None and gz.data is not None  # compressed: read while listing only


@pytest.mark.parametrize("global_header", [False, True], ids=["scanned", "by-tarfile"])
def test_what_is_no_file_in_a_shard_is_an_error_row(
    tiny_model: Path, photos: Path, tmp_path: Path, global_header: bool
) -> None:
    """Links, a FIFO and a name met twice (which WebDataset refuses too) were passed
    over without a word, or gave two rows one path. A global pax header hands the
    shard to tarfile's reader, which must say the same."""
    (name, photo), *_ = _members(photos)
    shard = tmp_path / "odd.tar"
    pax = {"comment": "made by a test"} if global_header else {}
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tar:
        for member, kind in [
            (name, tarfile.REGTYPE),
            ("sym.jpg", tarfile.SYMTYPE),
            ("hard.jpg", tarfile.LNKTYPE),
            ("pipe.jpg", tarfile.FIFOTYPE),
            ("folder.jpg", tarfile.DIRTYPE),
            (name, tarfile.REGTYPE),
        ]:
            info = tarfile.TarInfo(member)
            info.type, info.linkname = (
                kind,
                name if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else "",
            )
            info.size = len(photo) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(photo) if kind == tarfile.REGTYPE else None)
    _infer(tiny_model, tmp_path / "o.csv", str(shard))
    assert [r["path"] for r in _rows(tmp_path / "o.csv")] == [f"odd.tar/{name}"]
    errors = {e["path"]: e["error"] for e in _rows(tmp_path / "o.errors.csv")}
    again = f"{name} (2)"  # a path of its own (tests/test_shard_inputs.py)
    assert list(errors) == [f"odd.tar/{n}" for n in ("sym.jpg", "hard.jpg", "pipe.jpg", again)]
    assert errors["odd.tar/sym.jpg"].startswith("a symbolic link in the shard, not a file")
    assert errors["odd.tar/hard.jpg"].startswith("a hard link in the shard")
    assert errors["odd.tar/pipe.jpg"].startswith("a named pipe (FIFO) in the shard")
    assert errors[f"odd.tar/{again}"].startswith(f"a member named {name} came before it")


def test_a_broken_shard_is_an_error_row(tiny_model: Path, photos: Path, tmp_path: Path) -> None:
    members = _members(photos)[:8:2]  # four jpgs
    whole = write_tar(tmp_path / "whole.tar", members).read_bytes()
    # cut inside the first member's data; cut exactly after the second member
    (tmp_path / "b-0.tar").write_bytes(whole[: 512 + 1000])
    second_end = 512 + -(-len(members[0][1]) // 512) * 512
    second_end += 512 + -(-len(members[1][1]) // 512) * 512
    (tmp_path / "b-1.tar").write_bytes(whole[:second_end])
    corrupt = [(n, b"\xff\xd8 not a jpeg" if i == 1 else d) for i, (n, d) in enumerate(members)]
    write_tar(tmp_path / "b-2.tar", corrupt)
    gz = write_tar(tmp_path / "g.tar.gz", members).read_bytes()
    (tmp_path / "b-3.tar").write_bytes(b"")  # empty
    broken_header = bytearray(whole)
    broken_header[second_end : second_end + 100] = b"\x07" * 100
    (tmp_path / "b-4.tar").write_bytes(bytes(broken_header))
    (tmp_path / "b-3.tar.gz").write_bytes(gz[: len(gz) // 2])
    out = _infer(
        tiny_model, tmp_path / "o.csv", str(tmp_path / "b-{0..5}.tar"), str(tmp_path / "b-3.tar.gz")
    )
    assert "Traceback" not in out
    errors = {
        e["path"].removeprefix(f"{tmp_path}/"): e["error"] for e in _rows(tmp_path / "o.errors.csv")
    }
    names = {f"b-{i}.tar" for i in (0, 1, 3, 4, 5)} | {"b-2.tar/000001.jpg", "b-3.tar.gz"}
    assert set(errors) == names, errors
    assert "ends early" in errors["b-0.tar"] and "after 0 members" not in errors["b-0.tar"]
    assert "end-of-archive blocks are missing" in errors["b-1.tar"]
    assert "after 2 members (last: 000001.jpg)" in errors["b-1.tar"]
    assert "garbled member header" in errors["b-4.tar"]
    assert "ends early" in errors["b-3.tar.gz"]
    assert "not found" in errors["b-5.tar"]
    rows = {r["path"].removeprefix(f"{tmp_path}/") for r in _rows(tmp_path / "o.csv")}
    assert {"b-1.tar/000000.jpg", "b-1.tar/000001.jpg", "b-2.tar/000000.jpg"} <= rows
    assert len([p for p in rows if p.startswith("b-2.tar/")]) == 3


def test_a_broken_shard_reads_the_same_from_disk_and_by_s3(
    photos: Path, tmp_path: Path, s3_env: S3Server
) -> None:
    """Local shards are read by offset ("r:"), shards by URL streamed (obstore): the same
    members and the same error row for each way a shard breaks."""
    members = _members(photos)[:8:2]
    whole = write_tar(tmp_path / "whole.tar", members).read_bytes()
    first_end = 512 + -(-len(members[0][1]) // 512) * 512
    garbled = bytearray(whole)
    garbled[first_end : first_end + 100] = b"\x07" * 100
    broken = {
        "whole.tar": whole,
        "in-data.tar": whole[: 512 + 1000],
        "between.tar": whole[:first_end],
        "garbled.tar": bytes(garbled),
        "empty.tar": b"",
        "whole.tar.gz": gzip.compress(whole),  # gzip reads the stream in its own reads
        "cut.tar.gz": gzip.compress(whole)[:3000],
    }
    client = s3_env.client()
    client.create_bucket(Bucket="broken")
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
        client.put_object(Bucket="broken", Key=name, Body=data)

    def read(shard: str) -> list[tuple[str, str | None, bytes | None]]:
        return [(i.name, i.error, i.data) for i in shards.members(shard, "", (".jpg",))]

    for name in broken:
        local, remote = read(str(tmp_path / name)), read(f"s3://broken/{name}")
        assert local == remote, name
        assert (local[-1][1] is None) == name.startswith("whole."), local[-1]
    assert [n for n, _, _ in read(str(tmp_path / "whole.tar"))] == [n for n, _ in members]


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Serves /good.jpg; /flaky.jpg after two 503s; /dead.jpg always 500; /cut.jpg whole
    after one answer cut short (the connection closed before its Content-Length);
    /cut-always.jpg always cut; /whole.tar, and /cut.tar cut in its middle; 404 else."""

    photo = b""
    shard = b""
    gets: dict[str, int] = {}  # noqa: RUF012 (per server, reset by the test)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        name = "/" + self.path.rsplit("/", 1)[-1]  # /bucket/flaky.jpg as S3 asks for it
        n = self.gets[name] = self.gets.get(name, 0) + (not head)
        status = {"/good.jpg": 200, "/flaky.jpg": 200 if head or n > 2 else 503, "/dead.jpg": 500}
        status |= {"/cut.jpg": 200, "/cut-always.jpg": 200, "/whole.tar": 200, "/cut.tar": 200}
        code = status.get(name, 404)
        self.send_response(code)
        body = (self.shard if name.endswith(".tar") else self.photo) if code == 200 else b"no"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = name in ("/cut-always.jpg", "/cut.tar") or (name == "/cut.jpg" and n == 1)
        if not head:
            self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_https_files_and_transient_errors(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    _Flaky.photo, _Flaky.gets = photo_jpeg, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        _infer(tiny_model, tmp_path / "one.csv", f"{base}/good.jpg")
        assert [r["path"] for r in _rows(tmp_path / "one.csv")] == [f"{base}/good.jpg"]
        names = ("good.jpg", "flaky.jpg", "dead.jpg", "missing.jpg", "cut.jpg", "cut-always.jpg")
        (tmp_path / "list.txt").write_text("".join(f"{base}/{n}\n" for n in names))
        _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
        assert [r["path"] for r in _rows(tmp_path / "o.csv")] == [
            f"{base}/good.jpg",
            f"{base}/flaky.jpg",
            f"{base}/cut.jpg",  # an answer cut short is tried again, as a 5xx is
        ]
        errors = {e["path"]: e["error"] for e in _rows(tmp_path / "o.errors.csv")}
        assert "HTTP 500" in errors[f"{base}/dead.jpg"] and "3 tries" in errors[f"{base}/dead.jpg"]
        cut = errors[f"{base}/cut-always.jpg"]  # no 'HTTP 400': aiohttp's, no server's
        assert "the answer was cut short" in cut and "3 tries" in cut and "HTTP" not in cut, cut
        assert _Flaky.gets["/cut-always.jpg"] == 3
        # a shard by URL cut short: its error row (aiohttp's error was a traceback)
        write_tar(tmp_path / "s.tar", [(f"{k}.jpg", photo_jpeg) for k in range(9)])
        _Flaky.shard = (tmp_path / "s.tar").read_bytes()
        _infer(tiny_model, tmp_path / "t.csv", f"{base}/cut.tar", f"{base}/whole.tar")
        rows = [r["path"] for r in _rows(tmp_path / "t.csv")]
        assert rows[-9:] == [f"{base}/whole.tar/{k}.jpg" for k in range(9)]
        # the shard is one streamed GET: members whole before the cut may come first
        assert rows[:-9] == [f"{base}/cut.tar/{k}.jpg" for k in range(len(rows) - 9)]
        assert len(rows) - 9 <= 4  # the cut is in the fifth member
        shard = {e["path"]: e["error"] for e in _rows(tmp_path / "t.errors.csv")}
        assert list(shard) == [f"{base}/cut.tar"], shard
        assert "the answer was cut short" in shard[f"{base}/cut.tar"]
        assert "not found" in errors[f"{base}/missing.jpg"]
        assert _Flaky.gets["/flaky.jpg"] == 3
        code, output = run(
            ["infer", str(tiny_model), f"{base}/missing.jpg", "-o", str(tmp_path / "x.csv")]
        )
        assert_one_line_error(code, output, "not found", "missing.jpg")
    finally:
        server.shutdown()


_SLOW_S = 0.03


class _Slow(http.server.BaseHTTPRequestHandler):
    """Serves the photo at any path, _SLOW_S after each request."""

    photo = b""

    def do_GET(self) -> None:
        time.sleep(_SLOW_S)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.photo)))
        self.end_headers()
        self.wfile.write(self.photo)

    def log_message(self, *args: object) -> None:
        pass


def test_reads_that_hold_the_batches_are_named(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    """One GET in flight, 30 ms each, for photos that decode in a millisecond: the summary
    says the inputs held the batches and names --io-threads."""
    _Slow.photo = photo_jpeg
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "list.txt").write_text("".join(f"{base}/{i}.jpg\n" for i in range(40)))

    def infer(io_threads: int) -> str:
        return _infer(
            tiny_model,
            tmp_path / "o.csv",
            f"@{tmp_path / 'list.txt'}",
            extra=(
                "--io-threads",
                str(io_threads),
                "--batch-size",
                "4",
                "--summary",
                str(tmp_path / "s.json"),
            ),
        )

    try:
        output = infer(1)  # 16 files read ahead: the run waited for reads all along
        doc = json.loads((tmp_path / "s.json").read_text())
        short = infer(4)  # 64 ahead: the whole run is shorter than its read-ahead
        short_doc = json.loads((tmp_path / "s.json").read_text())
    finally:
        server.shutdown()
    assert doc["images"] == 40 and doc["bound_by"] == "inputs", doc["stage_seconds"]
    if doc["cores_idle"] is None or doc["cores_idle"] >= BUSY_IDLE:  # waiting for the server
        assert "bound by the inputs (listing and reads); more reads in flight may help " in output
        assert "(--io-threads, now 1)" in output
    else:  # other work kept this machine's cores busy meanwhile: the line says that instead
        assert "its cores were busy" in output and "--io-threads" not in output, output
    assert "--io-threads" not in short, short
    if short_doc["bound_by"] == "inputs":
        assert "bound by the inputs (listing and reads); mostly its start: " in short, short
        assert "shorter than its read-ahead (64 files)" in short
    else:  # decoding starved by other work on this machine's cores, and only then: alone,
        # this 0.5 s run of 30 ms GETs leaves its cores mostly idle
        assert short_doc["cores_idle"] is not None and short_doc["cores_idle"] < 0.5, short


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux's CPU affinity")
def test_reads_held_by_busy_cores_are_said_to_wait_for_cpu(
    tiny_model: Path, tmp_path: Path, photo_jpeg: bytes
) -> None:
    """The same slow reads, the job on one core that a busy loop keeps from ever being
    idle: the line says the reads waited for CPU, not to put more in flight."""
    _Slow.photo = photo_jpeg
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    (tmp_path / "list.txt").write_text("".join(f"{base}/{i}.jpg\n" for i in range(40)))
    core = {min(os.sched_getaffinity(0))}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(busy.pid, core)
        args = [
            "infer",
            str(tiny_model),
            f"@{tmp_path / 'list.txt'}",
            "-o",
            str(tmp_path / "o.csv"),
        ]
        args += ["--io-threads", "1", "--batch-size", "4", "--summary", str(tmp_path / "s.json")]
        done = subprocess.run(
            [sys.executable, "-m", "cnnbench", *args, "--no-progress"],
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, core),
            timeout=120,
        )
    finally:
        busy.kill()
        busy.wait()
        server.shutdown()
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["bound_by"] == "inputs" and doc["cores_idle"] < 0.1, doc
    assert "its cores were busy (" in done.stderr and "likely waited for CPU" in done.stderr
    assert "--io-threads" not in done.stderr


def test_s3_gets_retry_transient_errors_then_say_one_line(
    photo_jpeg: bytes, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 GET path (obstore) against a server answering 503, 500 and 404."""
    _Flaky.photo, _Flaky.gets = photo_jpeg, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        assert stores.read_bytes("s3://bkt/good.jpg") == photo_jpeg
        assert stores.read_bytes("s3://bkt/flaky.jpg") == photo_jpeg
        assert _Flaky.gets["/flaky.jpg"] == 3  # two 503s, then the object
        with pytest.raises(stores.StoreError) as dead:
            stores.read_bytes("s3://bkt/dead.jpg")
        assert str(dead.value) == (
            "cannot read s3://bkt/dead.jpg: HTTP 500: "
            "Server returned non-2xx status code: 500 Internal Server Error: no (after 3 tries)"
        )
        with pytest.raises(stores.StoreError, match=r"^not found: s3://bkt/missing.jpg$"):
            stores.read_bytes("s3://bkt/missing.jpg")
    finally:
        server.shutdown()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(stores.StoreError, match=r"^cannot connect for s3://bkt/a.jpg: .*ENDPOINT"):
        stores.read_bytes("s3://bkt/a.jpg")


def _fresh(function: Callable, *args: object) -> Any:
    """`function(*args)` in a new interpreter: libcurl's engine is not used in a process
    that has loaded TensorFlow (tests run before this one may have)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result(timeout=120)


def _fell_back(item: Item) -> Future:
    done: Future = Future()
    done.set_result([dataclasses.replace(item, error="fell back")])
    return done


def _multi_reads(names: list[str], awaited: bool = True) -> list[tuple[bytes | None, str | None]]:
    """What S3Multi reads of `names`; `awaited` False: nobody waits on the result (the
    GET thread gathers the answers), it is looked at once done."""
    assert s3_multi.available()
    multi = S3Multi(stores.store_settings(), 2, _fell_back)
    try:
        task = multi.submit([Item(f"s3://{n}", n) for n in names])
        if not awaited:
            assert wait([task], timeout=60).done == {task}
        got = task.result(timeout=60)
    finally:
        multi.close()
    return [(i.data, i.error) for i in got]


def test_s3_multi_reads_whole_objects_and_hands_the_rest_to_its_fallback(
    photo_jpeg: bytes, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libcurl's multi handle (one thread, signed by libcurl) reads whole objects; an
    HTTP error (a missing object, a missing bucket) goes to the fallback."""
    client = s3_env.client()
    client.create_bucket(Bucket="multi")
    client.put_object(Bucket="multi", Key="p/a.jpg", Body=photo_jpeg)
    client.put_object(Bucket="multi", Key="p/b.jpg", Body=b"b")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-token/+=")  # sent as x-amz-security-token
    names = ["multi/p/a.jpg", "multi/p/missing.jpg", "multi/p/b.jpg", "gone/a.jpg"]
    expected = [(photo_jpeg, None), (None, "fell back"), (b"b", None), (None, "fell back")]
    assert _fresh(_multi_reads, names) == expected
    assert _fresh(_multi_reads, names * 3, False) == expected * 3
    assert not s3_multi.reads("s3://multi/p q.jpg") and not s3_multi.reads("s3://multi//a.jpg")
    assert not s3_multi.reads("gs://multi/a.jpg")


def _both_listings(delimiter: str | None) -> list[tuple[tuple, tuple]]:
    """Every page of s3://pages/p/, 5 keys a page, through libcurl and botocore."""
    assert s3_multi.available()
    settings, client = stores.store_settings(), stores.s3_client()
    token, pages = None, []
    while True:
        page = s3_multi.list_page(settings, "pages", "p/", token, delimiter, 5)
        args = {"Bucket": "pages", "Prefix": "p/", "MaxKeys": 5, "Delimiter": delimiter or ""}
        answer = client.list_objects_v2(**args, **({"ContinuationToken": token} if token else {}))
        assert page is not None
        botocore = (
            [(o["Key"], o["Size"]) for o in answer.get("Contents", ())],
            [p["Prefix"] for p in answer.get("CommonPrefixes", ())],
        )
        pages.append(((page[0], page[1]), botocore))
        token = page[2]
        if token is None:
            assert s3_multi.list_page(settings, "no-such-bucket", "", None, None, 5) is None
            return pages


def test_s3_listing_pages_through_libcurl_are_botocore_s(s3_env: S3Server) -> None:
    """ListObjectsV2 pages read through libcurl (URL-encoded keys decoded, tokens
    passed on) are botocore's pages, key for key, with and without a delimiter."""
    client = s3_env.client()
    client.create_bucket(Bucket="pages")
    odd = ["b c.jpg", "x+y%.jpg", "é q+%.jpg", "a//d.jpg", "./e.jpg", "tab\t.jpg", "&<>.jpg"]
    keys = [f"p/{k}" for k in odd] + ["p/sub/z.jpg"] + [f"p/n{i:02d}.jpg" for i in range(12)]
    for key in keys:
        client.put_object(Bucket="pages", Key=key, Body=b"x")
    for delimiter in (None, "/"):
        pages = _fresh(_both_listings, delimiter)
        assert all(curl == botocore for curl, botocore in pages)
        listed = [k for (objects, _), _ in pages for k, _ in objects]
        assert listed == [k for k in sorted(keys) if delimiter is None or "/" not in k[2:]]


def test_fetch_ahead_s3_errors_are_read_bytes_errors(
    photo_jpeg: bytes, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetch_ahead's S3 GETs give every object its bytes or exactly the error row that
    stores.read_bytes gives (its retries of a 503, its one line for a 500 and a 404),
    in order, whatever engine read them."""
    _Flaky.photo, _Flaky.gets = photo_jpeg, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    names = ["good.jpg", "flaky.jpg", "dead.jpg", "missing.jpg", "good.jpg"]
    try:
        got = list(fetch_ahead([Item(f"s3://bkt/{n}", n) for n in names], 4))
    finally:
        server.shutdown()
    assert [i.name for i in got] == names
    assert got[0].data == got[1].data == got[4].data == photo_jpeg
    assert got[2].error == (
        "cannot read s3://bkt/dead.jpg: HTTP 500: "
        "Server returned non-2xx status code: 500 Internal Server Error: no (after 3 tries)"
    )
    assert got[3].error == "not found: s3://bkt/missing.jpg"


def test_s3_keys_object_store_cannot_name_are_read_exactly(s3_env: S3Server) -> None:
    """S3 keys with empty, '.' or '..' segments or control characters: each object's
    own bytes (object_store would refuse them or read 'lead.jpg' for '/lead.jpg')."""
    client = s3_env.client()
    client.create_bucket(Bucket="odd")
    keys = ["a//b.jpg", "/lead.jpg", "lead.jpg", "./c.jpg", "x/../y.jpg", "tab\t.jpg", "é q+%.jpg"]
    for key in keys:
        client.put_object(Bucket="odd", Key=key, Body=key.encode())
    for key in keys:
        assert stores.read_bytes(f"s3://odd/{key}") == key.encode(), key
    assert stores.read_range("s3://odd//lead.jpg", 1, 4) == b"lead"
    assert stores.read_range("s3://odd/lead.jpg", 1, 3) == b"ead"  # through obstore
    with pytest.raises(
        stores.StoreError, match=r"^no such bucket for s3://gone/a.jpg: NoSuchBucket"
    ):
        stores.read_bytes("s3://gone/a.jpg")


def test_fetch_ahead_keeps_order_and_bounds(tmp_path: Path) -> None:
    files = []
    for i in range(50):
        (tmp_path / f"{i}.bin").write_bytes(bytes([i]))
        files.append(Item(str(tmp_path / f"{i}.bin"), str(i)))
    assert list(fetch_ahead(files, 4)) == files  # local files pass through, in order

    def broken() -> Iterator[Item]:
        yield files[0]
        raise stores.InferError("listing failed")

    got = fetch_ahead(broken(), 4)
    assert next(got) == files[0]
    with pytest.raises(stores.InferError, match="listing failed"):
        next(got)


def test_brace_patterns_expand_as_webdataset_does() -> None:
    assert shards.expand("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert shards.expand("plain.tar") == ["plain.tar"]
    assert shards.is_shard("x.TAR") and shards.is_shard("x.tar.gz") and not shards.is_shard("x.jpg")
    assert os.path.basename("s-000.tar") == "s-000.tar"


def test_local_shards_are_read_in_the_loop_and_shards_by_url_ahead() -> None:
    """A local shard's members come with their bytes from the listing: no reads in
    flight (a thread listing ahead cost more than it saved); by URL, GETs in flight."""
    from cnnbench.infer.engines.job import IO_THREADS, InferConfig
    from cnnbench.infer.engines.local import io_threads_for

    def threads(*inputs: str) -> int:
        return io_threads_for(InferConfig(model="m.onnx", inputs=inputs, output="o.csv"))

    assert threads("s-{000..002}.tar", "t.tar.gz", "photos/") == 0
    assert threads("s-{000..002}.tar", "s3://b/s-{000..002}.tar") == IO_THREADS
    assert threads("s-000.tar", "@list.txt") == IO_THREADS


@pytest.mark.parametrize("most", [None, 5])
def test_tune_takes_a_prefix_as_it_takes_a_folder(
    tiny_model: Path,
    tiny_folder: Path,
    s3_env: S3Server,
    tmp_path: Path,
    most: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same images by URL: the same agreement and accuracy for every variant, the
    int8 one calibrated on the same objects; the plan names the prefix. With more images
    than tune takes (`most`), the same ones of each, spread over them, class folders kept
    (the job's own folder of millions was decoded whole, into memory)."""
    import cnnbench.bench.tune

    if most is not None:
        monkeypatch.setattr(cnnbench.bench.tune, "MAX_IMAGES", most)
    s3_env.upload("tune", tiny_folder, "set/")
    fast = ["--provider", "cpu", "--max-batch", "1", "--duration", "0.02", "--max-drop", "100"]
    figures = []
    for images in (str(tiny_folder), "s3://tune/set/"):
        plan = tmp_path / f"plan-{len(figures)}.json"
        code, out = run(["tune", str(tiny_model), "--images", images, "-o", str(plan), *fast])
        assert code == 0, out
        doc = json.loads(plan.read_text())
        assert doc["extra"]["images"] in (images, os.path.abspath(images))
        rows = doc["extra"]["candidates"]
        figures.append({r["variant"]: (r["agreement"], r["accuracy"]) for r in rows})
        assert f"{most or 8} images from {images}" in out, out
        assert (f"{most} of the 8 images in {images}, spread over them" in out) == bool(most)
        if most:  # the sample keeps the images' names, class folders included
            sample = cnnbench.bench.tune.sample_images(images, str(tmp_path / "s"), print)
            names = sorted(
                p.relative_to(sample.root).as_posix() for p in Path(sample.root).rglob("*.jpg")
            )
            every = sorted(
                p.relative_to(tiny_folder).as_posix() for p in tiny_folder.rglob("*.jpg")
            )
            assert len(names) == most and set(names) < set(every), names
            assert {n.split("/")[0] for n in names} == {"china", "flower"}, names
            shutil.rmtree(tmp_path / "s")
    assert figures[0] == figures[1] and "cpu int8" in figures[1], figures
    int8 = [(tmp_path / f"plan-{k}.int8.onnx").read_bytes() for k in (0, 1)]
    assert int8[0] == int8[1], "calibrated on the same images"
    code, output = run(["tune", str(tiny_model), "--images", "s3://tune/sett/", "-o", str(plan)])
    assert_one_line_error(code, output, "not found: s3://tune/sett/")
    code, output = run(["bench", "--model", str(tiny_model), "--images", "s3://tune/s.tar"])
    assert_one_line_error(code, output, "a tar shard is not read here")


def test_calibration_and_bench_images_take_prefixes_and_shards(
    photos: Path, s3_env: S3Server, tmp_path: Path
) -> None:
    from cnnbench.bench.extras import labelled_images
    from cnnbench.convert.keras_model import ModelFacts
    from cnnbench.convert.real_images import load_folder

    s3_env.upload("calib", photos, "set/")
    facts = ModelFacts(size=(16, 16), channels=3, num_classes=2, input_dtype="uint8")
    local, names = load_folder(str(photos), facts, 5, "--calibration")
    # spread over the 11 images, both classes: the first 5 held no dog
    assert names == ["a-b/x.jpg", "a/x.jpg", "cat/2.jpg", "dog/1.jpg", "top.jpg"], names
    remote, remote_names = load_folder("s3://calib/set/", facts, 5, "--calibration")
    assert np.array_equal(remote, local) and remote_names == names
    write_tar(
        tmp_path / "c.tar",
        [
            (p.relative_to(photos).as_posix(), p.read_bytes())
            for p in sorted(photos.rglob("*.jpg"), key=lambda p: p.relative_to(photos).as_posix())
        ],
    )
    sharded, shard_names = load_folder(str(tmp_path / "c.tar"), facts, 5, "--calibration")
    assert np.array_equal(sharded, local) and shard_names == [f"c.tar/{n}" for n in names]
    truths = [i.truth for i in labelled_images(str(photos))]
    assert [i.truth for i in labelled_images("s3://calib/set")] == truths
    from cnnbench.convert.errors import ConvertError

    with pytest.raises(ConvertError, match="no-such-bucket"):
        load_folder("s3://no-such-bucket/x/", facts, 5, "--calibration")
    # an unreadable file is left out, and said so: it was left out without a word
    shutil.copytree(photos, tmp_path / "some-broken")
    (tmp_path / "some-broken" / "cat" / "0-broken.jpg").write_bytes(b"\xff\xd8 cut short")
    lines: list[str] = []
    images, used = load_folder(
        str(tmp_path / "some-broken"), facts, 20, "--calibration", report=lines.append
    )
    assert len(images) == 11 and "cat/0-broken.jpg" not in used
    (line,) = lines
    assert line.startswith(f"--calibration {tmp_path / 'some-broken'}: 1 of 12 files unreadable"), (
        line
    )
    assert "(the first: cat/0-broken.jpg: " in line and line.endswith("; 11 images used"), line


def _open_files(soft: int, hard: int) -> Callable[[], None]:
    """For a child process: at most `soft` open files, raisable to `hard` (ulimit -n)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_reads_in_flight_fit_the_open_files_limit(
    tiny_model: Path, photo_jpeg: bytes, s3: S3Server, tmp_path: Path
) -> None:
    """--io-threads 600 under `ulimit -Sn 256`: 600 connections at once. The run raises
    its soft limit as far as the hard one allows (half the files were error rows that
    blamed the endpoint); where the hard limit is too low, one line says so."""
    s3.client().create_bucket(Bucket="fdlimit")
    for i in range(300):
        s3.client().put_object(Bucket="fdlimit", Key=f"p/{i:04d}.jpg", Body=photo_jpeg)
    out = tmp_path / "p.csv"
    args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), "s3://fdlimit/p/"]
    args += ["-o", str(out), "--no-progress", "--io-threads", "600"]
    env = os.environ | s3.env
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, preexec_fn=_open_files(256, 4096)
    )
    assert done.returncode == 0, done.stderr
    assert len(_rows(out)) == 300 and not _rows(tmp_path / "p.errors.csv")
    out.unlink()
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, preexec_fn=_open_files(256, 256)
    )
    assert_one_line_error(done.returncode, done.stderr, "--io-threads 600", "ulimit -n 256")
    assert not out.exists()


def test_a_file_larger_than_any_image_is_not_read(
    tiny_model: Path, photo_jpeg: bytes, s3: S3Server, tmp_path: Path
) -> None:
    """A file over `--max-pixels` x 8 bytes + 16 MB (a video or a disk image that
    `--extensions '*'` met) was read whole into memory; now it is an error row, unread:
    a local one by its size on disk, an object by its listed size (no GET)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(photo_jpeg)
    with open(folder / "video.jpg", "wb") as f:
        f.truncate(20 << 20)  # sparse: 20 MB that take no disk
    client = s3.client()
    client.create_bucket(Bucket="big")
    for path in folder.iterdir():
        client.upload_file(str(path), "big", f"in/{path.name}")
    for source in (str(folder), "s3://big/in/"):
        out = tmp_path / "p.csv"
        args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), source, "-o", str(out)]
        args += ["--no-progress", "--max-pixels", "200000"]  # 1.6 MB + 16 MB
        done = subprocess.run(args, env=os.environ | s3.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert [r["path"] for r in _rows(out)] == ["photo.jpg"]
        (error,) = _rows(tmp_path / "p.errors.csv")
        assert error["path"] == "video.jpg"
        assert error["error"].startswith("too large: a file of 20,971,520 bytes"), error


def test_objects_urls_and_shard_members_larger_than_any_image_are_not_read(
    tiny_model: Path, photo_jpeg: bytes, s3: S3Server, tmp_path: Path
) -> None:
    """Where no listing gives the size first (an object or URL named alone, a member of
    a tar shard), a file over `--max-pixels` x 8 bytes + 16 MB is an error row too, its
    bytes not held: by the size the answer's headers give (S3 through libcurl, obstore
    or botocore; HTTP asked for it first), or its member header."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(photo_jpeg)
    with open(folder / "video.jpg", "wb") as f:
        f.truncate(20 << 20)
    shard = write_tar(tmp_path / "shard.tar", [("a.jpg", photo_jpeg), ("b.jpg", bytes(20 << 20))])
    client = s3.client()
    client.create_bucket(Bucket="big")
    client.upload_file(str(folder / "video.jpg"), "big", "in/video.jpg")  # libcurl's key
    client.upload_file(str(folder / "video.jpg"), "big", "in/a video.jpg")  # obstore's
    client.upload_file(str(folder / "video.jpg"), "big", "in//video.jpg")  # botocore's
    client.upload_file(str(shard), "big", "shard.tar")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = ["s3://big/in/video.jpg", "s3://big/in/a video.jpg", "s3://big/in//video.jpg"]
    (tmp_path / "list.txt").write_text("".join(f"{u}\n" for u in [*urls, f"{base}/video.jpg"]))
    out = tmp_path / "p.csv"
    args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), f"{base}/photo.jpg"]
    args += [f"@{tmp_path / 'list.txt'}", str(shard), "s3://big/shard.tar", "-o", str(out)]
    args += ["--no-progress", "--max-pixels", "200000"]  # 1.6 MB + 16 MB
    try:
        done = subprocess.run(args, env=os.environ | s3.env, capture_output=True, text=True)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    read = [f"{base}/photo.jpg", f"{shard}/a.jpg", "s3://big/shard.tar/a.jpg"]
    assert [r["path"] for r in _rows(out)] == read
    errors = {e["path"]: e["error"] for e in _rows(tmp_path / "p.errors.csv")}
    large = [*urls, f"{base}/video.jpg", f"{shard}/b.jpg", "s3://big/shard.tar/b.jpg"]
    assert sorted(errors) == sorted(large)
    for path, error in errors.items():
        assert error.startswith("too large: a file of 20,971,520 bytes"), (path, error)


class _Counting(http.server.BaseHTTPRequestHandler):
    """Serves `body` at any path; counts the requests by method."""

    body = b""
    seen: list[str] = []  # noqa: RUF012 (per test, reset by it)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        self.seen.append(self.command)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if not head:
            self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_object_sized_by_its_listing_is_read_with_one_request(photo_jpeg: bytes) -> None:
    """A listed object's size was checked against the limit already: its read is one
    GET, not a size request first (that doubled the requests of every gs:// and az://
    prefix); an http(s) object named alone is one GET too, refused by the size its
    answer's headers give when over (a HEAD first, refused by a URL presigned for GET,
    made fsspec ask for the size by a GET of its own: each image was read twice)."""
    _Counting.body, _Counting.seen = photo_jpeg, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x.jpg"
    try:
        assert read_item(Item(url, "x.jpg", size=len(photo_jpeg))) == photo_jpeg
        assert _Counting.seen == ["GET"]
        _Counting.seen = []
        assert read_item(Item(url, url)) == photo_jpeg
        assert _Counting.seen == ["GET"]
        _Counting.seen = []
        with pytest.raises(OSError, match="too large: a file of"):
            read_item(Item(url, url), max_bytes=100)
        assert _Counting.seen == ["GET"]
    finally:
        server.shutdown()


def test_an_endpoint_that_never_answers_is_one_line_in_bounded_time(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A server that accepts connections and sends nothing (a hung proxy, a stuck
    gateway): one line naming the endpoint once botocore's own tries have each waited
    READ_TIMEOUT_S (here 1 s), not botocore's 60 s a try, 5 tries, times cnnbench's 3
    rounds (15 minutes before the line)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    args = ["infer", str(tiny_model), "s3://b/p/", "-o", str(tmp_path / "o.csv"), "--no-progress"]
    env = os.environ | s3_environment(endpoint)
    start = time.monotonic()
    try:
        done = cnnbench_fast_stores(args, env, timeout=60, read_timeout_s=1)
    finally:
        listener.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - start < 30
    assert_one_line_error(done.returncode, done.stderr, "no answer for s3://b/p/", endpoint)
    assert not (tmp_path / "o.csv").exists()


def test_a_listed_prefix_without_its_slash_says_to_add_it(
    tiny_model: Path, photo_jpeg: bytes, s3_env: S3Server, tmp_path: Path
) -> None:
    """An @list line names a prefix by its trailing '/' (lines are not asked about: a
    request each); `s3://b/set` with objects under set/ was a bare 'not found' row,
    its objects lost without a word on why. The row now says what to write."""
    client = s3_env.client()
    client.create_bucket(Bucket="hint")
    for key in ("set/a.jpg", "set2/b.jpg"):
        client.put_object(Bucket="hint", Key=key, Body=photo_jpeg)
    listed = tmp_path / "list.txt"
    listed.write_text("s3://hint/set\ns3://hint/set2/\ns3://hint/gone\n")
    _infer(tiny_model, tmp_path / "o.csv", f"@{listed}")
    assert [r["path"] for r in _rows(tmp_path / "o.csv")] == ["s3://hint/set2/b.jpg"]
    errors = {e["path"]: e["error"] for e in _rows(tmp_path / "o.errors.csv")}
    assert errors["s3://hint/gone"] == "not found: s3://hint/gone"
    assert errors["s3://hint/set"].startswith("not found: s3://hint/set: "), errors
    assert "objects are under it as a prefix: write s3://hint/set/ " in errors["s3://hint/set"]
