"""What `bench` is asked (BenchConfig) and what it finds (BenchReport and its rows), as
dataclasses from the measurement to the writers; only the writers turn them into dicts.

Every other bench module imports from here, and this module imports none of them, so the
package has no import cycle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from cnnbench.bench.flops import GraphFacts
from cnnbench.bench.measure import Stats, Timing, Validity
from cnnbench.bench.zoo import default_cache_dir
from cnnbench.infer.runtime.preprocess import ForeignOptions, InputFormat, Layout
from cnnbench.infer.runtime.session import Provider, RuntimeOptions

DEFAULT_MAX_BATCH = 256


class Baseline(enum.StrEnum):
    KERAS = "keras"


class Scenario(enum.StrEnum):
    """MLPerf LoadGen's scenarios."""

    OFFLINE = "offline"  # the batch sweep: throughput is the headline
    SINGLE_STREAM = "single-stream"  # batch 1, one query at a time: p90 is the headline
    SERVER = "server"  # Poisson arrivals: the highest rate whose p99 fits the bound


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...] = ()
    archs: tuple[str, ...] = ()
    providers: tuple[Provider, ...] | None = None  # None: every provider that loads
    precision_hints: tuple[str, ...] = ("auto",)  # OpenVINO only: one configuration each
    batch_sizes: tuple[int, ...] | None = None  # None: the doubling sweep
    max_batch: int = DEFAULT_MAX_BATCH
    sweep_patience: int = 1  # doublings in a row that may gain < 5% before the sweep stops
    scenario: Scenario = Scenario.OFFLINE
    concurrency: tuple[int, ...] = (1,)
    timing: Timing = field(default_factory=Timing)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    foreign: ForeignOptions = field(default_factory=ForeignOptions)
    images: str | None = None
    baseline: Baseline | None = None
    max_latency_ms: float | None = None
    profile: bool = False
    cache_dir: str = field(default_factory=default_cache_dir)
    peak: bool = True


@dataclass(frozen=True)
class Target:
    label: str
    path: str
    keras_path: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """One runtime configuration: a provider, and for OpenVINO the precision hint."""

    provider: Provider
    hint: str = "auto"

    @property
    def label(self) -> str:
        return self.provider.value if self.provider is not Provider.OPENVINO else "openvino"


@dataclass(frozen=True)
class Copies:
    """GPU: `session.run` with numpy in and out (both host-device copies included)."""

    stats: Stats
    stable: bool
    spread: float


@dataclass(frozen=True)
class Accuracy:
    """Top-1 on the labelled images, and agreement with the reference configuration."""

    images: int
    top1: float | None  # None: no folder name is one of the model's labels
    agreement: float | None  # share of images whose top-1 equals the reference's
    reference: str


@dataclass
class Result:
    """One model on one runtime configuration at one batch size and concurrency."""

    model: str
    architecture: str
    precision: str  # what really ran (OpenVINO: read back from the compiled model)
    provider: str
    precision_hint: str
    scenario: str
    batch_size: int
    concurrency: int
    threads: int
    stats: Stats
    validity: Validity
    stable: bool
    spread: float
    p50_spread: float
    window_ips: list[float]
    window_p50_ms: list[float]
    warmup_runs: int
    seconds: float
    latencies_ms: list[float]
    gflops_per_s: float | None = None
    peak_pct: float | None = None
    peak_basis: str | None = None  # the peak peak_pct is against: 'cpu fp32', 'openvino bf16'
    with_copies: Copies | None = None
    accuracy: Accuracy | None = None

    @property
    def config_key(self) -> tuple:
        return (self.model, self.provider, self.precision)

    def progress_line(self, name: str) -> str:
        """'  NAME batch 8 x1: 1234.5 img/s, p99 0.4 ms': said as each row is measured,
        so that a sweep of minutes shows where it is (bench and tune)."""
        valid = "" if self.validity.valid else f"  {self.validity}"
        return (
            f"  {name} batch {self.batch_size} x{self.concurrency}: "
            f"{self.stats.throughput_ips:.1f} img/s, p99 {self.stats.p99_or_max_ms:.1f} ms{valid}"
        )


@dataclass(frozen=True)
class ColdStart:
    session_ms: float
    first_run_ms: float


@dataclass
class ModelInfo:
    model: str
    path: str
    architecture: str
    precision: str
    input_shape: list[int]
    facts: GraphFacts
    cold_start: dict[str, ColdStart] = field(default_factory=dict)  # by configuration label
    sweep_end: dict[str, str] = field(default_factory=dict)
    fmt: InputFormat | None = field(default=None, repr=False)  # resolved once, not written


