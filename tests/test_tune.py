"""tune and infer --plan: a plan written by tune on a tiny model is run as it says; a
changed model file is refused; another machine or a missing provider is a warning; every
bad value is one line. Speed is never asserted here (docs/benchmarks.md has the figures)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import assert_one_line_error, run

from cnnbench.bench.measure import Timing, Validity, next_batch_size
from cnnbench.bench.results import RunConfig
from cnnbench.bench.tune import (
    Candidate,
    _Progress,
    _time_variant,
    concurrency_levels,
    pareto_front,
)
from cnnbench.bench.tune_config import QUICK_PATIENCE, TuneConfig
from cnnbench.bench.tune_variants import Variant
from cnnbench.infer.engines.job import InferConfig
from cnnbench.infer.engines.local import run_infer
from cnnbench.infer.runtime.session import Provider, RuntimeOptions

# short windows: behaviour only
FAST = ["--provider", "cpu", "--max-batch", "2", "--duration", "0.02", "--max-drop", "100"]


@pytest.fixture(scope="module")
def planned(tiny_model: Path, tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plan tune wrote for the tiny model (CPU only, short windows)."""
    plan = tmp_path_factory.mktemp("plan") / "plan.json"
    code, out = run(["tune", str(tiny_model), "--images", str(tiny_folder), "-o", str(plan), *FAST])
    assert code == 0, out
    assert "Pareto front" in out and "CHOSEN" in out
    e = json.loads(plan.read_text())["expected"]
    chosen = next(line for line in out.splitlines() if "CHOSEN" in line)
    assert f" {e['images_per_second']:.1f} " in chosen, chosen  # its e2e column
    assert f" {e['model_only_images_per_second']:.1f} " in chosen, chosen
    assert (
        f"expected {e['images_per_second']:.1f} img/s end to end (infer --plan over the "
        f"images; model-only {e['model_only_images_per_second']:.1f} img/s)" in out
    ), out
    return plan


