"""The model variants `tune` tries: a runtime x a precision, and the files they run (the
source for fp32, bf16 and TensorRT's fp16; an int8 file made from the tune images; an
fp16 file for CUDA), written beside the plan."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.infer.runtime.session import Provider

if TYPE_CHECKING:
    from cnnbench.bench.tune_config import TuneConfig

CALIBRATION_IMAGES = 64  # int8 ranges from this many of the images, spread over the folder


@dataclass
class Variant:
    name: str  # e.g. "openvino int8 (hint bf16)"
    provider: Provider
    precision: str  # what runs; OpenVINO's is read back once it has compiled
    file: str  # "source", "int8" or "fp16": which model file
    hint: str = "auto"  # OpenVINO's precision hint
    trt_fp16: bool = False
    path: str = ""  # set by make_variant_files
    unavailable: str = ""  # why the variant cannot be tried (its file could not be made)


def variants_for(providers: list[Provider], native_bf16: bool) -> list[Variant]:
    """Every runtime x precision worth a try on these providers; fp32 on ORT's CPU first."""
    out: list[Variant] = []
    for p in providers:
        if p is Provider.CPU:
            out += [
                Variant("cpu fp32", p, "fp32", "source"),
                Variant("cpu int8", p, "int8", "int8"),
            ]
        elif p is Provider.OPENVINO:
            hints = ("f32", "bf16") if native_bf16 else ("f32",)
            for file in ("source", "int8"):
                for hint in hints:
                    base = "fp32" if file == "source" else "int8"
                    name = f"openvino {base} (hint {hint})"
                    out.append(Variant(name, p, "bf16" if hint == "bf16" else base, file, hint))
        elif p is Provider.CUDA:
            out += [
                Variant("cuda fp32", p, "fp32", "source"),
                Variant("cuda fp16", p, "fp16", "fp16"),
            ]
        elif p is Provider.TENSORRT:
            out += [
                Variant("tensorrt fp32", p, "fp32", "source"),
                Variant("tensorrt fp16", p, "fp16", "source", trt_fp16=True),
            ]
    return sorted(out, key=lambda v: v.provider is not Provider.CPU)


def make_variant_files(
    variants: list[Variant],
    cfg: TuneConfig,
    pixels: np.ndarray,
    stem: str,
    log: Callable[[str], None],
) -> None:
    """Give each variant its file: `STEM.int8.onnx` and `STEM.fp16.onnx` are written
    beside the plan, once, when a variant needs them."""
    made: dict[str, str] = {"source": cfg.model}
    for v in variants:
        if v.file not in made:
            path = f"{stem}.{v.file}.onnx"
            try:
                if v.file == "int8":
                    log(f"int8: calibrating on {min(len(pixels), CALIBRATION_IMAGES)} images ...")
                    make_int8(cfg.model, pixels, path)
                else:
                    make_fp16(cfg.model, path)
                made[v.file] = path
            except BenchError as e:
                log(f"{v.file}: not made ({e})")
                made[v.file] = ""
                v.unavailable = str(e)
        v.path = made[v.file]
        if not v.path and not v.unavailable:
            v.unavailable = f"no {v.file} file"


def calibration_subset(pixels: np.ndarray, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """`count` images spread evenly over the folder's order (not just its first class)."""
    if len(pixels) <= count:
        return pixels
    return pixels[np.linspace(0, len(pixels) - 1, count).round().astype(int)]


def make_int8(source: str, pixels: np.ndarray, out: str) -> None:
    """Static QDQ int8 of `source` calibrated on the images, written to `out`.

    Plain int8: accuracy control (keeping the most harmful layers in float until the loss
    is within --max-drop) replaces this with convert's own function once it lands; until
    then an int8 file that loses more is left out by the agreement check."""
    from cnnbench.convert.errors import ConvertError
    from cnnbench.convert.precision import quantize_qdq
    from cnnbench.files import atomic_path

    external = os.path.getsize(source) > 2_000_000_000
    try:
        with atomic_path(out, suffix=".onnx") as tmp:
            quantize_qdq(source, tmp, calibration_subset(pixels), external)
            say_precision(tmp, "int8")
    except ConvertError as e:
        raise BenchError(str(e)) from e


def say_precision(path: str, precision: str) -> None:
    """The file's spec names the precision its weights now have (what infer reports)."""
    import onnx

    from cnnbench.infer.runtime.contract import read_spec, write_spec

    model = onnx.load(path)
    spec = read_spec({p.key: p.value for p in model.metadata_props})
    if spec is not None:
        write_spec(model, dataclasses.replace(spec, precision=precision))
        onnx.save(model, path)


def make_fp16(source: str, out: str) -> None:
    """fp16 weights and activations for the CUDA provider (inputs and outputs unchanged)."""
    import onnx

    from cnnbench.convert.precision import to_fp16
    from cnnbench.files import atomic_path

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(source))
        with atomic_path(out, suffix=".onnx") as tmp:
            onnx.save(to_fp16(model), tmp)
            say_precision(tmp, "fp16")
    except Exception as e:  # onnx and the converter raise their own types
        raise BenchError(f"fp16 conversion failed: {e}") from e