@dataclass(frozen=True)
class StageTimes:
    """Milliseconds per image in each stage of the folder pipeline, measured one after the
    other on the same images; read and decode run on `decode_workers` threads in infer."""

    read_ms: float
    decode_resize_ms: float
    batch_assembly_ms: float
    run_ms: float
    write_ms: float
    decode_workers: int

    def effective_ms(self) -> dict[str, float]:
        """Per-image cost of each stage once read and decode are spread over the workers."""
        w = max(1, self.decode_workers)
        return {
            "read": self.read_ms / w,
            "decode+resize": self.decode_resize_ms / w,
            "batch assembly": self.batch_assembly_ms,
            "run": self.run_ms,
            "write": self.write_ms,
        }

    @property
    def bottleneck(self) -> str:
        eff = self.effective_ms()
        return max(eff, key=eff.__getitem__)


@dataclass(frozen=True)
class EndToEnd:
    model: str
    provider: str
    precision: str
    batch_size: int
    images: int
    errors: int
    pipeline_ips: float
    model_only_ips: float
    stages: StageTimes
    bottleneck: str
    accuracy: Accuracy | None = None

    @property
    def ratio(self) -> float:
        return self.pipeline_ips / self.model_only_ips


@dataclass(frozen=True)
class KerasBaseline:
    model: str
    runtime: str
    batch_size: int
    p50_ms: float
    throughput_ips: float
    ort_p50_ms: float
    ort_speedup: float


@dataclass(frozen=True)
class Recommendation:
    model: str
    max_latency_ms: float
    fits: bool
    provider: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    concurrency: int | None = None
    throughput_ips: float | None = None
    p99_ms: float | None = None  # p99, or the max where too few runs for a p99
    lowest_p99_ms: float | None = None  # when nothing fits


@dataclass(frozen=True)
class ServerTry:
    target_qps: float
    achieved_qps: float
    queries: int
    p50_ms: float
    p90_ms: float
    p99_ms: float | None
    passed: bool


@dataclass
class ServerResult:
    """The highest Poisson rate whose p99 stays under the bound, and every rate tried."""

    model: str
    provider: str
    precision: str
    concurrency: int
    max_latency_ms: float
    tries: list[ServerTry]
    best: ServerTry | None
    next_over: ServerTry | None  # the lowest rate tried above `best`, which failed
    validity: Validity
    accuracy: Accuracy | None = None


@dataclass(frozen=True)
class OpShare:
    op_type: str
    ms_per_run: float
    share: float


@dataclass(frozen=True)
class Profile:
    """Top operator types by share of run time (ORT's profiler; OpenVINO's counters)."""

    model: str
    provider: str
    precision: str
    batch_size: int
    runs: int
    measured_ms_per_run: float  # median wall time of the profiled runs
    ops_ms_per_run: float  # median of the operators' time summed per run
    ops: list[OpShare]
    coverage: float  # median over the runs of operators' time / the run's wall time


@dataclass
class Machine:
    cpu: str
    cores: int | None
    load_average: list[float] | None
    gpus: list[dict[str, str]]
    platform: str
    python: str
    onnxruntime: str
    openvino: str | None
    available_providers: list[str]
    cnnbench: str
    command: str


@dataclass
class BenchReport:
    machine: Machine
    config: BenchConfig
    providers: list[str]
    skipped_providers: dict[str, str]
    peaks_gflops: dict[str, float]
    models: list[ModelInfo] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    server: list[ServerResult] = field(default_factory=list)
    end_to_end: list[EndToEnd] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    baselines: list[KerasBaseline] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    interrupted: str = ""  # what a Ctrl-C or SIGTERM cut short; "" when the run ended

    def best(self, model: str, provider: str, precision: str | None = None) -> Result | None:
        rows = [
            r
            for r in self.results
            if r.model == model
            and r.provider == provider
            and (precision is None or r.precision == precision)
        ]
        return max(rows, key=lambda r: r.stats.throughput_ips, default=None)


def make_images(fmt: InputFormat, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, *fmt.size, fmt.channels), dtype=np.uint8)


def input_shape(fmt: InputFormat, batch: int) -> tuple[int, ...]:
    h, w = fmt.size
    if fmt.layout is Layout.NCHW:
        return (batch, fmt.channels, h, w)
    return (batch, h, w, fmt.channels)
