"""What the bench harness costs: a bare `session.run` loop against `measure()` on the same
session and the same inputs, interleaved round by round so that machine noise hits both.

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/harness_overhead.py

Rounds alternate which of the two goes first (ABBA), so drift cancels. Prints, per model
and batch, the median over rounds of:
  cost      = 1 - (harness wall-clock img/s) / (bare loop img/s): timers, list appends
  reported  = (img/s the harness reports) / (bare loop img/s) - 1: what the figure misses
and, free of machine noise, `exact` = the harness's own per-call cost (timed around a
no-op) over the time of one run.

With --whole-bench, the figure the issue asks for: `cnnbench bench` itself (run_bench with
the command's default options: --min-runs 30, 1 s windows, 3 agreeing) on ResNet50 at
batch 8, against a bare loop of the same length on a session created for it, as bench
creates one, alternating which goes first, over --rounds rounds; the ratio of the medians
of img/s:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/harness_overhead.py \
        --whole-bench --rounds 11

With --session-spread N, why the bare loop gets a session of its own each round: N
sessions of --arch run in turn, 3 runs each, for --rounds cycles; their mean latencies:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/harness_overhead.py \
        --session-spread 4 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.results import BenchConfig, make_images
from cnnbench.infer.runtime.preprocess import resolve_input_format
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, Session, create_session


def session_and_feed(path: str, batch: int) -> tuple[Session, dict]:
    """A new CPU session of `path` and a feed of `batch` images, as bench builds them."""
    session = create_session(path, RuntimeOptions(provider=Provider.CPU))
    fmt = resolve_input_format(session)
    return session, {fmt.input_name: fmt.to_model_input(make_images(fmt, batch))}


def bare_loop(session: Session, feed: dict, runs: int) -> float:
    """Seconds for `runs` calls, nothing else in the loop."""
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return time.perf_counter() - t0


def one_round(
    session: Session, feed: dict, batch: int, runs: int, bare_first: bool
) -> tuple[float, float]:
    """(cost, reported error) of one bare loop and one harness window, in the given order."""
    timing = Timing(warmup=0, iterations=runs, max_seconds=0, min_runs=1)  # one window

    def harness() -> tuple[float, float]:
        t0 = time.perf_counter()
        m = measure(lambda: session.run(None, feed), batch, timing)
        return batch * runs / (time.perf_counter() - t0), m.stats().throughput_ips

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
    measure(nothing, 1, Timing(warmup=0, iterations=runs, max_seconds=0, min_runs=1))
    return (time.perf_counter_ns() - t0 - bare) / runs


def fresh_loop(path: str, batch: int, seconds: float) -> float:
    """img/s of a bare loop of about `seconds` on a session created for it, as `cnnbench
    bench` creates one per run: one session's speed is a draw (weights' placement in
    memory), so a loop that kept one session would carry that session's luck into every
    round (on this VM, four ResNet50 sessions interleaved run by run: 481, 503, 505, 482 ms)."""
    session, feed = session_and_feed(path, batch)
    per_run = bare_loop(session, feed, 3) / 3  # warm-up, and the time of one run
    runs = max(30, int(seconds / per_run))
    return batch * runs / bare_loop(session, feed, runs)


def session_spread(arch: str, batch: int, sessions: int, cycles: int) -> None:
    """Why each round's bare loop gets a new session: `sessions` sessions of one model, run
    3 at a time in turn (the order reversed every cycle, so drift hits all alike); the mean
    latency of each."""
    from cnnbench.bench.zoo import default_cache_dir, zoo_model

    path = zoo_model(arch, default_cache_dir(), print).onnx_path
    made = []
    for _ in range(sessions):
        session, feed = session_and_feed(path, batch)
        bare_loop(session, feed, 3)
        made.append((session, feed))
    seconds: list[list[float]] = [[] for _ in made]
    for c in range(cycles):
        order = range(sessions) if c % 2 == 0 else reversed(range(sessions))
        for k in order:
            seconds[k].append(bare_loop(*made[k], 3) / 3)
    means = [statistics.mean(s) * 1e3 for s in seconds]
    print(
        f"{arch} batch {batch}, {sessions} sessions x {3 * cycles} runs, mean ms per run: "
        + ", ".join(f"{m:.1f}" for m in means)
        + f"; slowest / fastest {max(means) / min(means):.3f}"
    )


def whole_bench(arch: str, batch: int, rounds: int) -> None:
    """`run_bench` with the command's defaults vs a bare loop, interleaved (ABBA)."""
    from cnnbench.bench.run import run_bench
    from cnnbench.bench.zoo import default_cache_dir, zoo_model

    path = zoo_model(arch, default_cache_dir(), print).onnx_path
    cfg = BenchConfig(models=(path,), providers=(Provider.CPU,), batch_sizes=(batch,), peak=False)
    bench_ips, bare_ips, rows = [], [], []
    for i in range(rounds):

        def bench_once() -> float:
            (result,) = run_bench(cfg).results
            rows.append(result)
            return result.stats.throughput_ips

        seconds = rows[-1].seconds if rows else 15.0
        if i % 2 == 0:
            bench_ips.append(bench_once())
            bare_ips.append(fresh_loop(path, batch, rows[-1].seconds))
        else:
            bare_ips.append(fresh_loop(path, batch, seconds))
            bench_ips.append(bench_once())
        r = rows[-1]
        print(
            f"round {i + 1}: bench {bench_ips[-1]:.2f} img/s ({r.stats.samples} runs, "
            f"{r.validity}), bare loop {bare_ips[-1]:.2f} img/s, ratio "
            f"{bench_ips[-1] / bare_ips[-1]:.3f}",
            flush=True,
        )
    ratio = statistics.median(bench_ips) / statistics.median(bare_ips)
    ratios = sorted(b / a for b, a in zip(bench_ips, bare_ips, strict=True))
    print(
        f"{arch} batch {batch}, {rounds} rounds: median bench {statistics.median(bench_ips):.2f}"
        f" img/s, median bare loop {statistics.median(bare_ips):.2f} img/s, "
        f"ratio of medians {ratio:.3f} (median of the rounds' ratios "
        f"{statistics.median(ratios):.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole-bench", action="store_true", help="run_bench vs a bare loop")
    parser.add_argument(
        "--session-spread", type=int, metavar="N", help="N sessions of --arch, interleaved"
    )
    parser.add_argument("--arch", default="resnet50", help="--whole-bench: zoo model")
    parser.add_argument("--model", action="append", help="ONNX file (default: zoo mnist_cnn)")
    parser.add_argument("--batch", type=int, action="append", help="default: 1 and 32")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=1.0, help="per loop")
    args = parser.parse_args()
    if args.session_spread:
        session_spread(args.arch, (args.batch or [8])[0], args.session_spread, args.rounds)
        return
    if args.whole_bench:
        whole_bench(args.arch, (args.batch or [8])[0], args.rounds)
        return
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
