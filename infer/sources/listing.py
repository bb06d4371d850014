"""Finding images: streamed, sorted scans of folders, files, list files, URLs and shards."""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import cv2

from cnnbench.files import IMAGE_SUFFIXES
from cnnbench.infer.errors import InferError
from cnnbench.infer.sources import shards, stores
from cnnbench.infer.sources.items import LISTED_AGAIN, Item, printable, wanted
from cnnbench.infer.sources.remote import url_items
from cnnbench.infer.sources.web import address_path, request_key

# What a folder scan reads by default: the formats cameras, phones, scanners and the web
# write. `--extensions '*'` reads every file (anything Pillow or OpenCV knows decodes).
IMAGE_EXTENSIONS = IMAGE_SUFFIXES
ALL_FILES = None  # `extensions` value for every file (`--extensions '*'`)
Extensions = tuple[str, ...] | None  # lower-case with the dot; None: every file


def expand_inputs(
    inputs: tuple[str, ...], extensions: Extensions = IMAGE_EXTENSIONS
) -> tuple[str, ...]:
    """Validate command-line inputs: local paths exist, URLs answer (one line when a
    bucket is missing, access is denied, credentials are absent or the endpoint is
    dead), brace patterns of shards expand to at least one that exists, no input is
    read twice (`_check_overlap`, by the folder scans' `extensions`); a URL that is a
    prefix comes back ending in '/'. `@list.txt` stays as is (read lazily by
    `scan_inputs`: there, prefixes must end in '/')."""
    seen: dict[str, None] = {}
    for text in inputs:
        path = text[1:] if text.startswith("@") else text
        if stores.is_url(path) and not text.startswith("@"):
            if stores.kind(shards.expand(path)[0]) == "directory" and not shards.is_shard(path):
                text = text.rstrip("/") + "/"
        elif not any(map(os.path.lexists, named := shards.expand(path))):
            what = "list file" if text.startswith("@") else "input path"
            none = f" (nor any of the {len(named):,} shards it names)" if len(named) > 1 else ""
            raise InferError(f"{what} does not exist: {path}{none}")
        if text.startswith("@") and os.path.isdir(path):  # a pipe is a list: @<(find ...)
            raise InferError(
                f"list file {path} is a folder: give it without '@' to read its images, "
                "or a file with one image path per line"
            )
        seen.setdefault(text, None)
    _check_overlap(tuple(seen), extensions)
    return tuple(seen)


def _check_overlap(inputs: tuple[str, ...], extensions: Extensions) -> None:
    """One line when an input is given twice under two spellings, or lies inside a
    folder or prefix also given (a file: one that the folder's scan reads, by
    `extensions`): its files would be read, and their rows written, twice. Lists are
    not opened here; a shard inside a folder is not one of its files."""
    # where each input is (its real path, or the URL; a folder or prefix ending in '/'),
    # and the input as given
    given: dict[str, str] = {}
    for text in inputs:
        if text.startswith("@"):
            continue
        for one in shards.expand(text) if shards.is_shard(text) else [text]:
            url = stores.is_url(one)
            key = request_key(one) if url else os.path.realpath(one)
            folder = one.endswith("/") if url else os.path.isdir(one)
            key = key.rstrip("/") + "/" if folder else key
            if given.get(key) == text:  # `s{,}.tar`
                raise InferError(f"input {text} names {one} twice: give each shard once")
            if key in given:
                raise InferError(
                    f"inputs {given[key]} and {text} are the same {'folder' if folder else 'file'}:"
                    " give it once"
                )
            given[key] = text
    for key, text in given.items():
        folder = key.endswith("/")
        if shards.is_shard(text) or not (folder or wanted(key, extensions, None)):
            continue
        parent = key.rstrip("/")
        while (cut := parent.rfind("/")) > max(parent.find("://") + 2, 0):
            parent = parent[:cut]
            if (outer := given.get(parent + "/")) is not None:
                raise InferError(
                    f"input {text} is inside input {outer}: its files would be read twice; "
                    "give only one of them"
                )


def scan_inputs(
    inputs: tuple[str, ...],
    extensions: Extensions,
    skipped: Counter | None = None,
    written: tuple[str, ...] = (),
    max_bytes: int | None = None,
) -> Iterator[Item]:
    """Every file under the inputs, in order. One folder, prefix or shard pattern: names
    relative to it (a shard's members as `shard.tar/member`); several inputs: names
    prefixed with the input as given, so that no two files share a name. Files in
    folders, prefixes and shards whose extension is not in `extensions` are counted in
    `skipped` (per lower-case extension); files named directly are always read. What the
    job itself writes (`written`: files, or folders of parts) is never one of its inputs,
    even inside an input folder or prefix. With a list among the inputs, a file named
    again (a list's line repeated, lists concatenated) is read once and counted in
    `skipped` as LISTED_AGAIN."""
    items = _scan_all(inputs, extensions, skipped, max_bytes, written)
    if any(text.startswith("@") for text in inputs):
        items = _once(items, skipped)
    yield from items


