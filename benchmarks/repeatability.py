"""Two runs of the same `cnnbench bench` command: do their medians agree within 5%?

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/repeatability.py \
        -- --arch mnist_cnn --provider cpu --batch-sizes 1,8,32

Everything after `--` is passed to `cnnbench bench` as is (default: the zoo's mnist_cnn on
CPU at batch 1, 8 and 32). Prints p50 and img/s of both runs per configuration, their
difference, and whether each run itself said the machine was too noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT = ["--arch", "mnist_cnn", "--provider", "cpu", "--batch-sizes", "1,8,32", "--no-peak"]
AGREE = 0.05


def one_run(args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "cnnbench", "bench", *args, "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def by_config(doc: dict) -> dict[tuple, dict]:
    return {(r["model"], r["provider"], r["batch_size"]): r for r in doc["results"]}


def main() -> int:
    args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        first, second = (one_run(args, Path(tmp) / f"run{i}.json") for i in (1, 2))
    print("cnnbench bench " + " ".join(args))
    print(f"{'configuration':<34} {'p50 ms 1':>9} {'p50 ms 2':>9} {'diff':>7} {'noisy?':>7}")
    worst = 0.0
    a, b = by_config(first), by_config(second)
    for key in a.keys() & b.keys():
        p1, p2 = a[key]["p50_ms"], b[key]["p50_ms"]
        diff = abs(p2 - p1) / min(p1, p2)
        worst = max(worst, diff)
        noisy = max(a[key]["p50_spread"], b[key]["p50_spread"]) > AGREE
        name = " ".join(map(str, key))
        print(f"{name[-34:]:<34} {p1:>9.3f} {p2:>9.3f} {diff:>7.1%} {'yes' if noisy else 'no':>7}")
    said_noisy = any(
        "too noisy" in n or "other processes were running" in n
        for doc in (first, second)
        for n in doc["notes"]
    )
    verdict = "agree" if worst <= AGREE else ("flagged noisy" if said_noisy else "DISAGREE")
    print(f"worst median difference {worst:.1%} (limit {AGREE:.0%}): {verdict}")
    return 0 if verdict != "DISAGREE" else 1


if __name__ == "__main__":
    sys.exit(main())
