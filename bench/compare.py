"""`bench --compare BASE.json NEW.json`: per configuration the ratio NEW/BASE of the
headline figure, whether it lies outside both runs' spread, and (with --fail-above PCT) a
non-zero exit on a regression larger than PCT percent, for CI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cnnbench import fields as checked
from cnnbench.bench.errors import BenchError

SCHEMA_PREFIX = "cnnbench.bench/"


@dataclass(frozen=True)
class Row:
    key: tuple  # model, provider, precision, scenario, batch, concurrency
    value: float  # img/s (offline, single-stream) or queries/s (server): higher is better
    spread: float  # relative spread of that figure in its run
    valid: bool


@dataclass(frozen=True)
class Change:
    key: tuple
    base: Row
    new: Row

    @property
    def ratio(self) -> float:
        return self.new.value / self.base.value if self.base.value else float("inf")

    @property
    def noise(self) -> float:
        """The larger of the two runs' spreads: a change within it is not a change."""
        return max(self.base.spread, self.new.spread)

    @property
    def outside_spread(self) -> bool:
        return abs(self.ratio - 1) > self.noise

    def regression_pct(self) -> float:
        return max(0.0, (1 - self.ratio) * 100)


@dataclass
class Comparison:
    changes: list[Change]
    only_base: list[tuple]
    only_new: list[tuple]

    def regressions(self, fail_above: float) -> list[Change]:
        return [c for c in self.changes if c.outside_spread and c.regression_pct() > fail_above]


def load_rows(path: str) -> dict[tuple, Row]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise BenchError(f"--compare: cannot read {path}: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise BenchError(f"--compare: {path} is not JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise BenchError(f"--compare: {path} is not a `cnnbench bench --json` file")
    rows: dict[tuple, Row] = {}
    try:
        for k, r in enumerate(checked.sequence(doc.get("results", []), "results")):
            row = _result_row(checked.mapping(r, f"results[{k}]"), f"results[{k}].")
            rows[row.key] = row
        for k, s in enumerate(checked.sequence(doc.get("server", []), "server")):
            best = _server_row(checked.mapping(s, f"server[{k}]"), f"server[{k}].")
            if best is not None:
                rows[best.key] = best
    except KeyError as e:
        raise BenchError(f"--compare: {path} lacks the field {e} in a result") from e
    except ValueError as e:
        raise BenchError(f"--compare: {path} has a bad field ({e}); give files bench wrote") from e
    return rows


def _result_row(r: dict[str, Any], at: str) -> Row:
    """An offline or single-stream result, its fields of the types bench writes."""
    key = (
        checked.text(r["model"], at + "model"),
        checked.text(r["provider"], at + "provider"),
        checked.text(r["precision"], at + "precision"),
        checked.text(r.get("scenario", "offline"), at + "scenario"),
        checked.whole(r["batch_size"], at + "batch_size", 1),
        checked.whole(r.get("concurrency", 1), at + "concurrency", 1),
    )
    value = checked.number(r["throughput_ips"], at + "throughput_ips", positive=True)
    spread = r.get("spread", 0.0)  # infinite where a window measured nothing
    if spread != math.inf:
        spread = checked.number(spread, at + "spread", positive=False)
    validity = checked.mapping(r.get("validity", {}), at + "validity")
    return Row(key, value, spread, checked.flag(validity.get("valid", True), at + "validity.valid"))


def _server_row(s: dict[str, Any], at: str) -> Row | None:
    """A server result's best rate; None where no rate held."""
    key = (
        checked.text(s["model"], at + "model"),
        checked.text(s["provider"], at + "provider"),
        checked.text(s["precision"], at + "precision"),
        "server",
        1,
        checked.whole(s["concurrency"], at + "concurrency", 1),
    )
    if not s.get("best"):
        return None
    best = checked.mapping(s["best"], at + "best")
    value = checked.number(best["achieved_qps"], at + "best.achieved_qps", positive=True)
    validity = checked.mapping(s["validity"], at + "validity")
    return Row(key, value, 0.0, checked.flag(validity["valid"], at + "validity.valid"))


def compare(base_path: str, new_path: str) -> Comparison:
    base, new = load_rows(base_path), load_rows(new_path)
    common = [k for k in base if k in new]
    if not common:
        raise BenchError(
            f"--compare: {base_path} and {new_path} share no configuration "
            "(model, provider, precision, scenario, batch, concurrency)"
        )
    return Comparison(
        [Change(k, base[k], new[k]) for k in common],
        [k for k in base if k not in new],
        [k for k in new if k not in base],
    )


def render(comparison: Comparison, fail_above: float | None) -> str:
    head = (
        f"{'model':<20} {'provider':<8} {'prec':<5} {'scenario':<13} {'batch':>5} {'conc':>4} "
        f"{'base':>9} {'new':>9} {'ratio':>6} {'noise±':>6}  verdict"
    )
    lines = [head]
    for c in comparison.changes:
        model, provider, precision, scenario, batch, conc = c.key
        if not c.outside_spread:
            verdict = "within noise"
        elif c.ratio < 1:
            verdict = f"slower by {c.regression_pct():.1f}%"
            if fail_above is not None and c.regression_pct() > fail_above:
                verdict += f" > {fail_above:g}%: REGRESSION"
        else:
            verdict = f"faster by {(c.ratio - 1) * 100:.1f}%"
        if not (c.base.valid and c.new.valid):
            verdict += " (an INVALID run)"
        lines.append(
            f"{model[-20:]:<20} {provider:<8} {precision:<5} {scenario:<13} {batch:>5} "
            f"{conc:>4} {c.base.value:>9.1f} {c.new.value:>9.1f} {c.ratio:>6.3f} "
            f"{100 * c.noise:>5.1f}%  {verdict}"
        )
    for k in comparison.only_base:
        lines.append(f"only in the base run: {' '.join(map(str, k))}")
    for k in comparison.only_new:
        lines.append(f"only in the new run: {' '.join(map(str, k))}")
    return "\n".join(lines)
