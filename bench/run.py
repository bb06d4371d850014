"""`run_bench(cfg)`: models x providers x batch sizes, measured, with the model's facts,
the machine's matmul peak, and the optional end-to-end, Keras and latency-budget figures."""

from __future__ import annotations

import enum
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.bench.flops import PEAK_INPUT, GraphFacts, graph_facts, write_matmul_model
from cnnbench.bench.machine import machine_facts
from cnnbench.bench.measure import Measurement, Timing, measure, next_batch_size
from cnnbench.bench.runners import (
    device_runner,
    host_runner,
    is_out_of_memory,
    probe_providers,
    timed_session,
    with_provider,
)
from cnnbench.bench.zoo import default_cache_dir, zoo_model
from cnnbench.infer.errors import InferError
from cnnbench.infer.preprocess import ForeignOptions, InputFormat, Layout, resolve_input_format
from cnnbench.infer.session import Provider, RuntimeOptions

GPU_PROVIDERS = (Provider.CUDA, Provider.TENSORRT)
PEAK_SIZES = {
    Provider.CPU: (512, 1024),
    Provider.CUDA: (4096, 8192),
    Provider.TENSORRT: (4096, 8192),
}
DEFAULT_MAX_BATCH = 256


class Baseline(enum.StrEnum):
    KERAS = "keras"


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ()
    archs: tuple[str, ...] = ()
    providers: tuple[Provider, ...] | None = None  # None: every provider that loads
    batch_sizes: tuple[int, ...] | None = None  # None: the doubling sweep
    max_batch: int = DEFAULT_MAX_BATCH
    timing: Timing = field(default_factory=Timing)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    foreign: ForeignOptions = field(default_factory=ForeignOptions)
    images: str | None = None
    baseline: Baseline | None = None
    max_latency_ms: float | None = None
    cache_dir: str = field(default_factory=default_cache_dir)
    peak: bool = True


@dataclass(frozen=True)
class Target:
    label: str
    path: str
    keras_path: str | None = None


@dataclass
class Result:
    """One model on one provider at one batch size."""

    model: str
    architecture: str
    precision: str
    provider: str
    batch_size: int
    threads: int
    stats: dict[str, float]
    stable: bool
    spread: float
    p50_spread: float
    window_ips: list[float]
    window_p50_ms: list[float]
    warmup_runs: int
    iterations: int
    latencies_ms: list[float]
    gflops_per_s: float | None = None
    peak_pct: float | None = None
    with_copies: dict | None = None  # GPU: session.run with numpy in and out

    def to_dict(self) -> dict:
        """Flat: the latency figures beside the configuration, as in the CSV."""
        data = asdict(self)
        return data | data.pop("stats")


@dataclass
class ModelInfo:
    model: str
    path: str
    architecture: str
    precision: str
    input_shape: list[int]
    facts: dict
    cold_start: dict[str, dict[str, float]] = field(default_factory=dict)
    sweep_end: dict[str, str] = field(default_factory=dict)
    fmt: InputFormat | None = field(default=None, repr=False)  # resolved once, not written

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "fmt"}


@dataclass
class BenchReport:
    machine: dict
    config: dict
    providers: list[str]
    skipped_providers: dict[str, str]
    peaks_gflops: dict[str, float]
    models: list[ModelInfo] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    end_to_end: list[dict] = field(default_factory=list)
    baselines: list[dict] = field(default_factory=list)
    recommendations: list[dict] = field(default_factory=list)

    def best(self, model: str, provider: str) -> Result | None:
        rows = [r for r in self.results if r.model == model and r.provider == provider]
        return max(rows, key=lambda r: r.stats["throughput_ips"], default=None)


def make_images(fmt: InputFormat, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, *fmt.size, fmt.channels), dtype=np.uint8)


def input_shape(fmt: InputFormat, batch: int) -> tuple[int, ...]:
    h, w = fmt.size
    if fmt.layout is Layout.NCHW:
        return (batch, fmt.channels, h, w)
    return (batch, h, w, fmt.channels)


