"""Every architecture of the registry: parameter counts, one training step on a tiny real
folder, export and inference with parity, and the fine-tuning path of the pretrained bases."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cnnbench.training.registry import ARCHITECTURES, build

pytestmark = pytest.mark.slow

RUN_FILES = ("model.keras", "labels.txt", "history.csv", "history.png", "report.txt",
             "confusion.png", "config.json")  # fmt: skip


def tiny_size(name: str) -> int:
    """The smallest input the architecture takes (and at least 16): quick, and it proves
    that the registry's min_size builds and trains."""
    return max(ARCHITECTURES[name].min_size, 16)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_parameter_count_at_1000_classes(name: str) -> None:
    model = build(name, 1000)
    assert model.count_params() == ARCHITECTURES[name].reference_params
    spec = ARCHITECTURES[name]
    assert tuple(model.inputs[0].shape) == (None, spec.input_size, spec.input_size, spec.channels)
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.outputs[0].shape) == (None, 1000)


def test_keras_applications_counts() -> None:
    """The issue's figures: keras.applications.VGG16 and ResNet50 at 1000 classes."""
    assert ARCHITECTURES["vgg16"].reference_params == 138_357_544
    assert ARCHITECTURES["resnet50"].reference_params == 25_636_712


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_layer_names_are_deterministic(name: str) -> None:
    size = tiny_size(name)
    first, second = build(name, 3, size), build(name, 3, size)
    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_trains_converts_and_infers_with_parity(
    name: str, tiny_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One training step on a tiny photo folder, then convert and infer through the
    library calls the commands use; the CSV agrees with Keras on every image."""
    import keras

    from cnnbench.convert.export import ConvertConfig, export_onnx
    from cnnbench.infer.decode.images import load_image
    from cnnbench.infer.engines.job import InferConfig
    from cnnbench.infer.engines.local import run_infer
    from cnnbench.training.run import TrainConfig, run_training

    size = tiny_size(name)
    result = run_training(
        TrainConfig(
            arch=name,
            out=str(tmp_path / "run"),
            data=str(tiny_folder),
            epochs=1,
            batch_size=8,
            img_size=size,
            val_split=0.25,
            val=str(tiny_folder) if name == "mnist_cnn" else None,  # --val DIR once
            augment=name == "simple_vgg",
            eager=True,  # tracing the train step of ResNet50 alone takes ~25 s here
            verbose=0,
        )
    )
    counts = (8, 8, 2) if name == "mnist_cnn" else (6, 2, 1)
    assert (result.num_train, result.num_val, result.skipped) == counts
    assert f"skipped {counts[2]} non-image file(s)" in caplog.text
    assert all((tmp_path / "run" / f).is_file() for f in RUN_FILES)
    assert len(read_rows(tmp_path / "run" / "history.csv")) == 1
    onnx_path = tmp_path / "model.onnx"
    export_onnx(ConvertConfig(model=result.model_path, output=str(onnx_path)))
    summary = run_infer(
        InferConfig(
            model=str(onnx_path),
            inputs=(str(tiny_folder),),
            output=str(tmp_path / "pred.csv"),
            progress=False,
        )
    )
    assert (summary.images, summary.errors) == (8, 0)
    rows = read_rows(tmp_path / "pred.csv")
    channels = ARCHITECTURES[name].channels
    images = np.stack(
        [load_image(str(tiny_folder / r["path"]), (size, size), channels) for r in rows]
    )
    probs = np.asarray(keras.saving.load_model(result.model_path)(images, training=False))
    labels = (tiny_folder / "china").name, (tiny_folder / "flower").name
    assert [r["label"] for r in rows] == [labels[i] for i in probs.argmax(axis=1)]
    assert np.allclose([float(r["score"]) for r in rows], probs.max(axis=1), atol=1e-4)
