"""What the benchmark scripts (benchmarks/) measure on and how they keep a figure:
the converted models and the best-of-rounds rule. Needs the `train` extra for the models."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from pathlib import Path


def make_models(work: Path, calibration: Path) -> dict[str, Path]:
    """ResNet50 (random weights, caffe preprocessing in-graph) and mnist_cnn as ONNX, and
    mnist_cnn quantized to int8 (calibrated on the photos)."""
    names = ("resnet50", "mnist_cnn", "mnist_cnn_int8")
    models = {name: work / f"{name}.onnx" for name in names}
    if all(p.exists() for p in models.values()):
        return models
    import keras

    from cnnbench.convert.export import ConvertConfig, Precision, Preprocess, export_onnx
    from cnnbench.training.registry import build

    keras.utils.set_random_seed(0)
    keras.applications.ResNet50(weights=None).save(work / "resnet50.keras")
    build("mnist_cnn", 10).save(work / "mnist_cnn.keras")
    configs = {
        "resnet50": ConvertConfig("", "", preprocess=Preprocess.IMAGENET_CAFFE),
        "mnist_cnn": ConvertConfig("", ""),
        # Speed only: an untrained mnist_cnn's near-equal scores make int8's top-1 agreement
        # with fp32 on photos noise (91-97% seen), outside convert's --max-drop bound.
        "mnist_cnn_int8": ConvertConfig(
            "", "", precision=Precision.INT8, calibration=str(calibration), verify=False
        ),
    }
    for name, cfg in configs.items():
        keras_name = name.removesuffix("_int8")
        cfg = dataclasses.replace(cfg, model=str(work / f"{keras_name}.keras"))
        export_onnx(dataclasses.replace(cfg, output=str(models[name])), report=print)
    return models


def rounds_of(
    rounds: int, before: Callable[[], object] | None = None, **runs: Callable[[], float]
) -> dict[str, list[float]]:
    """Each measurement `rounds` times, interleaved (a, b, a, b, ...), every figure kept
    in order, so that round i of one can be set against round i of another. `before`
    runs, untimed, before each measurement (emptying a cache, say)."""
    got: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            if before is not None:
                before()
            got[name].append(run())
    return got


def best_of(rounds: int, **runs: Callable[[], float]) -> dict[str, float]:
    """Each measurement `rounds` times, interleaved, keeping the best: other jobs on a
    shared machine only ever slow a run down."""
    return {name: max(figures) for name, figures in rounds_of(rounds, **runs).items()}


def spread(figures: list[float]) -> dict[str, float]:
    """The median and the range of some figures (ratios of paired rounds, say)."""
    return {
        "median": statistics.median(figures),
        "min": min(figures),
        "max": max(figures),
        "n": len(figures),
    }
