"""`run_bench(cfg)`: models x runtime configurations x batch sizes x concurrency levels,
measured in the asked scenario, with the model's facts, the machine's matmul peak, and the
optional accuracy, stages, profile, Keras and latency-budget figures."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.bench.extras import (
    accuracy_and_stages,
    check_images,
    keras_baselines,
    recommend,
)
from cnnbench.bench.flops import graph_facts, write_matmul_model
from cnnbench.bench.machine import machine_facts
from cnnbench.bench.measure import Measurement, measure, next_batch_size
from cnnbench.bench.peak import add_own_peak, fp32_peaks, row_peak
from cnnbench.bench.profile import profile_config
from cnnbench.bench.results import (
    DEFAULT_MAX_BATCH,
    Baseline,
    BenchConfig,
    BenchReport,
    ColdStart,
    Copies,
    ModelInfo,
    Result,
    RunConfig,
    Scenario,
    Target,
    input_shape,
    make_images,
)
from cnnbench.bench.runners import (
    GPU_PROVIDERS,
    host_runner,
    is_out_of_memory,
    make_run,
    open_session,
    probe_providers,
    ran_precision,
    run_configs,
    split_threads,
    timed_session,
)
from cnnbench.bench.server import search_rate
from cnnbench.bench.zoo import zoo_model
from cnnbench.files import model_not_found
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.preprocess import resolve_input_format
from cnnbench.infer.runtime.session import Provider, Session
from cnnbench.memory import memory_limit, resident_bytes

__all__ = ["DEFAULT_MAX_BATCH", "Baseline", "BenchConfig", "make_images", "run_bench"]

MEMORY_HEADROOM = 0.9  # a batch size predicted past this share of the memory is not run


def _check(cfg: BenchConfig) -> None:
    if not cfg.models and not cfg.archs:
        raise BenchError("nothing to measure: pass --model FILE.onnx or --arch NAME (or all)")
    if cfg.batch_sizes is not None and (not cfg.batch_sizes or min(cfg.batch_sizes) < 1):
        raise BenchError(f"batch sizes must be positive integers, got {cfg.batch_sizes}")
    if cfg.baseline is Baseline.KERAS and not cfg.archs:
        raise BenchError(
            "--baseline keras needs --arch: only zoo models come with their Keras source"
        )
    if cfg.scenario is not Scenario.OFFLINE and cfg.batch_sizes not in (None, (1,)):
        raise BenchError(
            f"--scenario {cfg.scenario.value} runs batch 1 (one query is one image): leave "
            "out --batch-sizes, or use --scenario offline for a batch sweep"
        )
    if cfg.scenario is Scenario.SERVER and cfg.max_latency_ms is None:
        raise BenchError(
            "--scenario server needs --max-latency-ms: the p99 bound the rate search keeps"
        )
    if (
        cfg.precision_hints != ("auto",)
        and cfg.providers
        and Provider.OPENVINO not in cfg.providers
    ):
        raise BenchError("--precision-hint applies to --provider openvino only")
    seen: dict[str, str] = {}
    for path in cfg.models:
        if not os.path.isfile(path):
            raise BenchError(model_not_found(path))
        if (real := os.path.realpath(path)) in seen:
            raise BenchError(
                f"--model {seen[real]} and --model {path} are the same file: give it once"
            )
        seen[real] = path
    if cfg.images is not None:
        check_images(cfg.images)


def _targets(cfg: BenchConfig, log: Callable[[str], None]) -> list[Target]:
    names = [os.path.basename(p) for p in cfg.models]
    # the file name labels a model, unless two files share it: then the path does
    targets = [
        Target(n if names.count(n) == 1 else p, p) for n, p in zip(names, cfg.models, strict=True)
    ]
    for name in cfg.archs:
        zm = zoo_model(name, cfg.cache_dir, log)
        targets.append(Target(name, zm.onnx_path, zm.keras_path))
    return targets


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda line: None) -> BenchReport:
    """Measure every model on every configuration that loads; see the module docstring."""
    _check(cfg)
    targets = _targets(cfg, log)
    with tempfile.TemporaryDirectory(prefix="cnnbench-bench-") as folder:
        probe = write_matmul_model(os.path.join(folder, "probe.onnx"), 8)
        providers, skipped = probe_providers(cfg.providers, probe, cfg.runtime)
        for name, why in skipped.items():
            log(f"provider {name} skipped: {why}")
        peaks = fp32_peaks(providers, cfg, folder) if cfg.peak else {}
    report = BenchReport(machine_facts(), cfg, [p.value for p in providers], skipped, peaks)
    configs = run_configs(providers, cfg.precision_hints)
    doing = ""
    try:
        for target in targets:
            for rc in configs:
                hint = f", precision hint {rc.hint}" if rc.provider is Provider.OPENVINO else ""
                doing = f"measuring {target.label} on {rc.label}{hint}"
                log(f"{doing} ...")
                if cfg.scenario is Scenario.SERVER:
                    serve_target(target, rc, cfg, report, log)
                else:
                    bench_target(target, rc, cfg, report, lambda r: log(_progress(r)))
        if cfg.images:
            doing = f"passing over {cfg.images}"
            accuracy_and_stages(targets, configs, cfg, report, log)
        if cfg.profile:
            for target in targets:
                for rc in configs:
                    doing = f"profiling {target.label} on {rc.label}"
                    log(f"{doing} ...")
                    report.profiles.append(profile_config(target, rc, cfg, report))
        if cfg.baseline is Baseline.KERAS:
            doing = "measuring the Keras baseline"
            report.baselines = keras_baselines(targets, cfg, report, log)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was measured is reported
        report.interrupted = (
            f"stopped while {doing}: the rows are what was measured before the stop; the "
            "steps after it were not run"
        )
    if cfg.max_latency_ms is not None and cfg.scenario is not Scenario.SERVER:
        report.recommendations = recommend(report.results, cfg.max_latency_ms)
    return report


def model_info(
    target: Target, session: Session, cfg: BenchConfig, report: BenchReport
) -> ModelInfo:
    info = next((m for m in report.models if m.path == target.path), None)
    if info is not None:
        return info
    try:
        fmt = resolve_input_format(session, cfg.foreign, need_pixels=cfg.images is not None)
    except InferError as e:
        raise BenchError(f"{target.path}: {e}") from e
    spec = fmt.spec
    facts = graph_facts(target.path, input_shape(fmt, 1))
    info = ModelInfo(
        model=target.label,
        path=target.path,
        architecture=spec.architecture if spec else "unknown",
        precision=spec.precision if spec else facts.weights_precision,
        input_shape=list(input_shape(fmt, 1)),
        facts=facts,
        fmt=fmt,
    )
    report.models.append(info)
    return info


def _batch_plan(session: Session, cfg: BenchConfig, info: ModelInfo, key: str) -> tuple[int, ...]:
    """The asked batch sizes, or () for the sweep; a fixed batch dim allows only itself;
    single-stream and server are batch 1."""
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):
        info.sweep_end[key] = f"the model's batch dimension is fixed at {fixed}"
        return (fixed,)
    if cfg.scenario is not Scenario.OFFLINE:
        return (1,)
    return cfg.batch_sizes or ()


def _cold_start(
    session: Session, info: ModelInfo, rc: RunConfig, cfg: BenchConfig, ms: float
) -> str:
    """Time the first run; returns the configuration's key: 'provider precision'."""
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    x = fmt.to_model_input(make_images(fmt, 1))
    batch1 = session.get_inputs()[0].shape[0]
    if isinstance(batch1, int) and batch1 != 1:
        x = fmt.to_model_input(make_images(fmt, batch1))
    first = make_run(session, fmt.input_name, x, rc.provider, cfg.runtime.device_id)
    t0 = _now_ms()
    first()
    key = f"{rc.label} {ran_precision(session, info.precision)}"
    info.cold_start[key] = ColdStart(ms, _now_ms() - t0)
    return key


