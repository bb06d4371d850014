"""Writers: the readable tables, Markdown, CSV and JSON. Figures are formatted here only,
and only here are the report's dataclasses turned into dicts."""

from __future__ import annotations

import csv
import dataclasses
import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from cnnbench.bench.errors import BenchError
from cnnbench.bench.flops import GraphFacts
from cnnbench.bench.measure import (
    P99_MIN_SAMPLES,
    PERCENTILE_METHOD,
    PERCENTILES,
    REPEATABLE,
    STABLE_TOLERANCE,
    STABLE_WINDOWS,
    SWEEP_MIN_GAIN,
    Validity,
)
from cnnbench.bench.results import (
    BenchConfig,
    BenchReport,
    ModelInfo,
    Result,
    Scenario,
    ServerResult,
)
from cnnbench.files import atomic_open, unwritable

SCHEMA = "cnnbench.bench/2"
BUSY_LOAD = 1.0  # a 1-minute load average this high before we start: someone else is running
FEW = f"n<{P99_MIN_SAMPLES}"  # in place of a p99 read from too few runs


def methodology(cfg: BenchConfig) -> dict[str, str]:
    t = cfg.timing
    window = f"{t.iterations} runs" if t.iterations else f"at least {t.duration:g} s"
    return {
        "scenario": {
            Scenario.OFFLINE: "offline: batches back to back, img/s is the headline",
            Scenario.SINGLE_STREAM: "single-stream: batch 1, one query at a time, p90 is "
            "the headline (MLPerf SingleStream)",
            Scenario.SERVER: "server: batch-1 queries at Poisson arrivals to max(--concurrency) "
            "workers, latency from scheduled arrival to completion; the rate doubles until "
            "p99 passes --max-latency-ms, then bisects (MLPerf Server)",
        }[cfg.scenario],
        "warmup": f"up to {t.warmup} runs (at most one window's time) per configuration, excluded",
        "timer": "time.perf_counter_ns around each run only. CPU and OpenVINO: session.run / "
        "infer request on numpy inputs. GPU: IO binding, input already on the device, outputs "
        "left there, synchronize_outputs() inside the timed span; 'copies' figures are "
        "session.run with numpy in and out (both host-device copies included)",
        "windows": f"windows of {window} and at least {-(-t.min_runs // STABLE_WINDOWS)} runs, "
        f"repeated until {STABLE_WINDOWS} in a row agree within {STABLE_TOLERANCE:.0%} in img/s "
        f"(perf_analyzer's rule) and hold --min-runs {t.min_runs} runs, or {t.max_seconds:g} s "
        f"pass; figures over those {STABLE_WINDOWS} windows, spread = (max-min)/min of their img/s",
        "validity": f"VALID needs >= {t.min_runs} runs (--min-runs), the window time, "
        f"{STABLE_WINDOWS} agreeing windows and no CPU clock drop; else INVALID with the reasons",
        "concurrency": "N runs in flight from N threads: ONNX Runtime with cores/N intra-op "
        "threads each, OpenVINO compiled for N streams; img/s from the wall clock",
        "repeatability": f"p50 spread = (max-min)/min of the windows' medians; above "
        f"{REPEATABLE:.0%} the report says the machine was too noisy",
        "cold_start": "session creation and first run, timed apart, never in the figures",
        "percentiles": f"numpy.percentile method='{PERCENTILE_METHOD}' (Hyndman-Fan type 7); "
        f"p99 only from >= {P99_MIN_SAMPLES} runs, else '{FEW}'",
        "throughput": "images per second = batch x runs / summed latency (one in flight)",
        "sweep": f"batch 1, 2, 4, ... until a doubling gains < {SWEEP_MIN_GAIN:.0%} img/s over "
        f"the best so far, memory runs out (or would: past 90% of the machine's or the "
        f"container's limit, grown as from the last two sizes), or --max-batch {cfg.max_batch}",
        "precision": "OpenVINO: the precision read back from the compiled model "
        "(INFERENCE_PRECISION_HINT), not the hint asked; ONNX Runtime: the weights'",
        "accuracy": "--images: top-1 against the class folder names, agreement = share of "
        "images with the same top-1 as the first configuration (the reference)",
        "flops": "2 x multiply-accumulates of Conv, Gemm and MatMul (and quantized forms) from "
        "ONNX shape inference at batch 1; peak = the fastest n x n MatMul (CPU n = 512, "
        "1024; GPU 4096, 8192) at p50 on the same provider, in the row's precision: float32 "
        "(OpenVINO: the CPU's), bf16 (OpenVINO with the bf16 hint), int8 (CPU, a QDQ MatMul); "
        "other precisions against their provider's float32 peak (each row's peak_basis)",
    }


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], Any]
    fmt: str = ""
    width: int = 8


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, fmt)


