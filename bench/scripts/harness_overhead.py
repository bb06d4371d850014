"""What the bench harness costs: a bare `session.run` loop against `measure()` on the same
session and the same inputs, interleaved round by round so that machine noise hits both.

    flock /tmp/cnnbench-bench.lock .venv/bin/python bench/scripts/harness_overhead.py

Rounds alternate which of the two goes first (ABBA), so drift cancels. Prints, per model
and batch, the median over rounds of:
  cost      = 1 - (harness wall-clock img/s) / (bare loop img/s): timers, list appends
  reported  = (img/s the harness reports) / (bare loop img/s) - 1: what the figure misses
and, free of machine noise, `exact` = the harness's own per-call cost (timed around a
no-op) over the time of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.run import make_images
from cnnbench.infer.preprocess import resolve_input_format
from cnnbench.infer.session import Provider, RuntimeOptions, create_session


def bare_loop(session, feed: dict, runs: int) -> float:
    """Seconds for `runs` calls, nothing else in the loop."""
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return time.perf_counter() - t0


def one_round(session, feed: dict, batch: int, runs: int, bare_first: bool) -> tuple[float, float]:
    """(cost, reported error) of one bare loop and one harness window, in the given order."""
    timing = Timing(warmup=0, iterations=runs, max_seconds=0)  # exactly one window

    def harness() -> tuple[float, float]:
        t0 = time.perf_counter()
        m = measure(lambda: session.run(None, feed), batch, timing)
        return batch * runs / (time.perf_counter() - t0), m.stats()["throughput_ips"]

    if bare_first:
        bare_ips = batch * runs / bare_loop(session, feed, runs)
        wall_ips, reported_ips = harness()
    else:
        wall_ips, reported_ips = harness()
        bare_ips = batch * runs / bare_loop(session, feed, runs)
    return 1 - wall_ips / bare_ips, reported_ips / bare_ips - 1


def per_call_cost_ns() -> float:
    """The harness's own cost per timed call: one window around a call that does nothing,
    less a bare loop of the same calls."""
    runs = 200_000

    def nothing() -> None:
        return None

    t0 = time.perf_counter_ns()
    for _ in range(runs):
        nothing()
    bare = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    measure(nothing, 1, Timing(warmup=0, iterations=runs, max_seconds=0))
    return (time.perf_counter_ns() - t0 - bare) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="ONNX file (default: zoo mnist_cnn)")
    parser.add_argument("--batch", type=int, action="append", help="default: 1 and 32")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="per loop")
    args = parser.parse_args()
    if not args.model:
        from cnnbench.bench.zoo import default_cache_dir, zoo_model

        args.model = [zoo_model("mnist_cnn", default_cache_dir(), print).onnx_path]
    cost_ns = min(per_call_cost_ns() for _ in range(5))
    print(f"harness cost per timed call (no-op model): {cost_ns:.0f} ns")
    print(f"{'model':<40} {'batch':>5} {'runs':>6} {'cost':>8} {'reported':>9} {'exact':>8}")
    for path in args.model:
        session = create_session(path, RuntimeOptions(provider=Provider.CPU))
        fmt = resolve_input_format(session)
        for batch in args.batch or [1, 32]:
            feed = {fmt.input_name: fmt.to_model_input(make_images(fmt, batch))}
            per_run = bare_loop(session, feed, 20) / 20
            runs = max(20, int(args.seconds / per_run))
            rounds = [one_round(session, feed, batch, runs, i % 2 == 0) for i in range(args.rounds)]
            cost = statistics.median(r[0] for r in rounds)
            reported = statistics.median(r[1] for r in rounds)
            spread = np.percentile([r[0] for r in rounds], [25, 75])
            exact = cost_ns / 1e9 / per_run
            print(
                f"{path[-40:]:<40} {batch:>5} {runs:>6} {cost:>+8.2%} {reported:>+9.2%}"
                f" {exact:>8.3%}"
                f"   (cost IQR {spread[0]:+.2%} .. {spread[1]:+.2%}, {args.rounds} rounds)"
            )


if __name__ == "__main__":
    main()
