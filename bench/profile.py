"""`--profile`: the top operator types by share of run time, per configuration, from ONNX
Runtime's profiler (onnxruntime_perf_test -p) or OpenVINO's performance counters
(benchmark_app -pc). Profiled runs are separate from the timed ones: profiling slows them.

Shares are of the operators' summed time; `coverage` = that sum over the wall time of the
same runs says how much of a run the operators explain (the rest: the runtime's overhead).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter

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
from cnnbench.infer.session import Provider

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
    x = fmt.to_model_input(make_images(fmt, batch))
    feed = {fmt.input_name: x}
    for _ in range(PROFILE_WARMUP):
        session.run(None, feed)
    if rc.provider is Provider.OPENVINO:
        by_op, wall_ms = _openvino_counters(session, feed, x.shape)
    else:
        by_op, wall_ms = _ort_profile(session, feed)
    total = sum(by_op.values())
    ops = [
        OpShare(op, ms / PROFILE_RUNS, ms / total if total else 0.0)
        for op, ms in by_op.most_common(TOP_OPS)
    ]
    return Profile(
        model=info.model,
        provider=rc.label,
        precision=precision,
        batch_size=batch,
        runs=PROFILE_RUNS,
        measured_ms_per_run=wall_ms / PROFILE_RUNS,
        ops_ms_per_run=total / PROFILE_RUNS,
        ops=ops,
    )


def _timed_runs(session, feed, after_each=None) -> float:
    wall = 0.0
    for _ in range(PROFILE_RUNS):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        wall += (time.perf_counter_ns() - t0) / 1e6
        if after_each is not None:
            after_each()
    return wall


def _ort_profile(session, feed) -> tuple[Counter[str], float]:
    """ms per op type over PROFILE_RUNS runs, from the profiler's kernel events; the
    warm-up runs are in the file too, so only the last PROFILE_RUNS runs' events count."""
    wall = _timed_runs(session, feed)
    path = session.end_profiling()
    try:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    since = runs[-PROFILE_RUNS]["ts"] if len(runs) >= PROFILE_RUNS else 0
    by_op: Counter[str] = Counter()
    for e in events:
        if (
            e.get("cat") == "Node"
            and e.get("name", "").endswith("_kernel_time")
            and e.get("ts", 0) >= since
        ):
            by_op[e.get("args", {}).get("op_name", "?")] += e["dur"] / 1e3
    return by_op, wall


def _openvino_counters(session, feed, shape) -> tuple[Counter[str], float]:
    """ms per layer type from the infer request's counters after each run (PERF_COUNT)."""
    by_op: Counter[str] = Counter()

    def collect() -> None:
        for node in session.profiling_info(tuple(shape)):
            if str(node.status).endswith("EXECUTED") and "NOT" not in str(node.status):
                by_op[node.node_type] += node.real_time.total_seconds() * 1e3

    wall = _timed_runs(session, feed, collect)
    return by_op, wall
