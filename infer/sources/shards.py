"""Tar shards (WebDataset layout) read as folders of their members, streamed.

A `.tar`, `.tar.gz` or `.tgz` input, local or by URL (gzip or not by its first bytes),
is read front to back without extracting: each regular member whose extension is wanted
becomes an Item carrying its bytes (and, in an uncompressed shard, where they are),
named `shard.tar/member`, in the archive's order. `shards-{000000..000099}.tar` expands
as WebDataset expands it (the braceexpand package). A member that cannot be read, a
corrupt header, a shard that ends early (even exactly between two members: the
end-of-archive blocks are missing) or has members after its end (archives appended)
becomes one error row; the other shards go on.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import IO

from cnnbench.infer.decode.probe import file_limit, too_large_file
from cnnbench.infer.errors import InferError
from cnnbench.infer.sources import fetch, stores, tarscan, web
from cnnbench.infer.sources.items import Item, printable, wanted

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# A pattern's shards are listed before the first is read: 100 million names took 8 GB.
# A million shards of a thousand images is a billion images, more than a job reads.
MAX_PATTERN_SHARDS = 1_000_000
_BROKEN = (tarfile.TarError, EOFError, zlib.error, OSError)  # and tarscan.CutShort, below


def is_shard(text: str) -> bool:
    """Named like a tar shard; a URL by its path, whatever its query says (a presigned
    `https://.../s.tar?X-Amz-Signature=...` was read as one image, and failed)."""
    return web.address_path(text).lower().endswith(SHARD_SUFFIXES)


def expand(text: str) -> list[str]:
    """`shards-{000000..000002}.tar` -> its three names, as WebDataset expands them.
    Itself where it is no pattern of shards: text without braces or not named like a
    shard, a local file of that very name (`a{1,2}.tar`), unbalanced braces (`a{b.tar`)."""
    if "{" not in text or not is_shard(text):
        return [text]
    if not stores.is_url(text) and os.path.lexists(text):
        return [text]
    from braceexpand import braceexpand

    if _ranges_size(text) > MAX_PATTERN_SHARDS:  # braceexpand holds each range whole
        raise InferError(
            f"{text} names more than {MAX_PATTERN_SHARDS:,} shards: check its range, or "
            "split the job"
        )
    try:
        return list(braceexpand(text))
    except ValueError:  # its UnbalancedBracesError, which its type stub does not declare
        return [text]


_INT_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?\}")


def _ranges_size(text: str) -> int:
    """At least as many names as the pattern's integer ranges make together (their
    product; lists and letter ranges are as long as the text at most)."""
    size = 1
    for start, end, step in _INT_RANGE.findall(text):
        size *= abs(int(end) - int(start)) // max(abs(int(step or 1)), 1) + 1
    return size


def _open(shard: str) -> IO[bytes]:
    """A local shard unbuffered (tarscan reads it in big reads), one by URL streamed; a
    local one that is no file (a named pipe, which blocked the run for good; a folder)
    is refused."""
    return stores.open_stream(shard) if stores.is_url(shard) else fetch.open_regular(shard, 0)


class _Sniffed:
    """A shard's stream whose first bytes were read to tell gzip from tar, by content
    as WebDataset (tarfile's "r|*") tells them, not by name: a gzip stream named `.tar`,
    or a plain tar named `.tar.gz`, is read as what it is."""

    GZIP = b"\x1f\x8b"

    def __init__(self, raw: tarscan.Stream) -> None:
        self.raw, self.head = raw, raw.read(len(self.GZIP))
        while 0 < len(self.head) < len(self.GZIP):  # a stream may give one byte first
            if not (more := raw.read(len(self.GZIP) - len(self.head))):
                break
            self.head += more
        self.gzip = self.head == self.GZIP

    def read(self, n: int, /) -> bytes:
        if not self.head:
            return self.raw.read(n)
        data, self.head = self.head[:n], self.head[n:]
        return data + self.raw.read(n - len(data)) if n > len(data) else data

    def seek(self, offset: int, /) -> int:  # what gzip asks a file for; reading never seeks
        raise io.UnsupportedOperation("a shard is read front to back")


def members(
    shard: str,
    prefix: str,
    extensions: tuple[str, ...] | None,
    skipped: Counter | None = None,
    max_bytes: int | None = None,
) -> Iterator[Item]:
    """The wanted members of one shard, with their bytes, named `prefix + member`;
    members left out by extension are counted in `skipped`; one over `max_bytes` (None:
    `max_file_bytes()`) is an error Item, unread. Whatever breaks the shard ends it with
    one error Item named after the shard (`prefix` without its '/')."""
    limit = file_limit(max_bytes)
    read = 0
    last = ""

    def want(name: str) -> bool:
        return wanted(name.removeprefix("./"), extensions, skipped)

    seen: set[str] = set()  # the names given out: a path is a key of the output
    copies: Counter = Counter()  # per name met again, the last number given to a copy
    try:
        with _open(shard) as raw:
            sniffed = _Sniffed(raw)
            compressed = sniffed.gzip
            stream: tarscan.Stream = (
                gzip.GzipFile(fileobj=sniffed, mode="rb") if compressed else sniffed
            )
            members = tarscan.regular_members(stream, want, others=True, max_size=limit)
            for member in members:
                named = member[0] if isinstance(member, tuple) else member.name
                name = named.removeprefix("./")
                last, read = name, read + 1
                if name in seen:
                    again = _renamed(name, seen, copies)
                    seen.add(again)
                    why = f"a member named {name} came before it in the shard: only the first"
                    why += " of a name is read; rename one"
                    yield Item(shard, printable(f"{prefix}{again}"), error=why)
                    continue
                path = printable(f"{prefix}{name}")
                if isinstance(member, tarscan.NotRegular):
                    why = f"{member.what} in the shard, not a file: store the image itself"
                    yield Item(shard, path, error=why)
                elif isinstance(member, tarscan.Oversized):
                    yield Item(shard, path, error=too_large_file(member.size, limit))
                else:
                    _, offset, data = member
                    where = None if compressed else offset
                    yield Item(shard, path, data=data, size=len(data), offset=where)
                seen.add(name)
    except stores.NoAnswer as e:  # the store's failure, not the shard's: a --resume reads
        after = f" after {read} members" if read else ""  # the members after these
        raise stores.StoreDown(
            f"the store stopped answering while {shard} was read{after}: {e}"
        ) from e
    except (*_BROKEN, tarscan.CutShort) as e:
        yield _broken(shard, prefix, read, last, _why(e))


def _renamed(name: str, seen: set[str], copies: Counter) -> str:
    """The path of a member whose name came before in the shard: `name (2)`, `(3)`...,
    a name no member had, so that its error row never shares the first one's path
    (a --resume would take the member as done by the first one's row)."""
    number = max(copies[name] + 1, 2)
    while f"{name} ({number})" in seen:
        number += 1
    copies[name] = number
    return f"{name} ({number})"


def _why(e: BaseException) -> str:
    if isinstance(e, stores.StoreError | tarscan.CutShort):
        return str(e)
    text = str(e) or type(e).__name__
    if isinstance(e, EOFError | tarfile.ReadError) and (
        "end" in text.lower() or isinstance(e, EOFError)
    ):
        return f"the file ends early ({text})"
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, OSError) and e.strerror and e.filename:  # "[Errno 13] ...: 'x.tar'"
        return e.strerror.lower()  # permission denied, too many levels of symbolic links
    return text


def _broken(shard: str, prefix: str, read: int, last: str, why: str) -> Item:
    after = f" after {read} members (last: {last})" if read else ""
    return Item(shard, printable(prefix.rstrip("/")), error=f"shard unreadable{after}: {why}")
