"""Inputs by http(s) URL as users bring them (presigned and CDN URLs, redirects, refusals,
TLS), against Python's http.server on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import http.server
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    assert_one_line_error,
    free_port,
    paths,
    read_rows,
    run,
    write_chunked,
    write_tar,
)

from cnnbench.infer.sources import stores
from cnnbench.infer.sources.fetch import read_item
from cnnbench.infer.sources.items import Item

SIGNED = "X-Amz-Credential=AKIA%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=ab12"
EXPIRED = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


class _Web(http.server.BaseHTTPRequestHandler):
    """Answers as web servers do, by the URL's path (its query is a signature, ignored):
    /signed.jpg: GET only (a HEAD is 403, as for a URL presigned for GET); /s.tar: a
    shard (ranges honoured); /expired.jpg: 403 with S3's XML reason; /login.jpg: 401
    unless the Basic login u:p comes; /r301.jpg, /r307.jpg: redirects to /signed.jpg;
    /far.jpg: to another server's /signed.jpg; /loop.jpg: to itself; /ftp.jpg: to ftp://;
    /busy.jpg: 429 with Retry-After 2 for 2 s after its first GET; /down.jpg: 503 with
    Retry-After 120; /chunked.jpg and /gzip.jpg: the photo with no length before it;
    /held/*: the photo after 0.5 s."""

    protocol_version = "HTTP/1.1"  # chunked answers
    photo = b""
    shard = b""
    other = ""  # another server's base URL
    gets: dict[str, int] = {}  # noqa: RUF012 (per server, reset by the test)
    first: dict[str, float] = {}  # noqa: RUF012
    held = peak = 0  # GETs of /held/ answered at once now, and the most
    lock = threading.Lock()

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if not head:
            self.gets[path] = self.gets.get(path, 0) + 1
        since = time.monotonic() - self.first.setdefault(path, time.monotonic())
        login = "Basic " + base64.b64encode(b"u:p").decode()
        moved = {"/r301.jpg": "/signed.jpg", "/r307.jpg": "/signed.jpg", "/loop.jpg": "/loop.jpg"}
        moved |= {"/far.jpg": f"{self.other}/signed.jpg", "/ftp.jpg": "ftp://127.0.0.1/x.jpg"}
        if path == "/signed.jpg" and head:
            self._send(403, b"", [])
        elif path in moved:
            self._send(
                int(path[2:5]) if path[2:5].isdigit() else 302, b"", [("Location", moved[path])]
            )
        elif path == "/expired.jpg":
            self._send(403, EXPIRED, [("Content-Type", "application/xml")], head)
        elif path == "/login.jpg" and self.headers.get("Authorization") != login:
            self._send(401, b"", [("WWW-Authenticate", 'Basic realm="photos"')])
        elif path == "/busy.jpg" and since < 2:
            self._send(429, b"", [("Retry-After", "2")])
        elif path == "/down.jpg":
            self._send(503, b"", [("Retry-After", "120")])
        elif path.startswith("/held/"):
            self._held()
        elif path in ("/chunked.jpg", "/gzip.jpg"):
            self._unsized(path == "/gzip.jpg")
        elif path == "/s.tar":
            self._range(self.shard, head)
        elif path in ("/signed.jpg", "/login.jpg", "/busy.jpg"):
            self._send(200, self.photo, [("Content-Type", "image/jpeg")], head)
        else:
            self._send(404, b"", [])

    def _send(self, code: int, body: bytes, headers: list, head: bool = False) -> None:
        self.send_response(code)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _held(self) -> None:
        """The photo after 0.5 s, counting the GETs held at once."""
        with self.lock:
            _Web.held += 1
            _Web.peak = max(_Web.peak, _Web.held)
        time.sleep(0.5)
        with self.lock:
            _Web.held -= 1
        self._send(200, self.photo, [])

    def _unsized(self, compressed: bool) -> None:
        """The photo with no length before it: chunked, gzip-compressed or not."""
        body = gzip.compress(self.photo) if compressed else self.photo
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        write_chunked(self, body, 4096)

    def _range(self, data: bytes, head: bool) -> None:
        asked = self.headers.get("Range", "")
        if not asked.startswith("bytes="):
            self._send(200, data, [("Accept-Ranges", "bytes")], head)
            return
        start, _, end = asked[6:].partition("-")
        first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        span = [("Content-Range", f"bytes {first}-{last}/{len(data)}")]
        self._send(206, data[first : last + 1], span, head)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256  # a backlog for many connections made at once

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that left (a check that reads no body closes its connection) is no
        error of the server's: its traceback went to stderr, into the command's output."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextlib.contextmanager
def _serve(handler: type, context: ssl.SSLContext | None = None) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def web(photo_jpeg: bytes, tmp_path: Path) -> Iterator[str]:
    _Web.photo, _Web.gets, _Web.first, _Web.peak = photo_jpeg, {}, {}, 0
    write_tar(tmp_path / "s.tar", [(f"{k}.jpg", photo_jpeg) for k in range(3)])
    _Web.shard = (tmp_path / "s.tar").read_bytes()
    with _serve(_Web) as base, _serve(_Web) as other:
        _Web.other = other
        yield base


def _infer(model: Path, out: Path, *inputs: str) -> str:
    code, output = run(["infer", str(model), *inputs, "-o", str(out), "--no-progress"])
    assert code == 0, output
    return output


def test_a_presigned_shard_is_read_as_a_shard(tiny_model: Path, tmp_path: Path, web: str) -> None:
    """`s.tar?X-Amz-Signature=...` is a shard by its path (it was read as one image, and
    failed: 'not an image'); alone, its members are named after the shard's file."""
    url = f"{web}/s.tar?{SIGNED}"
    _infer(tiny_model, tmp_path / "one.csv", url)
    assert paths(tmp_path / "one.csv") == [f"s.tar/{k}.jpg" for k in range(3)]
    (tmp_path / "list.txt").write_text(f"{url}\n{web}/signed.jpg?{SIGNED}\n")
    _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    got = paths(tmp_path / "o.csv")
    assert got == [*(f"{url}/{k}.jpg" for k in range(3)), f"{web}/signed.jpg?{SIGNED}"]
    assert read_rows(tmp_path / "o.errors.csv") == []


def test_a_url_that_refuses_a_head_is_read_by_one_get(
    tiny_model: Path, tmp_path: Path, web: str
) -> None:
    """A URL presigned for GET answers a HEAD 403: it was asked for its size by a GET
    of its own, then read by another (each image fetched twice); now one GET a read."""
    (tmp_path / "list.txt").write_text(f"{web}/signed.jpg?{SIGNED}\n{web}/r307.jpg\n")
    _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    assert len(read_rows(tmp_path / "o.csv")) == 2
    assert _Web.gets == {"/signed.jpg": 2, "/r307.jpg": 1}  # the redirect's too


def test_redirects_are_followed_and_bad_ones_named(
    tiny_model: Path, tmp_path: Path, web: str
) -> None:
    names = ("r301.jpg", "r307.jpg", "far.jpg", "loop.jpg", "ftp.jpg")
    (tmp_path / "list.txt").write_text("".join(f"{web}/{n}\n" for n in names))
    _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    assert paths(tmp_path / "o.csv") == [f"{web}/{n}" for n in names[:3]]
    errors = {e["path"]: e["error"] for e in read_rows(tmp_path / "o.errors.csv")}
    assert "too many redirects" in errors[f"{web}/loop.jpg"], errors  # was "0, message=''"
    assert (
        "redirected to ftp://127.0.0.1/x.jpg, which is no http(s) URL" in errors[f"{web}/ftp.jpg"]
    )
    code, output = run(["infer", str(tiny_model), f"{web}/loop.jpg", "-o", str(tmp_path / "x.csv")])
    assert_one_line_error(code, output, "too many redirects")  # was 'not found: ...'


def test_refusals_say_what_the_server_said(
    tiny_model: Path, tmp_path: Path, web: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403's reason from its body and a 401's advice, as error rows and as the one
    line of a command-line URL (every failure of which was 'not found: ... no object
    has this key and none is under it as a prefix'); a login in NETRC is sent."""
    dead = f"http://127.0.0.1:{free_port()}/x.jpg"
    for url, needles in (
        (f"{web}/expired.jpg?{SIGNED}", ("access denied", "Request has expired", "sign a new")),
        (f"{web}/login.jpg", ("wants a login", 'Basic realm="photos"', "netrc")),
        (dead, ("cannot connect",)),
        (f"{web}/nothing.jpg", ("not found",)),
        (f"{web}/photos/", ("a web URL is one file",)),  # an error row, and exit 0
        (f"http://127.0.0.1:{free_port()}/photos/", ("a web URL is one file",)),  # not found
    ):
        code, output = run(["infer", str(tiny_model), url, "-o", str(tmp_path / "x.csv")])
        assert_one_line_error(code, output, *needles)
        assert "prefix" not in output, output
    (tmp_path / "list.txt").write_text(f"{web}/expired.jpg?{SIGNED}\n{web}/login.jpg\n")
    _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    errors = [e["error"] for e in read_rows(tmp_path / "o.errors.csv")]
    assert "AccessDenied: Request has expired" in errors[0] and "wants a login" in errors[1]
    (tmp_path / "netrc").write_text("machine 127.0.0.1 login u password p\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    _infer(tiny_model, tmp_path / "n.csv", f"{web}/login.jpg")
    assert len(read_rows(tmp_path / "n.csv")) == 1


def test_retry_after_is_waited_for_up_to_a_bound(
    tiny_model: Path, tmp_path: Path, web: str
) -> None:
    """A 429 that asks for 2 s is tried again after 2 s (the tries 0.25 s and 1 s apart
    all failed); a 503 that asks for 120 s is an error row at once that says so."""
    (tmp_path / "list.txt").write_text(f"{web}/busy.jpg\n{web}/down.jpg\n")
    started = time.monotonic()
    _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    assert paths(tmp_path / "o.csv") == [f"{web}/busy.jpg"]
    [down] = read_rows(tmp_path / "o.errors.csv")
    assert "asked for 120 s" in down["error"] and "Retry-After" in down["error"], down
    assert _Web.gets["/down.jpg"] == 1 and _Web.gets["/busy.jpg"] == 2
    assert time.monotonic() - started < 30


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(name: str, key, issuer: str, signer, ca: bool, san: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([ip]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", ca_key, "test CA", ca_key, True, False)
    leaf = cert("127.0.0.1", key, "test CA", ca_key, False, True)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_an_untrusted_certificate_says_how_to_trust_it(
    tiny_model: Path, tmp_path: Path, web: str, photo_jpeg: bytes
) -> None:
    """A server whose CA is not trusted: one line naming SSL_CERT_FILE (it was 'not
    found: ...'), which then reads it; https:// to a port without TLS is named too."""
    ca, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _serve(_Web, context) as secure:
        url = f"{secure}/signed.jpg"
        code, output = run(["infer", str(tiny_model), url, "-o", str(tmp_path / "x.csv")])
        assert_one_line_error(code, output, "certificate is not trusted", "SSL_CERT_FILE")
        plain = web.replace("http://", "https://") + "/signed.jpg"
        code, output = run(["infer", str(tiny_model), plain, "-o", str(tmp_path / "x.csv")])
        assert_one_line_error(code, output, "no TLS at this port", "http://")
        # aiohttp reads the CA file when imported: a process of its own
        args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), url, "--no-progress"]
        env = {**os.environ, "SSL_CERT_FILE": str(ca)}
        done = subprocess.run(
            [*args, "-o", str(tmp_path / "o.csv")], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert paths(tmp_path / "o.csv") == [url]


class _Silent(http.server.BaseHTTPRequestHandler):
    """Takes the request and sends nothing for a minute."""

    def do_GET(self) -> None:
        time.sleep(60)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_sends_nothing_is_given_up_in_30_s() -> None:
    """One read of a server that accepts and never answers gave up after aiohttp's 5
    minutes (three tries: a quarter of an hour); now after READ_TIMEOUT_S, as for S3."""
    with _serve(_Silent) as base:
        fs = stores.filesystem(f"{base}/x.jpg")
        failed: list[BaseException] = []

        def read() -> None:
            try:
                fs.cat_file(f"{base}/x.jpg")
            except Exception as e:
                failed.append(e)

        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(stores.READ_TIMEOUT_S + 15)
        assert not reader.is_alive(), "still waiting"
        assert failed and time.monotonic() - started >= stores.READ_TIMEOUT_S - 1


def test_reads_in_flight_are_not_capped_at_100(tiny_model: Path, tmp_path: Path, web: str) -> None:
    """--io-threads 160 on one host: 160 GETs at once (aiohttp's own cap held them to 100)."""
    (tmp_path / "list.txt").write_text("".join(f"{web}/held/{i}.jpg\n" for i in range(160)))
    args = ["--io-threads", "160", "--no-progress", "-o", str(tmp_path / "o.csv")]
    code, output = run(["infer", str(tiny_model), f"@{tmp_path / 'list.txt'}", *args])
    assert code == 0, output
    assert len(read_rows(tmp_path / "o.csv")) == 160
    assert _Web.peak > 100, _Web.peak


def test_one_url_spelled_two_ways_is_read_once(tiny_model: Path, tmp_path: Path, web: str) -> None:
    """A space or `%20`, `ü` or `%C3%BC`, a fragment (which no server sees): the same
    request, so the same file, read once and counted as listed again, as `./a.jpg`
    after `a.jpg` is; it was read twice, under two paths."""
    spellings = ("signed.jpg", "signed.jpg#x", "%73igned.jpg", "SIGNED.jpg")
    (tmp_path / "list.txt").write_text("".join(f"{web}/{s}\n" for s in spellings))
    output = _infer(tiny_model, tmp_path / "o.csv", f"@{tmp_path / 'list.txt'}")
    assert paths(tmp_path / "o.csv") == [f"{web}/signed.jpg"]
    assert [e["path"] for e in read_rows(tmp_path / "o.errors.csv")] == [f"{web}/SIGNED.jpg"]
    assert "2 list entries named a file listed before" in output, output
    code, output = run(
        [
            "infer",
            str(tiny_model),
            f"{web}/signed.jpg",
            f"{web}/signed.jpg#x",
            "-o",
            str(tmp_path / "x.csv"),
        ]
    )
    assert_one_line_error(code, output, "are the same file")


def test_a_file_of_no_length_is_held_to_the_size_limit(web: str, photo_jpeg: bytes) -> None:
    """A chunked or gzip-compressed answer gives no length before its body: it was read
    whole, whatever its size (a chunked stream of gigabytes, into memory); now it is
    refused once it grows past the limit, and read as any other below it."""
    for name in ("chunked.jpg", "gzip.jpg"):
        assert read_item(Item(f"{web}/{name}", name)) == photo_jpeg
        with pytest.raises(OSError, match="too large: more than 1,000 bytes"):
            read_item(Item(f"{web}/{name}", name), max_bytes=1000)


def test_outputs_to_a_web_url_are_refused_before_the_job(
    tiny_model: Path, tmp_path: Path, web: str
) -> None:
    """-o https://... .parquet ran the job and failed at its first part ('cannot read
    .../_manifest.json: HTTP 501 ...; run the same command with --resume'); --summary
    https://... was taken for a local path ('folder .../http:/127.0.0.1:N does not
    exist'): one line each, before anything is read."""
    url = f"{web}/signed.jpg"
    code, output = run(["infer", str(tiny_model), url, "-o", f"{web}/out.parquet"])
    assert_one_line_error(code, output, "a web server takes no uploads")
    out = ["-o", str(tmp_path / "o.csv"), "--summary", f"{web}/s.json"]
    code, output = run(["infer", str(tiny_model), url, *out])
    assert_one_line_error(code, output, "--summary is a local file")
    assert _Web.gets == {"/signed.jpg": 2}  # the inputs' checks: no image was read
    assert not (tmp_path / "o.csv").exists()
