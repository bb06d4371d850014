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
    reference_params: int  # Keras' count_params() at 1000 classes and the default size
    paper_params: str = ""  # the published figure, for the README's side-by-side
    description: str = ""
    weights: bool = False  # has a "base" that takes pretrained weights (--weights)

    def resolve(self) -> Callable[..., Any]:
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(f"cnnbench.training.{module}"), func)


IMAGENET = 224  # the default input size of the ImageNet-class nets

ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            "mlp",
            "architectures:mlp",
            32,
            3,
            min_size=1,
            reference_params=1_961_704,
            description="3072-512-256-N MLP, L2(0.01), dropout 0.5 (seed notes)",
        ),
        ArchSpec(
            "mnist_cnn",
            "architectures:mnist_cnn",
            28,
            1,
            min_size=2,
            reference_params=1_753_576,
            description="Conv32-Conv64-MaxPool-Dense128 with dropout (seed notes)",
        ),
        ArchSpec(
            "alexnet",
            "architectures:alexnet",
            IMAGENET,
            3,
            min_size=57,
            reference_params=62_378_344,
            paper_params="60 million (Krizhevsky et al. 2012)",
            description="5 conv (11x11, 5x5, 3x3), 3x3/2 max-pool, 2x FC 4096 + dropout",
        ),
        ArchSpec(
            "vgg16",
            "architectures:vgg16",
            IMAGENET,
            3,
            min_size=32,
            reference_params=138_357_544,
            paper_params="138 million (Simonyan & Zisserman 2014, config D)",
            description="VGG16 as keras.applications; --weights for fine-tuning",
            weights=True,
        ),
        ArchSpec(
            "simple_vgg",
            "architectures:simple_vgg",
            64,
            3,
            min_size=8,
            reference_params=5_137_384,
            description="SimpleVGGNet for 64x64 images (seed notes)",
        ),
        ArchSpec(
            "googlenet",
            "architectures:googlenet",
            IMAGENET,
            3,
            min_size=32,
            reference_params=6_998_552,
            paper_params="6.8 million (Szegedy et al. 2014, Table 1)",
            description="GoogLeNet, 9 Inception modules, no auxiliary classifiers",
        ),
        ArchSpec(
            "resnet34",
            "resnet:resnet34",
            IMAGENET,
            3,
            min_size=32,
            reference_params=21_814_696,
            paper_params="21.8 million (He et al. 2015; 21,797,672 trainable here)",
            description="ResNet-34 from the seed notes' ResidualUnit",
        ),
        ArchSpec(
            "resnet50",
            "resnet:resnet50",
            IMAGENET,
            3,
            min_size=32,
            reference_params=25_636_712,
            paper_params="25.6 million (He et al. 2015; keras.applications.ResNet50)",
            description="keras.applications ResNet50 base + new head; --weights for fine-tuning",
            weights=True,
        ),
    )
}


def get_arch(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise TrainError(f"unknown architecture {name!r}; known: {known}") from None


def check_size(spec: ArchSpec, size: int) -> None:
    """`min_size`: the smallest input whose last feature map is still at least 1x1."""
    if size < spec.min_size:
        raise TrainError(
            f"--img-size {size} is too small for {spec.name}: the minimum is {spec.min_size}"
        )


def build(
    name: str,
    num_classes: int,
    img_size: int | None = None,
    channels: int | None = None,
    weights: str | None = None,
) -> Any:
    """A Keras model taking uint8 NHWC images and giving softmax probabilities.

    `weights` ("imagenet" or a file) is for the architectures with a pretrained base.
    """
    spec = get_arch(name)
    size = img_size or spec.input_size
    check_size(spec, size)
    if num_classes < 2:
        raise TrainError(f"{name} needs at least 2 classes, got {num_classes}")
    kwargs: dict[str, Any] = {
        "num_classes": num_classes,
        "size": size,
        "channels": channels or spec.channels,
    }
    if weights is not None:
        if not spec.weights:
            with_base = ", ".join(n for n, s in ARCHITECTURES.items() if s.weights)
            raise TrainError(f"--weights is for architectures with a pretrained base: {with_base}")
        kwargs["weights"] = weights
    return spec.resolve()(**kwargs)
