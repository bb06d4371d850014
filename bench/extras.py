"""Figures beside the model-only ones: the infer pipeline end to end (decode included), the
same model in Keras, and the best configuration under a latency budget."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import measure
from cnnbench.bench.runners import with_provider
from cnnbench.infer.errors import InferError
from cnnbench.infer.session import Provider

if TYPE_CHECKING:
    from cnnbench.bench.run import BenchConfig, BenchReport, Result, Target

# The pipeline reaching this share of the model-only rate means the model is the limit.
MODEL_BOUND_RATIO = 0.85


def bottleneck(pipeline_ips: float, model_ips: float) -> str:
    """'model' when the pipeline runs near the model's own rate, else decode and I/O."""
    return "model" if pipeline_ips >= MODEL_BOUND_RATIO * model_ips else "decode and I/O"


def end_to_end(
    targets: list[Target], cfg: BenchConfig, report: BenchReport, log: Callable[[str], None]
) -> list[dict]:
    """One pass of `run_infer` over `cfg.images` per model and provider, at the batch size
    with the best model-only throughput."""
    from cnnbench.infer.pipeline import InferConfig, run_infer

    assert cfg.images is not None, "called only with --images"
    rows = []
    for target in targets:
        for provider in report.providers:
            best = report.best(target.label, provider)
            if best is None:
                continue
            log(f"end to end: {target.label} on {provider}, batch {best.batch_size} ...")
            with tempfile.TemporaryDirectory(prefix="cnnbench-e2e-") as tmp:
                infer_cfg = InferConfig(
                    model=target.path,
                    inputs=(cfg.images,),
                    output=os.path.join(tmp, "predictions.csv"),
                    batch_size=best.batch_size,
                    progress=False,
                    runtime=with_provider(cfg.runtime, Provider(provider)),
                    foreign=cfg.foreign,
                )
                try:
                    summary = run_infer(infer_cfg)
                except InferError as e:
                    raise BenchError(f"end to end on {cfg.images}: {e}") from e
            model_ips = best.stats["throughput_ips"]
            rows.append(
                {
                    "model": target.label,
                    "provider": provider,
                    "batch_size": best.batch_size,
                    "images": summary.images,
                    "errors": summary.errors,
                    "pipeline_ips": summary.images_per_second,
                    "model_only_ips": model_ips,
                    "ratio": summary.images_per_second / model_ips,
                    "bottleneck": bottleneck(summary.images_per_second, model_ips),
                }
            )
    return rows


def keras_baselines(
    targets: list[Target], cfg: BenchConfig, report: BenchReport, log: Callable[[str], None]
) -> list[dict]:
    """Keras `predict` and a tf.function on the same uint8 inputs, at batch 1 and at the
    CPU's best batch size, with ONNX Runtime's speed-up over each."""
    rows = []
    for target in targets:
        if target.keras_path is None:
            continue
        cpu = [r for r in report.results if r.model == target.label and r.provider == "cpu"]
        if not cpu:
            continue
        best = max(cpu, key=lambda r: r.stats["throughput_ips"])
        for result in {
            r.batch_size: r for r in cpu if r.batch_size in (1, best.batch_size)
        }.values():
            log(f"keras baseline: {target.label}, batch {result.batch_size} ...")
            rows += _keras_rows(target, result, cfg, report)
    return rows


def _keras_rows(target: Target, ort: Result, cfg: BenchConfig, report: BenchReport) -> list[dict]:
    import keras
    import tensorflow as tf

    from cnnbench.bench.run import make_images

    info = next(m for m in report.models if m.model == target.label)
    model = keras.saving.load_model(target.keras_path, compile=False)
    assert info.fmt is not None, "resolved when the model was measured"
    x = make_images(info.fmt, ort.batch_size)  # the very images ONNX Runtime was given
    graph = tf.function(lambda t: model(t, training=False))
    runs = {
        "keras predict": lambda: model.predict(x, batch_size=len(x), verbose=0),
        "tf.function": lambda: graph(x).numpy(),
    }
    rows = []
    for name, run in runs.items():
        stats = measure(run, ort.batch_size, cfg.timing).stats()
        rows.append(
            {
                "model": target.label,
                "runtime": name,
                "batch_size": ort.batch_size,
                "p50_ms": stats["p50_ms"],
                "throughput_ips": stats["throughput_ips"],
                "ort_p50_ms": ort.stats["p50_ms"],
                "ort_speedup": ort.stats["throughput_ips"] / stats["throughput_ips"],
            }
        )
    keras.backend.clear_session()
    return rows


def recommend(results: list[Result], max_latency_ms: float) -> list[dict]:
    """Per model: the highest-throughput provider and batch whose p99 stays under the budget."""
    rows = []
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model]
        fits = [r for r in mine if r.stats["p99_ms"] <= max_latency_ms]
        if not fits:
            fastest = min(mine, key=lambda r: r.stats["p99_ms"])
            rows.append(
                {
                    "model": model,
                    "fits": False,
                    "max_latency_ms": max_latency_ms,
                    "lowest_p99_ms": fastest.stats["p99_ms"],
                }
            )
            continue
        best = max(fits, key=lambda r: r.stats["throughput_ips"])
        rows.append(
            {
                "model": model,
                "fits": True,
                "max_latency_ms": max_latency_ms,
                "provider": best.provider,
                "precision": best.precision,
                "batch_size": best.batch_size,
                "throughput_ips": best.stats["throughput_ips"],
                "p99_ms": best.stats["p99_ms"],
            }
        )
    return rows