def _edited(plan: Path, tmp_path: Path, **changes: object) -> Path:
    doc = json.loads(plan.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            doc[section][field] = value
        else:
            doc[section] = value
    if isinstance(doc["model"], str):  # the copy lives elsewhere
        doc["model"] = str((plan.parent / doc["model"]).resolve())
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    return edited


def test_tune_writes_a_plan_that_infer_runs(planned: Path, tiny_folder: Path, tmp_path: Path):
    doc = json.loads(planned.read_text())
    assert doc["schema"] == "cnnbench.plan/2"
    assert doc["provider"] == "cpu" and doc["precision"] in ("fp32", "int8")
    assert doc["batch_size"] in (1, 2) and doc["concurrency"] in (1, 2)
    assert len(doc["sha256"]) == 64
    assert doc["machine"]["cpu"] and doc["machine"]["onnxruntime"]
    # the int8 file tune made sits beside the plan; the plan names its model relative to it
    assert (planned.parent / "plan.int8.onnx").is_file()
    assert (planned.parent / doc["model"]).is_file()
    rows = doc["extra"]["candidates"]
    timed = [r for r in rows if r["model_only_images_per_second"]]
    assert {r["variant"] for r in timed} == {"cpu fp32", "cpu int8"}
    # the expected img/s is the chosen row's end-to-end figure (infer over the images),
    # the model-only figure its own field; only the finalists ran end to end
    expected = doc["expected"]
    chosen = [
        r
        for r in rows
        if (r["variant"], r["batch_size"], r["concurrency"])
        == (f"cpu {doc['precision']}", doc["batch_size"], doc["concurrency"])
    ]
    assert len(chosen) == 1, rows
    assert expected["images_per_second"] == chosen[0]["end_to_end_images_per_second"] > 0
    assert expected["model_only_images_per_second"] == chosen[0]["model_only_images_per_second"]
    ran = [r for r in rows if r["end_to_end_images_per_second"] is not None]
    assert 1 <= len(ran) <= 2 and all(r["model_only_images_per_second"] for r in ran)
    assert expected["images_per_second"] == max(r["end_to_end_images_per_second"] for r in ran)

    out_csv = tmp_path / "pred.csv"
    summary_json = tmp_path / "summary.json"
    args = ["-o", str(out_csv), "--summary", str(summary_json)]
    code, out = run(["infer", "--plan", str(planned), str(tiny_folder), *args])
    assert code == 0, out
    summary = next(line for line in out.splitlines() if " images, " in line)
    assert f"provider cpu {doc['precision']}, batch {doc['batch_size']}" in summary
    # the summary's ratio is against the end-to-end expectation, the model-only one labelled
    got = json.loads(summary_json.read_text())["images_per_second"]
    plan_line = next(line for line in out.splitlines() if line.startswith("plan: cpu"))
    assert (
        f"reached {got:.1f} img/s, {got / expected['images_per_second']:.2f}x the expected "
        f"{expected['images_per_second']:.1f} img/s end to end" in plan_line
    ), plan_line
    assert f"model-only in tune: {expected['model_only_images_per_second']:.1f}" in plan_line
    assert "warning" not in out
    with out_csv.open() as f:
        assert len(list(csv.DictReader(f))) == 8


def test_a_plan_with_another_sha256_is_refused(planned: Path, tiny_folder: Path, tmp_path: Path):
    bad = _edited(planned, tmp_path, sha256="0" * 64)
    code, out = run(["infer", "--plan", str(bad), str(tiny_folder), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(code, out, "changed since the plan was made", "re-run cnnbench tune")
    assert not (tmp_path / "p.csv").exists()


def test_a_plan_copied_without_its_model_says_to_copy_it(
    planned: Path, tiny_folder: Path, tmp_path: Path
):
    copied = tmp_path / "a" / "b" / "elsewhere.json"  # its model named relative: not there
    copied.parent.mkdir(parents=True)
    copied.write_text(planned.read_text())
    model = json.loads(planned.read_text())["model"]
    code, out = run(
        ["infer", "--plan", str(copied), str(tiny_folder), "-o", str(tmp_path / "p.csv")]
    )
    assert_one_line_error(code, out, f"{copied.parent / model} is not there", f"copy {model} with")
    code, out = run(["bench", "--model", str(copied), "--duration", "0.1"])
    assert_one_line_error(code, out, f"classify with cnnbench infer --plan {copied}")


def test_another_cpu_is_one_warning_and_the_plan_still_runs(
    planned: Path, tiny_folder: Path, tmp_path: Path
):
    other = _edited(planned, tmp_path, machine__cpu="Some Other CPU", machine__cpu_flags=["avx2"])
    code, out = run(
        ["infer", "--plan", str(other), str(tiny_folder), "-o", str(tmp_path / "p.csv")]
    )
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "Some Other CPU" in warnings[0], out


def test_a_missing_provider_is_one_warning_and_runs_on_cpu(
    planned: Path, tiny_folder: Path, tmp_path: Path, cuda_missing: str | None
):
    if cuda_missing is None:
        pytest.skip("CUDA runs here")
    gpu = _edited(planned, tmp_path, provider="tensorrt", concurrency=1)
    code, out = run(["infer", "--plan", str(gpu), str(tiny_folder), "-o", str(tmp_path / "p.csv")])
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "tensorrt" in warnings[0], out
    assert "provider cpu" in out


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"batch_size": 0}, "batch_size 0"),
        ({"provider": "tpu"}, "'tpu'"),
        ({"schema": "other/1"}, "not a cnnbench plan"),
        ({"schema": "cnnbench.plan/1"}, "written by an older cnnbench"),
        ({"expected": {"oops": 1}}, "missing or bad field"),
        # as a hand or another tool edits them: each a traceback, a wrong setting taken
        # quietly, or a crash after the whole run (a zero expected img/s)
        ({"batch_size": "8"}, "batch_size '8': a whole number"),
        ({"batch_size": True}, "batch_size True: a whole number"),
        ({"threads": 1.5}, "threads 1.5: a whole number"),
        ({"model": None}, "model None: a non-empty string"),
        ({"precision_hint": "fp8"}, "precision_hint 'fp8': one of auto, f32, bf16"),
        ({"trt_fp16": "no"}, "trt_fp16 'no': true or false"),
        ({"expected__images_per_second": 0}, "expected.images_per_second 0"),
        # only a plan from a stopped tune may lack the end-to-end figure
        ({"expected__images_per_second": None}, "expected.images_per_second None"),
        ({"stopped": 5}, "stopped 5: a non-empty string"),
        ({"expected__p99_ms": "slow"}, "expected.p99_ms 'slow': a number"),
        ({"expected__agreement": 2}, "expected.agreement 2: a number"),
        ({"machine": 5}, "machine 5: an object"),
        ({"batch_size": 10**12}, "more than this machine's"),
    ],
)
def test_bad_plans_are_one_line(
    planned: Path, tiny_folder: Path, tmp_path: Path, change: dict, needle: str
):
    bad = _edited(planned, tmp_path, **change)
    code, out = run(["infer", "--plan", str(bad), str(tiny_folder), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(code, out, needle)
    assert not list(tmp_path.glob("p.*")), "nothing written"


def test_plan_files_that_are_not_plans_are_one_line(tiny_folder: Path, tmp_path: Path):
    out_csv = str(tmp_path / "p.csv")
    (tmp_path / "text.json").write_text("not json")
    code, out = run(
        ["infer", "--plan", str(tmp_path / "text.json"), str(tiny_folder), "-o", out_csv]
    )
    assert_one_line_error(code, out, "is not JSON")
    code, out = run(
        ["infer", "--plan", str(tmp_path / "none.json"), str(tiny_folder), "-o", out_csv]
    )
    assert_one_line_error(code, out, "cannot read")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--provider", "openvino"], "--plan sets"),
        (["--batch-size", "4"], "--plan sets"),
        (["--threads", "1"], "--plan sets"),
        # a plan is measured on this machine's cores: Ray's workers are other processes
        (["--engine", "ray"], "--plan runs on the local engine: leave out --engine ray"),
    ],
)
def test_what_a_plan_sets_cannot_be_given_too(
    planned: Path, tiny_folder: Path, tmp_path: Path, extra: list[str], needle: str
):
    args = ["infer", "--plan", str(planned), str(tiny_folder), "-o", str(tmp_path / "p.csv")]
    code, out = run([*args, *extra])
    assert code != 0 and "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and needle in errors[0], out
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--max-drop", "-1"], "--max-drop is in points"),
        (["--max-drop", "101"], "--max-drop is in points"),
        (["--latency-budget", "0"], "--latency-budget"),
        (["--time-budget", "-2"], "--time-budget"),
        (["--max-batch", "0"], "--max-batch"),
        (["--provider", "tpu"], "unknown provider tpu"),
    ],
)
def test_bad_tune_values_are_one_line(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path, args: list[str], needle: str
):
    base = ["tune", str(tiny_model), "--images", str(tiny_folder), "-o", str(tmp_path / "p.json")]
    code, out = run([*base, *args])
    assert_one_line_error(code, out, needle)
    assert not (tmp_path / "p.json").exists()


