"""Datasets: the bundled scikit-learn digits, and image folders with a subfolder per class."""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from cnnbench.training.errors import TrainError

BUNDLED = ("digits",)


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 [n, h, w, c]
    targets: np.ndarray  # int [n]


@dataclass(frozen=True)
class Dataset:
    name: str
    labels: tuple[str, ...]
    train: Split
    val: Split


def load_dataset(data: str, size: int, channels: int, val_split: float, seed: int) -> Dataset:
    if data == "digits":
        images, targets, labels = _digits(size, channels)
    else:
        raise TrainError(
            f"unknown dataset {data!r}: pass --data digits or a folder with one subfolder per class"
        )
    train, val = _split(images, targets, val_split, seed)
    return Dataset(data, labels, train, val)


def _digits(size: int, channels: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0-16), as uint8 images."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise TrainError("the digits data needs scikit-learn: pip install 'cnnbench[train]'") from e
    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in small]
    )[..., None]
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return images, digits.target.astype(np.int64), tuple(str(d) for d in range(10))


def _split(
    images: np.ndarray, targets: np.ndarray, val_split: float, seed: int
) -> tuple[Split, Split]:
    if not 0.0 < val_split < 1.0:
        raise TrainError(f"--val-split must be between 0 and 1, got {val_split}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = max(1, round(len(images) * val_split))
    val, train = order[:n_val], order[n_val:]
    return Split(images[train], targets[train]), Split(images[val], targets[val])


def write_image_folder(split: Split, labels: tuple[str, ...], out_dir: str) -> int:
    """Write a split as PNG files, one subfolder per class; returns the file count."""
    for label in labels:
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
    for i, (image, target) in enumerate(zip(split.images, split.targets, strict=True)):
        path = os.path.join(out_dir, labels[target], f"{i:05d}.png")
        rgb_or_gray = image if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(path, rgb_or_gray):
            raise TrainError(f"cannot write {path}")
    return len(split.images)
