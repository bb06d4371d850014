"""The resize policy: how a decoded image becomes the model's HxW, as the model expects.

Two modes, as timm names them: `center` scales the image so that it covers the input size
divided by `crop_pct` (the shorter side to size/crop_pct for a square input, 224/0.875 =
256 for ImageNet), then cuts the centre; `squash` scales both sides to size/crop_pct,
aspect ratio not kept, then cuts the centre (with crop_pct 1: the whole image squashed to
the size). Sizes and offsets follow torchvision's `Resize(int)` and `CenterCrop`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class CropMode(enum.StrEnum):
    CENTER = "center"  # keep the aspect ratio, cover size/crop_pct, cut the centre
    SQUASH = "squash"  # both sides to size/crop_pct, then cut the centre


class Interpolation(enum.StrEnum):
    AREA = "area"  # OpenCV INTER_AREA when shrinking both sides, bilinear otherwise
    BILINEAR = "bilinear"  # OpenCV INTER_LINEAR
    BICUBIC = "bicubic"  # OpenCV INTER_CUBIC


_CV2_FLAGS = {Interpolation.BILINEAR: cv2.INTER_LINEAR, Interpolation.BICUBIC: cv2.INTER_CUBIC}


@dataclass(frozen=True)
class ResizePolicy:
    """How to turn a decoded image into the model's input size. The default is what
    cnnbench always did: the whole image squashed, area interpolation."""

    crop_mode: CropMode = CropMode.SQUASH
    crop_pct: float = 1.0
    interpolation: Interpolation = Interpolation.AREA

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_mode", CropMode(self.crop_mode))
        object.__setattr__(self, "interpolation", Interpolation(self.interpolation))
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    def overridden(
        self,
        crop_mode: CropMode | str | None = None,
        crop_pct: float | None = None,
        interpolation: Interpolation | str | None = None,
    ) -> ResizePolicy:
        """This policy with the parts given (not None) replaced: how command-line options
        override a preset's or a spec's policy. A crop_pct outside (0, 1] is a ValueError."""
        return ResizePolicy(
            CropMode(crop_mode) if crop_mode else self.crop_mode,
            self.crop_pct if crop_pct is None else crop_pct,
            Interpolation(interpolation) if interpolation else self.interpolation,
        )

    def scale_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) the image covers before the centre crop (timm: floor(size/crop_pct))."""
        return (math.floor(size[0] / self.crop_pct), math.floor(size[1] / self.crop_pct))

    def resized_shape(self, image_hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) the whole image is resized to, before cutting `size` from its centre."""
        th, tw = self.scale_size(size)
        if self.crop_mode is CropMode.SQUASH:
            return th, tw
        h, w = image_hw
        if th * w >= tw * h:  # the height is the binding side
            return th, max(tw, int(th * w / h))
        return max(th, int(tw * h / w)), tw

    def decode_target(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The size a reduced (DCT-scaled) JPEG decode must still reach: the pre-crop size.
        None (decode at full size) for bilinear and bicubic, so that the pixels are exactly
        OpenCV's decode then resize, as a model's own evaluation pipeline states it; `area`
        averages anyway, and a DCT reduction is a faster average."""
        if self.interpolation is not Interpolation.AREA:
            return None
        return self.scale_size(size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "crop_mode": self.crop_mode.value,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResizePolicy:
        """From the spec's keys; a missing key keeps the default. Raises ValueError naming
        the key on a bad value."""
        default = cls()
        mode = data.get("crop_mode", default.crop_mode.value)
        interp = data.get("interpolation", default.interpolation.value)
        pct = data.get("crop_pct", default.crop_pct)
        if not isinstance(mode, str) or mode.lower() not in list(CropMode):
            raise ValueError(f"key 'crop_mode' must be one of {', '.join(CropMode)}, got {mode!r}")
        if not isinstance(interp, str) or interp.lower() not in list(Interpolation):
            raise ValueError(
                f"key 'interpolation' must be one of {', '.join(Interpolation)}, got {interp!r}"
            )
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 1:
            raise ValueError(f"key 'crop_pct' must be a number in (0, 1], got {pct!r}")
        return cls(CropMode(mode.lower()), float(pct), Interpolation(interp.lower()))


DEFAULT_POLICY = ResizePolicy()


def _flag(interpolation: Interpolation, src: tuple[int, int], dst: tuple[int, int]) -> int:
    if interpolation is Interpolation.AREA:
        shrinking = src[0] > dst[0] and src[1] > dst[1]
        return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return _CV2_FLAGS[interpolation]


def resize_to(image: np.ndarray, out: np.ndarray, policy: ResizePolicy = DEFAULT_POLICY) -> None:
    """Resize HxWxC `image` into the preallocated uint8 `out` (h, w, C) by `policy`."""
    size = out.shape[:2]
    rh, rw = policy.resized_shape(image.shape[:2], size)
    if (rh, rw) == image.shape[:2]:
        resized = image
    else:
        flag = _flag(policy.interpolation, image.shape[:2], (rh, rw))
        resized = cv2.resize(image, (rw, rh), interpolation=flag)
    top = round((rh - size[0]) / 2.0)
    left = round((rw - size[1]) / 2.0)
    crop = resized[top : top + size[0], left : left + size[1]]
    out[...] = crop.reshape(out.shape)
