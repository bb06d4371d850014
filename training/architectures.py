"""The architectures of the seed notes, written once, as in keras.applications.

Every model takes uint8 NHWC images and scales inside the graph (the model contract), every
layer has a deterministic name, and variants are tables walked by one loop. The ResNets are
in `resnet.py`.

Importing this module imports Keras; the registry imports it only in `build()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from cnnbench.training.layers import BN_MOMENTUM, CaffePreprocess

# VGG as a table: an int is a 3x3 conv with that many filters, "M" a 2x2 max-pool.
VGG_CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"),
    "simple_vgg": (32, "M", 64, 64, "M", 128, 128, 128, "M"),
}  # fmt: skip

# AlexNet (Krizhevsky et al. 2012): (filters, kernel, stride, max-pool 3x3/2 after).
ALEXNET_CONVS = ((96, 11, 4, True), (256, 5, 1, True), (384, 3, 1, False), (384, 3, 1, False),
                 (256, 3, 1, True))  # fmt: skip

# GoogLeNet (Szegedy et al. 2014, Table 1): name, 1x1, (3x3 reduce, 3x3), (5x5 reduce, 5x5),
# pool proj; "M" is a 3x3/2 max-pool between the stages.
INCEPTION_TABLE: tuple[tuple[str, int, tuple[int, int], tuple[int, int], int] | str, ...] = (
    ("3a", 64, (96, 128), (16, 32), 32),
    ("3b", 128, (128, 192), (32, 96), 64),
    "M",
    ("4a", 192, (96, 208), (16, 48), 64),
    ("4b", 160, (112, 224), (24, 64), 64),
    ("4c", 128, (128, 256), (24, 64), 64),
    ("4d", 112, (144, 288), (32, 64), 64),
    ("4e", 256, (160, 320), (32, 128), 128),
    "M",
    ("5a", 256, (160, 320), (32, 128), 128),
    ("5b", 384, (192, 384), (48, 128), 128),
)


def image_input(size: int, channels: int, caffe: bool = False) -> tuple[Any, Any]:
    """The uint8 input and its in-graph preprocessing, shared by every architecture:
    scaling to [0, 1], or (`caffe`) keras.applications' BGR-minus-ImageNet-mean."""
    layers = keras.layers
    inputs = layers.Input((size, size, channels), dtype="uint8", name="image")
    if caffe:
        return inputs, CaffePreprocess(name="preprocess")(inputs)
    return inputs, layers.Rescaling(1.0 / 255, name="scale")(inputs)


def classifier_head(
    x: Any,
    num_classes: int,
    hidden: Sequence[int],
    dropout: float,
    batch_norm: bool = False,
    dense_args: Callable[[], dict[str, Any]] = dict,
) -> Any:
    """Flatten, hidden Dense+ReLU layers (optionally BN) each followed by dropout, softmax.
    `dense_args()` gives every Dense layer its extra arguments (fresh initializers)."""
    layers = keras.layers
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{i}", **dense_args())(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"fc{i}_bn")(x)
        x = layers.Dropout(dropout, name=f"fc{i}_drop")(x)
    return layers.Dense(num_classes, activation="softmax", name="probs", **dense_args())(x)


def mnist_cnn(num_classes: int, size: int = 28, channels: int = 1) -> Any:
    """The seed notes' small MNIST CNN."""
    layers = keras.layers
    inputs, x = image_input(size, channels)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPool2D(2, name="pool")(x)
    x = layers.Dropout(0.25, name="drop1")(x)
    outputs = classifier_head(x, num_classes, (128,), 0.5)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def mlp(num_classes: int, size: int = 32, channels: int = 3) -> Any:
    """The seed notes' "simple NN": 3072-512-256-N, L2(0.01), dropout 0.5, TruncatedNormal."""
    inputs, x = image_input(size, channels)

    def dense_args() -> dict[str, Any]:  # a fresh initializer per layer
        return {
            "kernel_initializer": keras.initializers.TruncatedNormal(stddev=0.05),
            "kernel_regularizer": keras.regularizers.L2(0.01),
        }

    outputs = classifier_head(x, num_classes, (512, 256), 0.5, dense_args=dense_args)
    return keras.Model(inputs, outputs, name="mlp")


