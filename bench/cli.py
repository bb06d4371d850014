"""`cnnbench bench`: a thin shell over `run_bench` and the writers."""

from __future__ import annotations

import dataclasses
from typing import NoReturn

import click

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import Timing
from cnnbench.bench.options import (
    MeasureOptions,
    ReportFiles,
    measure_options,
    report_options,
    timing_options,
)
from cnnbench.bench.results import BenchReport
from cnnbench.bench.tune_config import QUICK_MAX_BATCH, TUNE_TIMING
from cnnbench.files import atomic_open
from cnnbench.infer.options import (
    RuntimeSweep,
    foreign_preprocessing_options,
    parse_providers,
    runtime_sweep_options,
)
from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.session import Provider
from cnnbench.signals import how_stopped, stop_signal


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@measure_options
@runtime_sweep_options
@timing_options
@foreign_preprocessing_options
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
@report_options
def bench(
    measure: MeasureOptions,
    runtimes: RuntimeSweep,
    timing: Timing,
    foreign: ForeignOptions,
    compare: tuple[str, str] | None,
    fail_above: float | None,
    files: ReportFiles,
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
    files.check(measure.models)
    cfg = measure.config(runtimes, timing, foreign)
    try:
        from cnnbench.bench.run import run_bench

        with stop_signal() as stopped:
            report = run_bench(cfg, log=lambda line: click.echo(line, err=True))
        _write(report, files)
    except BenchError as e:
        raise click.ClickException(str(e)) from e
    if report.interrupted:
        click.echo(f"interrupted: {report.interrupted}", err=True)
        raise SystemExit(128 + stopped.signum)


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


def _write(report: BenchReport, files: ReportFiles) -> None:
    from cnnbench.bench.report import render, write_csv, write_json, write_markdown

    click.echo(render(report))
    if files.json:
        write_json(files.json, report)
    if files.csv:
        write_csv(files.csv, report)
    if files.markdown:
        write_markdown(files.markdown, report)
    if files.plot:
        from cnnbench.bench.plot import write_plot

        write_plot(files.plot, report)


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

    ReportFiles(json=json_path).check((model,))
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
    help="Photos like the job's, a folder or a prefix URL: int8 calibration, top-1 "
    "agreement with fp32 (accuracy when they sit in class folders).",
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
    help="MIN: stop measuring after this many minutes (checked after each batch size; the "
    "int8 calibration before and the finalists' end-to-end runs after are not cut).",
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

    Ctrl-C (or SIGTERM) ends the search: the plan is written from what was measured,
    marked as stopped, and tune exits 130 (143).

    \b
    Example:
      cnnbench tune model.onnx --images photos/ -o plan.json
      cnnbench infer --plan plan.json photos/ -o predictions.csv
    """
    from cnnbench.bench.tune import run_tune
    from cnnbench.bench.tune_config import TuneConfig
    from cnnbench.bench.tune_report import render

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
    if report.candidates:
        click.echo(render(report))
    if report.plan is not None:
        click.echo(f"wrote {output}")
    if report.stopped:
        _stopped(report.stopped, report.stop_signal, output if report.plan else None)


def _stopped(where: str, signum: int, plan: str | None) -> NoReturn:
    """A tune stopped by Ctrl-C or SIGTERM: one line saying where, what it did not
    measure and whether a plan was written; exit 128 + the signal, as infer and bench."""
    outcome = (
        f"{plan} is the fastest of what was measured"
        if plan
        else "nothing within the bounds was measured: no plan written"
    )
    click.echo(f"{how_stopped(signum)}: {where}; {outcome}", err=True)
    raise SystemExit(128 + signum)
