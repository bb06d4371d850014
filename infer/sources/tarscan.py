"""The regular members of a tar stream with their bytes, read front to back in big reads.

Why not `tarfile` alone: decoding a header in `tarfile.TarInfo.frombuf` costs ~12 us of
pure Python (every field through `nti`/`nts`, two checksums through `struct`), twice per
member in PAX shards (Python's own writer puts a pax header before each member); with
tarfile a member cost 48 us of CPU (PAX; 27 us GNU) against 16 us for listing and reading
a photo from its own file, and tar shards ran mnist_cnn at 0.91-0.95x a local folder.
libarchive through `libarchive-c` measured 22 us a member, and needs the system's
libarchive. So the headers that tar writers produce (Python's tarfile and GNU tar, in
PAX, GNU and ustar formats) are decoded here, from slices of 512 KiB reads: 1.3-1.5 us a
header, 15 us a member with its bytes (PAX; 13 us GNU), at parity with a local folder
(0.98-1.04x; docs/benchmarks.md, "infer: inputs by URL and from tar shards"). Anything
else goes to `tarfile`:

- a header whose number fields are not in the usual octal forms (base-256 sizes, odd
  padding) or whose unsigned checksum does not match is decoded by `TarInfo.frombuf`
  (which also knows the signed checksum some old tars write);
- a header `frombuf` rejects, a cut header, global pax headers ('g'), sparse members,
  pax records that change how a member is read (`GNU.sparse.*`; `hdrcharset` beside a
  `path`), repeated extension headers: the shard is read by `tarfile` from that member's
  first header on, so such a member and every error it raises are exactly `tarfile`'s.

What is taken from a header is what `tarfile` takes: the name (`prefix` + `name`, a GNU
'L' long name, a pax `path`; of several, the first header's), the size (a pax `size`
over the header's), the type (regular: '0', NUL, '7'; NUL with a trailing '/' is a
folder). Only regular members are handed on; the others are stepped over as `tarfile`
steps over them (links, folders and devices carry no data; unknown types do). A member
whose bytes, or their padding, end early raises `tarfile.ReadError("unexpected end of
data")`, as `tarfile`'s random-access mode does; a block of zeros where a header starts
ends the archive, as in `tarfile` (the second block is not looked for), but where a
member's header follows the zeros (archives appended to one another), `AfterEnd` says so
where tarfile would drop those members without a word.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

BLOCK = 512
READ_SIZE = 512 << 10  # bytes per read of the shard (256 KiB-1 MiB measured best: L2-sized)
MAX_READ = 64 << 20  # bytes per read at most, for a member bigger than READ_SIZE
_ZEROS = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")  # tarfile.REGULAR_TYPES less GNU sparse, which tarfile reads
_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, folders: nothing follows
_EXTENSIONS = (b"x", b"L", b"K")  # pax, GNU long name, GNU long link name
_TO_TARFILE = (b"g", b"X", b"S")  # global pax, Solaris pax, GNU sparse
# The number fields as tar writers write them (octal digits ended by NUL and/or space),
# from byte 100 of a header: mode, uid, gid (8 bytes), size, mtime (12), the checksum,
# then (past the type, link name, magic, version, user and group names) devmajor and
# devminor, which may also be NULs. Anything else is `frombuf`'s to decode.
_O8 = rb"(?:[0-7]{7}[\0 ]|[0-7]{6} \0)"
_O12 = rb"[0-7]{11}[\0 ]"
_NUMBERS = re.compile(
    _O8 * 3 + _O12 * 2 + rb"[0-7]{6}\0 " + rb".{173}" + rb"(?:[0-7]{7}[\0 ]|[0-7]{6} \0|\0{8}){2}",
    re.DOTALL,
)
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")  # tarfile's own pattern for a record
_ENCODING, _ERRORS = tarfile.ENCODING, "surrogateescape"  # tarfile's defaults for reading


class Stream(Protocol):
    """What is read: a file, gzip's reader, a streamed object."""

    def read(self, n: int, /) -> bytes: ...


