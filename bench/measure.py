"""Measurement: warm-up apart, perf_counter_ns around exactly the measured call, windows
repeated until they agree, raw latencies kept as floats and formatted only by the writers.

Validity follows MLPerf LoadGen: a configuration is VALID only with at least `min_runs`
timed runs over at least the window time, in windows that agree; else INVALID with the
reasons. p99 is given only from `P99_MIN_SAMPLES` runs or more.

Three ways to drive a model: one run at a time (`measure`), `concurrency` runs in flight
from as many threads (`measure`, with concurrency > 1), and Poisson arrivals at a rate
(`serve`). The rules are pure functions so they can be tested without a model.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# numpy's default, Hyndman & Fan type 7: interpolates linearly between the closest ranks.
PERCENTILE_METHOD: Final = "linear"
P99_MIN_SAMPLES = 100  # one run in a hundred cannot be read from fewer
STABLE_WINDOWS = 3  # perf_analyzer: three windows in a row ...
STABLE_TOLERANCE = 0.10  # ... within 10% of each other
SWEEP_MIN_GAIN = 0.05  # a doubling of the batch must buy 5% more img/s to go on
REPEATABLE = 0.05  # window medians further apart than this: say the machine is noisy
THROTTLE_DROP = 0.10  # the CPU clock falling this much during a configuration: throttled
DEFAULT_MIN_RUNS = 30


@dataclass(frozen=True)
class Timing:
    """How long to measure one configuration."""

    warmup: int = 5  # runs, excluded; stops early after one window's duration
    iterations: int | None = None  # runs per window; None: `duration` seconds per window
    duration: float = 1.0  # seconds per window (at least)
    max_seconds: float = 30.0  # cap per configuration: INVALID with the reasons
    min_runs: int = DEFAULT_MIN_RUNS  # timed runs over the reported windows, at least


@dataclass(frozen=True)
class Stats:
    """Latency percentiles of one configuration (ms per run) and its img/s. p99 is None
    below `P99_MIN_SAMPLES` runs."""

    samples: int
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float | None
    max_ms: float
    throughput_ips: float

    @property
    def p99_or_max_ms(self) -> float:
        """p99, or the max (an upper bound of it) when too few runs give no p99."""
        return self.p99_ms if self.p99_ms is not None else self.max_ms


@dataclass(frozen=True)
class Validity:
    """VALID, or INVALID with every reason (LoadGen's result line)."""

    reasons: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def label(self) -> str:
        return "VALID" if self.valid else "INVALID"

    def __str__(self) -> str:
        return self.label if self.valid else f"INVALID ({'; '.join(self.reasons)})"


@dataclass
class Measurement:
    """The latencies of the windows that agreed (or of the last ones at the cap)."""

    batch_size: int
    latencies_ms: list[float]
    window_ips: list[float]  # img/s of every window, in order
    window_p50_ms: list[float]  # median latency of every window, in order
    warmup_runs: int
    stable: bool
    seconds: float  # wall time of the reported windows
    validity: Validity
    concurrency: int = 1

    @property
    def spread(self) -> float:
        """(max - min) / min of the reported windows' img/s."""
        return relative_spread(self.window_ips[-STABLE_WINDOWS:])

    @property
    def p50_spread(self) -> float:
        """(max - min) / min of the reported windows' median latencies."""
        return relative_spread(self.window_p50_ms[-STABLE_WINDOWS:])

    def stats(self) -> Stats:
        ips = None
        if self.concurrency > 1:  # runs overlap: img/s from the wall clock
            ips = self.batch_size * len(self.latencies_ms) / self.seconds
        return latency_stats(self.latencies_ms, self.batch_size, ips)


def percentile(latencies_ms: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(latencies_ms), p, method=PERCENTILE_METHOD))


def latency_stats(
    latencies_ms: Sequence[float], batch_size: int, throughput_ips: float | None = None
) -> Stats:
    """Percentiles; img/s = batch x runs / summed latency unless given (overlapping runs)."""
    lat = np.asarray(latencies_ms, dtype=np.float64)
    p = {q: float(np.percentile(lat, q, method=PERCENTILE_METHOD)) for q in PERCENTILES}
    return Stats(
        samples=len(lat),
        min_ms=float(lat.min()),
        mean_ms=float(lat.mean()),
        p50_ms=p[50],
        p90_ms=p[90],
        p95_ms=p[95],
        p99_ms=p[99] if len(lat) >= P99_MIN_SAMPLES else None,
        max_ms=float(lat.max()),
        throughput_ips=throughput_ips or batch_size * len(lat) / (lat.sum() / 1e3),
    )


