"""Convert benchmark: peak memory and time of `cnnbench convert` on VGG16 and ResNet50,
ONNX Runtime speed of our route against the frozen-graph route, and int8 against fp32.

Run it alone, under the shared lock:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/convert_bench.py \
        --work /tmp/cnnbench-convert-bench

Models have random weights (weights=None: ImageNet weights cannot be downloaded here);
calibration and real-image checks use crops of the photos bundled with scikit-learn and
scikit-image. Speed is at batch 8 on real photos, the models measured in alternating
rounds within one run, the median round reported, as img per CPU-second (robust on a
shared machine) and as wall-clock img/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.runners import host_runner
from cnnbench.cpu import cpu_model
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, Session, create_session

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CNNBENCH = os.path.join(os.path.dirname(sys.executable), "cnnbench")
BATCH = 8


def build_keras(work: str) -> dict[str, str]:
    """VGG16 and ResNet50, random weights, saved to .keras."""
    import keras

    paths = {}
    for name, factory in (
        ("vgg16", keras.applications.VGG16),
        ("resnet50", keras.applications.ResNet50),
    ):
        paths[name] = os.path.join(work, f"{name}.keras")
        if not os.path.exists(paths[name]):
            model = factory(weights=None)
            print(f"{name}: {model.count_params():,} parameters", flush=True)
            model.save(paths[name])
    return paths


def _time_field(pattern: str, report: str) -> str:
    """One field of /usr/bin/time -v's report (an error naming it when it is not there)."""
    found = re.search(pattern, report)
    if found is None:
        raise SystemExit(f"/usr/bin/time -v printed no {pattern!r}: {report[-300:]}")
    return found[1]


def timed_convert(args: list[str]) -> dict:
    """Run `cnnbench convert ARGS` under /usr/bin/time -v: exit code, peak RSS, wall time."""
    proc = subprocess.run(
        ["/usr/bin/time", "-v", CNNBENCH, "convert", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    rss_kb = int(_time_field(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr))
    clock = _time_field(r"Elapsed \(wall clock\) time.*: ([\d:.]+)", proc.stderr)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    table = [line for line in proc.stderr.splitlines() if line.startswith(("  ", "Error"))]
    print("\n".join(["$ cnnbench convert " + " ".join(args), *table]), flush=True)
    return {
        "args": args,
        "exit_code": proc.returncode,
        "peak_rss_gb": rss_kb / 1e6,
        "wall_s": seconds,
        "table": table,
    }


def frozen_route(keras_path: str, out: str) -> None:
    """The frozen-graph route: tf2onnx.from_function on a tf.function capturing the
    variables (frozen into constants), same uint8 input and caffe preprocessing."""
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.saving.load_model(keras_path, compile=False)
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.uint8, name="image"),)

    @tf.function(input_signature=spec)
    def fn(image: tf.Tensor) -> tf.Tensor:
        x = tf.cast(image, tf.float32)[..., ::-1] - [103.939, 116.779, 123.68]
        return model(x, training=False)

    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=out)


def throughput(paths: dict[str, str], images: np.ndarray, rounds: int, seconds: float) -> dict:
    """img/s per model over alternating rounds (ORT_ENABLE_ALL, CPU, all cores).

    Two figures per round: wall-clock img/s, and img per CPU-second of this process with
    ONNX Runtime's spin-waiting off. On a machine shared with other jobs the wall-clock
    figure swings by 2x between rounds; the CPU-time figure counts only this model's work.
    """
    sessions = {name: _session(path) for name, path in paths.items()}
    runs = {name: host_runner(s, s.get_inputs()[0].name, images) for name, s in sessions.items()}
    for run in runs.values():
        for _ in range(3):
            run()
    # bench's own measurement, one window of `seconds` per model and round
    timing = Timing(warmup=0, duration=seconds, max_seconds=seconds, min_runs=1)
    wall: dict[str, list[float]] = {name: [] for name in sessions}
    cpu: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, run in runs.items():
            cpu_start = time.process_time_ns()
            m = measure(run, len(images), timing)
            cpu_s = (time.process_time_ns() - cpu_start) / 1e9
            wall[name].append(m.stats().throughput_ips)
            cpu[name].append(len(m.latencies_ms) * len(images) / cpu_s)
    return {
        name: {
            "wall_median_ips": float(np.median(wall[name])),
            "cpu_median_ips": float(np.median(cpu[name])),
            "wall_rounds_ips": wall[name],
            "cpu_rounds_ips": cpu[name],
        }
        for name in sessions
    }


