"""Bad input: one clear line, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run


def test_missing_model_file(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(tmp_path / "nope.onnx"), str(tmp_path), "-o", str(out)])
    assert_one_line_error(code, output, "model file not found")
    assert not out.exists()


def test_model_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model")
    (tmp_path / "imgs").mkdir()
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(bad), str(tmp_path / "imgs"), "-o", str(out)])
    assert_one_line_error(code, output, "cannot load")
    assert not out.exists()


@pytest.mark.slow
def test_folder_with_no_images(digits_run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(digits_run.onnx_path), str(empty), "-o", str(out)])
    assert_one_line_error(code, output, "no images found")
    assert not out.exists()


def test_unknown_architecture(tmp_path: Path) -> None:
    code, output = run(["train", "lenet9", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "unknown architecture 'lenet9'", "mnist_cnn")
    assert not (tmp_path / "run").exists()


def test_convert_not_a_keras_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_text("plain text")
    out = tmp_path / "m.onnx"
    code, output = run(["convert", str(bad), "-o", str(out)])
    assert_one_line_error(code, output, "not a Keras .keras file")
    assert not out.exists()


def test_bench_bad_batch_sizes(tmp_path: Path) -> None:
    code, output = run(["bench", "--model", str(tmp_path / "m.onnx"), "--batch-sizes", "1,0"])
    assert code != 0
    assert "positive integers" in output


def class_folder(root: Path, classes: dict[str, int]) -> Path:
    """A folder with `count` real-photo crops per class (0: the class holds a text file)."""
    from cnnbench.training.samples import write_photo_folder

    for name, count in classes.items():
        if count:
            write_photo_folder(str(root), per_class=count, size=24, photos=(name,))
        else:
            (root / name).mkdir(parents=True)
            (root / name / "readme.txt").write_text("no images")
    return root


def test_train_one_class(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3})
    code, output = run(["train", "mlp", "--data", str(data), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "1 class folder", "at least two")
    assert not (tmp_path / "run").exists()


def test_train_empty_class(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 0})
    code, output = run(["train", "mlp", "--data", str(data), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "flower has no images")
    assert not (tmp_path / "run").exists()


def test_train_missing_data_folder(tmp_path: Path) -> None:
    code, output = run(["train", "mlp", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert_one_line_error(code, output, "data folder not found")


def test_train_image_size_too_small(tmp_path: Path) -> None:
    args = ["train", "alexnet", "--img-size", "32", "--out", str(tmp_path / "run")]
    code, output = run(args)
    assert_one_line_error(code, output, "too small for alexnet", "minimum is 57")
    assert not (tmp_path / "run").exists()


def test_train_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    args = ["train", "mlp", "--img-size", "8", "--epochs", "1", "--out", str(blocker / "run")]
    code, output = run(args)
    assert_one_line_error(code, output, "cannot create run folder", "choose another --out")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--weights", "imagenet"], "--weights is for architectures with a pretrained base"),
        (["--freeze-base"], "mnist_cnn has none"),
    ],
)
def test_train_fine_tuning_needs_a_base(tmp_path: Path, args: list[str], needle: str) -> None:
    code, output = run(["train", "mnist_cnn", *args, "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, needle)
    assert not (tmp_path / "run").exists()


def test_train_val_folder_with_other_classes(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 2, "flower": 2})
    val = class_folder(tmp_path / "val", {"china": 2, "coffee": 2})
    args = ["train", "mlp", "--data", str(data), "--val", str(val), "--out", str(tmp_path / "r")]
    code, output = run(args)
    assert_one_line_error(code, output, "has classes ['china', 'coffee']")


@pytest.mark.slow
def test_train_imagenet_without_internet(tmp_path: Path) -> None:
    """No network here: the download fails and says how to pass a local file instead."""
    from cnnbench.training.weights import IMAGENET_FILES

    home = os.environ.get("KERAS_HOME", Path.home() / ".keras")
    cached = Path(home, "models", Path(IMAGENET_FILES["resnet50"]).name)
    if cached.exists():
        pytest.skip(f"the weights are already in the Keras cache: {cached}")
    data = class_folder(tmp_path / "data", {"china": 2, "flower": 2})
    args = ["train", "resnet50", "--data", str(data), "--img-size", "32", "--weights", "imagenet"]
    code, output = run([*args, "--out", str(tmp_path / "run")])
    assert_one_line_error(
        code, output, "cannot download the ImageNet weights", "--weights /path/to"
    )
    assert not (tmp_path / "run").exists()


def test_train_undecodable_image(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 3})
    (data / "flower" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["train", "mlp", "--data", str(data), "--img-size", "8", "--epochs", "1"]
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "earlier.txt").write_text("a file of an earlier run")
    for out in (tmp_path / "run", tmp_path / "kept"):
        code, output = run([*args, "--out", str(out)])
        assert_one_line_error(code, output, "cannot decode", "broken.jpg", "fix or remove it")
    assert not (tmp_path / "run").exists(), "a failed run leaves no run folder of its own"
    assert os.listdir(tmp_path / "kept") == ["earlier.txt"], "a folder given is left as it was"
