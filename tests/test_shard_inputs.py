"""Tar shards as a hostile user makes them: member names met twice, inputs that are no
tar file, brace patterns that are not ranges, archives appended to archives. Every member
is one row (or the shard's one error row says why it is not read), nothing blocks, and a
--resume writes each member once."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import http.server
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run, write_tar

from cnnbench.infer.sources import shards
from cnnbench.infer.sources.fetch import read_item


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _infer(model: Path, out: Path, *args: str) -> str:
    code, output = run(["infer", str(model), *args, "-o", str(out), "--no-progress"])
    assert code == 0, output
    return output


def _paths(out: Path) -> list[str]:
    errors = out.with_name(f"{out.stem}.errors{out.suffix}")
    return [r["path"] for r in read_csv(out)] + [r["path"] for r in read_csv(errors)]


def test_a_name_met_again_in_a_shard_is_a_row_of_its_own(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A second member of a name was an error row under the first one's path: a --resume
    after the first one's row took the second one as done too (its row was never
    written, and the summary counted it as resumed), and an @list dropped it as a file
    listed again. Each copy now has a path of its own, `name (2)`, one no member has."""
    photo = photo_jpeg
    names = ["a.jpg", "b.jpg", "a.jpg", "a.jpg (3)", "a.jpg", "c.jpg"]
    shard = write_tar(tmp_path / "d.tar", [(name, photo) for name in names])
    out = tmp_path / "o.csv"
    _infer(tiny_model, out, str(shard), "--limit", "2", "--batch-size", "1", "--extensions", "*")
    _infer(tiny_model, out, str(shard), "--resume", "--batch-size", "1", "--extensions", "*")
    expected = ["a.jpg", "b.jpg", "a.jpg (3)", "c.jpg", "a.jpg (2)", "a.jpg (4)"]
    assert _paths(out) == [f"d.tar/{n}" for n in expected]
    errors = read_csv(tmp_path / "o.errors.csv")
    assert {e["error"] for e in errors} == {
        "a member named a.jpg came before it in the shard: only the first of a name is read; "
        "rename one"
    }
    (tmp_path / "list.txt").write_text(f"{shard}\n")
    _infer(tiny_model, tmp_path / "l.csv", f"@{tmp_path / 'list.txt'}", "--extensions", "*")
    assert _paths(tmp_path / "l.csv") == [f"{shard}/{n}" for n in expected]


