"""tarscan against tarfile: the same members, offsets, bytes and errors, whatever the
format, the read size, and wherever a shard is cut or corrupted. The reference is how
shards were read before tarscan: tarfile's random-access mode over the whole stream."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnbench.infer.sources import tarscan

FORMATS = {"pax": tarfile.PAX_FORMAT, "gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT}
READ_SIZES = (512, 700, 4096, tarscan.READ_SIZE)  # a read smaller than a member, or not
LONG = "d" * 60 + "/" + "n" * 80 + ".jpg"  # 145 characters: pax path, GNU 'L', ustar prefix
Outcome = tuple[list[tarscan.Member], str | None]


def _everything(name: str) -> bool:
    return True


def _jpgs(name: str) -> bool:
    return name.endswith(".jpg")


def _by_tarfile(data: bytes, want: Callable[[str], bool] = _everything) -> Outcome:
    members: list[tarscan.Member] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", tarinfo=tarscan.CheckedInfo) as tar:
            for m in tar:
                if m.isfile() and want(m.name):
                    extracted = tar.extractfile(m)
                    assert extracted is not None
                    offset = None if m.sparse is not None else m.offset_data
                    members.append((m.name, offset, extracted.read()))
    except (tarfile.TarError, tarscan.CutShort) as e:
        return members, f"{type(e).__name__}: {e}"
    return members, None


def _scanned(
    data: bytes, read_size: int = tarscan.READ_SIZE, want: Callable[[str], bool] = _everything
) -> Outcome:
    members: list[tarscan.Member] = []
    try:
        members.extend(tarscan.regular_members(io.BytesIO(data), want, read_size))
    except (tarfile.TarError, tarscan.CutShort) as e:
        return members, f"{type(e).__name__}: {e}"
    return members, None


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
         **fields: object) -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = len(data), kind, 1_700_000_000.5  # pax: an mtime record
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _archive(fmt: int, **kwargs: object) -> bytes:
    """A WebDataset-like shard with what else tar files hold: long and non-ASCII names,
    './' names, a folder, links, a FIFO, empty and block-sized members."""
    rng = random.Random(fmt)
    buf = io.BytesIO()
    # kwargs: pax_headers, which the overloads do not take through **
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kwargs) as tar:  # type: ignore[call-overload]
        _add(tar, "000000.jpg", rng.randbytes(1000))
        _add(tar, "000000.cls", b"3")
        _add(tar, "./000001.jpg", rng.randbytes(512))
        _add(tar, "sub", kind=tarfile.DIRTYPE)
        _add(tar, LONG, rng.randbytes(3000))
        _add(tar, "link.jpg", kind=tarfile.SYMTYPE, linkname="000000.jpg")
        _add(tar, "sized-link.jpg", kind=tarfile.SYMTYPE, linkname="000000.jpg", size=700)
        _add(tar, "hard.jpg", kind=tarfile.LNKTYPE, linkname="000000.jpg")
        _add(tar, "pipe", kind=tarfile.FIFOTYPE)
        _add(tar, "empty.jpg", b"")
        _add(tar, "photo-\u00e9t\u00e9.jpg", rng.randbytes(2000))
        _add(tar, "000002.jpg", rng.randbytes(5000))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("read_size", READ_SIZES)
def test_members_offsets_and_bytes_are_tarfiles(fmt: str, read_size: int) -> None:
    data = _archive(FORMATS[fmt])
    expected = _by_tarfile(data)
    names = [name for name, _, _ in expected[0]]
    assert names == [
        "000000.jpg", "000000.cls", "./000001.jpg", LONG, "empty.jpg",
        "photo-\u00e9t\u00e9.jpg", "000002.jpg",
    ]  # fmt: skip
    assert expected[1] is None
    assert _scanned(data, read_size) == expected
    jpgs = _scanned(data, read_size, _jpgs)
    assert jpgs == _by_tarfile(data, _jpgs) and len(jpgs[0]) == 6


# a global pax header first: tarfile reads the members (tarscan's `_by_tarfile`)
@pytest.mark.parametrize(("fmt", "global_pax"), [*((f, False) for f in FORMATS), ("pax", True)])
def test_members_over_max_size_are_stepped_over_unread(fmt: str, global_pax: bool) -> None:
    """A member over `max_size` (larger than any image the run reads) is named with its
    size, its bytes not taken; the members after it are tarfile's, unchanged."""
    kwargs = {"pax_headers": {"comment": "global"}} if global_pax else {}
    data = _archive(FORMATS[fmt], **kwargs)
    expected, error = _by_tarfile(data)
    for read_size in READ_SIZES:
        got = list(tarscan.regular_members(io.BytesIO(data), _everything, read_size, max_size=2000))
        assert error is None and len(got) == len(expected)
        for member, (name, offset, body) in zip(got, expected, strict=True):
            if len(body) > 2000:
                assert member == tarscan.Oversized(name, len(body))
            else:
                assert member == (name, offset, body)
        assert any(isinstance(m, tarscan.Oversized) for m in got)


