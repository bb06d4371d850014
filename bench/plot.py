"""`--plot FILE.png`: throughput vs batch size and latency percentiles, one line per model,
provider and precision. matplotlib is imported only here (the `plot` extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnbench.bench.errors import BenchError
from cnnbench.files import atomic_path, unwritable

if TYPE_CHECKING:
    from cnnbench.bench.results import BenchReport


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


def series(report: BenchReport) -> dict[str, list]:
    """{'model provider precision': [results by batch size]}."""
    out: dict[str, list] = {}
    for r in report.results:
        conc = f" x{r.concurrency}" if r.concurrency > 1 else ""
        out.setdefault(f"{r.model} {r.provider} {r.precision}{conc}", []).append(r)
    return {k: sorted(v, key=lambda r: r.batch_size) for k, v in out.items()}


def write_plot(path: str, report: BenchReport) -> None:
    if not path.lower().endswith(".png"):
        raise BenchError(f"--plot writes PNG: give a file name ending in .png, got {path!r}")
    if why := unwritable(path):
        raise BenchError(f"cannot write {path}: {why}")
    plt = _pyplot()
    fig, (ax_ips, ax_lat) = plt.subplots(1, 2, figsize=(13, 5))
    for label, rows in series(report).items():
        batches = [r.batch_size for r in rows]
        line = ax_ips.plot(batches, [r.stats.throughput_ips for r in rows], "o-", label=label)
        color = line[0].get_color()
        for key, style in (("p50_ms", "o-"), ("p90_ms", "^--"), ("p99_ms", "v:")):
            values = [getattr(r.stats, key) for r in rows]  # p99: None below 100 runs
            values = [float("nan") if v is None else v for v in values]
            ax_lat.plot(batches, values, style, color=color, alpha=0.9)
    ax_ips.set(xlabel="batch size", ylabel="images / s", title="Throughput")
    ax_lat.set(
        yscale="log",
        xlabel="batch size",
        ylabel="ms per batch",
        title="Latency: p50 (solid), p90 (dashed), p99 (dotted)",
    )
    ticks = sorted({r.batch_size for r in report.results})
    for ax in (ax_ips, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
    ax_ips.legend(fontsize="small")
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