def _p99(stats: Any) -> str:
    return FEW if stats.p99_ms is None else f"{stats.p99_ms:.3f}"


def _copies(r: Result) -> float | None:
    return r.with_copies.stats.throughput_ips if r.with_copies else None


def _pct(v: float | None) -> str | None:
    return None if v is None else f"{100 * v:.1f}%"


def _top1(r: Any) -> str | None:
    return _pct(r.accuracy.top1) if r.accuracy else None


def _agree(r: Any) -> str | None:
    return _pct(r.accuracy.agreement) if r.accuracy else None


def _hint(r: Result) -> str | None:
    """OpenVINO's precision hint, beside the precision that ran."""
    return r.precision_hint if r.provider == "openvino" else None


RESULT_COLUMNS = [
    Column("model", lambda r: r.model, "", 20),
    Column("prec", lambda r: r.precision, "", 5),
    Column("hint", _hint, "", 4),
    Column("provider", lambda r: r.provider, "", 8),
    Column("batch", lambda r: r.batch_size, "d", 5),
    Column("conc", lambda r: r.concurrency if r.concurrency > 1 else None, "d", 4),
    Column("runs", lambda r: r.stats.samples, "d", 5),
    Column("min ms", lambda r: r.stats.min_ms, ".3f"),
    Column("p50 ms", lambda r: r.stats.p50_ms, ".3f"),
    Column("p90 ms", lambda r: r.stats.p90_ms, ".3f"),
    Column("p95 ms", lambda r: r.stats.p95_ms, ".3f"),
    Column("p99 ms", lambda r: _p99(r.stats), "", 8),
    Column("max ms", lambda r: r.stats.max_ms, ".3f"),
    Column("img/s", lambda r: r.stats.throughput_ips, ".1f", 9),
    Column("±ips%", lambda r: 100 * r.spread, ".1f", 5),
    Column("±p50%", lambda r: 100 * r.p50_spread, ".1f", 5),
    Column("GFLOP/s", lambda r: r.gflops_per_s, ".1f"),
    Column("%peak", lambda r: r.peak_pct, ".0f", 5),
    Column("copies img/s", _copies, ".1f", 12),
    Column("top-1", _top1, "", 6),
    Column("agree", _agree, "", 6),
    Column("valid", lambda r: r.validity.label, "", 7),
]


class SummaryRow(NamedTuple):
    """One model on one configuration: its facts, the smallest batch, and its best batch."""

    info: ModelInfo
    provider: str
    hint: str
    precision: str
    first: Result  # at the smallest batch measured, one in flight
    best: Result  # with the highest img/s


def _cold(row: SummaryRow) -> str:
    c = row.info.cold_start.get(f"{row.provider} {row.precision}")
    return f"{c.session_ms:.0f}+{c.first_run_ms:.0f}" if c else "-"


