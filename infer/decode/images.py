"""Decoding images: encoded bytes (or a source's) to upright uint8 HWC, resized by a policy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from cnnbench.infer.decode.budget import decode_budget, decode_bytes
from cnnbench.infer.decode.decoders import (
    DEFAULT_LIMITS,
    REDUCED,
    DecodeLimits,
    decode_pixels,
    pillow_image,
)
from cnnbench.infer.decode.probe import DecodeError, Header, read_header
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy, pillow_resize_into, resize_to
from cnnbench.infer.sources.fetch import read_item, read_source
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import reason


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
    data = read_source(path, max_bytes=limits.max_bytes)
    decode_into(data, out, bgr, policy, limits=limits, notes=notes)


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
    read: Callable[..., bytes] = read_item,
) -> list[str | None]:
    """Read each item into its row of `out`; per item, None or why it could not be read.
    The names of truncated files read under `limits.allow_truncated` go to `truncated`.
    `read`: how an item's bytes are read (`read_item`, or `fetch.DecodeReads`)."""
    reasons: list[str | None] = []
    for item, dst in zip(items, out, strict=True):
        try:
            if item.error is not None:
                reasons.append(item.error)
                continue
            notes: list[str] = []
            data = read(item, max_bytes=limits.max_bytes)
            decode_into(data, dst, bgr, policy, limits=limits, notes=notes)
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
