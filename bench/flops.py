"""Model facts counted from the ONNX graph: parameters, and multiply-accumulates of the
Conv, Gemm and MatMul nodes (their quantized forms too) at batch 1, from ONNX shape
inference. One MAC is two FLOPs. Elementwise ops, pooling and softmax are not counted:
they are a rounding error next to the convolutions of these models.

A PyTorch export computes "same" padding at run time (Shape -> Gather -> ... -> Pad), which
ONNX shape inference cannot follow. Then the graph is folded at the fixed input shape by
ONNX Runtime's basic optimizer (constant folding turns those subgraphs into constants),
else shapes come from ONNX Runtime's symbolic shape inference; when neither finds every
shape, the count is unknown and `GraphFacts.note` says why. A model that runs is never
refused for its FLOPs.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.convert.graph import weights_precision
from cnnbench.files import atomic_path

if TYPE_CHECKING:
    import onnx

# op type -> (index of the data input, index of the weight input) for the kinds counted
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}
# Initializers of these types are weights; int64 ones are shapes and axes, not parameters.
WEIGHT_TYPES = {1, 2, 3, 10, 11, 16}  # float, uint8, int8, float16, double, bfloat16


@dataclass(frozen=True)
class GraphFacts:
    params: int
    macs_per_image: int | None  # None: no way of reading the shapes found them all
    macs_by_op: dict[str, int]
    weights_precision: str  # the element type holding most of the weights
    note: str | None = None  # how the shapes were found when not plainly, or why unknown

    @property
    def gflops_per_image(self) -> float | None:
        return None if self.macs_per_image is None else 2 * self.macs_per_image / 1e9

    def to_dict(self) -> dict:
        macs = self.macs_per_image
        return {
            "params": self.params,
            "gmacs_per_image": None if macs is None else macs / 1e9,
            "gflops_per_image": self.gflops_per_image,
            "macs_by_op": self.macs_by_op,
            "weights_precision": self.weights_precision,
            "flops_note": self.note,
        }


def count_params(model: onnx.ModelProto) -> int:
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in WEIGHT_TYPES)


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


def _count(model: onnx.ModelProto) -> tuple[Counter[str], str | None]:
    """MACs per counted op type over the whole batch, and the first node whose shape is
    unknown (None when every one is known)."""
    shapes = _shapes(model)
    by_op: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in CONV_OPS or node.op_type in MATMUL_OPS:
            macs = node_macs(node, shapes)
            if macs is None:
                return by_op, f"{node.op_type} node {node.name!r}"
            by_op[node.op_type] += macs
    return by_op, None


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _folded_by_ort(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph as ONNX Runtime's basic optimizer leaves it at the model's fixed input
    shape (run-time shape arithmetic folded into constants), shapes inferred again."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="cnnbench-flops-") as folder:
        fixed, folded = os.path.join(folder, "fixed.onnx"), os.path.join(folder, "folded.onnx")
        onnx.save(model, fixed)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
        options.log_severity_level = 3
        ort.InferenceSession(fixed, options, providers=["CPUExecutionProvider"])
        return _inferred(onnx.load(folded))


def _symbolic(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


# How shapes are read, in order: the first that finds every counted node's shapes wins.
_SHAPE_READERS: tuple[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]], ...] = (
    ("ONNX shape inference", _inferred),
    ("ONNX Runtime's constant folding at the fixed input shape", _folded_by_ort),
    ("ONNX Runtime's symbolic shape inference", _symbolic),
)


def _macs(model: onnx.ModelProto) -> tuple[Counter[str] | None, str | None]:
    """MACs by op type and a note (None when plain ONNX shape inference found them), or
    (None, why every way failed)."""
    failures = []
    for name, reader in _SHAPE_READERS:
        try:
            by_op, unknown = _count(reader(model))
        except Exception as e:  # onnx, ORT and the symbolic pass raise many types
            failures.append(f"{name} failed ({' '.join(str(e).split())[:160]})")
            continue
        if unknown is None:
            return by_op, None if reader is _inferred else f"shapes from {name}"
        failures.append(f"{name} left the shape of {unknown} unknown")
    return None, "FLOPs unknown: " + "; ".join(failures)


def graph_facts(path: str | Any, input_shape: tuple[int, ...]) -> GraphFacts:
    """Parameters and MACs per image of the model (a file or a ModelProto) at `input_shape`.
    Raises only when the file is not ONNX or the shape does not fit its input; FLOPs that
    no shape reader can count are None, with the reason in `note`."""
    import onnx

    if isinstance(path, onnx.ModelProto):
        model = onnx.ModelProto.FromString(path.SerializeToString())
    else:
        try:
            model = onnx.load(path)
        except Exception as e:  # protobuf DecodeError, OSError
            raise BenchError(f"cannot read {path} as ONNX: {e}") from e
    _fix_input_shape(model, input_shape)
    by_op, note = _macs(model)
    params, precision = count_params(model), weights_precision(model)
    if by_op is None:
        return GraphFacts(params, None, {}, precision, note)
    batch = input_shape[0]
    by_image = {k: v // batch for k, v in by_op.items()}
    return GraphFacts(params, sum(by_op.values()) // batch, by_image, precision, note)


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