def relative_spread(values: Sequence[float]) -> float:
    lo, hi = min(values), max(values)
    return (hi - lo) / lo if lo > 0 else float("inf")


def windows_agree(
    window_ips: Sequence[float], count: int = STABLE_WINDOWS, tol: float = STABLE_TOLERANCE
) -> bool:
    """True when the last `count` windows are within `tol` of each other (perf_analyzer)."""
    return len(window_ips) >= count and relative_spread(window_ips[-count:]) <= tol


def validity(
    runs: int,
    seconds: float,
    window_ips: Sequence[float],
    timing: Timing,
    clock_drop: float | None = None,
) -> Validity:
    """The reasons a configuration's figures cannot be trusted, none when VALID."""
    reasons = []
    if runs < timing.min_runs:
        reasons.append(f"too few runs ({runs} < --min-runs {timing.min_runs})")
    if timing.iterations is None and seconds < timing.duration:
        reasons.append(f"too short ({seconds:.2f} s < the {timing.duration:g} s window)")
    if not windows_agree(window_ips):
        got = len(window_ips)
        reasons.append(
            f"windows disagree (spread {relative_spread(window_ips[-STABLE_WINDOWS:]):.0%} "
            f"> {STABLE_TOLERANCE:.0%})"
            if got >= STABLE_WINDOWS
            else f"only {got} window(s), {STABLE_WINDOWS} needed"
        )
    if clock_drop is not None and clock_drop > THROTTLE_DROP:
        reasons.append(f"throttled (CPU clock fell {clock_drop:.0%} during the runs)")
    return Validity(tuple(reasons))


def next_batch_size(
    history: Sequence[tuple[int, float]],
    max_batch: int,
    min_gain: float = SWEEP_MIN_GAIN,
    patience: int = 1,
) -> int | None:
    """The doubling sweep's next batch size, or None to stop.

    `history` is [(batch, img/s), ...] in the order measured. Stop when the last `patience`
    batches did not beat the best before them by `min_gain`, or when doubling passes
    `max_batch`.
    """
    if not history:
        return 1
    last_batch = history[-1][0]
    earlier = [ips for _, ips in history[:-patience]]
    recent = [ips for _, ips in history[-patience:]]
    if earlier and len(history) > patience and max(recent) < max(earlier) * (1 + min_gain):
        return None
    nxt = last_batch * 2
    return nxt if nxt <= max_batch else None


def cpu_clock_mhz() -> float | None:
    """The mean current clock of the CPUs, where the kernel says it (not in most VMs)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    except (OSError, ValueError):
        return None
    return sum(mhz) / len(mhz) if mhz else None


def _warm_up(run: Callable[[], object], timing: Timing) -> int:
    deadline = time.perf_counter() + timing.duration
    done = 0
    while done < timing.warmup:
        run()
        done += 1
        if time.perf_counter() >= deadline:
            break
    return done


def _loop(
    run: Callable[[], object], timing: Timing, min_runs: int, cap_ns: int, out: list[float]
) -> None:
    """Time calls into `out` (ns) until the window is done: `iterations` runs, or both its
    duration and `min_runs` runs, or the configuration's cap. Nothing else in the span."""
    clock = time.perf_counter_ns
    append = out.append
    if timing.iterations is not None:
        for _ in range(timing.iterations):
            t0 = clock()
            run()
            append(clock() - t0)
        return
    deadline = clock() + int(timing.duration * 1e9)
    while True:  # at least one run, even past the cap
        t0 = clock()
        run()
        t1 = clock()
        append(t1 - t0)
        if (t1 >= deadline and len(out) >= min_runs) or t1 >= cap_ns:
            return


