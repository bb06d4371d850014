"""`cnnbench infer`: a thin shell over `run_infer`."""

from __future__ import annotations

import shlex
import sys

import click

from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.decode.probe import DEFAULT_MAX_PIXELS
from cnnbench.infer.engines.job import (
    IO_THREADS,
    Engine,
    InferConfig,
    InferSummary,
    RayOptions,
    apply_plan,
    skipped_line,
)
from cnnbench.infer.engines.local import run_infer
from cnnbench.infer.engines.ray import run_ray_infer
from cnnbench.infer.errors import InferError
from cnnbench.infer.options import (
    foreign_preprocessing_options,
    make_runtime,
    ray_options,
    runtime_options,
    tensorrt_options,
)
from cnnbench.infer.runtime.plan import Plan, read_plan
from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.runner import DEFAULT_BATCH_SIZE
from cnnbench.infer.runtime.session import Provider, check_ort_install
from cnnbench.infer.sinks.formats import Format, format_of
from cnnbench.infer.sources.listing import ALL_FILES, IMAGE_EXTENSIONS, Extensions


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, metavar="[MODEL] INPUTS...")
@click.option(
    "-o",
    "--output",
    required=True,
    help="Predictions to write, in the format of its extension: .csv, .jsonl (JSON lines) "
    "or .parquet (a folder of parts; also s3://BUCKET/PREFIX.parquet).",
)
@click.option(
    "--errors",
    help="Unreadable files (path, error), in the output's format. Default: OUTPUT.errors.EXT.",
)
@click.option(
    "--batch-size",
    type=int,
    help=f"Images per session run. Default: {DEFAULT_BATCH_SIZE[Provider.CPU]} on CPU, "
    f"{DEFAULT_BATCH_SIZE[Provider.CUDA]} on GPU.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    help="Local: decode threads (0 = one per core). Ray: inference actors (0 = autoscale).",
)
@click.option(
    "--io-threads",
    type=click.IntRange(min=0),
    help=f"Reads in flight (objects by URL, shards). Default: {IO_THREADS} when an input is "
    "a URL, a shard or @list, else 0 (the decode threads read local files).",
)
@click.option("--top-k", type=int, default=1, show_default=True)
@click.option("--limit", type=int, help="Only the first N files of the inputs.")
@click.option(
    "--extensions",
    help="Comma-separated file extensions to read in folders, e.g. jpg,png; '*' reads every "
    f"file. Default: {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}. Files left out "
    "are counted in the summary.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse images larger than this (width x height as decoded) before decoding them.",
)
@click.option(
    "--allow-truncated",
    is_flag=True,
    help="Predict truncated files from what decoded (default: they are errors).",
)
@click.option(
    "--resume", is_flag=True, help="Skip files already in the output or errors file; append."
)
@click.option("--summary", type=click.Path(dir_okay=False), help="Also write the summary as JSON.")
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(dir_okay=False),
    help="PLAN.json from `cnnbench tune`: its model, provider, precision, batch size, "
    "threads and runs in flight (then no MODEL argument).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@ray_options