def bench_target(
    target: Target,
    rc: RunConfig,
    cfg: BenchConfig,
    report: BenchReport,
    measured: Callable[[Result], None] = lambda row: None,
) -> None:
    """The batch sweep of one model on one configuration; `measured` sees each row."""
    session, session_ms = timed_session(target.path, rc, cfg.runtime)
    info = model_info(target, session, cfg, report)
    key = _cold_start(session, info, rc, cfg, session_ms)
    add_own_peak(rc.label, ran_precision(session, info.precision), cfg, report.peaks_gflops)
    planned = _batch_plan(session, cfg, info, key)
    levels = (1,) if cfg.scenario is Scenario.SINGLE_STREAM else cfg.concurrency
    sessions = {1: session}
    history: list[tuple[int, float]] = []
    batch: int | None = planned[0] if planned else 1
    # (batch size, resident bytes after it); 0: before the first
    resident: list[tuple[int, int | None]] = [(0, resident_bytes())]
    while batch is not None:
        if why := _past_memory(resident, batch, _input_bytes(info)):
            info.sweep_end[key] = why
            break
        rows = []
        try:
            for level in levels:
                if level not in sessions:
                    sessions[level] = open_session(target.path, rc, cfg.runtime, level)
                rows.append(_measure_batch(sessions[level], info, rc, batch, level, cfg, report))
        except BenchError:
            raise
        except Exception as e:  # ORT raises its own types; only running out of memory is expected
            if not is_out_of_memory(e):
                raise BenchError(f"{target.label} failed at batch {batch}: {e}") from e
            info.sweep_end[key] = f"out of memory at batch {batch}"
            break
        report.results += rows
        for row in rows:
            measured(row)
        history.append((batch, max(r.stats.throughput_ips for r in rows)))
        resident.append((batch, resident_bytes()))
        batch = _next(planned, history, cfg.max_batch, info, key, cfg.sweep_patience)


