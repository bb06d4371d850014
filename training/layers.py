"""Custom Keras layers of the architectures, registered so that `model.keras` reloads.

Importing this module imports Keras: it is imported only where a model is built or loaded
(`cnnbench.convert` imports it before `keras.saving.load_model`).
"""

from __future__ import annotations

from typing import Any

import keras

PACKAGE = "cnnbench"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # the ImageNet mean keras.applications subtracts
# Keras' default 0.99 leaves the moving statistics near their start after the few hundred
# steps of a small dataset, so validation collapses to one class; 0.9 is PyTorch's default.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package=PACKAGE)
class CaffePreprocess(keras.layers.Layer):
    """uint8 RGB -> float BGR minus the ImageNet mean, as keras.applications' VGG and ResNet
    expect (`preprocess_input(mode="caffe")`), inside the graph."""

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        if x.shape[-1] == 3:
            x = keras.ops.take(x, [2, 1, 0], axis=-1)
            return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, "float32")
        return x - sum(CAFFE_MEAN_BGR) / 3.0


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualUnit(keras.layers.Layer):
    """The seed notes' residual unit: two 3x3 conv + BN, and a 1x1 conv + BN projection on
    the skip path when the unit downsamples (stride 2)."""

    def __init__(
        self, filters: int, strides: int = 1, activation: str = "relu", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.filters, self.strides = filters, strides
        self.activation = keras.activations.get(activation)
        self.main_layers = [
            *_conv_bn(filters, 3, strides, f"{self.name}_1"),
            *_conv_bn(filters, 3, 1, f"{self.name}_2"),
        ]
        self.skip_layers = _conv_bn(filters, 1, strides, f"{self.name}_proj") if strides > 1 else []

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        z = inputs
        for i, layer in enumerate(self.main_layers):
            z = layer(z, training=training)
            if i == 1:  # after the first conv + BN
                z = self.activation(z)
        skip = inputs
        for layer in self.skip_layers:
            skip = layer(skip, training=training)
        return self.activation(z + skip)

    def build(self, input_shape: tuple) -> None:
        """Build the sub-layers here, so that a reloaded model has their weights."""
        for path in (self.main_layers, self.skip_layers):
            shape = input_shape
            for layer in path:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    def get_config(self) -> dict[str, Any]:
        activation = keras.activations.serialize(self.activation)
        return super().get_config() | {
            "filters": self.filters,
            "strides": self.strides,
            "activation": activation,
        }


def _conv_bn(filters: int, kernel: int, strides: int, name: str) -> list[Any]:
    layers = keras.layers
    return [
        layers.Conv2D(
            filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
        ),
        layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn"),
    ]
