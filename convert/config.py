"""What `convert` takes: closed sets as Enums and one frozen config, built at the CLI edge."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cnnbench.infer.runtime.preprocess import ForeignOptions
from cnnbench.infer.runtime.scores import ScoreMode


class Precision(enum.StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"  # for GPUs: on the CPU provider fp16 runs slower than fp32
    INT8 = "int8"  # static QDQ, per-channel; fast on CPUs with VNNI


class Preprocess(enum.StrEnum):
    """In-graph preprocessing for models that take float pixels."""

    NONE = "none"  # the model takes 0..255 floats as they are
    SCALE = "scale"  # x / 255
    IMAGENET_CAFFE = "imagenet-caffe"  # RGB->BGR, minus the ImageNet mean (keras VGG/ResNet)
    IMAGENET_TORCH = "imagenet-torch"  # x / 255, minus mean, over std


class InputDtype(enum.StrEnum):
    """The exported input's element type; both carry 0..255 pixel values."""

    UINT8 = "uint8"  # the contract default: 4x fewer bytes to a GPU
    FLOAT32 = "float32"  # for runtimes that cannot feed uint8


@dataclass(frozen=True)
class ConvertConfig:
    model: str
    output: str
    labels: str | None = None
    opset: int = 17
    input_dtype: InputDtype = InputDtype.UINT8
    preprocess: Preprocess = Preprocess.NONE
    precision: Precision = Precision.FP32
    calibration: str | None = None  # image folder for int8 ranges (and real-image checks)
    verify_images: str | None = None  # image folder for the real-image checks
    max_drop: float = 1.0  # int8: top-1 points it may lose on the real images (accuracy control)
    foreign: ForeignOptions | None = None  # ONNX input: how infer feeds it (no cnnbench spec)
    scores: ScoreMode = ScoreMode.AUTO  # Keras input: its output's kind (ONNX: in `foreign`)
    verify: bool = True
    external_data: bool | None = None  # None: only when the weights pass ONNX's 2 GB limit
    architecture: str | None = None
    dataset: str = ""
