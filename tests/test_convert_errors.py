"""`cnnbench convert` on bad input: one clear line, non-zero exit, nothing written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from helpers import assert_one_line_error, run


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Keras files: an image classifier, a two-input model, a vector-input model."""
    import keras

    root = tmp_path_factory.mktemp("bad_models")
    layers = keras.layers
    image = layers.Input((8, 8, 3), name="image")
    x = layers.GlobalAveragePooling2D()(image)
    keras.Model(image, layers.Dense(3, activation="softmax")(x)).save(root / "image.keras")
    other = layers.Input((8, 8, 3), name="other")
    y = layers.GlobalAveragePooling2D()(layers.Concatenate()([image, other]))
    two = keras.Model([image, other], layers.Dense(3, activation="softmax")(y))
    two.save(root / "two_inputs.keras")
    vector = layers.Input((10,), name="features")
    keras.Model(vector, layers.Dense(3, activation="softmax")(vector)).save(root / "vector.keras")
    return root


def assert_refused(args: list[str], out: Path, *needles: str) -> None:
    code, output = run(["convert", *args, "-o", str(out)])
    assert_one_line_error(code, output, *needles)
    assert not out.exists()
    assert not list(out.parent.glob(".cnnbench-*")), "staging files left behind"


def test_text_file_is_not_a_keras_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_text("plain text")
    assert_refused([str(bad)], tmp_path / "m.onnx", "not a Keras .keras file")


def test_zip_that_is_not_a_keras_archive(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("notes.txt", "a zip, but no model in it")
    assert_refused([str(bad)], tmp_path / "m.onnx", "not a Keras .keras file")


def test_two_input_model(bad_models: Path, tmp_path: Path) -> None:
    model = str(bad_models / "two_inputs.keras")
    assert_refused([model], tmp_path / "m.onnx", "model has 2 inputs", "one image input")


def test_non_image_input_shape(bad_models: Path, tmp_path: Path) -> None:
    model = str(bad_models / "vector.keras")
    assert_refused([model], tmp_path / "m.onnx", "input shape is (None, 10)", "height, width")


def test_label_count_mismatch(bad_models: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    args = [str(bad_models / "image.keras"), "--labels", str(labels)]
    assert_refused(args, tmp_path / "m.onnx", "has 2 labels", "outputs 3 classes")


def test_output_folder_missing(bad_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "nope" / "m.onnx"
    assert_refused([str(bad_models / "image.keras")], out, "cannot write", "not writable")


def test_output_is_a_folder(bad_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "dir.onnx"
    out.mkdir()
    code, output = run(["convert", str(bad_models / "image.keras"), "-o", str(out)])
    assert_one_line_error(code, output, "it is a folder")
    assert out.is_dir() and not any(out.iterdir())


def test_output_is_the_model_itself(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_model.read_bytes())
    before = model.read_bytes()
    again = str(tmp_path / "." / "m.onnx")  # another spelling of the same file
    code, output = run(["convert", str(model), "-o", again, "--precision", "fp16"])
    assert_one_line_error(code, output, "is MODEL itself")
    assert model.read_bytes() == before


def test_int8_needs_calibration(bad_models: Path, tmp_path: Path) -> None:
    args = [str(bad_models / "image.keras"), "--precision", "int8"]
    assert_refused(args, tmp_path / "m.onnx", "--precision int8 needs --calibration DIR")


def test_calibration_folder_without_images(bad_models: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    args = [str(bad_models / "image.keras"), "--precision", "int8", "--calibration", str(empty)]
    assert_refused(args, tmp_path / "m.onnx", "no readable images found")


@pytest.mark.slow
def test_preprocess_on_a_uint8_model(digits_run, tmp_path: Path) -> None:
    args = [str(digits_run.keras_path), "--preprocess", "scale"]
    assert_refused(args, tmp_path / "m.onnx", "would scale twice")


def test_single_weight_over_2gb_is_refused() -> None:
    import numpy as np
    import onnx

    from cnnbench.convert.errors import ConvertError
    from cnnbench.convert.graph import inputs_to_initializers

    huge = np.broadcast_to(np.float32(0), (2**29 + 1,))  # 2 GB by shape, no memory used
    with pytest.raises(ConvertError, match=r"weight w holds 2\.1 GB"):
        inputs_to_initializers(onnx.ModelProto(), {"w": huge})
