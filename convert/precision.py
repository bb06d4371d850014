"""Lower precisions: fp16 for GPUs, int8 static QDQ quantization for CPUs with VNNI.

Both keep the contract's uint8 (or float32) `image` input and float32 `probs` output.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cnnbench.convert.errors import ConvertError
from cnnbench.errors import first_line
from cnnbench.infer.runtime.contract import INPUT_NAME

CALIBRATION_BATCH = 8
KEEP_FLOAT_OPS = ("Softmax",)  # quantized probabilities would tie at 1/255 steps


def to_fp16(model: Any) -> Any:
    """fp16 weights and activations inside; the graph's inputs and outputs keep their types.
    `model` must carry inferred shapes (onnx.shape_inference.infer_shapes_path)."""
    import warnings

    from onnxconverter_common.float16 import convert_float_to_float16

    # The converter rewrites a Cast's output type but not its `to` attribute, so a
    # uint8 -> float Cast (the input's, or one after a wrapped model's channel flip) would be
    # left inconsistent: keep every Cast in float32.
    # Remove when onnxconverter-common handles Cast nodes (still so in 1.16).
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # one line per tiny weight it rounds
        return convert_float_to_float16(
            model, keep_io_types=True, disable_shape_infer=True, node_block_list=casts
        )


def calibration_reader(images: np.ndarray, dtype: np.dtype) -> Any:
    """ONNX Runtime's calibration reader over uint8 images, fed as the model's input dtype:
    the model's own preprocessing is in the graph, so calibration sees real activations."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.batches, None)
            if start is None:
                return None
            return {INPUT_NAME: images[start : start + CALIBRATION_BATCH].astype(dtype)}

    return Reader()


def quantize_qdq(
    src: str,
    dst: str,
    images: np.ndarray,
    external: bool,
    keep_float: Sequence[str] = (),
    cache: str | None = None,
) -> None:
    """Static QDQ quantization of `src` into `dst`: uint8 activations, int8 per-channel
    weights (the U8S8 pair ONNX Runtime's VNNI kernels run fastest), MinMax ranges.

    `keep_float`: names of nodes left in float. `cache`: a JSON file of calibrated ranges,
    written by the first call and read by later ones on the same `src` (the accuracy
    control quantizes many times over one calibration)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(src, load_external_data=False)
    exclude = [n.name for n in model.graph.node if n.op_type in KEEP_FLOAT_OPS]
    exclude += [name for name in keep_float if name not in exclude]
    elem_type = model.graph.input[0].type.tensor_type.elem_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    del model
    try:
        with _quiet_root_logger():
            quantize_static(
                src,
                dst,
                calibration_reader(images, dtype),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=exclude,
                use_external_data_format=external,
                calibration_cache_path=cache,
            )
    except Exception as e:  # the quantizer raises bare exceptions for unsupported graphs
        raise ConvertError(f"int8 quantization failed: {first_line(e)}") from e


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantizer gives advice through `logging.warning` on the root logger, which
    also installs a stderr handler for every later log line: hold back both."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()  # root has a handler: no basicConfig()
    root.addHandler(placeholder)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        root.removeHandler(placeholder)
