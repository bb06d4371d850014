"""bench's scenarios, concurrency, validity, OpenVINO, accuracy, stages, profile and compare,
on small hand-written ONNX models with real ONNX Runtime and real OpenVINO on the CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from bench_helpers import FAST, bench, write_classifier, write_conv_net
from helpers import assert_one_line_error, run

from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session

openvino = pytest.importorskip("openvino", reason="pip install 'cnnbench[openvino]'")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def convnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_conv_net(tmp_path_factory.mktemp("conv") / "conv.onnx")


def _json(args: list[str], path: Path) -> tuple[dict, str]:
    code, output = bench([*args, "--json", str(path)])
    assert code == 0, output
    return json.loads(path.read_text()), output


def test_invalid_when_min_runs_cannot_be_met(tiny: Path, tmp_path: Path) -> None:
    out = {ext: tmp_path / f"b.{ext}" for ext in ("json", "csv", "md")}
    args = ["--model", str(tiny), "--provider", "cpu", "--batch-sizes", "1", "--no-peak"]
    args += ["--min-runs", "10000000", "--max-seconds", "0.3", "--duration", "0.05"]
    args += ["--csv", str(out["csv"]), "--markdown", str(out["md"])]
    doc, output = _json(args, out["json"])
    row = doc["results"][0]
    assert row["validity"]["status"] == "INVALID" and not row["validity"]["valid"]
    assert any(
        "too few runs" in r and "--min-runs 10000000" in r for r in row["validity"]["reasons"]
    )
    assert "INVALID" in output and "too few runs" in output
    with out["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["status"] == "INVALID" and "too few runs" in rows[0]["invalid_reasons"]
    assert "INVALID" in out["md"].read_text() and "too few runs" in out["md"].read_text()
    assert any("too few runs" in n for n in doc["notes"])


def test_valid_rows_hold_min_runs(tiny: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny), "--provider", "cpu", "--batch-sizes", "1", *FAST]
    doc, _ = _json([*args, "--min-runs", "150", "--max-seconds", "20"], tmp_path / "b.json")
    row = doc["results"][0]
    assert row["samples"] >= 150 and row["p99_ms"] is not None
    assert row["validity"]["valid"] or "windows disagree" in str(row["validity"]["reasons"])


def test_single_stream_is_batch_one_with_p90_headline(tiny: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny), "--provider", "cpu", "--scenario", "single-stream", *FAST]
    doc, output = _json([*args, "--concurrency", "1,2"], tmp_path / "s.json")
    assert {(r["batch_size"], r["concurrency"]) for r in doc["results"]} == {(1, 1)}
    assert doc["results"][0]["scenario"] == "single-stream"
    assert "headline: p90 ms" in output


def test_concurrency_levels(convnet: Path, tmp_path: Path) -> None:
    args = ["--model", str(convnet), "--provider", "cpu,openvino", "--batch-sizes", "1,2"]
    doc, output = _json([*args, "--concurrency", "1,2", *FAST], tmp_path / "c.json")
    got = {(r["provider"], r["batch_size"], r["concurrency"]) for r in doc["results"]}
    assert got == {(p, b, c) for p in ("cpu", "openvino") for b in (1, 2) for c in (1, 2)}
    import os

    cores = os.cpu_count() or 1
    for r in doc["results"]:
        assert r["throughput_ips"] > 0
        assert r["samples"] >= 30 or "too few runs" in str(r["validity"]["reasons"])
        if r["provider"] == "cpu":
            assert r["threads"] == (max(1, cores // 2) if r["concurrency"] == 2 else cores)
    assert "conc" in output


def test_server_search_brackets_the_bound(convnet: Path, tmp_path: Path) -> None:
    """A bound far above a run's time (the machine may be loaded) but far below the queue an
    overload builds: the search must find a passing rate and a failing one above it."""
    bound = 150.0
    args = ["--model", str(convnet), "--provider", "cpu", "--scenario", "server", "--threads", "1"]
    args += ["--max-latency-ms", f"{bound:g}", "--duration", "0.5", "--max-seconds", "60"]
    doc, output = _json([*args, "--no-peak", "--warmup", "2"], tmp_path / "srv.json")
    (s,) = doc["server"]
    best, over = s["best"], s["next_over"]
    assert best["passed"] and best["p99_ms"] <= bound and best["queries"] >= 100
    assert over is not None and over["target_qps"] > best["target_qps"]
    assert over["p99_ms"] is None or over["p99_ms"] > bound
    tried = sorted(t["target_qps"] for t in s["tries"])
    above = [r for r in tried if r > best["target_qps"]]
    assert above[0] == over["target_qps"]  # the next rate tried above the best failed
    assert "server:" in output and "rate q/s" in output


def test_server_needs_a_bound(tiny: Path) -> None:
    code, output = run(["bench", "--model", str(tiny), "--scenario", "server", *FAST])
    assert_one_line_error(code, output, "--max-latency-ms")
    args = ["bench", "--model", str(tiny), "--provider", "cpu", "--precision-hint", "bf16"]
    assert_one_line_error(*run(args), "--precision-hint applies to --provider openvino only")
    args[-1] = "fp8"
    assert_one_line_error(*run(args), "unknown precision hint fp8", "f32, bf16")


def test_what_a_scenario_or_model_list_cannot_mean_is_one_line(tiny: Path) -> None:
    """Batch sizes for a batch-1 scenario were ignored without a word; the same file given
    twice was measured twice under a clipped path."""
    for scenario in ("single-stream", "server"):
        args = ["bench", "--model", str(tiny), "--scenario", scenario, "--batch-sizes", "1,8"]
        code, output = run([*args, "--max-latency-ms", "5", *FAST])
        assert_one_line_error(code, output, f"--scenario {scenario} runs batch 1")
    again = os.path.join(os.path.dirname(tiny), ".", os.path.basename(tiny))
    code, output = run(["bench", "--model", str(tiny), "--model", again, *FAST])
    assert_one_line_error(code, output, "are the same file: give it once")


def test_openvino_rows_state_the_precision_that_ran(tiny: Path, tmp_path: Path) -> None:
    from cnnbench.infer.runtime.openvino_runner import create_openvino_session

    args = ["--model", str(tiny), "--provider", "cpu,openvino", "--batch-sizes", "1,4", *FAST]
    doc, output = _json([*args, "--precision-hint", "f32,bf16"], tmp_path / "ov.json")
    assert doc["machine"]["openvino"]
    ov = [r for r in doc["results"] if r["provider"] == "openvino"]
    assert {r["precision_hint"] for r in ov} == {"f32", "bf16"}
    ran = create_openvino_session(str(tiny), "bf16").precision()
    assert ran in ("bf16", "fp32")  # bf16 where the CPU has it, else what really ran
    for r in ov:
        assert r["precision"] == ("fp32" if r["precision_hint"] == "f32" else ran)
    if ran == "fp32":
        assert "precision hint bf16 asked, fp32 ran" in output


def test_infer_on_openvino_writes_the_same_csv(tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    outputs = {}
    for provider in ("cpu", "openvino"):
        out = tmp_path / f"{provider}.csv"
        args = ["infer", str(tiny), str(folder), "-o", str(out), "--no-progress"]
        code, output = run([*args, "--provider", provider, "--layout", "nchw", "--preset", "raw"])
        assert code == 0, output
        outputs[provider] = list(csv.DictReader(out.open()))
    cpu, ov = outputs["cpu"], outputs["openvino"]
    assert list(cpu[0]) == list(ov[0])  # the same columns
    assert [(r["path"], r["label"]) for r in cpu] == [(r["path"], r["label"]) for r in ov]
    for a, b in zip(cpu, ov, strict=True):
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=1e-4)
    code, output = run(
        [
            "infer",
            str(tiny),
            str(folder),
            "-o",
            str(tmp_path / "x.csv"),
            "--precision-hint",
            "bf16",
            "--provider",
            "cpu",
            "--layout",
            "nchw",
        ]
    )
    assert_one_line_error(code, output, "--precision-hint applies to --provider openvino")


def test_openvino_missing_is_skipped_with_one_line(tiny: Path, tmp_path: Path) -> None:
    """The package made unimportable in a child process: the other providers still run."""
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from cnnbench.cli import cli\n"
        f"cli(['bench', '--model', r'{tiny}', '--provider', 'cpu,openvino', "
        f"'--batch-sizes', '1', *{FAST!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if "openvino skipped" in line]
    assert len(skipped) == 1 and "pip install 'cnnbench[openvino]'" in skipped[0]
    code = code.replace("'cpu,openvino'", "'openvino'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "openvino is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


def _labelled_folder(model: Path, root: Path, count: int = 8) -> float:
    """Images in class folders: half under the class the model predicts, half under
    another; returns the expected top-1 (0.5)."""
    session = create_session(str(model), RuntimeOptions(provider=Provider.CPU))
    rng = np.random.default_rng(5)
    for i in range(count):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        x = image[None].astype(np.float32).transpose(0, 3, 1, 2)
        predicted = int(session.run(None, {"x": x})[0].argmax())
        label = predicted if i % 2 == 0 else (predicted + 1) % 10
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / str(label) / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return 0.5


def test_accuracy_agreement_and_stages(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "labelled"
    expected = _labelled_folder(tiny, images)
    (min(images.iterdir()) / "broken.png").write_bytes(b"\x89PNG cut short")  # left out
    other = write_classifier(tmp_path / "other.onnx")  # same weights: a second model
    out = {ext: tmp_path / f"a.{ext}" for ext in ("json", "csv", "md")}
    args = ["--model", str(tiny), "--model", str(other), "--provider", "cpu,openvino"]
    args += ["--precision-hint", "f32", "--batch-sizes", "2", "--images", str(images), *FAST]
    args += ["--preset", "raw"]  # foreign float models: raw pixels only when asked for
    args += ["--csv", str(out["csv"]), "--markdown", str(out["md"])]
    doc, output = _json(args, out["json"])
    for r in doc["results"]:
        acc = r["accuracy"]
        assert acc["images"] == 8 and acc["top1"] == pytest.approx(expected)
        assert acc["agreement"] == pytest.approx(1.0)
        assert acc["reference"] == "tiny.onnx cpu fp32"
    with out["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["top1"]) == pytest.approx(expected) for r in rows)
    assert all(float(r["agreement"]) == pytest.approx(1.0) for r in rows)
    assert "top-1" in output and "agree" in output and "50.0%" in output
    assert "| top-1 |" in out["md"].read_text() or "top-1" in out["md"].read_text()
    e2e = doc["end_to_end"]
    assert len(e2e) == 4  # 2 models x (cpu, openvino f32)
    stage_names = {"read", "decode+resize", "batch assembly", "run", "write"}
    for e in e2e:
        assert e["images"] == 8 and e["pipeline_ips"] > 0 and e["bottleneck"] in stage_names
        assert e["errors"] == 1
        for key in ("read_ms", "decode_resize_ms", "batch_assembly_ms", "run_ms", "write_ms"):
            assert e["stages"][key] > 0
    assert "bottleneck:" in output
    assert output.count("8 images, 1 unreadable: left out") == 4, output


def test_agreement_differs_for_a_different_model(tiny: Path, tmp_path: Path) -> None:
    images = tmp_path / "labelled"
    _labelled_folder(tiny, images, count=16)
    other = write_conv_net(tmp_path / "conv8.onnx", size=8, channels=4)
    args = ["--model", str(tiny), "--model", str(other), "--provider", "cpu"]
    doc, _ = _json(
        [*args, "--batch-sizes", "4", "--images", str(images), "--preset", "raw", *FAST],
        tmp_path / "d.json",
    )
    by_model = {r["model"]: r["accuracy"] for r in doc["results"]}
    assert by_model["tiny.onnx"]["agreement"] == 1.0
    theirs = by_model["conv8.onnx"]["agreement"]
    assert 0.0 <= theirs < 1.0  # random weights: another model disagrees somewhere


@pytest.mark.parametrize("provider", ["cpu", "openvino"])
def test_profile_shares_add_up_to_the_run(convnet: Path, tmp_path: Path, provider: str) -> None:
    """Shares sum to 1 and the operators' time is within 10% of the measured run time.
    Other processes preempting runs can push one profile outside that on a shared
    machine: up to five profiles are taken, and one must be within 10%. OpenVINO runs at
    f32: on a CPU with AMX its default bf16 runs the whole batch in about a millisecond, where
    the runtime's fixed cost per call is a tenth of the run (coverage 0.86-0.89 seen), and
    the point here is the profile's arithmetic, not one precision's speed."""
    args = ["--model", str(convnet), "--provider", provider, "--batch-sizes", "64", *FAST]
    args += ["--threads", "1", "--min-runs", "3", "--profile"]
    if provider == "openvino":
        args += ["--precision-hint", "f32"]
    coverages = []
    for attempt in range(5):
        doc, output = _json(args, tmp_path / f"p{attempt}.json")
        (p,) = doc["profiles"]
        assert p["ops"] and p["ops"][0]["share"] >= p["ops"][-1]["share"]
        assert sum(o["share"] for o in p["ops"]) == pytest.approx(1.0, abs=0.1)
        assert {"Conv", "Convolution"} & {o["op_type"] for o in p["ops"]}
        assert "profile conv.onnx" in output and "op type" in output
        coverages.append(p["coverage"])
        if 0.9 <= p["coverage"] <= 1.1:
            return
    pytest.fail(f"operators' time / run time outside 0.9-1.1 in 5 profiles: {coverages}")


def test_compare_exit_codes(tiny: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    args = ["--model", str(tiny), "--provider", "cpu", "--batch-sizes", "1,2", *FAST]
    _json(args, base)
    doc = json.loads(base.read_text())
    for r in doc["results"]:
        r["spread"] = 0.02
    base.write_text(json.dumps(doc))
    slower = json.loads(base.read_text())
    slower["results"][1]["throughput_ips"] *= 0.7  # a made-up 30% regression at batch 2
    new = tmp_path / "new.json"
    new.write_text(json.dumps(slower))
    code, output = run(["bench", "--compare", str(base), str(new)])
    assert code == 0 and "slower by 30.0%" in output and "within noise" in output
    code, output = run(["bench", "--compare", str(base), str(new), "--fail-above", "10"])
    assert code == 1 and "REGRESSION" in output and "regressed by more than 10%" in output
    code, output = run(["bench", "--compare", str(base), str(new), "--fail-above", "40"])
    assert code == 0, output
    code, output = run(["bench", "--compare", str(base), str(base), "--fail-above", "1"])
    assert code == 0 and output.count("within noise") == 2
    (tmp_path / "junk.json").write_text("{")
    code, output = run(["bench", "--compare", str(base), str(tmp_path / "junk.json")])
    assert_one_line_error(code, output, "is not JSON")
    # edited by hand or another tool: each was a traceback, a row of NaN that passed
    # --fail-above, or two rows for one configuration
    for field, value, needle in [
        ("throughput_ips", "fast", "results[1].throughput_ips 'fast': a number above 0"),
        ("throughput_ips", float("nan"), "results[1].throughput_ips nan: a number above 0"),
        ("validity", 7, "results[1].validity 7: an object"),
        ("batch_size", "2", "results[1].batch_size '2': a whole number"),
    ]:
        edited = json.loads(base.read_text())
        edited["results"][1][field] = value
        new.write_text(json.dumps(edited))
        code, output = run(["bench", "--compare", str(base), str(new), "--fail-above", "10"])
        assert_one_line_error(code, output, needle, "give files bench wrote")
    edited["results"] = {"not": "a list"}
    new.write_text(json.dumps(edited))
    code, output = run(["bench", "--compare", str(base), str(new)])
    assert_one_line_error(code, output, "results {'not': 'a list'}: a list")
    infinite = json.loads(base.read_text())
    infinite["results"][1]["spread"] = float("inf")  # a window that measured nothing
    new.write_text(json.dumps(infinite))
    code, output = run(["bench", "--compare", str(base), str(new), "--fail-above", "1"])
    assert code == 0 and output.count("within noise") == 2, output
    code, output = run(["bench", "--model", str(tiny), "--fail-above", "5"])
    assert_one_line_error(code, output, "--compare")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_bench_reports_what_it_measured(
    tiny: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C, or the SIGTERM a scheduler sends, in a long sweep: the configurations
    measured so far are printed and written, marked as cut short; exit 128 + the
    signal. Both ended the run with nothing written ("Aborted!", or no word at all)."""
    out = tmp_path / "b.json"
    args = [sys.executable, "-m", "cnnbench", "bench", "--model", str(tiny), "--provider", "cpu"]
    # windows of a second: three or more per batch size, so twelve take far longer than
    # the wait below, whatever the machine's load (with 0.1 s a sweep once ended first)
    args += ["--batch-sizes", ",".join(str(2**k) for k in range(12)), "--duration", "1"]
    args += ["--no-peak", "--json", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    while "  cpu fp32 batch 1 x1: " not in seen:  # the first row is measured and kept
        line = proc.stderr.readline()
        assert line, f"bench ended early: {seen}"
        seen += line
    proc.send_signal(sig)  # a fixed wait of 12 s once saw no row yet on a loaded machine
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, seen + stderr
    assert "Traceback" not in stderr and "stopped while measuring tiny.onnx on cpu" in stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"].startswith("stopped while measuring tiny.onnx on cpu")
    assert 1 <= len(doc["results"]) < 12, "cut short after some batch sizes"
    assert doc["interrupted"] in stdout, "the printed report says so too"