def _check(cfg: BenchConfig) -> None:
    if not cfg.models and not cfg.archs:
        raise BenchError("nothing to measure: pass --model FILE.onnx or --arch NAME (or all)")
    if cfg.batch_sizes is not None and (not cfg.batch_sizes or min(cfg.batch_sizes) < 1):
        raise BenchError(f"batch sizes must be positive integers, got {cfg.batch_sizes}")
    if cfg.images is not None and not os.path.isdir(cfg.images):
        raise BenchError(f"--images {cfg.images} is not a folder of images")
    if cfg.baseline is Baseline.KERAS and not cfg.archs:
        raise BenchError(
            "--baseline keras needs --arch: only zoo models come with their Keras source"
        )
    for path in cfg.models:
        if not os.path.isfile(path):
            raise BenchError(f"model file not found: {path}")


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


def _measure_peak(provider: Provider, cfg: BenchConfig, folder: str) -> float:
    """GFLOP/s of the fastest n x n float32 MatMul on `provider`: the machine's practical
    peak. Several sizes, because the best one depends on the caches."""
    best = 0.0
    for n in PEAK_SIZES[provider]:
        path = write_matmul_model(os.path.join(folder, f"matmul{n}.onnx"), n)
        session, _ = timed_session(path, with_provider(cfg.runtime, provider))
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        run = _runner(session, PEAK_INPUT, a, provider, cfg.runtime.device_id)
        p50_s = measure(run, 1, cfg.timing).stats()["p50_ms"] / 1e3
        best = max(best, 2 * n**3 / p50_s / 1e9)
    return best


def _runner(session, name: str, array: np.ndarray, provider: Provider, device_id: int):
    if provider in GPU_PROVIDERS:
        return device_runner(session, name, array, device_id)
    return host_runner(session, name, array)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda line: None) -> BenchReport:
    """Measure every model on every provider that loads; see the module docstring."""
    from cnnbench.bench.extras import end_to_end, keras_baselines, recommend

    _check(cfg)
    targets = _targets(cfg, log)
    with tempfile.TemporaryDirectory(prefix="cnnbench-bench-") as folder:
        probe = write_matmul_model(os.path.join(folder, "probe.onnx"), 8)
        providers, skipped = probe_providers(cfg.providers, probe, cfg.runtime)
        for name, why in skipped.items():
            log(f"provider {name} skipped: {why}")
        peaks = {p.value: _measure_peak(p, cfg, folder) for p in providers} if cfg.peak else {}
    report = BenchReport(
        machine_facts(), config_dict(cfg), [p.value for p in providers], skipped, peaks
    )
    for target in targets:
        for provider in providers:
            log(f"measuring {target.label} on {provider.value} ...")
            bench_target(target, provider, cfg, report)
    if cfg.images:
        report.end_to_end = end_to_end(targets, cfg, report, log)
    if cfg.baseline is Baseline.KERAS:
        report.baselines = keras_baselines(targets, cfg, report, log)
    if cfg.max_latency_ms is not None:
        report.recommendations = recommend(report.results, cfg.max_latency_ms)
    return report


def config_dict(cfg: BenchConfig) -> dict:
    data = asdict(cfg)
    data["providers"] = [p.value for p in cfg.providers] if cfg.providers else None
    data["runtime"] = {k: str(v) for k, v in asdict(cfg.runtime).items()}
    data["foreign"] = {k: str(v) for k, v in asdict(cfg.foreign).items() if v}
    data["baseline"] = cfg.baseline.value if cfg.baseline else None
    return data


def _model_info(target: Target, session, cfg: BenchConfig, report: BenchReport) -> ModelInfo:
    info = next((m for m in report.models if m.path == target.path), None)
    if info is not None:
        return info
    try:
        fmt = resolve_input_format(session, cfg.foreign, need_pixels=cfg.images is not None)
    except InferError as e:
        raise BenchError(f"{target.path}: {e}") from e
    spec = fmt.spec
    facts: GraphFacts = graph_facts(target.path, input_shape(fmt, 1))
    info = ModelInfo(
        model=target.label,
        path=target.path,
        architecture=spec.architecture if spec else "unknown",
        precision=spec.precision if spec else facts.weights_precision,
        input_shape=list(input_shape(fmt, 1)),
        facts=facts.to_dict(),
        fmt=fmt,
    )
    report.models.append(info)
    return info


