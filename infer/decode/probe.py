"""What an image file says about itself, read before any decoder allocates for it.

`read_header` returns the format, the declared size, the real bit depth, the EXIF
orientation and whether the data ends before the image does. Pillow reads the headers of
every format but two, lazily (`Image.open` parses only the header). JPEG and PNG, the two
formats of nearly every folder, are walked here instead, segment by segment and chunk by
chunk, because that walk is needed anyway: Pillow stops reading at the image data, so it
cannot see a chunk or segment length past the end of the file (the 57-byte PNG whose IDAT
declares 1 GiB and makes OpenCV allocate it), a missing end marker (a truncated file), or
PNG's `sBIT`; and Pillow's pure-Python JPEG header parser costs about 17% of decoding a
500x375 photo at 1/8 size, the walk about 1-2%. EXIF payloads are still parsed by Pillow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

# Pillow's DecompressionBombError threshold (2 x Image.MAX_IMAGE_PIXELS).
DEFAULT_MAX_PIXELS = 178_956_970


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest file read as an image: `max_pixels` stored uncompressed at 8 bytes a
    pixel (16-bit RGBA), plus 16 MB of metadata. A larger file is no image the run
    decodes, and reading it whole could take all the memory (a video or a disk image
    that `--extensions '*'` met)."""
    return max_pixels * 8 + (16 << 20)


def file_limit(max_bytes: int | None) -> int:
    """`max_bytes`, or `max_file_bytes()` (the default --max-pixels') where None."""
    return max_file_bytes() if max_bytes is None else max_bytes


def too_large_file(size: int, max_bytes: int) -> str:
    return (
        f"too large: a file of {size:,} bytes, more than an image within --max-pixels "
        f"takes ({max_bytes:,}); not read"
    )


def oversize(size: int | None, max_bytes: int) -> str | None:
    """Why a file of `size` bytes is not read at all (`too_large_file`), or None: it
    fits, or its size is not known."""
    return too_large_file(size, max_bytes) if size is not None and size > max_bytes else None


ORIENTATION_TAG = 0x0112
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_RAW_EXIF_KEY = b"Raw profile type exif\0"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# Leading bytes of common files that are not images: what "wrong content" names.
_NOT_IMAGES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"<!DOCTYPE html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<svg", "an SVG drawing (vector, not supported)"),
    (b"<?xml", "an XML document"),
    (b"{", "JSON or text"),
    (b"\x7fELF", "an executable"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)
# Formats whose decoders apply the orientation themselves (libtiff's RGBA interface in
# OpenCV; Pillow's TIFF loader).
_SELF_ORIENTING = frozenset({"TIFF"})
# Formats Pillow decodes whose densest encoding is known (fixed-rate blocks, run-length
# codes): at most this many pixels per byte of file, with a wide margin. A file declaring
# more holds too little data for its size (fuzzers write such files; the decoder would
# allocate the full image first). Formats with whole-frame skip codes (FLI, BMP's RLE
# delta) or general compression (PNG, WebP, GIF, AVIF, JPEG 2000) are not listed.
_MAX_PIXELS_PER_BYTE = {"DDS": 16, "BLP": 4096, "PSD": 512, "TGA": 512, "PCX": 512, "SGI": 512}
# Words of Pillow's messages about files it knows but cannot read.
_UNSUPPORTED_WORDS = ("unsupported", "not supported", "ghostscript", "cannot find loader")
# Compression schemes of TIFF files that the bundled libtiff builds do not read.
_TIFF_COMPRESSION = {34925: "LZMA", 50000: "ZSTD", 34712: "JPEG 2000", 34661: "JBIG"}


class DecodeError(ValueError):
    """A file that cannot become an image; the message is its error-CSV reason."""


