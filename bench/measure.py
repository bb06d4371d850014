"""Measurement: warm-up apart, perf_counter_ns around exactly the measured call,
raw latencies kept as floats and formatted only by the writers."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from cnnbench import __version__
from cnnbench.bench.errors import BenchError
from cnnbench.infer.errors import InferError
from cnnbench.infer.preprocess import resolve_input_format
from cnnbench.infer.session import RuntimeOptions, active_provider, create_session

PERCENTILES = (50, 90, 95, 99)
PERCENTILE_METHOD = "linear"  # numpy's default: interpolates between closest ranks


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    batch_sizes: tuple[int, ...] = (1, 8)
    warmup: int = 5
    iterations: int | None = None
    duration: float = 3.0
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


@dataclass
class BenchResult:
    model: str
    provider: str
    batch_size: int
    latencies_ms: list[float]
    cold_start_ms: float
    threads: int

    @property
    def stats(self) -> dict[str, float]:
        lat = np.asarray(self.latencies_ms)
        figures = {
            "min_ms": float(lat.min()),
            "mean_ms": float(lat.mean()),
            "max_ms": float(lat.max()),
        }
        for p in PERCENTILES:
            figures[f"p{p}_ms"] = float(np.percentile(lat, p, method=PERCENTILE_METHOD))
        figures["throughput_ips"] = self.batch_size * len(lat) / (lat.sum() / 1e3)
        return figures

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(self.stats)
        data["iterations"] = len(self.latencies_ms)
        return data


def time_runs(run: object, warmup: int, iterations: int | None, duration: float) -> list[float]:
    """Call `run()` `warmup` times untimed, then time each call (ms) until the count or
    the duration is reached."""
    for _ in range(warmup):
        run()
    latencies: list[float] = []
    deadline = time.perf_counter_ns() + int(duration * 1e9)
    while True:
        t0 = time.perf_counter_ns()
        run()
        t1 = time.perf_counter_ns()
        latencies.append((t1 - t0) / 1e6)
        if iterations is not None:
            if len(latencies) >= iterations:
                break
        elif t1 >= deadline:
            break
    return latencies


def bench_model(path: str, cfg: BenchConfig) -> list[BenchResult]:
    t0 = time.perf_counter_ns()
    try:
        session = create_session(path, cfg.runtime)
        fmt = resolve_input_format(session)
    except InferError as e:
        raise BenchError(str(e)) from e
    results = []
    rng = np.random.default_rng(0)
    for i, batch in enumerate(cfg.batch_sizes):
        images = rng.integers(0, 256, (batch, *fmt.size, fmt.channels), dtype=np.uint8)
        feed = {fmt.input_name: fmt.to_model_input(images)}
        cold = 0.0
        if i == 0:
            session.run(None, feed)
            cold = (time.perf_counter_ns() - t0) / 1e6
        latencies = time_runs(
            lambda feed=feed: session.run(None, feed), cfg.warmup, cfg.iterations, cfg.duration
        )
        results.append(
            BenchResult(
                model=path,
                provider=active_provider(session).value,
                batch_size=batch,
                latencies_ms=latencies,
                cold_start_ms=cold,
                threads=cfg.runtime.threads or os.cpu_count() or 1,
            )
        )
    return results


def machine_facts() -> dict:
    import onnxruntime as ort

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "cnnbench": __version__,
        "command": " ".join(sys.argv),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