def _progress(row: Result) -> str:
    return row.progress_line(f"{row.provider} {row.precision}")


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


def _input_bytes(info: ModelInfo) -> int:
    """The bytes a batch image's input takes at least: its uint8 pixels, and the model's
    tensor made of them where that is another type (`make_images`, `to_model_input`)."""
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    pixels = fmt.size[0] * fmt.size[1] * fmt.channels
    return pixels * (1 + (fmt.dtype.itemsize if fmt.dtype != np.uint8 else 0))


def _past_memory(resident: list[tuple[int, int | None]], batch: int, per_image: int) -> str | None:
    """Why `batch` is not measured: its resident memory, grown from the last size
    measured by as much a batch image as between the last two sizes measured (input and
    activations grow about linearly with the batch), and by no less than its input
    (`per_image`: a first size, and the second, are held to that at least), would
    pass MEMORY_HEADROOM of what the process may use. Past a container's (cgroup) limit
    the kernel kills the process, and every row measured is lost with it; a machine
    without one swaps. None: it fits, or nothing can be read (not Linux)."""
    known = [(b, r) for b, r in resident if r is not None]
    if not known:
        return None
    last, now = known[-1]
    growth = float(per_image)
    # between two measured sizes: from none to the first, one-time costs come in too
    if len(known) > 1 and 0 < known[-2][0] < last:
        before, then = known[-2]
        growth = max(growth, (now - then) / (last - before))
    predicted = now + growth * (batch - last)
    limit = memory_limit()
    if predicted <= MEMORY_HEADROOM * limit.bytes:
        return None
    return (
        f"batch {batch} would take about {predicted / 1e9:,.1f} GB, past {limit} "
        f"({_megabytes(growth)} more a batch image)"
    )