@dataclass(frozen=True)
class Header:
    format: str  # "JPEG", "PNG", or Pillow's format name
    width: int
    height: int
    bits: int | None = None  # significant bits of a 16-bit container, when the file says fewer
    orientation: int = 1  # EXIF orientation 1..8; 0: the decoder applies it itself (JPEG)
    truncated: str | None = None  # why the data ends before the image does
    precision: int = 8  # JPEG sample precision
    compression: str | None = None  # a TIFF compression that needs a special decoder

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def decoded_size(self, factor: int = 1) -> tuple[int, int]:
        """(height, width) as decoded at 1/`factor` (JPEG's DCT reduction rounds up)."""
        return -(-self.height // factor), -(-self.width // factor)


def pillow(max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Pillow's Image module, imported lazily, its decompression-bomb check set to
    --max-pixels: it raises above twice MAX_IMAGE_PIXELS, also for images nested in
    another (an ICNS's PNG). A process-wide setting: the last limit asked for holds."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = -(-max_pixels // 2)
    return Image


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """The header of an encoded image; DecodeError with the reason when there is none."""
    if not data:
        raise DecodeError("empty file")
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    if data.startswith(_PNG_MAGIC):
        return _png_header(data, max_pixels)
    return _pillow_header(data, max_pixels)


def _be(data: bytes, pos: int, size: int) -> int:
    return int.from_bytes(data[pos : pos + size], "big")


def _past_end(what: str, pos: int, length: int, end: int, n: int) -> str:
    return (
        f"truncated: {what} at byte {pos:,} declares {length:,} bytes; "
        f"the file ends {end - n:,} bytes before it"
    )


def _jpeg_header(data: bytes) -> Header:
    """Walk the markers up to the scan: size, precision, lengths within the file, and an
    end-of-image marker after the scan (entropy-coded data never contains FF D9)."""
    pos, n, frame = 2, len(data), None
    while True:
        if pos + 4 > n:
            return _jpeg(frame, "truncated: the data ends inside the JPEG headers")
        if data[pos] != 0xFF:
            raise DecodeError(f"corrupt: JPEG: no marker at byte {pos:,} of the headers")
        marker = data[pos + 1]
        if marker == 0xFF or marker in _STANDALONE:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            raise DecodeError("corrupt: JPEG: the file ends before any image data")
        length = _be(data, pos + 2, 2)
        end = pos + 2 + length
        if length < 2:
            raise DecodeError(f"corrupt: JPEG: segment length {length} at byte {pos:,}")
        if end > n:
            return _jpeg(frame, _past_end(f"segment FF{marker:02X}", pos, length, end, n))
        if marker in _SOF_MARKERS and length >= 8:
            frame = (data[pos + 4], _be(data, pos + 5, 2), _be(data, pos + 7, 2))
        if marker == 0xDA:
            break
        pos = end
    truncated = None
    if data.rfind(b"\xff\xd9", end) < 0:
        truncated = "truncated: no end-of-image marker, the data ends before the image does"
    return _jpeg(frame, truncated)


def _jpeg(frame: tuple[int, int, int] | None, truncated: str | None) -> Header:
    if frame is None:
        raise DecodeError(truncated or "corrupt: JPEG: no frame header before the image data")
    precision, height, width = frame
    if not height or not width:
        raise DecodeError(f"corrupt: JPEG: frame size {width}x{height}")
    return Header("JPEG", width, height, None, 0, truncated, precision)


def _png_header(data: bytes, max_pixels: int) -> Header:
    """Walk every chunk: IHDR, sBIT, where EXIF sits, lengths within the file, IEND."""
    n = len(data)
    if n < 33 or data[12:16] != b"IHDR":
        raise DecodeError("truncated: the PNG ends before its IHDR header")
    width, height, depth = _be(data, 16, 4), _be(data, 20, 4), data[24]
    if not width or not height:
        raise DecodeError(f"corrupt: PNG: image size {width}x{height}")
    pos, sbit, exif, truncated = 8, None, False, None
    while True:
        if pos + 8 > n:
            truncated = "truncated: no IEND chunk, the data ends before the image does"
            break
        length, kind = _be(data, pos, 4), data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            name = kind.decode("ascii", "replace")
            truncated = _past_end(f"chunk {name}", pos, length, end, n)
            break
        if kind == b"sBIT" and length:
            sbit = max(data[pos + 8 : pos + 8 + length])
        elif kind == b"eXIf" or (kind in _TEXT_CHUNKS and data.startswith(_RAW_EXIF_KEY, pos + 8)):
            exif = True
        elif kind == b"IEND":
            break
        pos = end
    bits = sbit if depth == 16 and sbit and sbit < 16 else None
    fits = width * height <= max_pixels
    orientation = _pillow_orientation(data, max_pixels) if exif and fits and not truncated else 1
    return Header("PNG", width, height, bits, orientation, truncated)


def _pillow_orientation(data: bytes, max_pixels: int) -> int:
    """EXIF orientation through Pillow: PNG eXIf or ImageMagick's raw-profile text chunk
    (Pillow decodes the image to reach one placed after the image data)."""
    try:
        with pillow(max_pixels).open(io.BytesIO(data)) as im:
            return _orientation(im)
    except Exception:  # Pillow raises many types on damaged files; then no rotation
        return 1


def _orientation(im: Any) -> int:
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block: the image is still there, unrotated
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _pillow_header(data: bytes, max_pixels: int) -> Header:
    Image = pillow(max_pixels)
    try:
        im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise DecodeError(wrong_content(data)) from None
    except Exception as e:  # Pillow's plugins raise many types on fuzzed headers
        raise DecodeError(classify(e, None)) from e
    with im:
        width, height = im.size
        if not width or not height:
            raise DecodeError(f"corrupt: {im.format}: image size {width}x{height}")
        bits, compression = _tiff_details(im) if im.format == "TIFF" else (None, None)
        truncated = _too_little_data(im.format, width * height, len(data))
        if im.format == "WEBP":
            truncated = _riff_truncated(data)
        return Header(
            im.format or "unknown",
            width,
            height,
            bits,
            0 if im.format in _SELF_ORIENTING else _orientation(im),
            truncated,
            compression=compression,
        )


def _too_little_data(fmt: str | None, pixels: int, size: int) -> str | None:
    density = _MAX_PIXELS_PER_BYTE.get(fmt or "")
    if density is None or pixels <= density * size:
        return None
    return (
        f"truncated: {fmt} declares {pixels:,} pixels but the file has {size:,} bytes "
        f"(at most {density} pixels per byte in this format)"
    )


def _tiff_details(im: Any) -> tuple[int | None, str | None]:
    """Significant bits (BitsPerSample 9-15, or SMaxSampleValue of 16-bit samples) and
    a compression scheme that needs a codec the bundled libtiff may lack."""
    tags = im.tag_v2
    bps = tags.get(258, (8,))
    bps = max(bps) if isinstance(bps, tuple) and bps else bps
    bits = bps if isinstance(bps, int) and 8 < bps < 16 else None
    top = tags.get(281)
    top = max(top) if isinstance(top, tuple) and top else top
    if bps == 16 and isinstance(top, int) and 255 < top < 65535:
        bits = top.bit_length()
    return bits, _TIFF_COMPRESSION.get(tags.get(259, 1))


def _riff_truncated(data: bytes) -> str | None:
    size = int.from_bytes(data[4:8], "little") + 8
    if data.startswith(b"RIFF") and size > len(data):
        return _past_end("RIFF container", 0, size - 8, size, len(data))
    return None


_TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little and big endian, BigTIFF


def wrong_content(data: bytes) -> str:
    """Say what bytes that no image reader recognises are."""
    head = data[:64].lstrip()
    for magic, what in _NOT_IMAGES:
        if head[: len(magic)].lower() == magic.lower():
            return f"not an image: the bytes are {what}"
    if data[:4] in _TIFF_MAGIC:  # a TIFF Pillow does not take (float colour samples, ...)
        return (
            "unsupported or damaged TIFF: Pillow cannot read it (floating-point colour "
            "samples, an unusual layout, or a broken header); save it with 8- or 16-bit samples"
        )
    if data[4:8] == b"ftyp":
        brand = data[8:12].decode("ascii", "replace")
        return f"unsupported format: an ISO media file (brand {brand}: HEIF, AVIF or video)"
    sample = data[:512]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in sample):
        return "not an image: the bytes are text"
    return f"not an image: unknown format (starts with {data[:8].hex(' ')})"


def classify(e: BaseException, fmt: str | None) -> str:
    """The error-CSV reason for a Pillow exception: too large, truncated, unsupported
    variant or corrupt, with Pillow's (or its codec's) own words."""
    text, what = message(e), f" {fmt}:" if fmt else ""
    lower = text.lower()
    if type(e).__name__ == "DecompressionBombError":
        return f"too large:{what} {text} (--max-pixels)"
    if "truncated" in lower:
        return f"truncated:{what} {text}"
    if isinstance(e, NotImplementedError) or any(w in lower for w in _UNSUPPORTED_WORDS):
        return f"unsupported variant:{what} {text}"
    return f"corrupt:{what} {text}"


def message(e: BaseException) -> str:
    """An exception as one line (some codecs' messages span several)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else f"{text[:197]}..."