def test_bad_tune_paths_are_one_line(
    tiny_model: Path, foreign_model: Path, tiny_folder: Path, tmp_path: Path
):
    plan = str(tmp_path / "p.json")
    code, out = run(["tune", str(tmp_path / "no.onnx"), "--images", str(tiny_folder), "-o", plan])
    assert_one_line_error(code, out, "model file not found")
    code, out = run(["tune", str(tiny_model), "--images", str(tmp_path / "none"), "-o", plan])
    assert_one_line_error(code, out, "is not a folder of images")
    code, out = run(["tune", str(tiny_model), "--images", str(tiny_folder), "-o", plan + ".txt"])
    assert_one_line_error(code, out, "ending in .json")
    code, out = run(["tune", str(foreign_model), "--images", str(tiny_folder), "-o", plan])
    assert_one_line_error(code, out, "cnnbench convert")
    # a model named as the int8 file tune writes beside the plan (convert's habit:
    # model.int8.onnx, then -o model.json) was overwritten by it, or removed on an error
    model = tmp_path / "model.int8.onnx"
    model.write_bytes(tiny_model.read_bytes())
    args = ["tune", str(model), "--images", str(tiny_folder), "-o", str(tmp_path / "model.json")]
    code, out = run(args)
    assert_one_line_error(code, out, "model.int8.onnx, which is MODEL itself")
    assert model.read_bytes() == tiny_model.read_bytes()


