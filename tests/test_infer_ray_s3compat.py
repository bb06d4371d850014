"""`infer --engine ray` against S3-compatible servers that answer otherwise than AWS, and
a store that stops answering: the workers read the objects themselves, so what the local
engine does with such answers (tests/test_s3_compatible.py, tests/test_store_outage.py)
must hold there too: the same rows and error rows, byte for byte, and the same one line
where the job stops. moto's S3 server on 127.0.0.1 behind the `Compat` proxy of
test_s3_compatible.py, whose answers each test sets; the cluster is started after the
proxy's endpoint is in the environment, so its workers reach it through their own."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    S3Server,
    assert_one_line_error,
    errors_of,
    local_ray,
    paths,
    s3_env,
    send_answer,
    write_tar,
)
from test_infer_ray import assert_same_files
from test_s3_compatible import ODD, Compat, _Rewrite
from test_store_outage import _Outage
from test_web_sources import SIGNED, _serve, _Web

from cnnbench.cli import cli

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")
PHOTOS = 60


class _Proxy(Compat):
    """`Compat`, quiet about a client that left (a Ray worker ending its connections):
    http.server printed its traceback into the command's output, captured in-process."""

    broken: frozenset[str] = frozenset()  # paths answered 500 (`_Broken`)

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Broken(_Rewrite):
    """`Compat`'s answers, and 500 InternalError to every GET of a path in `broken`."""

    server: _Proxy

    def answer(self) -> None:
        if self.path.split("?")[0] in self.server.broken:
            error = b"<Error><Code>InternalError</Code><Message>x</Message></Error>"
            send_answer(self, 500, [], error)
            return
        super().answer()


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, S3Server, Compat]]:
    """The cluster's address, moto (photos under s3://compat/set/) and the proxy in front
    of it, its answers as AWS's (each test sets and restores what it changes)."""
    root = tmp_path_factory.mktemp("ray-compat")
    s3 = S3Server(root / "moto.log")
    proxy = _Proxy(s3.url)
    proxy.RequestHandlerClass = _Broken
    saved = dict(os.environ)
    try:
        s3.put_photos("compat", PHOTOS)
        os.environ.update(s3_env(proxy.url))
        with local_ray(object_store_mb=200) as address:
            yield address, s3, proxy
    finally:
        os.environ.clear()
        os.environ.update(saved)
        proxy.close()
        s3.stop()


