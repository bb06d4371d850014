"""`--profile`: the top operator types by share of run time, per configuration, from ONNX
Runtime's profiler (onnxruntime_perf_test -p) or OpenVINO's performance counters
(benchmark_app -pc). Profiled runs are separate from the timed ones: profiling slows them.

Shares are of the operators' summed time. `coverage` = the median over the runs of (operator
time / wall time of that run) says how much of a run the operators explain (the rest: the
runtime's overhead); per run and the median, because on a loaded machine other processes
preempt some runs. The ms figures are medians over the runs too.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from cnnbench.bench.results import (
    BenchConfig,
    BenchReport,
    OpShare,
    Profile,
    RunConfig,
    Target,
    make_images,
)
from cnnbench.bench.runners import open_session, ran_precision
from cnnbench.infer.runtime.session import Provider

PROFILE_RUNS = 20
PROFILE_WARMUP = 3
TOP_OPS = 8


def profile_config(target: Target, rc: RunConfig, cfg: BenchConfig, report: BenchReport) -> Profile:
    """Profile `target` on `rc` at its best batch size (batch 1 when none was measured)."""
    info = next(m for m in report.models if m.path == target.path)
    session = open_session(target.path, rc, cfg.runtime, profile=True)
    precision = ran_precision(session, info.precision)
    best = report.best(info.model, rc.label, precision)
    batch = best.batch_size if best else 1
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):
        batch = fixed
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    x = fmt.to_model_input(make_images(fmt, batch))
    feed = {fmt.input_name: x}
    for _ in range(PROFILE_WARMUP):
        session.run(None, feed)
    if rc.provider is Provider.OPENVINO:
        by_op, per_run, walls = _openvino_counters(session, feed, x.shape)
    else:
        by_op, per_run, walls = _ort_profile(session, feed)
    total = sum(by_op.values())
    ops = [
        OpShare(op, ms / PROFILE_RUNS, ms / total if total else 0.0)
        for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    ]
    return Profile(
        model=info.model,
        provider=rc.label,
        precision=precision,
        batch_size=batch,
        runs=PROFILE_RUNS,
        measured_ms_per_run=statistics.median(walls),
        ops_ms_per_run=statistics.median(per_run),
        ops=ops,
        coverage=statistics.median(o / w for o, w in zip(per_run, walls, strict=True)),
    )


def _timed_runs(
    session: Any, feed: dict[str, Any], after_each: Callable[[], None] | None = None
) -> list[float]:
    """Wall ms of each of PROFILE_RUNS runs; `after_each` reads the counters between."""
    walls = []
    for _ in range(PROFILE_RUNS):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        walls.append((time.perf_counter_ns() - t0) / 1e6)
        if after_each is not None:
            after_each()
    return walls


def _ort_profile(
    session: Any, feed: dict[str, Any]
) -> tuple[dict[str, float], list[float], list[float]]:
    """(ms per op type over PROFILE_RUNS runs, operator ms of each run, wall ms of each run)
    from the profiler's kernel events; the warm-up runs are in the file too, so only the
    events inside the last PROFILE_RUNS `model_run` spans count."""
    walls = _timed_runs(session, feed)
    path = session.end_profiling()
    try:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    spans = [(r["ts"], r["ts"] + r["dur"]) for r in runs[-PROFILE_RUNS:]]
    by_op: defaultdict[str, float] = defaultdict(float)
    per_run = [0.0] * len(spans)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        for i, (start, end) in enumerate(spans):
            if start <= e["ts"] <= end:
                by_op[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1e3
                per_run[i] += e["dur"] / 1e3
                break
    return by_op, per_run, walls


def _openvino_counters(
    session: Any, feed: dict[str, Any], shape: tuple[int, ...]
) -> tuple[dict[str, float], list[float], list[float]]:
    """The same from the infer request's counters (PERF_COUNT), read after each run. The
    CPU plugin reports each node's mean over every run of the request so far, so a run's
    own time is the difference of the running totals (mean x runs) before and after it."""
    done = PROFILE_WARMUP  # runs of this request before the profiled ones

    def totals() -> dict[tuple[str, str], float]:
        return {
            (node.node_name, node.node_type): node.real_time.total_seconds() * 1e3 * done
            for node in session.profiling_info(tuple(shape))
            if str(node.status).endswith(".EXECUTED")
        }

    by_op: defaultdict[str, float] = defaultdict(float)
    per_run: list[float] = []
    before = totals()

    def collect() -> None:
        nonlocal done, before
        done += 1
        after = totals()
        run_ms = 0.0
        for (name, op_type), total in after.items():
            ms = total - before.get((name, op_type), 0.0)
            by_op[op_type] += ms
            run_ms += ms
        per_run.append(run_ms)
        before = after

    walls = _timed_runs(session, feed, collect)
    return by_op, per_run, walls
