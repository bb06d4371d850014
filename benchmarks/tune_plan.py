"""`tune` on ResNet50 (random weights, bench's zoo) and what its plan gives end to end
(docs/benchmarks.md, "tune and infer --plan"; docs/fast.md's table).

One run measures, on the same photos, as whole processes:
  - `cnnbench tune resnet50.onnx --images PHOTOS -o PLAN.json --max-drop 100` (its wall time);
  - plain `cnnbench infer resnet50.onnx PHOTOS` (ORT fp32) and `cnnbench infer --plan`,
    alternated for --rounds rounds, each with its whole-process wall time and the batches'
    time from its --summary.
It prints and writes (--json) the ratios: plan / plain img/s, plan img/s / the plan's
expected img/s (end to end: tune's own `infer --plan` run over the photos) and / its
model-only img/s, whole process / batches for both jobs. Run it under the bench lock:

    chrt -f 10 flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/tune_plan.py \
        --json out.json

--max-drop 100 because random weights make agreement noise: never gate on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnbench.bench.photos import write_sized_photos
from cnnbench.bench.zoo import default_cache_dir, zoo_model
from cnnbench.cpu import cpu_model, isa_flags

# the console script beside this python (`python -m cnnbench` run from a checkout would
# import the checkout's cnnbench/ folder instead of the installed package)
CLI = [str(Path(sys.executable).parent / "cnnbench")]


def timed(args: list[str]) -> float:
    """Wall seconds of one whole process; its output goes to our stderr."""
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=sys.stderr)
    return time.perf_counter() - t0


def infer_once(args: list[str], out: Path) -> dict:
    summary = out.with_suffix(".summary.json")
    whole = timed([*args, "-o", str(out), "--summary", str(summary), "--no-progress"])
    doc = json.loads(summary.read_text())
    return {
        "whole_s": whole,
        "batches_s": doc["seconds"],
        "images": doc["images"],
        "ips": doc["images_per_second"],
        "provider": doc["provider"],
        "precision": doc.get("precision"),
        "batch_size": doc["batch_size"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cnnbench-tune-plan"))
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--tune-args", default="", help="extra tune options, e.g. '--exhaustive'")
    ap.add_argument(
        "--before",
        help="the python of an older checkout: its plain infer joins each round (start-up then)",
    )
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    photos = write_sized_photos(work / f"photos{a.photos}", a.photos)
    model = zoo_model("resnet50", default_cache_dir(), print).onnx_path
    plan = work / "plan.json"
    load_before = os.getloadavg()
    tune = [*CLI, "tune", model, "--images", str(photos), "-o", str(plan), "--max-drop", "100"]
    tune_s = timed([*tune, *a.tune_args.split()])
    expected = json.loads(plan.read_text())
    plain, planned, before = [], [], []
    for r in range(a.rounds):
        if a.before:
            old = [str(Path(a.before).parent / "cnnbench"), "infer", model, str(photos)]
            before.append(infer_once(old, work / f"before{r}.csv"))
        plain.append(infer_once([*CLI, "infer", model, str(photos)], work / f"plain{r}.csv"))
        planned.append(
            infer_once([*CLI, "infer", "--plan", str(plan), str(photos)], work / f"plan{r}.csv")
        )
    med = lambda rows, k: statistics.median(x[k] for x in rows)  # noqa: E731
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cpu_flags": list(isa_flags()),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "photos": a.photos,
        "tune_s": tune_s,
        "plan": {
            k: expected[k]
            for k in (
                "provider",
                "precision",
                "precision_hint",
                "batch_size",
                "threads",
                "concurrency",
                "expected",
            )
        },
        "plain": plain,
        "planned": planned,
        "plan_over_plain": med(planned, "ips") / med(plain, "ips"),
        # the plan's expected img/s is end to end (infer --plan over the photos, in tune)
        "plan_over_expected": med(planned, "ips") / expected["expected"]["images_per_second"],
        "plan_over_model_only": med(planned, "ips")
        / expected["expected"]["model_only_images_per_second"],
        "plain_whole_over_batches": med(plain, "whole_s") / med(plain, "batches_s"),
        "plan_whole_over_batches": med(planned, "whole_s") / med(planned, "batches_s"),
    }
    if before:
        result["before"] = before
        result["before_whole_over_batches"] = med(before, "whole_s") / med(before, "batches_s")
        result["before_whole_s"] = med(before, "whole_s")
        result["plain_whole_s"] = med(plain, "whole_s")
    rows = ("plain", "planned", "before")
    print(json.dumps({k: v for k, v in result.items() if k not in rows}, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
