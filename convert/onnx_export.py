"""`convert_onnx`: any ONNX image classifier -> a verified cnnbench contract model, at any
precision; `quantize_int8`, the accuracy-controlled int8 of one, for callers such as `tune`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cnnbench import __version__
from cnnbench.convert.accuracy import QuantResult, lower_file
from cnnbench.convert.config import ConvertConfig, Precision
from cnnbench.convert.errors import ConvertError
from cnnbench.convert.export import check_options
from cnnbench.convert.graph import lowered_precision, name_nodes
from cnnbench.convert.onnx_model import OnnxSource, read_source, source_reference, wrap_contract
from cnnbench.convert.real_images import calibration_images, verification_images
from cnnbench.convert.writer import check_writable, needs_external, save_model, staged
from cnnbench.errors import first_line
from cnnbench.files import sha256_file
from cnnbench.infer.runtime.contract import ModelSpec, write_spec
from cnnbench.infer.runtime.preprocess import ForeignOptions

ROUTE = "onnx-wrap"


@dataclass(frozen=True)
class ConvertResult:
    path: str
    quant: QuantResult | None  # int8 only: what the accuracy control reached


def is_keras_file(path: str) -> bool:
    """A .keras archive (a zip) rather than an ONNX file."""
    import zipfile

    return path.endswith(".keras") or (os.path.isfile(path) and zipfile.is_zipfile(path))


def convert_onnx(cfg: ConvertConfig, report: Callable[[str], None] | None = None) -> ConvertResult:
    """Wrap `cfg.model` into the contract, lower its precision, verify it against the source
    as `infer` runs the source, and atomically write `cfg.output`."""
    report = report or (lambda line: None)
    check_writable(cfg.output)
    check_options(cfg)
    check_not_lowered(cfg)
    source, session = read_source(cfg.model, cfg.foreign or ForeignOptions())
    facts, policy = source.facts, source.fmt.policy
    calibration = calibration_images(cfg.calibration, facts, policy, report)
    real = None
    if cfg.verify:
        labels = source.fmt.labels
        real = verification_images(cfg.verify_images, calibration, facts, policy, labels, report)
    model = load_onnx(cfg.model)
    if not source.is_contract:
        wrap_contract(model, source)
    name_nodes(model.graph)
    write_spec(model, build_spec(cfg, source, model))
    model.producer_name, model.producer_version = "cnnbench", __version__
    external = needs_external(model, cfg.external_data)
    with staged(cfg.output) as path:
        quant = None
        if cfg.precision is Precision.FP32:
            save_model(model, path, external)
        else:
            fp32 = f"{path}.fp32.onnx"
            save_model(model, fp32, external)
            quant = lower_file(fp32, path, cfg, calibration, real, external, report)
        del model
        if cfg.verify:
            from cnnbench.convert.verify import verify_export

            reference = source_reference(session, source.fmt)
            extra = quant.checks() if quant else []
            report(f"source: {source.fmt.describe()}; scores {source.scores}")
            verify_export(
                reference, path, facts, cfg.precision, report, real, against="source", extra=extra
            )
    return ConvertResult(cfg.output, quant)


def check_not_lowered(cfg: ConvertConfig) -> None:
    """--precision lowers an fp32 model: one line when the source is lowered already (its
    quantizer or fp16 converter would fail on their own nodes, in a traceback)."""
    if cfg.precision is not Precision.FP32 and (found := lowered_precision(cfg.model)):
        raise ConvertError(
            f"{cfg.model} is {found} already (its weights): --precision {cfg.precision.value} "
            f"lowers an fp32 model; give the fp32 model it came from, or leave --precision "
            "out to wrap this one as it is"
        )


def load_onnx(path: str) -> Any:
    import onnx

    try:
        return onnx.load(path)
    except Exception as e:  # protobuf's DecodeError, a missing external data file, ...
        raise ConvertError(f"cannot read {path} as ONNX: {first_line(e)}") from e


def build_spec(cfg: ConvertConfig, source: OnnxSource, model: Any) -> ModelSpec:
    """The spec of the wrapped file: the source's spec (a cnnbench model) or what the
    foreign options said, with the resize policy and labels infer resolved."""
    import onnx
    import onnxruntime

    fmt = source.fmt
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    base = fmt.spec or ModelSpec(
        input_size=fmt.size,
        channels=fmt.channels,
        labels=fmt.labels,
        architecture=os.path.splitext(os.path.basename(cfg.model))[0],
        preprocessing=wrapped_preprocessing(source),
    )
    return replace(
        base,
        input_size=fmt.size,
        labels=fmt.labels,
        channel_order="GRAY" if fmt.channels == 1 else "RGB",
        layout="NHWC",
        input_dtype="uint8",
        pixel_range=(0, 255),
        **fmt.policy.to_dict(),
        source_sha256=sha256_file(cfg.model),
        created_by=f"cnnbench {__version__}",
        route=ROUTE if fmt.spec is None else base.route,
        precision=cfg.precision.value,
        opset=opset,
        versions={"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    )


def wrapped_preprocessing(source: OnnxSource) -> str:
    """What the nodes in front of the source graph do, in words."""
    fmt = source.fmt
    parts = ["RGB to BGR"] if fmt.bgr and fmt.channels == 3 else []
    if fmt.dtype.name != "uint8" and fmt.affine is not None:
        scale = f"x * {fmt.scale:.8g}"
        mean = f" - {','.join(f'{v:g}' for v in fmt.mean)}" if fmt.mean else ""
        std = f" / {','.join(f'{v:g}' for v in fmt.std)}" if fmt.std else ""
        parts.append(f"({scale}{mean}){std}" if std else f"{scale}{mean}")
    if fmt.layout.value == "nchw":
        parts.append("NHWC to NCHW")
    if source.softmax:
        parts.append("softmax over the source's logits")
    return "; ".join(parts) or "none: the source takes 0..255 as they are"


def quantize_int8(
    source: str,
    output: str,
    calibration: str,
    verify_images: str | None = None,
    max_drop: float = 1.0,
    foreign: ForeignOptions | None = None,
    report: Callable[[str], None] | None = None,
) -> QuantResult:
    """An accuracy-controlled int8 contract model of the ONNX file `source`, written to
    `output`: calibrated on `calibration`, within `max_drop` top-1 points of fp32 on
    `verify_images` (labelled class folders: accuracy; else agreement; default: the
    calibration images). `foreign`: how to feed a model without a cnnbench spec.
    ConvertError (nothing written) when the bound cannot be met."""
    cfg = ConvertConfig(
        model=source,
        output=output,
        precision=Precision.INT8,
        calibration=calibration,
        verify_images=verify_images,
        max_drop=max_drop,
        foreign=foreign,
    )
    result = convert_onnx(cfg, report)
    assert result.quant is not None, "int8 with verification always measures"
    return result.quant
