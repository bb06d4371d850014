"""`cnnbench train`: a thin shell over `run_training`."""

from __future__ import annotations

import os

import click

from cnnbench.training.errors import TrainError
from cnnbench.training.registry import ARCHITECTURES, get_arch


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("arch", required=False)
@click.option(
    "--data",
    default="digits",
    show_default=True,
    help="'digits' (bundled) or a folder with one subfolder per class.",
)
@click.option("--out", type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-3, show_default=True)
@click.option("--img-size", type=click.IntRange(min=1), help="Input size (square).")
@click.option("--channels", type=click.Choice(["1", "3"]), help="Input channels.")
@click.option("--val-split", type=float, default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--export-val",
    type=click.Path(file_okay=False),
    help="Also write the validation split as an image folder (one subfolder per class).",
)
@click.option("--list", "list_archs", is_flag=True, help="List the architectures and exit.")
def train(
    arch: str | None,
    data: str,
    out: str | None,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    img_size: int | None,
    channels: str | None,
    val_split: float,
    seed: int,
    export_val: str | None,
    list_archs: bool,
) -> None:
    """Train ARCH on a dataset and write RUN_DIR/model.keras and labels.txt.

    \b
    Example:
      cnnbench train mnist_cnn --data digits --epochs 5 --out runs/digits
    """
    if list_archs:
        for spec in ARCHITECTURES.values():
            click.echo(
                f"{spec.name:12s} {spec.input_size}x{spec.input_size}x{spec.channels}  "
                f"{spec.description}"
            )
        return
    if arch is None or out is None:
        raise click.UsageError("give an architecture and --out (or --list)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        get_arch(arch)
        from cnnbench.training.run import TrainConfig, run_training

        result = run_training(
            TrainConfig(
                arch=arch,
                out=out,
                data=data,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                img_size=img_size,
                channels=int(channels) if channels else None,
                val_split=val_split,
                seed=seed,
                export_val=export_val,
            )
        )
    except TrainError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"wrote {result.model_path} and {result.labels_path}; validation accuracy "
        f"{result.val_accuracy:.2%} on {result.num_val} images",
        err=True,
    )
