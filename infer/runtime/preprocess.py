"""What a model takes, resolved once: contract models need no options, foreign ones say
how their pixels are prepared (a preset or explicit values), never assumed.

Precedence, as timm's resolve_data_config: command-line options, then the preset, then
the file's spec, then defaults. What the file fixes (batch, height, width, channels) is
read from it, and an option that contradicts it is an error naming both values.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from cnnbench.infer.decode.resize import CropMode, Interpolation, ResizePolicy
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.contract import INPUT_NAME, ModelSpec, read_labels, read_spec
from cnnbench.infer.runtime.scores import ScoreMode

if TYPE_CHECKING:
    from cnnbench.infer.runtime.session import ModelGraph, TensorInfo


class Layout(enum.StrEnum):
    NHWC = "nhwc"
    NCHW = "nchw"


class Preset(enum.StrEnum):
    IMAGENET = "imagenet"
    INCEPTION = "inception"
    CAFFE = "caffe"
    RAW = "raw"


@dataclass(frozen=True)
class Pixels:
    """How uint8 0..255 pixels become the model's numbers: x * scale, minus mean, over std,
    per channel in the order fed (BGR when `bgr`)."""

    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    bgr: bool = False


# The standard evaluation crop (timm's crop_pct 0.875: shorter side to 256 for 224) with
# Pillow's antialiased bilinear: the pixels of torchvision's Resize(256) + CenterCrop(224)
# on PIL images, which most pretrained models were trained and evaluated through. Caffe
# models were prepared with OpenCV, whose bilinear does not antialias.
EVAL_CROP = ResizePolicy(CropMode.CENTER, 0.875, Interpolation.BILINEAR_AA)
CAFFE_CROP = ResizePolicy(CropMode.CENTER, 0.875, Interpolation.BILINEAR)
PRESETS: dict[Preset, tuple[Pixels, ResizePolicy]] = {
    Preset.IMAGENET: (
        Pixels(1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        EVAL_CROP,
    ),
    Preset.INCEPTION: (Pixels(1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), EVAL_CROP),
    Preset.CAFFE: (Pixels(1.0, (103.939, 116.779, 123.68), (), bgr=True), CAFFE_CROP),
    Preset.RAW: (Pixels(), ResizePolicy()),
}
PRESET_NAMES = "|".join(Preset)


@dataclass(frozen=True)
class ForeignOptions:
    """How to feed a model and read its output, as given on the command line; None means
    'not given'. Contract models need none of them."""

    layout: Layout | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    bgr: bool | None = None
    labels_path: str | None = None
    preset: Preset | None = None
    crop_mode: CropMode | None = None
    crop_pct: float | None = None
    interpolation: Interpolation | None = None
    output_name: str | None = None
    scores: ScoreMode = ScoreMode.AUTO

    @property
    def says_pixels(self) -> bool:
        return self.preset is not None or any(
            v is not None for v in (self.mean, self.std, self.scale)
        )


@dataclass(frozen=True)
class InputFormat:
    """Everything needed to turn decoded uint8 HWC images into the model's input tensor,
    and to read its output."""

    input_name: str
    layout: Layout
    size: tuple[int, int]  # (height, width)
    channels: int
    dtype: np.dtype
    labels: tuple[str, ...]
    bgr: bool = False
    scale: float = 1.0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    spec: ModelSpec | None = None
    policy: ResizePolicy = field(default_factory=ResizePolicy)
    batch: int | None = None  # a fixed batch dimension, or None when dynamic
    output_name: str = ""
    num_classes: int | None = None  # None: dynamic in the file
    scores: ScoreMode = ScoreMode.AUTO
    notes: tuple[str, ...] = ()  # what was decided for the user, and warnings

    @property
    def needs_transform(self) -> bool:
        return self.layout is Layout.NCHW or self.dtype != np.uint8 or self.affine is not None

    @property
    def affine(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(a, b) per channel with x * a + b == (x * scale - mean) / std; None: identity."""
        if self.dtype == np.uint8 or (self.scale == 1.0 and not self.mean and not self.std):
            return None
        c = self.channels
        mean = np.broadcast_to(np.asarray(self.mean or (0.0,), np.float64), (c,))
        std = np.broadcast_to(np.asarray(self.std or (1.0,), np.float64), (c,))
        return (self.scale / std).astype(np.float32), (-mean / std).astype(np.float32)

    def to_model_input(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC batch -> the model's tensor (cast, scale, normalise, transpose)."""
        if not self.needs_transform:
            return batch
        x = batch
        if self.dtype != np.uint8:
            x = batch.astype(np.float32)
            if (ab := self.affine) is not None:
                x *= ab[0]
                x += ab[1]
            if self.dtype != np.float32:
                x = x.astype(self.dtype)
        if self.layout is Layout.NCHW:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x

    def describe_pixels(self) -> str:
        """e.g. 'RGB, x * 0.00392157, mean 0.485,0.456,0.406, std 0.229,0.224,0.225'."""
        order = "gray" if self.channels == 1 else ("BGR" if self.bgr else "RGB")
        parts = [order, f"{self.layout.value.upper()} {self.dtype.name}"]
        if self.spec is not None:
            parts.append("0..255, preprocessing inside the model")
        elif self.dtype == np.uint8 or self.affine is None:
            parts.append("0..255 as they are")
        else:
            parts.append(f"x * {self.scale:.8g}")
            if self.mean:
                parts.append("mean " + ",".join(f"{v:g}" for v in self.mean))
            if self.std:
                parts.append("std " + ",".join(f"{v:g}" for v in self.std))
        return ", ".join(parts)

    def describe_resize(self) -> str:
        p = self.policy
        h, w = self.size
        if p.crop_mode is CropMode.SQUASH and p.crop_pct == 1.0:
            return f"squash to {h}x{w}, {p.interpolation.describe()}"
        sh, sw = p.scale_size(self.size)
        cover = f"shorter side to {sh}" if sh == sw else f"cover {sh}x{sw}"
        if p.crop_mode is CropMode.SQUASH:
            cover = f"squash to {sh}x{sw}"
        crop = f"centre crop {h}x{w} (crop_pct {p.crop_pct:g})"
        return f"{cover}, {crop}, {p.interpolation.describe()}"

    def describe(self) -> str:
        """How the pixels are prepared and resized, for the summary (describe_pixels and
        describe_resize)."""
        return f"{self.describe_pixels()}; {self.describe_resize()}"


_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def shape_text(shape: list) -> str:
    return "[" + ",".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def choose_output(outputs: Sequence[TensorInfo], name: str | None) -> TensorInfo:
    """The output named `name`, else the one shaped [batch, classes]; errors list them all."""
    listing = ", ".join(f"{o.name} {shape_text(o.shape)}" for o in outputs)
    if name is not None:
        found = next((o for o in outputs if o.name == name), None)
        if found is None:
            raise InferError(
                f"--output-name {name}: the model has no such output; its outputs: {listing}"
            )
        if len(found.shape) != 2:
            raise InferError(
                f"--output-name {name}: that output has shape {shape_text(found.shape)}; "
                f"pick one shaped [batch, classes] (outputs: {listing})"
            )
        return found
    candidates = [o for o in outputs if len(o.shape) == 2]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InferError(
            f"no model output is shaped [batch, classes] (outputs: {listing}); "
            "an image classifier outputs [batch, classes]"
        )
    raise InferError(
        f"the model has {len(candidates)} outputs shaped [batch, classes] ({listing}): "
        "pick one with --output-name"
    )


def resolve_input_format(
    session: ModelGraph, options: ForeignOptions | None = None, *, need_pixels: bool = True
) -> InputFormat:
    """Read the spec from the session's metadata, or build the format from options.

    `need_pixels`: real images will be fed (infer), so a foreign model must say how its
    pixels are prepared; `bench` on random pixels passes False."""
    options = options or ForeignOptions()
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise InferError(f"model has {len(inputs)} inputs ({names}); an image classifier has one")
    out = choose_output(outputs, options.output_name)
    inp = inputs[0]
    if len(inp.shape) != 4:
        raise InferError(
            f"model input {inp.name!r} has shape {inp.shape}; an image classifier "
            "takes a 4-D batch of images (NHWC or NCHW)"
        )
    if inp.type not in _DTYPES:
        raise InferError(
            f"model input {inp.name!r} has type {inp.type}; supported: uint8, float, float16"
        )
    spec = read_spec(session.get_modelmeta().custom_metadata_map)
    if spec is not None and inp.name == INPUT_NAME:
        fmt = _from_spec(spec, options, inp)
    else:
        fmt = _from_options(inp, options, need_pixels)
    classes = out.shape[1] if isinstance(out.shape[1], int) else None
    if classes == 1:  # one score per image: a binary classifier's (scores.py), two classes
        classes = 2
    if not fmt.labels:
        if classes is None:
            raise InferError("model output has a dynamic class count and no labels: pass --labels")
        fmt = replace(fmt, labels=tuple(str(i) for i in range(classes)))
    fmt = replace(
        fmt,
        batch=inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None,
        output_name=out.name,
        num_classes=classes,
        scores=options.scores,
    )
    check_labels(fmt, options)
    return fmt


def check_labels(fmt: InputFormat, options: ForeignOptions) -> None:
    if fmt.num_classes is not None and len(fmt.labels) != fmt.num_classes:
        source = f"--labels {options.labels_path}" if options.labels_path else "the spec"
        raise InferError(
            f"{source} has {len(fmt.labels)} labels but the model outputs "
            f"{fmt.num_classes} classes: give one label per class"
        )


def check_top_k(fmt: InputFormat, top_k: int) -> None:
    """--top-k past the class count would write empty label and score columns."""
    if top_k > len(fmt.labels):
        raise InferError(
            f"--top-k {top_k} is more than the {len(fmt.labels)} classes the model outputs: "
            f"pass --top-k {len(fmt.labels)} or less"
        )


def _check_fixed(inp: TensorInfo, hw: list, size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The input's fixed (h, w), or `size`; an error when they disagree."""
    fixed = (hw[0], hw[1]) if all(isinstance(v, int) and v > 0 for v in hw) else None
    if size is not None and fixed is not None and size != fixed:
        raise InferError(
            f"--size {size[0]}x{size[1]} contradicts the model's fixed input "
            f"{fixed[0]}x{fixed[1]} ({inp.name} {shape_text(inp.shape)}): leave --size out"
        )
    return size or fixed


def _from_spec(spec: ModelSpec, options: ForeignOptions, inp: TensorInfo) -> InputFormat:
    given = [
        flag
        for flag, value in (
            ("--preset", options.preset),
            ("--mean", options.mean),
            ("--std", options.std),
            ("--scale", options.scale),
            ("--layout", options.layout),
        )
        if value is not None
    ]
    if given:
        raise InferError(
            f"{', '.join(given)}: this model carries a cnnbench spec and does its own "
            "preprocessing inside the graph on 0..255 pixels: leave them out"
        )
    labels = read_labels(options.labels_path) if options.labels_path else spec.labels
    size = _check_fixed(inp, inp.shape[1:3], options.size) or spec.input_size
    return InputFormat(
        input_name=INPUT_NAME,
        layout=Layout.NHWC,
        size=size,
        channels=spec.channels,
        dtype=np.dtype(_DTYPES[inp.type]),
        labels=labels,
        bgr=bool(options.bgr) or spec.channel_order.upper() == "BGR",
        spec=spec,
        policy=_policy(spec.resize_policy, options, None),
    )


def _policy(base: ResizePolicy, options: ForeignOptions, preset: Preset | None) -> ResizePolicy:
    if preset is not None:
        base = PRESETS[preset][1]
    return base.overridden(options.crop_mode, options.crop_pct, options.interpolation)


def _from_options(inp: TensorInfo, options: ForeignOptions, need_pixels: bool) -> InputFormat:
    shape = inp.shape
    layout = options.layout or _guess_layout(shape)
    if layout is None:
        raise InferError(
            f"model has no cnnbench spec and its input {inp.name} {shape} does not "
            "say its layout: pass --layout nchw or --layout nhwc"
        )
    c_axis, hw = (3, shape[1:3]) if layout is Layout.NHWC else (1, shape[2:4])
    channels = shape[c_axis]
    if not isinstance(channels, int) or channels not in (1, 3):
        raise InferError(
            f"model input {inp.name} {shape} read as {layout.value} has "
            f"{channels} channels; an image classifier takes 1 or 3: check --layout"
        )
    size = _check_fixed(inp, hw, options.size)
    if size is None:
        raise InferError(
            f"model input {inp.name} {shape} has dynamic height/width and no "
            "cnnbench spec: pass --size HxW"
        )
    dtype = np.dtype(_DTYPES[inp.type])
    pixels, notes = _pixels(inp, dtype, channels, options, need_pixels)
    labels = read_labels(options.labels_path) if options.labels_path else ()
    return InputFormat(
        input_name=inp.name,
        layout=layout,
        size=size,
        channels=channels,
        dtype=dtype,
        labels=labels,
        bgr=pixels.bgr,
        scale=pixels.scale,
        mean=pixels.mean,
        std=pixels.std,
        policy=_policy(_base_policy(dtype, options), options, options.preset),
        notes=notes,
    )


def _base_policy(dtype: np.dtype, options: ForeignOptions) -> ResizePolicy:
    """What the resize options override for a model without a spec: the preset's policy;
    with --mean/--std/--scale and no preset, the standard evaluation crop (a user giving
    mean and std describes an ImageNet-style model); else the whole image squashed."""
    if options.preset is None and dtype != np.uint8 and options.says_pixels:
        return EVAL_CROP
    return ResizePolicy()


def _pixels(
    inp: TensorInfo, dtype: np.dtype, channels: int, options: ForeignOptions, need_pixels: bool
) -> tuple[Pixels, tuple[str, ...]]:
    """The preset's pixel transform with the explicit options over it, validated."""
    if dtype == np.uint8:
        explicit = (options.mean, options.std, options.scale)
        if any(v is not None for v in explicit) or options.preset not in (None, Preset.RAW):
            raise InferError(
                f"model input {inp.name} is uint8: it takes 0..255 pixels as they are, so "
                "--mean, --std, --scale and presets other than raw do not apply"
            )
        return Pixels(bgr=bool(options.bgr)), ()
    if need_pixels and not options.says_pixels:
        raise InferError(
            f"model has no cnnbench spec, so how its {dtype.name} input {inp.name} wants its "
            f"pixels is unknown: pass --preset {PRESET_NAMES} (or --mean/--std/--scale); "
            "see docs/models.md"
        )
    base = PRESETS[options.preset][0] if options.preset else Pixels()
    pixels = Pixels(
        scale=base.scale if options.scale is None else options.scale,
        mean=_per_channel(options.mean, base.mean, channels, "--mean"),
        std=_per_channel(options.std, base.std, channels, "--std"),
        bgr=base.bgr if options.bgr is None else options.bgr,
    )
    notes: tuple[str, ...] = ()
    units = [*pixels.mean, *pixels.std]
    if pixels.scale == 1.0 and units and all(0 <= abs(v) <= 1 for v in units):
        notes = (
            "warning: --mean/--std look like 0..1 values but the pixels are 0..255: "
            "add --scale 0.00392156862745098 (1/255) if the model expects 0..1",
        )
    return pixels, notes


def _per_channel(
    given: tuple[float, ...] | None, preset: tuple[float, ...], channels: int, flag: str
) -> tuple[float, ...]:
    """One value or one per channel; a 3-value preset on a 1-channel model: their mean."""
    if given is None:
        if preset and channels == 1 and len(preset) == 3:
            return (float(np.mean(preset)),)
        return preset
    if len(given) not in (1, channels):
        raise InferError(
            f"{flag} has {len(given)} values ({','.join(f'{v:g}' for v in given)}) but the "
            f"model takes {channels} channel(s): give 1 or {channels}"
        )
    return given


def _guess_layout(shape: list) -> Layout | None:
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return Layout.NCHW
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return Layout.NHWC
    return None