SUMMARY_COLUMNS = [
    Column("model", lambda s: s.info.model, "", 20),
    Column("architecture", lambda s: s.info.architecture, "", 12),
    Column("prec", lambda s: s.precision, "", 5),
    Column("hint", lambda s: _hint(s.best), "", 4),
    Column("provider", lambda s: s.provider, "", 8),
    Column("input", lambda s: "x".join(map(str, s.info.input_shape[1:])), "", 11),
    Column("params M", lambda s: s.info.facts.params / 1e6, ".2f", 9),
    Column("GFLOPs/img", lambda s: s.info.facts.gflops_per_image, ".3f", 10),
    Column("batch", lambda s: s.first.batch_size, "d", 5),
    Column("p50 ms", lambda s: s.first.stats.p50_ms, ".3f"),
    Column("p90 ms", lambda s: s.first.stats.p90_ms, ".3f"),
    Column("p99 ms", lambda s: _p99(s.first.stats), "", 8),
    Column("best img/s", lambda s: s.best.stats.throughput_ips, ".1f", 10),
    Column("at batch", lambda s: s.best.batch_size, "d", 8),
    Column("%peak", lambda s: s.best.peak_pct, ".0f", 5),
    Column("top-1", lambda s: _top1(s.best), "", 6),
    Column("agree", lambda s: _agree(s.best), "", 6),
    Column("valid", lambda s: s.best.validity.label, "", 7),
    Column("cold ms", _cold, "", 9),
]

SUMMARY_TITLE = (
    "summary: batch = the smallest measured, best = the highest img/s, "
    "cold = session creation + first run in ms, agree = top-1 agreement with the reference"
)


def _server_best(s: ServerResult, attr: str) -> Any:
    return getattr(s.best, attr) if s.best else None


SERVER_COLUMNS = [
    Column("model", lambda s: s.model, "", 20),
    Column("prec", lambda s: s.precision, "", 5),
    Column("provider", lambda s: s.provider, "", 8),
    Column("workers", lambda s: s.concurrency, "d", 7),
    Column("bound ms", lambda s: s.max_latency_ms, "g", 8),
    Column("rate q/s", lambda s: _server_best(s, "target_qps"), ".1f", 9),
    Column("achieved", lambda s: _server_best(s, "achieved_qps"), ".1f", 9),
    Column("p50 ms", lambda s: _server_best(s, "p50_ms"), ".3f"),
    Column("p99 ms", lambda s: _server_best(s, "p99_ms"), ".3f"),
    Column("next q/s", lambda s: s.next_over.target_qps if s.next_over else None, ".1f", 9),
    Column("its p99", lambda s: s.next_over.p99_ms if s.next_over else None, ".3f"),
    Column("tries", lambda s: len(s.tries), "d", 5),
    Column("top-1", _top1, "", 6),
    Column("agree", _agree, "", 6),
    Column("valid", lambda s: s.validity.label, "", 7),
]


def summary_rows(report: BenchReport) -> list[SummaryRow]:
    rows = []
    for info in report.models:
        configs = dict.fromkeys(
            (r.provider, r.precision_hint, r.precision)
            for r in report.results
            if r.model == info.model
        )
        for config in configs:
            mine = [
                r
                for r in report.results
                if r.model == info.model and (r.provider, r.precision_hint, r.precision) == config
            ]
            first = min(mine, key=lambda r: (r.batch_size, r.concurrency))
            best = max(mine, key=lambda r: r.stats.throughput_ips)
            rows.append(SummaryRow(info, *config, first, best))
    return rows


def present(columns: list[Column], rows: list[Any]) -> list[Column]:
    """The columns with at least one value (no 'copies' column without a GPU)."""
    return [c for c in columns if any(c.value(r) is not None for r in rows)] if rows else columns


def _cells(columns: list[Column], row: Any) -> list[str]:
    out = []
    for c in columns:
        v = c.value(row)
        out.append(_num(c.fmt)(v) if c.fmt else ("-" if v is None else str(v)))
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


