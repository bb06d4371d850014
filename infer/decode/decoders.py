"""Pixels from bytes, once the header has passed its checks (probe.py).

OpenCV decodes JPEG, PNG, WebP, BMP, TIFF and PNM: it is the fastest here and releases the
GIL. Pillow decodes everything else (GIF and other animations: their first frame; AVIF,
ICO, TGA, PCX, ...), every file OpenCV gives up on, and truncated files under
--allow-truncated: it reads chunk data in bounded pieces whatever a chunk declares, and
stops cleanly where the data ends. When both fail, Pillow's exception (which carries the
codec's own message) is the file's reason.

Orientation comes from one place, the header: OpenCV is told to ignore EXIF, except for
JPEG where its own reading is right and cheaper than ours.

`pillow_image` is the decode of Pillow-based pipelines (torchvision, timm): every format
through Pillow at full size, kept as a Pillow image for Pillow's own resize.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cnnbench.infer.decode.orientation import apply_orientation
from cnnbench.infer.decode.probe import (
    DEFAULT_MAX_PIXELS,
    DecodeError,
    Header,
    classify,
    max_file_bytes,
    message,
    pillow,
)

OPENCV_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM"})
_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# (factor, gray flag); colour adds IMREAD_COLOR_RGB / IMREAD_COLOR_BGR to the gray flag.
REDUCED = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


@dataclass(frozen=True)
class DecodeLimits:
    """What a decode may take: --max-pixels, --allow-truncated."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_truncated: bool = False

    @property
    def max_bytes(self) -> int:
        """The largest file read at all (`probe.max_file_bytes`)."""
        return max_file_bytes(self.max_pixels)


DEFAULT_LIMITS = DecodeLimits()


def opencv_flags(channels: int, bgr: bool, factor: int, depth: bool = False) -> int:
    colour = cv2.IMREAD_COLOR_BGR if bgr else cv2.IMREAD_COLOR_RGB
    if factor == 1:
        flags = cv2.IMREAD_GRAYSCALE if channels == 1 else colour
    else:
        gray = dict(REDUCED)[factor]
        flags = gray if channels == 1 else gray | colour
    return flags | (cv2.IMREAD_ANYDEPTH if depth else 0)


def decode_pixels(
    data: bytes, header: Header, channels: int, bgr: bool, factor: int, limits: DecodeLimits
) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 (RGB or BGR), upright."""
    image = None
    if header.format in OPENCV_FORMATS and header.truncated is None:
        image = _opencv(data, header, channels, bgr, factor)
    if image is None:
        image, orientation = _pillow(data, header, channels, bgr, factor, limits)
    else:
        orientation = header.orientation
    return apply_orientation(image, orientation)


def _opencv(
    data: bytes, header: Header, channels: int, bgr: bool, factor: int
) -> np.ndarray | None:
    flags = opencv_flags(channels, bgr, factor, depth=header.bits is not None)
    if header.orientation:  # not JPEG: the header's orientation is applied afterwards
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:
        return None  # Pillow tries next, and says why if it fails too
    if image is not None and image.dtype == np.uint16 and header.bits:
        image = scale_bits(image, header.bits)
    return image if image is None or image.dtype == np.uint8 else None


def _pillow(
    data: bytes, header: Header, channels: int, bgr: bool, factor: int, limits: DecodeLimits
) -> tuple[np.ndarray, int]:
    """Decode with Pillow; returns (array, orientation still to apply)."""
    with _pillow_open(data, header, limits) as im:
        try:
            if factor > 1 and header.format == "JPEG":
                height, width = header.decoded_size(factor)
                im.draft("L" if channels == 1 else "RGB", (width, height))
            im.load()  # Pillow turns TIFF and AVIF upright itself, and drops their tag
            orientation = header.orientation or _exif_orientation(im)
            image = _to_uint8(im, header.bits, channels)
        except MemoryError:
            raise
        except Exception as e:  # Pillow's plugins raise many types on damaged data
            raise DecodeError(failure(e, header)) from e
    if bgr and image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return image, orientation


def _pillow_open(data: bytes, header: Header, limits: DecodeLimits) -> Any:
    """Pillow's lazy image of `data` (only the header read), under the limits."""
    Image = pillow(limits.max_pixels)
    from PIL import ImageFile

    # Pillow's switch is process-wide, with no per-image form: set for every decode
    ImageFile.LOAD_TRUNCATED_IMAGES = limits.allow_truncated
    try:
        return Image.open(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plugins raise many types on damaged data
        raise DecodeError(failure(e, header)) from e


# EXIF orientation -> the Pillow transpose that turns the image upright (ImageOps.exif_transpose)
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def pillow_image(data: bytes, header: Header, channels: int, limits: DecodeLimits) -> Any:
    """A full-size Pillow image, upright, in mode L (a gray source or a 1-channel model)
    or RGB: what a Pillow-based pipeline resizes (alpha dropped, palettes and CMYK turned
    RGB as `convert("RGB")` does; 16-bit gray scaled by its real depth)."""
    im = _pillow_open(data, header, limits)
    try:
        im.load()  # Pillow turns TIFF and AVIF upright itself, and drops their tag
        orientation = header.orientation or _exif_orientation(im)
        if im.mode in _HIGH_DEPTH_MODES or im.mode == "F":
            im = pillow(limits.max_pixels).fromarray(_to_uint8(im, header.bits, 1))
        elif im.mode not in ("L", "RGB") or (channels == 1 and im.mode == "RGB"):
            im = im.convert("L" if channels == 1 else "RGB")
        if orientation in _TRANSPOSE:
            im = im.transpose(pillow(limits.max_pixels).Transpose[_TRANSPOSE[orientation]])
    except MemoryError:
        raise
    except Exception as e:  # Pillow's plugins raise many types on damaged data
        raise DecodeError(failure(e, header)) from e
    return im


def _exif_orientation(im: Any) -> int:
    value = im.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_uint8(im: Any, bits: int | None, channels: int) -> np.ndarray:
    """8-bit gray or RGB from any Pillow mode; deep gray modes scaled by their real depth."""
    if im.mode in _HIGH_DEPTH_MODES or im.mode == "F":
        values = np.asarray(im)
        if im.mode == "F":
            gray = (np.clip(np.nan_to_num(values), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        else:
            top = 255 if im.mode == "I" and values.max(initial=0) <= 255 else 65535
            gray = scale_bits(np.clip(values, 0, top).astype(np.uint16), bits or top.bit_length())
        return gray if channels == 1 else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    return np.asarray(im.convert("L" if channels == 1 else "RGB"))


@functools.lru_cache(maxsize=16)
def _depth_table(bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.minimum((np.arange(65536, dtype=np.uint32) * 255 + top // 2) // top, 255).astype(
        np.uint8
    )


def scale_bits(image: np.ndarray, bits: int) -> np.ndarray:
    """uint16 samples using `bits` bits -> uint8 over the full range (a table lookup)."""
    return _depth_table(bits)[image]


def failure(e: BaseException, header: Header) -> str:
    """The error-CSV reason for a file no decoder could read."""
    if header.compression:
        return f"unsupported variant: TIFF: {header.compression} compression ({message(e)})"
    if header.format == "JPEG" and header.precision != 8:
        return f"unsupported variant: JPEG: {header.precision}-bit samples ({message(e)})"
    return classify(e, header.format)
