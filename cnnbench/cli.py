"""The top-level click group: each stage owns its commands, attached here."""

import click

from cnnbench import __version__
from cnnbench.bench.cli import bench, inspect, tune
from cnnbench.convert.cli import convert
from cnnbench.infer.cli import infer
from cnnbench.native_logs import filtered_native_stderr
from cnnbench.training.cli import train

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="cnnbench")
def cli() -> None:
    """Train image classifiers, export them to ONNX, classify folders, benchmark.

    \b
    Example:
      cnnbench train mnist_cnn --data digits --epochs 5 --out run
      cnnbench convert run/model.keras -o model.onnx
      cnnbench infer model.onnx images/ -o predictions.csv
      cnnbench bench --model model.onnx
      cnnbench inspect model.onnx
    """
    click.get_current_context().with_resource(filtered_native_stderr())


for command in (train, convert, infer, bench, inspect, tune):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="cnnbench")
