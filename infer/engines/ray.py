"""`cnnbench infer --engine ray`: the folder pipeline as a Ray Data job.

The driver lists the inputs exactly as the local engine does and cuts the sorted listing
into fixed blocks. Ray Data then decodes and resizes them in CPU tasks and runs them
through an actor pool (one ONNX Runtime session per actor, made once, on the actor's GPU
when it has one); the two stages stream, so decoding overlaps inference. The rows come
back to the driver, which writes a block's shards once all of its rows have arrived and,
at the end, merges the shards into the output in input order (see parts.py).

The model file is read once by the driver and put in Ray's object store; each actor
writes it to a private temporary file for ONNX Runtime, so worker nodes need no copy of
the model. The images are read by the decode tasks: on a multi-node cluster they must
be at the same path on every node (a shared file system). Ray is imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from cnnbench.files import Report
from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.decode.resize import DEFAULT_POLICY, ResizePolicy
from cnnbench.infer.engines.job import (
    IO_THREADS,
    InferConfig,
    InferSummary,
    RayOptions,
    StopOnSigint,
    batch_size_for,
    check_config,
    describe_format,
    has_class_folders,
    iter_items,
    job_key,
    prediction_row,
    top_indices,
    write_summary,
)
from cnnbench.infer.engines.ray_cleanup import release_watchdog, start_watchdog
from cnnbench.infer.engines.ray_watch import Stalled, watched
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.runtime.preprocess import InputFormat, check_top_k, resolve_input_format
from cnnbench.infer.runtime.runner import make_runner
from cnnbench.infer.runtime.session import (
    Provider,
    RuntimeOptions,
    Session,
    active_provider,
    create_session,
)
from cnnbench.infer.sinks.formats import Format, fieldnames, format_of
from cnnbench.infer.sinks.output import OutputLock, read_resume_state
from cnnbench.infer.sinks.parts import Parts, blocks, parts_dir
from cnnbench.infer.sources import stores
from cnnbench.infer.sources.fetch import fetch_ahead
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import reason

RAY_HINT = "pip install 'cnnbench[ray]'"
CONNECT_TIMEOUT_S = 3.0
DECODE_CPUS = 0.5  # per decode task
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def import_ray() -> ModuleType:
    """Ray and Ray Data, or one line saying how to install them."""
    try:
        import ray
        import ray.data  # the [data] part of the extra
    except ImportError as e:
        raise InferError(
            f"--engine ray needs Ray Data, which is not installed ({e}); install it with: "
            f"{RAY_HINT}"
        ) from e
    return ray


def _check_reachable(address: str) -> str:
    """Fail in seconds, not minutes, when nothing listens at HOST:PORT; the local address
    this machine reaches it from."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InferError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S) as s:
            return str(s.getsockname()[0])
    except OSError as e:
        raise InferError(
            f"no Ray cluster at {address} ({reason(e)}): start one there with "
            "`ray start --head`, or leave out --address to start a local one"
        ) from e


def _driver_address(address: str, here: str | None) -> dict:
    """`_node_ip_address` for ray.init when Ray's own guess would be wrong. Ray takes the
    address of the interface that routes to a public one (8.8.8.8; a UDP connect, which
    sends nothing); where there is no such route (a private network, a namespace) it falls
    back to the host name's address, which need not be this machine's node at all, and
    the job waits forever. The address this machine reaches the cluster from is the
    right one then."""
    if here is None or address.startswith("ray://") or here.startswith("127."):
        return {}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("8.8.8.8", 53))
        return {}  # Ray's guess works
    except OSError:
        return {"_node_ip_address": here}


