"""Pretrained models from the wild: a PyTorch-style export whose padding is computed at run
time (bench still counts its FLOPs), foreign models with labels in bench, `--top-k` past the
class count, and pixels that match Pillow's (torchvision's) evaluation transform."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from bench_helpers import FAST, bench
from helpers import assert_one_line_error, run
from onnx import TensorProto, helper, numpy_helper

from cnnbench.bench.flops import graph_facts
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.decode.resize import Interpolation
from cnnbench.infer.runtime.preprocess import (
    EVAL_CROP,
    ForeignOptions,
    Preset,
    resolve_input_format,
)
from cnnbench.infer.sources.listing import scan

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


MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (scikit-learn's and scikit-image's samples), written by Pillow in class
    folders: landscape, portrait, square, small (upscaled), grayscale and with alpha, JPEG
    and PNG."""
    from PIL import Image
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # RGB 427x640
    root = tmp_path_factory.mktemp("photos")
    files = {
        "a/china.jpg": china,
        "a/flower_portrait.jpg": np.ascontiguousarray(flower.transpose(1, 0, 2)),
        "a/coffee.png": data.coffee(),  # 400x600
        "b/chelsea.jpg": data.chelsea(),  # 300x451
        "b/astronaut_square.jpg": data.astronaut(),  # 512x512
        "b/small.jpg": np.asarray(Image.fromarray(flower).resize((120, 90))),
        "c/camera_gray.png": data.camera(),  # gray 512x512
        "c/coffee_alpha.png": np.dstack([data.coffee(), np.full((400, 600), 200, np.uint8)]),
        "c/china_gray_portrait.jpg": np.ascontiguousarray(china[:, 100:400, 0].T),
    }
    for name, pixels in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / name, quality=90)
    return root


def pillow_reference(path: Path, resample: int, short: int = 256, crop: int = 224) -> np.ndarray:
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image, written with Pillow
    alone: shorter side to 256, the other int(256 * long / short), then the centre crop
    with offsets rounded as CenterCrop rounds them. uint8 HWC RGB."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = image.resize((nw, nh), resample)
    # torchvision CenterCrop's own expression
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))  # noqa: RUF046
    return np.asarray(resized.crop((left, top, left + crop, top + crop)))


