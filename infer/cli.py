"""`cnnbench infer`: a thin shell over `run_infer`."""

from __future__ import annotations

import click

from cnnbench.infer.errors import InferError
from cnnbench.infer.images import IMAGE_EXTENSIONS
from cnnbench.infer.options import make_runtime, parse_floats, parse_size, runtime_options
from cnnbench.infer.pipeline import InferConfig, run_infer
from cnnbench.infer.preprocess import ForeignOptions, Layout
from cnnbench.infer.session import check_ort_install


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Predictions CSV to write.",
)
@click.option(
    "--errors",
    type=click.Path(dir_okay=False),
    help="CSV of unreadable files (path,error). Default: OUTPUT.errors.csv.",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Decode threads (0 = one per core)."
)
@click.option("--top-k", type=int, default=1, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), help="Stop after N files.")
@click.option("--extensions", help="Comma-separated file extensions to read.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@runtime_options
@click.option(
    "--layout",
    type=click.Choice(list(Layout), case_sensitive=False),
    help="Foreign models: input layout.",
)
@click.option("--size", help="Foreign models: input size N or HxW.")
@click.option("--mean", help="Foreign models: per-channel mean, e.g. 0.485,0.456,0.406.")
@click.option("--std", help="Foreign models: per-channel std, e.g. 0.229,0.224,0.225.")
@click.option("--scale", type=float, help="Foreign models: multiply pixels by this first.")
@click.option("--bgr", is_flag=True, help="Foreign models: feed BGR instead of RGB.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Labels file, one per line.")
def infer(
    model: str,
    inputs: tuple[str, ...],
    output: str,
    errors: str | None,
    batch_size: int,
    workers: int,
    top_k: int,
    limit: int | None,
    extensions: str | None,
    no_progress: bool,
    provider: str,
    device_id: int,
    threads: int,
    layout: str | None,
    size: str | None,
    mean: str | None,
    std: str | None,
    scale: float | None,
    bgr: bool,
    labels: str | None,
) -> None:
    """Classify every image under INPUTS (folders, recursive, or files) into a CSV.

    \b
    Example:
      cnnbench infer model.onnx photos/ -o predictions.csv --top-k 3
    """
    if warning := check_ort_install():
        click.echo(f"warning: {warning}", err=True)
    foreign = ForeignOptions(
        layout=Layout(layout) if layout else None,
        size=parse_size(size),
        mean=parse_floats(mean),
        std=parse_floats(std),
        scale=scale,
        bgr=bgr,
        labels_path=labels,
    )
    exts = (
        tuple(f".{e.strip().lstrip('.').lower()}" for e in extensions.split(","))
        if extensions
        else IMAGE_EXTENSIONS
    )
    cfg = InferConfig(
        model=model,
        inputs=inputs,
        output=output,
        errors=errors,
        batch_size=batch_size,
        workers=workers,
        top_k=top_k,
        extensions=exts,
        limit=limit,
        progress=not no_progress,
        runtime=make_runtime(provider, device_id, threads),
        foreign=foreign,
    )
    try:
        summary = run_infer(cfg)
    except InferError as e:
        raise click.ClickException(str(e)) from e
    line = (
        f"{summary.images} images, {summary.errors} errors, "
        f"{summary.images_per_second:.1f} img/s, {summary.seconds:.2f} s, "
        f"provider {summary.provider}, batch {summary.batch_size}"
    )
    if summary.accuracy is not None:
        line += f", accuracy {summary.accuracy:.2%} ({summary.correct}/{summary.labelled})"
    click.echo(line, err=True)
