"""Keep native libraries' chatter out of the user's terminal.

TensorFlow 2.21 logs through absl before `absl::InitializeLog()` is called, so its
`I0000 ... cuda_platform.cc:52] failed call to cuInit` lines ignore TF_CPP_MIN_LOG_LEVEL
(tensorflow/tensorflow#100442, open), and Ray's core worker logs an error-level line for
every Ray Data actor pool (its constructor arguments live in the object store, which our
driver holds for the whole job). Both write to file descriptor 2 from C++.

`filtered_native_stderr()` points fd 2 at a pipe whose reader drops those lines and
passes everything else on, while Python's `sys.stderr` (click's messages, tqdm's bar)
keeps writing to the terminal itself. Remove a pattern when its library stops logging it.

Image codecs are the other source: libpng, libjpeg and libtiff print warnings and errors
about damaged files straight to fd 2 (from OpenCV and from Pillow), OpenCV logs its own,
and Pillow warns through Python. The decoders already turn a failure into the file's
error row, so over a folder of damaged files these lines are noise, hundreds of them:
they are dropped too (OpenCV's log is set to silent, Pillow's warnings and log records
about damaged files are ignored).
CNNBENCH_NATIVE_LOGS=1 shows every line, for debugging a decoder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator

# "I0000 00:00:1795548090.080245    2056 port.cc:153] ..." (absl's prefix).
_ABSL_LINE = re.compile(rb"^([IWE])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] (.*)")
_HARMLESS_ABSL_ERRORS = re.compile(rb"cuInit|cuda drivers|Unable to register cu")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_RAY_ACTOR_ARGS = re.compile(
    rb"^\[[\d :,.-]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has "
    rb"constructor arguments in the object store and max_restarts > 0"
)

VERBOSE_ENV = "CNNBENCH_NATIVE_LOGS"
# What image codecs print about damaged files: libpng, libjpeg(-turbo), libtiff (whose
# lines are "module: message", the module a libtiff function or codec, or the file name),
# and OpenCV's own log format.
_CODEC_LINE = re.compile(
    rb"^(libpng (warning|error): "
    rb"|Corrupt JPEG data: |Premature end of JPEG file|Invalid SOS parameters|"
    rb"Unsupported marker type|Bogus (marker|DQT|Huffman)|Invalid JPEG file structure|"
    rb"Warning: unknown JFIF revision|"
    rb"(_?TIFF\w*|_tiff\w*|\w*Decode|\w*Encode|Fax\w*|LZW\w*|ZIP\w*|OJPEG\w*|JPEG\w*|"
    rb"PixarLog\w*|LogLuv\w*|Predictor\w*|[^\s:]+\.tiff?): |"
    rb"\[ ?(WARN|ERROR|INFO|DEBUG|VERBOSE):\d+@)"
)


def dropped(line: bytes) -> bool:
    """True for a line of known, harmless native chatter."""
    if line.startswith(_ABSL_PREAMBLE) or _RAY_ACTOR_ARGS.match(line) or _CODEC_LINE.match(line):
        return True
    match = _ABSL_LINE.match(line)
    return match is not None and (match[1] != b"E" or bool(_HARMLESS_ABSL_ERRORS.search(match[2])))


def _forward(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe, contextlib.suppress(OSError):
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not dropped(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not dropped(pending):
            os.write(write_fd, pending)


def _quiet_image_libraries() -> None:
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    warnings.filterwarnings("ignore", module=r"PIL\.")
    logging.getLogger("PIL").setLevel(logging.CRITICAL)  # its errors about damaged files


def asked_for() -> bool:
    """Whether the user asked to see every native line (CNNBENCH_NATIVE_LOGS=1)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Filter what native code writes to fd 2 for the duration of the block.

    A user who sets CNNBENCH_NATIVE_LOGS=1, or TF_CPP_MIN_LOG_LEVEL to 0 or 1, gets
    every line."""
    verbose = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1")
    verbose = verbose or asked_for()
    if not verbose:
        _quiet_image_libraries()
    try:
        is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # not a real file (captured)
        is_fd2 = False
    if verbose or not is_fd2:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = open(  # noqa: SIM115 - closed in the finally below
        os.dup(terminal), "w", buffering=1, encoding=python_stderr.encoding,
        errors=python_stderr.errors,
    )  # fmt: skip
    read_fd, write_fd = os.pipe()
    thread = threading.Thread(target=_forward, args=(read_fd, terminal), daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)  # closes the pipe's last write end: the reader drains and ends
        thread.join(timeout=5)
        os.close(terminal)