def _once(items: Iterator[Item], skipped: Counter | None) -> Iterator[Item]:
    """Each file once, the first time it comes; the others counted as LISTED_AGAIN.
    Lists are not checked for overlap up front (they are read as the scan goes, and
    may be pipes), so the files met are kept here: 16-byte digests of where each is
    (a local path made absolute, a URL; a tar member: its shard and name), about
    90 MB for a million lines (measured), where the paths themselves take more."""
    seen: set[bytes] = set()
    for item in items:
        where = request_key(item.path) if stores.is_url(item.path) else os.path.abspath(item.path)
        if shards.is_shard(item.path):  # the member, whichever way its shard is spelled
            where += "\0" + item.name.removeprefix(printable(_posix(item.path)))
        key = hashlib.blake2b(os.fsencode(where), digest_size=16).digest()
        if key in seen:
            if skipped is not None:
                skipped[LISTED_AGAIN] += 1
            continue
        seen.add(key)
        yield item


def _scan_all(
    inputs: tuple[str, ...],
    extensions: Extensions,
    skipped: Counter | None,
    max_bytes: int | None,
    written: tuple[str, ...],
) -> Iterator[Item]:
    single = len(inputs) == 1 and not inputs[0].startswith("@")
    for text in inputs:
        if text.startswith("@"):
            yield from _scan_list(text[1:], extensions, skipped, max_bytes, written)
        else:
            yield from _scan_one(text, single, extensions, skipped, max_bytes, written)


def _without_own(items: Iterator[Item], text: str, written: tuple[str, ...]) -> Iterator[Item]:
    """The items of the folder or prefix `text` (an input, or a list's line), less the
    job's own files inside it (`written`: files, or folders of parts)."""
    own = _as_scanned(text, written)
    if not own:  # the common case: no filter on every file
        return items
    under = tuple({f"{path}{sep}" for path in own for sep in ("/", os.sep)})
    return (i for i in items if i.path not in own and not i.path.startswith(under))


def _as_scanned(text: str, written: tuple[str, ...]) -> frozenset[str]:
    """The written paths that lie under the folder or prefix `text`, spelled as its scan
    spells the files it finds (the folder as given, then the path under it)."""
    if stores.is_url(text):
        return frozenset(w.rstrip("/") for w in written if w.startswith(text))
    root = os.path.realpath(text)
    own = set()
    for w in written:
        if not stores.is_url(w) and (real := os.path.realpath(w)).startswith(root + os.sep):
            own.add(os.path.join(text, os.path.relpath(real, root)))
    return frozenset(own)


def _scan_one(
    text: str,
    single: bool,
    extensions: Extensions,
    skipped: Counter | None,
    max_bytes: int | None = None,
    written: tuple[str, ...] = (),
) -> Iterator[Item]:
    """One input or list line: a folder, a file, a URL (object or prefix), or a shard
    (local or URL, or a brace pattern of them). What the job itself writes (`written`)
    is never one of a folder's or prefix's files."""
    if shards.is_shard(text):
        for shard in shards.expand(text):
            # one input: members named under the shard's file name (a URL's query left out)
            head = _posix(shard) if not single else os.path.basename(address_path(_posix(shard)))
            yield from shards.members(shard, f"{head}/", extensions, skipped, max_bytes)
    elif stores.is_url(text):
        items = url_items(text, "" if single else f"{text.rstrip('/')}/", extensions, skipped)
        yield from _without_own(items, text, written) if text.endswith("/") else items
    elif os.path.isdir(text):
        prefix = "" if single else f"{_posix(text).rstrip('/')}/"
        items = _scan_dir(text, prefix, extensions, frozenset(), skipped)
        yield from _without_own(items, text, written)
    else:
        yield Item(text, printable(_posix(text)))


def scan(
    root: str, extensions: Extensions = IMAGE_EXTENSIONS, skipped: Counter | None = None
) -> Iterator[Item]:
    """Files under one folder, prefix URL or shard (pattern), in order, streamed,
    named relative to it (a file: itself). A URL that cannot be reached: one line."""
    if stores.is_url(root) or shards.is_shard(root):
        yield from _scan_one(expand_inputs((root,))[0], True, extensions, skipped)
    elif not os.path.isdir(root):
        yield Item(root, printable(_posix(root)))
    else:
        yield from _scan_dir(root, "", extensions, frozenset(), skipped)


