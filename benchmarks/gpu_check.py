"""The Python half of `gpu_check.sh`: models without TensorFlow, photos, the decode-only
rate, the CUDA probe, and the results table. Each subcommand is one step of the script.

    pack DIR       (here, with the train extra) the zoo's fp32 and fp16 ONNX files as
                   weightless skeletons: the graph as `convert` wrote it, every large float
                   tensor emptied and replaced by its mean and standard deviation
    unpack SKEL OUT  (on the GPU machine, no TensorFlow) the skeletons with random weights
                   of the same mean and spread: the same graph, so the same speed
    probe JSON     is there an NVIDIA GPU, and does an ONNX Runtime CUDA session load?
                   exit 0: yes; 3: no GPU; 4: a GPU, but CUDA does not load (the reason)
    photos DIR     N distinct 500x375 JPEGs (crops of bundled real photos), every core
    decode DIR     the decode-only rate: the pipeline's own read + decode + resize, every core
    report WORK OUT  results.json and results.md from what the steps left in WORK

Skeletons keep ResNet50 fp32 (~100 MB) to a few hundred kB, so the zoo travels to a
machine that has no TensorFlow to rebuild it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx is imported inside the steps that need it
    import onnx

MARK = "cnnbench-skeleton "
KEEP_BELOW = 1024  # elements: smaller tensors (shapes, small biases) travel as they are
ZOO_DATASET = "random weights (cnnbench bench zoo)"
EXIT_NO_GPU, EXIT_NO_CUDA = 3, 4


# ---- skeletons ---------------------------------------------------------------------------


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor that holds weights: initializers and Constant nodes' values."""
    import onnx

    yield from model.graph.initializer
    for node in model.graph.node:
        if node.op_type == "Constant":
            yield from (a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)


def _is_weight(tensor: onnx.TensorProto) -> bool:
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16)
    return tensor.data_type in floats and math.prod(tensor.dims) >= KEEP_BELOW


def skeletonize(model: onnx.ModelProto) -> int:
    """Empty every large float tensor in place, keeping its mean and spread; returns the
    number of values dropped."""
    from onnx import TensorProto, numpy_helper

    dropped = 0
    for t in _tensors(model):
        if not _is_weight(t):
            continue
        values = numpy_helper.to_array(t).astype(np.float64)
        stats = {"mean": float(values.mean()), "std": float(values.std())}
        for name in ("raw_data", "float_data", "int32_data", "external_data"):
            t.ClearField(name)
        t.data_location = TensorProto.DEFAULT
        t.doc_string = MARK + json.dumps(stats)
        dropped += values.size
    return dropped


def fill(model: onnx.ModelProto, seed: int = 0) -> int:
    """Random weights into a skeleton's emptied tensors: normal, with each tensor's mean
    and standard deviation (constants stay constants); returns the tensors filled."""
    from onnx import helper

    filled = 0
    for t in _tensors(model):
        if not t.doc_string.startswith(MARK):
            continue
        stats = json.loads(t.doc_string[len(MARK) :])
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        shape = tuple(t.dims)
        if stats["std"] == 0:
            values = np.full(shape, stats["mean"], dtype=dtype)
        else:
            rng = np.random.default_rng([seed, zlib.crc32(t.name.encode())])
            values = rng.standard_normal(shape, dtype=np.float32) * stats["std"] + stats["mean"]
        t.raw_data = np.ascontiguousarray(values, dtype=dtype).tobytes()
        t.doc_string = ""
        filled += 1
    return filled


