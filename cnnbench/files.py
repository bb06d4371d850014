"""File plumbing every stage shares: atomic writes, output-path checks, hashing, and the
type of the callback that receives progress lines meant for the user.

Imports no stage. Messages are returned, not raised, so each stage raises its own error
type (see `cnnbench.errors`) with its own hint.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

Report = Callable[[str], None]
"""Receives one line for the user (a provider chosen and why, a table row, a warning)."""

# what a write fails with when the disk or folder cannot take it (EIO: or a read failed)
FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
WRITE_ERRNOS = (*FULL_OR_READ_ONLY, errno.EIO)


def not_a_file(path: str) -> str | None:
    """Why `path` is no file to write, or None: '-' (standard output), a device, pipe or
    socket, or a name in /dev itself, /dev/fd or /proc (/dev/stdout may lead to a file;
    /dev/shm, a RAM disk, is a place for files). A file is written beside itself and
    renamed into place: as root that rename replaced /dev/null or /dev/stdout's link."""
    full = os.path.abspath(path)
    special = os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path))
    devices = os.path.dirname(full) in ("/dev", "/dev/fd") or full.startswith("/proc/")
    if path == "-" or special or devices:
        return "standard output, a pipe or a device is not a file to write: give a file path"
    return None


def unwritable_folder(folder: str) -> str | None:
    """Why files cannot be created in `folder`, or None when they can."""
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        return f"folder {folder} does not exist or is not writable"
    return None


def unwritable(path: str) -> str | None:
    """Why a file cannot be written at `path`, or None: checked before any work starts,
    so a bad output path fails in a second, not after the work."""
    if why := not_a_file(path):
        return why
    if os.path.isdir(path):
        return "it is a folder"
    if path.endswith(("/", os.sep)):  # the file would be renamed into a folder's name
        return "a name ending in / is a folder's: give a file name"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "it is a read-only file"
    return unwritable_folder(os.path.dirname(os.path.abspath(path)))


# what images and models are named: a report or output named so replaces one with text
IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".webp", ".gif",
    ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm", ".avif", ".jp2", ".mpo",
)  # fmt: skip
MODEL_SUFFIXES = (".onnx", ".keras", ".h5", ".pb", ".pt", ".pth", ".tflite")


def replaces_input(path: str, inputs: tuple[str, ...], images: bool = False) -> str | None:
    """Why writing a report or output at `path` would destroy an input (a slip of the
    keyboard: `--json model.onnx`), or None: it is one of `inputs` (by what it is, not by
    its name), or named like a model (or, unless `images`, an image)."""
    for given in inputs:
        if os.path.isfile(path) and os.path.isfile(given) and os.path.samefile(path, given):
            return f"it is {given} itself, an input"
    suffix = os.path.splitext(path)[1].lower()
    if suffix in MODEL_SUFFIXES or (suffix in IMAGE_SUFFIXES and not images):
        return f"a {suffix} name is a model's or an image's: the file there would be replaced"
    return None


