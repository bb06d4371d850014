"""The node-kill test of tests/test_ray_hosts.py, repeated: does a lost node ever hang
`infer --engine ray` or lose a row?

One cluster on hosts that share no disk (tests/netns_cluster.py: three network namespaces,
a Ray head and two worker nodes of 2 CPUs each, an S3 server on the head's address holding
the photos); each run starts `infer --engine ray` over the S3 prefix from the head's
namespace, kills (SIGKILL) the raylet of the node running the inference actor once the
first block is committed, checks what the issue asks, then ends what is left of the killed
node and starts it anew for the next run. What is checked: the run ends by
itself within 60 s of the kill, completed or stopped with the `--resume` line; after at
most one `--resume`, every object is in exactly one of the two outputs, with the rows of
the local engine. One JSON line per run, then a summary line. Linux, root, the ray and
dev extras. From the repository root, under the shared benchmark lock:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/ray_node_kill.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The test's own cluster and checks, run again: tests/ is put on the path at run time, so
# the type checker, which reads the script alone, cannot follow two of these imports.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import _tiny_classifier  # type: ignore[import-not-found]
from helpers import read_rows, run
from netns_cluster import (  # type: ignore[import-not-found]
    BUCKET,
    Cluster,
    missing,
    node_kill_run,
    photo_folder,
)


def one_run(cluster: Cluster, root: Path, model: Path, local: Path) -> dict:
    out = root / "ray.csv"
    result = node_kill_run(cluster, model, f"s3://{BUCKET}/in/", out)
    result["exactly_once"] = (
        out.exists()
        and read_rows(out) == read_rows(local)
        and read_rows(root / "ray.errors.csv") == read_rows(local.with_name("local.errors.csv"))
    )
    start = time.monotonic()
    cluster.restart_worker(result["killed_node"])  # two worker nodes again for the next run
    result["node_restart_s"] = round(time.monotonic() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--files", type=int, default=300, help="photos in the bucket")
    args = parser.parse_args()
    if why := missing():
        sys.exit(f"cannot run: {why}")
    # a SIGTERM (timeout, a stopped job) unwinds the clusters' `with` like an error would
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    with tempfile.TemporaryDirectory(prefix="cnnbench-node-kill-") as tmp:
        root = Path(tmp)
        model = _tiny_classifier(root / "tiny.onnx", uint8_nhwc=True, labels=("cat", "dog", "fish"))
        folder = photo_folder(root / "photos", args.files)
        local = root / "local.csv"
        code, output = run(["infer", str(model), str(folder), "-o", str(local), "--no-progress"])
        assert code == 0, output
        results = []
        start = time.monotonic()
        with Cluster(root / "cluster") as cluster:
            cluster.make_network()
            cluster.start_s3(folder)
            cluster.start_ray()
            print(json.dumps({"cluster_start_s": round(time.monotonic() - start, 1)}), flush=True)
            for i in range(args.runs):
                (root / f"run{i}").mkdir()
                results.append(one_run(cluster, root / f"run{i}", model, local))
                print(json.dumps(results[-1]), flush=True)
    ended = [r for r in results if r["ended_by_itself"]]
    summary = {
        "runs": len(results),
        "ended_by_itself_within_60s": len(ended),
        "completed_without_resume": sum(r["exit"] == 0 for r in results),
        "stopped_with_resume_line": sum(
            r["exit"] not in (0, None) and r["said_resume"] for r in results
        ),
        "exactly_once_after_at_most_one_resume": sum(r["exactly_once"] for r in results),
        "seconds_kill_to_end_median": statistics.median(r["seconds_to_end"] for r in ended)
        if ended
        else None,
        "seconds_kill_to_end_max": max((r["seconds_to_end"] for r in ended), default=None),
        "node_restart_s_median": statistics.median(r["node_restart_s"] for r in results),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
