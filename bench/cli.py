"""`cnnbench bench`: a thin shell over the measurement library."""

from __future__ import annotations

import json

import click

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import PERCENTILE_METHOD, BenchConfig, bench_model, machine_facts
from cnnbench.infer.options import make_runtime, runtime_options


def parse_batch_sizes(ctx: click.Context, param: click.Parameter, text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return sizes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="ONNX model (repeatable).",
)
@click.option("--batch-sizes", default="1,8", show_default=True, callback=parse_batch_sizes)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), help="Timed runs per batch size.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.01),
    default=3.0,
    show_default=True,
    help="Seconds of timed runs per batch size (when --iterations is not given).",
)
@runtime_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Write every figure and the machine's facts as JSON.",
)
def bench(
    models: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    warmup: int,
    iterations: int | None,
    duration: float,
    provider: str,
    device_id: int,
    threads: int,
    json_path: str | None,
) -> None:
    """Measure latency and throughput of ONNX models per batch size.

    \b
    Example:
      cnnbench bench --model model.onnx --batch-sizes 1,8,32 --json bench.json
    """
    cfg = BenchConfig(
        models=models,
        batch_sizes=batch_sizes,
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        runtime=make_runtime(provider, device_id, threads),
    )
    try:
        results = [r for path in models for r in bench_model(path, cfg)]
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"{'model':<24} {'provider':<8} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} "
        f"{'p99 ms':>9} {'img/s':>9}"
    )
    for r in results:
        s = r.stats
        click.echo(
            f"{r.model[-24:]:<24} {r.provider:<8} {r.batch_size:>5} {s['p50_ms']:>9.3f} "
            f"{s['p90_ms']:>9.3f} {s['p99_ms']:>9.3f} {s['throughput_ips']:>9.1f}"
        )
    click.echo(
        f"warm-up {warmup} runs excluded; percentiles: numpy '{PERCENTILE_METHOD}'", err=True
    )
    if json_path:
        doc = {
            "machine": machine_facts(),
            "config": {
                "batch_sizes": list(batch_sizes),
                "warmup": warmup,
                "iterations": iterations,
                "duration_s": duration,
            },
            "results": [r.to_dict() for r in results],
        }
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
