"""Model facts counted from the ONNX graph: parameters, and multiply-accumulates of the
Conv, Gemm and MatMul nodes (their quantized forms too) at batch 1, from ONNX shape
inference. One MAC is two FLOPs. Elementwise ops, pooling and softmax are not counted:
they are a rounding error next to the convolutions of these models.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.files import atomic_path

if TYPE_CHECKING:
    import onnx

# op type -> (index of the data input, index of the weight input) for the kinds counted
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
# Initializers of these types are weights; int64 ones are shapes and axes, not parameters.
WEIGHT_TYPES = {1, 2, 3, 10, 11, 16}  # float, uint8, int8, float16, double, bfloat16
PRECISION_OF_TYPE = {1: "fp32", 2: "int8", 3: "int8", 10: "fp16", 11: "fp64", 16: "bf16"}


@dataclass(frozen=True)
class GraphFacts:
    params: int
    macs_per_image: int
    macs_by_op: dict[str, int]
    weights_precision: str  # the element type holding most of the weights

    @property
    def gflops_per_image(self) -> float:
        return 2 * self.macs_per_image / 1e9

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "gmacs_per_image": self.macs_per_image / 1e9,
            "gflops_per_image": self.gflops_per_image,
            "macs_by_op": self.macs_by_op,
            "weights_precision": self.weights_precision,
        }


def count_params(model: onnx.ModelProto) -> int:
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in WEIGHT_TYPES)


def weights_precision(model: onnx.ModelProto) -> str:
    """fp32, fp16, int8, ...: the type of the majority of the weights' elements."""
    counts: Counter[str] = Counter()
    for t in model.graph.initializer:
        if t.data_type in PRECISION_OF_TYPE:
            counts[PRECISION_OF_TYPE[t.data_type]] += math.prod(t.dims)
    return counts.most_common(1)[0][0] if counts else "unknown"


def _fix_input_shape(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise BenchError(f"input has {len(dims)} dims, cannot count FLOPs at shape {shape}")
    for dim, value in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = value


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor whose shape inference found fully known dims."""
    shapes = {}
    graph = model.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for t in graph.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int | None:
    """MACs of one node, or None when a shape it needs is unknown."""
    out = shapes.get(node.output[0])
    if node.op_type in CONV_OPS:
        w = shapes.get(node.input[CONV_OPS[node.op_type][1]])
        if out is None or w is None:
            return None
        return math.prod(out) * math.prod(w[1:])  # each output: Cin/group * kernel MACs
    a = shapes.get(node.input[MATMUL_OPS[node.op_type][0]])
    if out is None or a is None:
        return None
    trans_a = any(at.name == "transA" and at.i for at in node.attribute)
    k = a[0] if (node.op_type == "Gemm" and trans_a) else a[-1]
    return math.prod(out) * k


def graph_facts(path: str | Any, input_shape: tuple[int, ...]) -> GraphFacts:
    """Parameters and MACs per image of the model (a file or a ModelProto) at `input_shape`."""
    import onnx

    if isinstance(path, onnx.ModelProto):
        model, path = onnx.ModelProto.FromString(path.SerializeToString()), "the model"
    else:
        try:
            model = onnx.load(path)
        except Exception as e:  # protobuf DecodeError, OSError
            raise BenchError(f"cannot read {path} as ONNX: {e}") from e
    _fix_input_shape(model, input_shape)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # onnx raises InferenceError and plain RuntimeErrors
        raise BenchError(f"ONNX shape inference failed on {path}: {e}") from e
    shapes = _shapes(model)
    by_op: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in CONV_OPS or node.op_type in MATMUL_OPS:
            macs = node_macs(node, shapes)
            if macs is None:
                raise BenchError(
                    f"cannot count FLOPs of {path}: shape inference left the shape of "
                    f"{node.op_type} node {node.name!r} unknown"
                )
            by_op[node.op_type] += macs
    batch = input_shape[0]
    macs = sum(by_op.values()) // batch
    by_image = {k: v // batch for k, v in by_op.items()}
    return GraphFacts(count_params(model), macs, by_image, weights_precision(model))


PEAK_INPUT = "a"


def write_matmul_model(path: str, n: int, int8: bool = False) -> str:
    """A one-node ONNX model: [n, n] float32 input times an [n, n] weight (2 n^3 FLOPs).

    `int8`: the QDQ form `convert --precision int8` writes (the input quantized to uint8,
    the weight stored as int8), which ONNX Runtime runs as one integer MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray]
    if int8:
        arrays = {
            "w": rng.integers(-127, 128, (n, n), dtype=np.int8),
            "w_scale": np.array(0.01, np.float32),
            "a_scale": np.array(0.02, np.float32),
            "a_zero": np.array(128, np.uint8),
        }
        nodes = [
            helper.make_node("QuantizeLinear", [PEAK_INPUT, "a_scale", "a_zero"], ["aq"]),
            helper.make_node("DequantizeLinear", ["aq", "a_scale", "a_zero"], ["ad"]),
            helper.make_node("DequantizeLinear", ["w", "w_scale"], ["b"]),
            helper.make_node("MatMul", ["ad", "b"], ["y"]),
        ]
    else:
        arrays = {"b": rng.standard_normal((n, n), dtype=np.float32)}
        nodes = [helper.make_node("MatMul", [PEAK_INPUT, "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "matmul_peak",
        [helper.make_tensor_value_info(PEAK_INPUT, TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(a, name) for name, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return path
