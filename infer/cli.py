"""`cnnbench infer`: a thin shell over `run_infer` and `run_ray_infer`, and the option
groups only it takes (its job, its engine)."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from cnnbench.files import WRITE_ERRNOS, Report, cannot_write_line
from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.decode.probe import DEFAULT_MAX_PIXELS
from cnnbench.infer.engines.job import (
    BUSY_IDLE,
    IO_THREADS,
    Engine,
    InferConfig,
    InferSummary,
    RayOptions,
    apply_plan,
    by_extension_only,
    plural,
    skipped_line,
)
from cnnbench.infer.engines.local import io_threads_for, run_infer
from cnnbench.infer.errors import InferError
from cnnbench.infer.options import (
    foreign_preprocessing_options,
    given_options,
    option_group,
    runtime_options,
)
from cnnbench.infer.runtime.plan import Plan, read_plan
from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.runner import DEFAULT_BATCH_SIZE
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, check_ort_install
from cnnbench.infer.sinks.formats import Format, format_of
from cnnbench.infer.sources.fetch import read_ahead
from cnnbench.infer.sources.listing import ALL_FILES, IMAGE_EXTENSIONS, Extensions
from cnnbench.infer.sources.stores import StoreDown
from cnnbench.signals import how_stopped


@dataclass(frozen=True)
class EngineOptions:
    """Which engine runs the job, with how many workers, and the Ray engine's options."""

    engine: Engine
    workers: int  # local: decode threads; ray: inference actors (0: the default of each)
    ray: RayOptions
    block_size: int  # files per block: Ray's unit of parts, and a Parquet output's

    @property
    def local_workers(self) -> int:
        return self.workers if self.engine is Engine.LOCAL else 0


RAY_ONLY = ("address", "num_gpus_per_worker", "block_size")


def engine_params() -> list[click.Option]:
    """--engine, --workers and the options of the Ray engine."""
    return [
        click.Option(
            ["--engine"],
            type=click.Choice(list(Engine), case_sensitive=False),
            default=Engine.LOCAL.value,
            show_default=True,
            help="local: this machine; ray: a Ray Data job (pip install 'cnnbench[ray]').",
        ),
        click.Option(
            ["--workers"],
            type=click.IntRange(min=0),
            default=0,
            help="Local: decode threads (0 = one per core). Ray: inference actors (0 = autoscale).",
        ),
        click.Option(
            ["--address"],
            help="Ray: cluster address, auto or HOST:PORT or "
            "ray://HOST:PORT. Default: $RAY_ADDRESS, else a running cluster, else a "
            "local one started for the run.",
        ),
        click.Option(
            ["--num-gpus-per-worker"],
            type=click.FloatRange(min=0),
            help="Ray: GPUs per inference actor. Default: 1 with --provider cuda or "
            "tensorrt, else 0.",
        ),
        click.Option(
            ["--block-size"],
            type=click.IntRange(min=1),
            default=InferConfig.block_size,
            show_default=True,
            help="Ray, and Parquet outputs: files per block (the unit of parts and --resume).",
        ),
    ]


def _engine(
    engine: str,
    workers: int,
    address: str | None,
    num_gpus_per_worker: float | None,
    block_size: int,
) -> EngineOptions:
    """The engine options; a Ray option given to the local engine would be silently
    ignored, so it is refused (--block-size also applies to a Parquet output)."""
    if engine == Engine.LOCAL:
        ray_only = RAY_ONLY if not _parquet_output() else RAY_ONLY[:-1]
        if given := given_options(ray_only):
            verb = "applies" if len(given) == 1 else "apply"
            parquet = " or a .parquet -o" if given == ["--block-size"] else ""
            raise click.UsageError(f"{', '.join(given)} only {verb} with --engine ray{parquet}")
    ray = RayOptions(address=address, workers=workers, num_gpus_per_worker=num_gpus_per_worker)
    return EngineOptions(Engine(engine), workers, ray, block_size)