def connect(
    ray: ModuleType, address: str | None, report: Report
) -> tuple[bool, subprocess.Popen | None]:
    """Connect this driver to a cluster, or start a local one; say which. Returns
    whether this call made the connection (and so must end it), and the watchdog of a
    cluster it started (ray_cleanup.py)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    here = None
    if address not in (None, "auto"):
        here = _check_reachable(address)
    if ray.is_initialized():
        report("ray: using this process's connection to its cluster")
        return False, None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address is not None:
            ray.init(address=address, **quiet, **_driver_address(address, here))
            report(f"ray: connected to the cluster at {address}")
            return True, None
        try:
            ray.init(address="auto", **quiet)
            report("ray: connected to the running cluster (found by address=auto)")
        except ConnectionError:
            # Ray warns that token authentication is on by default: this cluster is this
            # run's own, on this machine, and ends with it. Remove when ray.init() of a
            # local cluster stops logging that warning.
            logging.getLogger(TOKEN_AUTH_LOGGER).setLevel(logging.ERROR)
            ray.init(**quiet)
            cpus = int(ray.cluster_resources().get("CPU", 0))
            report(f"ray: no cluster running; started a local one ({cpus} CPUs) for this run")
            return True, start_watchdog(ray)
    except ConnectionError as e:
        raise InferError(
            f"no Ray cluster at {address}: {first_line(e)}; start one with `ray start --head`"
        ) from e
    return True, None


def decode_batch(
    batch: dict,
    size: tuple[int, int],
    channels: int,
    bgr: bool,
    limits: DecodeLimits,
    policy: ResizePolicy = DEFAULT_POLICY,
) -> dict:
    """Ray Data task: read and resize a batch of files; a failure becomes its reason."""
    import cv2

    cv2.setNumThreads(1)
    columns = ("path", "name", "error", "offset", "size")
    items = [_listed(*row) for row in zip(*(batch[c] for c in columns), strict=True)]
    if any(stores.is_url(item.path) for item in items):  # many GETs in flight, not one
        with contextlib.closing(fetch_ahead(items, IO_THREADS)) as fetched:
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


def _listed(path: str, name: str, error: str, offset: int, size: int) -> Item:
    """An Item from its row of the listing table (-1: no offset, no size)."""
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


def probe_worker(model: list, runtime: RuntimeOptions) -> str:
    """Ray task placed like an inference actor: the provider a worker gets, or
    'error: why' when it cannot load the model (returned, so Ray logs no traceback)."""
    try:
        return active_provider(worker_session(model[0], runtime)).value
    except InferError as e:
        return f"error: {e}"


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
        self.runner = make_runner(session, fmt, self.provider, runtime.device_id)
        self.buf = np.zeros((batch_size, *fmt.size, fmt.channels), dtype=np.uint8)
        self.runner.warm_up(self.buf)
        self.top_k = min(top_k, self.runner.raw(self.buf, 1).shape[1])
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
            # --scores auto is decided by each actor on its first batch: the driver reports it
            "scores": np.full(n, self.runner.scorer.describe(), dtype=object),
        }


@dataclass
class _Job:
    """What the driver keeps: per block its digest, and the size of those still to do."""

    digests: list[str]
    pending: dict[int, int]
    refs: list  # per pending block: its listing table, then its object-store ref


def _plan(items: Iterator[Item], block_size: int, parts: Parts, summary: InferSummary) -> _Job:
    """Cut the listing into blocks; keep a table of each one not done yet (put in the
    object store once connected)."""
    import pyarrow as pa

    job = _Job([], {}, [])
    for k, digest, chunk in blocks(items, block_size):
        if any(item.data is not None and item.offset is None for item in chunk):
            raise InferError(
                "--engine ray reads the members of uncompressed shards (.tar) only: a "
                "compressed one can only be read front to back; run it with the local "
                "engine (leave out --engine ray) or store the shards as .tar"
            )
        job.digests.append(digest)
        if parts.is_done(k, digest):
            summary.skipped += len(chunk)
            continue
        job.pending[k] = len(chunk)
        table = pa.table(
            {
                "block": pa.array([k] * len(chunk), pa.int64()),
                "index": pa.array(range(len(chunk)), pa.int64()),
                # absolute: workers do not run in the driver's working directory;
                # URLs are read by the workers themselves
                "path": [
                    item.path if stores.is_url(item.path) else os.path.abspath(item.path)
                    for item in chunk
                ],
                "name": [item.name for item in chunk],
                "error": [item.error or "" for item in chunk],
                # a tar member: its range in the shard (path), read alone by a worker
                "offset": pa.array([_unset(item.offset) for item in chunk], pa.int64()),
                "size": pa.array(
                    [_unset(item.size if item.offset is not None else None) for item in chunk],
                    pa.int64(),
                ),
            }
        )
        job.refs.append(table)
    return job


def _unset(value: int | None) -> int:
    """-1 for None in the listing table's integer columns."""
    return -1 if value is None else value