def test_a_model_given_beside_a_plan_is_one_line(
    planned: Path, tiny_model: Path, tiny_folder: Path, tmp_path: Path
):
    """By habit, `infer --plan P MODEL INPUTS`: MODEL was read as an image (an error row)."""
    out = tmp_path / "p.csv"
    code, text = run(
        ["infer", "--plan", str(planned), str(tiny_model), str(tiny_folder), "-o", str(out)]
    )
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert code != 0 and len(errors) == 1, text
    assert f"--plan names the model: leave {tiny_model} out" in errors[0]
    assert not out.exists()


def test_infer_without_a_model_or_plan_is_one_line(tiny_folder: Path, tmp_path: Path):
    code, out = run(["infer", str(tiny_folder), "-o", str(tmp_path / "p.csv")])
    assert_one_line_error(code, out, "MODEL")


def test_runs_in_flight_write_the_same_rows(tiny_model: Path, tiny_folder: Path, tmp_path: Path):
    """Two batches scored at once: the same rows, in the same order, as one at a time."""
    texts = []
    for n in (1, 2):
        out = tmp_path / f"pred{n}.csv"
        cfg = InferConfig(
            str(tiny_model),
            (str(tiny_folder),),
            str(out),
            batch_size=1,
            concurrency=n,
            progress=False,
        )
        summary = run_infer(cfg)
        assert summary.images == 8 and summary.concurrency == n
        texts.append(out.read_text())
    assert texts[0] == texts[1]


def _candidate(ips: float, p99: float, drop: float) -> Candidate:
    """A timed candidate with just the figures the front reads."""
    variant = Variant("v", Provider.CPU, "fp32", "source")
    stats = SimpleNamespace(throughput_ips=ips, p99_or_max_ms=p99)
    result = SimpleNamespace(stats=stats, validity=Validity())
    return Candidate(variant, result, 1 - drop / 100, None, drop)  # type: ignore[arg-type]


def test_pareto_front_keeps_what_nothing_beats_on_all_three() -> None:
    fast = _candidate(100, 50, 2)
    quick = _candidate(50, 10, 2)
    exact = _candidate(40, 60, 0)
    beaten = _candidate(40, 60, 2)  # slower, later and less exact than `fast`
    front = pareto_front([beaten, exact, quick, fast])
    assert front == [fast, quick, exact]


def test_concurrency_levels() -> None:
    assert concurrency_levels(2, False) == (1, 2)
    assert concurrency_levels(6, False) == (1, 2, 4)
    assert concurrency_levels(3, True) == (1, 2, 3)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([(1, 100.0), (2, 102.0)], 4),  # one flat doubling: quick search goes on
        ([(1, 100.0), (2, 102.0), (4, 103.0)], None),  # two in a row: it stops
        ([(1, 100.0), (2, 102.0), (4, 120.0)], 8),  # int8 often gains only past batch 2
    ],
)
def test_quick_search_waits_for_two_flat_doublings(history: list, expected: int | None) -> None:
    assert next_batch_size(history, 64, patience=QUICK_PATIENCE) == expected


@pytest.mark.slow
def test_tune_on_a_trained_model_keeps_its_answers(digits_run, tmp_path: Path) -> None:
    """Trained weights (digits, held-out images in class folders): every candidate tune may
    choose is within --max-drop 1 of fp32's accuracy, the int8 one included."""
    plan = tmp_path / "plan.json"
    images = str(digits_run.heldout)
    args = ["--provider", "cpu", "--max-batch", "4", "--duration", "0.05", "--max-drop", "1"]
    code, out = run(["tune", str(digits_run.onnx_path), "--images", images, "-o", str(plan), *args])
    assert code == 0, out
    doc = json.loads(plan.read_text())
    rows = {r["variant"]: r for r in doc["extra"]["candidates"]}
    fp32 = rows["cpu fp32"]["accuracy"]
    assert fp32 >= 0.95  # held-out accuracy of the fixture's training run
    int8 = rows["cpu int8"]
    assert int8["agreement"] >= 0.99 and int8["drop_points"] <= 1.0 + 1e-9
    assert doc["expected"]["agreement"] >= 0.99
    assert doc["expected"]["accuracy"] >= fp32 - 0.01


