"""One registry of architectures, whose entries are data. Nothing heavy is imported here."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnbench.training.errors import TrainError


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: how to build it and what it takes by default."""

    name: str
    builder: str  # "module:function" under cnnbench.training, imported on build()
    input_size: int
    channels: int
    min_size: int
    reference_params: int | None = None  # at 1000 classes and the default size
    paper_params: str = ""  # the published figure, for the README's side-by-side
    description: str = ""

    def resolve(self) -> Callable[..., Any]:
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(f"cnnbench.training.{module}"), func)


ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            "mnist_cnn",
            "architectures:mnist_cnn",
            28,
            1,
            4,
            description="Conv32-Conv64-MaxPool-Dropout-Dense128-Dropout-Dense (seed notes)",
        ),
    )
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise TrainError(f"unknown architecture {name!r}; known: {known}") from None


def build(
    name: str, num_classes: int, img_size: int | None = None, channels: int | None = None
) -> Any:
    """A Keras model taking uint8 NHWC images and giving softmax probabilities."""
    spec = get_arch(name)
    size = img_size or spec.input_size
    if size < spec.min_size:
        raise TrainError(
            f"--img-size {size} is too small for {name}: the minimum is {spec.min_size}"
        )
    if num_classes < 2:
        raise TrainError(f"{name} needs at least 2 classes, got {num_classes}")
    return spec.resolve()(num_classes=num_classes, size=size, channels=channels or spec.channels)
