"""The resize policy: how a decoded image becomes the model's HxW, as the model expects.

Two modes, as timm names them: `center` scales the image so that it covers the input size
divided by `crop_pct` (the shorter side to size/crop_pct for a square input, 224/0.875 =
256 for ImageNet), then cuts the centre; `squash` scales both sides to size/crop_pct,
aspect ratio not kept, then cuts the centre (with crop_pct 1: the whole image squashed to
the size). Sizes and offsets follow torchvision's `Resize(int)` and `CenterCrop`.

Two families of filters. OpenCV's (`area`, `bilinear`, `bicubic`) are fast and serve models
trained through cnnbench's own decoder. Pillow's (`bilinear-aa`, `bicubic-aa`) antialias
when they shrink, as torchvision and timm evaluate on PIL images: `pillow_resize_into`
gives exactly the pixels of `img.resize((w, h), filter)` followed by the centre crop.
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
    BILINEAR_AA = "bilinear-aa"  # Pillow Image.BILINEAR: antialiased when shrinking
    BICUBIC_AA = "bicubic-aa"  # Pillow Image.BICUBIC: antialiased when shrinking

    @property
    def pillow(self) -> bool:
        """Resized by Pillow on a full-size decode (torchvision's pixels), not by OpenCV."""
        return self in (Interpolation.BILINEAR_AA, Interpolation.BICUBIC_AA)

    def describe(self) -> str:
        """The name and which library resizes, for summaries: 'bilinear-aa (Pillow)'."""
        return f"{self.value} ({'Pillow' if self.pillow else 'OpenCV'})"


CROP_PCT_RANGE = "(0, 1]"  # the fraction of the resized image the centre crop keeps


def crop_pct_ok(value: float) -> bool:
    """Whether `value` lies in CROP_PCT_RANGE (policies, specs and --crop-pct all ask here)."""
    return 0.0 < value <= 1.0


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
        if not crop_pct_ok(self.crop_pct):
            raise ValueError(f"crop_pct must be in {CROP_PCT_RANGE}, got {self.crop_pct}")

    def overridden(
        self,
        crop_mode: CropMode | str | None = None,
        crop_pct: float | None = None,
        interpolation: Interpolation | str | None = None,
    ) -> ResizePolicy:
        """This policy with the parts given (not None) replaced: how command-line options
        override a preset's or a spec's policy. A crop_pct outside (0, 1] is a ValueError
        (--crop-pct is checked where it is read)."""
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
        None (decode at full size) for the other filters, so that the pixels are exactly
        a full decode then the resize, as a model's own evaluation pipeline states it;
        `area` averages anyway, and a DCT reduction is a faster average."""
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
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not crop_pct_ok(pct):
            raise ValueError(f"key 'crop_pct' must be a number in {CROP_PCT_RANGE}, got {pct!r}")
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
    top, left = crop_offsets((rh, rw), size)
    crop = resized[top : top + size[0], left : left + size[1]]
    out[...] = crop.reshape(out.shape)


def crop_offsets(resized: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centre crop, rounded as torchvision's CenterCrop rounds them."""
    return round((resized[0] - size[0]) / 2.0), round((resized[1] - size[1]) / 2.0)


def pillow_resize_into(image: Any, out: np.ndarray, policy: ResizePolicy, bgr: bool) -> None:
    """Resize the Pillow `image` (mode L or RGB) into the uint8 `out` (h, w, C) by `policy`
    with Pillow's filter, then cut the centre: the pixels of torchvision's `Resize` and
    `CenterCrop` on a PIL image. Along an axis where Pillow's box gives the same sample
    positions bit for bit, only the crop is computed; elsewhere the whole axis, then cut."""
    from PIL import Image

    size = out.shape[:2]
    rh, rw = policy.resized_shape((image.height, image.width), size)
    top, left = crop_offsets((rh, rw), size)
    x0, x1, ow, cut_x = _pillow_axis(image.width, rw, left, size[1])
    y0, y1, oh, cut_y = _pillow_axis(image.height, rh, top, size[0])
    filt = Image.Resampling.BICUBIC
    if policy.interpolation is Interpolation.BILINEAR_AA:
        filt = Image.Resampling.BILINEAR
    resized = image.resize((ow, oh), filt, box=(x0, y0, x1, y1))
    pixels = np.asarray(resized.crop((cut_x, cut_y, cut_x + size[1], cut_y + size[0])))
    if pixels.ndim == 2:
        out[...] = pixels[:, :, None]  # a gray source: every channel the same
    else:
        out[...] = pixels[:, :, ::-1] if bgr else pixels


def _pillow_axis(src: int, dst: int, offset: int, size: int) -> tuple[float, float, int, int]:
    """Along one axis of a `src` -> `dst` resize whose crop starts at `offset`: Pillow's
    box (in0, in1), the output length and where the crop starts in that output.

    Pillow takes the box as float32 and samples output x at in0 + (x + 0.5) * scale with
    scale = (in1 - in0) / out. A box over the crop alone is used only when that gives the
    very positions of the full resize, (x + offset + 0.5) * src / dst, for every x (true
    whenever dst is a power of two times a small number, such as 256); otherwise the whole
    axis is resized and the crop cut afterwards, so no pixel ever differs."""
    scale = src / dst
    in0 = float(np.float32(offset * scale))
    in1 = float(np.float32((offset + size) * scale))
    x = np.arange(size, dtype=np.float64) + 0.5
    if (in1 - in0) / size == scale and np.array_equal(in0 + x * scale, (x + offset) * scale):
        return in0, in1, size, 0
    return 0.0, float(src), dst, offset
