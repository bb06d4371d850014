"""Tar shards (WebDataset layout) read as folders of their members, streamed.

A `.tar`, `.tar.gz` or `.tgz` input, local or by URL, is read front to back without
extracting: each regular member whose extension is wanted becomes an Item carrying its
bytes (and, in an uncompressed shard, where they are), named `shard.tar/member`, in the
archive's order. `shards-{000000..000099}.tar`
expands as WebDataset expands it (the braceexpand package). A member that cannot be
read, a corrupt header or a shard that ends early (even exactly between two members:
the end-of-archive blocks are missing) becomes one error row; the other shards go on.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import IO

from cnnbench.infer.decode.probe import file_limit, too_large_file
from cnnbench.infer.sources import stores, tarscan
from cnnbench.infer.sources.items import Item, printable, wanted

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_BROKEN = (tarfile.TarError, EOFError, zlib.error, OSError)  # and tarscan.CutShort, below


def is_shard(text: str) -> bool:
    return text.lower().endswith(SHARD_SUFFIXES)


def expand(text: str) -> list[str]:
    """`shards-{000000..000002}.tar` -> its three names, as WebDataset expands them;
    text without braces: itself."""
    if "{" not in text:
        return [text]
    from braceexpand import braceexpand

    return list(braceexpand(text))


def _open(shard: str) -> IO[bytes]:
    """A local shard unbuffered (tarscan reads it in big reads), one by URL streamed."""
    return stores.open_stream(shard) if stores.is_url(shard) else open(shard, "rb", 0)


def _compressed(shard: str) -> bool:
    return shard.lower().endswith((".gz", ".tgz"))


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

    seen: set[str] = set()  # a name met twice would give two rows one path
    try:
        with _open(shard) as raw:
            compressed = _compressed(shard)
            stream: tarscan.Stream = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
            members = tarscan.regular_members(stream, want, others=True, max_size=limit)
            for member in members:
                named = member[0] if isinstance(member, tuple) else member.name
                name = named.removeprefix("./")
                last, read = name, read + 1
                path = printable(f"{prefix}{name}")
                if name in seen:
                    why = "a second member of this name in the shard: only the first is read"
                    yield Item(shard, path, error=f"{why}; rename one")
                elif isinstance(member, tarscan.NotRegular):
                    why = f"{member.what} in the shard, not a file: store the image itself"
                    yield Item(shard, path, error=why)
                elif isinstance(member, tarscan.Oversized):
                    yield Item(shard, path, error=too_large_file(member.size, limit))
                else:
                    _, offset, data = member
                    where = None if compressed else offset
                    yield Item(shard, path, data=data, size=len(data), offset=where)
                seen.add(name)
    except (*_BROKEN, tarscan.CutShort) as e:
        yield _broken(shard, prefix, read, last, _why(e))


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
    return text


def _broken(shard: str, prefix: str, read: int, last: str, why: str) -> Item:
    after = f" after {read} members (last: {last})" if read else ""
    return Item(shard, printable(prefix.rstrip("/")), error=f"shard unreadable{after}: {why}")
