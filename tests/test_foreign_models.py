"""Models users bring: ONNX classifiers built here with onnx.helper as the wild ships them
(fixed batch 1, NCHW float32, logits, a feature map as first output) run right through
`infer`, or stop with one line saying why."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, brightness_classifier, brightness_folder, save_nchw8
from onnx import TensorProto, helper, numpy_helper

from cnnbench.cli import cli
from cnnbench.infer.decode.resize import CropMode, Interpolation
from cnnbench.infer.engines.local import _Decoder
from cnnbench.infer.runtime.preprocess import ForeignOptions, Preset, resolve_input_format
from cnnbench.infer.runtime.scores import softmax
from cnnbench.infer.sources.listing import scan

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
CLASSES = 5


def foreign_classifier(
    path: Path, *, size: int = 224, batch: int | str = 1, aux_head: bool = False
) -> Path:
    """data [batch,3,size,size] float32 -> Conv -> `feat` (a feature map, output 0) ->
    GlobalAveragePool -> Flatten -> Gemm -> `logits` [batch, 5] (output 1); with
    `aux_head`, a second [batch, 3] head `aux` as output 2."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["data", "wc"], ["feat"], strides=[4, 4]),
        helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg", "bg"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32), "wc"),
        numpy_helper.from_array(3 * rng.normal(size=(6, CLASSES)).astype(np.float32), "wg"),
        numpy_helper.from_array(rng.normal(size=CLASSES).astype(np.float32), "bg"),
    ]
    outputs = [
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, [batch, 6, "h", "w"]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES]),
    ]
    if aux_head:
        nodes.append(helper.make_node("Gemm", ["flat", "wa"], ["aux"]))
        inits.append(numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "wa"))
        outputs.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, [batch, 3]))
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, size, size])
    graph = helper.make_graph(nodes, "zoo_like", [data], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def zoo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return foreign_classifier(tmp_path_factory.mktemp("zoo") / "zoo.onnx")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos of several shapes: landscape JPEG, portrait PNG, a small JPEG that is
    upscaled, a gray PNG, in two class-less subfolders; all small enough that no JPEG is
    decoded at reduced size."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # RGB 427x640
    root = tmp_path_factory.mktemp("photos")
    (root / "a").mkdir()
    (root / "b").mkdir()

    def write(name: str, rgb: np.ndarray) -> None:
        image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(root / name), image)

    write("a/china.jpg", china)
    write("a/flower_portrait.png", np.ascontiguousarray(flower[:, 100:400].transpose(1, 0, 2)))
    write("b/small.jpg", cv2.resize(flower, (120, 90), interpolation=cv2.INTER_AREA))
    write("b/gray.png", cv2.cvtColor(china[50:350, 20:620], cv2.COLOR_RGB2GRAY))
    return root


def imagenet_reference(path: Path) -> np.ndarray:
    """The standard ImageNet evaluation, written out with OpenCV and numpy: decode, shorter
    side to 256 (bilinear), centre crop 224, /255, minus mean, over std; CHW float32."""
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    nh, nw = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = round((nh - 224) / 2), round((nw - 224) / 2)
    crop = resized[top : top + 224, left : left + 224].astype(np.float32) / 255
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


