"""Keep TensorFlow's C++ start-up chatter out of the user's terminal.

TensorFlow 2.21 logs through absl before `absl::InitializeLog()` is called, so its
`I0000 ... cuda_platform.cc:52] failed call to cuInit` lines ignore TF_CPP_MIN_LOG_LEVEL
(tensorflow/tensorflow#100442, open). `quiet_tensorflow()` filters the process's stderr
file descriptor while a command runs: absl-formatted info and warning lines, and the
error lines about a missing GPU, are dropped; everything else passes through in order.
Remove when TensorFlow honours TF_CPP_MIN_LOG_LEVEL again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# "I0000 00:00:1795548090.080245    2056 port.cc:153] ..." (absl's prefix).
_ABSL_LINE = re.compile(rb"^([IWE])\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] (.*)")
_HARMLESS_ERRORS = re.compile(rb"cuInit|cuda drivers|Unable to register cu")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"


def _dropped(line: bytes) -> bool:
    if line.startswith(_ABSL_PREAMBLE):
        return True
    match = _ABSL_LINE.match(line)
    return bool(match) and (match[1] != b"E" or bool(_HARMLESS_ERRORS.search(match[2])))


def _forward(read_fd: int, write_fd: int) -> None:
    with os.fdopen(read_fd, "rb", buffering=0) as pipe, contextlib.suppress(OSError):
        pending = b""
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _dropped(line))
            if kept:
                os.write(write_fd, kept)
        if pending and not _dropped(pending):
            os.write(write_fd, pending)


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Filter TensorFlow's log lines from stderr (fd 2) for the duration of the block.

    A user who sets TF_CPP_MIN_LOG_LEVEL to 0 or 1 gets every line."""
    verbose = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1")
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (captured)
        stderr_fd = None
    if verbose or stderr_fd != 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    thread = threading.Thread(target=_forward, args=(read_fd, saved), daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread drains and ends
        thread.join(timeout=5)
        os.close(saved)
