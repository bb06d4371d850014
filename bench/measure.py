"""Measurement: warm-up apart, perf_counter_ns around exactly the measured call, windows
repeated until they agree, raw latencies kept as floats and formatted only by the writers.

The rules are pure functions (`windows_agree`, `next_batch_size`) so they can be tested
without a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# numpy's default, Hyndman & Fan type 7: interpolates linearly between the closest ranks.
PERCENTILE_METHOD: Final = "linear"
STABLE_WINDOWS = 3  # perf_analyzer: three windows in a row ...
STABLE_TOLERANCE = 0.10  # ... within 10% of each other
SWEEP_MIN_GAIN = 0.05  # a doubling of the batch must buy 5% more img/s to go on
REPEATABLE = 0.05  # window medians further apart than this: say the machine is noisy


@dataclass(frozen=True)
class Timing:
    """How long to measure one configuration."""

    warmup: int = 5  # runs, excluded; stops early after one window's duration
    iterations: int | None = None  # runs per window; None: `duration` seconds per window
    duration: float = 1.0  # seconds per window
    max_seconds: float = 30.0  # cap per configuration: report unstable with the spread


@dataclass
class Measurement:
    """The latencies of the windows that agreed (or of the last ones at the cap)."""

    batch_size: int
    latencies_ms: list[float]
    window_ips: list[float]  # img/s of every window, in order
    window_p50_ms: list[float]  # median latency of every window, in order
    warmup_runs: int
    stable: bool

    @property
    def spread(self) -> float:
        """(max - min) / min of the reported windows' img/s."""
        return relative_spread(self.window_ips[-STABLE_WINDOWS:])

    @property
    def p50_spread(self) -> float:
        """(max - min) / min of the reported windows' median latencies."""
        return relative_spread(self.window_p50_ms[-STABLE_WINDOWS:])

    def stats(self) -> dict[str, float]:
        return latency_stats(self.latencies_ms, self.batch_size)


def latency_stats(latencies_ms: Sequence[float], batch_size: int) -> dict[str, float]:
    lat = np.asarray(latencies_ms, dtype=np.float64)
    figures = {"min_ms": float(lat.min()), "mean_ms": float(lat.mean())}
    for p in PERCENTILES:
        figures[f"p{p}_ms"] = float(np.percentile(lat, p, method=PERCENTILE_METHOD))
    figures["max_ms"] = float(lat.max())
    figures["throughput_ips"] = batch_size * len(lat) / (lat.sum() / 1e3)
    return figures


def relative_spread(values: Sequence[float]) -> float:
    lo, hi = min(values), max(values)
    return (hi - lo) / lo if lo > 0 else float("inf")


def windows_agree(
    window_ips: Sequence[float], count: int = STABLE_WINDOWS, tol: float = STABLE_TOLERANCE
) -> bool:
    """True when the last `count` windows are within `tol` of each other (perf_analyzer)."""
    return len(window_ips) >= count and relative_spread(window_ips[-count:]) <= tol


def next_batch_size(
    history: Sequence[tuple[int, float]], max_batch: int, min_gain: float = SWEEP_MIN_GAIN
) -> int | None:
    """The doubling sweep's next batch size, or None to stop.

    `history` is [(batch, img/s), ...] in the order measured. Stop when the last batch did
    not beat the best earlier one by `min_gain`, or when doubling passes `max_batch`.
    """
    if not history:
        return 1
    last_batch, last_ips = history[-1]
    earlier = [ips for _, ips in history[:-1]]
    if earlier and last_ips < max(earlier) * (1 + min_gain):
        return None
    nxt = last_batch * 2
    return nxt if nxt <= max_batch else None


def _warm_up(run: Callable[[], object], timing: Timing) -> int:
    deadline = time.perf_counter() + timing.duration
    done = 0
    while done < timing.warmup:
        run()
        done += 1
        if time.perf_counter() >= deadline:
            break
    return done


def _window(run: Callable[[], object], timing: Timing) -> list[float]:
    """One window: perf_counter_ns around each call, nothing else inside the timed span."""
    clock = time.perf_counter_ns
    out: list[float] = []
    append = out.append
    if timing.iterations is not None:
        for _ in range(timing.iterations):
            t0 = clock()
            run()
            append(clock() - t0)
    else:
        deadline = clock() + int(timing.duration * 1e9)
        t1 = 0
        while t1 < deadline:
            t0 = clock()
            run()
            t1 = clock()
            append(t1 - t0)
    return [ns / 1e6 for ns in out]


def measure(run: Callable[[], object], batch_size: int, timing: Timing) -> Measurement:
    """Warm up, then time windows until three agree within 10% or the time cap passes."""
    warm = _warm_up(run, timing)
    cap = time.perf_counter() + timing.max_seconds
    windows: list[list[float]] = []
    ips: list[float] = []
    while True:
        lat = _window(run, timing)
        windows.append(lat)
        ips.append(batch_size * len(lat) / (sum(lat) / 1e3))
        stable = windows_agree(ips)
        if stable or time.perf_counter() >= cap:
            break
    kept = [x for w in windows[-STABLE_WINDOWS:] for x in w]
    p50s = [float(np.percentile(w, 50, method=PERCENTILE_METHOD)) for w in windows]
    return Measurement(batch_size, kept, ips, p50s, warm, stable)
