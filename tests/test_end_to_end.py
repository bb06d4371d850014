"""One real path through all four stages: train on digits, convert, infer, bench."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from cnnbench.cli import cli
from cnnbench.infer.decode.images import load_image
from cnnbench.infer.runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME, SPEC_KEY, ModelSpec

pytestmark = pytest.mark.slow


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_matches_keras_and_is_accurate(digits_run, tmp_path: Path) -> None:
    import keras

    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        cli,
        [
            "infer",
            str(digits_run.onnx_path),
            str(digits_run.heldout),
            "-o",
            str(out),
            "--batch-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    files = sorted(p for p in digits_run.heldout.rglob("*.png"))
    assert [r["path"] for r in rows] == [
        p.relative_to(digits_run.heldout).as_posix() for p in files
    ]
    images = np.stack([load_image(str(p), (28, 28), 1) for p in files])
    model = keras.saving.load_model(digits_run.keras_path)
    keras_labels = model.predict(images, verbose=0).argmax(axis=1).astype(str)
    agree = np.mean([r["label"] == k for r, k in zip(rows, keras_labels, strict=True)])
    assert agree >= 0.995
    accuracy = np.mean([r["label"] == p.parent.name for r, p in zip(rows, files, strict=True)])
    assert accuracy >= 0.95
    assert all(r["correct"] == str(int(r["label"] == r["true_label"])) for r in rows)
    assert "accuracy" in result.output


def test_export_follows_the_contract(digits_run) -> None:
    model = onnx.load(digits_run.onnx_path)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == INPUT_NAME
    assert out.name == OUTPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        BATCH_DIM,
        28,
        28,
        1,
    ]
    assert out.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    meta = {p.key: p.value for p in model.metadata_props}
    spec = ModelSpec.from_json(meta[SPEC_KEY])
    assert spec.labels == tuple(str(d) for d in range(10))
    assert spec.input_size == (28, 28)
    assert len(spec.source_sha256) == 64
    initializers = {i.name for i in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    assert initializers <= used, "unused initializers left in the file"
    assert not any(
        n.op_type == "Transpose" and set(n.input) <= initializers for n in model.graph.node
    ), "a weight transpose was not folded"


def test_dynamic_batch_and_opencv_agree(digits_run) -> None:
    session = ort.InferenceSession(str(digits_run.onnx_path), providers=["CPUExecutionProvider"])
    files = sorted(digits_run.heldout.rglob("*.png"))[:20]
    images = np.stack([load_image(str(p), (28, 28), 1) for p in files])
    for n in (1, 3, 20):
        assert session.run(None, {INPUT_NAME: images[:n]})[0].shape == (n, 10)
    probs = session.run(None, {INPUT_NAME: images})[0]
    net = cv2.dnn.readNetFromONNX(str(digits_run.onnx_path))
    net.setInput(images)
    assert np.array_equal(net.forward().argmax(1), probs.argmax(1))


def test_bench_writes_json(digits_run, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--model",
            str(digits_run.onnx_path),
            "--provider",
            "cpu",  # every provider that loads would add CUDA rows on a GPU machine
            "--batch-sizes",
            "1,4",
            "--iterations",
            "40",  # three windows of 40: 120 runs, enough for a p99 (100)
            "--max-seconds",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["machine"]["onnxruntime"] == ort.__version__
    assert [r["batch_size"] for r in doc["results"]] == [1, 4]
    for r in doc["results"]:
        assert r["samples"] == 3 * 40  # three windows of --iterations runs agreed
        assert r["provider"] == "cpu"
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["throughput_ips"] > 0
    assert "p99" in result.output