@runtime_options
@tensorrt_options
@foreign_preprocessing_options
def infer(
    paths: tuple[str, ...],
    output: str,
    errors: str | None,
    batch_size: int | None,
    workers: int,
    io_threads: int | None,
    top_k: int,
    limit: int | None,
    extensions: str | None,
    max_pixels: int,
    allow_truncated: bool,
    resume: bool,
    summary: str | None,
    plan_path: str | None,
    no_progress: bool,
    engine: str,
    address: str | None,
    num_gpus_per_worker: float | None,
    block_size: int,
    provider: str,
    device_id: int,
    threads: int,
    precision_hint: str,
    trt_cache: str,
    fp16: bool,
    foreign: ForeignOptions,
) -> None:
    """Classify every image under INPUTS into a CSV, JSON lines or Parquet output: folders
    (recursive), files, @list.txt, URLs (s3://bucket/prefix/, gs://, az://, https:// files)
    and tar shards (a.tar, shards-{000000..000099}.tar; local or by URL).

    Unreadable files go to the errors file; a run with bad files still exits 0. Ctrl-C
    finishes the batches in flight and exits 130; --resume finishes a stopped run.

    \b
    Example:
      cnnbench infer model.onnx photos/ -o predictions.csv --top-k 3
      cnnbench infer model.onnx @files.txt -o predictions.csv --resume
      cnnbench infer model.onnx s3://bucket/photos/ -o s3://bucket/out/predictions.parquet
      cnnbench infer model.onnx 'shards-{000000..000099}.tar' -o predictions.jsonl
      cnnbench infer model.onnx /shared/photos -o predictions.csv --engine ray --address auto
      cnnbench infer --plan plan.json photos/ -o predictions.csv
    """
    if engine == Engine.LOCAL:
        check_local_engine_options(output)
    if plan_path is not None:
        check_plan_options(engine)
        model, inputs = "", paths
    elif len(paths) < 2:
        raise click.UsageError("give MODEL and at least one INPUT (or --plan PLAN.json INPUTS)")
    else:
        model, inputs = paths[0], paths[1:]
    if warning := check_ort_install():
        click.echo(f"warning: {warning}", err=True)
    cfg = InferConfig(
        model=model,
        inputs=inputs,
        output=output,
        errors=errors,
        batch_size=batch_size,
        workers=workers if engine == Engine.LOCAL else 0,
        io_threads=io_threads,
        top_k=top_k,
        extensions=parse_extensions(extensions),
        limit=limit,
        progress=not no_progress,
        resume=resume,
        block_size=block_size,
        summary=summary,
        runtime=make_runtime(
            provider,
            device_id,
            threads,
            trt_cache=trt_cache,
            trt_fp16=fp16,
            precision_hint=precision_hint,
        ),
        foreign=foreign,
        limits=DecodeLimits(max_pixels, allow_truncated),
    )
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    plan = None
    try:
        if plan_path is not None:
            plan = read_plan(plan_path)
            cfg, warnings = apply_plan(cfg, plan)
            for warning in warnings:
                click.echo(f"warning: {warning}", err=True)
        if engine == Engine.RAY:
            ray = RayOptions(
                address=address, workers=workers, num_gpus_per_worker=num_gpus_per_worker
            )
            result = run_ray_infer(cfg, ray, report)
        else:
            result = run_infer(cfg, report)
    except InferError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # the disk filled up or went away while writing: rows so far stay
        where = f" {e.filename}" if e.filename else ""
        raise click.ClickException(
            f"cannot write{where}: {e.strerror or e}; free space (or fix the folder) "
            "and run the same command with --resume"
        ) from e
    click.echo(summary_line(result, cfg), err=True)
    if plan is not None:
        click.echo(plan_line(plan, result, cfg), err=True)
    if result.interrupted:
        again = " ".join(shlex.quote(a) for a in sys.argv)
        again = again if "--resume" in sys.argv else f"{again} --resume"
        saved = (
            "rows so far are"
            if result.committed_in is None
            else f"finished blocks are in {result.committed_in}"
        )
        click.echo(f"interrupted: {saved} saved; to finish, run: {again}", err=True)
        sys.exit(130)


def parse_extensions(text: str | None) -> Extensions:
    if not text:
        return IMAGE_EXTENSIONS
    if text.strip() == "*":
        return ALL_FILES
    return tuple(f".{e.strip().lstrip('.').lower()}" for e in text.split(",") if e.strip())


RAY_ONLY = ("address", "num_gpus_per_worker", "block_size")
PLAN_SETS = ("provider", "batch_size", "threads", "precision_hint", "fp16")


def check_plan_options(engine: str) -> None:
    """What a plan sets cannot also be asked for on the command line."""
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in PLAN_SETS
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(f"--plan sets {', '.join(given)}: leave it out (or re-run tune)")
    if engine != Engine.LOCAL:
        raise click.UsageError("--plan runs on the local engine: leave out --engine ray")


def plan_line(plan: Plan, summary: InferSummary, cfg: InferConfig) -> str:
    """The plan's expected img/s beside the ones reached (bench --compare's ratio): end to
    end over tune's images when the plan has it, and the model alone."""
    e, got = plan.expected, summary.images_per_second
    figures = [f"{got / e.images_per_second:.2f}x of {e.images_per_second:.1f} model only"]
    if e.end_to_end_ips:
        figures.insert(0, f"{got / e.end_to_end_ips:.2f}x of {e.end_to_end_ips:.1f} end to end")
    line = f"plan: {plan.describe()}: reached {got:.1f} img/s, {', '.join(figures)} expected"
    if summary.provider != plan.provider.value and cfg.runtime.provider is Provider.AUTO:
        line += f"\nwarning: the plan's provider {plan.provider.value} did not load: ran on "
        line += summary.provider
    return line


def check_local_engine_options(output: str) -> None:
    """A Ray option given to the local engine would be silently ignored: refuse it
    (--block-size also applies to a Parquet output)."""
    ctx = click.get_current_context()
    try:
        parquet = format_of(output) is Format.PARQUET
    except InferError as e:
        raise click.ClickException(str(e)) from e
    given = [
        f"--{name.replace('_', '-')}"
        for name in RAY_ONLY
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        and not (parquet and name == "block_size")
    ]
    if given:
        raise click.UsageError(f"{', '.join(given)} only apply with --engine ray: add it")


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