class _Collector:
    """Gathers rows per block; a complete block becomes its shards. A row seen twice
    (a retried task) replaces the first copy, so each file counts once."""

    def __init__(
        self, job: _Job, parts: Parts, fmt: InputFormat, cfg: InferConfig, truth: bool
    ) -> None:
        self.job, self.parts, self.labels, self.fmt = job, parts, fmt.labels, fmt
        self.truth = set(fmt.labels) if truth else None
        self.columns = fieldnames(cfg.top_k, truth)
        self.rows: dict[int, dict[int, list]] = {}
        self.providers: set[str] = set()
        self.scores: set[str] = set()

    def add(self, batch: dict, summary: InferSummary) -> None:
        columns = ("block", "index", "name", "error", "top", "score", "worker", "truncated")
        for block, index, *row in zip(*(batch[c] for c in columns), strict=True):
            if block in self.job.pending:
                got = self.rows.setdefault(int(block), {})
                got[int(index)] = row
                if len(got) == self.job.pending[block]:
                    self._write(int(block), summary)
        self.providers.update(batch["provider"])
        self.scores.update(batch["scores"][batch["error"] == ""])  # rows the model ran on

    def _write(self, block: int, summary: InferSummary) -> None:
        got = self.rows.pop(block)
        del self.job.pending[block]
        predictions, errors = [], []
        workers: Counter[str] = Counter()
        for i in range(len(got)):
            name, error, top, score, worker, truncated = got[i]
            workers[worker] += 1
            if truncated and not error:
                summary.truncated.append(name)
            if error:
                errors.append({"path": name, "error": error})
            else:
                predictions.append(
                    prediction_row(name, top, score, self.labels, self.truth, summary)
                )
        self.parts.write_block(block, self.job.digests[block], self.columns, predictions, errors)
        summary.images += len(predictions)
        summary.errors += len(errors)
        for worker, rows in workers.items():
            summary.per_worker[worker] = summary.per_worker.get(worker, 0) + rows


def _num_gpus(opts: RayOptions, runtime: RuntimeOptions) -> float:
    if opts.num_gpus_per_worker is not None:
        return opts.num_gpus_per_worker
    return 1.0 if runtime.provider in (Provider.CUDA, Provider.TENSORRT) else 0.0


