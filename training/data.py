"""Datasets: the bundled scikit-learn digits, and image folders with a subfolder per class,
both as tf.data pipelines of (uint8 image, class index) that cache and prefetch.

Image files are read, decoded and resized by `cnnbench.infer`'s own function with the
run's resize policy, so a model is served the pixels it was trained on; the policy is
written into the saved model (`write_model_policy`) and `convert` puts it in the spec."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from cnnbench.infer.decode.images import load_image
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.sources.items import printable
from cnnbench.infer.sources.listing import folder_files, is_dir_entry
from cnnbench.memory import memory_limit
from cnnbench.training.errors import TrainError

log = logging.getLogger("cnnbench.training")

BUNDLED = ("digits",)
# What infer's decoder (OpenCV) reads; anything else in a class folder is skipped and counted.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The member of a saved .keras archive holding the resize policy (Keras ignores it).
POLICY_MEMBER = "cnnbench.json"


@dataclass(frozen=True)
class Source:
    """Where a split's images come from: files to decode, or arrays already in memory."""

    targets: np.ndarray  # int [n]
    paths: tuple[str, ...] = ()
    images: np.ndarray | None = None  # uint8 [n, h, w, c]

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, index: np.ndarray) -> Source:
        paths = tuple(self.paths[i] for i in index) if self.paths else ()
        images = None if self.images is None else self.images[index]
        return Source(self.targets[index], paths, images)


@dataclass(frozen=True)
class Dataset:
    name: str
    labels: tuple[str, ...]
    train: Source
    val: Source
    skipped: int = 0  # non-image files left out


@dataclass(frozen=True)
class DataOptions:
    data: str
    size: int
    channels: int
    val_split: float = 0.2
    val: str | None = None
    seed: int = 0


def load_dataset(opts: DataOptions) -> Dataset:
    if opts.data == "digits":
        if opts.val:
            raise TrainError("--val is for image folders; digits is split with --val-split")
        source, labels, skipped = _digits(opts.size, opts.channels), DIGIT_LABELS, 0
    elif os.path.isdir(opts.data):
        labels, source, skipped = scan_folder(opts.data)
    else:
        raise TrainError(
            f"data folder not found: {opts.data}; pass --data digits or a folder with one "
            "subfolder per class"
        )
    if opts.val:
        val_labels, val, val_skipped = scan_folder(opts.val)
        if val_labels != labels:
            raise TrainError(
                f"--val {opts.val} has classes {list(val_labels)}, but --data has "
                f"{list(labels)}: give both the same class subfolders"
            )
        train, skipped = source, skipped + val_skipped
    else:
        train, val = split(source, opts.val_split, opts.seed)
    if skipped:
        log.warning("skipped %d non-image file(s) (not %s)", skipped, ", ".join(IMAGE_EXTENSIONS))
    if opts.data != "digits":  # digits is checked before it is resized (`_digits`)
        check_decoded_fits(len(train) + len(val), opts.size, opts.channels, FOLDER_COPIES)
    return Dataset(opts.data, labels, train, val, skipped)


# How many copies of the decoded images training holds: digits as a numpy array, the
# tensor tf.data makes of it and tf.data's in-memory cache; a folder's images in the cache
DIGITS_COPIES, FOLDER_COPIES = 3, 1


def check_decoded_fits(count: int, size: int, channels: int, copies: int) -> None:
    """One line where the decoded images alone would take more memory than the process
    may use (the machine's, or its container's): the kernel would kill the run when
    they are made (digits) or cached, during the first epoch (a folder)."""
    need = copies * count * size * size * channels
    have = memory_limit()
    if need > have.bytes:
        held = f" ({copies} copies)" if copies > 1 else ""
        raise TrainError(
            f"{count:,} images of {size}x{size}x{channels} take {need / 1e9:,.1f} GB decoded"
            f"{held}, more than {have} (training holds them in memory); give a smaller "
            "--img-size, or fewer images"
        )


DIGIT_LABELS = tuple(str(d) for d in range(10))