def pack(out: str, archs: str, cache_dir: str | None) -> None:
    import onnx

    from cnnbench.bench.zoo import default_cache_dir, parse_archs, zoo_model
    from cnnbench.convert.config import ConvertConfig, Precision
    from cnnbench.convert.export import export_onnx

    cache = cache_dir or default_cache_dir()
    os.makedirs(out, exist_ok=True)
    for name in parse_archs(archs):
        zm = zoo_model(name, cache, print)
        fp16 = zm.onnx_path.removesuffix(".onnx") + "-fp16.onnx"
        if not os.path.isfile(fp16):
            print(f"pack: {name} fp16 ...", flush=True)
            cfg = ConvertConfig(
                model=zm.keras_path,
                output=fp16,
                precision=Precision.FP16,
                architecture=name,
                dataset=ZOO_DATASET,
                verify=False,  # random weights: only the speed matters
            )
            export_onnx(cfg)
        for precision, src in (("fp32", zm.onnx_path), ("fp16", fp16)):
            model = onnx.load(src)
            dropped = skeletonize(model)
            dst = os.path.join(out, f"{name}-{precision}.skeleton.onnx")
            onnx.save(model, dst)
            kb = os.path.getsize(dst) / 1024
            print(f"pack: {dst} ({kb:.0f} kB, {dropped:,} weights to regenerate)", flush=True)


def unpack(skeletons: str, out: str, only: str | None) -> None:
    import onnx

    from cnnbench.files import atomic_path

    names = {n.strip() for n in only.split(",")} if only else None
    os.makedirs(out, exist_ok=True)
    paths = sorted(Path(skeletons).glob("*.skeleton.onnx"))
    if not paths:
        sys.exit(f"unpack: no *.skeleton.onnx in {skeletons}: run `gpu_check.py pack` first")
    for path in paths:
        stem = path.name.removesuffix(".skeleton.onnx")
        if names and stem.rsplit("-", 1)[0] not in names and stem not in names:
            continue
        dst = os.path.join(out, f"{stem}.onnx")
        if os.path.isfile(dst):
            continue
        start = time.perf_counter()
        model = onnx.load(str(path))
        count = fill(model)
        with atomic_path(dst) as tmp:
            onnx.save(model, tmp)
        mb = os.path.getsize(dst) / 2**20
        took = time.perf_counter() - start
        print(f"unpack: {dst} ({mb:.0f} MB, {count} tensors, {took:.1f} s)", flush=True)


# ---- the machine -------------------------------------------------------------------------


def nvidia_gpus() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def probe(json_path: str) -> int:
    """One line and an exit code: does a CUDA session really load (trust only
    `session.get_providers()`; the wheel lists CUDA everywhere)."""
    facts: dict = {"gpus": nvidia_gpus(), "python": sys.version.split()[0]}
    try:
        import onnxruntime as ort

        from cnnbench.bench.flops import write_matmul_model
        from cnnbench.infer.errors import InferError
        from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session
    except ImportError as e:
        facts["cuda"] = f"cannot import: {e}"
    else:
        facts |= {"onnxruntime": ort.__version__, "available": ort.get_available_providers()}
        with tempfile.TemporaryDirectory() as folder:
            path = write_matmul_model(os.path.join(folder, "probe.onnx"), 8)
            try:
                session = create_session(path, RuntimeOptions(provider=Provider.CUDA))
                facts["cuda"] = "loads"
                facts["session_providers"] = session.get_providers()
            except InferError as e:
                facts["cuda"] = str(e)
    Path(json_path).write_text(json.dumps(facts, indent=2))
    gpus = "; ".join(facts["gpus"]) or "no NVIDIA GPU (nvidia-smi lists none)"
    print(f"probe: {gpus}; onnxruntime {facts.get('onnxruntime', '-')}; CUDA: {facts['cuda']}")
    if facts["cuda"] == "loads":
        return 0
    return EXIT_NO_CUDA if facts["gpus"] else EXIT_NO_GPU


# ---- photos and decoding -----------------------------------------------------------------


def _write_photo_range(args: tuple[str, int, int, tuple[int, int]]) -> int:
    """Photos start..stop-1 (`bench/photos.py`'s sized photos; photo i from seed i, so
    the ranges can be written in parallel)."""
    from cnnbench.bench.photos import sized_photo, sized_photo_path, source_photos

    folder, start, stop, size = args
    photos = source_photos()
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        sized_photo_path(folder, i).write_bytes(sized_photo(photos[i % len(photos)], size, rng))
    return stop - start