def _session(path: str) -> Session:
    """ONNX Runtime on the CPU as cnnbench runs it (ORT_ENABLE_ALL), idle threads not
    spinning."""
    return create_session(path, RuntimeOptions(Provider.CPU, spinning=False))


def agreement(a: str, b: str, images: np.ndarray) -> float:
    """Top-1 agreement of two ONNX models on `images` (int8 against fp32)."""
    probs = [_session(p).run(None, {"image": images})[0] for p in (a, b)]
    return float(np.mean(probs[0].argmax(1) == probs[1].argmax(1)))


def load_photos(folder: str) -> np.ndarray:
    from cnnbench.infer.decode.images import load_image
    from cnnbench.infer.sources.listing import scan

    return np.stack([load_image(item.path, (224, 224), 3) for item in scan(folder)])


def conversions(work: str, keras_paths: dict[str, str], calib: str, verify: str) -> dict:
    caffe = ["--preprocess", "imagenet-caffe"]
    out = {name: os.path.join(work, f"{name}.onnx") for name in ("vgg16", "resnet50")}
    int8 = os.path.join(work, "resnet50-int8.onnx")
    fp16 = os.path.join(work, "resnet50-fp16.onnx")
    runs = {
        "vgg16 fp32": timed_convert([keras_paths["vgg16"], "-o", out["vgg16"], *caffe]),
        "resnet50 fp32": timed_convert([keras_paths["resnet50"], "-o", out["resnet50"], *caffe]),
    }
    int8_args = [keras_paths["resnet50"], "-o", int8, *caffe, "--precision", "int8"]
    runs["resnet50 int8"] = timed_convert(
        [*int8_args, "--calibration", calib, "--verify-images", verify]
    )
    if runs["resnet50 int8"]["exit_code"] != 0:  # random weights: tiny top-1 margins
        runs["resnet50 int8 (--no-verify)"] = timed_convert(
            [*int8_args, "--calibration", calib, "--no-verify"]
        )
    fp16_args = [keras_paths["resnet50"], "-o", fp16, *caffe, "--precision", "fp16"]
    runs["resnet50 fp16"] = timed_convert([*fp16_args, "--verify-images", verify])
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cnnbench-convert-bench")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    from cnnbench.bench.photos import write_sample_photos

    calib, verify = os.path.join(args.work, "calib"), os.path.join(args.work, "verify")
    write_sample_photos(calib, 200, seed=1)
    write_sample_photos(verify, 100, seed=2)
    keras_paths = build_keras(args.work)
    runs = conversions(args.work, keras_paths, calib, verify)
    frozen = os.path.join(args.work, "resnet50-frozen.onnx")
    frozen_route(keras_paths["resnet50"], frozen)
    ours, int8 = (
        os.path.join(args.work, "resnet50.onnx"),
        os.path.join(args.work, "resnet50-int8.onnx"),
    )
    photos = load_photos(verify)
    speed = throughput(
        {"ours fp32": ours, "frozen fp32": frozen, "ours int8": int8},
        photos[:BATCH],
        args.rounds,
        args.seconds,
    )
    result = {
        "conversions": runs,
        "speed_batch8": speed,
        "ratios": {
            f"{kind} {a} / {b}": speed[a][f"{kind}_median_ips"] / speed[b][f"{kind}_median_ips"]
            for a, b in (("ours fp32", "frozen fp32"), ("ours int8", "ours fp32"))
            for kind in ("cpu", "wall")
        },
        "int8_top1_agreement_real": agreement(int8, ours, photos),
        "machine": {"cpu": cpu_model() or platform.machine(), "cores": os.cpu_count()},
    }
    with open(os.path.join(args.work, "convert_bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    print_summary(result)


def print_summary(result: dict) -> None:
    print("\n| conversion | exit | peak RSS (GB) | wall (s) |\n|---|---|---|---|")
    for name, run in result["conversions"].items():
        print(f"| {name} | {run['exit_code']} | {run['peak_rss_gb']:.2f} | {run['wall_s']:.1f} |")
    print("\n| ResNet50, batch 8 | img per CPU-second | img/s wall (median) |\n|---|---|---|")
    for name, figures in result["speed_batch8"].items():
        cpu, wall = figures["cpu_median_ips"], figures["wall_median_ips"]
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")
    print()
    for name, ratio in result["ratios"].items():
        print(f"{name}: {ratio:.3f}")
    agree = result["int8_top1_agreement_real"]
    print(f"int8 top-1 agreement with fp32 on real photos: {agree:.1%}")


if __name__ == "__main__":
    main()
