"""What a model takes, resolved once: contract models need no options, foreign ones do.

Precedence, as timm's resolve_data_config: command-line options, then the file's spec,
then defaults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from cnnbench.infer.contract import INPUT_NAME, ModelSpec, read_labels, read_spec
from cnnbench.infer.errors import InferError


class Layout(enum.StrEnum):
    NHWC = "nhwc"
    NCHW = "nchw"


@dataclass(frozen=True)
class ForeignOptions:
    """Options for ONNX classifiers that carry no cnnbench spec; None means 'not given'."""

    layout: Layout | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float | None = None
    bgr: bool = False
    labels_path: str | None = None


@dataclass(frozen=True)
class InputFormat:
    """Everything needed to turn decoded uint8 HWC images into the model's input tensor."""

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

    @property
    def needs_transform(self) -> bool:
        return self.layout is Layout.NCHW or self.dtype != np.uint8 or bool(self.mean or self.std)

    def to_model_input(self, batch: np.ndarray) -> np.ndarray:
        """uint8 NHWC batch -> the model's tensor (cast, scale, normalise, transpose)."""
        if not self.needs_transform:
            return batch
        x = batch.astype(self.dtype) if self.dtype != np.uint8 else batch
        if self.dtype != np.uint8:
            if self.scale != 1.0:
                x *= self.scale
            if self.mean:
                x -= np.asarray(self.mean, dtype=self.dtype)
            if self.std:
                x /= np.asarray(self.std, dtype=self.dtype)
        if self.layout is Layout.NCHW:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x


_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def resolve_input_format(session, options: ForeignOptions | None = None) -> InputFormat:
    """Read the spec from the session's metadata, or build the format from options."""
    options = options or ForeignOptions()
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise InferError(f"model has {len(inputs)} inputs ({names}); an image classifier has one")
    if len(outputs) < 1 or len(outputs[0].shape) != 2:
        shape = outputs[0].shape if outputs else None
        raise InferError(
            f"model output has shape {shape}; an image classifier outputs [batch, classes]"
        )
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
        return _from_spec(spec, options, _DTYPES[inp.type])
    return _from_options(inp, outputs[0], options)


def _from_spec(spec: ModelSpec, options: ForeignOptions, dtype: type) -> InputFormat:
    labels = read_labels(options.labels_path) if options.labels_path else spec.labels
    return InputFormat(
        input_name=INPUT_NAME,
        layout=Layout.NHWC,
        size=options.size or spec.input_size,
        channels=spec.channels,
        dtype=np.dtype(dtype),
        labels=labels,
        bgr=options.bgr or spec.channel_order == "BGR",
        spec=spec,
    )


def _from_options(inp, out, options: ForeignOptions) -> InputFormat:
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
    size = options.size or (tuple(hw) if all(isinstance(v, int) for v in hw) else None)
    if size is None:
        raise InferError(
            f"model input {inp.name} {shape} has dynamic height/width and no "
            "cnnbench spec: pass --size HxW"
        )
    dtype = np.dtype(_DTYPES[inp.type])
    if options.labels_path:
        labels = read_labels(options.labels_path)
    else:
        n = out.shape[1]
        if not isinstance(n, int):
            raise InferError("model output has a dynamic class count and no labels: pass --labels")
        labels = tuple(str(i) for i in range(n))
    if dtype == np.uint8 and (options.mean or options.std or options.scale):
        raise InferError(
            f"model input {inp.name} is uint8: --mean, --std and --scale need a float input"
        )
    return InputFormat(
        input_name=inp.name,
        layout=layout,
        size=size,
        channels=channels,
        dtype=dtype,
        labels=labels,
        bgr=options.bgr,
        scale=1.0 if options.scale is None else options.scale,
        mean=options.mean or (),
        std=options.std or (),
    )


def _guess_layout(shape: list) -> Layout | None:
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return Layout.NCHW
    if shape[3] in (1, 3) and shape[1] not in (1, 3):
        return Layout.NHWC
    return None
