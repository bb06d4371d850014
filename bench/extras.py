"""Figures beside the model-only ones: accuracy and agreement on labelled images, the folder
pipeline's stages and its bottleneck, the same model in Keras, and the best configuration
under a latency budget."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.bench.measure import measure
from cnnbench.bench.results import (
    Accuracy,
    BenchConfig,
    BenchReport,
    EndToEnd,
    KerasBaseline,
    ModelInfo,
    Recommendation,
    Result,
    RunConfig,
    StageTimes,
    Target,
    make_images,
)
from cnnbench.bench.runners import open_session, ran_precision, with_provider
from cnnbench.infer.decode.images import decode_into
from cnnbench.infer.engines.job import class_folders
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.runner import make_scorer
from cnnbench.infer.sources import listing, shards
from cnnbench.infer.sources.fetch import fetch_ahead, read_source
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import IMAGE_EXTENSIONS, scan
from cnnbench.infer.sources.stores import is_url

if TYPE_CHECKING:
    from cnnbench.infer.engines.job import InferSummary

STAGES_BATCH = 8  # batch of the stage pass when no model-only figure says better


@dataclass(frozen=True)
class LabelledImage:
    path: str
    truth: str | None  # the class folder's name, None for files at the top


T = TypeVar("T")


def spread(items: list[T], count: int) -> list[T]:
    """`count` of `items`, evenly spread over their order (`listing.spread`)."""
    return [items[k] for k in listing.spread(len(items), count)]


def place_images(paths: list[str], images: str, folder: str) -> None:
    """`paths`, images under `images` (a folder or a prefix URL), in `folder` at their
    names under it, class folders included: links to local files, copies of a prefix's
    objects, read IO_THREADS at a time (one that cannot be read is left out, as bad
    files are where they are read)."""
    from cnnbench.infer.engines.job import IO_THREADS  # bench's start-up needs none of job

    if not is_url(images):
        for path in paths:
            link = os.path.join(folder, os.path.relpath(path, images))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(os.path.abspath(path), link)
        return
    prefix = images.rstrip("/") + "/"
    with contextlib.closing(fetch_ahead((Item(p, p) for p in paths), IO_THREADS)) as fetched:
        for item in fetched:
            if item.data is not None:
                copy = Path(folder, item.path.removeprefix(prefix))
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(item.data)


def labelled_images(root: str) -> list[LabelledImage]:
    """Every image under `root` (a folder or a prefix URL), in infer's order; the first
    folder level names the class."""
    try:
        out = [
            LabelledImage(item.path, item.name.split("/")[0] if "/" in item.name else None)
            for item in scan(root)
        ]
    except InferError as e:  # a store that cannot be reached
        raise BenchError(f"--images: {e}") from e
    if not out:
        raise _no_images(root)
    return out


def check_images(root: str) -> None:
    """Before anything is measured: `root` can be reached and holds an image (the scan
    stops at the first one), so a typo fails in one line, not after the benchmarks. Tar
    shards are refused: the passes here read each image by its own path."""
    if not (os.path.isdir(root) or is_url(root)):
        raise BenchError(f"--images {root} is not a folder of images or a prefix URL")
    if shards.is_shard(root):
        raise BenchError(
            f"--images {root}: a tar shard is not read here; give a folder or a prefix URL "
            "of the images (infer and convert --calibration read shards)"
        )
    try:
        first = next(iter(scan(root)), None)
    except InferError as e:
        raise BenchError(f"--images: {e}") from e
    if first is None:
        raise _no_images(root)


def _no_images(root: str) -> BenchError:
    return BenchError(f"--images {root}: no images found (extensions {IMAGE_EXTENSIONS})")


@dataclass
class Pass:
    """One configuration's pass over the images: top-1 labels and stage times."""

    predictions: list[str | None]  # None: the file could not be read
    stages: StageTimes
    labels: set[str]  # the model's labels


