"""Finding and decoding images: streamed sorted scans, OpenCV decode into uint8 HWC."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator

import cv2
import numpy as np

from cnnbench.infer.budget import decode_budget, decode_bytes
from cnnbench.infer.decoders import (
    DEFAULT_LIMITS,
    REDUCED,
    DecodeLimits,
    decode_pixels,
    pillow_image,
)
from cnnbench.infer.errors import InferError
from cnnbench.infer.probe import DecodeError, Header, read_header
from cnnbench.infer.resize import DEFAULT_POLICY, ResizePolicy, pillow_resize_into, resize_to
from cnnbench.infer.sources import shards, stores
from cnnbench.infer.sources.fetch import read_item, read_source
from cnnbench.infer.sources.items import NO_EXTENSION, Item, extension_of, wanted
from cnnbench.infer.sources.remote import url_items

# What a folder scan reads by default: the formats cameras, phones, scanners and the web
# write. `--extensions '*'` reads every file (anything Pillow or OpenCV knows decodes).
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".webp", ".gif",
    ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm", ".avif", ".jp2", ".mpo",
)  # fmt: skip
ALL_FILES = None  # `extensions` value for every file (`--extensions '*'`)
__all__ = ["NO_EXTENSION", "Item", "extension_of"]


def expand_inputs(inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Validate command-line inputs: local paths exist, URLs answer (one line when a
    bucket is missing, access is denied, credentials are absent or the endpoint is
    dead), brace patterns of shards expand to at least one that exists; a URL that is a
    prefix comes back ending in '/'. `@list.txt` stays as is (read lazily by
    `scan_inputs`: there, prefixes must end in '/')."""
    seen: dict[str, None] = {}
    for text in inputs:
        path = text[1:] if text.startswith("@") else text
        if stores.is_url(path) and not text.startswith("@"):
            if stores.kind(shards.expand(path)[0]) == "directory" and not shards.is_shard(path):
                text = text.rstrip("/") + "/"
        elif not os.path.lexists(shards.expand(path)[0]):
            what = "list file" if text.startswith("@") else "input path"
            raise InferError(f"{what} does not exist: {path}")
        if text.startswith("@") and not os.path.isfile(path):
            raise InferError(f"list file {path} is not a file: write one image path per line")
        seen.setdefault(text, None)
    return tuple(seen)


Extensions = tuple[str, ...] | None  # lower-case with the dot; None: every file


def scan_inputs(
    inputs: tuple[str, ...], extensions: Extensions, skipped: Counter | None = None
) -> Iterator[Item]:
    """Every file under the inputs, in order. One folder, prefix or shard pattern: names
    relative to it (a shard's members as `shard.tar/member`); several inputs: names
    prefixed with the input as given, so that no two files share a name. Files in
    folders, prefixes and shards whose extension is not in `extensions` are counted in
    `skipped` (per lower-case extension); files named directly are always read."""
    single = len(inputs) == 1 and not inputs[0].startswith("@")
    for text in inputs:
        if text.startswith("@"):
            yield from _scan_list(text[1:], extensions, skipped)
        else:
            yield from _scan_one(text, single, extensions, skipped)


def _scan_one(
    text: str, single: bool, extensions: Extensions, skipped: Counter | None
) -> Iterator[Item]:
    """One input or list line: a folder, a file, a URL (object or prefix), or a shard
    (local or URL, or a brace pattern of them)."""
    if shards.is_shard(text):
        for shard in shards.expand(text):
            head = _posix(shard) if not single else os.path.basename(_posix(shard))
            yield from shards.members(shard, f"{head}/", extensions, skipped)
    elif stores.is_url(text):
        yield from url_items(text, "" if single else f"{text.rstrip('/')}/", extensions, skipped)
    elif os.path.isdir(text):
        prefix = "" if single else f"{_posix(text).rstrip('/')}/"
        yield from _scan_dir(text, prefix, extensions, frozenset(), skipped)
    else:
        yield Item(text, _posix(text))