def _parquet_output() -> bool:
    """Whether the command's -o names a Parquet output (read from the parsed options)."""
    try:
        return format_of(click.get_current_context().params["output"]) is Format.PARQUET
    except InferError as e:
        raise click.ClickException(str(e)) from e


engine_options = option_group("engine", engine_params, _engine)
"""--engine, --workers and the Ray options as one `engine: EngineOptions` argument."""


def parse_extensions(
    ctx: click.Context | None, param: click.Parameter | None, text: str | None
) -> Extensions:
    """'jpg,png' -> ('.jpg', '.png'); '*' -> every file; not given -> IMAGE_EXTENSIONS."""
    if not text:
        return IMAGE_EXTENSIONS
    if text.strip() == "*":
        return ALL_FILES
    given = [e.strip().lstrip(".").lower() for e in text.split(",")]
    if "*" in given:
        raise click.BadParameter("'*' reads every file: give it alone", ctx, param)
    if not any(given):
        raise click.BadParameter(
            f"{text!r} names no extension: give e.g. jpg,png, or '*' for every file", ctx, param
        )
    return tuple(f".{e}" for e in given if e)


def job_params() -> list[click.Option]:
    """What `infer` writes and reads, apart from the model, the runtime and the engine."""
    return [
        click.Option(
            ["-o", "--output"],
            required=True,
            help="Predictions to write, in the format of its extension: .csv, .jsonl (JSON "
            "lines) or .parquet (a folder of parts; also s3://BUCKET/PREFIX.parquet).",
        ),
        click.Option(
            ["--errors"],
            help="Unreadable files (path, error), in the output's format. Default: "
            "OUTPUT.errors.EXT.",
        ),
        click.Option(
            ["--batch-size"],
            type=int,
            help=f"Images per session run. Default: {DEFAULT_BATCH_SIZE[Provider.CPU]} on "
            f"CPU, {DEFAULT_BATCH_SIZE[Provider.CUDA]} on GPU.",
        ),
        click.Option(
            ["--io-threads"],
            type=click.IntRange(min=0),
            help=f"Reads in flight (objects and shards by URL). Default: {IO_THREADS} when "
            "an input is a URL or @list, else 0 (the decode threads read local files).",
        ),
        click.Option(["--top-k"], type=int, default=1, show_default=True),
        click.Option(["--limit"], type=int, help="Only the first N files of the inputs."),
        click.Option(
            ["--extensions"],
            callback=parse_extensions,
            help="Comma-separated file extensions to read in folders, e.g. jpg,png; '*' reads "
            f"every file. Default: {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)}. "
            "Files left out are counted in the summary.",
        ),
        click.Option(
            ["--max-pixels"],
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_PIXELS,
            show_default=True,
            help="Refuse images larger than this (width x height as decoded) before decoding them.",
        ),
        click.Option(
            ["--allow-truncated"],
            is_flag=True,
            help="Predict truncated files from what decoded (default: they are errors).",
        ),
        click.Option(
            ["--resume"],
            is_flag=True,
            help="Skip files already in the output or errors file; append.",
        ),
        click.Option(
            ["--summary"],
            type=click.Path(dir_okay=False),
            help="Also write the summary as JSON.",
        ),
        click.Option(["--no-progress"], is_flag=True, help="No progress bar."),
    ]


@dataclass(frozen=True)
class JobOptions:
    """`infer`'s own options: where rows go, which files are read and how."""

    output: str
    errors: str | None
    batch_size: int | None
    io_threads: int | None
    top_k: int
    limit: int | None
    extensions: Extensions
    limits: DecodeLimits
    resume: bool
    summary: str | None
    progress: bool

    def config(
        self,
        model: str,
        inputs: tuple[str, ...],
        engine: EngineOptions,
        runtime: RuntimeOptions,
        foreign: ForeignOptions,
    ) -> InferConfig:
        """The job's InferConfig (which the engines check before the model loads)."""
        return InferConfig(
            model=model,
            inputs=inputs,
            output=self.output,
            errors=self.errors,
            batch_size=self.batch_size,
            workers=engine.local_workers,
            block_size=engine.block_size,
            io_threads=self.io_threads,
            top_k=self.top_k,
            extensions=self.extensions,
            limit=self.limit,
            progress=self.progress,
            resume=self.resume,
            summary=self.summary,
            runtime=runtime,
            foreign=foreign,
            limits=self.limits,
        )


