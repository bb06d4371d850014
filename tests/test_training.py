"""Training runs: the accuracy the issue asks for, fine-tuning from a weights file in two
stages, augmentation, repeatability, and reloading custom layers in a fresh process."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnbench.training.run import TrainConfig, run_training

pytestmark = pytest.mark.slow


def test_mnist_cnn_reaches_97_percent_on_digits(digits_run) -> None:
    assert digits_run.val_accuracy >= 0.97
    report = (digits_run.run_dir / "report.txt").read_text()
    assert "precision" in report and "recall" in report and "f1-score" in report
    config = json.loads((digits_run.run_dir / "config.json").read_text())
    assert config["seed"] == 0 and config["arch"] == "mnist_cnn"
    assert {"tensorflow", "keras", "cnnbench"} <= set(config["versions"])


def test_mlp_reaches_93_percent_on_digits(tmp_path: Path) -> None:
    """The seed notes' MLP on digits rendered at its default 32x32x3."""
    cfg = TrainConfig(arch="mlp", out=str(tmp_path), epochs=15, learning_rate=3e-4, verbose=0)
    assert run_training(cfg).val_accuracy >= 0.93


def test_simple_vgg_learns_real_photos(tmp_path: Path) -> None:
    """Crops of six different photos, one class per photo: far above chance (1/6)."""
    from cnnbench.training.samples import write_photo_folder

    write_photo_folder(str(tmp_path / "photos"), per_class=24, size=32)
    cfg = TrainConfig(
        arch="simple_vgg",
        out=str(tmp_path / "run"),
        data=str(tmp_path / "photos"),
        epochs=15,  # batch norm's moving statistics need ~10 epochs of 4 steps to settle
        img_size=32,
        verbose=0,
    )
    result = run_training(cfg)
    assert result.num_val == 6 * 5
    assert result.val_accuracy >= 0.5


def test_same_seed_same_run(tmp_path: Path) -> None:
    def history(out: Path) -> str:
        cfg = TrainConfig(arch="mlp", out=str(out), epochs=2, img_size=8, seed=3, verbose=0)
        run_training(cfg)
        return (out / "history.csv").read_text()

    assert history(tmp_path / "a") == history(tmp_path / "b")


def test_augmentation_changes_training_batches_only() -> None:
    import tensorflow as tf

    from cnnbench.training.augment import augment_batches
    from cnnbench.training.samples import load_photo, random_crop

    rng = np.random.default_rng(0)
    images = np.stack([random_crop(load_photo("coffee"), 32, rng) for _ in range(8)])
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(8))).batch(8)
    augmented, targets = next(iter(augment_batches(ds, 3, seed=0)))
    assert augmented.dtype == tf.uint8 and augmented.shape == images.shape
    assert np.array_equal(targets, np.arange(8))
    changed = [not np.array_equal(a, b) for a, b in zip(augmented.numpy(), images, strict=True)]
    assert sum(changed) >= 6


def test_resnet50_fine_tunes_from_a_weights_file(tiny_folder: Path, tmp_path: Path) -> None:
    """--weights FILE --freeze-base --unfreeze-top 2: stage 1 trains the head only, stage 2
    also the base's last conv; the rest of the base keeps the file's weights."""
    import keras

    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    weights = tmp_path / "base.weights.h5"
    base.save_weights(weights)
    cfg = TrainConfig(
        arch="resnet50",
        out=str(tmp_path / "run"),
        data=str(tiny_folder),
        epochs=1,
        batch_size=8,
        img_size=32,
        weights=str(weights),
        freeze_base=True,
        unfreeze_top=2,
        learning_rate=1e-2,
        eager=True,
        verbose=0,
    )
    result = run_training(cfg)
    tuned = keras.saving.load_model(result.model_path).get_layer("base")

    def same(layer: str) -> bool:
        ours, theirs = tuned.get_layer(layer).get_weights(), base.get_layer(layer).get_weights()
        return all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))

    assert same("conv1_conv") and same("conv5_block3_2_conv") and same("conv5_block3_3_bn")
    assert not same("conv5_block3_3_conv")
    with open(tmp_path / "run" / "history.csv", newline="") as f:
        assert [row["stage"] for row in csv.DictReader(f)] == ["1", "2"]


def test_vgg16_weights_file(tmp_path: Path) -> None:
    import keras

    from cnnbench.training.errors import TrainError
    from cnnbench.training.registry import build

    model = build("vgg16", 3, 32)
    path = tmp_path / "vgg16_base.weights.h5"
    model.get_layer("base").save_weights(path)
    again = build("vgg16", 3, 32, weights=str(path))
    for a, b in zip(model.get_layer("base").weights, again.get_layer("base").weights, strict=True):
        assert np.array_equal(a, b)
    other = tmp_path / "resnet.weights.h5"
    keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(other)
    with pytest.raises(TrainError, match=r"cannot load .* into the vgg16 base"):
        build("vgg16", 3, 32, weights=str(other))


