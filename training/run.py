"""A training run: build, fit, evaluate, and write the run folder."""

from __future__ import annotations

import csv
import json
import os
import random
from dataclasses import asdict, dataclass

import numpy as np

from cnnbench import __version__
from cnnbench.training.data import load_dataset, write_image_folder
from cnnbench.training.errors import TrainError
from cnnbench.training.registry import build, get_arch


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    out: str
    data: str = "digits"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    img_size: int | None = None
    channels: int | None = None
    val_split: float = 0.2
    seed: int = 0
    export_val: str | None = None
    verbose: int = 2


@dataclass(frozen=True)
class TrainResult:
    model_path: str
    labels_path: str
    val_accuracy: float
    num_train: int
    num_val: int


def _prepare_out(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise TrainError(f"cannot create run folder {out}: {e.strerror}") from e
    if not os.access(out, os.W_OK):
        raise TrainError(f"run folder {out} is not writable: choose another --out")


def seed_everything(seed: int) -> None:
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def run_training(cfg: TrainConfig) -> TrainResult:
    spec = get_arch(cfg.arch)
    size, channels = cfg.img_size or spec.input_size, cfg.channels or spec.channels
    _prepare_out(cfg.out)
    dataset = load_dataset(cfg.data, size, channels, cfg.val_split, cfg.seed)
    seed_everything(cfg.seed)
    import keras

    model = build(cfg.arch, len(dataset.labels), size, channels)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        dataset.train.images,
        dataset.train.targets,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        validation_data=(dataset.val.images, dataset.val.targets),
        verbose=cfg.verbose,
    )
    model_path = os.path.join(cfg.out, "model.keras")
    labels_path = os.path.join(cfg.out, "labels.txt")
    model.save(model_path)
    with open(labels_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in dataset.labels))
    _write_history(history.history, os.path.join(cfg.out, "history.csv"))
    _write_config(cfg, size, channels, os.path.join(cfg.out, "config.json"))
    if cfg.export_val:
        write_image_folder(dataset.val, dataset.labels, cfg.export_val)
    probs = model.predict(dataset.val.images, batch_size=256, verbose=0)
    accuracy = float(np.mean(probs.argmax(axis=1) == dataset.val.targets))
    return TrainResult(
        model_path, labels_path, accuracy, len(dataset.train.targets), len(dataset.val.targets)
    )


def _write_history(history: dict[str, list[float]], path: str) -> None:
    keys = list(history)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch, values in enumerate(zip(*(history[k] for k in keys), strict=True), start=1):
            writer.writerow([epoch, *(f"{v:.6f}" for v in values)])


def _write_config(cfg: TrainConfig, size: int, channels: int, path: str) -> None:
    import keras
    import tensorflow as tf

    record = asdict(cfg) | {
        "img_size": size,
        "channels": channels,
        "versions": {
            "cnnbench": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
