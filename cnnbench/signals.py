"""Ctrl-C and SIGTERM (what `timeout`, `kill`, SLURM and Kubernetes send before their
SIGKILL) stop a command the same way: the work inside `stop_signal()` is interrupted by a
KeyboardInterrupt for either, and the command reports what it did before it and exits
128 + the signal's number (130, 143), as a shell reports a process a signal stopped."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Stopped:
    signum: int = signal.SIGINT  # the signal that came (Ctrl-C where none did)


@contextlib.contextmanager
def stop_signal() -> Iterator[Stopped]:
    """Inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does (SIGTERM ended the
    process where it stood, with nothing written); `Stopped.signum` says which came."""
    stopped = Stopped()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def handle(signum: int, frame: object) -> None:
        stopped.signum = signum
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
