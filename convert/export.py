"""`export_onnx`: a Keras image classifier -> a verified, self-describing ONNX file."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbench import __version__
from cnnbench.convert.config import ConvertConfig, InputDtype, Precision, Preprocess
from cnnbench.convert.errors import ConvertError
from cnnbench.convert.keras_model import (
    Head,
    ModelFacts,
    decide_head,
    graph_preprocessing,
    input_adapter,
    keras_reference,
    load_keras,
    model_facts,
)
from cnnbench.convert.real_images import RealImages, calibration_images, verification_images
from cnnbench.convert.writer import check_writable, needs_external, save_model, staged
from cnnbench.files import sha256_file
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.runtime.contract import INPUT_NAME, ModelSpec, read_labels, write_spec

if TYPE_CHECKING:
    from cnnbench.convert.accuracy import QuantResult
    from cnnbench.convert.verify import Check

__all__ = ["ConvertConfig", "InputDtype", "Precision", "Preprocess", "export_onnx"]

ROUTE = "keras-stateless-call/tf2onnx"


def resolve_labels(cfg: ConvertConfig, num_classes: int, binary: bool = False) -> tuple[str, ...]:
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
        one_unit = (
            " (its single unit's score is the second class's: name the other class first)"
            if binary
            else ""
        )
        raise ConvertError(
            f"{path} has {len(labels)} labels but the model outputs "
            f"{num_classes} classes{one_unit}: give one label per class"
        )
    return labels


def check_options(cfg: ConvertConfig) -> None:
    if cfg.precision is Precision.INT8 and cfg.calibration is None:
        raise ConvertError(
            "--precision int8 needs --calibration DIR: a folder of real images like "
            "those the model will classify (a few hundred are enough)"
        )


def to_onnx(model: Any, facts: ModelFacts, cfg: ConvertConfig, head: Head | None = None) -> Any:
    """Trace, convert, and clean: a contract-shaped fp32 ModelProto, weights as initializers;
    `head` after the model's output (None: the output as it is)."""
    import tensorflow as tf

    from cnnbench.convert.graph import apply_contract_names, fold_and_clean, inputs_to_initializers
    from cnnbench.convert.tf2onnx_lib import trace_to_onnx

    prep = input_adapter(facts, cfg.preprocess)

    def call(image: Any, trainable: list, non_trainable: list) -> Any:
        out, _ = model.stateless_call(trainable, non_trainable, prep(image), training=False)
        out = tf.cast(out, tf.float32)
        return head.apply_tf(out) if head else out

    dtype = tf.uint8 if cfg.input_dtype is InputDtype.UINT8 else tf.float32
    spec = tf.TensorSpec((None, *facts.size, facts.channels), dtype, name=INPUT_NAME)
    try:
        proto, arrays = trace_to_onnx(model, call, spec, cfg.opset)
    except Exception as e:  # tf2onnx raises bare exceptions for unsupported ops
        raise ConvertError(f"tf2onnx could not convert the model: {first_line(e)}") from e
    inputs_to_initializers(proto, arrays)
    del arrays
    apply_contract_names(proto)
    return fold_and_clean(proto, needs_external(proto, cfg.external_data))


def model_policy(cfg: ConvertConfig) -> ResizePolicy:
    """The resize policy `train` stored in the .keras file, else cnnbench's default."""
    from cnnbench.training.data import read_model_policy
    from cnnbench.training.errors import TrainError

    try:
        return read_model_policy(cfg.model) or DEFAULT_POLICY
    except TrainError as e:
        raise ConvertError(str(e)) from e


def build_spec(
    cfg: ConvertConfig,
    model: Any,
    facts: ModelFacts,
    labels: tuple[str, ...],
    policy: ResizePolicy,
) -> ModelSpec:
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return ModelSpec(
        input_size=facts.size,
        channels=facts.channels,
        labels=labels,
        channel_order="GRAY" if facts.channels == 1 else "RGB",
        layout="NHWC",
        input_dtype=cfg.input_dtype.value,
        pixel_range=(0, 255),
        preprocessing=graph_preprocessing(model, facts, cfg.preprocess),
        **policy.to_dict(),
        architecture=cfg.architecture or model.name,
        dataset=cfg.dataset,
        source_sha256=sha256_file(cfg.model),
        created_by=f"cnnbench {__version__}",
        route=ROUTE,
        precision=cfg.precision.value,
        opset=cfg.opset,
        versions={
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    )


def lower_precision(
    proto: Any,
    cfg: ConvertConfig,
    path: str,
    calibration: np.ndarray | None,
    real: RealImages | None,
    report: Callable[[str], None],
) -> tuple[Any, QuantResult | None]:
    """The fp32 proto at `cfg.precision`, through scratch files beside `path`; int8's
    accuracy-control result with it."""
    if cfg.precision is Precision.FP32:
        return proto, None
    import onnx

    from cnnbench.convert.accuracy import lower_file
    from cnnbench.convert.graph import name_nodes

    name_nodes(proto.graph)
    external = needs_external(proto, cfg.external_data)
    fp32, lowered = f"{path}.fp32.onnx", f"{path}.{cfg.precision.value}.onnx"
    save_model(proto, fp32, external)
    del proto
    quant = lower_file(fp32, lowered, cfg, calibration, real, external, report)
    return onnx.load(lowered), quant


def export_onnx(cfg: ConvertConfig, report: Callable[[str], None] | None = None) -> str:
    """Convert, lower precision, verify, and atomically write `cfg.output`.

    `report` receives what was decided of the scores (`Head.describe`) and the
    verification table's lines (default: ignored). Returns the path.
    """
    check_writable(cfg.output)
    check_options(cfg)
    model = load_keras(cfg.model)
    facts = model_facts(model)
    labels = resolve_labels(cfg, facts.num_classes, facts.binary)
    policy = model_policy(cfg)
    report = report or (lambda line: None)
    calibration = calibration_images(cfg.calibration, facts, policy, report)
    real = (
        verification_images(cfg.verify_images, calibration, facts, policy, labels, report)
        if cfg.verify
        else None
    )
    head = decide_head(model, facts, cfg.preprocess, cfg.scores)
    report(f"scores: {head.describe()}")
    proto = to_onnx(model, facts, cfg, head)
    with staged(cfg.output) as path:
        proto, quant = lower_precision(proto, cfg, path, calibration, real, report)
        write_spec(proto, build_spec(cfg, model, facts, labels, policy))
        proto.producer_name, proto.producer_version = "cnnbench", __version__
        save_model(proto, path, needs_external(proto, cfg.external_data))
        del proto
        if cfg.verify:
            extra = quant.checks() if quant else []
            verify(model, facts, cfg, path, real, report, extra, head)
    return cfg.output


def verify(
    model: Any,
    facts: ModelFacts,
    cfg: ConvertConfig,
    path: str,
    real: RealImages | None,
    report: Callable[[str], None],
    extra: list[Check],
    head: Head,
) -> None:
    from cnnbench.convert.verify import verify_export

    reference = keras_reference(model, facts, cfg.preprocess, head)
    verify_export(reference, path, facts, cfg.precision, report, real, extra=extra)