def _job(max_pixels: int, allow_truncated: bool, no_progress: bool, **given: Any) -> JobOptions:
    limits = DecodeLimits(max_pixels, allow_truncated)
    return JobOptions(limits=limits, progress=not no_progress, **given)


job_options = option_group("job", job_params, _job)
"""`infer`'s outputs, listing and decoding options as one `job: JobOptions` argument."""


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
        stop_interrupted(result)


def model_and_inputs(
    paths: tuple[str, ...], plan_path: str | None, engine: Engine
) -> tuple[str, tuple[str, ...]]:
    """MODEL INPUTS..., or only INPUTS with --plan (which names the model)."""
    if plan_path is not None:
        check_plan_options(engine)
        if models := [p for p in paths if p.lower().endswith(".onnx") and os.path.isfile(p)]:
            raise click.UsageError(
                f"--plan names the model: leave {models[0]} out (it would be read as an image)"
            )
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
        from cnnbench.infer.engines.ray import run_ray_infer

        return run_ray_infer(cfg, engine.ray, report)
    return run_infer(cfg, report)


@contextlib.contextmanager
def infer_errors() -> Iterator[None]:
    """A library error, or a disk that filled up while writing, as one line."""
    try:
        yield
    except StoreDown as e:  # mid-run: what is written stays, and what is not is read later
        raise click.ClickException(
            f"{e}; rows so far are saved; when it answers, run the same command with --resume"
        ) from e
    except InferError as e:
        raise click.ClickException(str(e)) from e
    except OSError as e:  # the disk filled up or went away while writing: rows so far stay
        if e.errno in WRITE_ERRNOS:
            then = "run the same command with --resume"
            raise click.ClickException(cannot_write_line(e, then)) from e
        where = f" {e.filename}" if e.filename else ""
        raise click.ClickException(  # not a full disk: say no more than what failed
            f"cannot read or write{where}: {e.strerror or e}; fix it and run the same "
            "command with --resume"
        ) from e


def stop_interrupted(result: InferSummary) -> NoReturn:
    """After Ctrl-C or SIGTERM: what was saved, the command that finishes the job; exit
    128 + the signal's number (130, 143), as a shell reports a process it stopped."""
    again = " ".join(shlex.quote(a) for a in sys.argv)
    again = again if "--resume" in sys.argv else f"{again} --resume"
    where = result.committed_in
    saved = "rows so far are saved" if where is None else f"finished blocks are saved in {where}"
    click.echo(f"{how_stopped(result.stop_signal)}: {saved}; to finish, run: {again}", err=True)
    sys.exit(128 + result.stop_signal)


PLAN_SETS = ("provider", "batch_size", "threads", "precision_hint", "fp16")


def check_plan_options(engine: Engine) -> None:
    """What a plan sets cannot also be asked for on the command line."""
    if given := given_options(PLAN_SETS):
        raise click.UsageError(f"--plan sets {', '.join(given)}: leave it out (or re-run tune)")
    if engine is not Engine.LOCAL:
        raise click.UsageError("--plan runs on the local engine: leave out --engine ray")


