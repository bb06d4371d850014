"""A small real-photo image folder for tests and examples: random crops of the photos that
ship with scikit-learn and scikit-image, one class per photo (nothing is downloaded)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from cnnbench.training.errors import TrainError

SKLEARN_PHOTOS = ("china", "flower")
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PHOTOS = SKLEARN_PHOTOS + SKIMAGE_PHOTOS


def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo by name, from sklearn.datasets or skimage.data."""
    try:
        if name in SKLEARN_PHOTOS:
            from sklearn.datasets import load_sample_image

            return load_sample_image(f"{name}.jpg")
        import skimage.data

        return getattr(skimage.data, name)()
    except ImportError as e:
        raise TrainError(f"the sample photos need {e.name}: pip install scikit-image") from e


def square_crop(photo: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A square crop, anywhere, of `low`..`high` of the photo's short side."""
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(low, high))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return photo[y : y + side, x : x + side]


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A square crop of 25-60% of the photo's short side, anywhere, resized to `size`."""
    crop = square_crop(photo, rng, 0.25, 0.6)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def write_jpeg(path: str, rgb: np.ndarray) -> None:
    """An RGB uint8 array as a JPEG at OpenCV's default quality."""
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def write_photo_folder(
    out: str,
    per_class: int = 40,
    size: int = 64,
    photos: Sequence[str] = PHOTOS,
    seed: int = 0,
) -> int:
    """Write `per_class` JPEG crops of each photo under out/<photo>/; returns the count."""
    rng = np.random.default_rng(seed)
    for name in photos:
        photo = load_photo(name)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for i in range(per_class):
            write_jpeg(
                os.path.join(out, name, f"{name}_{i:03d}.jpg"), random_crop(photo, size, rng)
            )
    return per_class * len(photos)