def folder_files(root: str) -> Iterator[Item]:
    """Every file under the local folder `root`, whatever its extension, in scan order
    (symlinked folders followed, loops cut, a tree of any depth); a folder that cannot be
    listed is an Item with its error. What `train` reads its class folders with."""
    yield from _scan_dir(root, "", None, frozenset())


def spread(total: int, count: int) -> list[int]:
    """`count` indices of `total`, evenly spread over them (the first and the last
    included); all of them when there are no more."""
    if total <= count:
        return list(range(total))
    if count == 1:
        return [0]
    return [round(k * (total - 1) / (count - 1)) for k in range(count)]


def is_folder_like(text: str) -> bool:
    """A folder, a URL (a prefix, checked when scanned) or a tar shard (pattern): what
    --calibration, --verify-images and --images take."""
    return os.path.isdir(text) or stores.is_url(text) or shards.is_shard(text)


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def _scan_list(
    list_path: str,
    extensions: Extensions,
    skipped: Counter | None,
    max_bytes: int | None,
    written: tuple[str, ...] = (),
) -> Iterator[Item]:
    """One path or URL per line (paths relative to the working directory); folders,
    prefixes and shards are scanned, less the job's own files (`written`). A line is
    UTF-8 (a byte-order mark before the first is dropped), or else a file name's own
    bytes, as `find` prints them. A NUL byte, which no path has (a list saved as
    UTF-16): one line naming it, where the scan reaches it."""
    with open(list_path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if b"\0" in raw:
                raise InferError(
                    f"list file {list_path}, line {number}: a NUL byte, which no path has "
                    "(saved as UTF-16?); write one image path per line, in UTF-8"
                )
            raw = raw.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if raw.strip():
                text = os.fsdecode(raw)
                yield from _scan_one(text, False, extensions, skipped, max_bytes, written)


def _scan_dir(
    path: str,
    prefix: str,
    extensions: Extensions,
    ancestors: frozenset,
    skipped: Counter | None = None,
) -> Iterator[Item]:
    """Sorted, streamed: only the names of the folders on the way down (not DirEntry
    objects) are held at a time. A stack, not recursion: a tree deeper than Python's
    recursion limit is scanned like any other."""
    top = _listed_dir(path, prefix, ancestors)
    if isinstance(top, Item):
        yield top
    stack = [top] if isinstance(top, _Listed) else []
    while stack:
        here = stack[-1]
        entry = next(here.entries, None)
        if entry is None:
            stack.pop()
            continue
        name, is_dir = entry
        full = os.path.join(here.path, name.rstrip("/"))
        if is_dir:
            sub = _listed_dir(full, f"{here.prefix}{name}", here.ancestors)
            if isinstance(sub, Item):
                yield sub
            elif sub is not None:
                stack.append(sub)
        elif wanted(name, extensions, skipped):
            yield Item(full, printable(f"{here.prefix}{name}"))


@dataclass
class _Listed:
    """A folder being scanned: where it is, its rows' prefix, the folders above it and
    itself (by device and inode), and its sorted entries not yet taken."""

    path: str
    prefix: str
    ancestors: frozenset
    entries: Iterator[tuple[str, bool]]


def _listed_dir(path: str, prefix: str, ancestors: frozenset) -> _Listed | Item | None:
    """A folder's sorted entries; an error Item when it cannot be listed; None when it
    is one of its own `ancestors` (a symlink loop: it is already being scanned)."""
    try:
        st = os.stat(path)
        with os.scandir(path) as it:
            # Sorted as the relative paths they lead to ('a/' after 'a.jpg'), which is
            # the order object stores list keys in: a prefix and a folder of the same
            # files give the same rows in the same order.
            entries = sorted((e.name + "/" * d, d) for e in it for d in (is_dir_entry(e),))
    except OSError as e:
        name = printable(prefix.rstrip("/") or _posix(path))
        return Item(path, name, f"cannot list folder: {reason(e)}")
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        return None
    return _Listed(path, prefix, ancestors | {key}, iter(entries))


def is_dir_entry(entry: os.DirEntry) -> bool:
    """Whether the entry leads to a folder; one whose target cannot be looked up (a
    symlink loop) is read as a file, and its error row says why."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def reason(e: BaseException) -> str:
    """A short readable reason for an unreadable file."""
    if isinstance(e, FileNotFoundError):
        return "file not found (broken symlink or removed during the run)"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, OSError) and e.errno == errno.ELOOP:
        return "a symlink loop (too many levels of symbolic links)"
    if isinstance(e, cv2.error):
        return f"corrupt: OpenCV: {' '.join(str(e).split())[:200]}"
    if isinstance(e, MemoryError):
        return "out of memory while decoding (lower --max-pixels or --workers)"
    return str(e) or type(e).__name__