def photos(folder: str, count: int, size: tuple[int, int]) -> None:
    os.makedirs(folder, exist_ok=True)
    if len(os.listdir(folder)) == count:
        print(f"photos: {count} already in {folder}")
        return
    workers = os.cpu_count() or 1
    step = -(-count // (workers * 4))
    ranges = [(folder, i, min(i + step, count), size) for i in range(0, count, step)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(_write_photo_range, ranges))
    took = time.perf_counter() - start
    print(f"photos: {written} {size[0]}x{size[1]} JPEGs in {folder} ({took:.1f} s)")


def decode(folder: str, size: int, json_path: str, workers: int) -> None:
    """img/s of the pipeline's own read + decode + resize (`load_items`) into size x size
    RGB, on `workers` threads, 16 files per task, as `infer` decodes them."""
    import cv2

    from cnnbench.infer.decode.images import load_items
    from cnnbench.infer.sources.listing import IMAGE_EXTENSIONS, scan_inputs

    items = list(scan_inputs((folder,), IMAGE_EXTENSIONS))
    chunks = [items[i : i + 16] for i in range(0, len(items), 16)]

    def work(chunk: list) -> int:
        out = np.empty((len(chunk), size, size, 3), dtype=np.uint8)
        return sum(r is not None for r in load_items(chunk, out))

    with ThreadPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        start = time.perf_counter()
        errors = sum(pool.map(work, chunks))
        seconds = time.perf_counter() - start
    doc = {
        "images": len(items),
        "errors": errors,
        "seconds": seconds,
        "images_per_second": len(items) / seconds,
        "workers": workers,
        "size": size,
    }
    Path(json_path).write_text(json.dumps(doc, indent=2))
    rate = doc["images_per_second"]
    print(f"decode: {len(items)} files, {workers} threads: {rate:,.0f} img/s ({errors} errors)")


# ---- the report --------------------------------------------------------------------------


def _load(path: Path) -> dict | None:
    """The JSON object in PATH; None when it is missing, unreadable or not an object."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def bench_rows(work: Path) -> list[dict]:
    """Every measured row of every bench JSON under WORK/bench, flat."""
    rows = []
    for path in sorted((work / "bench").glob("*.json")):
        doc = _load(path) or {}
        rows += doc.get("results", [])
    return rows


def best_rows(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(architecture, precision) -> the row of the highest model-only img/s."""
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["architecture"], r["precision"])
        if key not in best or r["throughput_ips"] > best[key]["throughput_ips"]:
            best[key] = r
    return best


def end_to_end(work: Path, best: dict, rows: list[dict]) -> list[dict]:
    """Each infer run against min(decode-only rate, model-only rate at the best batch)."""
    decode_doc = _load(work / "decode.json") or {}
    decode_rate = decode_doc.get("images_per_second")
    runs = []
    for path in sorted(work.glob("infer-*.json")):
        doc = _load(path) or {}
        arch, precision = path.stem.split("-")[1:3]
        model_best = best.get((arch, precision), {}).get("throughput_ips")
        same_batch = next(
            (
                r["throughput_ips"]
                for r in rows
                if (r["architecture"], r["precision"]) == (arch, precision)
                and r["batch_size"] == doc.get("batch_size")
            ),
            None,
        )
        limits = {"decode-only": decode_rate, "model-only": model_best}
        known = {k: v for k, v in limits.items() if v}
        bound = min(known, key=lambda k: known[k]) if known else None
        ratio = doc["images_per_second"] / known[bound] if bound and doc else None
        runs.append(
            {
                "run": path.stem,
                "images": doc.get("images"),
                "errors": doc.get("errors"),
                "provider": doc.get("provider"),
                "batch_size": doc.get("batch_size"),
                "images_per_second": doc.get("images_per_second"),
                "decode_only_ips": decode_rate,
                "decode_workers": decode_doc.get("workers"),
                "model_only_same_batch_ips": same_batch,
                "model_only_best_ips": model_best,
                "limit": bound,
                "vs_limit": ratio,
                "bound_by": _bound_by(ratio, bound),
                # what infer's own batch loop waited on (its summary's bound_by)
                "infer_bound_by": doc.get("bound_by"),
            }
        )
    return runs


