"""gs:// and az:// (abfs://) inputs against real servers on 127.0.0.1, started here:
gcp-storage-emulator (GCS's JSON API, pure Python) and Azurite (Microsoft's Azure
Storage emulator, from npm; skipped with the reason where npm is absent). Every client
gets its endpoint from the environment the test sets (STORAGE_EMULATOR_HOST,
AZURE_STORAGE_CONNECTION_STRING): nothing resolves a cloud host."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from helpers import (
    AzuriteServer,
    GcsServer,
    assert_one_line_error,
    azurite_blob,
    cnnbench_fast_stores,
    read_rows,
    run,
)

from cnnbench.infer.sources import prefixes, stores

STORES = ("gs", "az")


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "gs":
        started: Any = GcsServer(root / "server.log")
    else:
        binary = azurite_blob()
        if isinstance(binary, str):
            pytest.skip(binary)
        (root / "data").mkdir()
        started = AzuriteServer(binary, root / "data", root / "server.log")
    started.scheme = request.param
    yield started
    started.stop()


@pytest.fixture()
def store(server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The server, with the environment its clients read set for this test only."""
    for key in ("GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    return server


def _infer(model: Path, out: Path, *inputs: str) -> None:
    summary = out.with_suffix(".json")
    args = [*inputs, "-o", str(out), "--no-progress", "--summary", str(summary)]
    code, output = run(["infer", str(model), *args])
    assert code == 0, output


def test_a_prefix_gives_the_rows_of_the_same_folder(
    tiny_model: Path, photos: Path, store: Any, tmp_path: Path
) -> None:
    store.upload("photos", photos, "set/")
    store.put("photos", {"set/": b""})  # a folder marker some tools write: not a file
    _infer(tiny_model, tmp_path / "local.csv", str(photos))
    _infer(tiny_model, tmp_path / "remote.csv", f"{store.scheme}://photos/set/")
    assert (tmp_path / "remote.csv").read_text() == (tmp_path / "local.csv").read_text()
    names = [r["path"] for r in read_rows(tmp_path / "remote.csv")]
    assert names.index("a-b/x.jpg") < names.index("a.jpg") < names.index("a/x.jpg")
    local, remote = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "remote.json"))
    assert remote["labelled"] == 7  # class-folder accuracy from the prefix
    for key in ("accuracy", "per_class", "skipped_by_extension", "images"):
        assert remote[key] == local[key], key
    # without the trailing '/': the store is asked, and it is the same folder
    _infer(tiny_model, tmp_path / "noslash.csv", f"{store.scheme}://photos/set")
    assert (tmp_path / "noslash.csv").read_text() == (tmp_path / "local.csv").read_text()
    if store.scheme == "az":  # adlfs's other scheme, the same container
        _infer(tiny_model, tmp_path / "abfs.csv", "abfs://photos/set/")
        assert (tmp_path / "abfs.csv").read_text() == (tmp_path / "local.csv").read_text()


@pytest.mark.parametrize("server", ["az"], indirect=True)
def test_abfs_long_form_reads_the_account_it_names(
    tiny_model: Path, photos: Path, store: Any, tmp_path: Path
) -> None:
    """abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/: adlfs's long form. The account
    the URL names must be the one the environment's credentials are for (Azurite's
    connection string: its BlobEndpoint keeps every request on 127.0.0.1)."""
    store.upload("long", photos, "set/")
    _infer(tiny_model, tmp_path / "short.csv", "az://long/set/")
    account = store.env["AZURE_STORAGE_CONNECTION_STRING"].split("AccountName=")[1].split(";")[0]
    for host in ("dfs", "blob"):
        url = f"abfs://long@{account}.{host}.core.windows.net/set/"
        _infer(tiny_model, tmp_path / f"{host}.csv", url)
        assert (tmp_path / f"{host}.csv").read_text() == (tmp_path / "short.csv").read_text()
    out = tmp_path / "other.csv"
    for url, message in [
        (
            "abfs://long@someoneelse.dfs.core.windows.net/set/",
            "names the storage account someoneelse, but AZURE_STORAGE_CONNECTION_STRING"
            f" is for {account}",
        ),
        ("abfs://long@127.0.0.1:10000/set/", "cannot tell the storage account in abfs://long@127"),
    ]:
        code, output = run(["infer", str(tiny_model), url, "-o", str(out)])
        assert_one_line_error(code, output, message)
        assert not out.exists()