def test_a_latency_budget_nothing_meets_is_one_line(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.json"
    args = [*FAST, "--latency-budget", "0.000001", "--exhaustive"]
    code, out = run(["tune", str(tiny_model), "--images", str(tiny_folder), "-o", str(plan), *args])
    assert_one_line_error(code, out, "--latency-budget", "the lowest was")
    assert list(tmp_path.iterdir()) == []  # no plan, and no int8 file made for it


def test_the_time_budget_stops_a_sweep_after_the_batch_size_it_ran_out_in(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """Checked after each batch size (every count of runs in flight at it measured), not
    only between variants: a budget already spent measures batch 1 and says the rest."""
    variant = Variant("cpu fp32", Provider.CPU, "fp32", "source", path=str(tiny_model))
    timing = Timing(warmup=1, duration=0.02, max_seconds=1.0, min_runs=3)
    cfg = TuneConfig(str(tiny_model), str(tiny_folder), str(tmp_path / "p.json"), timing=timing)
    runtime = RuntimeOptions(Provider.CPU, threads=2)
    lines: list[str] = []
    spent = _Progress(start=0.0, deadline=0.0)
    rc = RunConfig(Provider.CPU)
    rows = _time_variant(variant, rc, runtime, cfg, lines.append, spent)
    assert sorted((r.batch_size, r.concurrency) for r in rows) == [(1, 1), (1, 2)], lines
    assert spent.unmeasured == ["cpu fp32 past batch 1"]
    assert any("time budget reached: stopped after batch 1" in line for line in lines), lines
    rows = _time_variant(variant, rc, runtime, cfg, lines.append, _Progress(start=0.0))
    assert max(r.batch_size for r in rows) > 1  # no budget: the sweep goes on


def test_a_model_lowered_already_is_measured_as_it_is(
    planned: Path, tiny_folder: Path, tmp_path: Path
):
    """tune on its own int8 file: no int8 of an int8 model (its quantizer fails on its own
    nodes), the variants named by what runs, the plan's precision int8; convert refuses
    to lower it again in one line."""
    int8 = planned.with_name(f"{planned.stem}.int8.onnx")
    assert int8.exists(), "the fixture's tune made an int8 file"
    plan = tmp_path / "again.json"
    code, out = run(["tune", str(int8), "--images", str(tiny_folder), "-o", str(plan), *FAST])
    assert code == 0, out
    assert f"{int8} is int8 already (its weights)" in out
    rows = [line for line in out.splitlines() if line.startswith("cpu ")]
    assert rows and all(line.startswith("cpu int8") for line in rows), out
    assert json.loads(plan.read_text())["precision"] == "int8"
    assert not list(tmp_path.glob("again.*.onnx")), "no file made from it"
    args = ["convert", str(int8), "-o", str(tmp_path / "m.onnx"), "--precision", "int8"]
    code, out = run([*args, "--calibration", str(tiny_folder)])
    assert_one_line_error(code, out, "is int8 already (its weights): --precision int8 lowers")
    assert not (tmp_path / "m.onnx").exists()


def test_unreadable_images_are_left_out_with_one_line(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """A file of --images that cannot be read is left out of tune's figures, said once
    (not again by the int8 step's calibration, from its temporary folder)."""
    import shutil

    images = tmp_path / "images"
    shutil.copytree(tiny_folder, images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    plan = tmp_path / "plan.json"
    code, out = run(["tune", str(tiny_model), "--images", str(images), "-o", str(plan), *FAST])
    assert code == 0, out
    said = [line for line in out.splitlines() if "files unreadable" in line]
    assert len(said) == 1 and said[0].startswith(f"--images {images}: 1 of "), out
    assert "broken.jpg: " in said[0], said
    assert "cpu int8" in out, "the int8 step ran on them too"
