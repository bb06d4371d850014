"""A training run: data, build, fit (and a second fine-tuning stage), evaluate, and write
the run folder."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnbench import __version__
from cnnbench.files import named_write_error, unwritable_folder
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.signals import SignalStop, StopOnSignal
from cnnbench.training import report
from cnnbench.training.data import (
    DataOptions,
    Dataset,
    decode_errors,
    load_dataset,
    to_tf,
    write_image_folder,
    write_model_policy,
)
from cnnbench.training.errors import TrainError
from cnnbench.training.registry import ARCHITECTURES, ArchSpec, build, check_size, get_arch

BASE = "base"  # the nested model that --weights, --freeze-base and --unfreeze-top act on
FINE_TUNE_LR_FACTOR = 0.1  # the second stage's learning rate, relative to --lr


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
    val: str | None = None
    seed: int = 0
    export_val: str | None = None
    augment: bool = False
    weights: str | None = None  # "imagenet", a file, or None
    freeze_base: bool = False
    unfreeze_top: int = 0  # > 0: a second stage with the base's top N weight layers trainable
    eager: bool = False  # no tf.function tracing: quicker for a handful of steps
    verbose: int = 2
    resize: ResizePolicy = DEFAULT_POLICY  # how image files become the input size (as infer)


@dataclass(frozen=True)
class TrainResult:
    model_path: str
    labels_path: str
    val_accuracy: float
    num_train: int
    num_val: int
    skipped: int = 0


def check_options(cfg: TrainConfig, spec: ArchSpec) -> None:
    if (cfg.freeze_base or cfg.unfreeze_top) and not spec.weights:
        with_base = ", ".join(n for n, s in ARCHITECTURES.items() if s.weights)
        raise TrainError(
            f"--freeze-base and --unfreeze-top act on a pretrained base; {cfg.arch} has none "
            f"(use one of: {with_base})"
        )
    if cfg.unfreeze_top and not cfg.freeze_base:
        raise TrainError("--unfreeze-top N is a second stage after --freeze-base: add it")
    if cfg.unfreeze_top < 0:
        raise TrainError(f"--unfreeze-top must be positive, got {cfg.unfreeze_top}")
    written = (("--out", cfg.out, "the run's plots (confusion.png, history.png)"),
               ("--export-val", cfg.export_val, "the validation images it writes"))  # fmt: skip
    for option, folder in (("--data", cfg.data), ("--val", cfg.val)):
        if not folder or not os.path.isdir(folder):
            continue
        root = os.path.realpath(folder)
        for name, path, what in written:
            if path and (os.path.realpath(path) + os.sep).startswith(root + os.sep):
                raise TrainError(
                    f"{name} {path} is inside {option} {folder}: {what} would be read as "
                    f"images by the next training or infer over it; choose another {name}"
                )


def _prepare_out(out: str) -> bool:
    """Create the run folder; True when this run created it."""
    created = not os.path.exists(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise TrainError(
            f"cannot create run folder {out}: {e.strerror}; choose another --out"
        ) from e
    if why := unwritable_folder(out):
        raise TrainError(f"cannot use run folder {out}: {why}; choose another --out")
    return created


def seed_everything(seed: int) -> None:
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def pipelines(dataset: Dataset, size: int, channels: int, cfg: TrainConfig) -> tuple[Any, Any]:
    """Batched, prefetched tf.data pipelines: training (shuffled, augmented), validation."""
    import tensorflow as tf

    from cnnbench.training.augment import augment_batches

    train = to_tf(dataset.train, size, channels, cfg.resize).shuffle(
        len(dataset.train), seed=cfg.seed, reshuffle_each_iteration=True
    )
    train = train.batch(cfg.batch_size)
    if cfg.augment:
        train = augment_batches(train, channels, cfg.seed)
    val = to_tf(dataset.val, size, channels, cfg.resize).batch(cfg.batch_size)
    return train.prefetch(tf.data.AUTOTUNE), val.prefetch(tf.data.AUTOTUNE)


def fit(model: Any, data: tuple[Any, Any], cfg: TrainConfig, learning_rate: float) -> dict:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=cfg.eager,
    )
    train, val = data

    class StopAfterBatch(keras.callbacks.Callback):
        """Ctrl-C or SIGTERM ends the training after the batch in flight: a
        KeyboardInterrupt raised inside TensorFlow's own code came out as another error
        (`ValueError: None values not supported`), a traceback."""

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if stop.requested:
                self.model.stop_training = True

    with StopOnSignal() as stop:
        history = model.fit(
            train,
            validation_data=val,
            epochs=cfg.epochs,
            verbose=cfg.verbose,
            shuffle=False,
            callbacks=[keras.callbacks.TerminateOnNaN(), StopAfterBatch()],
        )
    if stop.requested:
        raise SignalStop(stop.signum)
    losses = np.asarray(history.history.get("loss", []), dtype=float)
    if model.stop_training or not np.all(np.isfinite(losses)):  # TerminateOnNaN stopped it
        bad = np.flatnonzero(~np.isfinite(losses))
        epoch = bad[0] + 1 if len(bad) else len(losses) + 1
        raise TrainError(
            f"training diverged: the loss became NaN or infinite in epoch {epoch} (learning "
            f"rate {learning_rate:g}); nothing was written: lower --lr"
        )
    return history.history


def unfreeze_top(base: Any, n: int) -> None:
    """Make the top `n` weight layers of `base` trainable; BatchNormalization stays frozen."""
    base.trainable = True
    weighted = [layer for layer in base.layers if layer.weights]
    top = {id(layer) for layer in weighted[-n:]}
    for layer in base.layers:
        is_bn = type(layer).__name__ == "BatchNormalization"
        layer.trainable = id(layer) in top and not is_bn


def run_training(cfg: TrainConfig) -> TrainResult:
    spec = get_arch(cfg.arch)
    check_options(cfg, spec)
    size, channels = cfg.img_size or spec.input_size, cfg.channels or spec.channels
    check_size(spec, size)
    dataset = load_dataset(DataOptions(cfg.data, size, channels, cfg.val_split, cfg.val, cfg.seed))
    seed_everything(cfg.seed)
    model = build(cfg.arch, len(dataset.labels), size, channels, cfg.weights)
    created = _prepare_out(cfg.out)  # after the checks and the weights
    try:
        data = pipelines(dataset, size, channels, cfg)
        if cfg.freeze_base:
            model.get_layer(BASE).trainable = False
        with decode_errors(dataset):
            histories = [fit(model, data, cfg, cfg.learning_rate)]
            if cfg.unfreeze_top:
                unfreeze_top(model.get_layer(BASE), cfg.unfreeze_top)
                histories.append(fit(model, data, cfg, cfg.learning_rate * FINE_TUNE_LR_FACTOR))
        try:
            return _write_run(cfg, model, dataset, data[1], histories)
        except OSError as e:  # a full disk: named after the run folder (one line)
            raise named_write_error(e, cfg.out) from e
    except BaseException:  # a failed or interrupted run leaves no run folder of its own
        if created:
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise


def _write_run(
    cfg: TrainConfig, model: Any, dataset: Dataset, val: Any, histories: list[dict]
) -> TrainResult:
    out = cfg.out
    model_path, labels_path = os.path.join(out, "model.keras"), os.path.join(out, "labels.txt")
    model.save(model_path)
    write_model_policy(model_path, cfg.resize)
    with open(labels_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{label}\n" for label in dataset.labels))
    rows = report.write_history(histories, os.path.join(out, report.HISTORY_FILE))
    report.plot_history(rows, os.path.join(out, report.HISTORY_PLOT))
    targets = dataset.val.targets
    predicted = model.predict(val, verbose=0).argmax(axis=1)
    accuracy = report.write_class_report(
        targets, predicted, dataset.labels, os.path.join(out, report.REPORT_FILE)
    )
    report.plot_confusion(
        targets, predicted, dataset.labels, os.path.join(out, report.CONFUSION_PLOT)
    )
    report.write_config(
        _config_record(cfg, model, dataset, accuracy), os.path.join(out, report.CONFIG_FILE)
    )
    if cfg.export_val:
        size, channels = model.inputs[0].shape[1], model.inputs[0].shape[3]
        images = to_tf(dataset.val, size, channels, cfg.resize).as_numpy_iterator()
        write_image_folder(images, dataset.labels, cfg.export_val)
    return TrainResult(
        model_path, labels_path, accuracy, len(dataset.train), len(dataset.val), dataset.skipped
    )


def _config_record(cfg: TrainConfig, model: Any, dataset: Dataset, accuracy: float) -> dict:
    import keras
    import tensorflow as tf

    _, size, _, channels = model.inputs[0].shape
    return asdict(cfg) | {
        "img_size": size,
        "channels": channels,
        "labels": list(dataset.labels),
        "num_train": len(dataset.train),
        "num_val": len(dataset.val),
        "skipped_files": dataset.skipped,
        "params": model.count_params(),
        "val_accuracy": accuracy,
        "versions": {
            "cnnbench": __version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }
