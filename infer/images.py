"""Finding and decoding images: streamed sorted scans, OpenCV decode into uint8 HWC."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from cnnbench.infer.errors import InferError
from cnnbench.infer.resize import DEFAULT_POLICY, ResizePolicy, resize_to

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
JPEG_MAGIC = b"\xff\xd8"
# Start-of-frame markers carrying the frame size (baseline, progressive, lossless, ...).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# (factor, gray flag); colour adds IMREAD_COLOR_RGB / IMREAD_COLOR_BGR to the gray flag.
_REDUCED = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


@dataclass(frozen=True)
class Item:
    """One input file: where it is, how it is named in the CSV, and why it is already
    known to be unreadable (a folder that cannot be listed)."""

    path: str
    name: str  # relative to its input root, '/'-separated
    error: str | None = None


def expand_inputs(inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Validate command-line inputs; `@list.txt` stays as is (read lazily by `scan_inputs`)."""
    seen: dict[str, None] = {}
    for text in inputs:
        path = text[1:] if text.startswith("@") else text
        if not os.path.lexists(path):
            what = "list file" if text.startswith("@") else "input path"
            raise InferError(f"{what} does not exist: {path}")
        if text.startswith("@") and not os.path.isfile(path):
            raise InferError(f"list file {path} is not a file: write one image path per line")
        seen.setdefault(text, None)
    return tuple(seen)


def scan_inputs(inputs: tuple[str, ...], extensions: tuple[str, ...]) -> Iterator[Item]:
    """Every file under the inputs, in order. One folder: names relative to it; several
    inputs: names prefixed with the input as given, so that no two files share a name."""
    single_dir = len(inputs) == 1 and os.path.isdir(inputs[0])
    for text in inputs:
        if text.startswith("@"):
            yield from _scan_list(text[1:], extensions)
        elif single_dir:
            yield from scan(text, extensions)
        elif os.path.isdir(text):
            yield from _scan_dir(text, f"{_posix(text).rstrip('/')}/", extensions, frozenset())
        else:
            yield Item(text, _posix(text))


def scan(root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Iterator[Item]:
    """Files under one folder in sorted order, streamed (a file: itself)."""
    if not os.path.isdir(root):
        yield Item(root, _posix(root))
        return
    yield from _scan_dir(root, "", extensions, frozenset())


def _posix(path: str) -> str:
    return path.replace(os.sep, "/")


def _scan_list(list_path: str, extensions: tuple[str, ...]) -> Iterator[Item]:
    """One path per line (relative to the working directory); folders are scanned."""
    with open(list_path, encoding="utf-8") as f:
        for line in f:
            path = line.rstrip("\r\n")
            if not path.strip():
                continue
            if os.path.isdir(path):
                yield from _scan_dir(path, f"{_posix(path).rstrip('/')}/", extensions, frozenset())
            else:
                yield Item(path, _posix(path))


def _scan_dir(
    path: str, prefix: str, extensions: tuple[str, ...], ancestors: frozenset
) -> Iterator[Item]:
    """Sorted, streamed: only one folder's names (not DirEntry objects) are held at a time."""
    try:
        st = os.stat(path)
        with os.scandir(path) as it:
            entries = sorted((e.name, e.is_dir()) for e in it)
    except OSError as e:
        yield Item(path, prefix.rstrip("/") or _posix(path), f"cannot list folder: {reason(e)}")
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        return  # a symlink loop: the folder is already being scanned
    for name, is_dir in entries:
        full = os.path.join(path, name)
        if is_dir:
            yield from _scan_dir(full, f"{prefix}{name}/", extensions, ancestors | {key})
        elif name.lower().endswith(extensions):
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
        return "OpenCV could not decode the image"
    return str(e) or type(e).__name__


def jpeg_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame header, without decoding; None if
    the data is not a JPEG or the header is damaged."""
    raw = data if isinstance(data, bytes) else data.tobytes()
    if not raw.startswith(JPEG_MAGIC):
        return None
    pos, end = 2, len(raw)
    while pos + 4 <= end:
        if raw[pos] != 0xFF:
            return None
        marker = raw[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= end:
            h = int.from_bytes(raw[pos + 5 : pos + 7], "big")
            w = int.from_bytes(raw[pos + 7 : pos + 9], "big")
            return (h, w) if h and w else None
        pos += 2 + length
    return None


def reduction_for(data: bytes | np.ndarray, target: tuple[int, int]) -> int:
    """Largest JPEG DCT reduction (8, 4, 2) that keeps the short side >= the target's
    long side; 1 when none does or the file is not a JPEG."""
    size = jpeg_size(data)
    if size is None:
        return 1
    short, need = min(size), max(target)
    return next((f for f, _ in _REDUCED if short >= f * need), 1)


def _flags(channels: int, bgr: bool, factor: int) -> int:
    colour = cv2.IMREAD_COLOR_BGR if bgr else cv2.IMREAD_COLOR_RGB
    if factor == 1:
        return cv2.IMREAD_GRAYSCALE if channels == 1 else colour
    gray = dict(_REDUCED)[factor]
    return gray if channels == 1 else gray | colour


def decode(
    data: bytes | np.ndarray,
    channels: int,
    bgr: bool = False,
    target: tuple[int, int] | None = None,
) -> np.ndarray:
    """Encoded bytes -> uint8 HxWxC (RGB, BGR or gray). EXIF orientation is applied.

    16-bit and RGBA images become 8-bit colour (alpha dropped); gray becomes 3 channels
    for colour models, colour becomes gray for 1-channel models. With `target` (h, w), a
    large JPEG is decoded at 1/2, 1/4 or 1/8 size in the DCT domain, which is much faster.
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size == 0:
        raise ValueError("empty file")
    factor = reduction_for(data, target) if target else 1
    image = cv2.imdecode(buf, _flags(channels, bgr, factor))
    if image is None:
        raise ValueError("not a readable image (corrupt, truncated or unsupported format)")
    return image.reshape(image.shape[0], image.shape[1], channels)


def resize_into(image: np.ndarray, out: np.ndarray, policy: ResizePolicy = DEFAULT_POLICY) -> None:
    """Resize HxWxC `image` into the preallocated `out` by `policy` (see resize.py)."""
    resize_to(image, out, policy)


def read_into(
    path: str, out: np.ndarray, bgr: bool = False, policy: ResizePolicy = DEFAULT_POLICY
) -> None:
    """Read, decode and resize one file into `out` (H, W, C) exactly as the pipeline does."""
    with open(path, "rb") as f:
        data = f.read()
    target = policy.decode_target(out.shape[:2])
    resize_into(decode(data, out.shape[2], bgr, target=target), out, policy)


def load_items(
    items: list[Item], out: np.ndarray, bgr: bool = False, policy: ResizePolicy = DEFAULT_POLICY
) -> list[str | None]:
    """Read each item into its row of `out`; per item, None or why it could not be read."""
    reasons: list[str | None] = []
    for item, dst in zip(items, out, strict=True):
        try:
            if item.error is not None:
                reasons.append(item.error)
                continue
            read_into(item.path, dst, bgr, policy)
            reasons.append(None)
        except (OSError, ValueError, cv2.error, MemoryError) as e:
            reasons.append(reason(e))
    return reasons


def load_image(
    path: str,
    size: tuple[int, int],
    channels: int,
    bgr: bool = False,
    policy: ResizePolicy = DEFAULT_POLICY,
) -> np.ndarray:
    """Read, decode and resize one file exactly as the pipeline does."""
    out = np.empty((size[0], size[1], channels), dtype=np.uint8)
    read_into(path, out, bgr, policy)
    return out
