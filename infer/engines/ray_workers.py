"""What runs on Ray's workers for `infer --engine ray`: the decode tasks (read, decode and
resize a batch of listed files, from a path or a URL) and the inference actors (one ONNX
Runtime session each, made once from the model bytes in the object store). The driver
side is ray.py."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Any

import numpy as np

from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.engines.job import IO_THREADS, running_precision, top_indices
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.preprocess import InputFormat
from cnnbench.infer.runtime.runner import make_runner
from cnnbench.infer.runtime.scores import class_count
from cnnbench.infer.runtime.session import RuntimeOptions, Session, active_provider, create_session
from cnnbench.infer.sources import stores
from cnnbench.infer.sources.fetch import fetch_ahead
from cnnbench.infer.sources.items import Item
from cnnbench.memory import MemoryLimit, memory_limit


def decode_batch(
    batch: dict,
    size: tuple[int, int],
    channels: int,
    bgr: bool,
    limits: DecodeLimits,
    policy: ResizePolicy = DEFAULT_POLICY,
    io_threads: int = IO_THREADS,
) -> dict:
    """Ray Data task: read and resize a batch of files, up to `io_threads` reads by URL
    in flight (0: one after another); a failure becomes its reason."""
    import cv2

    cv2.setNumThreads(1)
    columns = ("path", "name", "error", "offset", "size")
    items = [_listed(*row) for row in zip(*(batch[c] for c in columns), strict=True)]
    if io_threads and any(stores.is_url(item.path) for item in items):  # many GETs at once
        with contextlib.closing(
            fetch_ahead(items, io_threads, max_bytes=limits.max_bytes, whole_job=False)
        ) as fetched:
            items = list(fetched)
    images = np.zeros((len(items), *size, channels), dtype=np.uint8)
    truncated: list[str] = []
    reasons = load_items(items, images, bgr, policy, limits=limits, truncated=truncated)
    return {
        "block": batch["block"],
        "index": batch["index"],
        "name": batch["name"],
        "error": np.array([r or "" for r in reasons], dtype=object),
        "truncated": np.isin(batch["name"], truncated),
        "image": images,
    }


def _listed(raw: bytes, name: str, error: str, offset: int, size: int) -> Item:
    """An Item from its row of the listing table (the path as bytes; -1: no offset, no size)."""
    path = os.fsdecode(raw)
    if offset < 0:
        return Item(path, name, error or None)
    return Item(path, name, error or None, size=int(size), offset=int(offset))


def worker_session(model_ref: Any, runtime: RuntimeOptions) -> Session:
    """A session on a worker from the model bytes in the object store. ORT reads the
    file while creating the session, so the temporary copy is removed right after."""
    import ray

    with tempfile.TemporaryDirectory(prefix="cnnbench-model-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(ray.get(model_ref))
        return create_session(path, dataclasses.replace(runtime, spinning=False))


@dataclasses.dataclass(frozen=True)
class NodeMemory:
    """What a process on one node may use: its machine's memory, or its cgroup's limit."""

    node_id: str
    address: str
    memory: MemoryLimit


def node_memory() -> NodeMemory:
    """Ray task: the memory of the node it runs on."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return NodeMemory(node_id, ray.util.get_node_ip_address(), memory_limit())


@dataclasses.dataclass(frozen=True)
class WorkerProbe:
    """What the probe task found where an inference actor would run."""

    provider: str  # the provider the worker gets; "" when it cannot load the model
    error: str  # why it cannot ("" when it can): returned, so that Ray logs no traceback
    node: NodeMemory


def probe_worker(model: list, runtime: RuntimeOptions) -> WorkerProbe:
    """Ray task placed like an inference actor: loads the model as one would."""
    node = node_memory()
    try:
        provider = active_provider(worker_session(model[0], runtime)).value
    except InferError as e:
        return WorkerProbe("", str(e), node)
    return WorkerProbe(provider, "", node)


def worker_name() -> str:
    """`NODE_IP:PID` of this actor: nodes are told apart by address, not by host name
    (containers and namespaces often share one); a restarted actor is a new one."""
    import ray

    return f"{ray.util.get_node_ip_address()}:{os.getpid()}"


class Predictor:
    """Ray Data actor: one ONNX Runtime session, created once, for every batch it gets."""

    def __init__(
        self, model: list, fmt: InputFormat, runtime: RuntimeOptions, batch_size: int, top_k: int
    ) -> None:
        session = worker_session(model[0], runtime)
        self.provider = active_provider(session)
        self.precision = running_precision(session, fmt)
        self.runner = make_runner(session, fmt, self.provider, runtime.device_id)
        self.buf = np.zeros((batch_size, *fmt.size, fmt.channels), dtype=np.uint8)
        self.runner.warm_up(self.buf)
        classes = class_count(self.runner.raw(self.buf, 1))  # [batch, 1]: 2 classes
        self.top_k = min(top_k, classes or top_k)
        self.worker = worker_name()

    def __call__(self, batch: dict) -> dict:
        errors = batch["error"]
        n, ok = len(errors), np.flatnonzero(errors == "")
        top = np.zeros((n, self.top_k), dtype=np.int64)
        scores = np.zeros((n, self.top_k), dtype=np.float32)
        for start in range(0, len(ok), len(self.buf)):
            rows = ok[start : start + len(self.buf)]
            self.buf[: len(rows)] = batch["image"][rows]
            probs = self.runner.run(self.buf, len(rows))
            top[rows] = top_indices(probs, self.top_k)
            scores[rows] = np.take_along_axis(probs, top[rows], axis=1)
        return {
            "block": batch["block"],
            "index": batch["index"],
            "name": batch["name"],
            "error": errors,
            "truncated": batch["truncated"],
            "top": top,
            "score": scores,
            "worker": np.full(n, self.worker, dtype=object),
            "provider": np.full(n, self.provider.value, dtype=object),
            "precision": np.full(n, self.precision, dtype=object),
            # --scores auto is decided by each actor on its first batch: the driver reports it
            "scores": np.full(n, self.runner.scorer.describe(), dtype=object),
        }
