"""Real conversions: every registry architecture, keras.applications models with float
input, fp16, int8 on trained digits, external data, float32 input, atomic failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from cnnbench.cli import cli
from cnnbench.convert.config import Precision
from cnnbench.convert.export import ConvertConfig, export_onnx
from cnnbench.infer.runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, SPEC_KEY
from cnnbench.training.registry import ARCHITECTURES, build

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnbench.bench.photos import write_sample_photos

    folder = tmp_path_factory.mktemp("photos")
    write_sample_photos(str(folder), 24, seed=3, size=96)
    return folder


def convert(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["convert", *args])
    assert result.exit_code == 0, result.output
    return result.output


def spec_of(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}[SPEC_KEY])


def assert_contract(path: Path, input_type: int = onnx.TensorProto.UINT8) -> onnx.ModelProto:
    """Contract names and types; a tidy graph: every initializer used, no weight Transpose."""
    model = onnx.load(path)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    assert inp.type.tensor_type.elem_type == input_type
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    used = {name for node in model.graph.node for name in node.input}
    weights = {t.name for t in model.graph.initializer}
    assert weights <= used, f"unused initializers: {sorted(weights - used)[:5]}"
    transposed = [
        n.name for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in weights
    ]
    assert not transposed, f"unfolded weight transposes: {transposed}"
    return model


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_registry_architecture_converts_and_verifies(
    arch: str, tmp_path: Path, photos: Path
) -> None:
    spec = ARCHITECTURES[arch]
    keras_path = tmp_path / f"{arch}.keras"
    build(arch, num_classes=3, img_size=spec.min_size).save(keras_path)
    out = tmp_path / f"{arch}.onnx"
    output = convert([str(keras_path), "-o", str(out), "--verify-images", str(photos)])
    assert "real, 24 images" in output and "FAIL" not in output
    model = assert_contract(out)
    assert spec_of(model)["architecture"] == arch


@pytest.mark.parametrize("name", ["ResNet50", "VGG16"])
def test_keras_applications_with_float_input(name: str, tmp_path: Path, photos: Path) -> None:
    import keras

    factory = getattr(keras.applications, name)
    keras_path = tmp_path / f"{name}.keras"
    factory(weights=None, input_shape=(32, 32, 3), classes=4).save(keras_path)
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    out = tmp_path / f"{name}.onnx"
    args = [str(keras_path), "-o", str(out), "--preprocess", "imagenet-caffe", "--opset", "18"]
    convert([*args, "--verify-images", str(photos)])
    spec = spec_of(assert_contract(out))
    assert spec["labels"] == ["a", "b", "c", "d"] and spec["input_size"] == [32, 32]
    assert (spec["precision"], spec["opset"], spec["route"]) == (
        "fp32",
        18,
        "keras-stateless-call/tf2onnx",
    )
    assert len(spec["source_sha256"]) == 64 and {"tensorflow", "tf2onnx", "onnxruntime"} <= set(
        spec["versions"]
    )


def test_fp16_keeps_uint8_input_and_float32_output(digits_run, tmp_path: Path) -> None:
    out = tmp_path / "digits-fp16.onnx"
    output = convert([str(digits_run.keras_path), "-o", str(out), "--precision", "fp16"])
    assert "verification (fp16)" in output and "<= 1e-02" in output
    model = assert_contract(out)
    kinds = {t.data_type for t in model.graph.initializer if len(t.dims) > 1}
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert spec_of(model)["precision"] == "fp16"


def held_out_accuracy(model: Path, heldout: Path, tmp_path: Path) -> float:
    from cnnbench.infer.engines.job import InferConfig
    from cnnbench.infer.engines.local import run_infer

    cfg = InferConfig(
        str(model), (str(heldout),), str(tmp_path / f"{model.stem}.csv"), progress=False
    )
    summary = run_infer(cfg)
    assert summary.labelled == summary.images > 300
    return summary.correct / summary.labelled


def test_int8_digits_loses_at_most_one_point(digits_run, tmp_path: Path) -> None:
    from cnnbench.training.data import DataOptions, load_dataset, write_image_folder

    data = load_dataset(DataOptions("digits", 28, 1))  # the digits_run split: calibrate on train
    calib = tmp_path / "calib"
    train = data.train.take(np.arange(256))
    write_image_folder(zip(train.images, train.targets, strict=True), data.labels, str(calib))
    out = tmp_path / "digits-int8.onnx"
    args = [
        "--precision",
        "int8",
        "--calibration",
        str(calib),
        "--verify-images",
        str(digits_run.heldout),
    ]
    output = convert([str(digits_run.keras_path), "-o", str(out), *args])
    assert "verification (int8)" in output
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node)
    fp32 = held_out_accuracy(digits_run.onnx_path, digits_run.heldout, tmp_path)
    int8 = held_out_accuracy(out, digits_run.heldout, tmp_path)
    assert int8 >= fp32 - 0.01, (fp32, int8)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_external_data(digits_run, tmp_path: Path, precision: str) -> None:
    out = tmp_path / "digits.onnx"
    args = ["--precision", precision, "--calibration", str(digits_run.heldout)]
    convert([str(digits_run.keras_path), "-o", str(out), "--external-data", *args])
    assert (tmp_path / "digits.onnx.data").stat().st_size > 1_000_000  # 1.6M parameters
    assert out.stat().st_size < 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnx", "digits.onnx.data"]
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    sessions = [ort.InferenceSession(p) for p in (out, digits_run.onnx_path)]
    probs = [s.run(None, {INPUT_NAME: images})[0] for s in sessions]
    np.testing.assert_allclose(
        probs[0], probs[1], atol={"fp32": 1e-6, "fp16": 1e-2, "int8": 0.2}[precision]
    )


def test_float32_input_runs_through_infer(digits_run, tmp_path: Path) -> None:
    out = tmp_path / "digits-f32.onnx"
    convert([str(digits_run.keras_path), "-o", str(out), "--input-dtype", "float32"])
    assert_contract(out, onnx.TensorProto.FLOAT)
    assert held_out_accuracy(out, digits_run.heldout, tmp_path) >= 0.95


def test_failed_verification_writes_nothing(digits_run, tmp_path: Path, monkeypatch) -> None:
    from cnnbench.convert import verify

    monkeypatch.setitem(verify.TOLERANCES, Precision.FP32, (-1.0, 1.0))  # nothing can pass
    out = tmp_path / "digits.onnx"
    out.write_bytes(b"an earlier export")
    result = CliRunner().invoke(cli, ["convert", str(digits_run.keras_path), "-o", str(out)])
    assert result.exit_code != 0 and "verification failed" in result.output
    assert "FAIL" in result.output and "Traceback" not in result.output
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnx"]


def test_export_onnx_library_call(digits_run, tmp_path: Path) -> None:
    lines: list[str] = []
    path = export_onnx(
        ConvertConfig(str(digits_run.keras_path), str(tmp_path / "d.onnx")), lines.append
    )
    assert Path(path).exists() and lines[1] == "verification (fp32):"
    assert (
        lines[0]
        == "scores: taken as they are (the last layer's activation is softmax: probabilities)"
    )