def _next(
    planned: tuple[int, ...],
    history: list,
    max_batch: int,
    info: ModelInfo,
    key: str,
    patience: int = 1,
) -> int | None:
    if planned:
        return planned[len(history)] if len(history) < len(planned) else None
    nxt = next_batch_size(history, max_batch, patience=patience)
    if nxt is None:
        last = history[-1][0]
        info.sweep_end[key] = (
            f"reached --max-batch {max_batch}"
            if last * 2 > max_batch
            else f"throughput stopped improving at batch {last}"
        )
    return nxt


def _now_ms() -> float:
    return time.perf_counter_ns() / 1e6


def _measure_batch(
    session: Session,
    info: ModelInfo,
    rc: RunConfig,
    batch: int,
    level: int,
    cfg: BenchConfig,
    report: BenchReport,
) -> Result:
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    array = fmt.to_model_input(make_images(fmt, batch))
    runs = [
        make_run(session, fmt.input_name, array, rc.provider, cfg.runtime.device_id)
        for _ in range(level)
    ]
    m = measure(runs if level > 1 else runs[0], batch, cfg.timing)
    result = _result(info, session, rc, m, cfg, report.peaks_gflops)
    if rc.provider in GPU_PROVIDERS and level == 1:
        copies = measure(host_runner(session, fmt.input_name, array), batch, cfg.timing)
        result.with_copies = Copies(copies.stats(), copies.stable, copies.spread)
    return result


def _result(
    info: ModelInfo,
    session: Session,
    rc: RunConfig,
    m: Measurement,
    cfg: BenchConfig,
    peaks: dict[str, float],
) -> Result:
    stats = m.stats()
    per_image = info.facts.gflops_per_image
    gflops = None if per_image is None else per_image * stats.throughput_ips
    precision = ran_precision(session, info.precision)
    peak, basis = row_peak(rc.label, precision, peaks) or (None, None)
    threads = (
        split_threads(cfg.runtime, m.concurrency)
        if m.concurrency > 1
        else cfg.runtime.threads or os.cpu_count() or 1
    )
    return Result(
        model=info.model,
        architecture=info.architecture,
        precision=precision,
        provider=rc.label,
        precision_hint=rc.hint,
        scenario=cfg.scenario.value,
        batch_size=m.batch_size,
        concurrency=m.concurrency,
        threads=threads,
        stats=stats,
        validity=m.validity,
        stable=m.stable,
        spread=m.spread,
        p50_spread=m.p50_spread,
        window_ips=m.window_ips,
        window_p50_ms=m.window_p50_ms,
        warmup_runs=m.warmup_runs,
        seconds=m.seconds,
        latencies_ms=m.latencies_ms,
        gflops_per_s=gflops,
        peak_pct=100 * gflops / peak if peak and gflops is not None else None,
        peak_basis=basis if peak and gflops is not None else None,
    )


def serve_target(
    target: Target,
    rc: RunConfig,
    cfg: BenchConfig,
    report: BenchReport,
    log: Callable[[str], None],
) -> None:
    """Server: batch 1 queries at Poisson arrivals to max(--concurrency) workers; the
    highest rate whose p99 stays within --max-latency-ms."""
    workers = max(cfg.concurrency)
    t0 = time.perf_counter_ns()
    session = open_session(target.path, rc, cfg.runtime, workers)
    info = model_info(target, session, cfg, report)
    key = _cold_start(session, info, rc, cfg, (time.perf_counter_ns() - t0) / 1e6)
    planned = _batch_plan(session, cfg, info, key)
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    array = fmt.to_model_input(make_images(fmt, planned[0]))
    runs = [
        make_run(session, fmt.input_name, array, rc.provider, cfg.runtime.device_id)
        for _ in range(workers)
    ]
    result = search_rate(runs, cfg.max_latency_ms or 0.0, cfg.timing, log)
    result.model, result.provider = info.model, rc.label
    result.precision = ran_precision(session, info.precision)
    report.server.append(result)
