"""`cnnbench convert MODEL.onnx`: a foreign model wrapped into the contract answers as infer
answers on the source with flags; int8 of any ONNX with accuracy control (--max-drop)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from helpers import assert_one_line_error, run
from onnx import TensorProto, helper, numpy_helper

from cnnbench.infer.runtime.contract import INPUT_NAME, OUTPUT_NAME, SPEC_KEY, ModelSpec
from cnnbench.infer.runtime.preprocess import PRESETS, Preset

LABELS = ("apple", "bee", "cat", "dog", "eel")


def logits_model(path: Path, size: int = 32, batch: str | int = "N") -> Path:
    """A foreign float NCHW classifier that outputs logits: Conv, ReLU, pool, Gemm."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["pixels", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W", "B"], ["logits"]),
        helper.make_node("Identity", ["c"], ["features"]),  # a second head, not [batch, classes]
    ]
    weights = {
        "w": rng.normal(size=(8, 3, 3, 3)),
        "b": rng.normal(size=8),
        "W": 3 * rng.normal(size=(8, len(LABELS))),
        "B": rng.normal(size=len(LABELS)),
    }
    graph = helper.make_graph(
        nodes,
        "foreign",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 3, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(LABELS)]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, 8, size, size]),
        ],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def photos(root: Path) -> Path:
    """Real photos of different shapes (landscape, portrait, wide): the centre crop matters."""
    from sklearn.datasets import load_sample_images

    for label, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        (root / label).mkdir(parents=True)
        for i, (y, x, h, w) in enumerate(((0, 0, 427, 640), (0, 100, 427, 300), (100, 0, 60, 90))):
            crop = cv2.cvtColor(photo[y : y + h, x : x + w], cv2.COLOR_RGB2BGR)
            assert cv2.imwrite(str(root / label / f"{i}.jpg"), crop)
    return root


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


@pytest.fixture()
def foreign(tmp_path: Path) -> tuple[Path, Path, Path]:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return logits_model(tmp_path / "foreign.onnx"), labels, photos(tmp_path / "photos")


@pytest.mark.parametrize(("batch", "bgr"), [("N", []), (1, ["--bgr"])])
def test_wrapped_foreign_model_answers_as_infer_with_flags(
    foreign, tmp_path: Path, batch: str | int, bgr: list[str]
) -> None:
    """A dynamic batch becomes `batch`; a fixed one (zoo exports) stays fixed, padded."""
    model, labels, folder = foreign
    model = logits_model(tmp_path / "batched.onnx", batch=batch)
    flags = ["--preset", "imagenet", "--labels", str(labels), "--crop-pct", "0.9", *bgr]
    out = tmp_path / "wrapped.onnx"
    code, output = run(["convert", str(model), "-o", str(out), *flags])
    assert code == 0, output
    assert "ORT vs source max|dp| (random, batch 7)" in output
    assert "softmax (auto: the output rows are not probabilities)" in output

    wrapped = onnx.load(out)
    (inp,), (outp,) = wrapped.graph.input, wrapped.graph.output
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == TensorProto.UINT8
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch" if batch == "N" else batch, 32, 32, 3]
    assert outp.name == OUTPUT_NAME
    assert wrapped.graph.node[-1].op_type == "Softmax"
    meta = {p.key: p.value for p in wrapped.metadata_props}
    spec = ModelSpec.from_json(meta[SPEC_KEY])
    assert spec.labels == LABELS and spec.input_size == (32, 32)
    preset_policy = PRESETS[Preset.IMAGENET][1]
    assert (spec.crop_mode, spec.crop_pct) == ("center", 0.9)
    assert spec.interpolation == preset_policy.interpolation.value

    def infer(model_and_flags: list[str], name: str) -> dict[str, dict[str, str]]:
        target = tmp_path / f"{name}.csv"
        args = ["infer", model_and_flags[0], str(folder), "-o", str(target), "--top-k", "3"]
        code, output = run([*args, *model_and_flags[1:]])
        assert code == 0, output
        return rows(target)

    plain, flagged = infer([str(out)], "plain"), infer([str(model), *flags], "flags")
    assert plain.keys() == flagged.keys() and len(plain) == 6
    for path, row in plain.items():
        assert row["label"] == flagged[path]["label"], path
        for key in ("score", "score_2", "score_3"):
            assert abs(float(row[key]) - float(flagged[path][key])) <= 1e-4, (path, key)


def test_fp16_of_a_foreign_model(foreign, tmp_path: Path) -> None:
    model, _, folder = foreign
    out = tmp_path / "fp16.onnx"
    flags = ["--preset", "inception", "--bgr", "--precision", "fp16"]
    code, output = run(
        ["convert", str(model), "-o", str(out), *flags, "--verify-images", str(folder)]
    )
    assert code == 0, output
    assert "verification (fp16)" in output
    wrapped = onnx.load(out)
    assert [n.op_type for n in wrapped.graph.node[:2]] == ["Gather", "Cast"]
    assert wrapped.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert wrapped.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    spec = ModelSpec.from_json({p.key: p.value for p in wrapped.metadata_props}[SPEC_KEY])
    assert spec.precision == "fp16" and spec.channel_order == "RGB"
    assert spec.preprocessing.startswith("RGB to BGR; (x * 0.0039215686 - 0.5,0.5,0.5) / 0.5")


