"""bench: the measuring rules as pure functions, FLOP counting, and the command on a tiny
hand-written ONNX classifier (no TensorFlow needed)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
from bench_helpers import EXPECTED_MACS, EXPECTED_PARAMS, FAST, bench, write_classifier
from helpers import assert_one_line_error, run

from cnnbench.bench.extras import recommend
from cnnbench.bench.flops import graph_facts
from cnnbench.bench.measure import (
    P99_MIN_SAMPLES,
    Timing,
    latency_stats,
    measure,
    next_batch_size,
    validity,
    windows_agree,
)
from cnnbench.bench.report import CSV_FIELDNAMES, SCHEMA
from cnnbench.bench.results import StageTimes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def test_windows_agree_is_perf_analyzers_rule() -> None:
    assert windows_agree([100, 105, 109])
    assert not windows_agree([100, 105, 111])  # 11% apart
    assert not windows_agree([100, 101])  # fewer than three windows
    assert windows_agree([50, 200, 100, 104, 102])  # only the last three count


@pytest.mark.parametrize(
    ("history", "max_batch", "expected"),
    [
        ([], 256, 1),
        ([(1, 100.0)], 256, 2),
        ([(1, 100.0), (2, 180.0)], 256, 4),
        ([(1, 100.0), (2, 180.0), (4, 185.0)], 256, None),  # +2.8%: stopped improving
        ([(1, 100.0), (2, 180.0), (4, 150.0)], 256, None),  # slower
        ([(1, 100.0), (2, 180.0), (4, 189.1)], 256, 8),  # +5.06%: still worth doubling
        ([(1, 100.0), (2, 200.0)], 2, None),  # the next doubling passes --max-batch
        ([(1, 100.0), (2, 200.0)], 4, 4),
    ],
)
def test_sweep_stopping_rule(history: list, max_batch: int, expected: int | None) -> None:
    assert next_batch_size(history, max_batch) == expected


def test_latency_stats_declared_method() -> None:
    stats = latency_stats([1.0, 2.0, 3.0, 4.0], batch_size=2)
    assert stats.min_ms == 1.0 and stats.max_ms == 4.0
    assert stats.p50_ms == 2.5  # linear interpolation between ranks
    assert stats.p90_ms == pytest.approx(3.7)
    assert stats.throughput_ips == pytest.approx(2 * 4 / 0.010)
    assert stats.p99_ms is None and stats.p99_or_max_ms == 4.0  # 4 runs: no p99


def test_p99_only_from_a_hundred_runs() -> None:
    few = latency_stats([float(i) for i in range(P99_MIN_SAMPLES - 1)], 1)
    enough = latency_stats([float(i) for i in range(P99_MIN_SAMPLES)], 1)
    assert few.p99_ms is None
    assert enough.p99_ms == pytest.approx(98.01)


def test_validity_names_every_reason() -> None:
    timing = Timing(duration=1.0, min_runs=30)
    assert validity(30, 1.0, [100, 101, 102], timing).valid
    bad = validity(12, 0.5, [100, 130, 100], timing, clock_drop=0.2)
    assert not bad.valid and str(bad).startswith("INVALID (")
    text = " ".join(bad.reasons)
    for needle in (
        "too few runs (12 < --min-runs 30)",
        "too short",
        "windows disagree",
        "throttled",
    ):
        assert needle in text
    assert "only 2 window(s)" in validity(40, 2.0, [100, 100], timing).reasons[0]


def test_measure_excludes_warmup_and_counts_every_run() -> None:
    calls = []
    m = measure(lambda: calls.append(1), 1, Timing(warmup=3, iterations=50, max_seconds=5))
    assert m.warmup_runs == 3
    assert len(m.window_ips) >= 3
    assert len(calls) == 3 + 50 * len(m.window_ips)
    assert len(m.latencies_ms) == 50 * 3  # the last three windows are reported
    assert m.validity.valid or "windows disagree" in str(m.validity)


def test_measure_keeps_timing_until_min_runs() -> None:
    """Short windows of a slow call still add up to --min-runs runs."""
    import time

    m = measure(lambda: time.sleep(0.002), 1, Timing(warmup=0, duration=0.001, min_runs=45))
    assert len(m.latencies_ms) >= 45


def test_flops_of_a_hand_counted_graph(tiny: Path) -> None:
    facts = graph_facts(str(tiny), (1, 3, 8, 8))
    assert facts.macs_per_image == EXPECTED_MACS
    assert facts.params == EXPECTED_PARAMS
    assert set(facts.macs_by_op) == {"Conv", "Gemm", "MatMul"}


def test_bottleneck_and_recommendation_rules() -> None:
    stages = StageTimes(0.2, 4.0, 0.1, 1.5, 0.05, decode_workers=2)
    assert stages.bottleneck == "decode+resize"  # 4.0 / 2 threads > 1.5
    assert StageTimes(0.2, 4.0, 0.1, 1.5, 0.05, decode_workers=4).bottleneck == "run"
    assert recommend([], 10.0) == []


def test_outputs_json_csv_markdown_plot(tiny: Path, tmp_path: Path) -> None:
    out = {ext: tmp_path / f"b.{ext}" for ext in ("json", "csv", "md", "png")}
    code, output = bench(
        [
            *("--model", str(tiny), "--provider", "cpu", "--batch-sizes", "1,4", *FAST[:-1]),
            *("--json", str(out["json"]), "--csv", str(out["csv"]), "--markdown", str(out["md"])),
            *("--plot", str(out["png"]), "--max-latency-ms", "1000"),
        ]
    )
    assert code == 0, output
    assert "methodology:" in output and "p99 ms" in output and "valid" in output
    doc = json.loads(out["json"].read_text())
    assert doc["schema"] == SCHEMA
    for key in ("methodology", "machine", "config", "providers", "peaks_gflops", "models"):
        assert key in doc
    for key in ("cpu", "cores", "load_average", "gpus", "onnxruntime", "available_providers"):
        assert key in doc["machine"]
    assert doc["machine"]["command"]  # sys.argv joined: here, pytest's
    assert doc["providers"] == ["cpu"] and doc["peaks_gflops"]["cpu"] > 0
    assert [r["batch_size"] for r in doc["results"]] == [1, 4]
    row = doc["results"][0]
    for key in ("min_ms", "p50_ms", "p90_ms", "p95_ms", "max_ms", "throughput_ips"):
        assert row[key] > 0
    assert row["samples"] >= 30 and row["validity"]["status"] in ("VALID", "INVALID")
    assert row["min_ms"] <= row["p50_ms"] <= row["max_ms"]
    assert (row["p99_ms"] is None) == (row["samples"] < 100)
    assert len(row["latencies_ms"]) == row["samples"] and len(row["window_ips"]) >= 3
    assert row["gflops_per_s"] > 0 and row["peak_pct"] > 0
    model = doc["models"][0]
    assert model["precision"] == "fp32"  # no spec: read from the weights' element type
    assert model["facts"]["gmacs_per_image"] * 1e9 == pytest.approx(EXPECTED_MACS)
    assert model["cold_start"]["cpu fp32"]["session_ms"] > 0
    assert doc["recommendations"][0]["fits"] is True
    with out["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDNAMES and len(rows) == 2
    assert {r["status"] for r in rows} <= {"VALID", "INVALID"}
    assert out["md"].read_text().startswith("| model |")
    image = cv2.imread(str(out["png"]))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100


def test_default_sweep_stops_by_its_rule(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "sweep.json"
    code, output = bench(["--model", str(tiny), "--provider", "cpu", *FAST, "--json", str(path)])
    assert code == 0, output
    doc = json.loads(path.read_text())
    history = [(r["batch_size"], r["throughput_ips"]) for r in doc["results"]]
    assert [b for b, _ in history] == [2**i for i in range(len(history))]
    for i in range(1, len(history)):  # every measured size was the rule's choice ...
        assert next_batch_size(history[:i], 256) == history[i][0]
    assert next_batch_size(history, 256) is None  # ... and the rule said stop after the last
    assert "sweep ended" in output


def test_max_batch_caps_the_sweep(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "cap.json"
    code, output = bench(
        ["--model", str(tiny), "--provider", "cpu", "--max-batch", "2", *FAST, "--json", str(path)]
    )
    assert code == 0, output
    assert max(r["batch_size"] for r in json.loads(path.read_text())["results"]) <= 2


def test_fixed_batch_model_is_measured_at_its_batch(tmp_path: Path) -> None:
    model = write_classifier(tmp_path / "fixed.onnx", batch=1)
    code, output = bench(
        ["--model", str(model), "--provider", "cpu", "--batch-sizes", "1,8", *FAST]
    )
    assert code == 0, output
    assert "batch dimension is fixed at 1" in output


def test_unknown_provider() -> None:
    code, output = run(["bench", "--model", "m.onnx", "--provider", "cpu,tpu"])
    assert_one_line_error(code, output, "unknown provider tpu", "cpu, cuda, tensorrt, openvino")


@pytest.mark.parametrize("sizes", ["0", "1,-2", "a", "1,,2", "2.5"])
def test_batch_sizes_must_be_positive_integers(tiny: Path, sizes: str) -> None:
    code, output = run(["bench", "--model", str(tiny), "--batch-sizes", sizes])
    assert_one_line_error(code, output, "positive integers")


def _cuda_loads(model: Path) -> bool:
    from cnnbench.infer.errors import InferError
    from cnnbench.infer.session import Provider, RuntimeOptions, create_session

    try:
        create_session(str(model), RuntimeOptions(provider=Provider.CUDA))
    except InferError:
        return False
    return True


def test_provider_that_does_not_load(tiny: Path, tmp_path: Path) -> None:
    if _cuda_loads(tiny):
        pytest.skip("CUDA loads on this machine")
    code, output = run(["bench", "--model", str(tiny), "--provider", "cuda", *FAST])
    assert_one_line_error(code, output, "provider cuda did not load")
    path = tmp_path / "b.json"
    args = ["--model", str(tiny), "--provider", "cpu,cuda", "--batch-sizes", "1", *FAST]
    code, output = run(["bench", *args, "--json", str(path)])
    assert code == 0, output
    assert "provider cuda skipped: provider cuda did not load" in output
    doc = json.loads(path.read_text())
    assert doc["providers"] == ["cpu"] and "cuda" in doc["skipped_providers"]
    assert {r["provider"] for r in doc["results"]} == {"cpu"}


def test_dynamic_spatial_dims_need_size(tmp_path: Path) -> None:
    model = write_classifier(tmp_path / "dyn.onnx", spatial=False)
    args = ["bench", "--model", str(model), "--provider", "cpu", "--batch-sizes", "1", *FAST]
    code, output = run(args)
    assert_one_line_error(code, output, "dynamic height/width", "--size")
    code, output = run([*args, "--size", "8"])
    assert code == 0, output


def test_nothing_to_measure_and_bad_outputs(tiny: Path, tmp_path: Path) -> None:
    code, output = run(["bench"])
    assert_one_line_error(code, output, "nothing to measure")
    code, output = run(["bench", "--model", str(tiny), "--plot", str(tmp_path / "p.jpg")])
    assert_one_line_error(code, output, ".png")
    code, output = run(["bench", "--model", str(tiny), "--json", str(tmp_path / "no/b.json")])
    assert_one_line_error(code, output, "does not exist")
    code, output = run(["bench", "--arch", "lenet9"])
    assert_one_line_error(code, output, "unknown architecture", "mnist_cnn")
    code, output = run(["bench", "--model", str(tiny), "--baseline", "keras"])
    assert_one_line_error(code, output, "--baseline keras needs --arch")
    code, output = run(["bench", "--model", str(tiny), "--images", str(tmp_path / "none")])
    assert_one_line_error(code, output, "is not a folder")


def test_bench_modules_import_neither_tensorflow_nor_matplotlib() -> None:
    import subprocess
    import sys

    modules = (
        "run, zoo, report, extras, plot, flops, runners, machine, cli, results, server, "
        "profile, compare"
    )
    code = (
        f"import sys\nfrom cnnbench.bench import {modules}\n"
        "heavy = {'tensorflow', 'keras', 'matplotlib', 'tf2onnx'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_fixed_iterations_keep_enough_windows_for_min_runs() -> None:
    m = measure(lambda: None, 1, Timing(warmup=0, iterations=10, min_runs=45, max_seconds=5))
    assert len(m.latencies_ms) >= 45 and len(m.latencies_ms) % 10 == 0
    assert m.validity.valid or "windows disagree" in str(m.validity)
