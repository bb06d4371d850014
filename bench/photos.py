"""Real photos for calibration and benchmarks, made from images bundled with scikit-learn
and scikit-image (nothing is downloaded): random crops of each photo, written as JPEG."""

from __future__ import annotations

import os

import cv2
import numpy as np

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "camera")


def source_photos() -> list[np.ndarray]:
    """The bundled photos as uint8 RGB arrays (gray ones as 3 channels)."""
    from cnnbench.training.samples import SKLEARN_PHOTOS, load_photo

    photos = [load_photo(name) for name in (*SKLEARN_PHOTOS, *SKIMAGE_PHOTOS)]
    return [np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p for p in photos]


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square crop of 40-100% of the short side, flipped half the time."""
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = photo[y : y + side, x : x + side]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_sample_photos(folder: str, count: int, seed: int = 0, size: int = 256) -> list[str]:
    """`count` JPEG crops of the bundled photos in `folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = source_photos()
    paths = []
    for i in range(count):
        crop = random_crop(photos[i % len(photos)], rng)
        image = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        path = os.path.join(folder, f"photo_{i:04d}.jpg")
        if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths
