"""int8 with accuracy control: quantize everything, and where that loses more than
`max_drop` points of top-1 (accuracy on labelled images, else agreement with fp32), keep the
most harmful layers in float, one at a time, until the loss is within the bound.

NNCF's `quantize_with_accuracy_control` does this only through OpenVINO IR, so the ranking
is our own: each quantized layer's harm is what the model recovers when that layer alone is
kept in float (the top-1 figure first, the mean |dp| against fp32 to break ties). One
calibration serves every try (ONNX Runtime's calibration cache). At least one weighted
layer (Conv, Gemm, MatMul) stays int8: a model with none is an fp32 model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnbench.convert.config import ConvertConfig, Precision
from cnnbench.convert.errors import ConvertError
from cnnbench.convert.precision import quantize_qdq
from cnnbench.convert.real_images import RealImages
from cnnbench.convert.verify import Check, open_session, run_session
from cnnbench.convert.writer import save_model

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
RANK_LIMIT = 128  # images used to rank the layers (the figure itself uses all of them)
ALL = slice(None)
ACCURACY, AGREEMENT = "top-1 accuracy", "top-1 agreement with fp32"


@dataclass(frozen=True)
class QuantResult:
    """What the accuracy control reached; figures in percent."""

    metric: str  # "top-1 accuracy" (labelled images) or "top-1 agreement with fp32"
    images: int
    fp32: float
    plain: float  # every layer int8
    reached: float  # the model written
    max_drop: float
    quantized: tuple[str, ...]  # layers int8 in the plain model
    kept_float: tuple[str, ...]  # layers kept in float, most harmful first

    @property
    def drop(self) -> float:
        return self.fp32 - self.reached

    @property
    def within(self) -> bool:
        return within(self.fp32, self.reached, self.max_drop)

    def checks(self) -> list[Check]:
        """The rows this adds to the verification table."""
        float_layers = ", ".join(self.kept_float) or "none"
        fp32 = [Check(f"fp32 {self.metric}", f"{self.fp32:.1f}%", "reference", None)]
        return [
            *(fp32 if self.metric == ACCURACY else []),  # agreement with itself: 100%
            Check(f"plain int8 {self.metric}", f"{self.plain:.1f}%", "informative", None),
            Check(
                f"int8 {self.metric} ({self.images} images)",
                f"{self.reached:.1f}%",
                f"drop <= {self.max_drop:g} pt",
                self.within,
            ),
            Check(
                f"layers kept in float ({len(self.kept_float)} of {len(self.quantized)})",
                float_layers if len(float_layers) <= 12 else f"{len(self.kept_float)} layers",
                "informative",
                None,
            ),
        ]


def within(fp32: float, reached: float, max_drop: float) -> bool:
    """The drop is at most `max_drop` points (percentages of a few hundred images are not
    exact in binary: 90.83 - 89.83 must count as 1)."""
    return fp32 - reached <= max_drop + 1e-9


class Figures:
    """Top-1 figures of a model file against fp32's probabilities (and the labels)."""

    def __init__(self, fp32_path: str, real: RealImages) -> None:
        self.real = real
        self.reference = self.probs(fp32_path)
        self.metric = ACCURACY if real.truth is not None else AGREEMENT
        self.fp32 = self.figure(self.reference)

    def probs(self, path: str, rows: slice = ALL) -> np.ndarray:
        session = open_session(path, Precision.INT8)
        return run_session(session, self.real.images[rows])

    def figure(self, probs: np.ndarray, rows: slice = ALL) -> float:
        truth = self.real.truth if self.real.truth is not None else self.reference.argmax(1)
        return 100.0 * float(np.mean(probs.argmax(1) == truth[rows]))

    def harm(self, probs: np.ndarray, rows: slice) -> float:
        """Mean |dp| against fp32 on the rows given: the tie-breaker of the ranking."""
        return float(np.mean(np.abs(probs - self.reference[rows]).sum(1)))