def fed_pixels(model: Path, folder: Path, options: ForeignOptions) -> np.ndarray:
    """The uint8 pixels `infer` feeds for every file of `folder` (its reader and format)."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    fmt = resolve_input_format(session, options)
    items = list(scan(str(folder)))
    out = np.zeros((len(items), *fmt.size, fmt.channels), np.uint8)
    assert load_items(items, out, fmt.bgr, fmt.policy) == [None] * len(items)
    return out


def float_classifier(path: Path, classes: int = 10) -> Path:
    """data [batch,3,224,224] float32 -> Conv 7x7/4 -> Relu -> GlobalAveragePool -> Gemm ->
    logits [batch, classes]: sensitive enough to the pixels that the resize shows."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["data", "wc"], ["conv"], strides=[4, 4]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wg"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(32, 3, 7, 7)).astype(np.float32), "wc"),
        numpy_helper.from_array(rng.normal(size=(32, classes)).astype(np.float32), "wg"),
    ]
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, 224, 224])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    graph = helper.make_graph(nodes, "float_classifier", [data], [logits], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return float_classifier(tmp_path_factory.mktemp("cls") / "cls.onnx")


@pytest.mark.parametrize(
    ("interpolation", "resample"),
    [(None, 2), (Interpolation.BILINEAR_AA, 2), (Interpolation.BICUBIC_AA, 3)],
    ids=["preset-default", "bilinear-aa", "bicubic-aa"],
)
def test_preset_imagenet_feeds_the_pixels_of_torchvisions_transform(
    classifier: Path, photos: Path, interpolation: Interpolation | None, resample: int
) -> None:
    options = ForeignOptions(preset=Preset.IMAGENET, interpolation=interpolation)
    got = fed_pixels(classifier, photos, options)
    expected = np.stack([pillow_reference(Path(i.path), resample) for i in scan(str(photos))])
    assert got.shape == expected.shape == (9, 224, 224, 3)
    assert np.abs(got.astype(int) - expected).max() <= 1  # the promise: within 1/255
    np.testing.assert_array_equal(got, expected)  # and in fact every pixel is Pillow's


def test_opencv_bilinear_is_not_the_pillow_reference(classifier: Path, photos: Path) -> None:
    """What the Pillow path fixes: OpenCV's bilinear does not antialias when it shrinks."""
    options = ForeignOptions(preset=Preset.IMAGENET, interpolation=Interpolation.BILINEAR)
    got = fed_pixels(classifier, photos, options)
    expected = np.stack([pillow_reference(Path(i.path), 2) for i in scan(str(photos))])
    assert np.abs(got.astype(int) - expected).max() > 20


def test_same_top1_as_the_pillow_reference_on_every_photo(
    classifier: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.csv"
    code, output = run(
        ["infer", str(classifier), str(photos), "-o", str(out), "--preset", "imagenet"]
    )
    assert code == 0, output
    assert "bilinear-aa" in output
    with open(out, newline="", encoding="utf-8") as f:
        got = {r["path"]: r["label"] for r in csv.DictReader(f)}
    session = ort.InferenceSession(str(classifier), providers=["CPUExecutionProvider"])
    items = list(scan(str(photos)))
    pixels = np.stack([pillow_reference(Path(i.path), 2) for i in items]).astype(np.float32)
    x = ((pixels / 255 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    logits = session.run(None, {"data": x})[0]
    expected = {i.name: str(k) for i, k in zip(items, logits.argmax(1), strict=True)}
    assert got == expected
    assert len(set(expected.values())) > 1  # the model tells the photos apart


def test_bench_images_with_labels_gives_accuracy_for_a_foreign_model(
    classifier: Path, photos: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"{name}\n" for name in "abcdefghij"))
    out = tmp_path / "b.json"
    args = ["--model", str(classifier), "--provider", "cpu", "--batch-sizes", "2", *FAST]
    args += ["--images", str(photos), "--preset", "imagenet", "--labels", str(labels)]
    code, output = bench([*args, "--json", str(out)])
    assert code == 0, output
    results = json.loads(out.read_text())["results"]
    accuracy = results[0]["accuracy"]
    assert accuracy["images"] == 9
    assert 0.0 <= accuracy["top1"] <= 1.0  # folders a, b, c are labels of the model
    assert accuracy["agreement"] == 1.0  # the reference configuration itself


def test_top_k_past_the_class_count_is_a_one_line_error(
    classifier: Path, photos: Path, tmp_path: Path
) -> None:
    args = ["infer", str(classifier), str(photos), "-o", str(tmp_path / "p.csv")]
    code, output = run([*args, "--preset", "imagenet", "--top-k", "11"])
    assert_one_line_error(code, output, "--top-k 11", "10 classes", "--top-k 10 or less")
    assert not (tmp_path / "p.csv").exists()


def test_pillow_path_turns_exif_oriented_photos_upright(tmp_path: Path) -> None:
    """A phone photo stored sideways (EXIF orientation 6): resized upright, as Pillow's
    exif_transpose turns it, like the OpenCV path does."""
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(china).save(path, quality=90, exif=exif)
    upright = tmp_path / "upright.png"
    ImageOps.exif_transpose(Image.open(path)).save(upright)
    out = np.zeros((1, 224, 224, 3), np.uint8)
    assert load_items(list(scan(str(path))), out, False, EVAL_CROP) == [None]
    np.testing.assert_array_equal(out[0], pillow_reference(upright, 2))
    assert out[0].shape[0] == 224 and Image.open(upright).size == (427, 640)


def test_spec_records_pillow_filters_and_training_reads_through_them(tmp_path: Path) -> None:
    """The spec (what convert writes from train's policy) keeps bilinear-aa and
    bicubic-aa, and train's reader (infer's load_image) gives Pillow's pixels."""
    from cnnbench.infer.runtime.contract import ModelSpec
    from cnnbench.training.data import read_image

    v2 = {"format_version": 2, "input_size": [224, 224], "channels": 3, "labels": ["a"]}
    for interpolation in (Interpolation.BILINEAR_AA, Interpolation.BICUBIC_AA):
        policy = EVAL_CROP.overridden(interpolation=interpolation)
        spec = ModelSpec.from_json(json.dumps(v2 | policy.to_dict()))
        assert ModelSpec.from_json(spec.to_json()).resize_policy == policy
    from PIL import Image
    from sklearn.datasets import load_sample_images

    path = tmp_path / "china.jpg"
    Image.fromarray(load_sample_images().images[0]).save(path, quality=90)
    pixels = read_image(str(path), 224, 3, EVAL_CROP)
    np.testing.assert_array_equal(pixels, pillow_reference(path, 2))