def test_foreign_model_without_options_is_infers_error(foreign, tmp_path: Path) -> None:
    model, _, folder = foreign
    code, converted = run(["convert", str(model), "-o", str(tmp_path / "w.onnx")])
    assert_one_line_error(code, converted, "--preset imagenet|inception|caffe|raw")
    code, inferred = run(["infer", str(model), str(folder), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(code, inferred)
    error = [line for line in converted.splitlines() if line.startswith("Error")]
    assert error == [line for line in inferred.splitlines() if line.startswith("Error")]
    assert not (tmp_path / "w.onnx").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "imagenet", "--max-drop", "-1"], "--max-drop"),
        (["--preset", "imagenet", "--crop-pct", "1.5"], "--crop-pct must be in (0, 1]"),
        (["--preset", "imagenet", "--size", "0x3"], "expected N or HxW"),
        (["--preset", "imagenet", "--mean", "1,2"], "--mean has 2 values"),
        (["--preset", "imagenet", "--output-name", "features"], "pick one shaped [batch, classes]"),
        (["--preset", "imagenet", "--output-name", "nope"], "no such output"),
        (["--preset", "imagenet", "--preprocess", "scale"], "--preprocess only apply to Keras"),
        (["--preset", "imagenet", "--precision", "int8"], "needs --calibration DIR"),
        (["--preset", "imagenet", "--labels", "MISSING"], "cannot read labels file MISSING"),
        (["--preset", "imagenet", "--max-drop", "2"], "--max-drop bounds int8 only"),
        (
            ["--preset", "imagenet", "--precision", "int8", "--max-drop", "2", "--no-verify"],
            "leave out --no-verify",
        ),
    ],
)
def test_bad_values_are_one_line_errors(foreign, tmp_path: Path, args, needle) -> None:
    model, _, _ = foreign
    out = tmp_path / "w.onnx"
    code, output = run(["convert", str(model), "-o", str(out), *args])
    assert_one_line_error(code, output, needle)
    assert not out.exists()


def test_infer_with_an_unreadable_labels_file(foreign, tmp_path: Path) -> None:
    model, _, folder = foreign
    labels = tmp_path / "latin1.txt"
    labels.write_bytes("caf\xe9\n".encode("latin-1") * 5)
    args = ["infer", str(model), str(folder), "-o", str(tmp_path / "p.csv"), "--preset", "raw"]
    code, output = run([*args, "--labels", str(labels)])
    assert_one_line_error(code, output, "cannot read labels file", "latin1.txt", "UTF-8")


def test_a_labels_file_from_a_windows_editor_and_one_with_a_gap(foreign, tmp_path: Path) -> None:
    """A byte-order mark and CRLF line ends (Notepad's UTF-8) are not part of the first
    label, nor are the spaces that end a line (unseen in an editor); a blank line before
    the last label would shift the labels after it onto the wrong classes: one line
    naming it."""
    model, _, folder = foreign
    labels = tmp_path / "notepad.txt"
    lines = [f"{label} \t" if k == 1 else label for k, label in enumerate(LABELS)]
    labels.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n\r\n")
    out = tmp_path / "w.onnx"
    args = ["convert", str(model), "-o", str(out), "--preset", "raw", "--labels", str(labels)]
    code, output = run(args)
    assert code == 0, output
    spec = ModelSpec.from_json({p.key: p.value for p in onnx.load(out).metadata_props}[SPEC_KEY])
    assert spec.labels == LABELS
    labels.write_text("\n".join([LABELS[0], "", *LABELS[1:-1]]) + "\n")
    args = ["infer", str(model), str(folder), "-o", str(tmp_path / "p.csv"), "--preset", "raw"]
    code, output = run([*args, "--labels", str(labels)])
    assert_one_line_error(code, output, "notepad.txt, line 2 is blank", "one class name per line")


def test_not_an_onnx_file_and_keras_with_foreign_options(tmp_path: Path) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model\n" * 10)
    code, output = run(["convert", str(notes), "-o", str(tmp_path / "w.onnx")])
    assert_one_line_error(code, output, "cannot load", "notes.onnx")
    keras = tmp_path / "m.keras"
    keras.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip archive
    code, output = run(["convert", str(keras), "-o", str(tmp_path / "w.onnx"), "--preset", "raw"])
    assert_one_line_error(code, output, "--preset only apply to ONNX input")


