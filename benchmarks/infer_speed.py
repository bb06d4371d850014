"""How fast is `cnnbench infer` against its two limits, and is its memory flat?

- ResNet50 (model-bound): end-to-end img/s of `run_infer` over a folder of real JPEG
  photos vs `session.run` alone, timed by bench's `measure`, at the same batch size
  (target >= 0.9x; with `--crop`, the centre-crop resize of `--preset imagenet`: target
  >= 0.95x).
- mnist_cnn (decode-bound): end-to-end img/s vs the decode-only rate of the same files
  with the same decode function and thread count (target >= 0.8x), over 500x375 photos
  (fp32 and int8) and over larger photos (`--sizes`, default 2 MP and 12 MP), where
  decoding costs more than the model.
- A model with almost no compute (mean colour, 224x224 input): purely decode-bound, the
  same comparison as mnist_cnn's.
- Peak RSS of `cnnbench infer` on a 1,000-file and a 50,000-file folder (target: within 10%).
- The header read done before each decode (size, truncation, orientation checks) as a
  share of the whole decode of the same bytes, over the mnist_cnn photo folder (target
  <= 5%); `--header-only` measures just that.

Run under the shared benchmark lock, from the repository root:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/infer_speed.py

Needs the `train` extra (TensorFlow) to build and convert the two models.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from cnnbench.bench.measure import Timing, measure
from cnnbench.bench.photos import write_sized_photos as make_photo_folder
from cnnbench.bench.runners import host_runner
from cnnbench.bench.workloads import best_of, make_models
from cnnbench.cpu import cpu_model
from cnnbench.infer.decode.images import decode, read_into
from cnnbench.infer.decode.probe import read_header
from cnnbench.infer.decode.resize import CropMode, Interpolation
from cnnbench.infer.engines.job import InferConfig
from cnnbench.infer.engines.local import run_infer
from cnnbench.infer.runtime.preprocess import ForeignOptions, resolve_input_format
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session
from cnnbench.infer.sources.listing import scan_inputs

CPU = RuntimeOptions(provider=Provider.CPU)


def make_linked_folder(folder: Path, source: Path, count: int) -> Path:
    """`count` hard links of one photo: a big folder built in seconds."""
    if folder.exists() and len(os.listdir(folder)) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        target = folder / f"img_{i:06d}.jpg"
        if not target.exists():
            os.link(source, target)
    return folder


def make_pixel_mean_model(path: Path, size: int = 224) -> Path:
    """A contract model with almost no compute (mean colour -> 3 classes): with it the
    pipeline is purely decode-bound."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cnnbench.infer.runtime.contract import ModelSpec, write_spec

    shape: list[str | int] = ["batch", size, size, 3]
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Softmax", ["m"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pixel_mean",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    write_spec(model, ModelSpec(input_size=(size, size), channels=3, labels=("r", "g", "b")))
    onnx.save(model, path)
    return path


def bare_session_rate(
    model: Path, folder: Path, batch: int, seconds: float, spinning: bool = True
) -> float:
    """img/s of `session.run` alone on one batch of real decoded photos (ORT's defaults,
    or with its idle threads not spinning, as `infer` runs them)."""
    session = create_session(str(model), RuntimeOptions(Provider.CPU, spinning=spinning))
    fmt = resolve_input_format(session)
    buf = np.empty((batch, *fmt.size, fmt.channels), dtype=np.uint8)
    for item, out in zip(scan_inputs((str(folder),), (".jpg",)), buf, strict=False):
        read_into(item.path, out)
    run = host_runner(session, fmt.input_name, fmt.to_model_input(buf))
    # bench's own measurement: a warm-up run, then windows of seconds/3 until three agree
    # (or twice the time passes); img/s from the summed latencies, as `cnnbench bench`.
    timing = Timing(warmup=1, duration=seconds / 3, max_seconds=2 * seconds, min_runs=3)
    return measure(run, batch, timing).stats().throughput_ips


def decode_only_rate(model: Path, folder: Path, workers: int, limit: int) -> float:
    """img/s of reading + decoding + resizing the files into the model's input size, on
    `workers` threads, with the pipeline's own `read_into`."""
    session = create_session(str(model), CPU)
    fmt = resolve_input_format(session)
    paths = [item.path for item in scan_inputs((str(folder),), (".jpg",))][:limit]
    chunks = [paths[i : i + 8] for i in range(0, len(paths), 8)]

    def work(chunk: list[str]) -> None:
        out = np.empty((*fmt.size, fmt.channels), dtype=np.uint8)
        for path in chunk:
            read_into(path, out, fmt.bgr)

    with ThreadPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        start = time.perf_counter()
        list(pool.map(work, chunks))
        return len(paths) / (time.perf_counter() - start)


# --crop: the ImageNet evaluation resize (shorter side to 256, centre crop 224, bilinear)
CENTRE_CROP = ForeignOptions(
    crop_mode=CropMode.CENTER, crop_pct=0.875, interpolation=Interpolation.BILINEAR
)


def end_to_end_rate(
    model: Path,
    folder: Path,
    out: Path,
    batch: int,
    limit: int,
    foreign: ForeignOptions | None = None,
) -> float:
    cfg = InferConfig(
        model=str(model),
        inputs=(str(folder),),
        output=str(out),
        batch_size=batch,
        limit=limit,
        progress=False,
        runtime=CPU,
        foreign=foreign or ForeignOptions(),
    )
    return run_infer(cfg).images_per_second


