"""`cnnbench infer --engine ray`: the folder pipeline as a Ray Data job.

The driver lists the inputs exactly as the local engine does and cuts the sorted listing
into fixed blocks. Ray Data then decodes and resizes them in CPU tasks and runs them
through an actor pool (one ONNX Runtime session per actor, made once, on the actor's GPU
when it has one); the two stages stream, so decoding overlaps inference. The rows come
back to the driver, which writes a block's shards once all of its rows have arrived and,
at the end, merges the shards into the output in input order (see parts.py).

The model file is read once by the driver and put in Ray's object store; each actor
writes it to a private temporary file for ONNX Runtime, so worker nodes need no copy of
the model. The driver ships the listing, never the bytes: the decode tasks read the
images themselves, from URLs (any node) or from paths (the same path on every node: a
shared file system). Connecting is ray_cluster.py; what runs on the workers is
ray_workers.py. Ray is imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from cnnbench.files import Report
from cnnbench.infer.engines.job import (
    IO_THREADS,
    InferConfig,
    InferSummary,
    RayOptions,
    batch_size_for,
    check_batch_memory,
    check_config,
    class_folders,
    describe_format,
    iter_items,
    job_key,
    nothing_to_resume,
    prediction_row,
    score_earlier,
    write_summary,
)
from cnnbench.infer.engines.ray_cleanup import release_watchdog
from cnnbench.infer.engines.ray_cluster import check_cluster, connect, import_ray
from cnnbench.infer.engines.ray_watch import Stalled, watched
from cnnbench.infer.engines.ray_workers import (
    NodeMemory,
    Predictor,
    WorkerProbe,
    decode_batch,
    node_memory,
    probe_worker,
)
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.preprocess import InputFormat, check_top_k, resolve_input_format
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session
from cnnbench.infer.sinks.formats import Format, fieldnames, format_of
from cnnbench.infer.sinks.output import (
    Earlier,
    check_recorded_job,
    output_locks,
    read_resume_state,
)
from cnnbench.infer.sinks.parts import Parts, blocks, parts_dir
from cnnbench.infer.sources import stores
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.listing import reason
from cnnbench.signals import StopOnSignal

DECODE_CPUS = 0.5  # per decode task
WORKER_BATCHES = 2  # batches a node holds at least: an actor's buffer, a decode task's output
NODES_WAIT_S = 30.0  # how long the other nodes have to say how much memory they have


@dataclass
class _Job:
    """What the driver keeps: per block its digest, and the size of those still to do."""

    digests: list[str]
    pending: dict[int, int]
    refs: list  # per pending block: its listing table, then its object-store ref
    done: list[tuple[int, str, int]] = field(default_factory=list)  # an earlier run's blocks


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
            job.done.append((k, digest, len(chunk)))
            continue
        job.pending[k] = len(chunk)
        table = pa.table(
            {
                "block": pa.array([k] * len(chunk), pa.int64()),
                "index": pa.array(range(len(chunk)), pa.int64()),
                # absolute: workers do not run in the driver's working directory;
                # URLs are read by the workers themselves. Bytes: a file name need
                # not be UTF-8 (its name column is `printable`)
                "path": pa.array(
                    [
                        os.fsencode(
                            item.path if stores.is_url(item.path) else os.path.abspath(item.path)
                        )
                        for item in chunk
                    ],
                    pa.binary(),
                ),
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
        self, job: _Job, parts: Parts, fmt: InputFormat, cfg: InferConfig, truth: set[str] | None
    ) -> None:
        self.job, self.parts, self.labels, self.fmt = job, parts, fmt.labels, fmt
        self.truth = truth  # the labels a class folder is named as; None: no accuracy
        self.columns = fieldnames(cfg.top_k, truth is not None)
        self.rows: dict[int, dict[int, list]] = {}
        self.providers: set[str] = set()
        self.precisions: set[str] = set()
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
        self.precisions.update(p for p in batch["precision"] if p)
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
            "io_threads": IO_THREADS if cfg.io_threads is None else cfg.io_threads,
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
) -> WorkerProbe:
    """Load the model once where an inference actor would run, before the job starts:
    a worker that cannot gives one clear line here instead of a failed job."""
    gpus = _num_gpus(opts, cfg.runtime)
    _pool(ray, opts, gpus)  # the resources fit
    probe = ray.remote(probe_worker).options(num_cpus=1, num_gpus=gpus, max_retries=0)
    found: WorkerProbe = ray.get(probe.remote([model_ref], _actor_runtime(cfg.runtime)))
    if found.error:
        raise InferError(f"a Ray worker cannot load the model: {found.error}")
    report(f"ray: inference workers load {cfg.model} on provider {found.provider}")
    return found


def _check_worker_memory(
    ray: ModuleType, found: WorkerProbe, fmt: InputFormat, batch_size: int
) -> None:
    """The batches checked against what a process may use on the node with the least (a
    cgroup's limit, past which the kernel killed the workers and Ray retried them for
    ever): at least an actor's buffer and one decode task's batch."""
    nodes = [found.node, *_other_nodes(ray, found.node.node_id)]
    least = min(nodes, key=lambda node: node.memory.bytes)
    where = f", on the Ray worker at {least.address} (an actor's buffer and a decode task's batch)"
    check_batch_memory(fmt, batch_size, WORKER_BATCHES, least.memory, where)


def _other_nodes(ray: ModuleType, probed: str) -> list[NodeMemory]:
    """The memory of every other node that runs tasks, from a task of no resources pinned
    to each: none on a one-node cluster; a node that does not answer within NODES_WAIT_S
    is left out (nodes that join later are not checked)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ids = [
        node["NodeID"]
        for node in ray.nodes()
        if node["Alive"] and node["Resources"].get("CPU", 0) > 0 and node["NodeID"] != probed
    ]
    if not ids:
        return []
    task = ray.remote(node_memory)
    pinned = [NodeAffinitySchedulingStrategy(i, soft=False) for i in ids]
    refs = [
        task.options(num_cpus=0, max_retries=0, scheduling_strategy=on).remote() for on in pinned
    ]
    ready, late = ray.wait(refs, num_returns=len(refs), timeout=NODES_WAIT_S)
    for ref in late:
        ray.cancel(ref)
    found = []
    for ref in ready:
        with contextlib.suppress(ray.exceptions.RayError):  # the node left meanwhile
            found.append(ray.get(ref))
    return found


