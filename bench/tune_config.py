"""What `tune` is asked: a frozen config built once at the command's edge (light to
import: the command line reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnbench.bench.measure import Timing
from cnnbench.infer.runtime.session import Provider, RuntimeOptions

# Shorter windows than bench's defaults, so that a whole search fits in minutes; the same
# rules (three agreeing windows, a minimum of runs) decide what is VALID.
TUNE_TIMING = Timing(warmup=3, duration=0.5, max_seconds=8.0, min_runs=10)
QUICK_MAX_BATCH = 64
# quick search: a batch size sweep stops after two doublings in a row that gain < 5%
QUICK_PATIENCE = 2


@dataclass(frozen=True)
class TuneConfig:
    model: str
    images: str
    output: str  # PLAN.json
    max_drop: float = 1.0  # points of top-1 accuracy (labelled) or agreement with fp32
    latency_budget_ms: float | None = None  # p99 of one batch
    providers: tuple[Provider, ...] | None = None  # None: every one that loads
    time_budget_s: float | None = None
    exhaustive: bool = False
    max_batch: int = QUICK_MAX_BATCH
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    timing: Timing = TUNE_TIMING
