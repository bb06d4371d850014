"""Keep native libraries' chatter out of the user's terminal.

TensorFlow 2.21 logs through absl before `absl::InitializeLog()` is called, so its
`I0000 ... cuda_platform.cc:52] failed call to cuInit` lines ignore TF_CPP_MIN_LOG_LEVEL
(tensorflow/tensorflow#100442, open), and Ray's core worker logs an error-level line for
every Ray Data actor pool (its constructor arguments live in the object store, which our
driver holds for the whole job). Both write to file descriptor 2 from C++.

`filtered_native_stderr()` points fd 2 at a pipe whose reader drops those lines and
passes everything else on, while Python's `sys.stderr` (click's messages, tqdm's bar)
keeps writing to the terminal itself. Remove a pattern when its library stops logging it.
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
_HARMLESS_ABSL_ERRORS = re.compile(rb"cuInit|cuda drivers|Unable to register cu")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called"
_RAY_ACTOR_ARGS = re.compile(
    rb"^\[[\d :,.-]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: .* has "
    rb"constructor arguments in the object store and max_restarts > 0"
)


def dropped(line: bytes) -> bool:
    """True for a line of known, harmless native chatter."""
    if line.startswith(_ABSL_PREAMBLE) or _RAY_ACTOR_ARGS.match(line):
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


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Filter what native code writes to fd 2 for the duration of the block.

    A user who sets TF_CPP_MIN_LOG_LEVEL to 0 or 1 gets every line."""
    verbose = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1")
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
