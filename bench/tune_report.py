"""`tune`'s table (every candidate), its Pareto front and the plan it chose, as text."""

from __future__ import annotations

from cnnbench.bench.tune import Candidate, TuneReport, candidate_row
from cnnbench.infer.runtime.plan import Plan


def _pct(x: object) -> str:
    return f"{x:.1%}" if isinstance(x, float) else "-"


def _num(x: object, fmt: str = ".1f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and x is not None else "-"


HEAD = (
    f"{'variant':<28} {'batch':>5} {'x':>2} {'thr':>3} {'model':>7} {'e2e':>7} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'agree':>6} {'acc':>6}  status"
)


def candidate_line(c: Candidate, front: list[Candidate], chosen: Candidate | None) -> str:
    row = candidate_row(c)
    status = c.note or ("VALID" if c.result else "")
    if c is chosen:
        # a search stopped before the end-to-end runs chose on the model-only figure
        how = "end to end" if c.end_to_end_ips is not None else "model-only"
        status = f"CHOSEN (fastest {how} within the bounds)"
    elif c in front:
        status = "front"
    p99 = _num(row["p99_ms"]) + ("*" if row["p99_is_max"] else "")
    return (
        f"{c.variant.name[:28]:<28} {_num(row['batch_size'], 'd'):>5} "
        f"{_num(row['concurrency'], 'd'):>2} {_num(row['threads'], 'd'):>3} "
        f"{_num(row['model_only_images_per_second']):>7} "
        f"{_num(row['end_to_end_images_per_second']):>7} {_num(row['p50_ms']):>8} {p99:>8} "
        f"{_pct(row['agreement']):>6} {_pct(row['accuracy']):>6}  {status}"
    )


def plan_line(plan: Plan) -> str:
    """The chosen configuration and what infer --plan is expected to reach with it (a
    stopped search may have had no end-to-end run: then the model-only figure only)."""
    e = plan.expected
    if e.images_per_second is None:
        expected = "no end-to-end run (stopped before it; model-only "
    else:
        expected = (
            f"expected {e.images_per_second:.1f} img/s end to end (infer --plan over the "
            "images; model-only "
        )
    return (
        f"plan: {plan.describe()}: {expected}{e.model_only_images_per_second:.1f} img/s), "
        f"p99 {e.p99_ms:.1f} ms per batch, agreement {_pct(e.agreement)}"
    )


def render(report: TuneReport) -> str:
    lines = [HEAD]
    lines += [candidate_line(c, report.front, report.chosen) for c in report.candidates]
    lines.append("")
    lines.append("Pareto front (model-only img/s up, p99 down, agreement up):")
    lines += [candidate_line(c, report.front, report.chosen) for c in report.front]
    lines.append("")
    if report.plan is not None:
        lines.append(plan_line(report.plan))
    lines.append(
        "model: img/s of the model alone (bench's methodology); e2e: infer's own img/s over "
        "the images, decoding included (the front's fastest, run end to end); x: runs in "
        "flight (OpenVINO streams); thr: threads of each; *: the max, fewer than 100 runs "
        "give no p99; agree: top-1 equal to the model's own on ORT's CPU (fp32 unless it "
        "is lowered already)"
    )
    if report.unmeasured and not report.stopped:  # a stop's own line names them
        lines.append(f"not measured (time budget): {', '.join(report.unmeasured)}")
    lines.append(f"searched in {report.seconds:.0f} s")
    return "\n".join(lines)