# (name, offset of the bytes in the stream or None, bytes) of one regular member
Member = tuple[str, int | None, bytes]


@dataclass(frozen=True)
class NotRegular:
    """A member that is no file's bytes (a link, a device, a FIFO), named in the archive:
    an input that cannot be read, said so rather than passed over."""

    name: str
    what: str


_KINDS = {  # what a member of each tar type is (folders are left out: they hold nothing)
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"6": "a named pipe (FIFO)",
}


@dataclass(frozen=True)
class Oversized:
    """A regular member over the size the caller reads at all: stepped over, unread."""

    name: str
    size: int


class CutShort(Exception):
    """A header that is not the end-of-archive block: tarfile would end quietly."""


class AfterEnd(CutShort):
    """A member's header after the end-of-archive block (archives appended to one
    another, a block zeroed): tar and tarfile end there, and drop the members after it
    without a word."""


class CheckedInfo(tarfile.TarInfo):
    """Raises where tarfile would take a missing, cut or garbled header for the end of
    the archive and drop the members after it without a word."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> CheckedInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            problem = type(e).__name__
            if problem == "EOFHeaderError":  # a block of zeros: the archive's proper end
                raise
            why = _HEADER_PROBLEMS.get(problem, f"garbled member header at byte {tar.offset}")
            raise CutShort(f"{why} ({e})") from e


# tarfile's header errors (its private names), as the reason in the error row
_HEADER_PROBLEMS = {
    "EmptyHeaderError": "the file ends early: the end-of-archive blocks are missing",
    "TruncatedHeaderError": "the file ends early, inside a member's header",
}


def regular_members(
    raw: Stream,
    want: Callable[[str], bool],
    read_size: int = READ_SIZE,
    others: bool = False,
    max_size: int | None = None,
) -> Iterator[Member | NotRegular | Oversized]:
    """The regular members of the tar stream `raw` whose names `want` takes, in the
    archive's order, each with its offset in the stream (None for a GNU sparse member:
    its bytes are not one range) and its bytes; one over `max_size` bytes as `Oversized`,
    its bytes stepped over; with `others`, the links, devices and FIFOs `want` takes too,
    as `NotRegular`. Raises what `tarfile` raises for a broken archive (`CutShort` for a
    header that is not the archive's end)."""
    blocks = _Blocks(raw, read_size)
    while True:
        read: list[bytes] = []  # the blocks of this member's headers, for tarfile
        head = _member_head(blocks, read)
        if head is None:  # a header for tarfile: it reads from this member on
            blocks.unread(b"".join(read))
            yield from _by_tarfile(blocks, want, others, max_size)
            return
        if head is _END:
            _check_after_end(blocks, blocks.tell() - BLOCK)
            return
        name, kind, size = head
        padded = -(-size // BLOCK) * BLOCK
        taken = kind in _REGULAR and want(name)  # `want` counts what it leaves out: once
        if taken and max_size is not None and size > max_size:
            yield Oversized(name, size)
        elif taken:
            offset = blocks.tell()
            data = blocks.take(size)
            if len(data) < size:
                raise tarfile.ReadError("unexpected end of data")
            yield name, offset, data
            padded -= size
        elif kind in _NO_DATA:
            padded = 0
            if others and kind in _KINDS and want(name):
                yield NotRegular(name, _KINDS[kind])
        if blocks.skip(padded) < padded:
            raise tarfile.ReadError("unexpected end of data")


_END = ("", b"", 0)  # the end-of-archive block


def _check_after_end(blocks: _Blocks, end: int) -> None:
    """Raises AfterEnd where a member's header follows the end-of-archive block at byte
    `end`, after any blocks of zeros; anything else there (a record's padding, junk) is
    passed over, as tar passes over it."""
    block = _ZEROS
    while block == _ZEROS:
        at = blocks.tell()
        block = blocks.take(BLOCK)
    if len(block) == BLOCK and _header(block) is not None:
        raise AfterEnd(
            f"the archive ends at byte {end} (a block of zeros), but a member's header follows "
            f"at byte {at}: the members from there are not read (archives appended to one "
            "another?); write them as one archive"
        )


def _member_head(blocks: _Blocks, read: list[bytes]) -> tuple[str, bytes, int] | None:
    """(name, type, size) of the next member, its extension headers applied; `_END` at
    the end-of-archive block; None where tarfile must read it (`read` then holds the
    blocks taken)."""
    name: str | None = None
    size: int | None = None
    seen: set[bytes] = set()  # the extension headers met
    while True:
        block = blocks.take(BLOCK)
        read.append(block)
        if block == _ZEROS and len(read) == 1:
            return _END
        head = _header(block) if len(block) == BLOCK else None
        if head is None:
            return None
        own_name, kind, own_size = head
        if kind in _EXTENSIONS:
            if kind in seen:
                return None  # a repeated extension header: tarfile's rules, tarfile's job
            seen.add(kind)
            padded = -(-own_size // BLOCK) * BLOCK
            data = blocks.take(padded)
            read.append(data)
            if len(data) < padded:
                return None
            if kind == b"x":
                pax = _pax(data)
                if pax is None:
                    return None
                name = pax[0] if name is None else name
                size = pax[1] if size is None else size
            elif kind == b"L" and name is None:
                name = _text(data)
            continue
        if kind in _TO_TARFILE:
            return None
        return (own_name if name is None else name), kind, (own_size if size is None else size)


def _header(block: bytes) -> tuple[str, bytes, int] | None:
    """(name, type, size) of one header block as `TarInfo.frombuf` reads them (the name
    left empty for an extension header); None where frombuf would raise."""
    if _NUMBERS.match(block, 100) and _checksum_ok(block):
        kind, size = block[156:157], int(block[124:135], 8)
        if kind in _EXTENSIONS:
            return "", kind, size
        name = _text(block[:100])
        if kind == b"\0" and name.endswith("/"):
            kind = b"5"
        if block[345] and kind != b"S":  # a ustar prefix
            name = f"{_text(block[345:500])}/{name}"
        return name, kind, size
    try:
        info = tarfile.TarInfo.frombuf(block, _ENCODING, _ERRORS)
    except tarfile.HeaderError:
        return None
    return info.name, info.type, info.size


def _checksum_ok(block: bytes) -> bool:
    """The header's unsigned checksum: the sum of its bytes, the checksum field counted
    as 8 spaces. Summed by zlib.adler32, whose low 16 bits are 1 + the sum of the bytes
    modulo 65521: exact for 256 bytes (at most 65,280), so two halves give the sum, in
    a tenth of the time of Python's sum() over the block."""
    total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    return total - sum(block[148:156]) + 256 == int(block[148:154], 8)


def _pax(data: bytes) -> tuple[str | None, int | None] | None:
    """(path, size) of a pax extended header, each None where absent, as tarfile
    applies them (its record loop, its decoding); None where a record changes how
    tarfile reads the member: GNU sparse maps, a path in another charset."""
    path: str | None = None
    size: int | None = None
    pos = 0
    while match := _PAX_RECORD.match(data, pos):
        length, keyword = int(match[1]), match[2]
        if length == 0 or keyword.startswith(b"GNU.sparse."):
            return None  # tarfile: "invalid header"; a sparse member
        value = data[match.end(2) + 1 : match.start(1) + length - 1]
        if keyword == b"path":
            if b"hdrcharset=" in data:  # tarfile looks for it anywhere in the header
                return None
            path = _pax_text(value).rstrip("/")
        elif keyword == b"size":
            try:
                size = int(_pax_text(value))
            except ValueError:
                size = 0  # as tarfile
            if size < 0:
                return None
        pos += length
    return path, size


def _text(field: bytes) -> str:
    """A NUL-terminated header field as tarfile decodes it (`tarfile.nts`)."""
    return field.split(b"\0", 1)[0].decode(_ENCODING, _ERRORS)


def _pax_text(value: bytes) -> str:
    """A pax value as tarfile decodes it: UTF-8, else its encoding with surrogates."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode(_ENCODING, _ERRORS)


def _by_tarfile(
    blocks: _Blocks, want: Callable[[str], bool], others: bool, max_size: int | None
) -> Iterator[Member | NotRegular | Oversized]:
    """The rest of the stream read by tarfile's random-access mode over forward seeks."""
    rest = _Rest(blocks)  # not an IO[bytes]: it has the read, seek and tell tarfile uses
    with tarfile.open(fileobj=rest, mode="r:", tarinfo=CheckedInfo) as tar:  # type: ignore[call-overload]
        for member in tar:
            taken = member.isfile() and want(member.name)
            if taken and max_size is not None and member.size > max_size:
                yield Oversized(member.name, member.size)
            elif taken:
                extracted = tar.extractfile(member)
                assert extracted is not None, "a regular member always extracts"
                offset = None if member.sparse is not None else member.offset_data
                yield member.name, offset, extracted.read()
            elif others and member.type in _KINDS and want(member.name):
                yield NotRegular(member.name, _KINDS[member.type])
        _check_after_end(blocks, tar.offset)


class _Blocks:
    """A stream read in big reads, handed out as slices: `take(n)` copies n bytes of
    the current read, not a read call per member."""

    def __init__(self, raw: Stream, read_size: int) -> None:
        self.raw, self.read_size = raw, read_size
        self.buf, self.pos = b"", 0
        self.end = 0  # bytes read from `raw`: the stream offset of the end of `buf`

    def tell(self) -> int:
        return self.end - len(self.buf) + self.pos

    def take(self, n: int) -> bytes:
        """The next `n` bytes; fewer only where the stream ends."""
        end = self.pos + n
        if end <= len(self.buf):
            self.pos = end
            return self.buf[end - n : end]
        parts = [self.buf[self.pos :]]
        need = n - len(parts[0])
        self.buf, self.pos = b"", 0
        while need > 0:
            chunk = self._read(need)
            if not chunk:
                break
            if len(chunk) > need:
                self.buf, self.pos = chunk, need
                parts.append(chunk[:need])
                break
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def skip(self, n: int) -> int:
        """Steps over `n` bytes, holding no more than a read of them; how many there were."""
        if self.pos + n <= len(self.buf):
            self.pos += n
            return n
        skipped = len(self.buf) - self.pos
        self.buf, self.pos = b"", 0
        while skipped < n:
            chunk = self._read(n - skipped)
            if not chunk:
                break
            if skipped + len(chunk) > n:
                self.buf, self.pos = chunk, n - skipped
                return n
            skipped += len(chunk)
        return skipped

    def _read(self, need: int) -> bytes:
        """One read of the stream: READ_SIZE, or what a bigger member needs, up to
        MAX_READ (a header may claim any size: the stream's end says how much there is)."""
        chunk = self.raw.read(min(max(self.read_size, need), MAX_READ))
        self.end += len(chunk)
        return chunk

    def unread(self, data: bytes) -> None:
        """Puts back the bytes just taken."""
        self.buf, self.pos = data + self.buf[self.pos :], 0


class _Rest:
    """The rest of a stream, as `tarfile`'s random-access mode reads it: offsets from
    the stream's start, forward seeks."""

    def __init__(self, blocks: _Blocks) -> None:
        self.blocks = blocks

    def read(self, n: int) -> bytes:
        return self.blocks.take(n)

    def tell(self) -> int:
        return self.blocks.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        assert whence == 0, "tarfile seeks to offsets from the start"
        ahead = offset - self.blocks.tell()
        if ahead < 0:
            raise tarfile.ReadError(f"a shard is read front to back (a seek back to {offset})")
        self.blocks.skip(ahead)
        return self.blocks.tell()