def test_a_shard_that_is_no_file_is_its_error_row_without_waiting(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A named pipe named like a shard was opened to read, which waits for a writer: the
    run blocked for good. It, a folder and a symlink loop named like shards are each the
    shard's error row, saying what it is; the shards beside them are read."""
    write_tar(tmp_path / "s-0.tar", [("a.jpg", photo_jpeg)])
    os.mkfifo(tmp_path / "s-1.tar")
    (tmp_path / "s-2.tar").mkdir()
    (tmp_path / "s-3.tar").symlink_to("s-3.tar")
    out = tmp_path / "o.csv"
    args = [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), "s-{0..3}.tar"]
    done = subprocess.run(
        [*args, "-o", str(out), "--no-progress"], cwd=tmp_path, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _paths(out) == ["s-0.tar/a.jpg", "s-1.tar", "s-2.tar", "s-3.tar"]
    assert [e["error"] for e in read_csv(tmp_path / "o.errors.csv")] == [
        "shard unreadable: not a regular file but a named pipe (FIFO)",
        "shard unreadable: not a regular file but a directory",
        "shard unreadable: too many levels of symbolic links",
    ]


def test_braces_are_a_pattern_of_shards_only(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unbalanced braces (`a{b.tar`, or `u{n.jpg`, no shard at all) were a traceback, on
    the command line and in an @list; a file or folder whose name holds a brace pair
    was expanded and refused as missing; a pattern whose first shard is missing was
    refused though others exist. Braces make a pattern of shards only, where a file of
    that very name is not there; the shards a pattern names that are missing are rows."""
    monkeypatch.chdir(tmp_path)
    for name in ("a{b.tar", "s-1.tar", "s-2.tar"):
        write_tar(tmp_path / name, [("k.jpg", photo_jpeg)])
    (tmp_path / "photos{a,b}").mkdir()
    for name in ("u{n.jpg", "v{1,2}.jpg", "photos{a,b}/x.jpg"):
        (tmp_path / name).write_bytes(photo_jpeg)
    for given in ("a{b.tar", "u{n.jpg", "v{1,2}.jpg", "photos{a,b}"):
        _infer(tiny_model, tmp_path / "o.csv", given)
        assert len(read_csv(tmp_path / "o.csv")) == 1, given
    _infer(tiny_model, tmp_path / "o.csv", "s-{3..1}.tar")
    assert _paths(tmp_path / "o.csv") == ["s-2.tar/k.jpg", "s-1.tar/k.jpg", "s-3.tar"]
    (tmp_path / "list.txt").write_text("q{1.tar\ns-{1..2}.tar\n")
    _infer(tiny_model, tmp_path / "l.csv", "@list.txt")
    assert _paths(tmp_path / "l.csv") == ["s-1.tar/k.jpg", "s-2.tar/k.jpg", "q{1.tar"]
    for pattern, why in (("s-{7..8}.tar", "nor any of the 2 shards"), ("s-{1,1}.tar", "twice")):
        code, output = run(["infer", str(tiny_model), pattern, "-o", "x.csv"])
        assert_one_line_error(code, output, pattern, why)


def test_a_range_of_billions_of_shards_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """A slip of the range (`{0..9999999999}`): braceexpand holds a range whole, so 100
    million names took 8 GB in 30 s, and ten billion, in an @list, got the process killed
    for its memory. Past a million shards it is one line, on the command line or in a
    list (the child's address space capped at 4 GB: a slip fails there, not the machine)."""
    (tmp_path / "list.txt").write_text("x-{0..9999999999}.tar\n")
    cap = 4 << 30

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    for given in ("x-{0..9999999999}.tar", "x-{0..999}-{0..9999}.tar", "@list.txt"):
        done = subprocess.run(
            [sys.executable, "-m", "cnnbench", "infer", str(tiny_model), given, "-o", "o.csv"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            preexec_fn=limited,
        )
        pattern = given if not given.startswith("@") else "x-{0..9999999999}.tar"
        assert_one_line_error(
            done.returncode, done.stderr, f"{pattern} names more than 1,000,000 shards"
        )


def test_shards_appended_to_one_another_say_so_after_their_first_members(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """`cat a.tar.gz b.tar.gz > ab.tar.gz` is one gzip stream of two archives: b's
    members were dropped without a word, the run exiting 0 as if it had read them all."""
    a = write_tar(tmp_path / "a.tar.gz", [("a.jpg", photo_jpeg)]).read_bytes()
    b = write_tar(tmp_path / "b.tar.gz", [("b.jpg", photo_jpeg)]).read_bytes()
    (tmp_path / "ab.tar.gz").write_bytes(a + b)
    _infer(tiny_model, tmp_path / "o.csv", str(tmp_path / "ab.tar.gz"))
    assert _paths(tmp_path / "o.csv") == ["ab.tar.gz/a.jpg", "ab.tar.gz"]
    (error,) = read_csv(tmp_path / "o.errors.csv")
    assert error["error"].startswith("shard unreadable after 1 members (last: a.jpg): the archive")
    assert f"a member's header follows at byte {len(gzip.decompress(a))}" in error["error"]


def test_a_shard_listed_under_two_spellings_is_read_once(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list naming `s.tar`, `./s.tar` and its absolute path read each member three
    times, under three paths (a file so listed is read once); a broken shard's row too."""
    monkeypatch.chdir(tmp_path)
    write_tar(tmp_path / "s.tar", [("a.jpg", photo_jpeg), ("b.jpg", photo_jpeg)])
    (tmp_path / "cut.tar").write_bytes(b"\x01" * 700)
    lines = ["s.tar", "./s.tar", str(tmp_path / "s.tar"), "s{,}.tar", "cut.tar", "./cut.tar"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    output = _infer(tiny_model, tmp_path / "o.csv", "@list.txt")
    assert _paths(tmp_path / "o.csv") == ["s.tar/a.jpg", "s.tar/b.jpg", "cut.tar"]
    assert "9 list entries named a file listed before" in output


def test_a_shard_is_read_as_gzip_or_tar_by_its_bytes_not_its_name(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A gzip stream named `.tar` was a garbled header at byte 0, a plain tar named
    `.tar.gz` 'Not a gzipped file': every member lost, where WebDataset (tarfile's
    "r|*") reads both. A plain tar's members keep their offsets, by name or not."""
    plain = write_tar(tmp_path / "p.tar", [("a.jpg", photo_jpeg)]).read_bytes()
    (tmp_path / "g.tar").write_bytes(gzip.compress(plain))
    (tmp_path / "t.tar.gz").write_bytes(plain)
    _infer(tiny_model, tmp_path / "o.csv", str(tmp_path / "g.tar"), str(tmp_path / "t.tar.gz"))
    assert _paths(tmp_path / "o.csv") == [f"{tmp_path}/g.tar/a.jpg", f"{tmp_path}/t.tar.gz/a.jpg"]
    (gz,) = shards.members(str(tmp_path / "g.tar"), "", None)
    (tar,) = shards.members(str(tmp_path / "t.tar.gz"), "", None)
    assert gz.offset is None and tar.offset == 512 and gz.data == tar.data == photo_jpeg
    assert read_item(dataclasses.replace(tar, data=None)) == photo_jpeg


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Sends its shard's first byte, then the rest a moment later: a stream's first read
    gets one byte."""

    shard = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.shard)))
        self.end_headers()
        self.wfile.write(self.shard[:1])
        self.wfile.flush()
        time.sleep(0.2)
        self.wfile.write(self.shard[1:])

    def log_message(self, *args: object) -> None:
        pass


def test_a_gzip_shard_whose_first_byte_comes_alone_is_read_as_gzip(
    photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A shard by https:// is one streamed GET: its first read may get one byte, and
    gzip's two-byte mark was then missed (every member lost as a garbled header)."""
    plain = write_tar(tmp_path / "p.tar", [("a.jpg", photo_jpeg)]).read_bytes()
    _Trickle.shard = gzip.compress(plain)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/g.tar.gz"
        assert [(i.name, i.error, i.data) for i in shards.members(url, "", None)] == [
            ("a.jpg", None, photo_jpeg)
        ]
    finally:
        server.shutdown()
        server.server_close()