def _bound_by(ratio: float | None, limit: str | None) -> str:
    if ratio is None:
        return "unknown (a figure is missing)"
    if ratio >= 0.9:
        return f"{limit} (end-to-end reaches {ratio:.0%} of it)"
    return f"the pipeline: only {ratio:.0%} of the {limit} rate"


def binding_vs_copies(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        copies = (r.get("with_copies") or {}).get("throughput_ips")
        if copies is None:  # a CPU row: nothing to compare
            continue
        out.append(
            {
                "architecture": r["architecture"],
                "precision": r["precision"],
                "batch_size": r["batch_size"],
                "io_binding_ips": r["throughput_ips"],
                "with_copies_ips": copies,
                "ratio": r["throughput_ips"] / copies if copies else None,
            }
        )
    return out


def targets(best: dict, e2e: list[dict], pairs: list[dict]) -> list[dict]:
    resnet = best.get(("resnet50", "fp16"), {}).get("throughput_ips")
    measured_pairs = [p for p in pairs if p["ratio"] is not None]
    slower = [
        f"{p['architecture']} {p['precision']} b{p['batch_size']}"
        for p in pairs
        if p["ratio"] is not None and p["ratio"] <= 1
    ]
    return [
        {
            "target": "ResNet50 fp16 model-only >= 8,000 img/s at the best batch",
            "measured": f"{resnet:,.0f} img/s" if resnet else "not measured",
            "met": bool(resnet and resnet >= 8000),
        },
        *(
            {
                "target": f"{run['run']}: end-to-end >= 0.9x min(decode-only, model-only)",
                "measured": f"{run['vs_limit']:.2f}x of {run['limit']}"
                if run["vs_limit"]
                else "not measured",
                "met": bool(run["vs_limit"] and run["vs_limit"] >= 0.9),
            }
            for run in e2e
        ),
        {
            "target": "IO binding faster than session.run with copies at every batch size",
            "measured": (
                f"{len(measured_pairs) - len(slower)}/{len(measured_pairs)} configurations"
                + (f"; not at {', '.join(slower)}" if slower else "")
            ),
            "met": bool(measured_pairs) and not slower,
        },
    ]


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(doc: dict) -> str:
    lines = [f"# gpu_check: {doc['verdict']}", ""]
    lines += [f"- {k}: {v}" for k, v in doc["machine"].items()]
    lines += ["", "## Steps", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} |" for s in doc["steps"]]
    lines += ["", "## Model only (GPU: IO binding, input on the device), best batch", ""]
    lines += ["| architecture | fp32 img/s | batch | fp16 img/s | batch | fp16 / fp32 |"]
    lines += ["|---|---|---|---|---|---|"]
    for arch, m in doc["model_only"].items():
        f32, f16 = m.get("fp32") or {}, m.get("fp16") or {}
        a, b = f32.get("throughput_ips"), f16.get("throughput_ips")
        lines.append(
            f"| {arch} | {_fmt(a)} | {f32.get('batch_size', '-')} | {_fmt(b)} | "
            f"{f16.get('batch_size', '-')} | {_fmt(b / a if a and b else None, '.2f')} |"
        )
    lines += ["", "## IO binding vs session.run with host copies", ""]
    lines += [
        "| model | batch | IO binding img/s | with copies img/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for p in doc["binding_vs_copies"]:
        lines.append(
            f"| {p['architecture']} {p['precision']} | {p['batch_size']} | "
            f"{_fmt(p['io_binding_ips'])} | {_fmt(p['with_copies_ips'])} | "
            f"{_fmt(p['ratio'], '.2f')} |"
        )
    lines += ["", "## End to end vs its two limits", ""]
    lines += [
        "| run | batch | end-to-end img/s | decode-only img/s (threads) "
        "| model-only same batch | model-only best | bounded by | infer's own bound |"
    ]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in doc["end_to_end"]:
        lines.append(
            f"| {r['run']} | {r['batch_size']} | {_fmt(r['images_per_second'])} | "
            f"{_fmt(r['decode_only_ips'])} ({r['decode_workers']}) | "
            f"{_fmt(r['model_only_same_batch_ips'])} | {_fmt(r['model_only_best_ips'])} | "
            f"{r['bound_by']} | {r.get('infer_bound_by') or '-'} |"
        )
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
        for t in doc["targets"]
    ]
    return "\n".join(lines) + "\n"


def report(work: str, out: str, verdict: str) -> None:
    root = Path(work)
    steps = [json.loads(line) for line in (root / "steps.jsonl").read_text().splitlines() if line]
    rows = [r for r in bench_rows(root)]
    best = best_rows(rows)
    e2e = end_to_end(root, best, rows)
    pairs = binding_vs_copies(rows)
    probe_doc = _load(root / "probe.json") or {}
    first = next((_load(p) for p in sorted((root / "bench").glob("*.json"))), None) or {}
    machine = {
        "gpus": "; ".join(probe_doc.get("gpus", [])) or "none",
        "onnxruntime": probe_doc.get("onnxruntime", "-"),
        "cuda": probe_doc.get("cuda", "-"),
        "cpu": (first.get("machine") or {}).get("cpu", "-"),
        "cores": os.cpu_count(),
        "python": probe_doc.get("python", "-"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    model_only: dict[str, dict] = {}
    for (arch, precision), r in sorted(best.items()):
        model_only.setdefault(arch, {})[precision] = {
            "throughput_ips": r["throughput_ips"],
            "batch_size": r["batch_size"],
            "provider": r["provider"],
            "p50_ms": r.get("p50_ms"),
            "stable": r.get("stable"),
        }
    doc = {
        "verdict": verdict,
        "machine": machine,
        "steps": steps,
        "model_only": model_only,
        "binding_vs_copies": pairs,
        "end_to_end": e2e,
        "targets": targets(best, e2e, pairs),
    }
    os.makedirs(out, exist_ok=True)
    Path(out, "results.json").write_text(json.dumps(doc, indent=2))
    Path(out, "results.md").write_text(markdown(doc))
    print(markdown(doc))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("out")
    p.add_argument("--archs", default="all")
    p.add_argument("--cache-dir")
    p = sub.add_parser("unpack")
    p.add_argument("skeletons")
    p.add_argument("out")
    p.add_argument("--only", help="comma-separated architectures or stems (resnet50-fp16)")
    p = sub.add_parser("probe")
    p.add_argument("json")
    p = sub.add_parser("photos")
    p.add_argument("out")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--size", default="500x375", help="WIDTHxHEIGHT")
    p = sub.add_parser("decode")
    p.add_argument("folder")
    p.add_argument("--json", required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p = sub.add_parser("report")
    p.add_argument("work")
    p.add_argument("out")
    p.add_argument("--verdict", default="")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.out, args.archs, args.cache_dir)
    elif args.command == "unpack":
        unpack(args.skeletons, args.out, args.only)
    elif args.command == "probe":
        sys.exit(probe(args.json))
    elif args.command == "photos":
        w, h = (int(v) for v in args.size.lower().split("x"))
        photos(args.out, args.count, (w, h))
    elif args.command == "decode":
        decode(args.folder, args.size, args.json, args.workers)
    else:
        report(args.work, args.out, args.verdict)


if __name__ == "__main__":
    main()