def model_not_found(path: str) -> str:
    """The line for a model path that is no file: a URL says models are read from local
    files (inputs may be URLs, a model may not); anything else that it is not there."""
    if "://" in path:
        return (
            f"model {path} is a URL: a model is read from a local file (images may be "
            "URLs); copy it here first, e.g. aws s3 cp, gsutil cp, curl -O"
        )
    return f"model file not found: {path}"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A hidden temporary path beside `path` (same folder, so the rename is atomic) for a
    writer that takes a file name (onnx.save, savefig, keras' save). When the block
    succeeds it is renamed onto `path`; on any error it is removed and `path` is left as
    it was. `suffix` keeps an extension that the writer insists on (`.keras`, `.png`)."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise named_write_error(e, path) from e


def cannot_write_line(e: OSError, then: str) -> str:
    """The one line for a file that could not be written (a full disk, a read-only
    folder, EIO): what, why, and `then`, what to run after fixing it."""
    where = f" {e.filename}" if e.filename else ""
    return f"cannot write{where}: {e.strerror or e}; free space (or fix the folder) and {then}"


def named_write_error(e: BaseException, path: str) -> BaseException:
    """A full disk or read-only folder met while writing `path`, named after it (a write's
    own error names no file, or the hidden temporary one); anything else as it is."""
    if isinstance(e, OSError) and e.errno in FULL_OR_READ_ONLY:
        return OSError(e.errno, e.strerror, path)
    return e


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", newline: str | None = None) -> Iterator[IO[Any]]:
    """`open(path, mode)` through `atomic_path`: the file is flushed to disk and renamed into
    place when the block succeeds, so a reader never sees it half-written. Text is UTF-8."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding, newline=newline) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def staged(output: str, companions: tuple[str, ...] = ()) -> Iterator[str]:
    """`atomic_path` for a writer that names further files after its output (ONNX external
    data in `OUTPUT.data`, referenced from the model by that very name): yield a path named
    like `output` in a hidden staging folder beside it, where scratch files may go too. On
    success move it, and each `output + suffix` of `companions` that was written, into
    place (the main file last); on any error leave nothing behind."""
    folder = os.path.dirname(os.path.abspath(output))
    stage = tempfile.mkdtemp(prefix=".cnnbench-", dir=folder)
    path = os.path.join(stage, os.path.basename(output))
    try:
        yield path
        for suffix in companions:
            if os.path.exists(path + suffix):
                # onnx writes external data owner-only (0600) whatever the umask: give it
                # the main file's mode. Remove when onnx.save honours the umask.
                shutil.copymode(path, path + suffix)
                os.replace(path + suffix, output + suffix)
        os.replace(path, output)
    except BaseException as e:
        raise named_write_error(e, output) from e
    finally:
        shutil.rmtree(stage)


def sha256_file(path: str) -> str:
    """The sha256 of a file's bytes, hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def not_onnx(path: str) -> str | None:
    """What a file given as an ONNX model is instead, with what to do, when its first bytes
    tell (`model_kind`); None when they do not."""
    kind = model_kind(path)
    if kind is None:
        return None
    if kind == "plan":
        return _plan_hint(path)
    return _NOT_ONNX[kind].format(path=path)


def model_kind(path: str) -> str | None:
    """A key of `_NOT_ONNX`, or 'plan' (cnnbench tune's), by the file's first bytes; None
    for anything else, ONNX included (protobuf has no signature)."""
    if os.path.isdir(path):
        return "savedmodel" if os.path.isfile(os.path.join(path, "saved_model.pb")) else "folder"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.lstrip()[:1] in (b"{", b"["):
        return "plan" if _plan_model(path) is not None else "json"
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(name.endswith("data.pkl") for name in names):
                return "pytorch"
            if "config.json" in names:
                return "keras"
        return None
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head[4:8] == b"TFL3":
        return "tflite"
    return None


_TORCH_EXPORT = "export the model with torch.onnx.export(model, example_input, 'model.onnx')"
_NOT_ONNX = {
    "savedmodel": (
        "it is a TensorFlow SavedModel: export it to ONNX first "
        "(python -m tf2onnx.convert --saved-model {path} --output model.onnx)"
    ),
    "folder": "it is a folder, not a model file: give the .onnx model first, then the inputs",
    "json": "it is JSON text, not an ONNX model: give an .onnx file",
    "pytorch": f"it is a PyTorch checkpoint, not ONNX: {_TORCH_EXPORT}",
    "pickle": f"it is a Python pickle (a PyTorch .pt or .pth?), not ONNX: {_TORCH_EXPORT}",
    "keras": "it is a Keras model: export it first (cnnbench convert {path} -o model.onnx)",
    "hdf5": (
        "it is an HDF5 file (a Keras .h5 model?): load it in Keras, save it with "
        "model.save('model.keras'), then cnnbench convert model.keras -o model.onnx"
    ),
    "tflite": (
        "it is a TensorFlow Lite model: convert it to ONNX first "
        "(python -m tf2onnx.convert --tflite {path} --output model.onnx)"
    ),
}


def _plan_model(path: str) -> str | None:
    """The model a plan from `cnnbench tune` names (beside the plan), or None when the
    file is not one."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("cnnbench.plan/"):
        return None
    return os.path.join(os.path.dirname(path), str(doc.get("model", "")))


def _plan_hint(path: str) -> str:
    return (
        f"it is a plan from cnnbench tune, not a model: classify with "
        f"cnnbench infer --plan {path} (its model is {_plan_model(path)})"
    )


def missing_weights(path: str) -> str | None:
    """Which external-data file an ONNX model keeps its weights in that is not beside
    it (a model copied without its `.data`), with what to do; None when none is missing
    or the file does not parse."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not ONNX, or damaged: said elsewhere
        return None
    folder = os.path.dirname(os.path.abspath(path))
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not os.path.isfile(os.path.join(folder, where)):
                return (
                    f"it keeps its weights in {where} (ONNX external data), which is not "
                    f"beside it: copy {where} with the model"
                )
    return None