def _window(
    runs: list[Callable[[], object]], timing: Timing, min_runs: int, cap_ns: int
) -> tuple[list[float], float]:
    """(latencies in ms, wall seconds) of one window, with one thread per run callable."""
    outs: list[list[float]] = [[] for _ in runs]
    t0 = time.perf_counter()
    if len(runs) == 1:
        _loop(runs[0], timing, min_runs, cap_ns, outs[0])
    else:
        per = math.ceil(min_runs / len(runs))
        threads = [
            threading.Thread(target=_loop, args=(r, timing, per, cap_ns, o))
            for r, o in zip(runs, outs, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    return [ns / 1e6 for out in outs for ns in out], wall


def measure(
    run: Callable[[], object] | Sequence[Callable[[], object]],
    batch_size: int,
    timing: Timing,
) -> Measurement:
    """Warm up, then time windows until three agree within 10% holding `min_runs` runs
    together, or the time cap passes (then INVALID, with why).

    `run` may be a list of callables: each gets its own thread, so that many runs are in
    flight at once (--concurrency); img/s is then taken from the wall clock.
    """
    runs = list(run) if isinstance(run, Sequence) else [run]
    warm = max(_warm_up(r, timing) for r in runs) if len(runs) == 1 else _warm_all(runs, timing)
    clock0 = cpu_clock_mhz()
    start = time.perf_counter_ns()
    cap_ns = start + int(timing.max_seconds * 1e9)
    per_window = math.ceil(timing.min_runs / STABLE_WINDOWS)
    # --iterations fixes a window's runs: keep as many windows as --min-runs needs
    keep = STABLE_WINDOWS
    if timing.iterations is not None:
        keep = max(STABLE_WINDOWS, math.ceil(timing.min_runs / timing.iterations))
    windows: list[tuple[list[float], float]] = []
    ips: list[float] = []
    while True:
        lat, wall = _window(runs, timing, per_window, cap_ns)
        windows.append((lat, wall))
        rate_s = wall if len(runs) > 1 else sum(lat) / 1e3
        ips.append(batch_size * len(lat) / rate_s)
        kept = windows[-keep:]
        enough = sum(len(w[0]) for w in kept) >= timing.min_runs
        if (windows_agree(ips) and enough) or time.perf_counter_ns() >= cap_ns:
            break
    clock1 = cpu_clock_mhz()
    drop = 1 - clock1 / clock0 if clock0 and clock1 else None
    kept = windows[-keep:]
    latencies = [x for w in kept for x in w[0]]
    seconds = sum(w[1] for w in kept)
    p50s = [percentile(w[0], 50) for w in windows]
    return Measurement(
        batch_size=batch_size,
        latencies_ms=latencies,
        window_ips=ips,
        window_p50_ms=p50s,
        warmup_runs=warm,
        stable=windows_agree(ips),
        seconds=seconds,
        validity=validity(len(latencies), seconds, ips, timing, drop),
        concurrency=len(runs),
    )


def _warm_all(runs: Sequence[Callable[[], object]], timing: Timing) -> int:
    counts = [0] * len(runs)

    def warm(i: int) -> None:
        counts[i] = _warm_up(runs[i], timing)

    threads = [threading.Thread(target=warm, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return min(counts)


@dataclass(frozen=True)
class Served:
    """One Poisson load at `target_qps`: latency = completion - scheduled arrival."""

    target_qps: float
    achieved_qps: float
    latencies_ms: list[float]


def poisson_arrivals(rate: float, count: int, seed: int = 0) -> np.ndarray:
    """Arrival times in seconds from 0: exponential gaps with mean 1/rate (LoadGen)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, count)
    return np.cumsum(gaps) - gaps[0]


def serve(runs: Sequence[Callable[[], object]], rate: float, count: int, seed: int = 0) -> Served:
    """Issue `count` queries at Poisson arrivals of `rate`/s to `len(runs)` workers (each
    one query in flight at a time). A query that finds every worker busy waits: its
    latency counts from its scheduled arrival, so queueing is in the figure."""
    arrivals = poisson_arrivals(rate, count, seed)
    latencies = [0.0] * count
    nxt = iter(range(count))
    lock = threading.Lock()
    start = time.perf_counter() + 0.01
    done_at = [start]

    def worker(run: Callable[[], object]) -> None:
        while True:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            due = start + arrivals[i]
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            run()
            end = time.perf_counter()
            latencies[i] = (end - due) * 1e3
            with lock:
                done_at[0] = max(done_at[0], end)

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Served(rate, count / (done_at[0] - start), latencies)