def _batch_plan(session, cfg: BenchConfig, info: ModelInfo, provider: str) -> tuple[int, ...]:
    """The asked batch sizes, or () for the sweep; a fixed batch dim allows only itself."""
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int):
        info.sweep_end[provider] = f"the model's batch dimension is fixed at {fixed}"
        return (fixed,)
    return cfg.batch_sizes or ()


def bench_target(target: Target, provider: Provider, cfg: BenchConfig, report: BenchReport) -> None:
    session, session_ms = timed_session(target.path, with_provider(cfg.runtime, provider))
    info = _model_info(target, session, cfg, report)
    fmt = info.fmt
    assert fmt is not None, "_model_info resolves it"
    first = _runner(
        session,
        fmt.input_name,
        fmt.to_model_input(make_images(fmt, 1)),
        provider,
        cfg.runtime.device_id,
    )
    t0 = _now_ms()
    first()
    info.cold_start[provider.value] = {"session_ms": session_ms, "first_run_ms": _now_ms() - t0}
    planned = _batch_plan(session, cfg, info, provider.value)
    history: list[tuple[int, float]] = []
    batch: int | None = planned[0] if planned else 1
    while batch is not None:
        try:
            result = _measure_batch(session, info, provider, batch, cfg, report)
        except Exception as e:  # ORT raises its own types; only running out of memory is expected
            if not is_out_of_memory(e):
                raise BenchError(f"{target.label} failed at batch {batch}: {e}") from e
            info.sweep_end[provider.value] = f"out of memory at batch {batch}"
            break
        report.results.append(result)
        history.append((batch, result.stats["throughput_ips"]))
        batch = _next(planned, history, cfg.max_batch, info, provider.value)


def _next(
    planned: tuple[int, ...], history: list, max_batch: int, info: ModelInfo, provider: str
) -> int | None:
    if planned:
        return planned[len(history)] if len(history) < len(planned) else None
    nxt = next_batch_size(history, max_batch)
    if nxt is None:
        last = history[-1][0]
        info.sweep_end[provider] = (
            f"reached --max-batch {max_batch}"
            if last * 2 > max_batch
            else f"throughput stopped improving at batch {last}"
        )
    return nxt


def _now_ms() -> float:
    return time.perf_counter_ns() / 1e6


def _measure_batch(
    session, info: ModelInfo, provider: Provider, batch: int, cfg: BenchConfig, report: BenchReport
) -> Result:
    fmt = info.fmt
    assert fmt is not None, "_model_info resolves it"
    array = fmt.to_model_input(make_images(fmt, batch))
    m = measure(
        _runner(session, fmt.input_name, array, provider, cfg.runtime.device_id), batch, cfg.timing
    )
    result = _result(info, provider, m, cfg.runtime.threads, report.peaks_gflops)
    if provider in GPU_PROVIDERS:
        copies = measure(host_runner(session, fmt.input_name, array), batch, cfg.timing)
        result.with_copies = copies.stats() | {"stable": copies.stable, "spread": copies.spread}
    return result


def _result(
    info: ModelInfo, provider: Provider, m: Measurement, threads: int, peaks: dict[str, float]
) -> Result:
    stats = m.stats()
    gflops = info.facts["gflops_per_image"] * stats["throughput_ips"]
    peak = peaks.get(provider.value)
    return Result(
        model=info.model,
        architecture=info.architecture,
        precision=info.precision,
        provider=provider.value,
        batch_size=m.batch_size,
        threads=threads or os.cpu_count() or 1,
        stats=stats,
        stable=m.stable,
        spread=m.spread,
        p50_spread=m.p50_spread,
        window_ips=m.window_ips,
        window_p50_ms=m.window_p50_ms,
        warmup_runs=m.warmup_runs,
        iterations=len(m.latencies_ms),
        latencies_ms=m.latencies_ms,
        gflops_per_s=gflops,
        peak_pct=100 * gflops / peak if peak else None,
    )
