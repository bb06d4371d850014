"""ResNets: ResNet-34 built by `resnet(block, stages)` from the seed notes' residual unit,
and ResNet-50 as keras.applications builds it, for its ImageNet weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnbench.training.architectures import image_input
from cnnbench.training.layers import BN_MOMENTUM

RESNET34_STAGES = (3, 4, 6, 3)
STAGE_FILTERS = (64, 128, 256, 512)


def resnet(
    block: Any,
    stages: Sequence[int],
    num_classes: int,
    size: int,
    channels: int,
    name: str,
) -> Any:
    """7x7/2 conv + BN + ReLU, 3x3/2 max-pool, `stages[i]` blocks of STAGE_FILTERS[i]
    filters (the first of each later stage downsamples), global average pooling, softmax."""
    import keras

    layers = keras.layers
    inputs, x = image_input(size, channels)
    x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPool2D(3, strides=2, padding="same", name="pool1")(x)
    for stage, (count, filters) in enumerate(zip(stages, STAGE_FILTERS, strict=True), start=2):
        for i in range(1, count + 1):
            strides = 2 if i == 1 and stage > 2 else 1
            x = block(filters, strides=strides, name=f"conv{stage}_block{i}")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet34(num_classes: int, size: int = 224, channels: int = 3) -> Any:
    """ResNet-34 from the seed notes' ResidualUnit (1x1 projection on the stride-2 units)."""
    from cnnbench.training.layers import ResidualUnit

    return resnet(ResidualUnit, RESNET34_STAGES, num_classes, size, channels, "resnet34")


def resnet50(
    num_classes: int, size: int = 224, channels: int = 3, weights: str | None = None
) -> Any:
    """keras.applications.ResNet50 (topology, layer names, parameter count, weight files) as
    a nested model named "base", behind the uint8 input and caffe-style preprocessing, with
    a new softmax head: the notes' hot-dog fine-tuning recipe."""
    import keras

    from cnnbench.training.weights import load_base_weights

    base = keras.applications.ResNet50(
        include_top=False,
        weights=None,
        input_shape=(size, size, channels),
        pooling="avg",
        name="base",
    )
    load_base_weights(base, "resnet50", weights)
    inputs, x = image_input(size, channels, caffe=True)
    x = base(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="resnet50")