def fed_inputs(model: Path, folder: Path, options: ForeignOptions) -> np.ndarray:
    """What `infer` feeds the model for every file of `folder`: its own decoder and format."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    fmt = resolve_input_format(session, options)
    items = list(scan(str(folder)))
    decoder = _Decoder(fmt, len(items), workers=2)
    try:
        _, buf, futures = decoder.submit(items)
        assert all(r is None for f in futures for r in f.result())
    finally:
        decoder.close()
    return fmt.to_model_input(buf)


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_opencv_bilinear_reproduces_the_opencv_reference(zoo_model: Path, photos: Path) -> None:
    """--preset imagenet --interpolation bilinear: OpenCV's decode and bilinear resize, as a
    plain OpenCV + numpy script computes them (the preset's default is Pillow's filter:
    test_pretrained.py)."""
    options = ForeignOptions(preset=Preset.IMAGENET, interpolation=Interpolation.BILINEAR)
    got = fed_inputs(zoo_model, photos, options)
    expected = np.stack([imagenet_reference(Path(i.path)) for i in scan(str(photos))])
    assert got.shape == expected.shape == (4, 3, 224, 224)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # The crop matters: a squash of the same files is far from the reference.
    squashed = fed_inputs(zoo_model, photos, replace(options, crop_mode=CropMode.SQUASH))
    assert np.abs(squashed - expected).max() > 0.5


def test_fixed_batch_logits_two_outputs_every_file_a_row(
    zoo_model: Path, photos: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(photos.rglob("*.*")):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out, summary = tmp_path / "p.csv", tmp_path / "s.json"
    args = ["infer", str(zoo_model), str(folder), "-o", str(out), "--preset", "imagenet"]
    args += ["--interpolation", "bilinear"]  # imagenet_reference's OpenCV resize
    code, output = invoke([*args, "--top-k", "5", "--summary", str(summary)])
    assert code == 0, output
    assert "batch is fixed at 1" in output
    assert "scores softmax (auto: the output rows are not probabilities)" in output
    rows = read_rows(out)
    errors = read_rows(tmp_path / "p.errors.csv")
    names = sorted(r["path"] for r in rows + errors)
    assert names == sorted(p.name for p in folder.iterdir())
    assert [e["path"] for e in errors] == ["broken.jpg"]
    # The scores are the softmax of the logits the model gives for the reference input.
    session = ort.InferenceSession(str(zoo_model), providers=["CPUExecutionProvider"])
    for row in rows:
        x = imagenet_reference(folder / row["path"])[None]
        logits = session.run(["logits"], {"data": x})[0]
        probs = softmax(logits)[0]
        scores = [float(row["score" + s]) for s in ("", "_2", "_3", "_4", "_5")]
        labels = [int(row["label" + s]) for s in ("", "_2", "_3", "_4", "_5")]
        assert labels[0] == int(np.argmax(logits))
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(scores, probs[labels], atol=2e-5)
    doc = json.loads(summary.read_text())
    assert doc["scores"].startswith("softmax (auto")
    assert "centre crop 224x224" in doc["preprocessing"]


def test_scores_raw_keeps_the_logits(zoo_model: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    args = ["infer", str(zoo_model), str(photos / "a"), "-o", str(out), "--preset", "imagenet"]
    code, output = invoke([*args, "--scores", "raw", "--interpolation", "bilinear"])
    assert code == 0, output
    assert "scores raw (asked with --scores)" in output
    row = read_rows(out)[0]
    x = imagenet_reference(photos / "a" / row["path"])[None]
    session = ort.InferenceSession(str(zoo_model), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"data": x})[0][0]
    assert float(row["score"]) == pytest.approx(float(logits.max()), abs=1e-4)


def test_output_name_picks_among_two_heads(photos: Path, tmp_path: Path) -> None:
    model = foreign_classifier(tmp_path / "two.onnx", aux_head=True, batch="N")
    out = tmp_path / "p.csv"
    base = ["infer", str(model), str(photos / "a"), "-o", str(out), "--preset", "imagenet"]
    code, output = invoke(base)
    assert_one_line_error(code, output, "--output-name", "logits [N,5]", "aux [N,3]")
    assert not out.exists()
    code, output = invoke([*base, "--output-name", "aux"])
    assert code == 0, output
    assert {r["label"] for r in read_rows(out)} <= {"0", "1", "2"}


def test_mean_std_without_scale_warns(zoo_model: Path, photos: Path, tmp_path: Path) -> None:
    args = ["infer", str(zoo_model), str(photos / "a"), "-o", str(tmp_path / "p.csv")]
    code, output = invoke([*args, "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"])
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "--scale" in warnings[0], output


BAD_VALUES = [
    ([], ["--preset imagenet|inception|caffe|raw"]),
    (["--preset", "imagenet", "--mean", "0.5,0.5"], ["--mean has 2 values", "3 channel"]),
    (["--preset", "imagenet", "--std", "0,1,1"], ["--std has a 0"]),
    (["--preset", "imagenet", "--scale", "0"], ["--scale must be positive"]),
    (["--preset", "imagenet", "--scale", "-1"], ["--scale must be positive"]),
    (["--preset", "imagenet", "--crop-pct", "0"], ["--crop-pct", "(0, 1]"]),
    (["--preset", "imagenet", "--crop-pct", "1.5"], ["--crop-pct", "(0, 1]"]),
    (["--preset", "imagenet", "--output-name", "nope"], ["nope", "logits [1,5]"]),
    (["--preset", "imagenet", "--size", "300"], ["--size 300x300", "224x224"]),
    (["--preset", "imagenet", "--batch-size", "8"], ["--batch-size 8", "fixed batch of 1"]),
    (["--preset", "imagenet", "--labels", "LABELS3"], ["has 3 labels", "5 classes"]),
    (["--preset", "imagenet", "--mean", "nan,1,1"], ["comma-separated numbers"]),
]


@pytest.mark.parametrize(("extra", "needles"), BAD_VALUES)
def test_bad_values_are_one_line_and_write_nothing(
    zoo_model: Path, photos: Path, tmp_path: Path, extra: list[str], needles: list[str]
) -> None:
    labels = tmp_path / "labels3.txt"
    labels.write_text("x\ny\nz\n")
    extra = [str(labels) if e == "LABELS3" else e for e in extra]
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    code, output = invoke(["infer", str(zoo_model), str(photos), "-o", str(out), *extra])
    assert_one_line_error(code, output, *needles)
    assert list(out.parent.iterdir()) == [], "nothing may be written"


def test_contract_model_needs_no_options_and_refuses_pixel_options(
    tiny_model: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.csv"
    code, output = invoke(["infer", str(tiny_model), str(photos), "-o", str(out)])
    assert code == 0, output
    assert "scores raw (auto: the model's spec says its output is probabilities)" in output
    code, output = invoke(
        ["infer", str(tiny_model), str(photos), "-o", str(out), "--preset", "imagenet"]
    )
    assert_one_line_error(code, output, "--preset", "inside the graph")


def test_old_spec_without_new_keys_still_loads() -> None:
    from cnnbench.infer.decode.resize import ResizePolicy
    from cnnbench.infer.runtime.contract import ModelSpec

    v1 = {"format_version": 1, "input_size": [28, 28], "channels": 1, "labels": ["a", "b"]}
    spec = ModelSpec.from_json(json.dumps(v1))
    assert spec.format_version == 1
    assert spec.resize_policy == ResizePolicy()  # squash, area: what format 1 meant
    v2 = ModelSpec.from_json(spec.to_json().replace('"format_version": 1', '"format_version": 2'))
    assert v2.layout == "NHWC" and v2.pixel_range == (0, 255)
    bad = dict(v1, crop_mode="zoom")
    with pytest.raises(Exception, match="crop_mode"):
        ModelSpec.from_json(json.dumps(bad))


def test_inspect_our_export_a_foreign_model_and_a_non_onnx_file(
    tiny_model: Path, zoo_model: Path, tmp_path: Path
) -> None:
    code, output = invoke(["inspect", str(tiny_model)])
    assert code == 0, output
    assert "input  image: uint8 [batch,8,8,3]" in output
    assert "output probs: float [batch,3]  <- classifier output" in output
    assert "spec (cnnbench.spec): format_version 2" in output
    assert "0..255, preprocessing inside the model" in output
    assert "labels 3" in output
    report = tmp_path / "zoo.json"
    code, output = invoke(["inspect", str(zoo_model), "--json", str(report)])
    assert code == 0, output
    assert "infer needs: --preset imagenet|inception|caffe|raw" in output
    doc = json.loads(report.read_text())
    assert doc["spec"] is None
    assert doc["opsets"] == {"ai.onnx": 11}
    assert doc["will_do"]["fixed_batch"] == 1
    assert doc["will_do"]["output"] == "logits"
    assert doc["will_do"]["layout"] == "nchw"
    assert doc["params"] == 6 * 3 * 3 * 3 + 6 * CLASSES + CLASSES
    # Conv: 56x56 outputs x 6 filters x 27 taps; Gemm: 6 x 5
    assert doc["gflops_per_image"] == pytest.approx(2 * (56 * 56 * 6 * 27 + 6 * CLASSES) / 1e9)
    code, output = invoke(["inspect", str(zoo_model), "--preset", "imagenet"])
    assert (
        "shorter side to 256, centre crop 224x224 (crop_pct 0.875), bilinear-aa (Pillow)" in output
    )
    text = tmp_path / "notes.onnx"
    text.write_text("these are notes, not a model\n" * 20)
    code, output = invoke(["inspect", str(text)])
    assert_one_line_error(code, output, "is not an ONNX model")


def photo_folder(root: Path) -> Path:
    """Two classes of real photos of different shapes (landscape, portrait, wide)."""
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    shapes = ((0, 0, 427, 640), (0, 100, 427, 300), (100, 0, 200, 640))
    for label, photo in (("china", china), ("flower", flower)):
        (root / label).mkdir(parents=True)
        for i, (y, x, h, w) in enumerate(shapes):
            crop = cv2.cvtColor(photo[y : y + h, x : x + w], cv2.COLOR_RGB2BGR)
            assert cv2.imwrite(str(root / label / f"{i}.jpg"), crop)
    return root


@pytest.mark.slow
def test_trained_as_served(tmp_path: Path) -> None:
    """Training reads a folder with the run's resize policy, through infer's own decoder;
    the policy travels in the .keras file into the spec; infer feeds identical pixels."""
    from cnnbench import __version__
    from cnnbench.convert.export import ConvertConfig, export_onnx
    from cnnbench.infer.decode.resize import Interpolation, ResizePolicy
    from cnnbench.training.data import scan_folder, to_tf
    from cnnbench.training.run import TrainConfig, run_training

    folder = photo_folder(tmp_path / "photos")
    policy = ResizePolicy(CropMode.CENTER, 0.8, Interpolation.BICUBIC)
    cfg = TrainConfig(
        arch="mnist_cnn",
        out=str(tmp_path / "run"),
        data=str(folder),
        epochs=1,
        img_size=32,
        channels=3,
        val_split=0.34,
        eager=True,
        verbose=0,
        resize=policy,
    )
    result = run_training(cfg)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(ConvertConfig(model=result.model_path, output=str(onnx_path)))

    model = onnx.load(str(onnx_path))
    assert (model.producer_name, model.producer_version) == ("cnnbench", __version__)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    fmt = resolve_input_format(session)
    assert fmt.policy == policy
    spec = fmt.spec
    assert spec is not None and spec.format_version == 2
    assert (spec.layout, spec.input_dtype, spec.pixel_range) == ("NHWC", "uint8", (0, 255))
    assert (spec.channel_order, spec.preprocessing) == ("RGB", "x * 0.0039215686")
    assert (spec.crop_mode, spec.crop_pct, spec.interpolation) == ("center", 0.8, "bicubic")

    _, source, _ = scan_folder(str(folder))
    trained = np.stack([image for image, _ in to_tf(source, 32, 3, policy).as_numpy_iterator()])
    decoder = _Decoder(fmt, len(source), workers=2)
    try:
        from cnnbench.infer.sources.items import Item

        _, served, futures = decoder.submit([Item(p, p) for p in source.paths])
        assert all(r is None for f in futures for r in f.result())
    finally:
        decoder.close()
    assert trained.shape == served.shape == (6, 32, 32, 3)
    assert np.array_equal(trained, served)


@pytest.mark.slow
def test_digits_export_spec_is_gray_and_old_defaults(digits_run) -> None:
    session = ort.InferenceSession(str(digits_run.onnx_path), providers=["CPUExecutionProvider"])
    spec = resolve_input_format(session).spec
    assert spec is not None
    assert (spec.channel_order, spec.crop_mode, spec.interpolation) == ("GRAY", "squash", "area")


def test_non_finite_model_output_is_an_error_row_not_a_nan_row(photos: Path, tmp_path: Path):
    """sqrt(mean pixel - 1000): NaN for every image."""
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("Sub", ["m", "k"], ["d"]),
        helper.make_node("Sqrt", ["d"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array(1000, dtype=np.float32), "k"),
    ]
    save_nchw8(tmp_path / "nan.onnx", nodes, inits, 3, opset=18, ir=9)
    out = tmp_path / "p.csv"
    args = ["infer", str(tmp_path / "nan.onnx"), str(photos), "-o", str(out), "--preset", "raw"]
    code, output = invoke(args)
    assert code == 0, output
    assert read_rows(out) == []
    errors = read_rows(tmp_path / "p.errors.csv")
    assert len(errors) == 4 and all("not finite" in e["error"] for e in errors)


def test_bench_follows_the_fixed_batch_and_needs_a_preset_only_for_images(
    zoo_model: Path, photos: Path
) -> None:
    fast = ["--duration", "0.05", "--max-seconds", "1", "--warmup", "1", "--no-peak"]
    args = ["bench", "--model", str(zoo_model), "--provider", "cpu", *fast]
    code, output = invoke([*args, "--batch-sizes", "1,8"])
    assert code == 0, output
    assert "batch dimension is fixed at 1" in output
    code, output = invoke([*args, "--size", "300"])
    assert_one_line_error(code, output, "--size 300x300", "224x224")
    code, output = invoke(args)  # random pixels: no preprocessing needed
    assert code == 0, output
    code, output = invoke([*args, "--images", str(photos)])
    assert_one_line_error(code, output, "--preset")
    code, output = invoke([*args, "--images", str(photos), "--preset", "imagenet"])
    assert code == 0, output


def test_output_check_keeps_the_bound_runner_shape(tmp_path: Path) -> None:
    """The pre-run check goes through IO binding (the GPU path, here on the CPU device)
    with the full batch, so the bound input keeps the shape every batch has."""
    from cnnbench.infer.runtime.runner import BoundRunner, PlainRunner, check_output

    model = foreign_classifier(tmp_path / "dyn.onnx", batch="N", size=32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    fmt = resolve_input_format(session, ForeignOptions(preset=Preset.IMAGENET))
    buf = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    bound, plain = BoundRunner(session, fmt, "cpu", 0), PlainRunner(session, fmt)
    check_output(bound, buf)
    check_output(plain, buf)
    np.testing.assert_allclose(bound.run(buf, 3), plain.run(buf, 3), rtol=1e-5)
    assert (
        bound.scorer.describe()
        == plain.scorer.describe()
        == ("softmax (auto: the output rows are not probabilities)")
    )


def test_opencv_check_names_the_engine_that_loads(tmp_path: Path) -> None:
    """Whatever this OpenCV can load: the check names the engine that loaded the file (the
    first of OpenCV's engines that does), or says that none could, with OpenCV's message.
    Which precisions load is a fact of the OpenCV version, written in docs/convert.md."""
    import cv2
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from cnnbench.convert.verify import opencv_check, opencv_engines

    fp32 = foreign_classifier(tmp_path / "m.onnx", size=32, batch="N")
    model = onnx.load(fp32)
    del model.graph.output[0]  # one output, as cnnbench's exports have
    onnx.save(model, fp32)
    rng = np.random.default_rng(0)
    batches = iter([{"data": rng.random((1, 3, 32, 32), dtype=np.float32)} for _ in range(4)])

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict | None:
            return next(batches, None)

    int8 = tmp_path / "m_int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    engines = opencv_engines()
    assert engines[0][1] == "default"
    for path in (fp32, int8):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        check = opencv_check(str(path), session.run(None, {"data": x})[0], x)
        loaded = []
        for engine, name in engines:
            try:
                net = cv2.dnn.readNetFromONNX(str(path), *([] if engine is None else [engine]))
                net.setInput(x)
                net.forward()
                loaded.append(name)
            except cv2.error:
                pass
        if loaded:
            assert check.name == f"OpenCV DNN top-1 ({loaded[0]} engine)", check
            assert check.value.endswith("%"), check
        else:
            assert check.name == "OpenCV DNN top-1", check
            prefix = f"OpenCV {cv2.__version__} cannot load it ("
            assert check.value.startswith(prefix), check
            # every engine tried, each with the message OpenCV gave
            for _, name in engines:
                assert f"{name}: " in check.value and len(check.value) > len(prefix) + 20


@pytest.mark.parametrize("sigmoid", [False, True])
def test_one_score_per_image_is_a_binary_classifier(tmp_path: Path, sigmoid: bool) -> None:
    """[batch, 1]: the second class's logit or probability (Keras' Dense(1, sigmoid),
    PyTorch's BCEWithLogitsLoss heads). infer, bench and tune score it as two classes
    [1 - p, p], and convert wraps it so; taken as one class, every image was class 0 with
    score 1, and tune's agreement was 100% whatever the int8 file answered."""
    from cnnbench.bench.tune import predict
    from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session

    model = brightness_classifier(tmp_path / "binary.onnx", sigmoid)
    folder = brightness_folder(tmp_path / "photos")
    labels = folder / "labels.txt"
    foreign = ["--preset", "raw", "--labels", str(labels)]
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(cli, ["infer", str(model), str(folder), "-o", str(out), *foreign])
    assert result.exit_code == 0, result.output
    assert "accuracy 100.00% (6/6)" in result.output
    how = "sigmoid (auto: one score per image, not in [0, 1]" if not sigmoid else "raw (auto: "
    assert how in result.output, result.output
    with out.open() as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    p_bright = 1 / (1 + np.exp(-(200 - 128) / 32))  # the first bright image
    assert float(rows["bright/0.png"]["score"]) == pytest.approx(p_bright, abs=1e-5)
    assert float(rows["dark/0.png"]["score"]) == pytest.approx(1 / (1 + np.exp(-78 / 32)), abs=1e-5)
    result = CliRunner().invoke(cli, ["inspect", str(model), *foreign])
    assert (
        "<- classifier output (one score per image: the second of two classes)" in (result.output)
        and "classes 2, labels 2" in result.output
    ), result.output
    # tune's answers: the class, not column 0 of one
    session = create_session(str(model), RuntimeOptions(provider=Provider.CPU))
    fmt = resolve_input_format(session, ForeignOptions(preset=Preset.RAW, labels_path=str(labels)))
    pixels = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (50, 200, 60, 190)])
    assert predict(session, fmt, pixels).tolist() == [0, 1, 0, 1]
    # convert wraps it into the contract: two columns, the same rows without options
    wrapped = tmp_path / "wrapped.onnx"
    result = CliRunner().invoke(cli, ["convert", str(model), "-o", str(wrapped), *foreign])
    assert result.exit_code == 0, result.output
    assert [d.dim_value for d in onnx.load(wrapped).graph.output[0].type.tensor_type.shape.dim][
        1
    ] == 2
    again = tmp_path / "w.csv"
    result = CliRunner().invoke(cli, ["infer", str(wrapped), str(folder), "-o", str(again)])
    assert result.exit_code == 0 and "accuracy 100.00% (6/6)" in result.output, result.output
    with again.open() as f:
        assert {r["path"]: r["label"] for r in csv.DictReader(f)} == {
            path: row["label"] for path, row in rows.items()
        }