def test_custom_layers_reload_in_a_fresh_process(tmp_path: Path) -> None:
    """model.keras with the ResidualUnit loads where nothing was built first (as convert)."""
    from cnnbench.training.registry import build

    path = tmp_path / "resnet34.keras"
    build("resnet34", 2, 32).save(path)
    code = (
        "from cnnbench.convert.export import load_keras\n"
        f"m = load_keras({str(path)!r})\n"
        "print(type(m.get_layer('conv3_block1')).__name__, m.count_params())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == [
        "ResidualUnit",
        str(build("resnet34", 2, 32).count_params()),
    ]


TF_LOG_PROBE = """
import contextlib, sys
from cnnbench.native_logs import filtered_native_stderr
with (filtered_native_stderr() if sys.argv[1] == "quiet" else contextlib.nullcontext()):
    import tensorflow as tf
    tf.constant([1.0]) * 2
    print("kept: ours", file=sys.stderr)
print("after the block", file=sys.stderr)
"""


def test_tensorflow_log_lines_are_filtered_and_ours_kept():
    """TF 2.21 ignores TF_CPP_MIN_LOG_LEVEL for its absl start-up lines: the control run
    shows them (if it stops doing so, native_logs.py can drop them), the filtered run does
    not."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    runs = {
        mode: subprocess.run(
            [sys.executable, "-c", TF_LOG_PROBE, mode], capture_output=True, text=True, env=env
        )
        for mode in ("plain", "quiet")
    }
    absl = re.compile(r"^[IWE]\d{4} ", re.MULTILINE)
    assert absl.search(runs["plain"].stderr), runs["plain"].stderr
    quiet = runs["quiet"]
    assert quiet.returncode == 0, quiet.stderr
    assert not absl.search(quiet.stderr), quiet.stderr
    assert "kept: ours\n" in quiet.stderr and quiet.stderr.endswith("after the block\n")


def test_native_log_filter_keeps_real_errors():
    from cnnbench.native_logs import dropped as _dropped

    assert _dropped(b"I0000 00:00:1795548090.080245    2056 port.cc:153] oneDNN custom ops")
    assert _dropped(b"E0000 00:00:17.1  2056 cuda_platform.cc:52] failed call to cuInit: x")
    assert not _dropped(b"E0000 00:00:17.1  2056 op_kernel.cc:1857] OP_REQUIRES failed")
    assert not _dropped(b"Error: I0000 is not a prefix here")
    ray = b"[2026-11-24 20:29:25,719 E 8736 8736] core_worker.cc:2465: Actor with class name: "
    assert _dropped(ray + b"'X' and ID: '02ae' has constructor arguments in the object store "
                    b"and max_restarts > 0. If the arguments ...")  # fmt: skip
    assert not _dropped(ray.replace(b"Actor with", b"Worker crashed; actor with"))


def test_class_folders_are_read_as_infer_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class folder's files as infer's scan finds them: a symlinked subfolder is
    followed (os.walk passed over it and its images without a word), a tree deeper than
    Python's recursion limit is read (os.walk recursed: a RecursionError), hidden files
    (macOS's `._x.png`) are left out; labels are the class folders, sorted, hidden ones
    left out."""
    from cnnbench.training.data import scan_folder

    monkeypatch.chdir(tmp_path)  # relative names: a deep absolute path would pass PATH_MAX
    for name in ("data/cat/a.png", "data/dog/c.png", "data/dog/._c.png", "elsewhere/b.png"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"an image")
    os.symlink(tmp_path / "elsewhere", "data/cat/more")
    os.mkdir("data/.ipynb_checkpoints")  # Jupyter's, beside the class folders: no class
    depth = sys.getrecursionlimit() + 100
    levels = [os.path.join("data", "dog", *["d"] * level) for level in range(1, depth + 1)]
    for level in levels:  # not os.makedirs: it recurses too
        os.mkdir(level)
    Path(levels[-1], "e.png").write_bytes(b"an image")
    try:
        labels, source, skipped = scan_folder("data")
        assert labels == ("cat", "dog") and skipped == 0
        assert source.paths is not None
        assert sorted(source.paths) == sorted(
            ["data/cat/a.png", "data/cat/more/b.png", "data/dog/c.png", f"{levels[-1]}/e.png"]
        )
    finally:  # bottom up: pytest's own clean-up (shutil.rmtree) recurses too
        os.remove(os.path.join(levels[-1], "e.png"))
        for level in reversed(levels):
            os.rmdir(level)