def tie_model(path: Path, identity_conv: bool = False) -> Path:
    """Two classes scored by the mean red and the mean green: images whose green mean is a
    quarter of a level above the red one are class 1 in float, and a tie (class 0) once the
    means are uint8 (scale 1 over 0..255). Its one weighted layer must stay int8, so no
    choice of float layers brings int8 back: --max-drop 0 cannot be met. With a 1x1
    identity Conv in front (exact in int8 on 0..255 pixels), keeping the MatMul in float
    can and must be chosen."""
    x = "x"
    nodes, weights = [], [np.array([[1, 0], [0, 1], [0, 0]], np.float32)]
    if identity_conv:
        nodes.append(helper.make_node("Conv", ["x", "K"], ["y"]))
        weights.append(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1))
        x = "y"
    nodes += [
        helper.make_node("ReduceMean", [x], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tie",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, n) for w, n in zip(weights, "WK", strict=False)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def tie_images(tmp_path: Path) -> tuple[Path, Path]:
    calibration, held_out = tmp_path / "calibration", tmp_path / "held_out"
    calibration.mkdir()
    held_out.mkdir()
    for level in (0, 100, 255):  # mean range 0..255: scale 1
        cv2.imwrite(str(calibration / f"{level}.png"), np.full((8, 8, 3), level, np.uint8))
    for i in range(4):
        image = np.zeros((8, 8, 3), np.uint8)  # BGR
        image[..., 1:] = 100 + 10 * i
        image[:4, :4, 1] += 1  # green mean a quarter level above red
        cv2.imwrite(str(held_out / f"{i}.png"), image)
    return calibration, held_out


def test_max_drop_that_cannot_be_met_writes_nothing(tmp_path: Path) -> None:
    calibration, held_out = tie_images(tmp_path)
    out = tmp_path / "int8.onnx"
    args = ["--preset", "raw", "--precision", "int8", "--calibration", str(calibration)]
    args += ["--verify-images", str(held_out), "--max-drop", "0"]
    code, output = run(["convert", str(tie_model(tmp_path / "tie.onnx")), "-o", str(out), *args])
    assert_one_line_error(
        code,
        output,
        "int8 cannot stay within --max-drop 0",
        "best top-1 agreement with fp32 found is 0.0%",
        "nothing was written",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration", "held_out", "tie.onnx"]
    code, output = run(["convert", str(tmp_path / "tie.onnx"), "-o", str(out), *args[:-1], "100"])
    assert code == 0, output
    assert "int8 top-1 agreement with fp32" in output and out.exists()


def test_the_most_harmful_layer_is_kept_in_float(tmp_path: Path) -> None:
    from cnnbench.convert.onnx_export import quantize_int8
    from cnnbench.infer.runtime.preprocess import ForeignOptions

    calibration, held_out = tie_images(tmp_path)
    model = tie_model(tmp_path / "tie.onnx", identity_conv=True)
    out = tmp_path / "int8.onnx"
    raw = ForeignOptions(preset=Preset.RAW)
    result = quantize_int8(str(model), str(out), str(calibration), str(held_out), 0.0, raw)
    assert (result.plain, result.reached, result.fp32) == (0.0, 100.0, 100.0)
    assert len(result.kept_float) == 1 and "MatMul" in result.kept_float[0]
    graph = onnx.load(out).graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    assert any(n.op_type == "DequantizeLinear" and n.output[0] in conv.input for n in graph.node)


@pytest.fixture(scope="module")
def trained_photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """simple_vgg trained on crops of the bundled photos (32x32), exported to ONNX; its
    training folder (for calibration) and its held-out crops."""
    from cnnbench.convert.export import ConvertConfig, export_onnx
    from cnnbench.training.run import TrainConfig, run_training
    from cnnbench.training.samples import write_photo_folder

    root = tmp_path_factory.mktemp("photos")
    write_photo_folder(str(root / "photos"), per_class=24, size=32)
    result = run_training(
        TrainConfig(
            arch="simple_vgg",
            out=str(root / "run"),
            data=str(root / "photos"),
            epochs=15,
            img_size=32,
            export_val=str(root / "held_out"),
            verbose=0,
        )
    )
    model = root / "vgg.onnx"
    export_onnx(ConvertConfig(model=result.model_path, output=str(model)))
    return model, root / "photos", root / "held_out"


@pytest.mark.slow
def test_int8_of_a_trained_model_within_max_drop(trained_photos, tmp_path: Path) -> None:
    from cnnbench.convert.onnx_export import quantize_int8

    model, calibration, held_out = trained_photos
    out = tmp_path / "vgg-int8.onnx"
    lines: list[str] = []
    result = quantize_int8(
        str(model), str(out), str(calibration), str(held_out), max_drop=1.0, report=lines.append
    )
    assert result.metric == "top-1 accuracy" and result.images == 30
    assert result.fp32 - result.reached <= 1.0
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(out).graph.node)
    assert any("int8 top-1 accuracy" in line and line.endswith("ok") for line in lines)

    def accuracy(path: Path) -> float:
        code, output = run(["infer", str(path), str(held_out), "-o", str(tmp_path / "p.csv")])
        assert code == 0, output
        return float(output.split("accuracy ")[1].split("%")[0])

    assert accuracy(out) == pytest.approx(result.reached, abs=0.01)
    assert accuracy(model) == pytest.approx(result.fp32, abs=0.01)