RSS_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def peak_rss_mb(model: Path, folder: Path, out: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of a `cnnbench infer` subprocess, started from a
    small launcher (a child forked from this big process would count its pages)."""
    args = [sys.executable, "-m", "cnnbench", "infer", str(model), str(folder), "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RSS_LAUNCHER, *args, "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.split()[-1]) / 1024, time.perf_counter() - start


def mnist_rates(
    model: Path, photos: Path, args: argparse.Namespace, workers: int, count: int = 0
) -> dict:
    """End-to-end vs decode-only (target >= 0.8), and vs the bound of decode and model
    sharing the cores, 1 / (1/decode + 1/model)."""
    count = count or args.photos
    m = best_of(
        args.rounds,
        end_to_end=lambda: end_to_end_rate(
            model, photos, args.work / "pred.csv", args.batch, count
        ),
        decode_only=lambda: decode_only_rate(model, photos, workers, count),
        bare_session_run=lambda: bare_session_rate(model, photos, args.batch, 3.0),
    )
    serial = 1 / (1 / m["decode_only"] + 1 / m["bare_session_run"])
    return m | {
        "files": count,
        "ratio": m["end_to_end"] / m["decode_only"],
        "decode_plus_model_bound": serial,
        "ratio_to_bound": m["end_to_end"] / serial,
    }


def header_share(folder: Path, limit: int, size: tuple[int, int] = (28, 28)) -> dict:
    """Seconds per file of `read_header` and of `decode` (which includes it) on the
    same in-memory bytes, one thread, best of 3 passes each, interleaved."""
    paths = [item.path for item in scan_inputs((str(folder),), (".jpg",))][:limit]
    blobs = [Path(p).read_bytes() for p in paths]

    def per_file(fn: Callable[[bytes], object]) -> float:
        start = time.perf_counter()
        for data in blobs:
            fn(data)
        return (time.perf_counter() - start) / len(blobs)

    header, full = float("inf"), float("inf")
    for _ in range(3):
        header = min(header, per_file(read_header))
        full = min(full, per_file(lambda data: decode(data, 1, target=size)))
    return {"files": len(blobs), "header_s": header, "decode_s": full, "share": header / full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/infer-bench"))
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--resnet-images", type=int, default=192)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--crop",
        action="store_true",
        help="ResNet50 end to end with the centre-crop resize (shorter side 256, crop 224)",
    )
    parser.add_argument("--big", type=int, default=50_000)
    parser.add_argument(
        "--sizes",
        type=lambda text: [tuple(map(int, s.split("x"))) for s in text.split(",") if s],
        default=[(1600, 1200), (4032, 3024)],
        help="further photo sizes WxH for the mnist_cnn comparison (comma-separated)",
    )
    parser.add_argument("--header-only", action="store_true", help="only the header share")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 1
    photos = make_photo_folder(args.work / "photos", args.photos)
    if args.header_only:
        print(json.dumps({"header_read": header_share(photos, args.photos)}, indent=2))
        return
    models = make_models(args.work, photos)
    out = args.work / "pred.csv"
    res = {"machine": cpu_model() or platform.machine(), "cores": workers}
    res |= {"batch": args.batch, "rounds": args.rounds, "photos": args.photos}
    resnet, mnist = models["resnet50"], models["mnist_cnn"]
    n = args.resnet_images
    r = best_of(
        args.rounds,
        end_to_end=lambda: end_to_end_rate(
            resnet, photos, out, args.batch, n, CENTRE_CROP if args.crop else None
        ),
        bare_session_run=lambda: bare_session_rate(resnet, photos, args.batch, 7.0),
        bare_no_spinning=lambda: bare_session_rate(resnet, photos, args.batch, 7.0, False),
    )
    res["resnet50"] = r | {
        "resize": "centre crop" if args.crop else "squash",
        "ratio": r["end_to_end"] / r["bare_session_run"],
        "ratio_no_spinning": r["end_to_end"] / r["bare_no_spinning"],
    }
    res["mnist_cnn"] = mnist_rates(mnist, photos, args, workers)
    res["mnist_cnn_int8"] = mnist_rates(models["mnist_cnn_int8"], photos, args, workers)
    for size in args.sizes:
        # Same number of pixels per round as the 500x375 folder, at least 200 files.
        count = max(200, args.photos * 500 * 375 // (size[0] * size[1]))
        folder = make_photo_folder(args.work / f"photos_{size[0]}x{size[1]}", count, size)
        res[f"mnist_cnn_{size[0]}x{size[1]}"] = mnist_rates(mnist, folder, args, workers, count)
    tiny = make_pixel_mean_model(args.work / "pixel_mean.onnx")
    t = best_of(
        args.rounds,
        end_to_end=lambda: end_to_end_rate(tiny, photos, out, args.batch, args.photos),
        decode_only=lambda: decode_only_rate(tiny, photos, workers, args.photos),
    )
    res["pixel_mean_224"] = t | {"ratio": t["end_to_end"] / t["decode_only"]}
    res["header_read"] = header_share(photos, args.photos)
    first = next(photos.glob("*.jpg"))
    small = make_linked_folder(args.work / "files_1k", first, 1000)
    big = make_linked_folder(args.work / f"files_{args.big // 1000}k", first, args.big)
    rss_small, t_small = peak_rss_mb(models["mnist_cnn"], small, out)
    rss_big, t_big = peak_rss_mb(models["mnist_cnn"], big, out)
    res["rss"] = {
        "files_1000_mb": rss_small,
        f"files_{args.big}_mb": rss_big,
        "ratio": rss_big / rss_small,
        "seconds": [t_small, t_big],
    }
    print(json.dumps(res, indent=2))
    (args.work / "infer_speed.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