def _name(r: Result) -> str:
    conc = f" x{r.concurrency}" if r.concurrency > 1 else ""
    return f"{r.model} {r.provider} {r.precision} batch {r.batch_size}{conc}"


def notes(report: BenchReport, skipped: bool = True) -> list[str]:
    """What a reader must know to trust (or distrust) the figures. `skipped=False` leaves
    out the skipped providers: the terminal got them from the run's log already."""
    out = [report.interrupted] if report.interrupted else []
    if skipped:
        out += [f"provider {p} skipped: {why}" for p, why in report.skipped_providers.items()]
    peaks = report.peaks_gflops.items()
    out += [f"peak {p}: {g:.1f} GFLOP/s ({_kind(p)} MatMul)" for p, g in peaks]
    borrowed = {
        (r.provider, r.precision, r.peak_basis)
        for r in report.results
        if r.peak_basis and not r.peak_basis.endswith(f" {r.precision}")
    }
    for provider, precision, basis in sorted(borrowed):
        out.append(
            f"%peak of {precision} rows on {provider} is against the {basis} peak (no "
            f"{precision} peak is measured there), so it can pass 100"
        )
    for m in report.models:
        out += [f"{m.model}: GFLOPs/img: {m.facts.note}"] if m.facts.note else []
        out += [f"{m.model} on {p}: sweep ended: {why}" for p, why in m.sweep_end.items()]
    hints = {
        (r.model, r.provider, r.precision_hint, r.precision)
        for r in report.results
        if r.precision_hint not in ("auto", r.precision.replace("fp", "f"))
    }
    for model, provider, hint, precision in sorted(hints):
        out.append(
            f"{model} on {provider}: precision hint {hint} asked, {precision} ran "
            "(the CPU lacks native support for it)"
        )
    load, cores = report.machine.load_average, report.machine.cores or 1
    if load and load[0] >= BUSY_LOAD:
        out.append(
            f"other processes were running: load average {load[0]:.1f} on {cores} cores when "
            "the run started; all-core figures (--threads 0) suffer most, try --threads 1"
        )
    for r in report.results:
        if not r.validity.valid:
            out.append(f"{_name(r)}: {r.validity}")
    for s in report.server:
        if not s.validity.valid:
            out.append(f"server {s.model} {s.provider} {s.precision}: {s.validity}")
    wobbly = [r for r in report.results if r.p50_spread > REPEATABLE]
    if wobbly:
        worst = max(wobbly, key=lambda r: r.p50_spread)
        out.append(
            f"machine too noisy for {REPEATABLE:.0%} repeatability at the median: in "
            f"{len(wobbly)} of {len(report.results)} configurations the windows' p50 differ "
            f"by more (worst {worst.p50_spread:.0%}: {_name(worst)}); expect a rerun to "
            "differ about as much"
        )
    return out


def _kind(peak_key: str) -> str:
    """'cpu' -> 'float32' (as the notes always said), 'openvino bf16' -> 'bf16'."""
    return peak_key.split(" ", 1)[1] if " " in peak_key else "float32"