def stage_pass(session: Any, info: ModelInfo, images: list[LabelledImage], batch: int) -> Pass:
    """Read, decode+resize, batch assembly, run and write, each timed apart, on `batch`
    images at a time, exactly as the pipeline preprocesses them."""
    fmt = info.fmt
    assert fmt is not None, "model_info resolves it"
    output = fmt.output_name or session.get_outputs()[0].name
    scorer = make_scorer(fmt)  # the output as infer turns it into probabilities
    rows = max(batch, fmt.batch or 0)  # a fixed batch dimension: whole, padded buffers
    buf = np.zeros((rows, *fmt.size, fmt.channels), dtype=np.uint8)
    t = dict.fromkeys(("read", "decode", "assembly", "run", "write"), 0)
    clock = time.perf_counter_ns
    predictions: list[str | None] = []
    sink = csv.writer(io.StringIO())
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        slots: list[str | None] = [None] * len(chunk)  # None: unreadable
        ok: list[LabelledImage] = []
        where: list[int] = []
        for k, item in enumerate(chunk):
            t0 = clock()
            try:
                data = read_source(item.path)
                t1 = clock()
                decode_into(data, buf[len(ok)], fmt.bgr, fmt.policy)
                ok.append(item)
                where.append(k)
            except (OSError, ValueError, cv2.error):
                t1 = clock()
            t2 = clock()
            t["read"] += t1 - t0
            t["decode"] += t2 - t1
        if not ok:
            predictions += slots
            continue
        t0 = clock()
        x = fmt.to_model_input(buf[: fmt.batch or len(ok)])  # a fixed batch: padded
        t1 = clock()
        probs = scorer(session.run([output], {fmt.input_name: x})[0][: len(ok)])
        t2 = clock()
        top = probs.argmax(axis=1)
        labels = [fmt.labels[i] if i < len(fmt.labels) else str(i) for i in top]
        for item, label, p in zip(ok, labels, probs.max(axis=1), strict=True):
            sink.writerow([item.path, label, f"{p:.6f}"])
        t3 = clock()
        for k, label in zip(where, labels, strict=True):
            slots[k] = label
        predictions += slots
        t["assembly"] += t1 - t0
        t["run"] += t2 - t1
        t["write"] += t3 - t2
    n = max(1, len(images))
    ms = {k: v / 1e6 / n for k, v in t.items()}
    stages = StageTimes(
        read_ms=ms["read"],
        decode_resize_ms=ms["decode"],
        batch_assembly_ms=ms["assembly"],
        run_ms=ms["run"],
        write_ms=ms["write"],
        decode_workers=os.cpu_count() or 1,
    )
    return Pass(predictions, stages, set(fmt.labels))


def top1(
    images: list[LabelledImage], predictions: list[str | None], labels: set[str]
) -> float | None:
    """Share of the labelled images read whose top-1 is their folder (an unreadable one is
    left out, as infer's accuracy leaves out its error rows); None if no folder is a label
    of the model."""
    pairs = [
        (i.truth, p)
        for i, p in zip(images, predictions, strict=True)
        if i.truth in labels and p is not None
    ]
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else None


def agreement(ours: list[str | None], reference: list[str | None]) -> float | None:
    pairs = [(a, b) for a, b in zip(ours, reference, strict=True) if a is not None and b]
    return sum(a == b for a, b in pairs) / len(pairs) if pairs else None


def accuracy_and_stages(
    targets: list[Target],
    configs: list[RunConfig],
    cfg: BenchConfig,
    report: BenchReport,
    log: Callable[[str], None],
) -> None:
    """Per model x configuration: top-1 on `cfg.images` and agreement with the first one
    (the reference), put on its rows; the stages and the pipeline's own img/s."""
    images = labelled_images(cfg.images or "")
    reference: list[str | None] | None = None
    reference_name = ""
    for target in targets:
        info = next((m for m in report.models if m.path == target.path), None)
        if info is None:
            continue
        for rc in configs:
            session = open_session(target.path, rc, cfg.runtime)
            precision = ran_precision(session, info.precision)
            best = report.best(info.model, rc.label, precision)
            batch = best.batch_size if best else STAGES_BATCH
            log(f"accuracy and stages: {info.model} on {rc.label} {precision}, batch {batch} ...")
            done = stage_pass(session, info, images, batch)
            name = f"{info.model} {rc.label} {precision}"
            if reference is None:
                reference, reference_name = done.predictions, name
            if (
                rc is configs[0]
                and cfg.images
                and not is_url(cfg.images)
                and not done.labels & {i.truth for i in images}
            ):
                _, unmatched = class_folders((cfg.images,), sorted(done.labels))
                if unmatched:
                    log(f"{info.model}: {unmatched}")
            acc = Accuracy(
                images=sum(p is not None for p in done.predictions),  # those read
                top1=top1(images, done.predictions, set(done.labels)),
                agreement=agreement(done.predictions, reference),
                reference=reference_name,
            )
            for r in report.results:
                if (r.model, r.provider, r.precision) == (info.model, rc.label, precision):
                    r.accuracy = acc
            for s in report.server:
                if (s.model, s.provider, s.precision) == (info.model, rc.label, precision):
                    s.accuracy = acc
            model_ips = best.stats.throughput_ips if best else 0.0
            pipeline = _pipeline(target, rc, batch, cfg)
            report.end_to_end.append(
                EndToEnd(
                    model=info.model,
                    provider=rc.label,
                    precision=precision,
                    batch_size=batch,
                    images=pipeline.images,
                    errors=pipeline.errors,
                    pipeline_ips=pipeline.images_per_second,
                    model_only_ips=model_ips,
                    stages=done.stages,
                    bottleneck=done.stages.bottleneck,
                    accuracy=acc,
                )
            )


