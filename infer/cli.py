"""`cnnbench infer`: a thin shell over `run_infer`."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

from cnnbench.files import Report
from cnnbench.infer.engines.job import Engine, InferConfig, InferSummary, apply_plan, skipped_line
from cnnbench.infer.engines.local import run_infer
from cnnbench.infer.engines.ray import run_ray_infer
from cnnbench.infer.errors import InferError
from cnnbench.infer.options import (
    EngineOptions,
    JobOptions,
    engine_options,
    foreign_preprocessing_options,
    given_options,
    job_options,
    runtime_options,
)
from cnnbench.infer.runtime.plan import Plan, read_plan
from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, check_ort_install


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="[MODEL] INPUTS...")
@job_options
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False),
    help="PLAN.json from `cnnbench tune`: its model, provider, precision, batch size, "
    "threads and runs in flight (then no MODEL argument).",
)
@engine_options
@runtime_options
@foreign_preprocessing_options
def infer(
    paths: tuple[str, ...],
    job: JobOptions,
    plan_path: str | None,
    engine: EngineOptions,
    runtime: RuntimeOptions,
    foreign: ForeignOptions,
) -> None:
    """Classify every image under INPUTS into a CSV: folders (recursive), files, @list.txt,
    URLs (s3://bucket/prefix/, gs://, az://, https:// files) and tar shards (a.tar,
    shards-{000000..000099}.tar; local or by URL).

    Unreadable files go to the errors CSV; a run with bad files still exits 0. Ctrl-C
    finishes the batches in flight and exits 130; --resume finishes a stopped run.

    \b
    Example:
      cnnbench infer model.onnx photos/ -o predictions.csv --top-k 3
      cnnbench infer model.onnx @files.txt -o predictions.csv --resume
      cnnbench infer model.onnx s3://bucket/photos/ -o predictions.csv
      cnnbench infer model.onnx 'shards-{000000..000099}.tar' -o predictions.csv
      cnnbench infer model.onnx /shared/photos -o predictions.csv --engine ray --address auto
      cnnbench infer --plan plan.json photos/ -o predictions.csv
    """
    model, inputs = model_and_inputs(paths, plan_path, engine.engine)
    if warning := check_ort_install():
        click.echo(f"warning: {warning}", err=True)
    cfg = job.config(model, inputs, engine, runtime, foreign)
    with infer_errors():
        cfg, plan = with_plan(cfg, plan_path)
        result = run_job(cfg, engine, lambda line: click.echo(line, err=True))
    click.echo(summary_line(result, cfg), err=True)
    if plan is not None:
        click.echo(plan_line(plan, result, cfg), err=True)
    if result.interrupted:
        stop_interrupted(engine.engine, cfg.output)


def model_and_inputs(
    paths: tuple[str, ...], plan_path: str | None, engine: Engine
) -> tuple[str, tuple[str, ...]]:
    """MODEL INPUTS..., or only INPUTS with --plan (which names the model)."""
    if plan_path is not None:
        check_plan_options(engine)
        return "", paths
    if len(paths) < 2:
        raise click.UsageError("give MODEL and at least one INPUT (or --plan PLAN.json INPUTS)")
    return paths[0], paths[1:]


def with_plan(cfg: InferConfig, plan_path: str | None) -> tuple[InferConfig, Plan | None]:
    """The job in the plan's configuration, its warnings said (no plan: as it is)."""
    if plan_path is None:
        return cfg, None
    plan = read_plan(plan_path)
    cfg, warnings = apply_plan(cfg, plan)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return cfg, plan


def run_job(cfg: InferConfig, engine: EngineOptions, report: Report) -> InferSummary:
    if engine.engine is Engine.RAY:
        return run_ray_infer(cfg, engine.ray, report)
    return run_infer(cfg, report)


@contextlib.contextmanager
def infer_errors() -> Iterator[None]:
    """A library error, or a disk that filled up while writing, as one line."""
    try:
        yield
    except InferError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # the disk filled up or went away while writing: rows so far stay
        where = f" {e.filename}" if e.filename else ""
        raise click.ClickException(
            f"cannot write{where}: {e.strerror or e}; free space (or fix the folder) "
            "and run the same command with --resume"
        ) from e


def stop_interrupted(engine: Engine, output: str) -> NoReturn:
    """After Ctrl-C: what was saved, the command that finishes the job, exit 130."""
    again = " ".join(shlex.quote(a) for a in sys.argv)
    again = again if "--resume" in sys.argv else f"{again} --resume"
    saved = (
        "rows so far are" if engine is Engine.LOCAL else f"finished blocks are in {output}.parts"
    )
    click.echo(f"interrupted: {saved} saved; to finish, run: {again}", err=True)
    sys.exit(130)


PLAN_SETS = ("provider", "batch_size", "threads", "precision_hint", "fp16")


def check_plan_options(engine: Engine) -> None:
    """What a plan sets cannot also be asked for on the command line."""
    if given := given_options(PLAN_SETS):
        raise click.UsageError(f"--plan sets {', '.join(given)}: leave it out (or re-run tune)")
    if engine is not Engine.LOCAL:
        raise click.UsageError("--plan runs on the local engine: leave out --engine ray")


def plan_line(plan: Plan, summary: InferSummary, cfg: InferConfig) -> str:
    """The plan's expected img/s beside the one reached (bench --compare's ratio)."""
    e = plan.expected
    got = summary.images_per_second
    line = (
        f"plan: {plan.describe()}: expected {e.images_per_second:.1f} img/s (model only"
        + (f"; {e.end_to_end_ips:.1f} end to end when tuned" if e.end_to_end_ips else "")
        + f"), reached {got:.1f} img/s ({got / e.images_per_second:.2f}x)"
    )
    if summary.provider != plan.provider.value and cfg.runtime.provider is Provider.AUTO:
        line += f"\nwarning: the plan's provider {plan.provider.value} did not load: ran on "
        line += summary.provider
    return line


def summary_line(summary: InferSummary, cfg: InferConfig) -> str:
    line = (
        f"{summary.images} images, {summary.errors} errors, "
        f"{summary.images_per_second:.1f} img/s, {summary.seconds:.2f} s, "
        f"provider {summary.provider}"
        + (f" {summary.precision}" if summary.precision else "")
        + f", batch {summary.batch_size}"
        + (f" x{summary.concurrency} in flight" if summary.concurrency > 1 else "")
    )
    if summary.skipped:
        line += f", {summary.skipped} already done (resumed)"
    if summary.scores:
        line += f", scores {summary.scores}"
    if summary.accuracy is not None:
        line += f", accuracy {summary.accuracy:.2%} ({summary.correct}/{summary.labelled})"
        per_class = ", ".join(
            f"{label} {c / t:.0%}" for label, (c, t) in sorted(summary.per_class.items())
        )
        line += f"\nper class: {per_class}"
    if summary.per_worker:
        workers = ", ".join(f"{w} {n}" for w, n in sorted(summary.per_worker.items()))
        line += f"\nray: rows per worker: {workers}; start-up {summary.startup_seconds:.2f} s"
    if summary.skipped_by_extension:
        line += f"\n{skipped_line(summary.skipped_by_extension)}; pass --extensions to include them"
    if summary.truncated:
        line += (
            f"\n{len(summary.truncated)} truncated files predicted from what decoded "
            "(--allow-truncated)"
        )
    if summary.errors:
        line += f"\n{summary.errors} files failed: see {cfg.errors_path}"
    return line