def quantized_layers(path: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """The compute nodes of a QDQ file that read a DequantizeLinear (its int8 layers), in
    graph order, and which of them are weighted."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in graph.node if n.op_type not in QDQ_OPS and set(n.input) & dequantized]
    weighted = frozenset(n.name for n in layers if n.op_type in WEIGHTED_OPS)
    return tuple(n.name for n in layers), weighted


def quantize_with_accuracy_control(
    fp32_path: str,
    dst: str,
    calibration: np.ndarray,
    real: RealImages,
    max_drop: float,
    external: bool = False,
    report: Callable[[str], None] = lambda line: None,
) -> QuantResult:
    """int8 QDQ of `fp32_path` into `dst` within `max_drop` points of fp32 on `real`;
    a ConvertError with the best figure found when no allowed choice of float layers gets
    there (then `dst` holds nothing usable)."""
    cache = f"{dst}.ranges.json"
    try:
        return _control(fp32_path, dst, calibration, real, max_drop, external, cache, report)
    finally:
        if os.path.exists(cache):
            os.remove(cache)


def _control(
    fp32_path: str,
    dst: str,
    calibration: np.ndarray,
    real: RealImages,
    max_drop: float,
    external: bool,
    cache: str,
    report: Callable[[str], None],
) -> QuantResult:
    def quantize(keep_float: tuple[str, ...]) -> None:
        quantize_qdq(fp32_path, dst, calibration, external, keep_float, cache)

    figures = Figures(fp32_path, real)
    quantize(())
    plain = figures.figure(figures.probs(dst))
    layers, weighted = quantized_layers(dst)

    def result(reached: float, kept: tuple[str, ...]) -> QuantResult:
        return QuantResult(
            figures.metric, len(real.images), figures.fp32, plain, reached, max_drop, layers, kept
        )

    if within(figures.fp32, plain, max_drop):
        return result(plain, ())
    report(
        f"int8: plain {figures.metric} {plain:.1f}% vs fp32 {figures.fp32:.1f}% loses more than "
        f"{max_drop:g} points: ranking {len(layers)} layers"
    )
    ranked = _rank(layers, quantize, dst, figures, report)
    best = plain
    kept: tuple[str, ...] = ()
    for layer in ranked:
        if weighted and weighted <= {*kept, layer}:
            continue  # the last weighted int8 layer stays int8
        kept = (*kept, layer)  # greedy: a layer kept in float stays in float
        quantize(kept)
        reached = figures.figure(figures.probs(dst))
        report(f"int8: {len(kept)} layers in float: {figures.metric} {reached:.1f}%")
        best = max(best, reached)
        if within(figures.fp32, reached, max_drop):
            return result(reached, kept)
    raise ConvertError(
        f"int8 cannot stay within --max-drop {max_drop:g}: the best {figures.metric} found is "
        f"{best:.1f}% (fp32 {figures.fp32:.1f}%, drop {figures.fp32 - best:.1f} points, "
        f"{len(real.images)} images); nothing was written. Allow a larger --max-drop, or "
        "give more --calibration images"
    )


def _rank(
    layers: tuple[str, ...],
    quantize: Callable[[tuple[str, ...]], None],
    dst: str,
    figures: Figures,
    report: Callable[[str], None],
) -> list[str]:
    """Most harmful first: the figure the model reaches with that layer alone in float
    (higher: more harmful), then the mean |dp| it leaves (lower: more harmful)."""
    rows = slice(None, None, max(1, len(figures.real.images) // RANK_LIMIT))  # every class
    keys = {}
    for i, layer in enumerate(layers, 1):
        quantize((layer,))
        probs = figures.probs(dst, rows)
        keys[layer] = (-figures.figure(probs, rows), figures.harm(probs, rows))
        if i % 10 == 0:
            report(f"int8: ranked {i} of {len(layers)} layers")
    return sorted(layers, key=lambda name: keys[name])


def lower_file(
    fp32_path: str,
    dst: str,
    cfg: ConvertConfig,
    calibration: np.ndarray | None,
    real: RealImages | None,
    external: bool,
    report: Callable[[str], None] = lambda line: None,
) -> QuantResult | None:
    """`fp32_path` at `cfg.precision` (fp16 or int8) into `dst`. int8 is accuracy-controlled
    on `real` when there are real images to check against; its result is returned."""
    import onnx

    from cnnbench.convert.precision import to_fp16

    if cfg.precision is Precision.FP16:
        # Shape inference from the file: in memory it stops at protobuf's 2 GB.
        onnx.shape_inference.infer_shapes_path(fp32_path, dst)
        save_model(to_fp16(onnx.load(dst)), dst, external)
        return None
    if cfg.precision is Precision.INT8:
        assert calibration is not None, "check_options refuses int8 without --calibration"
        if real is None:  # --no-verify: plain int8, nothing to measure it on
            quantize_qdq(fp32_path, dst, calibration, external)
            return None
        return quantize_with_accuracy_control(
            fp32_path, dst, calibration, real, cfg.max_drop, external, report
        )
    raise AssertionError(f"nothing to lower to {cfg.precision}")