def _actor_runtime(runtime: RuntimeOptions) -> RuntimeOptions:
    return dataclasses.replace(runtime, device_id=0)  # Ray gives each actor its own GPU(s)


def _worker_error(e: Exception) -> InferError:
    """One line from a failed Ray job. A worker's exception reaches the driver as text
    (its traceback); the last line of that is the reason, the worker's InferError when
    it raised one (a StoreDown, when its reads found the store gone, stays one)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in reversed(lines):
        for kind in (stores.StoreDown, InferError):
            marker = f"{kind.__module__}.{kind.__name__}: "
            if marker in line:
                return kind(f"a Ray worker failed: {line.split(marker, 1)[1]}")
    return InferError(f"the Ray job failed: {lines[-1] if lines else type(e).__name__}")


class _RayDataConsole(logging.Filter):
    """What Ray Data's logger shows on the console: its info lines and warnings with
    progress on (they are progress too), nothing without; never an error or a
    traceback (a task cancelled by Ctrl-C, a failed block, its stats actor gone once
    the driver disconnects): our own one line stands for those. Its session log file
    (ray-data.log) still gets every record. Stays on Ray Data's console handler for the
    rest of the process, which also logs while the driver disconnects at exit."""

    progress = False

    def filter(self, record: logging.LogRecord) -> bool:
        return self.progress and record.levelno < logging.ERROR and not record.exc_info


_RAY_DATA_CONSOLE = _RayDataConsole()


def _quiet_ray_data_console(progress: bool) -> None:
    _RAY_DATA_CONSOLE.progress = progress
    for handler in logging.getLogger("ray.data").handlers:
        console = isinstance(handler, logging.StreamHandler)
        console = console and not isinstance(handler, logging.FileHandler)
        if console and _RAY_DATA_CONSOLE not in handler.filters:
            handler.addFilter(_RAY_DATA_CONSOLE)


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
    _quiet_ray_data_console(progress)
    start = time.perf_counter()
    try:
        with StopOnSignal() as stop:
            batches = ds.iter_batches(batch_size=None, batch_format="numpy")
            try:
                for batch in watched(ray, batches, report, stop):
                    collector.add(batch, summary)
            except Stalled as e:
                report(str(e))
                stop.requested = True
            except KeyboardInterrupt:  # the second Ctrl-C: committed blocks stay
                stop.requested = True
            summary.interrupted, summary.stop_signal = stop.requested, stop.signum
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
    cfg: InferConfig, key: dict, items: Iterator[Item], summary: InferSummary
) -> Callable[[], Earlier] | None:
    """--resume of a CSV or JSON lines output whose run already finished: the output is
    there and its parts folder gone. When every listed file has its row (nothing to do,
    as with the local engine): what reads their rows back, for the job's accuracy; None
    where this is not such a resume. An output that lacks rows was not left by a Ray
    run, which merges only at the end: refused, as Ray's unit of resume is the parts
    folder. (A Parquet output keeps its parts: a finished one resumes as every block done.)"""
    staged = os.path.isdir(parts_dir(cfg.output))
    if format_of(cfg.output) is Format.PARQUET or staged or not os.path.exists(cfg.output):
        return None
    state = read_resume_state(cfg.output, cfg.errors_path, key["columns"])
    check_recorded_job(cfg.output, key)
    listed = missing = 0
    resumed: list[str] = []
    for item in items:
        listed += 1
        missing += not state.skips(item.name, resumed)
    if missing:
        raise InferError(
            f"cannot resume {cfg.output} with --engine ray: it lacks {missing} files and "
            f"there is no {parts_dir(cfg.output)} folder (it was not left by a stopped Ray "
            "run); finish it with --engine local --resume, or rerun without --resume"
        )
    summary.skipped, summary.provider = listed, "none"
    return lambda: state.earlier(resumed)


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
        found = _check_workers(ray, model_ref, cfg, opts, report)
        _check_worker_memory(ray, found, collector.fmt, summary.batch_size)
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
    if not cfg.resume:  # before anything is written (a resume may only merge: no cluster)
        check_cluster(ray, opts.address)
    with_truth, unmatched = class_folders(inputs, fmt.labels)
    if unmatched:
        report(unmatched)
    columns = fieldnames(cfg.top_k, with_truth)
    gpu = _num_gpus(opts, cfg.runtime) > 0
    batch_size = batch_size_for(fmt, cfg.batch_size, Provider.CUDA if gpu else Provider.CPU)
    check_batch_memory(fmt, batch_size, 1)  # each model actor's buffer
    summary = InferSummary(batch_size=batch_size)
    summary.preprocessing = fmt.describe()
    for line in describe_format(fmt):
        report(line)
    items = iter_items(inputs, cfg, summary.skipped_by_extension)
    key = job_key(cfg, hashlib.sha256(model).hexdigest(), columns)
    truth = set(fmt.labels) if with_truth else None
    with output_locks(cfg.output, cfg.errors_path):
        if cfg.resume and (earlier := _finished_earlier(cfg, key, items, summary)):
            score_earlier(summary, earlier, truth)
            if cfg.summary:
                write_summary(cfg, summary)
            return summary
        parts = Parts(cfg.output, cfg.errors_path, key, cfg.resume)
        if cfg.resume and not parts.resumed:
            report(nothing_to_resume(cfg))
        job = _plan(items, cfg.block_size, parts, summary)
        parts.keep_only(job.digests)  # before any new block: never a file twice
        summary.committed_in = parts.where
        collector = _Collector(job, parts, fmt, cfg, truth)
        if job.pending:  # else a resume with every block done: merge without a cluster
            _run_job(ray, job, model, collector, summary, cfg, opts, report)
        summary.provider = ",".join(sorted(collector.providers)) or "none"
        summary.precision = ",".join(sorted(collector.precisions))
        summary.scores = "; ".join(sorted(collector.scores))
        score_earlier(summary, lambda: parts.earlier(job.done, columns), truth)
        if not summary.interrupted:
            parts.finish(job.digests, columns)
    if cfg.summary:
        write_summary(cfg, summary)
    return summary
