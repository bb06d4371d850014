"""The model variants `tune` tries: a runtime x a precision, and the files they run (the
source for fp32, bf16 and TensorRT's fp16; an int8 file made from the tune images; an
fp16 file for CUDA), written beside the plan."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def variants_for(
    providers: list[Provider], native_bf16: bool, lowered: str | None = None
) -> list[Variant]:
    """Every runtime x precision worth a try on these providers; fp32 on ORT's CPU first.
    A model `lowered` already (int8, fp16: its weights) runs as it is on each provider,
    under each OpenVINO hint: no file is made from it."""
    if lowered:
        hints = ("f32", "bf16") if native_bf16 else ("f32",)
        return [
            Variant(
                f"{p.value} {lowered}" + (f" (hint {hint})" if hint else ""),
                p,
                lowered,
                "source",
                hint or "auto",
            )
            for p in providers
            for hint in (hints if p is Provider.OPENVINO else ("",))
        ]
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
                    # int8 layers run int8 whatever the hint; the others at the hint
                    runs = "int8" if file == "int8" else ("bf16" if hint == "bf16" else "fp32")
                    out.append(Variant(f"openvino {runs} (hint {hint})", p, runs, file, hint))
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


MADE_FILES = ("int8", "fp16")  # the model files tune makes, beside the plan


def variant_file(stem: str, kind: str) -> str:
    """Where tune writes its `kind` file (int8, fp16) for a plan at `stem`.json."""
    return f"{stem}.{kind}.onnx"


def make_variant_files(
    variants: list[Variant],
    cfg: TuneConfig,
    stem: str,
    log: Callable[[str], None],
    images: str,
    written: list[str],
) -> None:
    """Give each variant its file: `STEM.int8.onnx` and `STEM.fp16.onnx` are written
    beside the plan, once, when a variant needs them (each whole under its name, or not
    at all). Each is added to `written` once there, so that a stop while the next is made
    still knows the ones to remove."""
    made: dict[str, str] = {"source": cfg.model}
    for v in variants:
        if v.file not in made:
            path = variant_file(stem, v.file)
            try:
                if v.file == "int8":
                    log(f"int8: calibrating on {cfg.images}, --max-drop {cfg.max_drop:g} ...")
                    make_int8(cfg, path, log, images)
                else:
                    make_fp16(cfg.model, path)
                made[v.file] = path
                written.append(path)
            except BenchError as e:
                log(f"{v.file}: not made ({e})")
                made[v.file] = ""
                v.unavailable = str(e)
        v.path = made[v.file]
        if not v.path and not v.unavailable:
            v.unavailable = f"no {v.file} file"


def make_int8(cfg: TuneConfig, out: str, log: Callable[[str], None], images: str) -> None:
    """int8 of the model calibrated on some of the tune `images` and kept within --max-drop
    of fp32 on all of them (convert's accuracy control: the most harmful layers stay in
    float)."""
    from cnnbench.convert.errors import ConvertError
    from cnnbench.convert.onnx_export import quantize_int8

    with tempfile.TemporaryDirectory(prefix="cnnbench-calibration-") as folder:
        calibration = calibration_folder(images, folder)
        try:
            result = quantize_int8(
                cfg.model,
                out,
                calibration,
                verify_images=images,
                max_drop=cfg.max_drop,
                report=lambda line: _said_by_convert(line, log),
            )
        except ConvertError as e:
            raise BenchError(str(e)) from e
    kept = f", {len(result.kept_float)} layers kept in float" if result.kept_float else ""
    log(f"int8: {result.metric} {result.reached:.1f}% (fp32 {result.fp32:.1f}%){kept}")


def _said_by_convert(line: str, log: Callable[[str], None]) -> None:
    """convert's lines, indented under tune's; not its own count of unreadable images
    (tune said it of the same images, and its calibration folder is a temporary one)."""
    if not line.startswith(("--calibration ", "--verify-images ")):
        log(f"  {line}")


def calibration_folder(images: str, folder: str, count: int = CALIBRATION_IMAGES) -> str:
    """`folder` with `count` of the images, spread evenly over the folder's order
    (calibration time grows with every image; the ranges settle well before), placed at
    their names (`place_images`: links to local files, copies of a prefix's objects)."""
    from cnnbench.bench.extras import labelled_images, place_images, spread

    place_images([i.path for i in spread(labelled_images(images), count)], images, folder)
    return folder


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
