"""The architectures of the seed notes, written once, as in keras.applications.

Every model takes uint8 NHWC images and scales inside the graph (the model contract), and
every layer has a deterministic name.
"""

from __future__ import annotations

from typing import Any


def _keras() -> Any:
    import keras

    return keras


def image_input(size: int, channels: int) -> tuple[Any, Any]:
    """The uint8 input and its [0, 1] scaling, shared by every architecture."""
    layers = _keras().layers
    inputs = layers.Input((size, size, channels), dtype="uint8", name="image")
    return inputs, layers.Rescaling(1.0 / 255, name="scale")(inputs)


def mnist_cnn(num_classes: int, size: int = 28, channels: int = 1) -> Any:
    """The seed notes' small MNIST CNN."""
    keras = _keras()
    layers = keras.layers
    inputs, x = image_input(size, channels)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPool2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.25, name="drop1")(x)
    x = layers.Dense(128, activation="relu", name="fc")(x)
    x = layers.Dropout(0.5, name="drop2")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")
