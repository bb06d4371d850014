"""The Keras side: load a `.keras` file, check it is a single-input image classifier, and
build the uint8 -> model input adapter used both in the traced graph and as the reference."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnbench.convert.config import Preprocess
from cnnbench.convert.errors import ConvertError
from cnnbench.errors import first_line
from cnnbench.files import model_kind, model_not_found, not_onnx
from cnnbench.infer.runtime.scores import ScoreMode, Scorer

REFERENCE_CHUNK = 2  # images per Keras call: eager Keras holds every activation of a call


@dataclass(frozen=True)
class ModelFacts:
    """What the Keras model says about its input and output."""

    size: tuple[int, int]
    channels: int
    num_classes: int
    input_dtype: str
    binary: bool = False  # one score per image: exported as two classes, [1 - p, p]


@dataclass(frozen=True)
class Head:
    """What the export adds after the Keras model's output so that `probs` holds
    probabilities, as infer's scorer would make them from the model's own output: a
    softmax over logits (a sigmoid over one unit's logit), and a single unit's p
    widened to [1 - p, p]."""

    squash: bool  # softmax, or sigmoid for one unit
    binary: bool
    why: str

    def describe(self) -> str:
        transform = "sigmoid" if self.binary else "softmax"
        added = f"{transform} added to the graph" if self.squash else "taken as they are"
        widened = "; one score per image: two classes, [1 - p, p]" if self.binary else ""
        return f"{added} ({self.why}){widened}"

    def apply_tf(self, out: Any) -> Any:
        """The head as TensorFlow ops on the model's float32 output (traced into the graph)."""
        import tensorflow as tf

        if self.binary:
            p = tf.sigmoid(out) if self.squash else out
            return tf.concat([1.0 - p, p], axis=1)
        return tf.nn.softmax(out, axis=1) if self.squash else out

    def scorer(self) -> Scorer:
        """infer's scorer with this head's choice: what the exported graph computes."""
        return Scorer(ScoreMode.SOFTMAX if self.squash else ScoreMode.RAW)


def load_keras(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConvertError(model_not_found(path))
    if model_kind(path) not in (None, "keras"):
        raise ConvertError(f"cannot convert {path}: {not_onnx(path)}")
    if not zipfile.is_zipfile(path):
        raise ConvertError(
            f"{path} is not a Keras .keras file (a zip archive); save the model "
            "with model.save('model.keras')"
        )
    import keras

    import cnnbench.training.layers  # noqa: F401  registers cnnbench's custom layers for loading

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for bad archives and unknown layers
        raise ConvertError(
            f"{path} is not a Keras .keras file Keras can load: {first_line(e)}"
        ) from e


def model_facts(model: Any) -> ModelFacts:
    """Check that `model` is a single-input image classifier, and describe it."""
    if len(model.inputs) != 1:
        raise ConvertError(
            f"model has {len(model.inputs)} inputs; cnnbench converts image classifiers "
            "with one image input"
        )
    if len(model.outputs) != 1:
        raise ConvertError(f"model has {len(model.outputs)} outputs; an image classifier has one")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] not in (1, 3) or None in shape[1:]:
        raise ConvertError(
            f"model input shape is {shape}; an image classifier takes "
            "(batch, height, width, 1 or 3) with fixed height and width"
        )
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or out[1] is None:
        raise ConvertError(
            f"model output shape is {out}; an image classifier outputs (batch, classes)"
        )
    binary = out[1] == 1
    classes = 2 if binary else out[1]
    return ModelFacts((shape[1], shape[2]), shape[3], classes, str(model.inputs[0].dtype), binary)


# the last layer's activation that gives probabilities, for one unit and for several
PROBABILITIES = {True: "sigmoid", False: "softmax"}
HEAD_PROBE_IMAGES = 8
HEAD_PROBE_SEED = 0


def decide_head(model: Any, facts: ModelFacts, preprocess: Preprocess, mode: ScoreMode) -> Head:
    """Whether the model's output is probabilities or logits: as --scores says, else by
    its last layer's activation (softmax or sigmoid: probabilities; none: logits, as
    models trained with `from_logits=True` end), else as infer's --scores auto decides
    on the output for random images (softmax unless the rows are probabilities)."""
    if mode is not ScoreMode.AUTO:
        return Head(mode is ScoreMode.SOFTMAX, facts.binary, "asked with --scores")
    name = _last_activation(model)
    if name == PROBABILITIES[facts.binary]:
        return Head(False, facts.binary, f"the last layer's activation is {name}: probabilities")
    if name == "linear":
        return Head(True, facts.binary, "the last layer has no activation: logits")
    rng = np.random.default_rng(HEAD_PROBE_SEED)
    images = rng.integers(0, 256, (HEAD_PROBE_IMAGES, *facts.size, facts.channels), np.uint8)
    scorer = Scorer(ScoreMode.AUTO)
    scorer(_raw_output(model, facts, preprocess)(images))
    return Head(bool(scorer.apply_softmax), facts.binary, f"auto: {scorer.why}")


def _last_activation(model: Any) -> str | None:
    """The name of the activation the model's last layer ends with ('softmax',
    'sigmoid', 'linear'); None where it says none that is known (a custom layer)."""
    last = model.layers[-1] if model.layers else None
    if type(last).__name__ == "Softmax":
        return "softmax"
    name = getattr(getattr(last, "activation", None), "__name__", None)
    return name if name in ("softmax", "sigmoid", "linear") else None


def preprocess_fn(kind: Preprocess, channels: int) -> Any:
    """0..255 pixels (any dtype) -> what a float-input model expects, as TensorFlow ops."""
    import tensorflow as tf

    # Plain lists, not tf.constant: constants made outside the traced function would be
    # captured as extra graph inputs.
    mean_caffe = [103.939, 116.779, 123.68]
    mean_torch = [0.485, 0.456, 0.406]
    std_torch = [0.229, 0.224, 0.225]

    def apply(image: Any) -> Any:
        x = tf.cast(image, tf.float32)
        if kind is Preprocess.SCALE:
            return x / 255.0
        if kind is Preprocess.IMAGENET_CAFFE and channels == 3:
            return x[..., ::-1] - mean_caffe
        if kind is Preprocess.IMAGENET_TORCH and channels == 3:
            return (x / 255.0 - mean_torch) / std_torch
        return x

    return apply


GRAPH_PREPROCESSING = {
    Preprocess.NONE: "none: the model takes 0..255 as they are",
    Preprocess.SCALE: "x / 255",
    Preprocess.IMAGENET_CAFFE: "RGB to BGR, minus 103.939,116.779,123.68",
    Preprocess.IMAGENET_TORCH: "(x / 255 - 0.485,0.456,0.406) / 0.229,0.224,0.225",
}


def graph_preprocessing(model: Any, facts: ModelFacts, preprocess: Preprocess) -> str:
    """What the exported graph does to the 0..255 pixels before the network, in words: the
    --preprocess adapter, or the Keras model's own first layer (cnnbench's architectures
    scale or subtract the caffe mean inside)."""
    if facts.input_dtype != "uint8":
        return GRAPH_PREPROCESSING[preprocess]
    first = next((la for la in model.layers if type(la).__name__ != "InputLayer"), None)
    kind = type(first).__name__
    if first is not None and kind == "Rescaling":
        scale, offset = first.scale, first.offset
        if isinstance(scale, int | float) and isinstance(offset, int | float):
            return f"x * {scale:.8g}" + (f" + {offset:g}" if offset else "")
    if kind == "CaffePreprocess":
        return GRAPH_PREPROCESSING[Preprocess.IMAGENET_CAFFE]
    return "inside the model (uint8 input; see the model's own documentation)"


def to_uint8(image: Any) -> Any:
    """Float pixels -> the uint8 a uint8 model takes (rounded, clipped)."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def input_adapter(facts: ModelFacts, preprocess: Preprocess) -> Any:
    """The function from the exported input (uint8 or float pixels) to the model's input."""
    if facts.input_dtype != "uint8":
        return preprocess_fn(preprocess, facts.channels)
    if preprocess is not Preprocess.NONE:
        raise ConvertError(
            f"the model already takes uint8 images and scales them itself; "
            f"--preprocess {preprocess.value} would scale twice: leave it out"
        )
    return lambda image: image if image.dtype.name == "uint8" else to_uint8(image)


def keras_reference(model: Any, facts: ModelFacts, preprocess: Preprocess, head: Head) -> Any:
    """Keras' own probabilities for uint8 images, through the same preprocessing, made
    from its output as the exported graph's head makes them (`Head.scorer`)."""
    raw, scorer = _raw_output(model, facts, preprocess), head.scorer()
    return lambda images: scorer(raw(images))


def _raw_output(model: Any, facts: ModelFacts, preprocess: Preprocess) -> Any:
    """The Keras model's output for uint8 images, through the same preprocessing."""
    prep = input_adapter(facts, preprocess)

    def predict(images: np.ndarray) -> np.ndarray:
        chunks = [
            np.asarray(model(prep(images[i : i + REFERENCE_CHUNK]), training=False), np.float32)
            for i in range(0, len(images), REFERENCE_CHUNK)
        ]
        return np.concatenate(chunks)

    return predict
