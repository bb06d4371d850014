"""The machine's practical peak, which `%peak` holds each row against: the fastest n x n
MatMul at p50 on the same provider, in the row's own precision where cnnbench can build
one. fp32 always (OpenVINO's fp32 rows use the CPU provider's); bf16 (OpenVINO compiled
with the bf16 hint) and int8 (ONNX Runtime's CPU provider on a QDQ MatMul) the first time
a row of that precision is measured. A row whose precision has no peak of its own here
(fp16 on CUDA, int8 on OpenVINO ...) is held against its provider's fp32 peak, and its
`peak_basis` says so."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from cnnbench.bench.flops import PEAK_INPUT, write_matmul_model
from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.results import BenchConfig, RunConfig
from cnnbench.bench.runners import make_run, ran_precision, timed_session
from cnnbench.infer.runtime.session import Provider

FP32 = "fp32"
SIZES = {
    Provider.CPU: (512, 1024),
    Provider.CUDA: (4096, 8192),
    Provider.TENSORRT: (4096, 8192),
}
# (provider, precision) -> (the configuration that runs its MatMul, whether it is int8 QDQ)
OWN_PEAKS = {
    (Provider.OPENVINO.value, "bf16"): (RunConfig(Provider.OPENVINO, "bf16"), False),
    (Provider.CPU.value, "int8"): (RunConfig(Provider.CPU), True),
}


def peak_key(provider: str, precision: str) -> str:
    """The key in `peaks_gflops`: fp32 peaks by provider ('cpu', 'cuda'; OpenVINO runs on
    the CPU: 'cpu'), any other precision as 'provider precision' ('openvino bf16')."""
    if precision == FP32:
        return Provider.CPU.value if provider == Provider.OPENVINO.value else provider
    return f"{provider} {precision}"


def basis_of(key: str) -> str:
    """'cpu' -> 'cpu fp32'; 'openvino bf16' stays."""
    return key if " " in key else f"{key} {FP32}"


def fp32_peaks(providers: list[Provider], cfg: BenchConfig, folder: str) -> dict[str, float]:
    return {
        p.value: measure_peak(RunConfig(p), False, cfg, folder) or 0.0
        for p in providers
        if p in SIZES
    }


def add_own_peak(provider: str, precision: str, cfg: BenchConfig, peaks: dict[str, float]) -> None:
    """Measure a non-fp32 precision's peak once, before its first row is timed."""
    key = peak_key(provider, precision)
    how = OWN_PEAKS.get((provider, precision))
    if not cfg.peak or how is None or key in peaks:
        return
    rc, int8 = how
    with tempfile.TemporaryDirectory(prefix="cnnbench-peak-") as folder:
        gflops = measure_peak(rc, int8, cfg, folder, expect=precision)
    if gflops:
        peaks[key] = gflops


def measure_peak(
    rc: RunConfig, int8: bool, cfg: BenchConfig, folder: str, expect: str = FP32
) -> float | None:
    """GFLOP/s of the fastest MatMul of several sizes (the best one depends on the
    caches); None when the runtime would not run it at `expect` (OpenVINO's bf16 hint
    on a CPU without native bf16)."""
    best = 0.0
    for n in SIZES.get(rc.provider, SIZES[Provider.CPU]):
        path = write_matmul_model(os.path.join(folder, f"matmul{n}.onnx"), n, int8)
        session, _ = timed_session(path, rc, cfg.runtime)
        if ran_precision(session, expect) != expect:
            return None
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        run = make_run(session, PEAK_INPUT, a, rc.provider, cfg.runtime.device_id)
        timing = Timing(cfg.timing.warmup, cfg.timing.iterations, cfg.timing.duration, 5.0, 3)
        p50_s = measure(run, 1, timing).stats().p50_ms / 1e3
        best = max(best, 2 * n**3 / p50_s / 1e9)
    return best


def row_peak(provider: str, precision: str, peaks: dict[str, float]) -> tuple[float, str] | None:
    """(GFLOP/s, basis) a row is held against: its own precision's peak, else its
    provider's fp32 one; None when neither was measured."""
    for key in (peak_key(provider, precision), peak_key(provider, FP32)):
        if peaks.get(key):
            return peaks[key], basis_of(key)
    return None