def _pipeline(target: Target, rc: RunConfig, batch: int, cfg: BenchConfig) -> InferSummary:
    """One pass of `run_infer` over the images: the pipeline's real img/s."""
    import dataclasses

    from cnnbench.infer.engines.job import InferConfig
    from cnnbench.infer.engines.local import run_infer

    with tempfile.TemporaryDirectory(prefix="cnnbench-e2e-") as tmp:
        runtime = dataclasses.replace(
            with_provider(cfg.runtime, rc.provider), precision_hint=rc.hint
        )
        infer_cfg = InferConfig(
            model=target.path,
            inputs=(cfg.images or "",),
            output=os.path.join(tmp, "predictions.csv"),
            batch_size=batch,
            progress=False,
            runtime=runtime,
            foreign=cfg.foreign,
        )
        try:
            return run_infer(infer_cfg)
        except InferError as e:
            raise BenchError(f"end to end on {cfg.images}: {e}") from e


def keras_baselines(
    targets: list[Target], cfg: BenchConfig, report: BenchReport, log: Callable[[str], None]
) -> list[KerasBaseline]:
    """Keras `predict` and a tf.function on the same uint8 inputs, at batch 1 and at the
    CPU's best batch size, with ONNX Runtime's speed-up over each."""
    rows = []
    for target in targets:
        if target.keras_path is None:
            continue
        cpu = [
            r
            for r in report.results
            if r.model == target.label and r.provider == "cpu" and r.concurrency == 1
        ]
        if not cpu:
            continue
        best = max(cpu, key=lambda r: r.stats.throughput_ips)
        for result in {
            r.batch_size: r for r in cpu if r.batch_size in (1, best.batch_size)
        }.values():
            log(f"keras baseline: {target.label}, batch {result.batch_size} ...")
            rows += _keras_rows(target, result, cfg, report)
    return rows


def _keras_rows(
    target: Target, ort: Result, cfg: BenchConfig, report: BenchReport
) -> list[KerasBaseline]:
    import keras
    import tensorflow as tf

    info = next(m for m in report.models if m.model == target.label)
    model = keras.saving.load_model(target.keras_path, compile=False)
    assert info.fmt is not None, "resolved when the model was measured"
    x = make_images(info.fmt, ort.batch_size)  # the very images ONNX Runtime was given
    graph = tf.function(lambda t: model(t, training=False))
    runs = {
        "keras predict": lambda: model.predict(x, batch_size=len(x), verbose=0),
        "tf.function": lambda: graph(x).numpy(),
    }
    rows = []
    for name, run in runs.items():
        stats = measure(run, ort.batch_size, cfg.timing).stats()
        rows.append(
            KerasBaseline(
                model=target.label,
                runtime=name,
                batch_size=ort.batch_size,
                p50_ms=stats.p50_ms,
                throughput_ips=stats.throughput_ips,
                ort_p50_ms=ort.stats.p50_ms,
                ort_speedup=ort.stats.throughput_ips / stats.throughput_ips,
            )
        )
    keras.backend.clear_session()
    return rows


def recommend(results: list[Result], max_latency_ms: float) -> list[Recommendation]:
    """Per model: the highest-throughput VALID configuration whose p99 stays under the
    budget (the max stands in for p99 where too few runs give none: an upper bound)."""
    rows = []
    for model in dict.fromkeys(r.model for r in results):
        mine = [r for r in results if r.model == model and r.validity.valid] or [
            r for r in results if r.model == model
        ]
        fits = [r for r in mine if r.stats.p99_or_max_ms <= max_latency_ms]
        if not fits:
            fastest = min(mine, key=lambda r: r.stats.p99_or_max_ms)
            rows.append(
                Recommendation(
                    model, max_latency_ms, False, lowest_p99_ms=fastest.stats.p99_or_max_ms
                )
            )
            continue
        best = max(fits, key=lambda r: r.stats.throughput_ips)
        rows.append(
            Recommendation(
                model=model,
                max_latency_ms=max_latency_ms,
                fits=True,
                provider=best.provider,
                precision=best.precision,
                batch_size=best.batch_size,
                concurrency=best.concurrency,
                throughput_ips=best.stats.throughput_ips,
                p99_ms=best.stats.p99_or_max_ms,
            )
        )
    return rows
