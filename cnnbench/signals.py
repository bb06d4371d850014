"""Ctrl-C and SIGTERM (what `timeout`, `kill`, SLURM and Kubernetes send before their
SIGKILL) stop a command the same way: the work inside `stop_signal()` is interrupted by a
KeyboardInterrupt for either, and the command reports what it did before it and exits
128 + the signal's number (130, 143), as a shell reports a process a signal stopped."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Stopped:
    signum: int = signal.SIGINT  # the signal that came (Ctrl-C where none did)


@contextlib.contextmanager
def stop_signal() -> Iterator[Stopped]:
    """Inside, SIGTERM raises KeyboardInterrupt as Ctrl-C does (SIGTERM ended the
    process where it stood, with nothing written); `Stopped.signum` says which came, and
    so does the exception, a `SignalStop`, for the work that catches it deeper down (tune
    plans from what it measured and exits with that signal's code)."""
    stopped = Stopped()
    if threading.current_thread() is not threading.main_thread():
        yield stopped
        return

    def handle(signum: int, frame: object) -> None:
        stopped.signum = signum
        raise SignalStop(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stopped
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held_stops() -> Iterator[None]:
    """Inside, a Ctrl-C or SIGTERM is held, and raised as a `SignalStop` once the work
    inside is done: for a short write whose files only make sense whole (tune's plan,
    which names the int8 file beside it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, f: came.append(s)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if came:
        raise SignalStop(came[0])


class StopOnSignal:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the batches in flight
    (`signum` says which); a second one interrupts at once, as a KeyboardInterrupt (a
    SIGTERM ended the process where it stood before, with no word and no --resume line)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int = signal.SIGINT
        self.previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def _handle(self, signum: int, frame: object) -> None:
        self.requested, self.signum = True, signum
        for sig in STOP_SIGNALS:  # a second one: the handler from before (the command
            # group's: a KeyboardInterrupt, that signal's exit code), else Python's Ctrl-C one
            before = self.previous.get(sig)
            signal.signal(sig, before if callable(before) else signal.default_int_handler)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class SignalStop(KeyboardInterrupt):
    """A stop asked by `signum`: raised by `stop_signal` where the signal came, or where
    the work could stop (after a batch); the command's group exits 128 + `signum`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def signal_of(stop: KeyboardInterrupt) -> int:
    """The signal behind a stop: a `SignalStop` says it; a bare KeyboardInterrupt (Python's
    own Ctrl-C handler, or one raised anew inside a library) is Ctrl-C's."""
    return stop.signum if isinstance(stop, SignalStop) else signal.SIGINT


def how_stopped(signum: int) -> str:
    """The first words of a stopped command's last line."""
    return "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
