"""The model contract: what makes an exported ONNX file self-describing.

A contract model has one uint8 NHWC RGB input named `image` (batch dim `batch`), one
float32 output `probs` of shape [batch, classes], and a JSON `ModelSpec` stored under
`cnnbench.spec` in the ONNX `metadata_props`.

Format 2 added what another runtime needs to feed the file right: layout, input dtype,
pixel range, the preprocessing inside the graph and the resize policy. Format 1 files
lack those keys and read with the values cnnbench used then (NHWC, 0..255, squash, area).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.errors import InferError

INPUT_NAME = "image"
OUTPUT_NAME = "probs"
BATCH_DIM = "batch"
SPEC_KEY = "cnnbench.spec"
FORMAT_VERSION = 2
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs from its caller, stored inside the ONNX file."""

    input_size: tuple[int, int]  # (height, width)
    channels: int
    labels: tuple[str, ...]
    architecture: str = "unknown"
    channel_order: str = "RGB"
    dataset: str = ""
    source_sha256: str = ""
    created_by: str = ""
    route: str = ""
    precision: str = "fp32"
    opset: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # format 2: how to feed the file (defaults: what format 1 files meant)
    layout: str = "NHWC"
    input_dtype: str = "uint8"
    pixel_range: tuple[float, float] = (0, 255)
    preprocessing: str = ""  # what the graph does to the pixels, e.g. "x / 255"
    crop_mode: str = DEFAULT_POLICY.crop_mode.value
    crop_pct: float = DEFAULT_POLICY.crop_pct
    interpolation: str = DEFAULT_POLICY.interpolation.value

    @property
    def resize_policy(self) -> ResizePolicy:
        return ResizePolicy.from_dict(
            {
                "crop_mode": self.crop_mode,
                "crop_pct": self.crop_pct,
                "interpolation": self.interpolation,
            }
        )

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        data["labels"] = list(self.labels)
        data["pixel_range"] = list(self.pixel_range)
        data["versions"] = dict(self.versions)
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse and validate; every error names the offending key."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InferError(
                f"{SPEC_KEY} metadata is not valid JSON ({e}); re-export the model"
            ) from e
        if not isinstance(data, dict):
            raise InferError(
                f"{SPEC_KEY} metadata must be a JSON object, got {type(data).__name__}"
            )
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # unknown keys are ignored
        for key in ("input_size", "channels", "labels"):
            if key not in values:
                raise InferError(f"{SPEC_KEY}: missing required key {key!r}")
        values["input_size"] = _size(values["input_size"])
        values["channels"] = _int_in(values["channels"], "channels", (1, 3))
        values["labels"] = _labels(values["labels"])
        if "format_version" in values:
            version = values["format_version"]
            if not isinstance(version, int) or version < 1 or version > FORMAT_VERSION:
                raise InferError(
                    f"{SPEC_KEY}: key 'format_version' is {version!r}; this cnnbench reads "
                    f"1..{FORMAT_VERSION}: upgrade cnnbench"
                )
        for key in (
            "architecture",
            "channel_order",
            "dataset",
            "source_sha256",
            "created_by",
            "route",
            "precision",
            "layout",
            "input_dtype",
            "preprocessing",
        ):
            if key in values and not isinstance(values[key], str):
                raise InferError(f"{SPEC_KEY}: key {key!r} must be a string, got {values[key]!r}")
        order = values.get("channel_order", "RGB")
        if not isinstance(order, str) or order.upper() not in CHANNEL_ORDERS:
            raise InferError(
                f"{SPEC_KEY}: key 'channel_order' must be RGB, BGR or GRAY, got {order!r}"
            )
        if "pixel_range" in values:
            values["pixel_range"] = _range(values["pixel_range"])
        try:
            policy = ResizePolicy.from_dict(values)
        except ValueError as e:
            raise InferError(f"{SPEC_KEY}: {e}") from e
        values |= policy.to_dict()
        if "opset" in values and not isinstance(values["opset"], int):
            raise InferError(f"{SPEC_KEY}: key 'opset' must be an integer, got {values['opset']!r}")
        if "versions" in values and not isinstance(values["versions"], dict):
            raise InferError(
                f"{SPEC_KEY}: key 'versions' must be an object, got {values['versions']!r}"
            )
        return cls(**values)


def _size(value: Any) -> tuple[int, int]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    )
    if not ok:
        raise InferError(
            f"{SPEC_KEY}: key 'input_size' must be [height, width] of positive "
            f"integers, got {value!r}"
        )
    return (value[0], value[1])


def _range(value: Any) -> tuple[float, float]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise InferError(f"{SPEC_KEY}: key 'pixel_range' must be [low, high], got {value!r}")
    return (value[0], value[1])


def _int_in(value: Any, key: str, allowed: tuple[int, ...]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise InferError(f"{SPEC_KEY}: key {key!r} must be one of {allowed}, got {value!r}")
    return value


def _labels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InferError(
            f"{SPEC_KEY}: key 'labels' must be a non-empty list of strings, got {value!r:.80}"
        )
    return tuple(value)


def write_spec(model: Any, spec: ModelSpec) -> None:
    """Store `spec` in an `onnx.ModelProto`'s metadata, replacing any earlier one."""
    props = [p for p in model.metadata_props if p.key != SPEC_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    entry = model.metadata_props.add()
    entry.key = SPEC_KEY
    entry.value = spec.to_json()


def read_spec(metadata: Mapping[str, str]) -> ModelSpec | None:
    """The spec from a metadata map (ONNX Runtime's `custom_metadata_map`), or None."""
    text = metadata.get(SPEC_KEY)
    return None if text is None else ModelSpec.from_json(text)


def read_labels(path: str) -> tuple[str, ...]:
    """One label per line, in UTF-8 (a byte-order mark before the first is dropped), the
    spaces and tabs that end a line dropped (unseen in an editor, they kept a class folder
    from matching its label); blank lines at the end are ignored, a blank line before a
    label is refused (it would shift every label after it onto the wrong class)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            labels = [line.rstrip() for line in f]
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InferError(f"cannot read labels file {path}: {why}; give a UTF-8 text file") from e
    while labels and not labels[-1].strip():
        labels.pop()
    if not labels:
        raise InferError(f"labels file {path} is empty: write one class name per line")
    if blank := next((n for n, label in enumerate(labels, 1) if not label.strip()), None):
        raise InferError(
            f"labels file {path}, line {blank} is blank: write one class name per line, "
            "in the order of the model's outputs"
        )
    return tuple(labels)
