"""`cnnbench train`: a thin shell over `run_training`."""

from __future__ import annotations

import click

from cnnbench.infer.options import ResizeOverrides, resize_options
from cnnbench.training.errors import TrainError
from cnnbench.training.options import TrainOptions, training_options
from cnnbench.training.registry import ARCHITECTURES, get_arch


def list_architectures() -> None:
    """Names, default input sizes and parameter counts (stored, checked by the tests)."""
    click.echo(f"{'name':12s} {'input':>11s} {'params@1000':>13s}  description")
    for spec in ARCHITECTURES.values():
        size = f"{spec.input_size}x{spec.input_size}x{spec.channels}"
        click.echo(f"{spec.name:12s} {size:>11s} {spec.reference_params:>13,}  {spec.description}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("arch", required=False)
@training_options
@resize_options
@click.option("--list", "list_archs", is_flag=True, help="List the architectures and exit.")
def train(arch: str | None, run: TrainOptions, resize: ResizeOverrides, list_archs: bool) -> None:
    """Train ARCH and write RUN_DIR: model.keras, labels.txt, history, report, config.

    \b
    Example:
      cnnbench train mnist_cnn --data digits --epochs 5 --out runs/digits
      cnnbench train simple_vgg --data photos/ --augment --epochs 20 --out runs/photos
      cnnbench train resnet50 --data hotdog/train --val hotdog/test \\
          --weights resnet50_notop.h5 --freeze-base --unfreeze-top 10 --out runs/hotdog
    """
    if list_archs:
        list_architectures()
        return
    if arch is None or run.out is None:
        raise click.UsageError("give an architecture and --out (or --list)")
    try:
        get_arch(arch)
        from cnnbench.training.run import run_training

        result = run_training(run.config(arch, run.out, resize))
    except TrainError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"wrote {run.out}: model.keras, labels.txt, report.txt; validation accuracy "
        f"{result.val_accuracy:.2%} on {result.num_val} images",
        err=True,
    )
