"""Writers: the readable tables, Markdown, CSV and JSON. Figures are formatted here only."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import (
    PERCENTILE_METHOD,
    PERCENTILES,
    REPEATABLE,
    STABLE_TOLERANCE,
    STABLE_WINDOWS,
    SWEEP_MIN_GAIN,
)
from cnnbench.files import atomic_open, unwritable

if TYPE_CHECKING:
    from cnnbench.bench.run import BenchConfig, BenchReport

SCHEMA = "cnnbench.bench/1"
BUSY_LOAD = 1.0  # a 1-minute load average this high before we start: someone else is running


def methodology(cfg: BenchConfig) -> dict[str, str]:
    t = cfg.timing
    window = f"{t.iterations} runs" if t.iterations else f"{t.duration:g} s"
    return {
        "warmup": f"up to {t.warmup} runs (at most one window's time) per configuration, excluded",
        "timer": "time.perf_counter_ns around each run only. CPU: session.run on numpy inputs. "
        "GPU: IO binding, input already on the device, outputs left there, "
        "synchronize_outputs() inside the timed span; 'copies' figures are session.run with "
        "numpy in and out (both host-device copies included)",
        "windows": f"windows of {window} repeated until {STABLE_WINDOWS} in a row agree within "
        f"{STABLE_TOLERANCE:.0%} in img/s (perf_analyzer's rule) or {t.max_seconds:g} s; "
        f"figures over those {STABLE_WINDOWS} windows, spread = (max-min)/min of their img/s",
        "repeatability": f"p50 spread = (max-min)/min of the windows' medians; above "
        f"{REPEATABLE:.0%} the report says the machine was too noisy",
        "cold_start": "session creation and first run, timed apart, never in the figures",
        "percentiles": f"numpy.percentile method='{PERCENTILE_METHOD}' (Hyndman-Fan type 7)",
        "throughput": "images per second = batch x runs / summed latency",
        "sweep": f"batch 1, 2, 4, ... until a doubling gains < {SWEEP_MIN_GAIN:.0%} img/s over "
        f"the best so far, memory runs out, or --max-batch {cfg.max_batch}",
        "flops": "2 x multiply-accumulates of Conv, Gemm and MatMul (and quantized forms) from "
        "ONNX shape inference at batch 1; peak = the fastest float32 n x n MatMul (CPU n = 512, "
        "1024; GPU 4096, 8192) at p50 on the same provider",
    }


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], Any]
    fmt: str = ""
    width: int = 8


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, fmt)


def _stat(key: str) -> Callable[[Any], Any]:
    return lambda r: r.stats[key]


def _copies(r: Any) -> float | None:
    return r.with_copies["throughput_ips"] if r.with_copies else None


RESULT_COLUMNS = [
    Column("model", lambda r: r.model, "", 20),
    Column("prec", lambda r: r.precision, "", 7),
    Column("provider", lambda r: r.provider, "", 8),
    Column("batch", lambda r: r.batch_size, "d", 5),
    Column("min ms", _stat("min_ms"), ".3f"),
    *[Column(f"p{p} ms", _stat(f"p{p}_ms"), ".3f") for p in PERCENTILES],
    Column("max ms", _stat("max_ms"), ".3f"),
    Column("img/s", _stat("throughput_ips"), ".1f", 9),
    Column("±ips%", lambda r: 100 * r.spread, ".1f", 5),
    Column("±p50%", lambda r: 100 * r.p50_spread, ".1f", 5),
    Column("GFLOP/s", lambda r: r.gflops_per_s, ".1f"),
    Column("%peak", lambda r: r.peak_pct, ".0f", 5),
    Column("copies img/s", _copies, ".1f", 12),
]


class SummaryRow(NamedTuple):
    """One model on one provider: its facts, batch 1, and its best batch."""

    info: Any  # ModelInfo
    provider: str
    first: Any  # Result at the smallest batch measured
    best: Any  # Result with the highest img/s


def _cold(row: SummaryRow) -> str:
    c = row.info.cold_start.get(row.provider)
    return f"{c['session_ms']:.0f}+{c['first_run_ms']:.0f}" if c else "-"


SUMMARY_COLUMNS = [
    Column("model", lambda s: s.info.model, "", 20),
    Column("architecture", lambda s: s.info.architecture, "", 12),
    Column("prec", lambda s: s.info.precision, "", 7),
    Column("provider", lambda s: s.provider, "", 8),
    Column("input", lambda s: "x".join(map(str, s.info.input_shape[1:])), "", 11),
    Column("params M", lambda s: s.info.facts["params"] / 1e6, ".2f", 9),
    Column("GFLOPs/img", lambda s: s.info.facts["gflops_per_image"], ".3f", 10),
    Column("batch", lambda s: s.first.batch_size, "d", 5),
    Column("p50 ms", lambda s: s.first.stats["p50_ms"], ".3f"),
    Column("p99 ms", lambda s: s.first.stats["p99_ms"], ".3f"),
    Column("best img/s", lambda s: s.best.stats["throughput_ips"], ".1f", 10),
    Column("at batch", lambda s: s.best.batch_size, "d", 8),
    Column("%peak", lambda s: s.best.peak_pct, ".0f", 5),
    Column("cold ms", _cold, "", 9),
]


SUMMARY_TITLE = (
    "summary: batch = the smallest measured, best = the highest img/s, "
    "cold = session creation + first run in ms"
)


def summary_rows(report: BenchReport) -> list[SummaryRow]:
    rows = []
    for info in report.models:
        for provider in report.providers:
            mine = [r for r in report.results if r.model == info.model and r.provider == provider]
            if mine:
                first = min(mine, key=lambda r: r.batch_size)
                rows.append(SummaryRow(info, provider, first, report.best(info.model, provider)))
    return rows


def present(columns: list[Column], rows: list[Any]) -> list[Column]:
    """The columns with at least one value (no 'copies' column without a GPU)."""
    return [c for c in columns if any(c.value(r) is not None for r in rows)] if rows else columns


def _cells(columns: list[Column], row: Any) -> list[str]:
    out = []
    for c in columns:
        v = c.value(row)
        out.append(_num(c.fmt)(v) if c.fmt else str(v))
    return out


def text_table(columns: list[Column], rows: Iterable[Any]) -> list[str]:
    def line(cells: list[str]) -> str:
        return " ".join(
            f"{x[-c.width :]:<{c.width}}" if not c.fmt else f"{x:>{c.width}}"
            for c, x in zip(columns, cells, strict=True)
        ).rstrip()

    return [line([c.header for c in columns]), *(line(_cells(columns, r)) for r in rows)]


def markdown_table(columns: list[Column], rows: Iterable[Any]) -> list[str]:
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.fmt else "---" for c in columns) + "|"
    return [head, rule, *("| " + " | ".join(_cells(columns, r)) + " |" for r in rows)]


def notes(report: BenchReport) -> list[str]:
    """What a reader must know to trust (or distrust) the figures."""
    out = [f"provider {p} skipped: {why}" for p, why in report.skipped_providers.items()]
    out += [f"peak {p}: {g:.1f} GFLOP/s (float32 MatMul)" for p, g in report.peaks_gflops.items()]
    for m in report.models:
        out += [f"{m.model} on {p}: sweep ended: {why}" for p, why in m.sweep_end.items()]
    load, cores = report.machine.get("load_average"), report.machine.get("cores") or 1
    if load and load[0] >= BUSY_LOAD:
        out.append(
            f"other processes were running: load average {load[0]:.1f} on {cores} cores when "
            "the run started; all-core figures (--threads 0) suffer most, try --threads 1"
        )
    unstable = [r for r in report.results if not r.stable]
    if unstable:
        worst = max(r.spread for r in unstable)
        out.append(
            f"machine too noisy: {len(unstable)} of {len(report.results)} configurations did not "
            f"settle ({STABLE_WINDOWS} windows within {STABLE_TOLERANCE:.0%}) before the time "
            f"cap; worst img/s spread {worst:.0%}"
        )
    wobbly = [r for r in report.results if r.p50_spread > REPEATABLE]
    if wobbly:
        w = max(wobbly, key=lambda r: r.p50_spread)
        out.append(
            f"machine too noisy for {REPEATABLE:.0%} repeatability at the median: in "
            f"{len(wobbly)} of {len(report.results)} configurations the windows' p50 differ "
            f"by more (worst {w.p50_spread:.0%}: {w.model} {w.provider} batch "
            f"{w.batch_size}); expect a rerun to differ about as much"
        )
    return out


def extra_lines(report: BenchReport) -> list[str]:
    out = []
    for e in report.end_to_end:
        out.append(
            f"end to end {e['model']} on {e['provider']} (batch {e['batch_size']}, "
            f"{e['images']} images): {e['pipeline_ips']:.1f} img/s vs model-only "
            f"{e['model_only_ips']:.1f} ({e['ratio']:.0%}); bottleneck: {e['bottleneck']}"
        )
    for b in report.baselines:
        out.append(
            f"{b['model']} batch {b['batch_size']}: {b['runtime']} {b['throughput_ips']:.1f} "
            f"img/s (p50 {b['p50_ms']:.2f} ms); ONNX Runtime is {b['ort_speedup']:.2f}x faster"
        )
    for rec in report.recommendations:
        if rec["fits"]:
            out.append(
                f"under p99 {rec['max_latency_ms']:g} ms, {rec['model']}: {rec['provider']} "
                f"batch {rec['batch_size']} -> {rec['throughput_ips']:.1f} img/s "
                f"(p99 {rec['p99_ms']:.2f} ms)"
            )
        else:
            out.append(
                f"under p99 {rec['max_latency_ms']:g} ms, {rec['model']}: no configuration "
                f"fits (lowest p99 {rec['lowest_p99_ms']:.2f} ms)"
            )
    return out


def precision_lines(report: BenchReport, table: Callable = text_table) -> list[str]:
    """Side by side per architecture when files of several precisions were given."""
    by_arch: dict[str, set[str]] = {}
    for m in report.models:
        by_arch.setdefault(m.architecture, set()).add(m.precision)
    archs = {a for a, precs in by_arch.items() if len(precs) > 1}
    if not archs:
        return []
    rows = []
    for m in (m for m in report.models if m.architecture in archs):
        for provider in report.providers:
            best = report.best(m.model, provider)
            if best is not None:
                rows.append(best)
    columns = [RESULT_COLUMNS[i] for i in (0, 1, 2, 3, 5, 8, 10, 11, 12)]
    return ["best configuration per precision:", "", *table(columns, rows)]


def render(report: BenchReport, cfg: BenchConfig, markdown: bool = False) -> str:
    """The whole report as readable text, or as Markdown for a README."""
    table = markdown_table if markdown else text_table
    bullet = "- " if markdown else ""
    summary = summary_rows(report)
    gap = [""] if markdown else []
    lines = [*table(present(RESULT_COLUMNS, report.results), report.results), ""]
    lines += [SUMMARY_TITLE, *gap, *table(present(SUMMARY_COLUMNS, summary), summary), ""]
    if precision := precision_lines(report, table):
        lines += [*precision, ""]
    lines += [bullet + line for line in extra_lines(report) + notes(report)]
    lines += ["", "methodology:", ""] if markdown else ["", "methodology:"]
    lines += [f"{bullet or '  '}{k}: {v}" for k, v in methodology(cfg).items()]
    return "\n".join(lines)


def to_json(report: BenchReport, cfg: BenchConfig) -> dict:
    return {
        "schema": SCHEMA,
        "methodology": methodology(cfg),
        "machine": report.machine,
        "config": report.config,
        "providers": report.providers,
        "skipped_providers": report.skipped_providers,
        "peaks_gflops": report.peaks_gflops,
        "models": [m.to_dict() for m in report.models],
        "results": [r.to_dict() for r in report.results],
        "end_to_end": report.end_to_end,
        "baselines": report.baselines,
        "recommendations": report.recommendations,
        "notes": notes(report),
    }


CSV_FIELDNAMES = (
    *("model", "architecture", "precision", "provider", "batch_size", "threads"),
    *("min_ms", "mean_ms", *[f"p{p}_ms" for p in PERCENTILES], "max_ms", "throughput_ips"),
    *(
        "spread",
        "p50_spread",
        "stable",
        "iterations",
        "gflops_per_s",
        "peak_pct",
        "copies_throughput_ips",
    ),
)


def csv_rows(report: BenchReport) -> Iterable[dict]:
    for r in report.results:
        row = {k: getattr(r, k) for k in CSV_FIELDNAMES[:6]} | r.stats
        yield row | {
            "spread": r.spread,
            "p50_spread": r.p50_spread,
            "stable": r.stable,
            "iterations": r.iterations,
            "gflops_per_s": r.gflops_per_s,
            "peak_pct": r.peak_pct,
            "copies_throughput_ips": _copies(r),
        }


def atomic_write(path: str, write: Callable[[Any], None], newline: str | None = None) -> None:
    """Write through a temporary file beside `path`: never a half-written output."""
    if why := unwritable(path):
        raise BenchError(f"cannot write {path}: {why}")
    with atomic_open(path, newline=newline) as f:
        write(f)


def write_json(path: str, report: BenchReport, cfg: BenchConfig) -> None:
    atomic_write(path, lambda f: json.dump(to_json(report, cfg), f, indent=2))


def write_csv(path: str, report: BenchReport) -> None:
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDNAMES, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_rows(report))

    atomic_write(path, write, newline="")


def write_markdown(path: str, report: BenchReport, cfg: BenchConfig) -> None:
    atomic_write(path, lambda f: f.write(render(report, cfg, markdown=True) + "\n"))
