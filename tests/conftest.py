"""Shared fixtures: one real training run on digits, converted once per test session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

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
