"""What a listing yields: one input image, where it is and what it is called."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """One input file: where it is (a local path or a URL; for a tar member, its shard),
    how it is named in the output, why it is already known to be unreadable (a folder
    that cannot be listed, a shard cut short), and its bytes when the listing read them
    already (a tar member, an object fetched ahead). A member of an uncompressed shard
    also has its `offset` in the shard, so that another process (a Ray worker) can read
    it alone, by a range read."""

    path: str
    name: str  # relative to its input root, '/'-separated
    error: str | None = None
    data: bytes | None = None
    size: int | None = None  # bytes, when the listing says (object stores, tar members)
    offset: int | None = None  # where a tar member's bytes start in its shard


NO_EXTENSION = "(none)"
# counted beside the extensions in a scan's `skipped`: a list entry naming a file that
# the lists (or the inputs beside them) named before; read once, its first time
LISTED_AGAIN = "(listed again)"


# a backslash that starts what `printable` escapes with: `\\` or `\xNN`
_LOOKS_ESCAPED = re.compile(r"\\(?:\\|x[0-9a-fA-F]{2})")


def printable(name: str) -> str:
    """`name` as the outputs write it: valid Unicode, and never another name's spelling.
    A file name's bytes that are not UTF-8 (Python carries them as surrogates) are
    written as `\\xNN`, as `ls -b` and Python show them, and such a name's backslashes,
    or those of a name holding `\\xNN` or `\\\\` itself, are doubled (otherwise two files
    could share a path, the key --resume skips by); any other name (nearly all) is itself."""
    if name.isascii() and "\\" not in name:
        return name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        escaped = name.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
        return escaped.decode("utf-8", "backslashreplace")
    return name.replace("\\", "\\\\") if _LOOKS_ESCAPED.search(name) else name


def extension_of(name: str) -> str:
    """'.gif' for 'a.GIF'; NO_EXTENSION for 'README' or '.hidden'."""
    return os.path.splitext(name)[1].lower() or NO_EXTENSION


def wanted(name: str, extensions: tuple[str, ...] | None, skipped: Counter | None) -> bool:
    """Whether a file found in a folder, prefix or shard is read; the others are
    counted in `skipped` by extension."""
    if extensions is None or name.lower().endswith(extensions):
        return True
    if skipped is not None:
        skipped[extension_of(name)] += 1
    return False