def _send_json(handler: http.server.BaseHTTPRequestHandler, status: int, answer: dict) -> None:
    body = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _GcsPages(http.server.BaseHTTPRequestHandler):
    """In front of the GCS emulator, which answers objects.list whole, whatever
    maxResults says: serves the listing page by page as GCS does (maxResults names,
    then a nextPageToken that the next request sends back), asking the emulator again
    for each page. Everything else is 404: only listing goes through it."""

    upstream = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        limit = int(query.pop("maxResults", "1000"))
        start = int(query.pop("pageToken", "0"))
        if not url.path.endswith("/o") or "delimiter" in query:
            self.send_error(404)
            return
        with urllib.request.urlopen(f"{self.upstream}{url.path}?{urlencode(query)}") as r:
            answer = json.loads(r.read())
        items = answer.get("items", [])
        page: dict = {"kind": "storage#objects", "items": items[start : start + limit]}
        if start + limit < len(items):
            page["nextPageToken"] = str(start + limit)
        _send_json(self, 200, page)

    def log_message(self, *args: object) -> None:
        pass


def _paging_proxy(store: Any, env: pytest.MonkeyPatch) -> http.server.HTTPServer | None:
    """For GCS: _GcsPages on a port of its own, and the emulator's clients sent to it."""
    if store.scheme != "gs":
        return None
    _GcsPages.upstream = store.url
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GcsPages)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{proxy.server_address[1]}")
    return proxy


def test_listing_streams_pages_in_key_order(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"p/{i % 7}/{i:03d}.jpg" for i in range(40)]
    store.put("many", {"p/": b"", **{k: b"x" * (i % 5) for i, k in enumerate(keys)}})
    url = f"{store.scheme}://many/p/"
    with monkeypatch.context() as env:
        pager = _paging_proxy(store, env)
        try:
            entries = prefixes.list_prefix(url, page_keys=7)
            assert not isinstance(entries, list)
            listed = [(e.name, e.size, e.url) for e in entries]
            expected = sorted((k[2:], i % 5, f"{url}{k[2:]}") for i, k in enumerate(keys))
            assert listed == expected  # 41 keys, 6 pages; the folder marker is not a file
            # Streamed: after the first page, the rest is asked for only as it is read.
            entries = prefixes.list_prefix(url, page_keys=7)
            first = next(entries)
            store.delete("many", sorted(keys)[6:])
            assert [first.name, *(e.name for e in entries)] == [n for n, _, _ in expected[:6]]
        finally:
            if pager is not None:
                pager.shutdown()
    store.put("labels", {f"p/{c}/{i}.jpg": b"" for c in "abcdefgh" for i in range(2)})
    url = f"{store.scheme}://labels/p/"
    assert prefixes.has_subprefix(url, {"b", "x"})
    # past a first page of 2 sub-folders, the labels sorting after it are probed
    assert prefixes.has_subprefix(url, {"h"}, page_keys=2)
    assert not prefixes.has_subprefix(url, {"x", "y"}, page_keys=2)


def test_missing_bucket_is_one_line_and_missing_object_an_error_row(
    tiny_model: Path, photos: Path, store: Any, tmp_path: Path
) -> None:
    s = store.scheme
    out = str(tmp_path / "out.csv")
    code, output = run(["infer", str(tiny_model), f"{s}://absent/set/", "-o", out])
    what = "bucket" if s == "gs" else "container"
    assert_one_line_error(code, output, f"no such {what} for {s}://absent/set")
    # an output there: the store answered, so no '--resume once it answers' (as it said)
    photo = str(photos / "a.jpg")
    code, output = run(["infer", str(tiny_model), photo, "-o", f"{s}://absent/o.parquet"])
    assert_one_line_error(
        code, output, f"cannot write {s}://absent/o.parquet: no such {what} absent: create it"
    )
    assert "--resume" not in output
    with pytest.raises(stores.StoreError, match=f"^no such (bucket|container) for {s}://absent/"):
        list(prefixes.list_prefix(f"{s}://absent/set/"))
    store.put("some", {"a.jpg": (photos / "a.jpg").read_bytes()})
    code, output = run(["infer", str(tiny_model), f"{s}://some/nothing/", "-o", out])
    assert_one_line_error(code, output, f"not found: {s}://some/nothing")
    # a key with the words in it is still a missing object: it was 'no such bucket'
    gone = ["gone.jpg", "my-bucket/container.jpg"]
    (tmp_path / "list.txt").write_text("".join(f"{s}://some/{k}\n" for k in ["a.jpg", *gone]))
    code, output = run(["infer", str(tiny_model), f"@{tmp_path / 'list.txt'}", "-o", out])
    assert code == 0, output
    assert [r["path"] for r in read_rows(tmp_path / "out.csv")] == [f"{s}://some/a.jpg"]
    errors = read_rows(tmp_path / "out.errors.csv")
    assert [(e["path"], e["error"]) for e in errors] == [
        (f"{s}://some/{k}", f"not found: {s}://some/{k}") for k in gone
    ]


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("gs://b/p/", "gcsfs", "gcs"),
        ("az://c/p/", "adlfs", "azure"),
        ("abfs://c/p/", "adlfs", "azure"),
    ],
)
def test_a_scheme_without_its_library_names_the_extra(
    tiny_model: Path, tmp_path: Path, url: str, module: str, extra: str
) -> None:
    """In a process where the store's library cannot be imported (as where the extra
    was not installed)."""
    code = f"import sys; sys.modules[{module!r}] = None; from cnnbench.cli import main; main()"
    args = ["infer", str(tiny_model), url, "-o", str(tmp_path / "o.csv")]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert_one_line_error(done.returncode, done.stderr, f"pip install 'cnnbench[{extra}]'", module)


