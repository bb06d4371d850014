"""`infer --engine ray` on hosts that share no disk: three Ray nodes in network namespaces
of their own (tests/netns_cluster.py), the images in an S3 server that the worker nodes
read themselves, a worker node killed in the middle of the job."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import read_rows, run
from netns_cluster import BUCKET, Cluster, missing, node_kill_run, photo_folder

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")
pytest.importorskip("moto", reason="needs the dev extra (moto's S3 server)")
WHY_NOT = missing()
FILES = 300


@pytest.mark.slow
@pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
def test_a_killed_node_loses_no_row(tiny_model: Path, tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos", FILES)
    local = tmp_path / "local.csv"
    code, output = run(["infer", str(tiny_model), str(folder), "-o", str(local), "--no-progress"])
    assert code == 0, output
    out = tmp_path / "ray.csv"
    with Cluster(tmp_path / "cluster") as cluster:
        cluster.make_network()
        cluster.start_s3(folder)
        cluster.start_ray()
        result = node_kill_run(cluster, tiny_model, f"s3://{BUCKET}/in/", out)
        namespaces = list(cluster.namespaces)
    assert result["ended_by_itself"], result
    assert result["exit"] == 0 or (result["said_resume"] and result["resume_exit"] == 0), result
    assert read_rows(out) == read_rows(local), "every object once, as the local engine has it"
    assert read_rows(out.with_name("ray.errors.csv")) == read_rows(tmp_path / "local.errors.csv")
    if not result["resumed"]:
        workers = json.loads(out.with_suffix(".summary.json").read_text())["per_worker"]
        assert {w.split(":")[0] for w in workers} <= {"198.18.0.3", "198.18.0.4"}, workers
    listed = os.popen("ip netns list").read()
    assert not any(ns in listed for ns in namespaces), "every namespace is gone"
