"""Real photos for calibration and benchmarks, made from images bundled with scikit-learn
and scikit-image (nothing is downloaded): random crops of each photo, written as JPEG."""

from __future__ import annotations

import os
from pathlib import Path

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
    from cnnbench.training.samples import square_crop

    crop = square_crop(photo, rng, 0.4, 1.0)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_sample_photos(folder: str, count: int, seed: int = 0, size: int = 256) -> list[str]:
    """`count` JPEG crops of the bundled photos in `folder`; returns their paths."""
    from cnnbench.training.samples import write_jpeg

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = source_photos()
    paths = []
    for i in range(count):
        crop = random_crop(photos[i % len(photos)], rng)
        path = os.path.join(folder, f"photo_{i:04d}.jpg")
        write_jpeg(path, cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
        paths.append(path)
    return paths


def sized_photo(photo: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """One JPEG of `size` (w, h) from `photo`: a random crop of 60-100% of each side,
    flipped half the time, at a random quality of 80-95."""
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1)), int(w * rng.uniform(0.6, 1))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = photo[y : y + ch, x : x + cw][:, :: rng.choice([1, -1])]
    shrink = size[0] <= cw and size[1] <= ch
    image = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    quality = [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), quality)
    if not ok:
        raise OSError(f"cannot encode a {size[0]}x{size[1]} JPEG")
    return data.tobytes()


def sized_photo_path(folder: Path | str, i: int) -> Path:
    return Path(folder, f"photo_{i:05d}.jpg")


def write_sized_photos(folder: Path, count: int, size: tuple[int, int] = (500, 375)) -> Path:
    """`count` distinct JPEGs of `size` (w, h): random crops, flips and qualities of real
    photos. Sizes above the sources' (at most 640x512) are upscaled: smoother than a real
    camera photo of that size, so they compress better and decode faster than one."""
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photos = source_photos()
    for i in range(count):
        sized_photo_path(folder, i).write_bytes(sized_photo(photos[i % len(photos)], size, rng))
    return folder
