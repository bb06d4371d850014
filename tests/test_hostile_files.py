"""Hostile folders: bounded memory whatever a file declares, every file accounted for,
pictures read upright and at their real depth, and no codec chatter on the terminal.

Every hostile file is written here (no network): a 30000x30000 PNG of zeros under 1 MB,
tiny PNGs declaring 1 GiB chunks or a huge size, truncated JPEG and PNG, EXIF orientation
in each form writers use, a 12-bit-in-16 PNG with sBIT, an animated GIF, and files that
are left out by their extension. The folder runs through real `cnnbench infer`
subprocesses whose peak RSS is read from the kernel (wait4, in a small parent).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps, PngImagePlugin

from cnnbench.cli import cli
from cnnbench.infer.decode.budget import ByteBudget
from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.decode.images import decode
from cnnbench.infer.decode.probe import DecodeError
from cnnbench.infer.sources.listing import IMAGE_EXTENSIONS
from cnnbench.native_logs import VERBOSE_ENV

GIB = 1 << 30


def chunk(kind: bytes, data: bytes, length: int | None = None) -> bytes:
    """A PNG chunk; `length` overrides the declared length (a lie)."""
    size = len(data) if length is None else length
    return struct.pack(">I", size) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, *chunks: bytes, depth: int = 8, color: int = 0):
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + b"".join(chunks)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def zeros_png(side: int = 30000) -> bytes:
    """A valid gray PNG of zeros, side x side, well under 1 MB: one fully flushed deflate
    block sequence for 100 rows, repeated (each block sequence stands alone)."""
    rows, repeat = 100, side // 100
    piece = bytes((side + 1) * rows)  # filter byte + pixels, per row
    first = zlib.compressobj(9)
    head = first.compress(piece) + first.flush(zlib.Z_FULL_FLUSH)
    again = zlib.compressobj(9)
    body = (again.compress(piece) + again.flush(zlib.Z_FULL_FLUSH))[2:]  # no zlib header
    checksum = 1
    for _ in range(repeat):
        checksum = zlib.adler32(piece, checksum)
    end = zlib.compressobj(9).flush(zlib.Z_FINISH)[2:-4]  # an empty final block
    stream = head + body * (repeat - 1) + end + struct.pack(">I", checksum)
    return png(side, side, stream)


def encode(image_rgb: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def marked(h: int = 24, w: int = 40) -> np.ndarray:
    """An RGB image whose every orientation differs: a red block top-left, a green strip
    along the bottom, the rest blue."""
    image = np.zeros((h, w, 3), np.uint8)
    image[...] = (0, 0, 200)
    image[: h // 3, : w // 4] = (230, 0, 0)
    image[-h // 4 :, :] = (0, 210, 0)
    return image


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()  # starts with b"Exif\0\0"


def raw_profile(exif: bytes) -> str:
    """ImageMagick's "Raw profile type exif" text: name, length, hex in lines of 72."""
    hexa = exif.hex()
    return (
        "\nexif\n"
        + f"{len(exif):8d}\n"
        + "\n".join(hexa[i : i + 72] for i in range(0, len(hexa), 72))
    )


def oriented_file(form: str, orientation: int) -> bytes:
    """`marked()` stored with an EXIF orientation, in one of the forms real writers use."""
    im, buf, exif = Image.fromarray(marked()), io.BytesIO(), exif_bytes(orientation)
    if form == "jpeg":
        im.save(buf, "JPEG", quality=95, exif=exif)
    elif form == "avif":
        im.save(buf, "AVIF", quality=95, exif=exif)
    elif form == "tiff":
        im.save(buf, "TIFF", tiffinfo={0x0112: orientation})
    elif form == "webp_exif_header":
        im.save(buf, "WEBP", lossless=True, exif=exif)
    elif form == "webp_bare":
        im.save(buf, "WEBP", lossless=True, exif=exif[6:])
    elif form == "png_exif":
        im.save(buf, "PNG", exif=exif)
    elif form in ("png_raw_profile_text", "png_raw_profile_ztxt"):
        info = PngImagePlugin.PngInfo()
        info.add_text("Raw profile type exif", raw_profile(exif), zip=form.endswith("ztxt"))
        im.save(buf, "PNG", pnginfo=info)
    else:
        raise AssertionError(form)
    return buf.getvalue()


FORMS = (
    "jpeg",
    "avif",
    "tiff",
    "webp_exif_header",
    "webp_bare",
    "png_exif",
    "png_raw_profile_text",
    "png_raw_profile_ztxt",
)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_orientation_in_every_form(form: str, orientation: int) -> None:
    data = oriented_file(form, orientation)
    reference = np.asarray(ImageOps.exif_transpose(Image.fromarray(marked()).copy()))
    with Image.open(io.BytesIO(data)) as im:  # what a viewer shows: Pillow's transpose
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert upright.shape[:2] != reference.shape[:2] or orientation == 3
    got = decode(data, 3)
    assert got.shape == upright.shape
    tolerance = 40 if form in ("jpeg", "avif") else 0
    assert np.abs(got.astype(int) - upright.astype(int)).max() <= tolerance, form


def test_every_orientation_value_matches_pillow() -> None:
    for orientation in range(1, 9):
        data = oriented_file("png_exif", orientation)
        with Image.open(io.BytesIO(data)) as im:
            upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        np.testing.assert_array_equal(decode(data, 3), upright, err_msg=str(orientation))


def sbit_png(values: np.ndarray, bits: int) -> bytes:
    """A 16-bit gray PNG whose sBIT chunk says only `bits` bits are significant."""
    ok, data = cv2.imencode(".png", values)
    assert ok
    raw = data.tobytes()
    at = raw.index(b"IDAT") - 4
    return raw[:at] + chunk(b"sBIT", bytes([bits])) + raw[at:]


def test_twelve_bits_in_sixteen_are_scaled_by_sbit() -> None:
    values = np.array([[0, 2048, 4095, 1024]], np.uint16)
    got = decode(sbit_png(values, 12), 1)[..., 0]
    assert got.tolist() == [[0, 128, 255, 64]]
    plain = decode(cv2.imencode(".png", values)[1].tobytes(), 1)[..., 0]
    assert plain.max() <= 16, "without sBIT the full 16-bit range applies"


def test_twelve_bit_tiff_is_scaled_by_its_max_sample_value() -> None:
    buf = io.BytesIO()
    values = np.array([[0, 2048, 4095, 1024]], np.uint16)
    Image.fromarray(values).save(buf, "TIFF", tiffinfo={281: 4095})  # SMaxSampleValue
    assert decode(buf.getvalue(), 1)[..., 0].tolist() == [[0, 128, 255, 64]]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (12, 10), colour) for colour in ((220, 0, 0), (0, 220, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def test_animated_gif_is_its_first_frame() -> None:
    image = decode(animated_gif(), 3)
    assert image.shape == (10, 12, 3)
    assert image[..., 0].min() > 200 and image[..., 1].max() < 20


def test_declared_size_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match=r"too large: PNG of 30000x30000 = 900,000,000"):
        decode(zeros_png(), 3)
    big = encode(np.zeros((400, 600, 3), np.uint8), ".jpg")
    with pytest.raises(DecodeError, match=r"over the limit of 200,000 \(--max-pixels\)"):
        decode(big, 3, limits=DecodeLimits(max_pixels=200_000))
    # counted as decoded: at 1/8 in the DCT domain the same JPEG is 75x50 pixels
    assert decode(big, 3, target=(8, 8), limits=DecodeLimits(max_pixels=4000)).shape[:2] == (
        50,
        75,
    )


def test_byte_budget_makes_large_decodes_wait() -> None:
    budget, order = ByteBudget(100), []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        with budget.reserve(80):
            order.append("first in")
            holding.set()
            release.wait()
            order.append("first out")

    def second() -> None:
        holding.wait()
        with budget.reserve(50):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    holding.wait()
    threads[1].join(timeout=0.5)
    assert threads[1].is_alive(), "50 bytes more than the budget must wait"
    release.set()
    for t in threads:
        t.join()
    assert order == ["first in", "first out", "second in"]
    with budget.reserve(10**9):  # larger than the whole budget: alone, not forever
        assert budget.used == 100


def photo(rng: np.random.Generator, source: np.ndarray) -> bytes:
    y, x = rng.integers(0, 100, 2)
    crop = cv2.resize(source[y : y + 260, x : x + 380], (500, 375))
    return encode(crop, ".jpg")


def hostile_folder(root: Path, photo_jpeg: bytes) -> dict[str, str]:
    """The hostile files; returns {name: what its error row must say} for the ones that
    must fail (the rest must be predicted or skipped by extension)."""
    root.mkdir()
    expect: dict[str, str] = {}

    def add(name: str, data: bytes, reason: str | None = None) -> None:
        (root / name).write_bytes(data)
        if reason is not None:
            expect[name] = reason

    add("zeros_30000x30000.png", zeros_png(), r"too large: PNG of 30000x30000")
    pixel = zlib.compress(b"\x00\x00")
    # 57 bytes: IDAT declares 1 GiB; 79 bytes: an ancillary chunk declares 1 GiB
    add("bomb_idat.png", png(1, 1, pixel)[:-12].replace(
        struct.pack(">I", len(pixel)) + b"IDAT", struct.pack(">I", GIB) + b"IDAT"
    ), r"chunk IDAT at byte 33 declares 1,073,741,824 bytes")  # fmt: skip
    add(
        "bomb_chunk.png",
        png(1, 1, pixel, chunk(b"zzZz", b"x" * 10, length=GIB)),
        r"chunk zzZz at byte 33 declares 1,073,741,824 bytes",
    )
    add("declares_60000x60000.png", png(60000, 60000, pixel), r"too large: PNG of 60000x60000")
    add("truncated.jpg", photo_jpeg[: len(photo_jpeg) // 2], r"^truncated: ")
    whole_png = encode(marked(200, 300), ".png")
    add("truncated.png", whole_png[: len(whole_png) // 2], r"^truncated: ")
    add("empty.jpg", b"", r"^empty file$")
    add("page.png", b"%PDF-1.7\n" + bytes(200), r"^not an image: the bytes are a PDF document$")
    _, floats = cv2.imencode(".tiff", np.full((4, 4, 3), 0.5, np.float32))  # OpenCV's HDR TIFF
    add("float.tif", floats.tobytes(), r"^unsupported or damaged TIFF: Pillow cannot read it")
    # damaged but readable: what makes libjpeg, libpng and libtiff talk
    scan = photo_jpeg.index(b"\xff\xda") + 200
    add("bitflip.jpg", photo_jpeg[:scan] + b"\x00" * 64 + photo_jpeg[scan + 64 :])
    text = chunk(b"tEXt", b"Comment\0hello")
    add("bad_crc.png", png(2, 2, zlib.compress(bytes(6)), text[:-4] + b"\0\0\0\0"))
    for form in FORMS:
        suffix = {"jpeg": "jpg", "tiff": "tif"}.get(form, form.split("_")[0])
        add(f"rotated_{form}.{suffix}", oriented_file(form, 6))
    add("sbit12.png", sbit_png(np.full((8, 8), 4000, np.uint16), 12))
    add("animated.gif", animated_gif())
    rng = np.random.default_rng(0)
    source = cv2.cvtColor(cv2.imdecode(np.frombuffer(photo_jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
    (root / "photos").mkdir()
    for i in range(4):
        add(f"photos/p{i}.jpg", photo(rng, source))
    for name in ("notes.txt", "drawing.svg", "photo.heic", "README", ".DS_Store", "x.xcf"):
        add(name, b"not read")
    add("photos/a.TXT", b"also not read")
    return expect


def walk(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
        for d, _, files in os.walk(root)
        for f in files
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# A process's peak RSS (ru_maxrss) survives fork and exec: a child of the test process
# would report the test process's own gigabytes (TensorFlow loaded by earlier tests). So a
# fresh, small Python forks the command and reports the peak of that grandchild alone.
PEAK_RSS = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
    "    os.execv(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"
)


def run_infer(model: Path, folder: Path, out: Path, *extra: str, env: dict | None = None):
    """`cnnbench infer` as a real subprocess; (exit code, stderr lines, peak RSS bytes)."""
    err_path = out.with_suffix(".stderr")
    with open(err_path, "wb") as err:
        proc = subprocess.run(
            [
                *(sys.executable, "-c", PEAK_RSS),
                *(sys.executable, "-m", "cnnbench", "infer", str(model), str(folder)),
                *("-o", str(out), "--no-progress", "--summary", str(out.with_suffix(".json"))),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
            check=False,
        )
    peak = int(proc.stdout.split()[-1]) * 1024  # KiB on Linux
    lines = err_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return proc.returncode, lines, peak


# Everything `cnnbench infer` itself may print on stderr; any other line is native chatter.
OWN_LINES = re.compile(
    r"^(provider \S+.*|.*batch size \d+|\d+ images, \d+ errors, .*|per class: .*|"
    r"skipped \d+ files? by extension: .*|\d+ files? failed: see .*|"
    r"\d+ truncated files? predicted .*|time: .*: bound by .*)$"
)


@pytest.mark.skipif(sys.platform != "linux", reason="peak RSS from wait4 in bytes: Linux")
def test_hostile_folder(tiny_model: Path, photo_jpeg: bytes, tmp_path: Path) -> None:
    expect = hostile_folder(tmp_path / "hostile", photo_jpeg)
    assert len((tmp_path / "hostile" / "zeros_30000x30000.png").read_bytes()) < 1_000_000
    code, lines, peak = run_infer(tiny_model, tmp_path / "hostile", tmp_path / "h.csv")
    assert code == 0, lines
    assert [line for line in lines if not OWN_LINES.match(line)] == [], "native lines"

    predicted = [r["path"] for r in read_rows(tmp_path / "h.csv")]
    failed = {r["path"]: r["error"] for r in read_rows(tmp_path / "h.errors.csv")}
    summary = json.loads((tmp_path / "h.json").read_text())
    skipped = summary["skipped_by_extension"]
    files = walk(tmp_path / "hostile")
    # every file exactly once: a prediction, an error, or skipped by its extension
    assert len(predicted) == len(set(predicted)) and not set(predicted) & set(failed)
    left_out = [f for f in files if f not in set(predicted) | set(failed)]
    assert Counter((os.path.splitext(f)[1].lower() or "(none)") for f in left_out) == skipped
    assert all(not f.lower().endswith(IMAGE_EXTENSIONS) for f in left_out)
    assert len(predicted) + len(failed) + sum(skipped.values()) == len(files)
    assert set(failed) == set(expect), failed
    for name, pattern in expect.items():
        assert re.search(pattern, failed[name]), (name, failed[name])
    assert any(line.startswith("skipped 7 files by extension: ") for line in lines)

    # the same run over ordinary photos
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(1)
    source = cv2.cvtColor(cv2.imdecode(np.frombuffer(photo_jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
    for i in range(len(files)):
        (tmp_path / "photos" / f"p{i:02d}.jpg").write_bytes(photo(rng, source))
    code, _, baseline = run_infer(tiny_model, tmp_path / "photos", tmp_path / "p.csv")
    assert code == 0
    assert peak <= 1.5e9, f"peak RSS {peak / 1e9:.2f} GB"
    assert peak <= 2 * baseline, f"peak RSS {peak / 1e6:.0f} MB vs {baseline / 1e6:.0f} MB"


def test_native_lines_are_shown_on_request(tiny_model: Path, photo_jpeg: bytes, tmp_path: Path):
    """The hostile files do make the codecs talk: CNNBENCH_NATIVE_LOGS=1 shows it."""
    (tmp_path / "in").mkdir()
    scan = photo_jpeg.index(b"\xff\xda") + 200
    damaged = photo_jpeg[:scan] + b"\x00" * 64 + photo_jpeg[scan + 64 :]
    (tmp_path / "in" / "bitflip.jpg").write_bytes(damaged)
    text = chunk(b"tEXt", b"Comment\0hello")
    (tmp_path / "in" / "crc.png").write_bytes(
        png(2, 2, zlib.compress(bytes(6)), text[:-4] + b"\0" * 4)
    )
    code, lines, _ = run_infer(
        tiny_model, tmp_path / "in", tmp_path / "v.csv", env={VERBOSE_ENV: "1"}
    )
    assert code == 0
    assert [line for line in lines if not OWN_LINES.match(line)] != []


def test_allow_truncated_predicts_and_says_so(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    whole = encode(marked(200, 300), ".png")
    (tmp_path / "in" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "in" / "whole.png").write_bytes(whole)
    out = tmp_path / "t.csv"
    args = ["infer", str(tiny_model), str(tmp_path / "in"), "-o", str(out), "--allow-truncated"]
    result = CliRunner().invoke(cli, [*args, "--summary", str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in read_rows(out)] == ["cut.png", "whole.png"]
    assert "1 truncated file predicted from what decoded (--allow-truncated)" in result.output
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["truncated_predicted"] == 1 and summary["truncated_files"] == ["cut.png"]


def test_extensions_star_tries_every_file(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(marked(), ".png"))
    (tmp_path / "in" / "b.dat").write_bytes(encode(marked(), ".png"))  # a PNG, odd name
    (tmp_path / "in" / "c.txt").write_text("hello")
    out = tmp_path / "s.csv"
    base = ["infer", str(tiny_model), str(tmp_path / "in"), "-o", str(out)]
    result = CliRunner().invoke(cli, base)
    assert "skipped 2 files by extension: 1 .dat, 1 .txt" in result.output
    result = CliRunner().invoke(cli, [*base, "--extensions", "*"])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in read_rows(out)] == ["a.png", "b.dat"]
    assert read_rows(tmp_path / "s.errors.csv") == [
        {"path": "c.txt", "error": "not an image: the bytes are text"}
    ]
    assert "skipped" not in result.output
    result = CliRunner().invoke(cli, [*base, "--extensions", " DAT, .Png "])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in read_rows(out)] == ["a.png", "b.dat"]
    # '*' among others was the extension '.*'; blanks read nothing, said as '*'
    for given, needle in [("*,png", "give it alone"), (" , ", "names no extension")]:
        result = CliRunner().invoke(cli, [*base, "--extensions", given])
        assert result.exit_code == 2 and needle in result.output, result.output


def test_help_lists_the_default_extensions() -> None:
    result = CliRunner().invoke(cli, ["infer", "--help"])
    flat = " ".join(result.output.split())
    assert "jpg, jpeg, jpe, jfif, png," in flat and "--max-pixels" in flat
