"""The one exception root of cnnbench, and the helper that keeps error messages to a line.

Every stage raises its own subclass, from its own `errors.py`; its `cli.py` turns it into
one line on stderr and a non-zero exit. Catch `CnnbenchError` to catch them all:

    CnnbenchError                     cnnbench.errors
    ├── InferError                    cnnbench.infer.errors    models, inputs, infer options
    ├── ConvertError                  cnnbench.convert.errors  Keras models, convert options
    ├── TrainError                    cnnbench.training.errors architectures, datasets, training
    └── BenchError                    cnnbench.bench.errors    bench models and options

A stage that wraps another stage's error raises its own type `from` it, so the original
stays reachable as `__cause__` (never copied into a string only).
"""

from __future__ import annotations


class CnnbenchError(Exception):
    """A problem meant for the user: what was received and what to do, in one line."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty,
    so that a one-line error never turns into an IndexError traceback."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
