"""`export_onnx`: a Keras image classifier -> a verified, self-describing ONNX file."""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnbench import __version__
from cnnbench.convert.errors import ConvertError
from cnnbench.infer.contract import INPUT_NAME, ModelSpec, read_labels, write_spec
from cnnbench.infer.errors import InferError

ROUTE = "keras-stateless-call/tf2onnx"


class Precision(enum.StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Preprocess(enum.StrEnum):
    """In-graph preprocessing for models that take float pixels."""

    NONE = "none"  # the model takes 0..255 floats as they are
    SCALE = "scale"  # x / 255
    IMAGENET_CAFFE = "imagenet-caffe"  # RGB->BGR, minus the ImageNet mean (keras VGG/ResNet)
    IMAGENET_TORCH = "imagenet-torch"  # x / 255, minus mean, over std


@dataclass(frozen=True)
class ConvertConfig:
    model: str
    output: str
    labels: str | None = None
    opset: int = 17
    preprocess: Preprocess = Preprocess.NONE
    precision: Precision = Precision.FP32
    verify: bool = True
    architecture: str | None = None
    dataset: str = ""


@dataclass(frozen=True)
class ModelFacts:
    """What the Keras model says about its input and output."""

    size: tuple[int, int]
    channels: int
    num_classes: int
    input_dtype: str


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_keras(path: str) -> Any:
    if not os.path.isfile(path):
        raise ConvertError(f"model file not found: {path}")
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
        raise ConvertError(f"Keras could not load {path}: {str(e).splitlines()[0]}") from e


def model_facts(model: Any) -> ModelFacts:
    """Check that `model` is a single-input image classifier, and describe it."""
    if len(model.inputs) != 1:
        raise ConvertError(f"model has {len(model.inputs)} inputs; an image classifier has one")
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
    return ModelFacts((shape[1], shape[2]), shape[3], out[1], str(model.inputs[0].dtype))


def resolve_labels(cfg: ConvertConfig, num_classes: int) -> tuple[str, ...]:
    path = cfg.labels or os.path.join(os.path.dirname(os.path.abspath(cfg.model)), "labels.txt")
    if not os.path.isfile(path):
        if cfg.labels:
            raise ConvertError(f"labels file not found: {cfg.labels}")
        return tuple(str(i) for i in range(num_classes))
    try:
        labels = read_labels(path)
    except (InferError, OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"cannot read labels {path}: {e}") from e
    if len(labels) != num_classes:
        raise ConvertError(
            f"{path} has {len(labels)} labels but the model outputs "
            f"{num_classes} classes: give one label per class"
        )
    return labels


def preprocess_fn(kind: Preprocess, channels: int) -> Any:
    """uint8 NHWC -> what a float-input model expects, as TensorFlow ops."""
    import tensorflow as tf

    mean_caffe = tf.constant([103.939, 116.779, 123.68], tf.float32)
    mean_torch = tf.constant([0.485, 0.456, 0.406], tf.float32)
    std_torch = tf.constant([0.229, 0.224, 0.225], tf.float32)

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


def input_adapter(facts: ModelFacts, preprocess: Preprocess) -> Any:
    """None for uint8 models; else the uint8 -> float preprocessing to put in the graph."""
    if facts.input_dtype == "uint8":
        if preprocess is not Preprocess.NONE:
            raise ConvertError(
                f"the model already takes uint8 images and scales them itself; "
                f"--preprocess {preprocess.value} would scale twice"
            )
        return None
    return preprocess_fn(preprocess, facts.channels)


def keras_reference(model: Any, facts: ModelFacts, preprocess: Preprocess) -> Any:
    """Keras' own probabilities for uint8 images, through the same preprocessing."""
    prep = input_adapter(facts, preprocess)

    def predict(images: np.ndarray) -> np.ndarray:
        x = images if prep is None else prep(images)
        return np.asarray(model(x, training=False), dtype=np.float32)

    return predict


def _check_output(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConvertError(
            f"cannot write {path}: folder {folder} does not exist or is not writable"
        )


def to_onnx(model: Any, facts: ModelFacts, cfg: ConvertConfig) -> Any:
    """Trace, convert, and clean: a contract-shaped ModelProto, weights as initializers."""
    import tensorflow as tf

    from cnnbench.convert.graph import apply_contract_names, fold_and_clean, inputs_to_initializers
    from cnnbench.convert.tf2onnx_lib import trace_to_onnx

    prep = input_adapter(facts, cfg.preprocess)

    def call(image: Any, trainable: list, non_trainable: list) -> Any:
        x = image if prep is None else prep(image)
        out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return tf.cast(out, tf.float32)

    spec = tf.TensorSpec((None, *facts.size, facts.channels), tf.uint8, name=INPUT_NAME)
    try:
        proto, arrays = trace_to_onnx(model, call, spec, cfg.opset)
    except Exception as e:  # tf2onnx raises bare exceptions for unsupported ops
        raise ConvertError(f"tf2onnx could not convert the model: {str(e).splitlines()[0]}") from e
    inputs_to_initializers(proto, arrays)
    del arrays
    apply_contract_names(proto)
    return fold_and_clean(proto)


def build_spec(
    cfg: ConvertConfig, model: Any, facts: ModelFacts, labels: tuple[str, ...]
) -> ModelSpec:
    import onnx
    import tensorflow as tf
    import tf2onnx

    return ModelSpec(
        input_size=facts.size,
        channels=facts.channels,
        labels=labels,
        architecture=cfg.architecture or model.name,
        dataset=cfg.dataset,
        source_sha256=sha256_file(cfg.model),
        created_by=f"cnnbench {__version__}",
        route=ROUTE,
        precision=cfg.precision.value,
        opset=cfg.opset,
        versions={
            "tensorflow": tf.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
        },
    )


def export_onnx(cfg: ConvertConfig, report: Any = None) -> str:
    """Convert, verify, and atomically write `cfg.output`. Returns the output path.

    `report` receives the verification table's lines (default: ignored).
    """
    import onnx

    from cnnbench.convert.verify import verify_export

    _check_output(cfg.output)
    model = load_keras(cfg.model)
    facts = model_facts(model)
    labels = resolve_labels(cfg, facts.num_classes)
    proto = to_onnx(model, facts, cfg)
    write_spec(proto, build_spec(cfg, model, facts, labels))
    folder = os.path.dirname(os.path.abspath(cfg.output))
    fd, tmp = tempfile.mkstemp(prefix=".cnnbench-", suffix=".onnx.tmp", dir=folder)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        del proto
        if cfg.verify:
            reference = keras_reference(model, facts, cfg.preprocess)
            verify_export(reference, tmp, facts, cfg.precision, report or (lambda line: None))
        os.replace(tmp, cfg.output)
    except BaseException:
        os.unlink(tmp)
        raise
    return cfg.output


def random_images(facts: ModelFacts, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *facts.size, facts.channels), dtype=np.uint8)