def _digits(size: int, channels: int) -> Source:
    """scikit-learn's 1,797 8x8 handwritten digits (values 0-16), as uint8 images."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise TrainError("the digits data needs scikit-learn: pip install 'cnnbench[train]'") from e
    digits = load_digits()
    check_decoded_fits(len(digits.images), size, channels, DIGITS_COPIES)
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack(
        [cv2.resize(im, (size, size), interpolation=cv2.INTER_CUBIC) for im in small]
    )[..., None]
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    return Source(digits.target.astype(np.int64), images=images)


def scan_folder(root: str) -> tuple[tuple[str, ...], Source, int]:
    """(labels, files, skipped count) of a folder with one subfolder per class, sorted."""
    if not os.path.isdir(root):
        raise TrainError(f"data folder not found: {root}")
    # hidden folders are no classes (Jupyter's .ipynb_checkpoints beside the class folders)
    labels = tuple(
        sorted(e.name for e in os.scandir(root) if is_dir_entry(e) and not e.name.startswith("."))
    )
    if len(labels) < 2:
        raise TrainError(
            f"{root} has {len(labels)} class folder(s); training needs at least two "
            "subfolders, one per class, each holding that class's images"
        )
    paths, targets, skipped = [], [], 0
    for index, label in enumerate(labels):
        files = sorted(_files(os.path.join(root, label)))
        images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise TrainError(
                f"class folder {os.path.join(root, label)} has no images "
                f"({', '.join(IMAGE_EXTENSIONS)}): add some or remove the folder"
            )
        skipped += len(files) - len(images)
        paths += images
        targets += [index] * len(images)
    return labels, Source(np.asarray(targets, np.int64), tuple(paths)), skipped


def _files(folder: str) -> Iterable[str]:
    """The files under a class folder as infer's scan finds them: symlinked subfolders
    followed (os.walk passed over them, and their images, without a word), a tree of any
    depth (os.walk recursed); a subfolder that cannot be listed is one line. Hidden files
    (macOS's `._x.jpg`) are left out."""
    for item in folder_files(folder):
        if item.error is not None:
            raise TrainError(f"{printable(item.path)}: {item.error}; fix it or remove it")
        if not os.path.basename(item.path).startswith("."):
            yield item.path


def split(source: Source, val_split: float, seed: int) -> tuple[Source, Source]:
    """A stratified split: `val_split` of every class (at least one image when it has two)."""
    if not 0.0 < val_split < 1.0:
        raise TrainError(f"--val-split must be between 0 and 1, got {val_split}")
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for target in np.unique(source.targets):
        members = rng.permutation(np.flatnonzero(source.targets == target))
        n_val = min(len(members) - 1, max(1, round(len(members) * val_split)))
        val += members[:n_val].tolist()
    is_val = np.zeros(len(source), bool)
    is_val[val] = True
    return source.take(np.flatnonzero(~is_val)), source.take(np.flatnonzero(is_val))


def read_image(path: str, size: int, channels: int, policy: ResizePolicy) -> np.ndarray:
    """One training image exactly as `cnnbench infer` feeds it; ValueError names the file."""
    try:
        return load_image(path, (size, size), channels, policy=policy)
    except (OSError, ValueError, cv2.error) as e:
        raise ValueError(f"cannot decode {printable(path)} as an image ({e})") from e


def to_tf(source: Source, size: int, channels: int, policy: ResizePolicy = DEFAULT_POLICY) -> Any:
    """An unbatched, cached tf.data.Dataset of (uint8 [size, size, channels], target)."""
    import tensorflow as tf

    if source.images is not None:
        return tf.data.Dataset.from_tensor_slices((source.images, source.targets)).cache()

    def read(path: bytes) -> np.ndarray:
        return read_image(os.fsdecode(path), size, channels, policy)

    def load(path: Any, target: Any) -> tuple[Any, Any]:
        image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
        image.set_shape((size, size, channels))
        return image, target

    # bytes: a file name need not be UTF-8, which a string tensor must be
    paths = [os.fsencode(p) for p in source.paths]
    ds = tf.data.Dataset.from_tensor_slices((paths, source.targets))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).cache()


@contextmanager
def decode_errors(dataset: Dataset) -> Iterator[None]:
    """Turn a decode failure inside a pipeline into an error naming the file."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        paths = dataset.train.paths + dataset.val.paths
        why = next((why for p in paths if (why := _problem(p))), None)
        if why is None:
            raise
        raise TrainError(f"{why}: fix or remove it") from e


def _problem(path: str) -> str | None:
    """Why the image at `path` cannot be read (naming it), or None."""
    try:
        read_image(path, 8, 3, DEFAULT_POLICY)
    except ValueError as e:
        return str(e)
    return None


def write_model_policy(model_path: str, policy: ResizePolicy) -> None:
    """Store the resize policy inside the saved .keras archive, for `convert`."""
    with zipfile.ZipFile(model_path, "a") as archive:
        archive.writestr(POLICY_MEMBER, json.dumps({"resize": policy.to_dict()}))


def read_model_policy(model_path: str) -> ResizePolicy | None:
    """The resize policy `train` stored in a .keras archive; None when there is none."""
    try:
        with zipfile.ZipFile(model_path) as archive:
            if POLICY_MEMBER not in archive.namelist():
                return None
            data = json.loads(archive.read(POLICY_MEMBER))
        return ResizePolicy.from_dict(data["resize"])
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as e:
        raise TrainError(
            f"{model_path}: unreadable {POLICY_MEMBER} ({e}): retrain or remove it"
        ) from e


def write_image_folder(images: Iterable[tuple[Any, int]], labels: tuple[str, ...], out: str) -> int:
    """Write (image, target) pairs as PNG files, one subfolder per class; returns the count."""
    for label in labels:
        os.makedirs(os.path.join(out, label), exist_ok=True)
    count = 0
    for count, (image, target) in enumerate(images, start=1):
        path = os.path.join(out, labels[int(target)], f"{count - 1:05d}.png")
        image = np.asarray(image)
        rgb_or_gray = image if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(path, rgb_or_gray):
            raise TrainError(f"cannot write {path}")
    return count