def alexnet(num_classes: int, size: int = 224, channels: int = 3) -> Any:
    """AlexNet as the notes' prose and the paper describe it: 5 conv (11x11, 5x5, 3x3),
    3x3/2 max-pooling, ReLU, two 4096 FC layers with dropout, the output layer.

    conv1 pads "same", so a 224 input gives the paper's 55/27/13/6 feature maps (56 here).
    """
    layers = keras.layers
    inputs, x = image_input(size, channels)
    for i, (filters, kernel, stride, pool) in enumerate(ALEXNET_CONVS, start=1):
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", activation="relu", name=f"conv{i}"
        )(x)
        if pool:
            x = layers.MaxPool2D(3, strides=2, name=f"pool{i}")(x)
    outputs = classifier_head(x, num_classes, (4096, 4096), 0.5)
    return keras.Model(inputs, outputs, name="alexnet")


def vgg_features(x: Any, cfg: Sequence[int | str], batch_norm: bool) -> Any:
    """Walk a VGG table; layer names follow keras.applications (block1_conv1, block1_pool)."""
    layers = keras.layers
    block, conv = 1, 1
    for item in cfg:
        if item == "M":
            x = layers.MaxPool2D(2, name=f"block{block}_pool")(x)
            block, conv = block + 1, 1
            continue
        name = f"block{block}_conv{conv}"
        x = layers.Conv2D(item, 3, padding="same", activation="relu", name=name)(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        conv += 1
    return x


def vgg16(num_classes: int, size: int = 224, channels: int = 3, weights: str | None = None) -> Any:
    """VGG16 (keras.applications' layers and parameter count), caffe-style input like
    keras.applications, its convolutions a nested model named "base" for fine-tuning."""
    from cnnbench.training.weights import load_base_weights

    base_in = keras.layers.Input((size, size, channels), name="base_input")
    base = keras.Model(base_in, vgg_features(base_in, VGG_CFGS["vgg16"], False), name="base")
    load_base_weights(base, "vgg16", weights)
    inputs, x = image_input(size, channels, caffe=True)
    x = base(x)
    outputs = classifier_head(x, num_classes, (4096, 4096), 0.5)
    return keras.Model(inputs, outputs, name="vgg16")


def simple_vgg(num_classes: int, size: int = 64, channels: int = 3) -> Any:
    """The seed notes' SimpleVGGNet (64x64): VGG blocks of 32, 2x64, 3x128 filters with batch
    normalisation, then Dense 512 + BN + dropout."""
    inputs, x = image_input(size, channels)
    x = vgg_features(x, VGG_CFGS["simple_vgg"], batch_norm=True)
    outputs = classifier_head(x, num_classes, (512,), 0.5, batch_norm=True)
    return keras.Model(inputs, outputs, name="simple_vgg")


def inception_module(
    x: Any, c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int, name: str
) -> Any:
    """Four parallel paths (1x1; 1x1->3x3; 1x1->5x5; 3x3 max-pool->1x1), concatenated."""
    layers = keras.layers

    def conv(t: Any, filters: int, kernel: int, suffix: str) -> Any:
        return layers.Conv2D(
            filters, kernel, padding="same", activation="relu", name=f"{name}_{suffix}"
        )(t)

    p1 = conv(x, c1, 1, "1x1")
    p2 = conv(conv(x, c2[0], 1, "3x3_reduce"), c2[1], 3, "3x3")
    p3 = conv(conv(x, c3[0], 1, "5x5_reduce"), c3[1], 5, "5x5")
    p4 = layers.MaxPool2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    p4 = conv(p4, c4, 1, "pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([p1, p2, p3, p4])


def googlenet(num_classes: int, size: int = 224, channels: int = 3) -> Any:
    """GoogLeNet: the notes' B1 (7x7 conv) and B2 (1x1 then 3x3 conv) stem, the paper's
    nine Inception modules, global average pooling, dropout 0.4. No auxiliary classifiers
    (one output keeps the model contract) and no LRN."""
    layers = keras.layers
    inputs, x = image_input(size, channels)

    def pool(t: Any, name: str) -> Any:
        return layers.MaxPool2D(3, strides=2, padding="same", name=name)(t)

    x = layers.Conv2D(64, 7, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = pool(x, "pool1")
    x = layers.Conv2D(64, 1, activation="relu", name="conv2_reduce")(x)
    x = layers.Conv2D(192, 3, padding="same", activation="relu", name="conv2")(x)
    x = pool(x, "pool2")
    stage = "2"
    for row in INCEPTION_TABLE:
        if isinstance(row, str):  # "M"
            x = pool(x, f"pool{stage}")
        else:
            stage = row[0][0]
            x = inception_module(x, *row[1:], name=f"inception{row[0]}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.4, name="drop")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="googlenet")