def _pool(ray: ModuleType, opts: RayOptions, gpus: float) -> Any:
    """Actors for the inference stage, checked against what the cluster holds: a job
    asking for more would wait forever. Every actor takes one CPU; one is left for decoding."""
    have = ray.cluster_resources()
    cpus, have_gpus = int(have.get("CPU", 0)), have.get("GPU", 0.0)
    if cpus < 2:
        raise InferError(f"the Ray cluster has {cpus} CPUs: the Ray engine needs at least 2")
    most = cpus - 1
    if gpus:
        most = min(most, int(have_gpus // gpus))
        if most < max(1, opts.workers):
            raise InferError(
                f"the Ray cluster has {have_gpus:g} GPUs; {max(1, opts.workers)} workers x "
                f"--num-gpus-per-worker {gpus:g} do not fit: use --provider cpu "
                "(or --num-gpus-per-worker 0), or add GPU nodes"
            )
    if opts.workers > most:
        raise InferError(
            f"--workers {opts.workers} does not fit the Ray cluster ({cpus} CPUs, "
            f"{have_gpus:g} GPUs; one CPU per worker and one left for decoding): use at most {most}"
        )
    if opts.workers:
        return ray.data.ActorPoolStrategy(size=opts.workers)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=most)


def _dataset(
    ray: ModuleType,
    job: _Job,
    fmt: InputFormat,
    model_ref: Any,
    cfg: InferConfig,
    opts: RayOptions,
    batch_size: int,
) -> Any:
    """listing blocks -> decode tasks -> inference actors, as one streaming Dataset."""
    gpus = _num_gpus(opts, cfg.runtime)
    ds = ray.data.from_arrow_refs(job.refs)
    ds = ds.map_batches(
        decode_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={
            "size": fmt.size,
            "channels": fmt.channels,
            "bgr": fmt.bgr,
            "policy": fmt.policy,
            "limits": cfg.limits,
        },
        # Two decoders per core overlap their file reads (network file systems). Resources
        # unlike the actors' also keep Ray Data from fusing decode into the actor stage,
        # where an actor would decode and infer in turn instead of at the same time.
        num_cpus=DECODE_CPUS,
    )
    # Ray Data's defaults retry what dies: a decode task is run again (max_retries=-1),
    # a dead actor is restarted and its batch retried (max_restarts=-1,
    # max_task_retries=-1). The driver keeps a row per (block, index), so a retried
    # batch cannot add a row twice.
    return ds.map_batches(
        Predictor,
        batch_size=batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={
            "model": [model_ref],
            "fmt": fmt,
            "runtime": _actor_runtime(cfg.runtime),
            "batch_size": batch_size,
            "top_k": cfg.top_k,
        },
        compute=_pool(ray, opts, gpus),
        num_cpus=1,
        num_gpus=gpus,
    )


def _check_workers(
    ray: ModuleType, model_ref: Any, cfg: InferConfig, opts: RayOptions, report: Report
) -> None:
    """Load the model once where an inference actor would run, before the job starts:
    a worker that cannot gives one clear line here instead of a failed job."""
    gpus = _num_gpus(opts, cfg.runtime)
    _pool(ray, opts, gpus)  # the resources fit
    probe = ray.remote(probe_worker).options(num_cpus=1, num_gpus=gpus, max_retries=0)
    answer = ray.get(probe.remote([model_ref], _actor_runtime(cfg.runtime)))
    if answer.startswith("error: "):
        raise InferError(f"a Ray worker cannot load the model: {answer[7:]}")
    report(f"ray: inference workers load {cfg.model} on provider {answer}")


def _actor_runtime(runtime: RuntimeOptions) -> RuntimeOptions:
    return dataclasses.replace(runtime, device_id=0)  # Ray gives each actor its own GPU(s)


def _worker_error(e: Exception) -> InferError:
    """One line from a failed Ray job. A worker's exception reaches the driver as text
    (its traceback); the last line of that is the reason, the worker's InferError when
    it raised one."""
    marker = f"{InferError.__module__}.{InferError.__name__}: "
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in reversed(lines):
        if marker in line:
            return InferError(f"a Ray worker failed: {line.split(marker, 1)[1]}")
    return InferError(f"the Ray job failed: {lines[-1] if lines else type(e).__name__}")


def _consume(
    ray: ModuleType,
    ds: Any,
    collector: _Collector,
    summary: InferSummary,
    progress: bool,
    report: Report,
) -> None:
    """Pull rows until every block is written, Ctrl-C (a second one stops at once), or a
    lost node leaves the job stuck (ray_watch.py); Ray Data shows the progress."""
    ray.data.DataContext.get_current().enable_progress_bars = progress
    if not progress:  # Ray Data's own log lines on the console are progress too
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        with StopOnSigint() as stop:
            batches = ds.iter_batches(batch_size=None, batch_format="numpy")
            try:
                for batch in watched(ray, batches, report, stop):
                    collector.add(batch, summary)
            except Stalled as e:
                report(str(e))
                stop.requested = True
            except KeyboardInterrupt:  # the second Ctrl-C: committed blocks stay
                stop.requested = True
            summary.interrupted = stop.requested
    except ray.exceptions.RayError as e:
        raise _worker_error(e) from e
    finally:
        summary.seconds = time.perf_counter() - start
    if not summary.interrupted and collector.job.pending:
        raise InferError(
            f"the Ray job ended with {len(collector.job.pending)} blocks unfinished; "
            "rerun with --resume to redo them"
        )


def _read_model(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InferError(f"cannot read model file {path}: {reason(e)}") from e


def _finished_earlier(
    cfg: InferConfig, columns: list[str], items: Iterator[Item], summary: InferSummary
) -> bool:
    """--resume of a CSV or JSON lines output whose run already finished: the output is
    there and its parts folder gone. True when every listed file has its row (nothing to
    do, as with the local engine); an output that lacks rows was not left by a Ray run,
    which merges only at the end: refused, as Ray's unit of resume is the parts folder.
    (A Parquet output keeps its parts: a finished one resumes as every block done.)"""
    staged = os.path.isdir(parts_dir(cfg.output))
    if format_of(cfg.output) is Format.PARQUET or staged or not os.path.exists(cfg.output):
        return False
    done = read_resume_state(cfg.output, cfg.errors_path, columns).done
    listed = missing = 0
    for item in items:
        listed += 1
        missing += item.name not in done
    if missing:
        raise InferError(
            f"cannot resume {cfg.output} with --engine ray: it lacks {missing} files and "
            f"there is no {parts_dir(cfg.output)} folder (it was not left by a stopped Ray "
            "run); finish it with --engine local --resume, or rerun without --resume"
        )
    summary.skipped, summary.provider = listed, "none"
    return True


def _run_job(
    ray: ModuleType,
    job: _Job,
    model: bytes,
    collector: _Collector,
    summary: InferSummary,
    cfg: InferConfig,
    opts: RayOptions,
    report: Report,
) -> None:
    """Connect (or start a cluster), run the pending blocks, disconnect."""
    start = time.perf_counter()
    owned, watchdog = connect(ray, opts.address, report)
    summary.startup_seconds = time.perf_counter() - start
    try:
        model_ref = ray.put(model)
        _check_workers(ray, model_ref, cfg, opts, report)
        job.refs = [ray.put(table) for table in job.refs]
        ds = _dataset(ray, job, collector.fmt, model_ref, cfg, opts, summary.batch_size)
        _consume(ray, ds, collector, summary, cfg.progress, report)
    finally:
        if owned:
            ray.shutdown()
        release_watchdog(watchdog)


def run_ray_infer(cfg: InferConfig, opts: RayOptions, report: Report | None = None) -> InferSummary:
    """`run_infer` on a Ray cluster: the same rows, in the same order, in the same files."""
    report = report or (lambda line: None)
    ray = import_ray()
    inputs = check_config(cfg)
    # The driver only needs the model's input format and labels: a one-thread CPU session.
    session = create_session(cfg.model, RuntimeOptions(provider=Provider.CPU, threads=1))
    fmt = resolve_input_format(session, cfg.foreign)
    check_top_k(fmt, cfg.top_k)
    model = _read_model(cfg.model)
    with_truth = has_class_folders(inputs, set(fmt.labels))
    columns = fieldnames(cfg.top_k, with_truth)
    gpu = _num_gpus(opts, cfg.runtime) > 0
    batch_size = batch_size_for(fmt, cfg.batch_size, Provider.CUDA if gpu else Provider.CPU)
    summary = InferSummary(batch_size=batch_size)
    summary.preprocessing = fmt.describe()
    for line in describe_format(fmt):
        report(line)
    items = iter_items(inputs, cfg, summary.skipped_by_extension)
    with OutputLock(cfg.output):
        if cfg.resume and _finished_earlier(cfg, columns, items, summary):
            if cfg.summary:
                write_summary(cfg, summary)
            return summary
        key = job_key(cfg, hashlib.sha256(model).hexdigest(), columns)
        parts = Parts(cfg.output, cfg.errors_path, key, cfg.resume)
        job = _plan(items, cfg.block_size, parts, summary)
        parts.keep_only(job.digests)  # before any new block: never a file twice
        summary.committed_in = parts.where
        collector = _Collector(job, parts, fmt, cfg, with_truth)
        if job.pending:  # else a resume with every block done: merge without a cluster
            _run_job(ray, job, model, collector, summary, cfg, opts, report)
        summary.provider = ",".join(sorted(collector.providers)) or "none"
        summary.scores = "; ".join(sorted(collector.scores))
        if not summary.interrupted:
            parts.finish(job.digests, columns)
    if cfg.summary:
        write_summary(cfg, summary)
    return summary
