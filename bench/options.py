"""`bench`'s option groups: each a decorator that hands the command one typed object
(what to measure, how long, where the report goes), values checked as click reads them.
The runtime and foreign-model options come from infer's (written once there)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import DEFAULT_MIN_RUNS, Timing
from cnnbench.bench.results import DEFAULT_MAX_BATCH, Baseline, BenchConfig, Scenario
from cnnbench.files import replaces_input, unwritable
from cnnbench.infer.options import RuntimeSweep, option_group
from cnnbench.infer.runtime.preprocess import ForeignOptions


def parse_batch_sizes(
    ctx: click.Context | None, param: click.Parameter | None, text: str | None
) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers, got {text!r}")
    return tuple(dict.fromkeys(sizes))


def _archs(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    from cnnbench.bench.zoo import parse_archs

    try:
        return parse_archs(text)
    except BenchError as e:
        raise click.ClickException(str(e)) from e


def measure_params() -> list[click.Option]:
    """What `bench` measures: the models, the scenario and its sweep."""
    return [
        click.Option(
            ["--model", "models"],
            multiple=True,
            type=click.Path(dir_okay=False),
            help="ONNX model (repeatable). The first is the reference for agreement.",
        ),
        click.Option(
            ["--arch", "archs"],
            callback=_archs,
            help="Zoo: 'all' or registry names, e.g. vgg16,resnet50; "
            "built with random weights, converted once and cached.",
        ),
        click.Option(
            ["--scenario"],
            type=click.Choice([s.value for s in Scenario], case_sensitive=False),
            default=Scenario.OFFLINE.value,
            show_default=True,
            help="offline: the batch sweep; single-stream: batch 1, p90 headline; server: "
            "Poisson arrivals, the highest rate whose p99 <= --max-latency-ms.",
        ),
        click.Option(
            ["--concurrency"],
            callback=parse_batch_sizes,
            help="e.g. 1,2,4: that many runs in flight at once, the cores split among them "
            "(server: its workers). Default: 1.",
        ),
        click.Option(
            ["--batch-sizes"],
            callback=parse_batch_sizes,
            help="e.g. 1,8,32. Default: 1, 2, 4, ... until throughput stops improving.",
        ),
        click.Option(
            ["--max-batch"],
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_BATCH,
            show_default=True,
            help="Largest batch of the sweep.",
        ),
        click.Option(
            ["--max-latency-ms"],
            type=click.FloatRange(min=0, min_open=True),
            help="Offline: recommend the fastest configuration whose p99 stays under this. "
            "Server: the p99 bound of the rate search.",
        ),
        click.Option(
            ["--images"],
            type=click.Path(file_okay=False),
            help="Folder of class folders: top-1 accuracy and agreement per row, the "
            "pipeline's stages and its bottleneck.",
        ),
        click.Option(
            ["--profile"],
            is_flag=True,
            help="Top operator types by share of run time (ORT profiler; OpenVINO counters).",
        ),
        click.Option(
            ["--baseline"],
            type=click.Choice(list(Baseline), case_sensitive=False),
            help="Also time the zoo models in Keras.",
        ),
        click.Option(
            ["--cache-dir"],
            type=click.Path(file_okay=False),
            help="Zoo models' cache [default: $CNNBENCH_CACHE or ~/.cache/cnnbench].",
        ),
        click.Option(["--no-peak"], is_flag=True, help="Skip the matmul peak measurement."),
    ]


@dataclass(frozen=True)
class MeasureOptions:
    """What `bench` measures (its BenchConfig, less the runtimes, timing and foreign
    options, which come from groups of their own)."""

    models: tuple[str, ...]
    archs: tuple[str, ...]
    scenario: Scenario
    concurrency: tuple[int, ...]
    batch_sizes: tuple[int, ...] | None
    max_batch: int
    max_latency_ms: float | None
    images: str | None
    profile: bool
    baseline: Baseline | None
    cache_dir: str | None
    peak: bool

    def config(
        self, runtimes: RuntimeSweep, timing: Timing, foreign: ForeignOptions
    ) -> BenchConfig:
        from cnnbench.bench.zoo import default_cache_dir

        return BenchConfig(
            models=self.models,
            archs=self.archs,
            providers=runtimes.providers,
            precision_hints=runtimes.precision_hints,
            batch_sizes=self.batch_sizes,
            max_batch=self.max_batch,
            scenario=self.scenario,
            concurrency=self.concurrency,
            timing=timing,
            runtime=runtimes.runtime,
            foreign=foreign,
            images=self.images,
            baseline=self.baseline,
            max_latency_ms=self.max_latency_ms,
            profile=self.profile,
            cache_dir=self.cache_dir or default_cache_dir(),
            peak=self.peak,
        )


def _measure(
    models: tuple[str, ...],
    archs: tuple[str, ...],
    scenario: str,
    concurrency: tuple[int, ...] | None,
    batch_sizes: tuple[int, ...] | None,
    max_batch: int,
    max_latency_ms: float | None,
    images: str | None,
    profile: bool,
    baseline: str | None,
    cache_dir: str | None,
    no_peak: bool,
) -> MeasureOptions:
    return MeasureOptions(
        models=models,
        archs=archs,
        scenario=Scenario(scenario),
        concurrency=concurrency or (1,),
        batch_sizes=batch_sizes,
        max_batch=max_batch,
        max_latency_ms=max_latency_ms,
        images=images,
        profile=profile,
        baseline=Baseline(baseline) if baseline else None,
        cache_dir=cache_dir,
        peak=not no_peak,
    )


measure_options = option_group("measure", measure_params, _measure)
"""--model, --arch, the scenario and sweep, --images, ... as one `measure: MeasureOptions`."""


def timing_params() -> list[click.Option]:
    return [
        click.Option(
            ["--warmup"],
            type=click.IntRange(min=0),
            default=5,
            show_default=True,
            help="Untimed runs before each configuration.",
        ),
        click.Option(["--iterations"], type=click.IntRange(min=1), help="Runs per window."),
        click.Option(
            ["--duration"],
            type=click.FloatRange(min=0.001),
            default=1.0,
            show_default=True,
            help="Seconds per window, at least (when --iterations is not given).",
        ),
        click.Option(
            ["--min-runs"],
            type=click.IntRange(min=1),
            default=DEFAULT_MIN_RUNS,
            show_default=True,
            help="Timed runs per configuration, at least; fewer within --max-seconds: INVALID.",
        ),
        click.Option(
            ["--max-seconds"],
            type=click.FloatRange(min=0),
            default=30.0,
            show_default=True,
            help="Time cap per configuration (server: per search).",
        ),
    ]


timing_options = option_group("timing", timing_params, Timing)
"""--warmup, --iterations, --duration, --min-runs, --max-seconds as one `timing: Timing`."""


@dataclass(frozen=True)
class ReportFiles:
    """Where `bench` writes its report besides the terminal (None: not written)."""

    json: str | None = None
    csv: str | None = None
    markdown: str | None = None
    plot: str | None = None

    def check(self, inputs: tuple[str, ...] = ()) -> None:
        """Fail before measuring, not after minutes of it, when one cannot be written, or
        would replace one of the `inputs` (the models)."""
        for option, path in self.by_option().items():
            if path is None:
                continue
            why = unwritable(path)
            if not why and (why := replaces_input(path, inputs, images=option == "--plot")):
                why += "; choose another path"
            if why:
                raise click.BadParameter(f"cannot write {path}: {why}", param_hint=option)
        if self.plot and not self.plot.lower().endswith(".png"):
            raise click.BadParameter(
                f"give a file name ending in .png, got {self.plot!r}", param_hint="--plot"
            )

    def by_option(self) -> dict[str, str | None]:
        return {
            "--json": self.json,
            "--csv": self.csv,
            "--markdown": self.markdown,
            "--plot": self.plot,
        }


def report_params() -> list[click.Option]:
    return [
        click.Option(
            ["--json"],
            type=click.Path(dir_okay=False),
            help="Every figure, the methodology and the machine's facts.",
        ),
        click.Option(["--csv"], type=click.Path(dir_okay=False), help="One row per result."),
        click.Option(
            ["--markdown"],
            type=click.Path(dir_okay=False),
            help="The tables as Markdown, for a README.",
        ),
        click.Option(
            ["--plot"],
            type=click.Path(dir_okay=False),
            help="PNG: throughput vs batch size, latency percentiles (needs matplotlib).",
        ),
    ]


report_options = option_group("files", report_params, ReportFiles)
"""--json, --csv, --markdown, --plot as one `files: ReportFiles` argument."""
