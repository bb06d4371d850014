"""`cnnbench convert`: a thin shell over `export_onnx` (Keras) and `convert_onnx` (ONNX)."""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any

import click

from cnnbench.convert.config import ConvertConfig, InputDtype, Precision, Preprocess
from cnnbench.convert.errors import ConvertError
from cnnbench.infer.options import FOREIGN_NAMES, foreign_preprocessing_options
from cnnbench.infer.runtime.preprocess import ForeignOptions


def enum_option(name: str, default: enum.Enum, help_text: str) -> Any:
    """A --name option offering an Enum's values (click would offer the member names)."""
    values = [member.value for member in type(default)]
    choice = click.Choice(values, case_sensitive=False)
    return click.option(name, type=choice, default=default.value, show_default=True, help=help_text)


FOLDER = click.Path(file_okay=False)
KERAS_ONLY = ("opset", "input_dtype", "preprocess")
ONNX_ONLY = tuple(name for name in FOREIGN_NAMES if name not in ("labels", "scores"))


def check_max_drop(precision: Precision, no_verify: bool) -> None:
    """--max-drop bounds int8 as measured by the checks: anywhere else it would be ignored."""
    source = click.get_current_context().get_parameter_source("max_drop")
    if source is click.core.ParameterSource.DEFAULT:
        return
    if precision is not Precision.INT8:
        raise click.UsageError("--max-drop bounds int8 only; add --precision int8 or leave it out")
    if no_verify:
        raise click.UsageError("--max-drop is measured by the checks: leave out --no-verify")


def check_input_kind(keras: bool) -> None:
    """Options of the other kind of input would be silently ignored: refuse them."""
    ctx = click.get_current_context()
    names = ONNX_ONLY if keras else KERAS_ONLY
    given = [
        f"--{name.replace('_', '-')}"
        for name in names
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        what = (
            "apply to ONNX input: a .keras model says its own input"
            if keras
            else "apply to Keras input: for an ONNX model give --preset, --mean/--std/--scale"
        )
        raise click.UsageError(f"{', '.join(given)} only {what}; leave them out")


def check_not_source(model: str, output: str) -> None:
    """Writing over MODEL would lose the file the checks compare against, and the
    original a user converts from (an fp32 model made int8 in place)."""
    if os.path.exists(output) and os.path.exists(model) and os.path.samefile(model, output):
        raise click.UsageError(
            f"-o {output} is MODEL itself: write the converted model to another file"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="ONNX file to write.")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Class names, one per line (Keras default: labels.txt beside the model).",
)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@enum_option("--input-dtype", InputDtype.UINT8, "Type of the `image` input (0..255 either way).")
@enum_option("--preprocess", Preprocess.NONE, "In-graph preprocessing for float-input models.")
@enum_option(
    "--precision", Precision.FP32, "fp16 is for GPUs; int8 (static QDQ) needs --calibration."
)
@click.option("--calibration", type=FOLDER, help="Image folder for int8 calibration.")
@click.option(
    "--verify-images",
    type=FOLDER,
    help="Real images to verify on as well; int8's --max-drop is measured on them "
    "(class folders named after the labels: accuracy; else agreement with fp32).",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 100),
    default=1.0,
    show_default=True,
    help="int8: top-1 points it may lose against fp32; layers stay float until it holds.",
)
@click.option("--external-data", is_flag=True, help="Weights in OUTPUT.data (automatic > 2 GB).")
@click.option("--no-verify", is_flag=True, help="Skip the checks against the source model.")
@foreign_preprocessing_options(labels=False)
def convert(
    model: str,
    output: str,
    labels: str | None,
    opset: int,
    input_dtype: str,
    preprocess: str,
    precision: str,
    calibration: str | None,
    verify_images: str | None,
    max_drop: float,
    external_data: bool,
    no_verify: bool,
    foreign: ForeignOptions,  # infer's options for ONNX input; --labels is convert's own
) -> None:
    """Export a Keras image classifier (.keras), or wrap any ONNX image classifier, into
    self-describing ONNX: uint8 NHWC RGB `image` in, `probs` out, spec inside.

    An ONNX model without a cnnbench spec takes infer's options (--preset, --labels, ...);
    the file written needs none.

    \b
    Example:
      cnnbench convert runs/digits/model.keras -o digits.onnx
      cnnbench convert vgg16.keras -o vgg16-int8.onnx --preprocess imagenet-caffe \\
          --precision int8 --calibration photos/
      cnnbench convert resnet50.onnx -o resnet50-cnnbench.onnx --preset imagenet \\
          --labels imagenet.txt
      cnnbench convert resnet50-cnnbench.onnx -o resnet50-int8.onnx --precision int8 \\
          --calibration photos/ --verify-images heldout/ --max-drop 1
    """
    from cnnbench.convert.onnx_export import is_keras_file

    check_not_source(model, output)
    keras = is_keras_file(model)
    check_input_kind(keras)
    check_max_drop(Precision(precision), no_verify)
    cfg = ConvertConfig(
        model=model,
        output=output,
        labels=labels,
        opset=opset,
        input_dtype=InputDtype(input_dtype),
        preprocess=Preprocess(preprocess),
        precision=Precision(precision),
        calibration=calibration,
        verify_images=verify_images,
        max_drop=max_drop,
        verify=not no_verify,
        external_data=True if external_data else None,
        foreign=None if keras else dataclasses.replace(foreign, labels_path=labels),
        scores=foreign.scores,
    )
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        path = run_convert(cfg, keras, report)
    except ConvertError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {path}", err=True)


def run_convert(cfg: ConvertConfig, keras: bool, report: Any) -> str:
    if keras:
        from cnnbench.convert.export import export_onnx

        return export_onnx(cfg, report)
    from cnnbench.convert.onnx_export import convert_onnx

    return convert_onnx(cfg, report).path
