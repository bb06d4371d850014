"""Workarounds for tf2onnx on Keras 3, each with its reason and its exit condition.

1. `tf2onnx.convert.from_keras` fails on Keras 3 models (KeyError on `keras_tensor_N`;
   https://github.com/onnx/tensorflow-onnx/issues/2319). We trace a `tf.function` instead.
   Remove when tf2onnx's from_keras handles Keras 3 functional models.
2. Freezing variables into constants (what `from_function` does with captured variables)
   needs > 22 GB for VGG16. We trace `model.stateless_call` with the weights as extra
   graph inputs, so nothing is frozen, then turn those inputs into initializers in ONNX.
   Remove when tf2onnx converts large captured variables without the frozen GraphDef copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WEIGHT_PREFIX = "cnnbench_w"


def trace_to_onnx(model: Any, call: Any, input_spec: Any, opset: int) -> tuple[Any, dict]:
    """Convert `call(image, trainable, non_trainable)` to ONNX with weights as inputs.

    Returns the ModelProto (weights still graph inputs) and {input name: numpy weight}.
    """
    import tensorflow as tf
    import tf2onnx

    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    n = len(trainable)
    weights = trainable + non_trainable
    names = [f"{WEIGHT_PREFIX}{i}" for i in range(len(weights))]
    signature = [input_spec] + [
        tf.TensorSpec(v.shape, v.dtype, name=name) for v, name in zip(weights, names, strict=True)
    ]

    def fn(image: Any, *values: Any) -> Any:
        return call(image, list(values[:n]), list(values[n:]))

    function = tf.function(fn, input_signature=signature, autograph=False)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    arrays = {name: np.asarray(v.numpy()) for name, v in zip(names, weights, strict=True)}
    return proto, arrays
