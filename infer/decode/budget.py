"""One byte budget shared by every decode thread of a process.

Each decode reserves what its image will take (from the header, before decoding) and
waits while the others hold too much, so two large images decode one after the other
instead of at the same time. An image larger than the whole budget waits until it is
alone, then decodes: the pixel limit, not the budget, bounds the largest image.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

DECODE_BUDGET_BYTES = 1 << 30  # 1 GiB


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` (at most the whole budget) for the duration of the block."""
        nbytes = min(max(nbytes, 0), self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def decode_bytes(pixels: int, channels: int, bytes_per_sample: int) -> int:
    """What decoding an image takes at its peak: the decoder's output and one
    converted copy (colour conversion, bit-depth scaling, rotation)."""
    return 2 * pixels * channels * bytes_per_sample


decode_budget = ByteBudget(DECODE_BUDGET_BYTES)