def _groups(data: bytes) -> list[bytes]:
    """Each member's headers (extension headers and its own), in order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [data[m.offset : m.offset_data] for m in tar if m.isfile()]


def test_extension_headers_in_any_order_are_read_as_tarfile_reads_them() -> None:
    """A pax path and a GNU long name on one member: the first header's wins (tarfile
    applies them outermost last); repeated pax headers go to tarfile itself."""
    body = b"x" * 700
    pax, gnu = (io.BytesIO(), io.BytesIO())
    for buf, fmt, name in (
        (pax, tarfile.PAX_FORMAT, "P" * 120),
        (gnu, tarfile.GNU_FORMAT, "L" * 130),
    ):
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            _add(tar, name + ".jpg", body)
    pax_group, gnu_group = _groups(pax.getvalue())[0], _groups(gnu.getvalue())[0]
    pax_ext, gnu_ext = pax_group[:-512], gnu_group[:-512]
    member = pax_group[-512:] + body + bytes(-len(body) % 512)
    end = bytes(1024)
    for spliced, winner in (
        (pax_ext + gnu_ext + member + end, "P" * 120 + ".jpg"),
        (gnu_ext + pax_ext + member + end, "L" * 130 + ".jpg"),
        (pax_ext + pax_ext + member + end, "P" * 120 + ".jpg"),
        (gnu_ext + gnu_ext + member + end, "L" * 130 + ".jpg"),
    ):
        expected = _by_tarfile(spliced)
        assert expected == ([(winner, len(spliced) - 1024 - 1024, body)], None)
        for read_size in READ_SIZES:
            assert _scanned(spliced, read_size) == expected


def _signed_checksum(data: bytes) -> bytes:
    """The first header's checksum rewritten as the signed sum some old tars write."""
    header = bytearray(data[:512])
    header[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in header)
    header[148:156] = b"%06o\0 " % signed
    return bytes(header) + data[512:]


UNUSUAL = {
    "global-pax": lambda: _archive(tarfile.PAX_FORMAT, pax_headers={"comment": "hi"}),
    "base-256-number": lambda: _base256_uid(),
    "signed-checksum": lambda: _signed_checksum(_one(tarfile.USTAR_FORMAT, "\u00e9" * 9)),
    "pax-size": lambda: _one(tarfile.PAX_FORMAT, "x.jpg", size="12"),
    "pax-hdrcharset": lambda: _one(tarfile.PAX_FORMAT, "x.jpg", hdrcharset="BINARY"),
    "pax-size-not-a-number": lambda: _one(tarfile.PAX_FORMAT, "x.jpg", size="big"),
    "pax-size-negative": lambda: _one(tarfile.PAX_FORMAT, "x.jpg", size="-5"),
}


@pytest.mark.parametrize("unusual", UNUSUAL)
def test_unusual_headers_read_as_tarfile_reads_them(unusual: str) -> None:
    data = UNUSUAL[unusual]()
    expected = _by_tarfile(data)
    assert expected[0]
    for read_size in READ_SIZES:
        assert _scanned(data, read_size) == expected


