"""Shared fixtures: one real training run on digits, converted once per test session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import SLOW_CLASS_FILES, SLOW_FOLDER_FILES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class DigitsRun:
    run_dir: Path
    keras_path: Path
    onnx_path: Path
    heldout: Path
    val_accuracy: float


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> DigitsRun:
    """mnist_cnn trained a few epochs on scikit-learn's digits, exported to ONNX."""
    from cnnbench.convert.export import ConvertConfig, export_onnx
    from cnnbench.training.run import TrainConfig, run_training

    root = tmp_path_factory.mktemp("digits")
    result = run_training(
        TrainConfig(
            arch="mnist_cnn",
            out=str(root / "run"),
            epochs=10,  # 97-98% held-out; the issue asks >= 97%
            export_val=str(root / "heldout"),
            verbose=0,
        )
    )
    onnx_path = root / "digits.onnx"
    export_onnx(ConvertConfig(model=result.model_path, output=str(onnx_path)))
    return DigitsRun(
        root / "run", Path(result.model_path), onnx_path, root / "heldout", result.val_accuracy
    )


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 real-photo crops (40x40 JPEG), plus one non-image file to skip."""
    from cnnbench.training.samples import write_photo_folder

    root = tmp_path_factory.mktemp("tiny")
    write_photo_folder(str(root), per_class=4, size=40, photos=("china", "flower"))
    (root / "china" / "notes.txt").write_text("not an image")
    return root


def _tiny_classifier(path: Path, *, uint8_nhwc: bool, labels: tuple[str, ...], hw=(8, 8)) -> Path:
    """A real ONNX classifier without TensorFlow: mean colour -> linear -> softmax.

    uint8_nhwc: our contract (input `image` uint8 [batch,H,W,3], spec in the metadata);
    otherwise a foreign float NCHW model [batch,3,H,W] without a spec.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnbench.infer.runtime.contract import ModelSpec, write_spec

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, len(labels))).astype(np.float32)
    h, w = hw
    if uint8_nhwc:
        inp = helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", h, w, 3])
        nodes = [
            helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMean", ["f", "axes12"], ["m"], keepdims=0),
        ]
        axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12")
        scale = 1 / 255.0
    else:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, h, w])
        nodes = [helper.make_node("ReduceMean", ["input", "axes23"], ["m"], keepdims=0)]
        axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes23")
        scale = 1.0
    nodes += [
        helper.make_node("MatMul", ["m", "W"], ["logits0"]),
        helper.make_node("Mul", ["logits0", "s"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(labels)])
    inits = [
        axes,
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(np.array(scale * 4, dtype=np.float32), "s"),
    ]
    graph = helper.make_graph(nodes, "tiny", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if uint8_nhwc:
        write_spec(model, ModelSpec(input_size=hw, channels=3, labels=labels))
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract model (uint8 NHWC, spec inside) with labels cat, dog, fish."""
    root = tmp_path_factory.mktemp("tiny")
    return _tiny_classifier(root / "tiny.onnx", uint8_nhwc=True, labels=("cat", "dog", "fish"))


@pytest.fixture(scope="session")
def foreign_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A foreign float NCHW [N,3,8,8] model with no cnnbench spec, 4 classes."""
    root = tmp_path_factory.mktemp("foreign")
    return _tiny_classifier(root / "foreign.onnx", uint8_nhwc=False, labels=tuple("abcd"))


@pytest.fixture(scope="session")
def cuda_missing(tiny_model: Path) -> str | None:
    """Why CUDA does not run here (None: it does), from one session probe per test session.

    `get_available_providers()` lists CUDA wherever onnxruntime-gpu is installed, GPU or
    not: only the providers a real session reports are the truth."""
    from cnnbench.infer.errors import InferError
    from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session

    try:
        create_session(str(tiny_model), RuntimeOptions(provider=Provider.CUDA))
    except InferError as e:
        return f"no CUDA session loads here: {e}"
    return None


@pytest.fixture(scope="session")
def photo_jpeg() -> bytes:
    """A real photo (scikit-learn's sample image), 500x375 JPEG bytes."""
    import cv2
    from sklearn.datasets import load_sample_images

    image = load_sample_images().images[0]  # china.jpg, RGB 427x640
    small = cv2.resize(image, (500, 375), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


@pytest.fixture()
def slow_folder(tmp_path: Path) -> Path:
    """SLOW_FOLDER_FILES hard links of one photo PNG: slow enough to decode (~10 ms each on
    one thread) to be stopped in the middle."""
    import cv2
    from sklearn.datasets import load_sample_images

    image = cv2.resize(load_sample_images().images[1], (600, 450))
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    first = folder / "img_0000.png"
    first.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    for i in range(1, SLOW_FOLDER_FILES):
        os.link(first, folder / ("sub" if i % 3 == 0 else "") / f"img_{i:04d}.png")
    (folder / "broken.png").write_bytes(b"nope")
    return folder


@pytest.fixture()
def slow_classes(tmp_path: Path) -> Path:
    """slow_folder's photo in two colourings that tiny_model calls cat and fish,
    hard-linked by turns into class folders named like its labels (cat, dog, fish), so
    that some files are right and some wrong, plus the two at the top (no true label) and
    a broken file in a class folder: a job stopped midway has accuracy on both sides."""
    import cv2
    from sklearn.datasets import load_sample_images

    image = cv2.resize(load_sample_images().images[1], (600, 450))  # RGB
    folder = tmp_path / "classes"
    folder.mkdir()
    colourings = [folder / "as_cat.png", folder / "as_fish.png"]
    no_blue = image.copy()
    no_blue[..., 2] = 0
    for path, pixels in zip(colourings, (image, no_blue), strict=True):
        path.write_bytes(cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))[1])
    for i in range(SLOW_CLASS_FILES):
        label = ("cat", "dog", "fish")[i * 3 // SLOW_CLASS_FILES]
        (folder / label).mkdir(exist_ok=True)
        os.link(colourings[i % 2], folder / label / f"img_{i:04d}.png")
    (folder / "cat" / "broken.png").write_bytes(b"nope")
    return folder


def _jpeg(seed: int, photo: bytes) -> bytes:
    """A photo with its colours shifted: a different prediction per seed."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    shifted = np.roll(image, seed * 40, axis=2) if seed % 3 else image // (1 + seed % 4)
    return cv2.imencode(".jpg", cv2.resize(shifted, (64, 48)))[1].tobytes()


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory, photo_jpeg: bytes) -> Path:
    """Class folders named like tiny_model's labels, files at the top, a folder whose
    name sorts differently as a name and as a path ('a/' after 'a.jpg'), a text file:
    what the object stores' tests upload."""
    root = tmp_path_factory.mktemp("photos")
    names = [f"cat/{i}.jpg" for i in range(4)] + [f"dog/{i}.jpg" for i in range(3)]
    names += ["a.jpg", "a-b/x.jpg", "a/x.jpg", "top.jpg"]
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(_jpeg(i, photo_jpeg))
    (root / "cat" / "notes.txt").write_text("not an image")
    return root
