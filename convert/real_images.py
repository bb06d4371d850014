"""Real images for int8 calibration and the real-image checks, decoded and resized exactly
as `cnnbench infer` does (with the model's resize policy), so calibration sees what
inference will see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnbench.convert.errors import ConvertError
from cnnbench.convert.keras_model import ModelFacts
from cnnbench.infer.decode.images import load_item
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.sources.listing import is_folder_like, scan, spread

CALIBRATION_LIMIT = 256  # images; MinMax ranges settle well before this on CNNs
VERIFY_LIMIT = 500


@dataclass(frozen=True)
class RealImages:
    name: str  # for the verification table
    images: np.ndarray  # uint8 [n, h, w, c]
    truth: np.ndarray | None = None  # class index per image (class folders), else None


def load_folder(
    folder: str,
    facts: ModelFacts,
    limit: int,
    option: str,
    policy: ResizePolicy = DEFAULT_POLICY,
    report: Callable[[str], None] = lambda line: None,
) -> tuple[np.ndarray, list[str]]:
    """`limit` images from `folder` (sorted, recursive; a prefix URL or a tar shard too),
    spread evenly over its order, unreadable ones skipped (`report` gets one line: how
    many, and the first with its reason); with their names relative to `folder`. The
    listing is read twice, to count it and then to take those: the first `limit` of a
    folder of class folders were the first few classes."""
    if not is_folder_like(folder):
        raise ConvertError(
            f"{option} {folder}: not a folder; give a folder of images, a prefix URL or a shard"
        )
    images, names, unreadable = [], [], []
    try:
        chosen = set(spread(sum(1 for _ in scan(folder)), limit))
        last = max(chosen, default=-1)
        for k, item in enumerate(scan(folder)):
            if k > last:
                break
            if k not in chosen:
                continue
            try:
                images.append(load_item(item, facts.size, facts.channels, policy=policy))
            except (ValueError, OSError) as e:  # not a reason to refuse the rest: said once
                unreadable.append(f"{item.name}: {first_line(e)}")
                continue
            names.append(item.name)
    except InferError as e:  # a store that cannot be reached
        raise ConvertError(f"{option}: {e}") from e
    if not images:
        raise ConvertError(
            f"{option} {folder}: no readable images found (looked for .jpg, .png, ...)"
        )
    if unreadable:
        report(left_out_line(option, folder, unreadable[0], len(unreadable), len(images)))
    return np.stack(images), names


def left_out_line(option: str, folder: str, first: str, count: int, used: int) -> str:
    """The one line for the `count` files of an image folder that could not be read and
    were left out (`first`: the first one's name and reason), `used` images read."""
    return (
        f"{option} {folder}: {count} of {count + used} files unreadable, left out (the "
        f"first: {first}); {used} images used"
    )


def class_indices(names: list[str], labels: tuple[str, ...]) -> np.ndarray | None:
    """Each image's class index when every image sits in a folder named after one of the
    model's labels (the first folder level names the class, as in `bench --images`)."""
    index = {label: i for i, label in enumerate(labels)}
    classes = [name.split("/")[0] if "/" in name else None for name in names]
    if not all(c in index for c in classes):
        return None
    return np.array([index[c] for c in classes if c is not None], np.int64)


def calibration_images(
    folder: str | None,
    facts: ModelFacts,
    policy: ResizePolicy = DEFAULT_POLICY,
    report: Callable[[str], None] = lambda line: None,
) -> np.ndarray | None:
    if folder is None:
        return None
    return load_folder(folder, facts, CALIBRATION_LIMIT, "--calibration", policy, report)[0]


def verification_images(
    verify_folder: str | None,
    calibration: np.ndarray | None,
    facts: ModelFacts,
    policy: ResizePolicy = DEFAULT_POLICY,
    labels: tuple[str, ...] = (),
    report: Callable[[str], None] = lambda line: None,
) -> RealImages | None:
    """Held-out images when given (labelled when their folders name the model's classes),
    else the calibration images, else None."""
    if verify_folder is not None:
        option = "--verify-images"
        images, names = load_folder(verify_folder, facts, VERIFY_LIMIT, option, policy, report)
        truth = class_indices(names, labels)
        kind = "labelled" if truth is not None else "real"
        return RealImages(f"{kind}, {len(images)} images", images, truth)
    if calibration is not None:
        return RealImages(f"calibration, {len(calibration)} images", calibration)
    return None