def extra_lines(report: BenchReport) -> list[str]:
    out = []
    for e in report.end_to_end:
        s = e.stages
        ratio = f" ({e.ratio:.0%})" if e.model_only_ips else ""
        unread = f", {e.errors} unreadable: left out" if e.errors else ""
        out.append(
            f"end to end {e.model} on {e.provider} {e.precision} (batch {e.batch_size}, "
            f"{e.images} images{unread}): {e.pipeline_ips:.1f} img/s vs model-only "
            f"{e.model_only_ips:.1f}{ratio}; ms/image: read {s.read_ms:.3f}, decode+resize "
            f"{s.decode_resize_ms:.3f} (on {s.decode_workers} threads), batch assembly "
            f"{s.batch_assembly_ms:.3f}, run {s.run_ms:.3f}, write {s.write_ms:.3f}; "
            f"bottleneck: {e.bottleneck}"
        )
    for b in report.baselines:
        out.append(
            f"{b.model} batch {b.batch_size}: {b.runtime} {b.throughput_ips:.1f} "
            f"img/s (p50 {b.p50_ms:.2f} ms); ONNX Runtime is {b.ort_speedup:.2f}x faster"
        )
    for rec in report.recommendations:
        if rec.fits:
            conc = f", {rec.concurrency} in flight" if (rec.concurrency or 1) > 1 else ""
            out.append(
                f"under p99 {rec.max_latency_ms:g} ms, {rec.model}: {rec.provider} "
                f"{rec.precision} batch {rec.batch_size}{conc} -> {rec.throughput_ips:.1f} "
                f"img/s (p99 {rec.p99_ms:.2f} ms)"
            )
        else:
            out.append(
                f"under p99 {rec.max_latency_ms:g} ms, {rec.model}: no configuration "
                f"fits (lowest p99 {rec.lowest_p99_ms:.2f} ms)"
            )
    return out


def profile_lines(report: BenchReport, table: Callable) -> list[str]:
    out = []
    for p in report.profiles:
        out.append(
            f"profile {p.model} on {p.provider} {p.precision}, batch {p.batch_size}, {p.runs} "
            f"runs: operators {p.ops_ms_per_run:.3f} ms of {p.measured_ms_per_run:.3f} ms per "
            f"run (medians; operators cover {p.coverage:.0%} of a run)"
        )
        columns = [
            Column("op type", lambda o: o.op_type, "", 24),
            Column("ms/run", lambda o: o.ms_per_run, ".3f"),
            Column("share", lambda o: 100 * o.share, ".1f", 6),
        ]
        out += [*table(columns, p.ops), ""]
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
    names = ("model", "prec", "provider", "batch", "p50 ms", "img/s", "±ips%", "top-1", "valid")
    columns = [c for c in RESULT_COLUMNS if c.header in names]
    return ["best configuration per precision:", "", *table(columns, rows)]


def render(report: BenchReport, markdown: bool = False) -> str:
    """The whole report as readable text, or as Markdown for a README."""
    cfg = report.config
    table = markdown_table if markdown else text_table
    bullet = "- " if markdown else ""
    gap = [""] if markdown else []
    lines: list[str] = []
    if report.results:
        summary = summary_rows(report)
        lines += [*table(present(RESULT_COLUMNS, report.results), report.results), ""]
        headline = "p90 ms" if cfg.scenario is Scenario.SINGLE_STREAM else "best img/s"
        lines += [f"{SUMMARY_TITLE}; headline: {headline}", *gap]
        lines += [*table(present(SUMMARY_COLUMNS, summary), summary), ""]
    if report.server:
        lines += [
            "server: the highest Poisson rate whose p99 <= the bound, and the next rate tried "
            "(over it)",
            *gap,
            *table(present(SERVER_COLUMNS, report.server), report.server),
            "",
        ]
    if precision := precision_lines(report, table):
        lines += [*precision, ""]
    lines += profile_lines(report, table)
    # the terminal had each skipped provider from run_bench's log; files need them here
    lines += [bullet + line for line in extra_lines(report) + notes(report, skipped=markdown)]
    lines += ["", "methodology:", ""] if markdown else ["", "methodology:"]
    lines += [f"{bullet or '  '}{k}: {v}" for k, v in methodology(cfg).items()]
    return "\n".join(lines)


def plain(value: Any) -> Any:
    """Dataclasses, enums and tuples as JSON values; a model's resolved format is left out."""
    if isinstance(value, Validity):
        return {"status": value.label, "valid": value.valid, "reasons": list(value.reasons)}
    if isinstance(value, GraphFacts):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        out.pop("fmt", None)
        for name in ("gflops_per_image", "ratio", "bottleneck"):
            if hasattr(type(value), name) and isinstance(getattr(type(value), name), property):
                out[name] = plain(getattr(value, name))
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def result_dict(r: Result) -> dict:
    """Flat: the latency figures beside the configuration, as in the CSV."""
    data = plain(r)
    return data | data.pop("stats")


