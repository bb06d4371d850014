"""Finding and decoding images: streamed sorted scans, OpenCV decode into uint8 HWC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Item:
    """One input file: where it is, and how it is named in the CSV."""

    path: str
    name: str  # relative to its input root, '/'-separated


def scan(root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Iterator[Item]:
    """Files under `root` in sorted order, streamed directory by directory."""
    if not os.path.isdir(root):
        yield Item(root, root.replace(os.sep, "/"))
        return
    yield from _scan_dir(root, "", extensions)


def _scan_dir(path: str, prefix: str, extensions: tuple[str, ...]) -> Iterator[Item]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        name = f"{prefix}{entry.name}"
        if entry.is_dir(follow_symlinks=True):
            yield from _scan_dir(entry.path, f"{name}/", extensions)
        elif entry.name.lower().endswith(extensions):
            yield Item(entry.path, name)


def decode(data: bytes | np.ndarray, channels: int, bgr: bool = False) -> np.ndarray:
    """Encoded bytes -> uint8 HxWxC (RGB, BGR or gray). EXIF orientation is applied.

    16-bit and RGBA images become 8-bit colour (alpha dropped); gray becomes 3 channels
    for colour models, colour becomes gray for 1-channel models.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size == 0:
        raise ValueError("empty file")
    if channels == 1:
        flags = cv2.IMREAD_GRAYSCALE
    else:
        flags = cv2.IMREAD_COLOR_BGR if bgr else cv2.IMREAD_COLOR_RGB
    image = cv2.imdecode(buf, flags)
    if image is None:
        raise ValueError("not a readable image (corrupt, truncated or unsupported format)")
    return image.reshape(image.shape[0], image.shape[1], channels)


def resize_into(image: np.ndarray, out: np.ndarray) -> None:
    """Resize HxWxC `image` into the preallocated `out` (area when shrinking)."""
    h, w = out.shape[:2]
    if image.shape[:2] == (h, w):
        out[...] = image
        return
    interp = cv2.INTER_AREA if image.shape[0] > h and image.shape[1] > w else cv2.INTER_LINEAR
    resized = cv2.resize(image, (w, h), interpolation=interp)
    out[...] = resized.reshape(out.shape)


def load_image(path: str, size: tuple[int, int], channels: int, bgr: bool = False) -> np.ndarray:
    """Read, decode and resize one file exactly as the pipeline does."""
    out = np.empty((size[0], size[1], channels), dtype=np.uint8)
    with open(path, "rb") as f:
        resize_into(decode(f.read(), channels, bgr), out)
    return out
