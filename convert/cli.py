"""`cnnbench convert`: a thin shell over `export_onnx`."""

from __future__ import annotations

import enum
from typing import Any

import click

from cnnbench.convert.config import ConvertConfig, InputDtype, Precision, Preprocess
from cnnbench.convert.errors import ConvertError


def enum_option(name: str, default: enum.Enum, help_text: str) -> Any:
    """A --name option offering an Enum's values (click would offer the member names)."""
    values = [member.value for member in type(default)]
    choice = click.Choice(values, case_sensitive=False)
    return click.option(name, type=choice, default=default.value, show_default=True, help=help_text)


FOLDER = click.Path(file_okay=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(), help="ONNX file to write.")
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Class names, one per line (default: labels.txt beside the model).",
)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@enum_option("--input-dtype", InputDtype.UINT8, "Type of the `image` input (0..255 either way).")
@enum_option("--preprocess", Preprocess.NONE, "In-graph preprocessing for float-input models.")
@enum_option(
    "--precision", Precision.FP32, "fp16 is for GPUs; int8 (static QDQ) needs --calibration."
)
@click.option("--calibration", type=FOLDER, help="Image folder for int8 calibration.")
@click.option("--verify-images", type=FOLDER, help="Real images to verify on as well.")
@click.option("--external-data", is_flag=True, help="Weights in OUTPUT.data (automatic > 2 GB).")
@click.option("--no-verify", is_flag=True, help="Skip the checks against Keras.")
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
    external_data: bool,
    no_verify: bool,
) -> None:
    """Export a Keras image classifier (.keras) to self-describing ONNX.

    \b
    Example:
      cnnbench convert runs/digits/model.keras -o digits.onnx
      cnnbench convert vgg16.keras -o vgg16-int8.onnx --preprocess imagenet-caffe \\
          --precision int8 --calibration photos/
    """
    from cnnbench.convert.export import export_onnx

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
        verify=not no_verify,
        external_data=True if external_data else None,
    )
    try:
        path = export_onnx(cfg, report=lambda line: click.echo(line, err=True))
    except ConvertError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {path}", err=True)
