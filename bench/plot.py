"""`--plot FILE.png`: one row of panels per model (throughput vs batch size, latency
percentiles), one line per provider and precision, in the same colour on every row.

Models apart, because their speeds differ by orders of magnitude: on one shared linear
axis ResNet50's 30 img/s lie flat on zero under a digits model's 5,000. Rows whose p99 had
too few runs are drawn hollow, and their latency panel shows the maximum (an upper bound of
p99) as a hollow marker. matplotlib is imported only here (the `plot` extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import P99_MIN_SAMPLES
from cnnbench.files import atomic_path, unwritable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnbench.bench.results import BenchReport, Result

FEW_P99_LABEL = f"hollow: p99 from < {P99_MIN_SAMPLES} runs (latency: max shown)"
PANEL_SIZE = (6.5, 3.6)  # inches, one model's pair of panels


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise BenchError(
            "--plot needs matplotlib: pip install 'cnnbench[plot]' (or matplotlib)"
        ) from e
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def series(report: BenchReport) -> dict[str, dict[str, list[Result]]]:
    """{model: {'provider precision': [results by batch size]}}."""
    out: dict[str, dict[str, list[Result]]] = {}
    for r in report.results:
        conc = f" x{r.concurrency}" if r.concurrency > 1 else ""
        out.setdefault(r.model, {}).setdefault(f"{r.provider} {r.precision}{conc}", []).append(r)
    return {
        model: {k: sorted(v, key=lambda r: r.batch_size) for k, v in lines.items()}
        for model, lines in out.items()
    }


def _few(rows: list[Result]) -> list[Result]:
    return [r for r in rows if r.stats.p99_ms is None]


def _hollow(
    ax: Any, rows: list[Result], value: Callable[[Result], float], marker: str, color: str
) -> None:
    """Hollow markers over the rows whose p99 had too few runs."""
    if few := _few(rows):
        x, y = [r.batch_size for r in few], [value(r) for r in few]
        ax.plot(x, y, marker, color=color, markerfacecolor="white", gid="few-p99")


def _throughput(ax: Any, rows: list[Result], color: str, label: str) -> None:
    batches = [r.batch_size for r in rows]
    ax.plot(batches, [r.stats.throughput_ips for r in rows], "o-", color=color, label=label)
    _hollow(ax, rows, lambda r: r.stats.throughput_ips, "o", color)


def _latency(ax: Any, rows: list[Result], color: str) -> None:
    batches = [r.batch_size for r in rows]
    for key, style in (("p50_ms", "o-"), ("p90_ms", "^--"), ("p99_ms", "v:")):
        values = [getattr(r.stats, key) for r in rows]  # p99: None below 100 runs
        values = [float("nan") if v is None else v for v in values]
        ax.plot(batches, values, style, color=color, alpha=0.9)
    _hollow(ax, rows, lambda r: r.stats.max_ms, "v", color)  # max: p99's upper bound


def figure(report: BenchReport) -> Figure:
    """The plot as a matplotlib Figure (the caller closes it)."""
    plt = _pyplot()
    models = series(report)
    configs = list(dict.fromkeys(k for lines in models.values() for k in lines))
    colors = {k: f"C{i % 10}" for i, k in enumerate(configs)}
    width, height = PANEL_SIZE
    fig, axes = plt.subplots(
        len(models), 2, figsize=(2 * width, height * len(models) + 0.8), squeeze=False
    )
    for (ax_ips, ax_lat), (model, lines) in zip(axes, models.items(), strict=True):
        for label, rows in lines.items():
            _throughput(ax_ips, rows, colors[label], label)
            _latency(ax_lat, rows, colors[label])
        ax_ips.set(xlabel="batch size", ylabel="images / s", title=f"{model}: throughput")
        ax_ips.set_ylim(bottom=0)
        ax_lat.set(
            yscale="log",
            xlabel="batch size",
            ylabel="ms per batch",
            title=f"{model}: latency p50 (solid), p90 (dashed), p99 (dotted)",
        )
        ticks = sorted({r.batch_size for rows in lines.values() for r in rows})
        for ax in (ax_ips, ax_lat):
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            ax.grid(True, which="both", alpha=0.3)
        ax_ips.legend(fontsize="small")
    if any(_few(rows) for lines in models.values() for rows in lines.values()):
        fig.text(0.5, 0.005, FEW_P99_LABEL, ha="center", va="bottom", fontsize="small")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def write_plot(path: str, report: BenchReport) -> None:
    if not path.lower().endswith(".png"):
        raise BenchError(f"--plot writes PNG: give a file name ending in .png, got {path!r}")
    if why := unwritable(path):
        raise BenchError(f"cannot write {path}: {why}")
    plt = _pyplot()
    fig = figure(report)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
