"""`cnnbench bench`: a thin shell over `run_bench` and the writers."""

from __future__ import annotations

import dataclasses

import click

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import DEFAULT_MIN_RUNS, Timing
from cnnbench.bench.results import DEFAULT_MAX_BATCH, Baseline, BenchConfig, BenchReport, Scenario
from cnnbench.bench.tune_config import QUICK_MAX_BATCH, TUNE_TIMING
from cnnbench.files import atomic_open, unwritable
from cnnbench.infer.options import (
    foreign_preprocessing_options,
    parse_providers,
    runtime_options,
    tensorrt_options,
)
from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.session import Provider, RuntimeOptions


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
    help="ONNX model (repeatable). The first is the reference for agreement.",
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
    "--scenario",
    type=click.Choice([s.value for s in Scenario], case_sensitive=False),
    default=Scenario.OFFLINE.value,
    show_default=True,
    help="offline: the batch sweep; single-stream: batch 1, p90 headline; server: Poisson "
    "arrivals, the highest rate whose p99 <= --max-latency-ms.",
)
@click.option(
    "--concurrency",
    callback=parse_batch_sizes,
    help="e.g. 1,2,4: that many runs in flight at once, the cores split among them "
    "(server: its workers). Default: 1.",
)
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
    help="Seconds per window, at least (when --iterations is not given).",
)
@click.option(
    "--min-runs",
    type=click.IntRange(min=1),
    default=DEFAULT_MIN_RUNS,
    show_default=True,
    help="Timed runs per configuration, at least; fewer within --max-seconds: INVALID.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Time cap per configuration (server: per search).",
)
@foreign_preprocessing_options
@click.option(
    "--images",
    type=click.Path(file_okay=False),
    help="Folder of class folders: top-1 accuracy and agreement per row, the pipeline's "
    "stages and its bottleneck.",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Top operator types by share of run time (ORT profiler; OpenVINO counters).",
)
@click.option(
    "--baseline",
    type=click.Choice(list(Baseline), case_sensitive=False),
    help="Also time the zoo models in Keras.",
)
@click.option(
    "--max-latency-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="Offline: recommend the fastest configuration whose p99 stays under this. "
    "Server: the p99 bound of the rate search.",
)
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(dir_okay=False),
    help="BASE.json NEW.json: per configuration the ratio and whether it lies outside "
    "both runs' spread; measures nothing.",
)
@click.option(
    "--fail-above",
    type=click.FloatRange(min=0),
    help="With --compare: exit 1 on a regression larger than this many percent.",
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
def bench(
    models: tuple[str, ...],
    archs: str | None,
    providers: tuple[Provider, ...] | None,
    device_id: int,
    threads: int,
    precision_hints: tuple[str, ...],
    trt_cache: str,
    fp16: bool,
    scenario: str,
    concurrency: tuple[int, ...] | None,
    batch_sizes: tuple[int, ...] | None,
    max_batch: int,
    warmup: int,
    iterations: int | None,
    duration: float,
    min_runs: int,
    max_seconds: float,
    foreign: ForeignOptions,
    images: str | None,
    profile: bool,
    baseline: str | None,
    max_latency_ms: float | None,
    compare: tuple[str, str] | None,
    fail_above: float | None,
    cache_dir: str | None,
    no_peak: bool,
    json_path: str | None,
    csv_path: str | None,
    md_path: str | None,
    plot_path: str | None,
) -> None:
    """Measure latency and throughput per model, runtime, precision and batch size.

    \b
    Example:
      cnnbench bench --model model.onnx --batch-sizes 1,8,32 --json bench.json
      cnnbench bench --arch resnet50 --provider cpu,openvino --precision-hint f32,bf16
      cnnbench bench --model m.onnx --scenario server --max-latency-ms 20 --concurrency 2
      cnnbench bench --compare base.json new.json --fail-above 5
    """
    if compare:
        _compare(compare, fail_above)
        return
    if fail_above is not None:
        raise click.BadParameter("applies to --compare only", param_hint="--fail-above")
    from cnnbench.bench.zoo import default_cache_dir, parse_archs

    outputs = {"--json": json_path, "--csv": csv_path, "--markdown": md_path, "--plot": plot_path}
    check_outputs(outputs)
    try:
        parsed_archs = parse_archs(archs) if archs else ()
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    cfg = BenchConfig(
        models=models,
        archs=parsed_archs,
        providers=providers,
        precision_hints=precision_hints,
        batch_sizes=batch_sizes,
        max_batch=max_batch,
        scenario=Scenario(scenario),
        concurrency=concurrency or (1,),
        timing=Timing(
            warmup=warmup,
            iterations=iterations,
            duration=duration,
            max_seconds=max_seconds,
            min_runs=min_runs,
        ),
        runtime=RuntimeOptions(
            Provider.CPU,
            device_id,
            threads,
            trt_cache=trt_cache,
            trt_fp16=fp16,
        ),
        foreign=foreign,
        images=images,
        baseline=Baseline(baseline) if baseline else None,
        max_latency_ms=max_latency_ms,
        profile=profile,
        cache_dir=cache_dir or default_cache_dir(),
        peak=not no_peak,
    )
    try:
        from cnnbench.bench.run import run_bench

        report = run_bench(cfg, log=lambda line: click.echo(line, err=True))
        _write(report, outputs)
    except BenchError as e:
        raise click.ClickException(str(e)) from e


def _compare(paths: tuple[str, str], fail_above: float | None) -> None:
    from cnnbench.bench.compare import compare, render

    try:
        comparison = compare(*paths)
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    click.echo(render(comparison, fail_above))
    if fail_above is not None and (bad := comparison.regressions(fail_above)):
        worst = max(bad, key=lambda c: c.regression_pct())
        click.echo(
            f"error: {len(bad)} configuration(s) regressed by more than {fail_above:g}% "
            f"(worst {worst.regression_pct():.1f}%: {' '.join(map(str, worst.key))})",
            err=True,
        )
        raise SystemExit(1)


def _write(report: BenchReport, outputs: dict[str, str | None]) -> None:
    from cnnbench.bench.report import render, write_csv, write_json, write_markdown

    click.echo(render(report))
    if outputs["--json"]:
        write_json(outputs["--json"], report)
    if outputs["--csv"]:
        write_csv(outputs["--csv"], report)
    if outputs["--markdown"]:
        write_markdown(outputs["--markdown"], report)
    if outputs["--plot"]:
        from cnnbench.bench.plot import write_plot

        write_plot(outputs["--plot"], report)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@foreign_preprocessing_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write it as JSON.")
def inspect(
    model: str,
    foreign: ForeignOptions,
    json_path: str | None,
) -> None:
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
        found = inspect_model(model, foreign)
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    click.echo("\n".join(render(found)))
    if json_path:
        with atomic_open(json_path) as f:
            json.dump(found.to_dict(), f, indent=2, ensure_ascii=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--images",
    required=True,
    type=click.Path(file_okay=False),
    help="Photos like the job's: int8 calibration, top-1 agreement with fp32 (accuracy "
    "when they sit in class folders).",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="PLAN.json to write."
)
@click.option(
    "--max-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="Points of top-1 accuracy (class folders) or agreement with fp32 a candidate may lose.",
)
@click.option(
    "--latency-budget",
    type=click.FloatRange(min=0, min_open=True),
    help="MS: only configurations whose p99 per batch stays under this.",
)
@click.option(
    "--provider",
    "providers",
    callback=parse_providers,
    help="Comma-separated: cpu,cuda,tensorrt,openvino. Default: every provider that loads.",
)
@click.option(
    "--time-budget",
    type=click.FloatRange(min=0, min_open=True),
    help="MIN: stop starting new variants after this many minutes.",
)
@click.option(
    "--exhaustive",
    is_flag=True,
    help="Every batch size up to --max-batch and every number of runs in flight up to the "
    "cores (default: stop each sweep once img/s stops rising).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=QUICK_MAX_BATCH,
    show_default=True,
    help="Largest batch size tried.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0.001),
    default=TUNE_TIMING.duration,
    show_default=True,
    help="Seconds per measurement window, at least (three must agree, as in bench).",
)
def tune(
    model: str,
    images: str,
    output: str,
    max_drop: float,
    latency_budget: float | None,
    providers: tuple[Provider, ...] | None,
    time_budget: float | None,
    exhaustive: bool,
    max_batch: int,
    duration: float,
) -> None:
    """Find the fastest configuration of MODEL whose answers stay within --max-drop of
    fp32, and write it as a plan for `cnnbench infer --plan`.

    \b
    Example:
      cnnbench tune model.onnx --images photos/ -o plan.json
      cnnbench infer --plan plan.json photos/ -o predictions.csv
    """
    from cnnbench.bench.tune import run_tune
    from cnnbench.bench.tune_config import TuneConfig
    from cnnbench.bench.tune_report import render
    from cnnbench.infer.runtime.plan import write_plan

    cfg = TuneConfig(
        model=model,
        images=images,
        output=output,
        max_drop=max_drop,
        latency_budget_ms=latency_budget,
        providers=providers,
        time_budget_s=time_budget * 60 if time_budget else None,
        exhaustive=exhaustive,
        max_batch=max_batch,
        timing=dataclasses.replace(TUNE_TIMING, duration=duration),
    )
    try:
        report = run_tune(cfg, log=lambda line: click.echo(line, err=True))
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    write_plan(report.plan, output)
    click.echo(render(report))
    click.echo(f"wrote {output}")
