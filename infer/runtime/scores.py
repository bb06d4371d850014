"""Scores are probabilities: softmax over logits, unless the rows already are probabilities.

`auto` decides once, on the first batch a runner sees (or from the spec: a contract
model's `probs` are probabilities), so every row of a run is scored the same way.
"""

from __future__ import annotations

import enum

import numpy as np

PROBABILITY_TOLERANCE = 1e-3  # how far from 1 a row's sum may be to count as probabilities


class ScoreMode(enum.StrEnum):
    AUTO = "auto"  # softmax unless the output rows are already probability vectors
    SOFTMAX = "softmax"
    RAW = "raw"  # the output as it is


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits (float64 inside, float32 out)."""
    z = x.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


def are_probabilities(x: np.ndarray) -> bool:
    """True when every row is in [0, 1] and sums to 1."""
    if x.size == 0 or not np.all(np.isfinite(x)):
        return False
    sums = x.sum(axis=1, dtype=np.float64)
    return bool(
        x.min() >= 0.0 and x.max() <= 1.0 and np.all(np.abs(sums - 1) <= PROBABILITY_TOLERANCE)
    )


class Scorer:
    """Model output -> scores, by `mode`; `describe()` says what was chosen and why."""

    def __init__(self, mode: ScoreMode = ScoreMode.AUTO, known_probabilities: bool = False):
        self.mode = mode
        self.known = known_probabilities
        self.apply_softmax: bool | None = (
            None if mode is ScoreMode.AUTO else (mode is ScoreMode.SOFTMAX)
        )
        if mode is ScoreMode.AUTO and known_probabilities:
            self.apply_softmax = False
        self.why = ""

    def __call__(self, out: np.ndarray) -> np.ndarray:
        if self.apply_softmax is None:
            self.apply_softmax = not are_probabilities(out)
            self.why = (
                "the output rows are not probabilities"
                if self.apply_softmax
                else "the output rows are already probabilities"
            )
        return softmax(out) if self.apply_softmax else out

    def describe(self) -> str:
        """e.g. 'softmax (auto: the output rows are not probabilities)'."""
        if self.apply_softmax is None:
            return f"{self.mode.value} (undecided: no batch ran)"
        chosen = "softmax" if self.apply_softmax else "raw"
        if self.mode is not ScoreMode.AUTO:
            return f"{chosen} (asked with --scores)"
        why = self.why or "the model's spec says its output is probabilities"
        return f"{chosen} (auto: {why})"
