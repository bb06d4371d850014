"""bench: the measuring rules as pure functions, FLOP counting, and the command on a tiny
hand-written ONNX classifier (no TensorFlow needed)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import cv2
import pytest
from bench_helpers import (
    EXPECTED_MACS,
    EXPECTED_PARAMS,
    FAST,
    bench,
    write_classifier,
    write_conv_net,
)
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
from cnnbench.infer.runtime.session import Provider


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


def test_a_report_that_would_replace_the_model_is_refused(tiny: Path, tmp_path: Path) -> None:
    """`--json model.onnx` (a slip of the keyboard) replaced the model with the report;
    so did `inspect --json`. A report named like an image is refused too, but the plot."""
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny.read_bytes())
    base = ["--model", str(model), "--provider", "cpu", *FAST]
    for extra, needle in [
        (["--json", str(model)], "itself, an input"),
        (["--csv", str(tmp_path / "x.jpg")], "a .jpg name"),
    ]:
        code, output = bench([*base, *extra])
        assert_one_line_error(code, output, *extra, needle)
    code, output = run(["inspect", str(model), "--json", str(model)])
    assert_one_line_error(code, output, "itself, an input")
    assert model.read_bytes() == tiny.read_bytes()


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
    from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session

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


def test_each_skipped_provider_is_printed_once(tiny: Path, tmp_path: Path) -> None:
    """The run's log says it (stderr); the terminal report does not repeat it, the
    Markdown and JSON files, read without that log, keep it."""
    if _cuda_loads(tiny):
        pytest.skip("CUDA loads on this machine")
    md, js = tmp_path / "b.md", tmp_path / "b.json"
    args = ["--model", str(tiny), "--provider", "cpu,cuda", "--batch-sizes", "1", *FAST]
    code, output = run(["bench", *args, "--markdown", str(md), "--json", str(js)])
    assert code == 0, output
    assert output.count("provider cuda skipped: ") == 1, output
    assert md.read_text().count("provider cuda skipped: ") == 1
    assert any(n.startswith("provider cuda skipped: ") for n in json.loads(js.read_text())["notes"])


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
    (tmp_path / "empty").mkdir()
    code, output = run(["bench", "--model", str(tiny), "--images", str(tmp_path / "empty")])
    assert_one_line_error(code, output, "no images found")
    assert "measuring" not in output  # said before anything is measured


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


def _fast_report(tmp_path: Path, models: list[Path], min_runs: int, iterations: int) -> Any:
    from cnnbench.bench.run import BenchConfig, run_bench

    timing = Timing(
        warmup=2, iterations=iterations, duration=0.01, max_seconds=5, min_runs=min_runs
    )
    cfg = BenchConfig(
        models=tuple(map(str, models)),
        providers=(Provider.CPU,),
        batch_sizes=(1, 4),
        timing=timing,
        cache_dir=str(tmp_path / "cache"),
        peak=False,
    )
    return run_bench(cfg)


def _hollow(ax: Any) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == "few-p99"]


def test_plot_gives_each_model_its_own_panels(tiny: Path, tmp_path: Path) -> None:
    """Models of very different speeds: each has its own throughput axis from zero (the
    slow one is not flattened under the fast one's scale), latency on a log axis, the
    same colour per configuration on every row, and hollow markers (with the legend line)
    exactly where p99 had too few runs."""
    pytest.importorskip("matplotlib")
    from cnnbench.bench.plot import FEW_P99_LABEL, figure

    slow = write_conv_net(tmp_path / "conv.onnx", size=64, channels=32)
    report = _fast_report(tmp_path, [tiny, slow], min_runs=100, iterations=40)
    assert all(r.stats.p99_ms is not None for r in report.results)  # 120 runs each
    few = next(r for r in report.results if r.model == "conv.onnx" and r.batch_size == 4)
    few.stats = dataclasses.replace(few.stats, p99_ms=None, samples=30)
    fig = figure(report)
    try:
        assert len(fig.axes) == 4  # two models x (throughput, latency)
        ips = {ax.get_title().split(":")[0]: ax for ax in fig.axes[0::2]}
        lat = {ax.get_title().split(":")[0]: ax for ax in fig.axes[1::2]}
        assert set(ips) == set(lat) == {"tiny.onnx", "conv.onnx"}
        best = {m: max(r.stats.throughput_ips for r in report.results if r.model == m) for m in ips}
        assert best["tiny.onnx"] > 2 * best["conv.onnx"]  # the case the layout is for
        for model, ax in ips.items():
            assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
            assert best[model] <= ax.get_ylim()[1] < 2 * best[model]  # its own scale
        assert all(ax.get_yscale() == "log" for ax in lat.values())
        colors = [
            {line.get_label(): line.get_color() for line in ax.get_lines()} for ax in ips.values()
        ]
        assert colors[0]["cpu fp32"] == colors[1]["cpu fp32"]
        assert _hollow(ips["tiny.onnx"]) == [] == _hollow(lat["tiny.onnx"])
        (marker,) = _hollow(ips["conv.onnx"])
        assert list(marker.get_xdata()) == [4] and marker.get_markerfacecolor() == "white"
        assert list(marker.get_ydata()) == [few.stats.throughput_ips]
        (marker,) = _hollow(lat["conv.onnx"])
        assert list(marker.get_ydata()) == [few.stats.max_ms]  # p99's upper bound
        assert FEW_P99_LABEL in [t.get_text() for t in fig.texts]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_row_peak_is_the_precisions_own_or_labelled_fp32() -> None:
    from cnnbench.bench.peak import row_peak

    peaks = {"cpu": 100.0, "openvino bf16": 400.0, "cpu int8": 800.0, "cuda": 900.0}
    assert row_peak("cpu", "fp32", peaks) == (100.0, "cpu fp32")
    assert row_peak("openvino", "fp32", peaks) == (100.0, "cpu fp32")  # OpenVINO is the CPU
    assert row_peak("openvino", "bf16", peaks) == (400.0, "openvino bf16")
    assert row_peak("cpu", "int8", peaks) == (800.0, "cpu int8")
    assert row_peak("cuda", "fp16", peaks) == (900.0, "cuda fp32")  # none of its own: labelled
    assert row_peak("tensorrt", "fp16", peaks) is None


@pytest.mark.slow
def test_bf16_and_int8_rows_are_held_against_their_own_peak(tiny: Path, tmp_path: Path) -> None:
    """Real runtimes: an int8 file on ONNX Runtime's CPU provider and OpenVINO's bf16 hint
    each get a peak measured in their own precision; fp32 rows keep the float32 one."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = tmp_path / "tiny-int8.onnx"
    quantize_dynamic(str(tiny), str(int8), weight_type=QuantType.QInt8)
    path = tmp_path / "int8.json"
    args = ["--model", str(int8), "--provider", "cpu", "--batch-sizes", "1", *FAST[:-1]]
    code, output = run(["bench", *args, "--json", str(path)])
    assert code == 0, output
    doc = json.loads(path.read_text())
    assert doc["peaks_gflops"]["cpu"] > 0 and doc["peaks_gflops"]["cpu int8"] > 0
    (row,) = doc["results"]
    assert (row["precision"], row["peak_basis"]) == ("int8", "cpu int8")
    assert "peak cpu int8: " in output and "(int8 MatMul)" in output

    pytest.importorskip("openvino")
    path = tmp_path / "ov.json"
    args = ["--model", str(tiny), "--provider", "cpu,openvino", "--precision-hint", "f32,bf16"]
    code, output = run(["bench", *args, "--batch-sizes", "1", *FAST[:-1], "--json", str(path)])
    assert code == 0, output
    doc = json.loads(path.read_text())
    basis = {(r["provider"], r["precision_hint"]): r["peak_basis"] for r in doc["results"]}
    assert basis[("cpu", "auto")] == basis[("openvino", "f32")] == "cpu fp32"
    bf16 = next(r for r in doc["results"] if r["precision_hint"] == "bf16")
    if bf16["precision"] != "bf16":
        pytest.skip("this CPU has no native bf16: OpenVINO ran the bf16 hint as fp32")
    assert (
        basis[("openvino", "bf16")] == "openvino bf16" and doc["peaks_gflops"]["openvino bf16"] > 0
    )
    assert bf16["peak_pct"] == pytest.approx(
        100 * bf16["gflops_per_s"] / doc["peaks_gflops"]["openvino bf16"]
    )


def test_images_in_folders_named_otherwise_say_why_there_is_no_accuracy(
    tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """--images in class folders that are none of the labels (synset ids against
    names): the top-1 column stays empty, and a line now says why."""
    for folder in ("n02123045", "n02084071"):
        (tmp_path / "val" / folder).mkdir(parents=True)
        (tmp_path / "val" / folder / "x.jpg").write_bytes(photo_jpeg)
    args = ["--model", str(tiny_model), "--provider", "cpu", "--batch-sizes", "1", *FAST]
    code, output = bench([*args, "--images", str(tmp_path / "val")])
    assert code == 0, output
    assert "accuracy: not measured: the subfolders of" in output
    assert "are none of the model's labels (cat, dog, fish)" in output