def scan(
    root: str, extensions: Extensions = IMAGE_EXTENSIONS, skipped: Counter | None = None
) -> Iterator[Item]:
    """Files under one folder, prefix URL or shard (pattern), in order, streamed,
    named relative to it (a file: itself). A URL that cannot be reached: one line."""
    if stores.is_url(root) or shards.is_shard(root):
        yield from _scan_one(expand_inputs((root,))[0], True, extensions, skipped)
    elif not os.path.isdir(root):
        yield Item(root, _posix(root))
    else:
        yield from _scan_dir(root, "", extensions, frozenset(), skipped)


def is_folder_like(text: str) -> bool:
    """A folder, a URL (a prefix, checked when scanned) or a tar shard (pattern): what
    --calibration, --verify-images and --images take."""
    return os.path.isdir(text) or stores.is_url(text) or shards.is_shard(text)


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def _scan_list(list_path: str, extensions: Extensions, skipped: Counter | None) -> Iterator[Item]:
    """One path or URL per line (paths relative to the working directory); folders,
    prefixes and shards are scanned."""
    with open(list_path, encoding="utf-8") as f:
        for line in f:
            path = line.rstrip("\r\n")
            if path.strip():
                yield from _scan_one(path, False, extensions, skipped)


def _scan_dir(
    path: str,
    prefix: str,
    extensions: Extensions,
    ancestors: frozenset,
    skipped: Counter | None = None,
) -> Iterator[Item]:
    """Sorted, streamed: only one folder's names (not DirEntry objects) are held at a time."""
    try:
        st = os.stat(path)
        with os.scandir(path) as it:
            # Sorted as the relative paths they lead to ('a/' after 'a.jpg'), which is
            # the order object stores list keys in: a prefix and a folder of the same
            # files give the same rows in the same order.
            entries = sorted((e.name + "/" * e.is_dir(), e.is_dir()) for e in it)
    except OSError as e:
        yield Item(path, prefix.rstrip("/") or _posix(path), f"cannot list folder: {reason(e)}")
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        return  # a symlink loop: the folder is already being scanned
    for name, is_dir in entries:
        full = os.path.join(path, name.rstrip("/"))
        if is_dir:
            yield from _scan_dir(full, f"{prefix}{name}", extensions, ancestors | {key}, skipped)
        elif wanted(name, extensions, skipped):
            yield Item(full, f"{prefix}{name}")


def reason(e: BaseException) -> str:
    """A short readable reason for an unreadable file."""
    if isinstance(e, FileNotFoundError):
        return "file not found (broken symlink or removed during the run)"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, cv2.error):
        return f"corrupt: OpenCV: {' '.join(str(e).split())[:200]}"
    if isinstance(e, MemoryError):
        return "out of memory while decoding (lower --max-pixels or --workers)"
    return str(e) or type(e).__name__


def reduction_for(header: Header, target: tuple[int, int]) -> int:
    """Largest JPEG DCT reduction (8, 4, 2) that keeps the short side >= the target's
    long side; 1 when none does or the file is not a JPEG."""
    if header.format != "JPEG":
        return 1
    short, need = min(header.height, header.width), max(target)
    return next((f for f, _ in REDUCED if short >= f * need), 1)