def to_json(report: BenchReport) -> dict:
    return {
        "schema": SCHEMA,
        "methodology": methodology(report.config),
        "machine": plain(report.machine),
        "config": plain(report.config),
        "providers": report.providers,
        "skipped_providers": report.skipped_providers,
        "peaks_gflops": report.peaks_gflops,
        "models": [plain(m) for m in report.models],
        "results": [result_dict(r) for r in report.results],
        "server": [plain(s) for s in report.server],
        "end_to_end": [plain(e) for e in report.end_to_end],
        "profiles": [plain(p) for p in report.profiles],
        "baselines": [plain(b) for b in report.baselines],
        "recommendations": [plain(r) for r in report.recommendations],
        "notes": notes(report),
        "interrupted": report.interrupted or None,
    }


CSV_FIELDNAMES = (
    *("model", "architecture", "precision", "precision_hint", "provider", "scenario"),
    *("batch_size", "concurrency", "threads", "samples"),
    *("min_ms", "mean_ms", *[f"p{p}_ms" for p in PERCENTILES], "max_ms", "throughput_ips"),
    *("spread", "p50_spread", "stable", "status", "invalid_reasons", "seconds"),
    *("gflops_per_s", "peak_pct", "peak_basis", "copies_throughput_ips", "top1", "agreement"),
)


def csv_rows(report: BenchReport) -> Iterable[dict]:
    for r in report.results:
        row = {
            k: getattr(r, k)
            for k in (
                "model",
                "architecture",
                "precision",
                "precision_hint",
                "provider",
                "scenario",
                "batch_size",
                "concurrency",
                "threads",
            )
        }
        yield (
            row
            | dataclasses.asdict(r.stats)
            | {
                "spread": r.spread,
                "p50_spread": r.p50_spread,
                "stable": r.stable,
                "status": r.validity.label,
                "invalid_reasons": "; ".join(r.validity.reasons),
                "seconds": r.seconds,
                "gflops_per_s": r.gflops_per_s,
                "peak_pct": r.peak_pct,
                "peak_basis": r.peak_basis,
                "copies_throughput_ips": _copies(r),
                "top1": r.accuracy.top1 if r.accuracy else None,
                "agreement": r.accuracy.agreement if r.accuracy else None,
            }
        )
    for s in report.server:
        best = s.best
        yield {
            "model": s.model,
            "precision": s.precision,
            "provider": s.provider,
            "scenario": "server",
            "batch_size": 1,
            "concurrency": s.concurrency,
            "samples": best.queries if best else None,
            "p50_ms": best.p50_ms if best else None,
            "p90_ms": best.p90_ms if best else None,
            "p99_ms": best.p99_ms if best else None,
            "throughput_ips": best.achieved_qps if best else None,
            "status": s.validity.label,
            "invalid_reasons": "; ".join(s.validity.reasons),
            "top1": s.accuracy.top1 if s.accuracy else None,
            "agreement": s.accuracy.agreement if s.accuracy else None,
        }


def atomic_write(path: str, write: Callable[[Any], None], newline: str | None = None) -> None:
    """Write through a temporary file beside `path`: never a half-written output."""
    if why := unwritable(path):
        raise BenchError(f"cannot write {path}: {why}")
    with atomic_open(path, newline=newline) as f:
        write(f)


def write_json(path: str, report: BenchReport) -> None:
    atomic_write(path, lambda f: json.dump(to_json(report), f, indent=2))


def write_csv(path: str, report: BenchReport) -> None:
    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDNAMES, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_rows(report))

    atomic_write(path, write, newline="")


def write_markdown(path: str, report: BenchReport) -> None:
    atomic_write(path, lambda f: f.write(render(report, markdown=True) + "\n"))
