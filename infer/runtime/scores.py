"""Scores are probabilities: softmax over logits, unless the rows already are probabilities.

`auto` decides once, on the first batch a runner sees (or from the spec: a contract
model's `probs` are probabilities), so every row of a run is scored the same way.

One score per image (`[batch, 1]`: a binary classifier's single unit, as Keras'
`Dense(1, activation="sigmoid")` and `BCEWithLogitsLoss` models have) is the second
class's: its probability when every score is in [0, 1], else its logit (the sigmoid,
which is the softmax over [0, logit]); the rows become [1 - p, p], two classes. Taken
as one class, every image was class 0 with a score of 1.
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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Stable for large logits (float64 inside, float32 out)."""
    z = x.astype(np.float64)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def is_binary(out: np.ndarray) -> bool:
    """One score per image: a binary classifier's single unit."""
    return out.ndim == 2 and out.shape[1] == 1


def class_count(out: np.ndarray) -> int | None:
    """The classes a model's output scores ([batch, 1]: two), None when it is not
    [batch, classes]."""
    if out.ndim != 2:
        return None
    return 2 if is_binary(out) else out.shape[1]


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
        self.binary = False  # one score per image seen (`_binary`)

    def __call__(self, out: np.ndarray) -> np.ndarray:
        if is_binary(out):
            return self._binary(out)
        if self.apply_softmax is None:
            self.apply_softmax = not are_probabilities(out)
            self.why = (
                "the output rows are not probabilities"
                if self.apply_softmax
                else "the output rows are already probabilities"
            )
        return softmax(out) if self.apply_softmax else out

    def _binary(self, out: np.ndarray) -> np.ndarray:
        """[batch, 1] -> [1 - p, p]: p the score as it is, or its sigmoid (a logit)."""
        self.binary = True
        if self.apply_softmax is None:
            finite = out.size > 0 and bool(np.all(np.isfinite(out)))
            self.apply_softmax = not (finite and out.min() >= 0.0 and out.max() <= 1.0)
            self.why = (
                "one score per image, not in [0, 1]: the logit of the second class"
                if self.apply_softmax
                else "one score per image, in [0, 1]: the second class's probability"
            )
        p = sigmoid(out[:, 0]) if self.apply_softmax else out[:, 0].astype(np.float32)
        return np.stack([1.0 - p, p], axis=1)

    def describe(self) -> str:
        """e.g. 'softmax (auto: the output rows are not probabilities)'."""
        if self.apply_softmax is None:
            return f"{self.mode.value} (undecided: no batch ran)"
        transform = "sigmoid" if self.binary else "softmax"
        chosen = transform if self.apply_softmax else "raw"
        if self.mode is not ScoreMode.AUTO:
            return f"{chosen} (asked with --scores)"
        why = self.why or "the model's spec says its output is probabilities"
        return f"{chosen} (auto: {why})"
