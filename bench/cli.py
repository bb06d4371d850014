"""`cnnbench bench`: a thin shell over `run_bench` and the writers."""

from __future__ import annotations

from typing import Any

import click

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import Timing
from cnnbench.bench.run import DEFAULT_MAX_BATCH, Baseline, BenchConfig, run_bench
from cnnbench.files import unwritable
from cnnbench.infer.options import (
    foreign_options,
    output_options,
    preprocess_options,
    runtime_options,
    shape_options,
    tensorrt_options,
)
from cnnbench.infer.session import Provider, RuntimeOptions


def parse_batch_sizes(
    ctx: click.Context, param: click.Parameter, text: str | None
) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return tuple(dict.fromkeys(sizes))


def check_outputs(paths: dict[str, str | None]) -> None:
    """Fail before measuring, not after minutes of it, when an output cannot be written."""
    for option, path in paths.items():
        if path is None:
            continue
        if why := unwritable(path):
            raise click.BadParameter(f"cannot write {path}: {why}", param_hint=option)
    plot = paths.get("--plot")
    if plot and not plot.lower().endswith(".png"):
        raise click.BadParameter(
            f"give a file name ending in .png, got {plot!r}", param_hint="--plot"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="ONNX model (repeatable).",
)
@click.option(
    "--arch",
    "archs",
    help="Zoo: 'all' or registry names, e.g. vgg16,resnet50; "
    "built with random weights, converted once and cached.",
)
@runtime_options(provider_list=True)
@tensorrt_options
@click.option(
    "--batch-sizes",
    callback=parse_batch_sizes,
    help="e.g. 1,8,32. Default: 1, 2, 4, ... until throughput stops improving.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BATCH,
    show_default=True,
    help="Largest batch of the sweep.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Untimed runs before each configuration.",
)
@click.option("--iterations", type=click.IntRange(min=1), help="Runs per window.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Seconds per window (when --iterations is not given).",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Time cap per configuration while windows disagree.",
)
@shape_options
@preprocess_options
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Also run the infer pipeline on this folder (decode included).",
)
@click.option(
    "--baseline",
    type=click.Choice(list(Baseline), case_sensitive=False),
    help="Also time the zoo models in Keras.",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Recommend the fastest configuration whose p99 stays under this.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Zoo models' cache [default: $CNNBENCH_CACHE or ~/.cache/cnnbench].",
)
@click.option("--no-peak", is_flag=True, help="Skip the matmul peak measurement.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Every figure, the methodology and the machine's facts.",
)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="One row per result.")
@click.option(
    "--markdown",
    "md_path",
    type=click.Path(dir_okay=False),
    help="The tables as Markdown, for a README.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="PNG: throughput vs batch size, latency percentiles (needs matplotlib).",
)
def bench(**opts: Any) -> None:
    """Measure latency and throughput per model, provider and batch size.

    \b
    Example:
      cnnbench bench --model model.onnx --batch-sizes 1,8,32 --json bench.json
      cnnbench bench --arch all --provider cpu --markdown zoo.md
    """
    outputs = {
        "--json": opts["json_path"],
        "--csv": opts["csv_path"],
        "--markdown": opts["md_path"],
        "--plot": opts["plot_path"],
    }
    check_outputs(outputs)
    try:
        cfg = _config(opts)
        report = run_bench(cfg, log=lambda line: click.echo(line, err=True))
        _write(report, cfg, outputs)
    except BenchError as e:
        raise click.ClickException(str(e)) from e


def _config(opts: dict) -> BenchConfig:
    from cnnbench.bench.zoo import default_cache_dir, parse_archs

    timing = Timing(
        warmup=opts["warmup"],
        iterations=opts["iterations"],
        duration=opts["duration"],
        max_seconds=opts["max_seconds"],
    )
    return BenchConfig(
        models=opts["models"],
        archs=parse_archs(opts["archs"]) if opts["archs"] else (),
        providers=opts["providers"],
        batch_sizes=opts["batch_sizes"],
        max_batch=opts["max_batch"],
        timing=timing,
        runtime=RuntimeOptions(
            Provider.CPU,
            opts["device_id"],
            opts["threads"],
            trt_cache=opts["trt_cache"],
            trt_fp16=opts["fp16"],
        ),
        foreign=foreign_options(opts),
        images=opts["images"],
        baseline=Baseline(opts["baseline"]) if opts["baseline"] else None,
        max_latency_ms=opts["max_latency_ms"],
        cache_dir=opts["cache_dir"] or default_cache_dir(),
        peak=not opts["no_peak"],
    )


def _write(report, cfg: BenchConfig, outputs: dict[str, str | None]) -> None:
    from cnnbench.bench.report import render, write_csv, write_json, write_markdown

    click.echo(render(report, cfg))
    if outputs["--json"]:
        write_json(outputs["--json"], report, cfg)
    if outputs["--csv"]:
        write_csv(outputs["--csv"], report)
    if outputs["--markdown"]:
        write_markdown(outputs["--markdown"], report, cfg)
    if outputs["--plot"]:
        from cnnbench.bench.plot import write_plot

        write_plot(outputs["--plot"], report)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@shape_options
@preprocess_options
@output_options
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels file, one per line.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write it as JSON.")
def inspect(model: str, json_path: str | None, **opts: object) -> None:
    """Show what cnnbench reads from MODEL (any ONNX file) and what infer will do with it:
    inputs, outputs, layout, fixed dimensions, spec, preprocessing, labels, opset,
    producer, parameters and GFLOPs per image. The infer options given are applied.

    \b
    Example:
      cnnbench inspect model.onnx
      cnnbench inspect resnet50.onnx --preset imagenet --json resnet50.json
    """
    import json

    from cnnbench.bench.inspect import inspect_model, render

    check_outputs({"--json": json_path})
    try:
        found = inspect_model(model, foreign_options(opts))
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    click.echo("\n".join(render(found)))
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(found.to_dict(), f, indent=2, ensure_ascii=False)
