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
from typing import IO, Any

from cnnbench.infer.sources import stores
from cnnbench.infer.sources.items import Item, wanted

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_BROKEN = (tarfile.TarError, EOFError, zlib.error, OSError)  # and _CutShort, below


def is_shard(text: str) -> bool:
    return text.lower().endswith(SHARD_SUFFIXES)


def expand(text: str) -> list[str]:
    """`shards-{000000..000002}.tar` -> its three names, as WebDataset expands them;
    text without braces: itself."""
    if "{" not in text:
        return [text]
    from braceexpand import braceexpand

    return list(braceexpand(text))


class _CutShort(Exception):
    """A header that is not the end-of-archive block: tarfile would end quietly."""


class _CheckedInfo(tarfile.TarInfo):
    """Raises where tarfile would take a missing, cut or garbled header for the end of
    the archive and drop the members after it without a word."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> _CheckedInfo:
        try:
            return super().fromtarfile(tar)
        except tarfile.HeaderError as e:
            problem = type(e).__name__
            if problem == "EOFHeaderError":  # a block of zeros: the archive's proper end
                raise
            why = _HEADER_PROBLEMS.get(problem, f"garbled member header at byte {tar.offset}")
            raise _CutShort(f"{why} ({e})") from e


# tarfile's header errors (its private names), as the reason in the error row
_HEADER_PROBLEMS = {
    "EmptyHeaderError": "the file ends early: the end-of-archive blocks are missing",
    "TruncatedHeaderError": "the file ends early, inside a member's header",
}


def _open(shard: str) -> IO[bytes]:
    if stores.is_url(shard):
        return stores.open_stream(shard)
    return open(shard, "rb")


def _compressed(shard: str) -> bool:
    return shard.lower().endswith((".gz", ".tgz"))


def _seekable(shard: str) -> bool:
    """A local uncompressed shard: its headers are read where they lie and each member's
    bytes by their offset, skipping tarfile's stream layer (a quarter of the CPU a member
    costs, measured in docs/benchmarks.md)."""
    return not stores.is_url(shard) and not _compressed(shard)


def _tar(shard: str, raw: IO[bytes]) -> tarfile.TarFile:
    """The shard opened for random access ("r:") where `_seekable`, else front to back."""
    if _seekable(shard):
        return tarfile.open(fileobj=raw, mode="r:", tarinfo=_CheckedInfo)
    stream: Any = raw
    if _compressed(shard):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    return tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedInfo)


def _data(tar: tarfile.TarFile, member: tarfile.TarInfo, raw: IO[bytes], seekable: bool) -> bytes:
    """A member's bytes: read at its offset in a seekable shard, else from the stream."""
    if seekable:
        raw.seek(member.offset_data)
        data = raw.read(member.size)
    else:
        extracted = tar.extractfile(member)
        assert extracted is not None, "a regular member always extracts"
        data = extracted.read()
    if len(data) < member.size:
        raise tarfile.ReadError("unexpected end of data")
    return data


def members(
    shard: str,
    prefix: str,
    extensions: tuple[str, ...] | None,
    skipped: Counter | None = None,
) -> Iterator[Item]:
    """The wanted members of one shard, with their bytes, named `prefix + member`;
    members left out by extension are counted in `skipped`. Whatever breaks the shard
    ends it with one error Item named after the shard (`prefix` without its '/')."""
    read = 0
    last = ""
    try:
        with _open(shard) as raw, _tar(shard, raw) as tar:
            seekable, compressed = _seekable(shard), _compressed(shard)
            for member in tar:
                name = member.name.removeprefix("./")
                if not member.isfile():
                    continue
                if not wanted(name, extensions, skipped):
                    continue
                data = _data(tar, member, raw, seekable)
                last, read = name, read + 1
                where = None if compressed else member.offset_data
                yield Item(shard, f"{prefix}{name}", data=data, size=len(data), offset=where)
    except (*_BROKEN, _CutShort) as e:
        yield _broken(shard, prefix, read, last, _why(e))


def _why(e: BaseException) -> str:
    if isinstance(e, stores.StoreError | _CutShort):
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
    return Item(shard, prefix.rstrip("/"), error=f"shard unreadable{after}: {why}")