def _infer(inputs: list[str], out: Path, *extra: str) -> tuple[int, str]:
    args = ["infer", *inputs, "-o", str(out), "--no-progress", *extra]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_ray_reads_what_s3_compatible_servers_answer_as_the_local_engine(
    compat: tuple[str, S3Server, Compat], tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """Keys the server URL-encodes without saying so, bodies sent chunked with no length,
    and a shard's members read by their ranges through that (botocore's reads, in the
    workers): the local engine's rows. A server of another region: the local engine's one
    line, not a Ray traceback or an error row per object."""
    address, s3, proxy = compat
    client = s3.client()
    for name in ODD:
        client.put_object(Bucket="compat", Key=f"odd/{name}", Body=photo_jpeg)
    shard = write_tar(tmp_path / "s.tar", [(f"{k}.jpg", photo_jpeg + bytes([k])) for k in range(5)])
    client.put_object(Bucket="compat", Key="shards/s t.tar", Body=shard.read_bytes())
    inputs = [str(tiny_model), "s3://compat/odd/", "s3://compat/shards/s t.tar"]
    ray_args = ["--engine", "ray", "--address", address, "--block-size", "3"]
    proxy.encoding, proxy.chunked = "unsaid", True
    try:
        local = _infer(inputs, tmp_path / "local.csv")
        remote = _infer(inputs, tmp_path / "ray.csv", *ray_args)
    finally:
        proxy.encoding, proxy.chunked = "asked", False
    assert local[0] == 0 and remote[0] == 0, remote[1]
    assert_same_files(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert len(paths(tmp_path / "ray.csv")) == len(ODD) + 5
    proxy.region = "garage"
    try:
        local = _infer([str(tiny_model), "s3://compat/set/"], tmp_path / "r-local.csv")
        remote = _infer([str(tiny_model), "s3://compat/set/"], tmp_path / "r-ray.csv", *ray_args)
    finally:
        proxy.region = None
    line = next(line for line in local[1].splitlines() if line.startswith("Error"))
    assert "it expects region 'garage'" in line, local[1]
    assert_one_line_error(remote[0], remote[1], line.removeprefix("Error: "))


def test_a_store_that_stops_answering_stops_the_ray_job_in_one_line(
    compat: tuple[str, S3Server, Compat], tiny_model: Path, tmp_path: Path
) -> None:
    """The store fails after 20 reads (503 to every GET of an object). A decode task reads
    one batch, and the reads without an answer at its end were error rows: every object
    after the store went was one, and the job exited 0 (`--batch-size 8`: fewer than the
    16 in a row that stop a job). Now the job stops with the local engine's one line, no
    error row for what the store did not answer, and a --resume reads every object once."""
    address, s3, proxy = compat
    outage = _Outage(s3.url, answers=20, mode="503")
    out = tmp_path / "ray.csv"
    args = [str(tiny_model), "s3://compat/set/"]
    ray_args = ["--engine", "ray", "--address", address, "--block-size", "8", "--batch-size", "8"]
    proxy.upstream = outage.url.removeprefix("http://")
    try:
        code, output = _infer(args, out, *ray_args)
    finally:
        proxy.upstream = s3.url.removeprefix("http://")
        outage.close()
    assert_one_line_error(
        code, output, "the store stopped answering", "run the same command with --resume"
    )
    staged = Path(f"{out}.parts")
    assert all(paths(part) == [] for part in staged.glob("*.errors.csv")), output
    code, output = _infer(args, out, *ray_args, "--resume")
    assert code == 0, output
    assert paths(out) == [f"{i:04d}.jpg" for i in range(PHOTOS)]
    assert paths(errors_of(out)) == []


def test_objects_that_answer_500_at_a_batch_end_are_error_rows_as_locally(
    compat: tuple[str, S3Server, Compat], tiny_model: Path, tmp_path: Path
) -> None:
    """An object the store answers 500 to every time, last of its decode task's batch,
    while the store answers the others: asked again, and a read of the batch that was
    answered is answered again, so the store works: an error row, the job finishes, as
    with the local engine (a job whose last object fails so must end)."""
    address, _, proxy = compat
    assert isinstance(proxy, _Proxy)
    args = [str(tiny_model), "s3://compat/set/"]
    ray_args = ["--engine", "ray", "--address", address, "--block-size", "8", "--batch-size", "8"]
    proxy.broken = frozenset({"/compat/set/0007.jpg", f"/compat/set/{PHOTOS - 1:04d}.jpg"})
    try:
        local = _infer(args, tmp_path / "local.csv", "--batch-size", "8")
        remote = _infer(args, tmp_path / "ray.csv", *ray_args)
    finally:
        proxy.broken = frozenset()
    assert local[0] == 0 and remote[0] == 0, remote[1]
    assert_same_files(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert paths(errors_of(tmp_path / "ray.csv")) == ["0007.jpg", f"{PHOTOS - 1:04d}.jpg"]


def test_presigned_urls_and_their_shards_members_read_by_workers_as_locally(
    compat: tuple[str, S3Server, Compat], tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A presigned shard (its query string kept in each member's ranged GET), a presigned
    photo that refuses a HEAD, a redirect, an expired URL and one that wants a login:
    the workers' rows and error rows are the local engine's, byte for byte."""
    address = compat[0]
    _Web.photo, _Web.gets, _Web.first = photo_jpeg, {}, {}
    members = [(f"{k}.jpg", photo_jpeg + bytes([k])) for k in range(5)]
    _Web.shard = write_tar(tmp_path / "s.tar", members).read_bytes()
    with _serve(_Web) as web:
        names = [f"s.tar?{SIGNED}", f"signed.jpg?{SIGNED}", "r301.jpg", "expired.jpg"]
        (tmp_path / "list.txt").write_text("".join(f"{web}/{n}\n" for n in [*names, "login.jpg"]))
        inputs = [str(tiny_model), f"@{tmp_path / 'list.txt'}"]
        local = _infer(inputs, tmp_path / "local.csv")
        ray_args = ["--engine", "ray", "--address", address, "--block-size", "3"]
        remote = _infer(inputs, tmp_path / "ray.csv", *ray_args)
    assert local[0] == 0 and remote[0] == 0, remote[1]
    assert_same_files(tmp_path / "local.csv", tmp_path / "ray.csv")
    assert len(paths(tmp_path / "ray.csv")) == 7
    assert len(paths(errors_of(tmp_path / "ray.csv"))) == 2
