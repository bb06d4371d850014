"""`cnnbench convert`: a thin shell over `export_onnx`."""

from __future__ import annotations

import os

import click

from cnnbench.convert.errors import ConvertError
from cnnbench.convert.export import ConvertConfig, Precision, Preprocess


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX file to write."
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    help="Class names, one per line (default: labels.txt beside the model).",
)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@click.option(
    "--preprocess",
    type=click.Choice(list(Preprocess), case_sensitive=False),
    default=Preprocess.NONE,
    show_default=True,
    help="In-graph preprocessing for float-input models.",
)
@click.option("--no-verify", is_flag=True, help="Skip the checks against Keras.")
def convert(
    model: str, output: str, labels: str | None, opset: int, preprocess: str, no_verify: bool
) -> None:
    """Export a Keras image classifier (.keras) to self-describing ONNX.

    \b
    Example:
      cnnbench convert runs/digits/model.keras -o digits.onnx
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    from cnnbench.convert.export import export_onnx

    cfg = ConvertConfig(
        model=model,
        output=output,
        labels=labels,
        opset=opset,
        preprocess=Preprocess(preprocess),
        precision=Precision.FP32,
        verify=not no_verify,
    )
    try:
        path = export_onnx(cfg, report=lambda line: click.echo(line, err=True))
    except ConvertError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"wrote {path}", err=True)
