"""What the Pillow-exact resize (`--preset imagenet`'s bilinear-aa) costs.

1. Decode + resize of 500x375 JPEGs to 224x224 on one core (this process pinned to one
   CPU, one thread), milliseconds per image, rounds interleaved, median over rounds:
   - pillow-exact: cnnbench's path (Pillow full-size decode, Pillow's antialiased
     bilinear with a box over the crop where that changes no pixel, centre 224)
   - pillow-reference: the same pixels as torchvision writes them (Image.open,
     convert("RGB"), resize shorter side to 256, crop)
   - opencv-area: cnnbench's fast path for its own models (the default policy: OpenCV
     decode, DCT-reduced where the JPEG is large enough, INTER_AREA, whole image to 224)
   - opencv-bilinear: OpenCV full-size decode + INTER_LINEAR, the same centre crop
   Every pillow-exact image is checked equal to its pillow-reference, pixel for pixel.
2. ResNet50 (random weights, as a foreign float32 NCHW model without a spec) end to end
   through `run_infer` with `--preset imagenet` over a folder of the same photos, against
   a bare `session.run` loop on one batch of them (ORT's default session), best of
   --rounds interleaved rounds each; the ratio is the figure (target >= 0.9).

Run from the repository root under the shared benchmark lock:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/pillow_resize.py

Needs the `train` extra the first time (the zoo's ResNet50 is built and converted).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from infer_speed import end_to_end_rate  # a sibling script: run from benchmarks/

from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.photos import write_sized_photos
from cnnbench.bench.runners import host_runner
from cnnbench.bench.workloads import best_of
from cnnbench.bench.zoo import default_cache_dir, zoo_model
from cnnbench.infer.decode.images import decode_into, read_into
from cnnbench.infer.decode.resize import DEFAULT_POLICY, Interpolation
from cnnbench.infer.runtime.preprocess import (
    EVAL_CROP,
    ForeignOptions,
    Preset,
    resolve_input_format,
)
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session
from cnnbench.infer.sources.listing import scan

SIZE = (224, 224)
IMAGENET = ForeignOptions(preset=Preset.IMAGENET)


def pillow_reference(data: bytes, out: np.ndarray) -> None:
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image, with Pillow alone."""
    from PIL import Image

    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    resized = image.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = round((nh - 224) / 2.0), round((nw - 224) / 2.0)
    out[...] = np.asarray(resized.crop((left, top, left + 224, top + 224)))


def decoders() -> dict[str, Callable[[bytes, np.ndarray], None]]:
    bilinear = EVAL_CROP.overridden(interpolation=Interpolation.BILINEAR)
    return {
        "pillow_exact": lambda data, out: decode_into(data, out, policy=EVAL_CROP),
        "pillow_reference": pillow_reference,
        "opencv_area": lambda data, out: decode_into(data, out, policy=DEFAULT_POLICY),
        "opencv_bilinear": lambda data, out: decode_into(data, out, policy=bilinear),
    }


def check_identical(files: list[bytes]) -> int:
    """Files whose pillow-exact pixels differ from the reference's (must be 0)."""
    a, b = np.empty((*SIZE, 3), np.uint8), np.empty((*SIZE, 3), np.uint8)
    differ = 0
    for data in files:
        decode_into(data, a, policy=EVAL_CROP)
        pillow_reference(data, b)
        differ += int(not np.array_equal(a, b))
    return differ


def decode_costs(files: list[bytes], rounds: int) -> dict:
    """ms per image of each decoder on one core, the median of interleaved rounds: wall
    time, and this thread's CPU time (what the work costs, whatever else the shared core
    runs meanwhile)."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    out = np.empty((*SIZE, 3), np.uint8)
    wall: dict[str, list[float]] = {name: [] for name in decoders()}
    cpu: dict[str, list[float]] = {name: [] for name in decoders()}
    for _ in range(rounds):
        for name, fn in decoders().items():
            t0, c0 = time.perf_counter(), time.thread_time()
            for data in files:
                fn(data, out)
            wall[name].append((time.perf_counter() - t0) * 1e3 / len(files))
            cpu[name].append((time.thread_time() - c0) * 1e3 / len(files))
    ms = {name: statistics.median(v) for name, v in wall.items()}
    cpu_ms = {name: statistics.median(v) for name, v in cpu.items()}
    return {
        "ms_per_image": ms,
        "cpu_ms_per_image": cpu_ms,
        "pillow_exact_vs_opencv_area": ms["pillow_exact"] / ms["opencv_area"],
        "pillow_exact_vs_reference": ms["pillow_exact"] / ms["pillow_reference"],
        "cpu_pillow_exact_vs_opencv_area": cpu_ms["pillow_exact"] / cpu_ms["opencv_area"],
        "cpu_pillow_exact_vs_reference": cpu_ms["pillow_exact"] / cpu_ms["pillow_reference"],
    }


def foreign_resnet50(path: Path) -> Path:
    """The zoo's ResNet50 (uint8 NHWC input, preprocessing in the graph) as a pretrained
    export looks: a float32 NCHW input `data` transposed into the old graph, no spec. The
    old in-graph cast and scaling stay: a few elementwise ops next to 4 GFLOPs."""
    import onnx
    from onnx import TensorProto, helper

    if path.exists():
        return path
    source = zoo_model("resnet50", default_cache_dir(), print).onnx_path
    model = onnx.load(source)
    old = model.graph.input[0]
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, 224, 224])
    transpose = helper.make_node("Transpose", ["data"], [old.name], perm=[0, 2, 3, 1])
    model.graph.node.insert(0, transpose)
    model.graph.input.remove(old)
    model.graph.input.append(data)
    del model.metadata_props[:]
    onnx.save(model, path)
    return path


def bare_rate(model: Path, folder: Path, batch: int, seconds: float) -> float:
    """img/s of `session.run` alone (ORT's default session) on one batch of the photos
    as `--preset imagenet` prepares them, timed by bench's `measure`."""
    session = create_session(str(model), RuntimeOptions(Provider.CPU))
    fmt = resolve_input_format(session, IMAGENET)
    buf = np.empty((batch, *fmt.size, fmt.channels), np.uint8)
    for item, out in zip(scan(str(folder)), buf, strict=False):
        read_into(item.path, out, fmt.bgr, fmt.policy)
    run = host_runner(session, fmt.input_name, fmt.to_model_input(buf))
    timing = Timing(warmup=1, duration=seconds / 3, max_seconds=2 * seconds, min_runs=3)
    return measure(run, batch, timing).stats().throughput_ips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pillow-resize-bench"))
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resnet-images", type=int, default=192)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder = write_sized_photos(args.work / "photos_500x375", args.photos)
    result: dict = {"photos": args.photos, "rounds": args.rounds}
    if not args.skip_resnet:
        model = foreign_resnet50(args.work / "resnet50_nchw.onnx")
        n, out = args.resnet_images, args.work / "pred.csv"
        r = best_of(
            args.rounds,
            end_to_end=lambda: end_to_end_rate(model, folder, out, args.batch, n, IMAGENET),
            bare_session_run=lambda: bare_rate(model, folder, args.batch, 7.0),
        )
        result["resnet50_preset_imagenet"] = r | {
            "batch": args.batch,
            "images": n,
            "ratio": r["end_to_end"] / r["bare_session_run"],
        }
    files = [Path(item.path).read_bytes() for item in scan(str(folder))]
    result["pillow_exact_files_differing_from_reference"] = check_identical(files)
    result["decode_resize_one_core"] = decode_costs(files, args.rounds)
    print(json.dumps(result, indent=2))
    (args.work / "pillow_resize.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