def _one(fmt: int, name: str, **pax: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.pax_headers = 20, pax
        tar.addfile(info, io.BytesIO(bytes(range(20))))
        _add(tar, "after.jpg", b"after")
    return buf.getvalue()


def _base256_uid() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "big-uid.jpg", b"abc", uid=8**8)  # GNU: base-256 past 7 octal digits
        _add(tar, "next.jpg", b"def")
    return buf.getvalue()


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write sparse members")
@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_sparse_members_are_tarfiles(fmt: str, tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.jpg"
    with sparse.open("wb") as f:
        f.write(b"start")
        f.seek(200_000)
        f.write(b"end")
    (tmp_path / "plain.jpg").write_bytes(b"plain")
    shard = tmp_path / "s.tar"
    files = ["sparse.jpg", "plain.jpg"]
    subprocess.run(
        ["tar", f"--format={fmt}", "-S", "-cf", str(shard), "-C", str(tmp_path), *files], check=True
    )
    data = shard.read_bytes()
    expected = _by_tarfile(data)
    assert [(n, o is None, len(b)) for n, o, b in expected[0]][-2:] == [
        ("sparse.jpg", True, 200_003),
        ("plain.jpg", False, 5),
    ]
    assert _scanned(data) == expected


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_a_shard_cut_anywhere_fails_as_with_tarfile(fmt: str) -> None:
    """Cut inside a header, an extension header's data, a member's bytes or padding,
    between members, inside the end blocks: the same members, then the same error."""
    data = _archive(FORMATS[fmt])
    for cut in [*range(0, len(data), 97), *range(0, len(data), 512)]:
        piece = data[:cut]
        expected = _by_tarfile(piece)
        assert _scanned(piece, 700) == expected, cut
        assert _scanned(piece, tarscan.READ_SIZE, _jpgs) == _by_tarfile(piece, _jpgs), cut


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_a_corrupt_byte_anywhere_fails_as_with_tarfile(fmt: str) -> None:
    """A byte changed in a header (its checksum no longer holds), in a pax record, or
    in a member's bytes: what tarfile reads, tarscan reads; where it stops, it stops."""
    data = _archive(FORMATS[fmt])
    broken = 0
    for at in range(0, len(data), 23):
        corrupt = bytearray(data)
        corrupt[at] ^= 0x5A
        expected = _by_tarfile(bytes(corrupt))
        broken += expected[1] is not None
        assert _scanned(bytes(corrupt), 700) == expected, at
    assert broken > 20  # headers were hit, not only members' bytes


def test_a_corrupt_checksum_is_a_garbled_header_at_its_offset() -> None:
    data = bytearray(_archive(tarfile.GNU_FORMAT))
    second = 512 + 1024  # 000000.jpg: header + 1000 bytes padded
    data[second + 150] ^= 1  # the checksum field of 000000.cls
    members, error = _scanned(bytes(data))
    assert [m[0] for m in members] == ["000000.jpg"]
    assert error == f"CutShort: garbled member header at byte {second} (bad checksum)"


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_tar_writers_write_is_read_without_tarfile(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speed of shards rests on this: the headers of Python's tarfile (each format)
    and of GNU tar never reach tarfile's own decoding."""
    data = {"tarfile": _archive(FORMATS[fmt])}
    if shutil.which("tar"):
        (tmp_path / "a.jpg").write_bytes(b"a" * 600)
        (tmp_path / LONG.split("/")[0]).mkdir()
        (tmp_path / LONG).write_bytes(b"b" * 700)
        flag = {"pax": "posix"}.get(fmt, fmt)
        out = tmp_path / "g.tar"
        files = ["a.jpg", LONG]
        subprocess.run(
            ["tar", f"--format={flag}", "-cf", str(out), "-C", str(tmp_path), *files], check=True
        )
        data["GNU tar"] = out.read_bytes()
    expected = {k: _by_tarfile(v) for k, v in data.items()}

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("tarfile was asked")

    monkeypatch.setattr(tarfile.TarInfo, "frombuf", refused)
    monkeypatch.setattr(tarfile, "open", refused)
    for writer, got in data.items():
        assert _scanned(got) == expected[writer], writer


def test_a_header_claiming_gigabytes_costs_no_more_memory_than_a_read(tmp_path: Path) -> None:
    """A member whose header (checksum and all) says 8 GiB, in a shard file that ends 1000
    bytes later: the error, without a read sized for what the header claims (a file's
    read allocates what it is asked for)."""
    import tracemalloc

    for name, want in (("big.jpg", _everything), ("big.bin", _jpgs)):
        info = tarfile.TarInfo(name)
        info.size = 8 << 30
        shard = tmp_path / "big.tar"
        shard.write_bytes(info.tobuf(tarfile.GNU_FORMAT) + bytes(1000))
        tracemalloc.start()
        try:
            with shard.open("rb", buffering=0) as raw, pytest.raises(tarfile.ReadError) as e:
                list(tarscan.regular_members(raw, want))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert str(e.value) == "unexpected end of data", name
        assert peak < 2 * tarscan.MAX_READ, (name, peak)


@pytest.mark.parametrize("global_pax", [False, True], ids=["scanned", "by-tarfile"])
def test_members_after_the_end_of_archive_are_said_not_dropped(global_pax: bool) -> None:
    """Two archives appended to one another (`cat a.tar b.tar`, or two gzip streams) or a
    block of zeros in the middle: tarfile ends at the first zero block and the members
    after it were gone without a word. After the members before it, AfterEnd says where
    the archive ended and where a header follows; junk or zeros there are passed over."""
    kwargs = {"pax_headers": {"comment": "global"}} if global_pax else {}
    first = _archive(tarfile.PAX_FORMAT, **kwargs)
    expected, error = _by_tarfile(first)
    assert error is None
    second = _one(tarfile.GNU_FORMAT, "second.jpg")
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        last = tar.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
    lone_zero = first[: last.offset] + bytes(512) + first[last.offset :]
    for data, ended, follows in (
        (first + second, end, len(first)),
        (lone_zero, last.offset, last.offset + 512),
    ):
        for read_size in READ_SIZES:
            got: list[object] = []
            with pytest.raises(tarscan.AfterEnd) as e:
                got.extend(tarscan.regular_members(io.BytesIO(data), _everything, read_size))
            assert got == (expected if data is not lone_zero else expected[:-1]), read_size
            assert f"the archive ends at byte {ended} (a block of zeros)" in str(e.value)
            assert f"a member's header follows at byte {follows}" in str(e.value)
    for tail in (b"junk" * 300, bytes(700), bytes(512) + b"\x01"):
        assert _scanned(first + tail) == (expected, None)
