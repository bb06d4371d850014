"""The top-level click group: each stage owns its commands, attached here.

A command's module is imported when that command runs (or `--help` lists them all), so
`cnnbench infer` loads neither bench's, convert's nor training's command modules: on a
small job, start-up counts (docs/fast.md, "Start-up of a small job").
"""

import importlib

import click

from cnnbench import __version__
from cnnbench.files import FULL_OR_READ_ONLY, cannot_write_line
from cnnbench.native_logs import filtered_native_stderr
from cnnbench.signals import SignalStop, how_stopped, stop_signal

# command name -> (module, attribute)
COMMANDS = {
    "train": ("cnnbench.training.cli", "train"),
    "convert": ("cnnbench.convert.cli", "convert"),
    "infer": ("cnnbench.infer.cli", "infer"),
    "bench": ("cnnbench.bench.cli", "bench"),
    "inspect": ("cnnbench.bench.cli", "inspect"),
    "tune": ("cnnbench.bench.cli", "tune"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def invoke(self, ctx: click.Context) -> object:
        """A disk or folder that cannot take a file a command writes (a full disk, a
        read-only mount) is one line, from any command: the file being written is
        removed, the outputs before it stay (bench's report is printed first).

        SIGTERM stops a command as Ctrl-C does (`cnnbench.signals`): its clean-up runs
        (convert's staging folder, train's run folder are removed; SIGTERM's default
        left them behind), one line says so, and it exits 128 + the signal (130, 143)
        rather than click's "Aborted!" and 1. infer and bench stop their own way first
        (rows or measurements kept)."""
        try:
            with stop_signal() as stopped:
                return super().invoke(ctx)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, SignalStop) else stopped.signum
            click.echo(f"{how_stopped(signum)}: the command stopped before its end", err=True)
            ctx.exit(128 + signum)
        except OSError as e:
            if e.errno not in FULL_OR_READ_ONLY:
                raise
            raise click.ClickException(cannot_write_line(e, "run the command again")) from e

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
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


def main() -> None:
    cli(prog_name="cnnbench")
