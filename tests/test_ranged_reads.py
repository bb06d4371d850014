"""Servers that answer a ranged read otherwise than S3 does. Python's http.server ignores
`Range` and sends the whole file (RFC 9110 lets a server); rclone's `serve s3` and
lakeFS's gateway send the range with status 200 instead of 206, and rclone the whole
object's checksum beside it. The local engine streams a shard by URL; the Ray engine's
workers read each member by its range (`fetch.read_item`): every member reads right
from each, and a server that sends whole objects is asked for each shard once, not once
a member."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import http.server
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import Forwarding, S3Server, forward, send_answer, write_tar

from cnnbench.infer.sources import fetch, shards, stores

PAD = 9 << 20  # past fsspec's 8 MiB blocks: its second block failed on such a server


def _shard(root: Path, photo: bytes) -> tuple[Path, dict[str, bytes]]:
    """A shard whose photos come after PAD bytes of another member, and its photos."""
    photos = {f"{k:02d}.jpg": photo + bytes([k]) for k in range(12)}
    return write_tar(root / "s.tar", [("pad.bin", bytes(PAD)), *photos.items()]), photos


def _ranged(items: list, url: str) -> list[bytes]:
    """Each listed member read alone by its range of `url`, 16 at a time, as the Ray
    engine's workers read them."""
    alone = [dataclasses.replace(i, path=url, data=None) for i in items]
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(fetch.read_item, alone))


class _Counted(http.server.SimpleHTTPRequestHandler):
    """Python's own file server (no Range support), counting the GETs it answers."""

    gets: list[str] = []  # noqa: RUF012 (reset by the test)

    def do_GET(self) -> None:
        self.gets.append(self.headers.get("Range", "whole"))
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_ignores_ranges_gives_every_member_once_a_shard(
    photo_jpeg: bytes, tmp_path: Path
) -> None:
    tar, photos = _shard(tmp_path, photo_jpeg)
    _Counted.gets = []
    handler = functools.partial(_Counted, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/s.tar"
    try:
        streamed = list(shards.members(url, "", (".jpg",)))
        assert [(i.name, i.error, i.data) for i in streamed] == [
            (name, None, data) for name, data in photos.items()
        ]
        assert _Counted.gets == ["whole"], _Counted.gets  # one GET for the whole shard
        listed = list(shards.members(str(tar), "", (".jpg",)))
        _Counted.gets = []
        assert _ranged(listed, url) == list(photos.values())
        assert len(_Counted.gets) == 1, _Counted.gets  # not one whole shard a member
    finally:
        server.shutdown()
        server.server_close()


class _Rclone(http.server.ThreadingHTTPServer):
    """A proxy in front of moto that answers ranged GETs as rclone's `serve s3` (1.75)
    does: status 200 (its Content-Range kept), and the object's own CRC32 checksum
    header, which is the whole object's, not the range's."""

    daemon_threads = True

    def __init__(self, upstream: str, checksums: dict[str, str]) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.checksums = urlsplit(upstream).netloc, checksums
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Forward(Forwarding):
    server: _Rclone

    def answer(self) -> None:
        status, headers, body = forward(self, self.server.upstream)
        checksum = self.server.checksums.get(self.path.split("?")[0])
        if checksum and status in (200, 206):
            headers = [*headers, ("x-amz-checksum-crc32", checksum)]
        send_answer(self, 200 if status == 206 else status, headers, body)


@pytest.fixture()
def data_tar(photo_jpeg: bytes, tmp_path: Path) -> dict[str, bytes]:
    photos = {f"{k:02d}.jpg": photo_jpeg + bytes([k]) for k in range(6)}
    write_tar(tmp_path / "data.tar", list(photos.items()))
    return photos


@pytest.fixture()
def rclone_like(
    data_tar: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """moto behind `_Rclone`, the environment pointed at the proxy: the plain key's
    ranged reads go through obstore (which refuses a 200), the key with a space's
    through botocore (which checked the checksum)."""
    keys = ("plain/s.tar", "with space/s.tar")
    tar = (tmp_path / "data.tar").read_bytes()
    crc = base64.b64encode(zlib.crc32(tar).to_bytes(4, "big")).decode()
    with contextlib.ExitStack() as stack:  # whatever fails, nothing is left running
        moto = S3Server(tmp_path / "moto.log")
        stack.callback(moto.stop)
        client = moto.client()
        client.create_bucket(Bucket="rclone")
        for key in keys:
            client.put_object(Bucket="rclone", Key=key, Body=tar)
        proxy = _Rclone(moto.url, {"/rclone/plain/s.tar": crc, "/rclone/with%20space/s.tar": crc})
        stack.callback(proxy.server_close)
        stack.callback(proxy.shutdown)
        for name, value in moto.env.items():
            monkeypatch.setenv(name, proxy.url if name == "AWS_ENDPOINT_URL" else value)
        yield tuple(f"s3://rclone/{key}" for key in keys)  # type: ignore[misc]


def test_ranges_answered_200_with_the_whole_objects_checksum_read_right(
    data_tar: dict[str, bytes], rclone_like: tuple[str, str], tmp_path: Path
) -> None:
    listed = list(shards.members(str(tmp_path / "data.tar"), "", (".jpg",)))
    for url in rclone_like:
        assert _ranged(listed, url) == list(data_tar.values()), url
        streamed = list(shards.members(url, "", (".jpg",)))
        assert [(i.name, i.error, i.data) for i in streamed] == [
            (name, None, data) for name, data in data_tar.items()
        ]
        assert stores.read_bytes(url) == (tmp_path / "data.tar").read_bytes()  # its checksum
