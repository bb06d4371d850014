"""The CUDA path on a real GPU: `infer`, the IO-binding runner, fp16 and `bench`.

Every test here is marked `gpu` (`pytest -m gpu` runs only these) and is skipped, with
the reason, wherever no CUDA session really loads: one probe per test session
(conftest's `cuda_missing`), since onnxruntime-gpu lists CUDA as available on any machine.
The models are tiny convolutional nets written with onnx.helper (no TensorFlow: the GPU
machine has none) and the images are crops of real photos.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import FAST
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from cnnbench.cli import cli
from cnnbench.infer.decode.images import load_image
from cnnbench.infer.runtime.contract import ModelSpec, write_spec
from cnnbench.infer.runtime.preprocess import resolve_input_format
from cnnbench.infer.runtime.runner import BoundRunner, PlainRunner
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, choose_session

pytestmark = pytest.mark.gpu

SIZE, CLASSES = 32, 10
LABELS = tuple(f"class{i}" for i in range(CLASSES))
CUDA = RuntimeOptions(provider=Provider.CUDA)


@pytest.fixture(autouse=True)
def _needs_cuda(cuda_missing: str | None) -> None:
    if cuda_missing:
        pytest.skip(cuda_missing)


def write_tiny_cnn(path: Path, precision: str = "fp32") -> Path:
    """A contract model (uint8 NHWC `image` -> `probs`) with two 3x3 convolutions, so
    cuDNN's kernels run: /255 -> NCHW -> conv16 -> relu -> maxpool -> conv32 -> relu ->
    global average -> dense -> softmax. Random weights, seed 0. Every node is named, as
    tf2onnx names them: the fp16 converter's block list goes by node name."""
    import onnx

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        w = rng.standard_normal(shape) * np.sqrt(2 / fan_in)
        return numpy_helper.from_array(w.astype(np.float32), name)

    nodes = [
        helper.make_node("Cast", ["image"], ["f"], name="f", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["s"], name="s"),
        helper.make_node("Transpose", ["s"], ["x"], name="x", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="p1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="g"),
        helper.make_node("Flatten", ["g"], ["v"], name="v"),
        helper.make_node("Gemm", ["v", "fc", "fcb"], ["z"], name="z"),
        helper.make_node("Softmax", ["z"], ["probs"], name="probs", axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        weight("w1", 16, 3, 3, 3),
        numpy_helper.from_array(np.zeros(16, np.float32), "b1"),
        weight("w2", 32, 16, 3, 3),
        numpy_helper.from_array(np.zeros(32, np.float32), "b2"),
        weight("fc", 32, CLASSES),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "fcb"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if precision == "fp16":
        from cnnbench.convert.precision import to_fp16

        model = to_fp16(onnx.shape_inference.infer_shapes(model))
    spec = ModelSpec(input_size=(SIZE, SIZE), channels=3, labels=LABELS, precision=precision)
    write_spec(model, spec)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cnn(tmp_path_factory.mktemp("gpu") / "tiny_cnn.onnx")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real-photo JPEG crops of 64x64 in two folders (resized to 32x32 by infer)."""
    from cnnbench.training.samples import write_photo_folder

    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(str(root), per_class=60, size=64, photos=("china", "flower"))
    return root


def infer_rows(model: Path, folder: Path, out: Path, *args: str) -> tuple[dict, str]:
    """`cnnbench infer`: ({path: row}, output); a failure fails the test."""
    result = CliRunner().invoke(cli, ["infer", str(model), str(folder), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}, result.output


@pytest.mark.parametrize(
    ("batch", "files"),
    [(8, 64), (7, 67)],  # 64 = 8 x 8; 67 = 9 x 7 + 4: the last batch is padded on the GPU
    ids=["full-batches", "partial-last-batch"],
)
def test_infer_on_cuda_matches_cpu_for_every_file(
    cnn: Path, photos: Path, tmp_path: Path, batch: int, files: int
) -> None:
    limit = ["--limit", str(files), "--batch-size", str(batch)]
    cpu, _ = infer_rows(cnn, photos, tmp_path / "cpu.csv", "--provider", "cpu", *limit)
    gpu, output = infer_rows(cnn, photos, tmp_path / "gpu.csv", "--provider", "cuda", *limit)
    assert f"provider cuda, batch size {batch}" in output
    assert len(cpu) == files and cpu.keys() == gpu.keys()
    for name, row in cpu.items():
        assert gpu[name]["label"] == row["label"], name
        assert abs(float(gpu[name]["score"]) - float(row["score"])) <= 1e-3, name


def test_io_binding_runner_agrees_with_session_run(cnn: Path, photos: Path) -> None:
    session, _ = choose_session(str(cnn), CUDA)
    fmt = resolve_input_format(session)
    files = sorted(photos.rglob("*.jpg"))[:16]
    buf = np.stack([load_image(str(p), fmt.size, fmt.channels) for p in files])
    plain, bound = PlainRunner(session, fmt), BoundRunner(session, fmt, "cuda", 0)
    bound.warm_up(buf)
    for n in (16, 5, 16, 1):  # the device buffer is reused, partly filled batches included
        got = bound.run(buf, n)
        assert got.shape == (n, CLASSES)
        # the same batch shape runs the same kernels: only the binding can make a difference
        np.testing.assert_allclose(got, plain.run(buf, len(buf))[:n], rtol=0, atol=1e-6)
        # exactly n rows, as session.run gets them on CPU: cuDNN may pick other algorithms
        # (TF32 rounding), so the tolerance is the CPU-vs-CUDA one
        np.testing.assert_allclose(got, plain.run(buf, n), rtol=0, atol=1e-3)
        buf = np.ascontiguousarray(buf[::-1])


def test_fp16_model_runs_on_cuda_with_the_same_top1(
    cnn: Path, photos: Path, tmp_path: Path
) -> None:
    """fp16 as `convert --precision fp16` makes it (the same function), fed the same
    photos: >= 99% of the files keep their top-1 class."""
    pytest.importorskip("onnxconverter_common", reason="fp16 needs the train extra")
    fp16 = write_tiny_cnn(tmp_path / "tiny_cnn_fp16.onnx", precision="fp16")
    full, _ = infer_rows(cnn, photos, tmp_path / "fp32.csv", "--provider", "cuda")
    half, output = infer_rows(fp16, photos, tmp_path / "fp16.csv", "--provider", "cuda")
    assert "provider cuda" in output and half.keys() == full.keys() and len(full) == 120
    same = sum(half[k]["label"] == full[k]["label"] for k in full)
    assert same / len(full) >= 0.99, f"{same}/{len(full)} top-1 agree"


def test_bench_cuda_rows_with_and_without_host_copies(cnn: Path, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    args = ["bench", "--model", str(cnn), "--provider", "cuda", "--batch-sizes", "1,16", *FAST]
    result = CliRunner().invoke(cli, [*args, "--json", str(path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(path.read_text())
    assert doc["providers"] == ["cuda"]
    rows = doc["results"]
    assert [(r["provider"], r["batch_size"]) for r in rows] == [("cuda", 1), ("cuda", 16)]
    for r in rows:  # IO binding (model only) and session.run with numpy in and out
        assert r["throughput_ips"] > 0 and r["with_copies"]["throughput_ips"] > 0


def test_auto_picks_cuda_and_says_so(cnn: Path, photos: Path, tmp_path: Path) -> None:
    session, note = choose_session(str(cnn), RuntimeOptions())
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert note == "provider cuda (device 0), chosen by auto"
    _, output = infer_rows(cnn, photos, tmp_path / "auto.csv", "--limit", "4")
    assert "provider cuda (device 0), chosen by auto, batch size 64" in output
