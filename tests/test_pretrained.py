"""Pretrained models from the wild: a PyTorch-style export whose padding is computed at run
time (bench still counts its FLOPs), foreign models with labels in bench, `--top-k` past the
class count, and pixels that match Pillow's (torchvision's) evaluation transform."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from bench_helpers import FAST, bench
from onnx import TensorProto, helper, numpy_helper

from cnnbench.bench.flops import graph_facts

KERNEL, STRIDE, FILTERS, CLASSES = 3, 2, 8, 4


def _int64(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def same_padding_nodes(x: str, axis: int) -> list[onnx.NodeProto]:
    """TF "same" padding of one spatial axis as a PyTorch export computes it at run time:
    pad = max((ceil(n / s) - 1) * s + k - n, 0), from Shape -> Gather and float arithmetic
    (Cast, Div, Ceil), which ONNX shape inference cannot follow."""
    n, a = f"n{axis}", f"_{axis}"
    return [
        helper.make_node("Shape", [x], [f"shape{a}"]),
        helper.make_node("Gather", [f"shape{a}", f"axis{a}"], [n], axis=0),
        helper.make_node("Cast", [n], [f"nf{a}"], to=TensorProto.FLOAT),
        helper.make_node("Div", [f"nf{a}", "stride_f"], [f"q{a}"]),
        helper.make_node("Ceil", [f"q{a}"], [f"c{a}"]),
        helper.make_node("Cast", [f"c{a}"], [f"ci{a}"], to=TensorProto.INT64),
        helper.make_node("Sub", [f"ci{a}", "one"], [f"m{a}"]),
        helper.make_node("Mul", [f"m{a}", "stride_i"], [f"ms{a}"]),
        helper.make_node("Add", [f"ms{a}", "kernel_i"], [f"t{a}"]),
        helper.make_node("Sub", [f"t{a}", n], [f"d{a}"]),
        helper.make_node("Max", [f"d{a}", "zero"], [f"pad{a}"]),
        helper.make_node("Div", [f"pad{a}", "two"], [f"lo{a}"]),
        helper.make_node("Sub", [f"pad{a}", f"lo{a}"], [f"hi{a}"]),
    ]


def write_runtime_padding_model(path: Path, size: int = 32) -> Path:
    """x [batch,3,size,size] float32 -> Pad (pads from the input's run-time shape) ->
    Conv 3x3 stride 2 -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch, 4]."""
    rng = np.random.default_rng(0)
    pads = [f"{p}_{a}" for p in ("lo", "hi") for a in (2, 3)]  # begin h, w; end h, w
    nodes = [
        *same_padding_nodes("x", 2),
        *same_padding_nodes("x", 3),
        helper.make_node("Concat", ["zeros2", *pads[:2], "zeros2", *pads[2:]], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["padded"]),
        helper.make_node("Conv", ["padded", "w"], ["conv"], strides=[STRIDE, STRIDE]),
        helper.make_node("GlobalAveragePool", ["conv"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg"], ["logits"]),
    ]
    inits = [
        *(_int64(f"axis_{a}", [a]) for a in (2, 3)),
        numpy_helper.from_array(np.array([STRIDE], np.float32), "stride_f"),
        _int64("stride_i", [STRIDE]),
        _int64("kernel_i", [KERNEL]),
        _int64("one", [1]),
        _int64("zero", [0]),
        _int64("two", [2]),
        _int64("zeros2", [0, 0]),
        numpy_helper.from_array(rng.normal(size=(FILTERS, 3, KERNEL, KERNEL)).astype("f4"), "w"),
        numpy_helper.from_array(rng.normal(size=(FILTERS, CLASSES)).astype(np.float32), "wg"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])
    model = helper.make_model(
        helper.make_graph(nodes, "runtime_padding", [x], [y], inits),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def runtime_padding_macs(size: int) -> int:
    out = -(-size // STRIDE)  # "same": ceil(n / s)
    return out * out * FILTERS * 3 * KERNEL * KERNEL + FILTERS * CLASSES


@pytest.fixture(scope="module")
def runtime_padding(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runtime_padding_model(tmp_path_factory.mktemp("pad") / "runtime_pad.onnx")


def test_plain_shape_inference_cannot_follow_run_time_padding(runtime_padding: Path) -> None:
    model = onnx.load(str(runtime_padding))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    known = {
        vi.name
        for vi in inferred.graph.value_info
        if all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
    }
    assert "conv" not in known  # what made bench refuse such models


def test_flops_of_a_run_time_padding_model_come_from_the_folded_graph(
    runtime_padding: Path,
) -> None:
    facts = graph_facts(str(runtime_padding), (2, 3, 32, 32))
    assert facts.macs_per_image == runtime_padding_macs(32)
    assert facts.note is not None and "constant folding" in facts.note


def test_bench_measures_a_run_time_padding_model(runtime_padding: Path, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    args = ["--model", str(runtime_padding), "--provider", "cpu", "--batch-sizes", "1,2"]
    code, output = bench([*args, *FAST, "--json", str(out)])
    assert code == 0, output
    model = json.loads(out.read_text())["models"][0]
    assert model["facts"]["gflops_per_image"] == pytest.approx(2 * runtime_padding_macs(32) / 1e9)
    assert "constant folding" in output


def test_flops_no_reader_can_count_are_unknown_with_the_reasons(tmp_path: Path) -> None:
    """A Conv fed by an op no shape reader knows: no exception, FLOPs None, every reason."""
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Mystery", ["x"], ["m"], domain="example.custom"),
            helper.make_node("Conv", ["m", "w"], ["y"], name="after_mystery"),
        ],
        "unknowable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("example.custom", 1)]
    )
    facts = graph_facts(model, (1, 3, 8, 8))
    assert facts.macs_per_image is None and facts.gflops_per_image is None
    assert facts.params == 2 * 3 * 3 * 3
    assert facts.note is not None and facts.note.startswith("FLOPs unknown")
    assert "'after_mystery'" in facts.note and "constant folding" in facts.note