def decode(
    data: bytes,
    channels: int,
    bgr: bool = False,
    target: tuple[int, int] | None = None,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Encoded bytes -> uint8 HxWxC (RGB, BGR or gray), upright (EXIF orientation).

    The header is read first: an image over `limits.max_pixels` (counted as decoded,
    after JPEG's DCT reduction) or whose data ends early is refused before any decoder
    allocates for it (DecodeError, a ValueError, says why). Decodes share one byte
    budget. 16-bit images are scaled by their real depth, alpha is dropped, gray
    becomes 3 channels for colour models and colour becomes gray for 1-channel ones.
    With `target` (h, w), a large JPEG is decoded at 1/2, 1/4 or 1/8 size in the DCT
    domain. A truncated file read under `limits.allow_truncated` adds a line to `notes`.
    """
    header = read_header(data, limits.max_pixels)
    factor = reduction_for(header, target) if target else 1
    with _reserved(header, factor, limits, notes):
        image = decode_pixels(data, header, channels, bgr, factor, limits)
    return image.reshape(image.shape[0], image.shape[1], channels)


@contextlib.contextmanager
def _reserved(
    header: Header, factor: int, limits: DecodeLimits, notes: list[str] | None
) -> Iterator[None]:
    """Refuse a file over the pixel limit or truncated (unless allowed), then hold its
    share of the decode budget while the body decodes; a truncated file read adds a note."""
    height, width = header.decoded_size(factor)
    if height * width > limits.max_pixels:
        raise DecodeError(too_large(header, factor, limits.max_pixels))
    if header.truncated and not limits.allow_truncated:
        raise DecodeError(f"{header.truncated} (--allow-truncated predicts what decoded)")
    depth = 2 if header.bits else 1
    with decode_budget.reserve(decode_bytes(height * width, 4, depth)):
        yield
    if header.truncated and notes is not None:
        notes.append(header.truncated)


def too_large(header: Header, factor: int, limit: int) -> str:
    size = f"{header.width}x{header.height} = {header.pixels:,} pixels"
    if factor > 1:
        h, w = header.decoded_size(factor)
        size += f" (decoded at 1/{factor}: {w}x{h} = {h * w:,})"
    return f"too large: {header.format} of {size}, over the limit of {limit:,} (--max-pixels)"


def read_into(
    path: str,
    out: np.ndarray,
    bgr: bool = False,
    policy: ResizePolicy = DEFAULT_POLICY,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    notes: list[str] | None = None,
) -> None:
    """Read (a local path or a URL), decode and resize one file into `out` (H, W, C)
    exactly as the pipeline does."""
    decode_into(read_source(path), out, bgr, policy, limits=limits, notes=notes)


def decode_into(
    data: bytes,
    out: np.ndarray,
    bgr: bool = False,
    policy: ResizePolicy = DEFAULT_POLICY,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    notes: list[str] | None = None,
) -> None:
    """Decode a file's bytes and resize them into `out` (H, W, C) by `policy`. Pillow's
    filters get Pillow's full-size decode, as the pipelines that use them decode."""
    if policy.interpolation.pillow:
        header = read_header(data, limits.max_pixels)
        with _reserved(header, 1, limits, notes):
            image = pillow_image(data, header, out.shape[2], limits)
            pillow_resize_into(image, out, policy, bgr)
        return
    target = policy.decode_target(out.shape[:2])
    image = decode(data, out.shape[2], bgr, target=target, limits=limits, notes=notes)
    resize_to(image, out, policy)


def load_items(
    items: list[Item],
    out: np.ndarray,
    bgr: bool = False,
    policy: ResizePolicy = DEFAULT_POLICY,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    truncated: list[str] | None = None,
) -> list[str | None]:
    """Read each item into its row of `out`; per item, None or why it could not be read.
    The names of truncated files read under `limits.allow_truncated` go to `truncated`."""
    reasons: list[str | None] = []
    for item, dst in zip(items, out, strict=True):
        try:
            if item.error is not None:
                reasons.append(item.error)
                continue
            notes: list[str] = []
            decode_into(read_item(item), dst, bgr, policy, limits=limits, notes=notes)
            if notes and truncated is not None:
                truncated.append(item.name)
            reasons.append(None)
        except (OSError, ValueError, cv2.error, MemoryError) as e:
            reasons.append(reason(e))
    return reasons


def load_item(
    item: Item,
    size: tuple[int, int],
    channels: int,
    policy: ResizePolicy = DEFAULT_POLICY,
) -> np.ndarray:
    """One listed file (a path, a URL, a shard member) decoded and resized exactly as
    the pipeline does it."""
    out = np.empty((size[0], size[1], channels), dtype=np.uint8)
    decode_into(read_item(item), out, policy=policy)
    return out


def load_image(
    path: str,
    size: tuple[int, int],
    channels: int,
    bgr: bool = False,
    policy: ResizePolicy = DEFAULT_POLICY,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Read, decode and resize one file exactly as the pipeline does."""
    out = np.empty((size[0], size[1], channels), dtype=np.uint8)
    read_into(path, out, bgr, policy, limits=limits)
    return out