def plan_line(plan: Plan, summary: InferSummary, cfg: InferConfig) -> str:
    """The plan's expected img/s (end to end, as tune measured `infer --plan` over its
    images) beside the one reached (bench --compare's ratio); the model-only figure
    follows, labelled, for reference. A plan from a tune stopped before its end-to-end
    runs has no expected figure: the line says so rather than compare with another one."""
    e, got = plan.expected, summary.images_per_second
    if e.images_per_second is None:
        versus = "no expected figure end to end (its tune was stopped before that run)"
    else:
        versus = (
            f"{got / e.images_per_second:.2f}x the expected {e.images_per_second:.1f} img/s "
            "end to end"
        )
    line = (
        f"plan: {plan.describe()}: reached {got:.1f} img/s, {versus} "
        f"(model-only in tune: {e.model_only_images_per_second:.1f} img/s)"
    )
    if summary.provider != plan.provider.value and cfg.runtime.provider is Provider.AUTO:
        line += f"\nwarning: the plan's provider {plan.provider.value} did not load: ran on "
        line += summary.provider
    return line


STAGE_WORDS = {
    "inputs": "waiting for inputs",
    "decode": "waiting for decodes",
    "model": "the model",
    "write": "writing rows",
}
BOUND_WORDS = {
    "inputs": "the inputs (listing and reads)",
    "decode": "decoding",
    "model": "the model",
    "write": "writing rows",
}


def stages_line(summary: InferSummary, bound: str, cfg: InferConfig) -> str:
    """'time: the model 61%, waiting for decodes 33%, ...: bound by decoding'."""
    seconds = summary.stage_seconds
    total = sum(seconds.values())
    shares = ", ".join(
        f"{STAGE_WORDS[stage]} {seconds[stage] / total:.0%}"
        for stage in sorted(seconds, key=seconds.__getitem__, reverse=True)
    )
    line = f"time: {shares}: bound by {BOUND_WORDS[bound]}"
    if bound == "inputs" and (n := io_threads_for(cfg)):
        idle = summary.cores_idle
        if summary.images + summary.errors <= (ahead := read_ahead(n)):
            # the read-ahead never filled: the wait was the first reads and pages
            line += f"; mostly its start: the run is shorter than its read-ahead ({ahead:,} files)"
        elif idle is not None and idle < BUSY_IDLE:
            line += (
                f"; its cores were busy ({idle:.0%} idle): the reads likely waited for CPU "
                "(a store on this machine, other work), which more in flight would not fix"
            )
        else:
            line += f"; more reads in flight may help (--io-threads, now {n})"
    return line


def accuracy_words(summary: InferSummary) -> str:
    """', accuracy 97.50% (39/40)' and the per-class line, over every row of the job, an
    earlier run's included (--resume); resumed files whose rows could not be read back
    are said to be left out, never counted silently as if the figure were the whole."""
    left_out = ""
    if n := summary.not_counted:
        left_out = f"not counted: {n} resumed {plural(n, 'file')} whose rows could not be read back"
    if summary.accuracy is None:
        return f", accuracy not measured ({left_out})" if left_out else ""
    counted = f"{summary.correct}/{summary.labelled}" + (f"; {left_out}" if left_out else "")
    per_class = ", ".join(
        f"{label} {c / t:.0%}" for label, (c, t) in sorted(summary.per_class.items())
    )
    return f", accuracy {summary.accuracy:.2%} ({counted})\nper class: {per_class}"


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
    line += accuracy_words(summary)
    if summary.per_worker:
        workers = ", ".join(f"{w} {n}" for w, n in sorted(summary.per_worker.items()))
        line += f"\nray: rows per worker: {workers}; start-up {summary.startup_seconds:.2f} s"
    if (bound := summary.bound_by) is not None:
        line += f"\n{stages_line(summary, bound, cfg)}"
    if skipped := summary.skipped_by_extension:
        hint = "; pass --extensions to include them" if by_extension_only(skipped) else ""
        line += f"\n{skipped_line(skipped)}{hint}"
    if summary.truncated:
        line += (
            f"\n{len(summary.truncated)} truncated {plural(len(summary.truncated), 'file')} "
            "predicted from what decoded "
            "(--allow-truncated)"
        )
    if summary.errors:
        line += f"\n{summary.errors} {plural(summary.errors, 'file')} failed: see {cfg.errors_path}"
    return line
