"""Keras models whose output is not probabilities over classes: logits (a head trained
with `from_logits=True`) and a binary classifier's single unit. The export ends in
probabilities, as the contract says: a softmax or sigmoid added, one unit widened to
[1 - p, p]. Before, a logits head was exported as it was and infer wrote logits as
scores (1.1, under a spec saying probabilities), and a single unit was refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, run

from cnnbench.cli import cli
from cnnbench.infer.runtime.contract import INPUT_NAME
from cnnbench.training.data import DataOptions, load_dataset, write_image_folder

pytestmark = pytest.mark.slow

# name: (classes trained, units, last activation, from_logits, what convert says)
HEADS = {
    "logits": ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), 10, None, True, "softmax added to the graph"),
    "sigmoid": ((0, 1), 1, "sigmoid", False, "taken as they are (the last layer's activation"),
    "binary-logit": ((0, 1), 1, None, True, "sigmoid added to the graph"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """Each head trained on scikit-learn's digits (16x16 gray), saved as .keras; with its
    held-out class folders and the Keras model's own output for those images."""
    import keras

    keras.utils.set_random_seed(0)
    data = load_dataset(DataOptions("digits", 16, 1))
    root = tmp_path_factory.mktemp("heads")
    made = {}
    for name, (classes, units, activation, from_logits, _) in HEADS.items():
        train = data.train.take(np.flatnonzero(np.isin(data.train.targets, classes)))
        val = data.val.take(np.flatnonzero(np.isin(data.val.targets, classes)))
        model = keras.Sequential(
            [
                keras.Input((16, 16, 1)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Conv2D(8, 3, activation="relu"),
                keras.layers.MaxPooling2D(),
                keras.layers.Flatten(),
                keras.layers.Dense(units, activation=activation),
            ]
        )
        loss = (
            keras.losses.BinaryCrossentropy(from_logits=from_logits)
            if units == 1
            else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
        model.fit(train.images.astype("float32"), train.targets, epochs=8, verbose=0)
        model.save(root / f"{name}.keras")
        labels = tuple(data.labels[c] for c in classes)
        heldout = root / f"{name}-heldout"
        write_image_folder(zip(val.images, val.targets, strict=True), labels, str(heldout))
        made[name] = (root / f"{name}.keras", heldout, np.asarray(model(val.images / 1.0)))
    return made


def _probabilities(raw: np.ndarray, units: int, from_logits: bool) -> np.ndarray:
    """What the exported model must give for the Keras output `raw`."""
    if units == 1:
        p = 1 / (1 + np.exp(-raw[:, 0])) if from_logits else raw[:, 0]
        return np.stack([1 - p, p], axis=1)
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", list(HEADS))
def test_keras_heads_export_probabilities(name: str, trained, tmp_path: Path) -> None:
    classes, units, _, from_logits, said = HEADS[name]
    keras_file, heldout, raw = trained[name]
    out = tmp_path / f"{name}.onnx"
    result = CliRunner().invoke(cli, ["convert", str(keras_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"scores: {said}" in result.output
    if units == 1:
        assert "one score per image: two classes, [1 - p, p]" in result.output

    # the graph's probabilities are the Keras output's, as infer would score it
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.stack([_read_gray(p) for p in sorted(heldout.glob("*/*.png"), key=_order)])
    (probs,) = session.run(None, {INPUT_NAME: images})
    assert probs.shape == (len(images), len(classes))
    np.testing.assert_allclose(probs, _probabilities(raw, units, from_logits), atol=1e-5)

    # and infer writes probabilities, with the accuracy of a trained model
    rows = tmp_path / "p.csv"
    done = CliRunner().invoke(cli, ["infer", str(out), str(heldout), "-o", str(rows)])
    assert done.exit_code == 0, done.output
    scores = [float(r["score"]) for r in csv.DictReader(rows.open())]
    assert len(scores) == len(images) and all(0 <= s <= 1 for s in scores)
    accuracy = float(done.output.split("accuracy ")[1].split("%")[0]) / 100
    assert accuracy >= (0.97 if units == 1 else 0.85), done.output


def test_scores_says_what_a_keras_output_is(trained, tmp_path: Path) -> None:
    """--scores overrides the guess for a Keras model too (it was ONNX-only): `raw`
    keeps the output as it is, `softmax` adds the softmax to a model that has one."""
    keras_file = trained["logits"][0]
    out = tmp_path / "m.onnx"
    args = ["convert", str(keras_file), "-o", str(out), "--scores", "raw", "--no-verify"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "scores: taken as they are (asked with --scores)" in result.output


def test_a_single_unit_takes_two_labels(trained, tmp_path: Path) -> None:
    """The unit's one label (the class it scores) is not enough: two, the other first."""
    (tmp_path / "one.txt").write_text("one\n")
    args = ["convert", str(trained["sigmoid"][0]), "-o", str(tmp_path / "m.onnx")]
    code, output = run([*args, "--labels", str(tmp_path / "one.txt")])
    assert_one_line_error(code, output, "has 1 labels but the model outputs 2 classes")
    assert "single unit's score is the second class's: name the other class first" in output


def _read_gray(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[..., None]


def _order(path: Path) -> int:
    """write_image_folder numbers the images in the order given, across class folders."""
    return int(path.stem)