def test_azure_without_an_account_is_one_line(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No connection string and no account name: adlfs's ValueError was a traceback."""
    for key in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "o.csv"
    for url in ("az://c/p/", "abfs://c/p/x.jpg"):
        code, output = run(["infer", str(tiny_model), url, "-o", str(out)])
        assert_one_line_error(code, output, f"no Azure storage account for {url}: set AZURE_STO")
        assert not out.exists()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A GCS endpoint that answers every request with `status`: 403 as GCS does for
    credentials without access, 400 as for a request it will not take."""

    status = 403

    def do_GET(self) -> None:
        _send_json(self, self.status, {"error": {"code": self.status, "message": "refused"}})

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "message"),
    [(403, "access denied to gs://b/p/ ("), (400, "cannot read gs://b/p/: HTTP 400: ")],
)
def test_a_gcs_refusal_is_one_line_without_gcsfs_traceback(
    tiny_model: Path, tmp_path: Path, status: int, message: str
) -> None:
    """gcsfs's 403 said 'cannot read gs://b/p/: Forbidden: b/b/o', the credentials
    unnamed; and gcsfs logs a failure it does not retry (the 400) with its traceback
    (logger.exception), which was printed above the one line."""
    handler = type("Handler", (_Refusing,), {"status": status})
    refusing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{refusing.server_address[1]}"
    env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint, "NO_GCE_CHECK": "true"}
    try:
        out = tmp_path / "o.csv"
        # in a process of its own: the log's last-resort handler writes to the real stderr
        args = ["infer", str(tiny_model), "gs://b/p/", "-o", str(out)]
        done = cnnbench_fast_stores(args, env, 60)
        output = done.stdout + done.stderr
        assert_one_line_error(done.returncode, output, message)
        assert "retries" not in output and "non-retriable" not in output, output
        assert not out.exists()
    finally:
        refusing.shutdown()


def test_azure_stopped_stops_the_job_in_seconds(
    tiny_model: Path, photos: Path, tmp_path: Path
) -> None:
    """Azurite stopped before the reads of an @list: azure-storage-blob retried each
    read 3 times 15 s + 3^n s apart (82 s a read) under our retries, and its
    ServiceRequestError ('cannot read') was not taken for the store's failure, so every
    file became an error row that --resume skips. Now the job stops with the one line."""
    binary = azurite_blob()
    if isinstance(binary, str):
        pytest.skip(binary)
    (tmp_path / "data").mkdir()
    azurite = AzuriteServer(binary, tmp_path / "data", tmp_path / "server.log")
    try:
        names = [f"p{i:02d}.jpg" for i in range(20)]
        azurite.put("gone", {n: (photos / "a.jpg").read_bytes() for n in names})
    finally:
        azurite.stop()
    (tmp_path / "list.txt").write_text("".join(f"az://gone/{n}\n" for n in names))
    out = tmp_path / "out.csv"
    args = ["infer", str(tiny_model), f"@{tmp_path / 'list.txt'}", "-o", str(out), "--no-progress"]
    done = cnnbench_fast_stores(args, {**os.environ, **azurite.env}, 60)
    assert_one_line_error(
        done.returncode, done.stderr, "the store stopped answering", "cannot connect for az://gone/"
    )
    assert "--resume" in done.stderr
    assert "check the endpoint (BlobEndpoint in AZURE_STORAGE_CONNECTION_STRING" in done.stderr
    errors = tmp_path / "out.errors.csv"
    assert not errors.exists() or read_rows(errors) == []
