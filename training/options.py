"""`train`'s options as one group: a decorator that hands the command a TrainOptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from cnnbench.infer.decode.resize import DEFAULT_POLICY
from cnnbench.infer.options import ResizeOverrides, option_group

if TYPE_CHECKING:  # training.run is imported when a run starts (it brings TensorFlow)
    from cnnbench.training.run import TrainConfig


def training_params() -> list[click.Option]:
    """The data, the schedule and the base weights of a training run."""
    return [
        click.Option(
            ["--data"],
            default="digits",
            show_default=True,
            help="'digits' (bundled) or a folder with one subfolder per class.",
        ),
        click.Option(["--out"], type=click.Path(file_okay=False), help="Run folder to write."),
        click.Option(["--epochs"], type=click.IntRange(min=1), default=5, show_default=True),
        click.Option(["--batch-size"], type=click.IntRange(min=1), default=32, show_default=True),
        click.Option(
            ["--lr", "learning_rate"],
            type=click.FloatRange(min=0, min_open=True),
            default=1e-3,
            show_default=True,
        ),
        click.Option(["--img-size"], type=click.IntRange(min=1), help="Input size (square)."),
        click.Option(["--channels"], type=click.Choice(["1", "3"]), help="Input channels."),
        click.Option(["--val-split"], type=float, default=0.2, show_default=True),
        click.Option(
            ["--val"],
            type=click.Path(file_okay=False),
            help="Validation folder (instead of --val-split).",
        ),
        click.Option(["--seed"], type=int, default=0, show_default=True),
        click.Option(
            ["--augment"], is_flag=True, help="Flips, translation, rotation, zoom, colour."
        ),
        click.Option(
            ["--weights"],
            default="none",
            show_default=True,
            help="vgg16/resnet50 base: 'imagenet', 'none' or a weights file (.h5).",
        ),
        click.Option(["--freeze-base"], is_flag=True, help="Train only the new head."),
        click.Option(
            ["--unfreeze-top"],
            type=click.IntRange(min=1),
            help="Then a second stage with the base's top N layers trainable (lr x 0.1).",
        ),
        click.Option(
            ["--eager"],
            is_flag=True,
            help="Run eagerly: skips graph tracing (tens of seconds for big nets), slower "
            "per step.",
        ),
        click.Option(
            ["--export-val"],
            type=click.Path(file_okay=False),
            help="Also write the validation split as an image folder (one subfolder per class).",
        ),
    ]


@dataclass(frozen=True)
class TrainOptions:
    """A training run's options as given; `config` makes the TrainConfig."""

    data: str
    out: str | None
    epochs: int
    batch_size: int
    learning_rate: float
    img_size: int | None
    channels: str | None
    val_split: float
    val: str | None
    seed: int
    augment: bool
    weights: str
    freeze_base: bool
    unfreeze_top: int | None
    eager: bool
    export_val: str | None

    def config(self, arch: str, out: str, resize: ResizeOverrides) -> TrainConfig:
        from cnnbench.training.run import TrainConfig

        return TrainConfig(
            arch=arch,
            out=out,
            data=self.data,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            img_size=self.img_size,
            channels=int(self.channels) if self.channels else None,
            val_split=self.val_split,
            val=self.val,
            seed=self.seed,
            export_val=self.export_val,
            augment=self.augment,
            weights=None if self.weights.lower() == "none" else self.weights,
            freeze_base=self.freeze_base,
            unfreeze_top=self.unfreeze_top or 0,
            eager=self.eager,
            resize=resize.applied_to(DEFAULT_POLICY),
        )


training_options = option_group("run", training_params, TrainOptions)
"""--data, --out, --epochs, ... as one `run: TrainOptions` argument."""
