"""The server scenario's rate search (MLPerf LoadGen's Server): Poisson arrivals at a rate,
p99 of completion - arrival against the bound; the rate doubles until a try fails (or
halves until one passes), then bisects between the highest pass and the lowest failure.

Every try holds at least max(--min-runs, 100) queries and lasts at least the window time,
so each p99 is read from 100 samples or more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from cnnbench.bench.measure import (
    P99_MIN_SAMPLES,
    Timing,
    Validity,
    latency_stats,
    serve,
)
from cnnbench.bench.results import ServerResult, ServerTry

SEARCH_PRECISION = 0.05  # stop bisecting when the failing rate is within 5% of the passing
MAX_TRIES = 16
MAX_QUERIES = 20_000


def one_try(
    runs: Sequence[Callable[[], object]], rate: float, bound_ms: float, timing: Timing, seed: int
) -> ServerTry:
    count = max(timing.min_runs, P99_MIN_SAMPLES, math.ceil(rate * timing.duration))
    served = serve(runs, rate, min(count, MAX_QUERIES), seed)
    stats = latency_stats(served.latencies_ms, 1)
    p99 = stats.p99_ms
    return ServerTry(
        target_qps=rate,
        achieved_qps=served.achieved_qps,
        queries=stats.samples,
        p50_ms=stats.p50_ms,
        p90_ms=stats.p90_ms,
        p99_ms=p99,
        passed=p99 is not None and p99 <= bound_ms,
    )


def start_rate(runs: Sequence[Callable[[], object]]) -> float:
    """Half of what the workers could do back to back: a few runs timed apart."""
    for _ in range(2):
        runs[0]()
    t0 = time.perf_counter()
    n = 5
    for _ in range(n):
        runs[0]()
    per_run = max((time.perf_counter() - t0) / n, 1e-6)
    return 0.5 * len(runs) / per_run


def search_rate(
    runs: Sequence[Callable[[], object]],
    bound_ms: float,
    timing: Timing,
    log: Callable[[str], None] = lambda line: None,
) -> ServerResult:
    """The highest Poisson rate (queries/s) whose p99 <= `bound_ms`, and every try."""
    tries: list[ServerTry] = []
    started = time.perf_counter()

    def attempt(rate: float) -> ServerTry:
        t = one_try(runs, rate, bound_ms, timing, seed=len(tries))
        tries.append(t)
        p99 = f"{t.p99_ms:.2f}" if t.p99_ms is not None else "-"
        log(f"  server: {rate:.1f} q/s -> p99 {p99} ms {'pass' if t.passed else 'over'}")
        return t

    def out_of_time() -> bool:
        return len(tries) >= MAX_TRIES or time.perf_counter() - started > timing.max_seconds

    rate = start_rate(runs)
    first = attempt(rate)
    if first.passed:  # double until a try fails
        while not out_of_time() and tries[-1].passed:
            attempt(tries[-1].target_qps * 2)
    else:  # halve until one passes
        while not out_of_time() and not tries[-1].passed and tries[-1].target_qps > 0.01:
            attempt(tries[-1].target_qps / 2)
    while not out_of_time():
        lo = _best(tries)
        hi = _next_over(tries, lo)
        if lo is None or hi is None or hi.target_qps / lo.target_qps - 1 <= SEARCH_PRECISION:
            break
        attempt(math.sqrt(lo.target_qps * hi.target_qps))
    best = _best(tries)
    over = _next_over(tries, best)
    reasons = []
    if best is None:
        reasons.append(f"no rate tried kept p99 <= {bound_ms:g} ms")
    elif over is None:
        reasons.append("the search stopped before a rate over the bound was found")
    elif over.target_qps / best.target_qps - 1 > SEARCH_PRECISION:
        reasons.append(
            f"the search stopped (--max-seconds) with {over.target_qps / best.target_qps - 1:.0%} "
            f"between the best rate and the next over the bound"
        )
    return ServerResult(
        model="",
        provider="",
        precision="",
        concurrency=len(runs),
        max_latency_ms=bound_ms,
        tries=tries,
        best=best,
        next_over=over,
        validity=Validity(tuple(reasons)),
    )


def _best(tries: list[ServerTry]) -> ServerTry | None:
    return max((t for t in tries if t.passed), key=lambda t: t.target_qps, default=None)


def _next_over(tries: list[ServerTry], best: ServerTry | None) -> ServerTry | None:
    floor = best.target_qps if best else 0.0
    over = [t for t in tries if not t.passed and t.target_qps > floor]
    return min(over, key=lambda t: t.target_qps, default=None)
