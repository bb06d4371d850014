"""Shared by the bench tests: a tiny ONNX classifier written with onnx.helper, whose MACs
are counted by hand, and a quick way to run the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from cnnbench.cli import cli

# short windows: these tests check behaviour, never speed
FAST = ["--duration", "0.05", "--max-seconds", "1", "--warmup", "2", "--no-peak"]

C_IN, H, W, C_OUT, GROUPS, K, HIDDEN, CLASSES = 3, 8, 8, 8, 2, 3, 16, 10

# x [b,3,8,8] -Conv(pad 1)-> [b,8,8,8] -Conv(groups 2)-> [b,8,8,8] -flatten-> [b,512]
# -Gemm(B^T)-> [b,16] -reshape-> [b,2,1,8] -MatMul [2,8,5]-> [b,2,1,5] -reshape-> [b,10]
# -Gemm [10,10]-> softmax
EXPECTED_MACS = (
    (C_OUT * H * W) * C_IN * K * K  # each conv output: Cin x 3 x 3
    + (C_OUT * H * W) * (C_OUT // GROUPS) * K * K  # grouped: Cin/groups x 3 x 3
    + HIDDEN * (C_OUT * H * W)  # Gemm, transB
    + (2 * 1 * 5) * 8  # batched MatMul: 10 outputs x K=8
    + CLASSES * 10  # final Gemm
)
EXPECTED_PARAMS = (
    C_OUT * C_IN * K * K
    + C_OUT * (C_OUT // GROUPS) * K * K
    + HIDDEN * C_OUT * H * W
    + 2 * 8 * 5
    + 10 * CLASSES
)


def _initializers() -> list:
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def shape(name: str, *dims: int) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(dims, np.int64), name)

    return [
        weight("w", C_OUT, C_IN, K, K),
        weight("w2", C_OUT, C_OUT // GROUPS, K, K),
        weight("g", HIDDEN, C_OUT * H * W),
        weight("m", 2, 8, 5),
        weight("fc", 10, CLASSES),
        shape("flat", -1, C_OUT * H * W),
        shape("split", -1, 2, 1, 8),
        shape("merge", -1, 10),
    ]


def write_classifier(path: Path, batch: int | str = "batch", spatial: bool = True) -> Path:
    """NCHW float input [batch, 3, 8, 8]; spatial=False makes height and width dynamic."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "w2"], ["c2"], pads=[1, 1, 1, 1], group=GROUPS),
        helper.make_node("Reshape", ["c2", "flat"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["e"], transB=1),
        helper.make_node("Reshape", ["e", "split"], ["s"]),
        helper.make_node("MatMul", ["s", "m"], ["t"]),
        helper.make_node("Reshape", ["t", "merge"], ["v"]),
        helper.make_node("Gemm", ["v", "fc"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probs"]),
    ]
    hw = [H, W] if spatial else ["height", "width"]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, C_IN, *hw])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, CLASSES])],
        _initializers(),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def bench(args: list[str]) -> tuple[int, str]:
    """`cnnbench bench ARGS`: (exit code, output); a traceback fails the test."""
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def write_conv_net(path: Path, size: int = 32, channels: int = 16) -> Path:
    """NCHW float input [batch, 3, size, size]: two 3x3 convolutions, global average pool
    and a Gemm to 10 classes; about a millisecond per image, so operators dominate a run."""
    rng = np.random.default_rng(1)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(0.1 * rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["z"]),
        helper.make_node("Softmax", ["z"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", CLASSES])],
        [
            weight("w1", channels, 3, 3, 3),
            weight("w2", channels, channels, 3, 3),
            weight("fc", channels, CLASSES),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
