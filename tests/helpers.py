"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner

from cnnbench.cli import cli
from cnnbench.infer.sinks.formats import unsafe_cell

SLOW_FOLDER_FILES = 600  # files in conftest's slow_folder


def run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), f"traceback: {result.exception!r}"
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *needles: str) -> None:
    assert code != 0
    lines = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], output


def write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    assert ok
    path.write_bytes(data.tobytes())


def make_zoo(root: Path, photo: bytes) -> tuple[set[str], set[str]]:
    """Good and bad files of every kind; returns (names that decode, names that fail)."""
    root.mkdir()
    good, bad = set(), set()

    def add(name: str, data: bytes, ok: bool) -> None:
        (root / name).write_bytes(data)
        (good if ok else bad).add(name)

    add("photo.jpg", photo, True)
    add("truncated.jpg", photo[: len(photo) // 3], False)
    add("header_only.jpg", photo[:200], False)
    add("zero.jpg", b"", False)
    add("text.png", b"this is not a png\n", False)
    add("café_日本.jpg", photo, True)
    add('comma, "quote".jpg', photo, True)
    add("=HYPERLINK(1).jpg", photo, True)
    add("'apostrophe.jpg", photo, True)
    rng = np.random.default_rng(1)
    write_png(root / "gray.png", rng.integers(0, 255, (40, 30), dtype=np.uint8))
    write_png(root / "rgba.png", rng.integers(0, 255, (40, 30, 4), dtype=np.uint8))
    write_png(root / "deep16.png", rng.integers(0, 65535, (40, 30, 3), dtype=np.uint16))
    write_png(root / "one_pixel.png", np.full((1, 1, 3), 7, dtype=np.uint8))
    huge = cv2.resize(cv2.imdecode(np.frombuffer(photo, np.uint8), 1), (6000, 4000))
    (root / "huge.jpg").write_bytes(cv2.imencode(".jpg", huge)[1].tobytes())
    good |= {"gray.png", "rgba.png", "deep16.png", "one_pixel.png", "huge.jpg"}
    os.symlink(root / "missing-target.jpg", root / "broken_link.jpg")
    bad.add("broken_link.jpg")
    (root / "sub").mkdir()
    add("sub/nested.jpeg", photo, True)
    (root / "notes.txt").write_text("not an image extension: not scanned")
    if os.geteuid() != 0:  # root reads files whatever their mode: chmod cannot make one fail
        add("locked.jpg", photo, False)
        (root / "locked.jpg").chmod(0)
    return good, bad


def read_rows(path: Path) -> list[dict]:
    """The rows of an output in any format: CSV (text cells), JSON lines, or a Parquet
    dataset folder read by pyarrow (parts in name order, i.e. block order)."""
    if path.suffix == ".parquet":
        import pyarrow.dataset as ds

        return ds.dataset(path, format="parquet").to_table().to_pylist()
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in f]
        return [r | {"path": unsafe_cell(r["path"])} for r in csv.DictReader(f)]


def paths(out: Path) -> list[str]:
    return [r["path"] for r in read_rows(out)]


def errors_of(out: Path) -> Path:
    return out.with_name(f"{out.stem}.errors{out.suffix}")


def assert_exactly_once(folder: Path, out: Path) -> None:
    done = paths(out) + paths(errors_of(out))
    expected = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert len(done) == len(set(done)), "duplicate rows"
    assert sorted(done) == expected, "missing rows"


def ray_command(model: Path, folder: Path, out: Path, address: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "cnnbench", "infer", str(model), str(folder), "-o", str(out)]
    args += ["--engine", "ray", "--address", address, "--no-progress"]
    return [*args, "--batch-size", "8", "--block-size", "25", *extra]


def committed_blocks(out: Path) -> list[str]:
    """Committed blocks: prediction parts in OUTPUT.parts/, or in a Parquet folder."""
    folder = out if out.suffix == ".parquet" else Path(f"{out}.parts")
    names = os.listdir(folder) if folder.exists() else []
    ext = out.suffix
    return [n for n in names if n.startswith("block-") and n.endswith(ext) and ".errors" not in n]


def wait_for_blocks(out: Path, blocks: int, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while len(committed_blocks(out)) < blocks:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"fewer than {blocks} blocks in {timeout} s"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(endpoint: str) -> dict[str, str]:
    """What an S3 client needs to reach a test server and nothing else: the endpoint,
    made-up credentials, no config files, no instance-metadata lookup."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


class S3Server:
    """moto's S3-compatible server in a process of its own on 127.0.0.1 (as s3fs's own
    tests run it), and the environment a client needs to reach it and nothing else:
    the endpoint, made-up credentials, no config files, no instance-metadata lookup.
    `auth_after`: moto checks credentials after that many requests (wrong ones: 403)."""

    def __init__(self, log: Path, host: str = "127.0.0.1", auth_after: int | None = None):
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        env = dict(os.environ)
        if auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
        self.log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                socket.create_connection((host, self.port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start in 30 s"
                time.sleep(0.05)

    @property
    def env(self) -> dict[str, str]:
        return s3_env(self.url)

    def client(self):
        import boto3

        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def upload(self, bucket: str, folder: Path, prefix: str = "") -> None:
        """Every file under `folder` as an object under `prefix` (created bucket)."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = prefix + path.relative_to(folder).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
