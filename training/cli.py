"""`cnnbench train`: a thin shell over `run_training`."""

from __future__ import annotations

import click

from cnnbench.infer.decode.resize import DEFAULT_POLICY
from cnnbench.infer.options import ResizeOverrides, resize_options
from cnnbench.training.errors import TrainError
from cnnbench.training.registry import ARCHITECTURES, get_arch


def list_architectures() -> None:
    """Names, default input sizes and parameter counts (stored, checked by the tests)."""
    click.echo(f"{'name':12s} {'input':>11s} {'params@1000':>13s}  description")
    for spec in ARCHITECTURES.values():
        size = f"{spec.input_size}x{spec.input_size}x{spec.channels}"
        click.echo(f"{spec.name:12s} {size:>11s} {spec.reference_params:>13,}  {spec.description}")


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
@click.option(
    "--val", type=click.Path(file_okay=False), help="Validation folder (instead of --val-split)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--augment", is_flag=True, help="Flips, translation, rotation, zoom, colour.")
@click.option(
    "--weights",
    default="none",
    show_default=True,
    help="vgg16/resnet50 base: 'imagenet', 'none' or a weights file (.h5).",
)
@click.option("--freeze-base", is_flag=True, help="Train only the new head.")
@click.option(
    "--unfreeze-top",
    type=click.IntRange(min=1),
    help="Then a second stage with the base's top N layers trainable (lr x 0.1).",
)
@click.option(
    "--eager",
    is_flag=True,
    help="Run eagerly: skips graph tracing (tens of seconds for big nets), slower per step.",
)
@click.option(
    "--export-val",
    type=click.Path(file_okay=False),
    help="Also write the validation split as an image folder (one subfolder per class).",
)
@resize_options
@click.option("--list", "list_archs", is_flag=True, help="List the architectures and exit.")
def train(
    arch: str | None,
    out: str | None,
    data: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    img_size: int | None,
    channels: str | None,
    val_split: float,
    val: str | None,
    seed: int,
    augment: bool,
    weights: str,
    freeze_base: bool,
    unfreeze_top: int | None,
    eager: bool,
    export_val: str | None,
    resize: ResizeOverrides,
    list_archs: bool,
) -> None:
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
    if arch is None or out is None:
        raise click.UsageError("give an architecture and --out (or --list)")
    try:
        get_arch(arch)
        from cnnbench.training.run import TrainConfig, run_training

        cfg = TrainConfig(
            arch=arch,
            out=out,
            data=data,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            img_size=img_size,
            channels=int(channels) if channels else None,
            val_split=val_split,
            val=val,
            seed=seed,
            export_val=export_val,
            augment=augment,
            weights=None if weights.lower() == "none" else weights,
            freeze_base=freeze_base,
            unfreeze_top=unfreeze_top or 0,
            eager=eager,
            resize=resize.applied_to(DEFAULT_POLICY),
        )
        result = run_training(cfg)
    except TrainError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"wrote {out}: model.keras, labels.txt, report.txt; validation accuracy "
        f"{result.val_accuracy:.2%} on {result.num_val} images",
        err=True,
    )
