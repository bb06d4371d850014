"""What a job is, whichever engine runs it: its configuration and summary, the listing
it reads (checked, counted, cut into batches), the prediction rows it writes, the summary
file, and Ctrl-C. The local pipeline (local.py) and the Ray engine (ray.py) both build on
this module and on neither of each other; the command's options need only this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import json
import os
import resource
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import numpy as np

from cnnbench.files import atomic_open, replaces_input, unwritable
from cnnbench.infer.decode.decoders import DecodeLimits
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.plan import (
    Plan,
    check_model,
    machine_difference,
    missing_provider,
    stopped_early,
)
from cnnbench.infer.runtime.preprocess import (
    ForeignOptions,
    InputFormat,
)
from cnnbench.infer.runtime.runner import DEFAULT_BATCH_SIZE
from cnnbench.infer.runtime.session import (
    Provider,
    RuntimeOptions,
)
from cnnbench.infer.sinks.output import (
    Earlier,
    check_apart,
    check_outputs,
    default_errors_path,
    job_path,
    lock_path,
)
from cnnbench.infer.sources import listing, prefixes, shards, stores
from cnnbench.infer.sources.fetch import room_for_reads
from cnnbench.infer.sources.items import LISTED_AGAIN, Item, extension_of
from cnnbench.infer.sources.listing import IMAGE_EXTENSIONS, Extensions, expand_inputs, scan_inputs
from cnnbench.memory import MemoryLimit, memory_limit

# what a folder scan counts a tar shard as, by extension ('.gz' for a .tar.gz)
SHARD_EXTENSIONS = frozenset(extension_of(f"x{suffix}") for suffix in shards.SHARD_SUFFIXES)
TRUNCATED_LISTED = 1000  # names of truncated-but-predicted files kept for --summary
IO_THREADS = 64  # reads in flight by default when an input is a URL or a list


class Engine(enum.StrEnum):
    LOCAL = "local"  # threads on this machine (local.py)
    RAY = "ray"  # a Ray Data job on a Ray cluster


@dataclass(frozen=True)
class RayOptions:
    """How the job runs on Ray; the rows do not depend on any of these."""

    address: str | None = None  # None: RAY_ADDRESS, else a running cluster, else a local one
    workers: int = 0  # inference actors; 0: autoscale between 1 and what the cluster holds
    num_gpus_per_worker: float | None = None  # None: 1 for cuda/tensorrt, else 0


@dataclass(frozen=True)
class InferConfig:
    model: str
    inputs: tuple[str, ...]  # folders, files, or '@list.txt'
    output: str  # .csv, .jsonl or .parquet (a folder of parts), local or s3://
    errors: str | None = None  # default: OUTPUT.errors.EXT
    batch_size: int | None = None  # None: the provider's default
    workers: int = 0  # decode threads; 0 = one per core
    io_threads: int | None = None  # reads in flight; None: IO_THREADS for URLs, else 0
    top_k: int = 1
    extensions: Extensions = IMAGE_EXTENSIONS  # None: every file
    limit: int | None = None  # only the first N files of the inputs
    progress: bool = True
    resume: bool = False  # skip files already in the output or errors file, append
    block_size: int = 1000  # files per block: the unit of parts (Ray; Parquet) and of resume
    summary: str | None = None  # JSON file for the summary
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    foreign: ForeignOptions = field(default_factory=ForeignOptions)
    limits: DecodeLimits = field(default_factory=DecodeLimits)  # --max-pixels, --allow-truncated
    concurrency: int = 1  # batches run at once (a plan's runs in flight): CPU and OpenVINO

    @property
    def errors_path(self) -> str:
        return self.errors or default_errors_path(self.output)


T = TypeVar("T")

# The local engine's batch loop, stage by stage: waiting for the next inputs (listing,
# reads), waiting for their decodes, running the model, writing the rows.
STAGES = ("inputs", "decode", "model", "write")
WAIT_SHARE = 0.1  # a wait this large a share of the loop's time is what held it


class StageClock:
    """Seconds the batch loop spent in each of STAGES, added by the threads that run
    them: the loop's own, and the runs in flight (`--plan` with several)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[stage] += time.perf_counter() - start

    def timed(self, items: Iterable[T], stage: str) -> Iterator[T]:
        """`items`, the wait for each counted in `stage`."""
        it = iter(items)
        while True:
            with self.timing(stage):
                item = next(it, _DONE)
            if item is _DONE:
                return
            yield item


_DONE: Any = object()

# cores idle less than this share of a run were busy: reads that held it waited for CPU
# more than for the store (s3rver on the same 2 cores: 9-17% idle, and 16, 64 or 256
# reads in flight gave the same img/s within noise; a store that is only slow: ~100%)
BUSY_IDLE = 0.2


def idle_seconds() -> float | None:
    """Idle seconds so far (idle and iowait) of the cores this process may run on, from
    /proc/stat; None where there is none (not Linux). Read before and after the batch
    loop: reads that held a run whose cores had no idle time waited for CPU, not for
    the store, and more of them in flight would not help."""
    try:
        cores = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except (OSError, AttributeError):
        return None
    ticks = sum(int(w[4]) + int(w[5]) for w in lines if w[0] in cores and len(w) > 5)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class InferSummary:
    images: int = 0
    errors: int = 0
    seconds: float = 0.0
    provider: str = ""
    batch_size: int = 0
    precision: str = ""  # what runs: OpenVINO's read back, else the spec's (or the weights')
    concurrency: int = 1
    correct: int = 0
    labelled: int = 0
    skipped: int = 0  # already done by an earlier run (--resume)
    interrupted: bool = False
    stop_signal: int = signal.SIGINT  # what stopped an interrupted run: Ctrl-C or SIGTERM
    per_class: dict[str, list[int]] = field(default_factory=dict)  # label -> [correct, total]
    # resumed files whose earlier rows could not be read back (a row in a class folder
    # with no top-1 label; each file of a part that no longer reads): left out of the
    # accuracy, and the line says so
    not_counted: int = 0
    # --engine ray only: rows (predictions and errors) per inference actor, and the
    # seconds spent connecting to or starting the cluster (not in `seconds`)
    per_worker: dict[str, int] = field(default_factory=dict)
    startup_seconds: float = 0.0
    scores: str = ""  # how the scores were made, e.g. "softmax (auto: ...)"
    preprocessing: str = ""  # how the pixels were prepared and resized
    # files left out by their extension, per extension; truncated files predicted from
    # what decoded (--allow-truncated)
    skipped_by_extension: Counter = field(default_factory=Counter)
    truncated: list[str] = field(default_factory=list)
    committed_in: str | None = None  # where finished blocks are kept (parts.py), if not OUTPUT
    # the local engine: seconds its batch loop spent per stage (StageClock)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # ... and the share of its cores' time that was idle meanwhile (None: not known)
    cores_idle: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def bound_by(self) -> str | None:
        """The stage that held the batch loop: the inputs or the decodes, where it waited
        for them WAIT_SHARE of its time or more (the larger wait), else the larger of its
        own work, the model or writing rows. None where nothing was timed (Ray), or
        no file was read (a resumed run with nothing left: only its listing was timed)."""
        seconds = self.stage_seconds
        total = sum(seconds.values())
        if not total or not self.images + self.errors:
            return None
        waited = max(("inputs", "decode"), key=lambda k: seconds.get(k, 0.0))
        if seconds.get(waited, 0.0) >= WAIT_SHARE * total:
            return waited
        return max(("model", "write"), key=lambda k: seconds.get(k, 0.0))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def count(self, truth: str, hit: bool) -> None:
        entry = self.per_class.setdefault(truth, [0, 0])
        entry[0] += hit
        entry[1] += 1
        self.correct += hit
        self.labelled += 1

    def to_dict(self) -> dict:
        skipped = self.skipped_by_extension
        doc = {
            "images": self.images,
            "errors": self.errors,
            "skipped": self.skipped,
            "skipped_by_extension": dict(by_extension_only(skipped).most_common()),
            "listed_again": skipped[LISTED_AGAIN],
            "truncated_predicted": len(self.truncated),
            "truncated_files": sorted(self.truncated)[:TRUNCATED_LISTED],
            "seconds": self.seconds,
            "images_per_second": self.images_per_second,
            "provider": self.provider,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "interrupted": self.interrupted,
            "scores": self.scores,
            "preprocessing": self.preprocessing,
            "accuracy": self.accuracy,
            "correct": self.correct,
            "labelled": self.labelled,
            "resumed_not_counted": self.not_counted,
            "per_class": {
                k: {"correct": c, "total": t, "accuracy": c / t}
                for k, (c, t) in sorted(self.per_class.items())
            },
        }
        if self.per_worker:
            doc |= {"per_worker": self.per_worker, "startup_seconds": self.startup_seconds}
        if self.stage_seconds:
            doc |= {"stage_seconds": self.stage_seconds, "bound_by": self.bound_by}
            doc |= {"cores_idle": self.cores_idle}
        return doc


def check_config(cfg: InferConfig) -> tuple[str, ...]:
    """Everything checkable before the model loads; returns the validated inputs."""
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise InferError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.concurrency < 1:
        raise InferError(f"concurrency must be a positive integer, got {cfg.concurrency}")
    if cfg.top_k < 1:
        raise InferError(f"--top-k must be a positive integer, got {cfg.top_k}")
    if cfg.limit is not None and cfg.limit < 1:
        raise InferError(f"--limit must be a positive integer, got {cfg.limit}")
    if cfg.limits.max_pixels < 1:
        raise InferError(f"--max-pixels must be a positive integer, got {cfg.limits.max_pixels}")
    if cfg.runtime.trt_fp16 and cfg.runtime.provider is not Provider.TENSORRT:
        raise InferError("--fp16 applies to --provider tensorrt only")
    if cfg.runtime.precision_hint != "auto" and cfg.runtime.provider is not Provider.OPENVINO:
        raise InferError("--precision-hint applies to --provider openvino only")
    if cfg.io_threads is not None and cfg.io_threads < 0:
        raise InferError(f"--io-threads must be 0 or more, got {cfg.io_threads}")
    if cfg.io_threads and (room := room_for_reads(cfg.io_threads)) is not None:
        raise InferError(
            f"--io-threads {cfg.io_threads} needs as many connections open at once, more than "
            f"this process may open (ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}): "
            f"pass --io-threads {room} or less, or raise ulimit -n"
        )
    if not cfg.inputs:
        raise InferError("no INPUT given: pass folders, files, URLs, tar shards or @list.txt")
    if cfg.block_size < 1:
        raise InferError(f"--block-size must be a positive integer, got {cfg.block_size}")
    inputs = expand_inputs(cfg.inputs, cfg.extensions)
    fmt = check_outputs(cfg.output, cfg.errors_path)
    targets = [cfg.output, cfg.errors_path] + ([cfg.summary] if cfg.summary else [])
    if cfg.summary and stores.is_url(cfg.summary):  # it was a local path: 'folder http:/h'
        raise InferError(f"cannot write {cfg.summary}: --summary is a local file; give a path")
    if cfg.summary and (why := unwritable(cfg.summary)):
        raise InferError(f"cannot write {cfg.summary}: {why}")
    if len({os.path.abspath(p) for p in targets}) < len(targets):
        raise InferError("--output, --errors and --summary must be different files")
    check_apart(fmt, targets)
    # the job's own files beside its output: its lock (removed at the end) and its record
    own = {lock_path(cfg.output), lock_path(cfg.errors_path), job_path(cfg.output)}
    own_abs = {os.path.abspath(p) for p in own if not stores.is_url(p)}
    given = (cfg.model, *(p for p in inputs if not p.startswith("@") and os.path.isfile(p)))
    for target in (t for t in targets if not stores.is_url(t)):
        if os.path.abspath(target) in own_abs:
            raise InferError(
                f"cannot write {target}: the run keeps its own lock or job record there; "
                "give -o, --errors and --summary names apart"
            )
        if why := replaces_input(target, given):
            raise InferError(f"cannot write {target}: {why}; name it .csv, .jsonl or .parquet")
    return inputs


def iter_items(
    inputs: tuple[str, ...], cfg: InferConfig, skipped: Counter | None = None
) -> Iterator[Item]:
    """Every input file in order; files left out by extension are counted in `skipped`.
    Raises when there is none at all."""
    skipped = Counter() if skipped is None else skipped
    written: tuple[str, ...] = (
        cfg.output,
        cfg.errors_path,
        lock_path(cfg.output),
        lock_path(cfg.errors_path),
        job_path(cfg.output),
    )
    written += tuple(filter(None, [cfg.summary]))
    items = scan_inputs(inputs, cfg.extensions, skipped, written, cfg.limits.max_bytes)
    items = islice(items, cfg.limit) if cfg.limit is not None else items
    first = next(items, None)
    if first is None:
        where = ", ".join(cfg.inputs)
        extensions = " ".join(cfg.extensions or ("*",))
        left_out = f"; {skipped_line(skipped)}" if skipped else ""
        todo = "check the path or pass --extensions"
        if skipped.keys() & SHARD_EXTENSIONS:  # shards in a folder are not opened
            todo = (
                "a tar shard is read as an input of its own: name the shards (a brace "
                "pattern such as DIR/shard-{000000..000099}.tar, or one per line in an @list)"
            )
        raise InferError(
            f"no images found under {where} (extensions: {extensions}){left_out}; {todo}"
        )
    return itertools.chain((first,), items)


def plural(n: int, noun: str) -> str:
    """'file' for 1, 'files' for any other count."""
    return noun if n == 1 else f"{noun}s"


def skipped_line(skipped: Counter) -> str:
    """'skipped 382 files by extension: 170 .gif, 40 .jp2, ...', and the list entries
    that named a file again ('2 list entries named a file listed before: ...')."""
    by_extension = by_extension_only(skipped)
    counts = ", ".join(f"{n} {ext}" for ext, n in by_extension.most_common())
    parts = []
    if by_extension:
        total = by_extension.total()
        parts.append(f"skipped {total} {plural(total, 'file')} by extension: {counts}")
    if again := skipped[LISTED_AGAIN]:
        parts.append(
            f"{again} list {'entry' if again == 1 else 'entries'} named a file listed before: "
            "each file read once"
        )
    return "; ".join(parts)


def by_extension_only(skipped: Counter) -> Counter:
    """The files left out by extension, without the LISTED_AGAIN count."""
    return Counter({k: n for k, n in skipped.items() if k != LISTED_AGAIN})


def truth_for(name: str, labels: set[str]) -> str | None:
    """The class-subfolder name of a file, when it names one of the model's labels."""
    parts = name.split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in labels else None


def class_folders(inputs: tuple[str, ...], labels: Sequence[str]) -> tuple[bool, str | None]:
    """Whether some input folder or prefix has subfolders named like the model's labels,
    and a line about the local input folders' subfolders that are not: where none is a
    label, for a folder whose subfolders look like classes (two or more; synset ids
    against names, another model's classes), top-1 accuracy is not measured, and the line
    says why; where some are, the others' images are left out of it, and the line names
    them (a label mistyped, or spelled otherwise). Each local folder's top is listed once."""
    wanted, labelled, unmatched, left_out = set(labels), False, None, None
    for root in inputs:
        if stores.is_url(root) and not shards.is_shard(root):
            # check_config's inputs: a prefix ends in '/' (an object does not)
            if not labelled and root.endswith("/") and prefixes.has_subprefix(root, wanted):
                labelled = True
        elif os.path.isdir(root):
            with os.scandir(root) as entries:
                folders = sorted(e.name for e in entries if listing.is_dir_entry(e))
            others = [name for name in folders if name not in wanted]
            if len(others) < len(folders):
                labelled = True
                if others and left_out is None:
                    which = "subfolder" if len(others) == 1 else "subfolders"
                    left_out = (
                        f"accuracy: the {which} {_some(others)} of {root} "
                        f"{'is' if len(others) == 1 else 'are'} none of the model's labels "
                        f"({_some(labels)}): their images have no true_label and are left out "
                        "of top-1 accuracy"
                    )
            elif unmatched is None and len(folders) >= 2 and labels:
                unmatched = (
                    f"accuracy: not measured: the subfolders of {root} ({_some(folders)}) "
                    f"are none of the model's labels ({_some(labels)}); class folders named "
                    "as its labels give top-1 accuracy"
                )
    return labelled, left_out if labelled else unmatched


def _some(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join([*names[:shown], "..."] if len(names) > shown else names)


def apply_plan(cfg: InferConfig, plan: Plan) -> tuple[InferConfig, list[str]]:
    """`cfg` running the plan's model file (once its sha256 is checked) in the plan's
    configuration, and a warning line for each way this machine differs from the plan's
    (and for a plan from a stopped tune: not the whole search). A provider missing here
    runs on ONNX Runtime's CPU instead (CUDA: `auto` tries it)."""
    model = check_model(plan)
    warnings = [w for w in (stopped_early(plan), machine_difference(plan)) if w]
    runtime = dataclasses.replace(
        cfg.runtime,
        provider=plan.provider,
        threads=plan.threads,
        precision_hint=plan.precision_hint,
        trt_fp16=plan.trt_fp16,
    )
    concurrency = plan.concurrency
    if why := missing_provider(plan.provider):
        warnings.append(
            f"the plan's provider {plan.provider.value} is missing here ({why}): "
            "running on cpu, one batch at a time"
        )
        runtime = dataclasses.replace(
            runtime, provider=Provider.CPU, threads=0, precision_hint="auto", trt_fp16=False
        )
        concurrency = 1
    elif plan.provider is Provider.CUDA:
        runtime = dataclasses.replace(runtime, provider=Provider.AUTO)
    cfg = dataclasses.replace(
        cfg, model=model, batch_size=plan.batch_size, runtime=runtime, concurrency=concurrency
    )
    return cfg, warnings


def batch_size_for(fmt: InputFormat, asked: int | None, provider: Provider) -> int:
    """The model's fixed batch, else the asked one, else the provider's default."""
    if fmt.batch is None:
        return asked or DEFAULT_BATCH_SIZE[provider]
    if asked is not None and asked != fmt.batch:
        raise InferError(
            f"--batch-size {asked} contradicts the model's fixed batch of {fmt.batch} "
            f"(input {fmt.input_name}): leave --batch-size out"
        )
    return fmt.batch


def running_precision(session: Any, fmt: InputFormat) -> str:
    """ONNX Runtime runs the file's precision; OpenVINO says what it runs (fp32, bf16),
    which for an int8 file is the precision of the layers left in float."""
    declared = fmt.spec.precision if fmt.spec is not None else ""
    precision = getattr(session, "precision", None)
    if not callable(precision):
        return declared
    ran = str(precision())
    return f"int8 ({ran} elsewhere)" if declared == "int8" else ran


def nothing_to_resume(cfg: InferConfig) -> str:
    """What --resume says where no earlier run wrote to the output it names (another name
    or extension than the run it means to go on from, say): the job starts over."""
    return (
        f"--resume: no earlier run's output at {cfg.output} to go on from: every file is "
        "read (Ctrl-C now if the earlier run wrote elsewhere, and give its -o)"
    )


def check_batch_memory(
    fmt: InputFormat,
    batch_size: int,
    buffers: int,
    have: MemoryLimit | None = None,
    where: str = "",
) -> None:
    """One line where `buffers` batch buffers alone would take more memory than the
    process may use, the machine's or its container's (they are allocated up front,
    filled as images come; past a cgroup's limit the kernel kills the job unannounced).
    `have`: another process's limit (a Ray worker's), `where` says whose for the line."""
    height, width = fmt.size
    need = buffers * batch_size * height * width * fmt.channels
    have = have or memory_limit()
    if need > have.bytes:
        raise InferError(
            f"batch size {batch_size:,}: {buffers} batches of {height}x{width}x{fmt.channels} "
            f"images take {need / 1e9:,.1f} GB, more than {have}{where}; give a smaller "
            "--batch-size (or re-run cnnbench tune for a plan)"
        )


def describe_format(fmt: InputFormat) -> list[str]:
    """Lines telling the user what was read from the model and decided for it."""
    lines = list(fmt.notes)
    if fmt.batch is not None:
        padded = ", the last one padded" if fmt.batch > 1 else ""
        lines.append(f"the model's batch is fixed at {fmt.batch}: batches of {fmt.batch}{padded}")
    if fmt.spec is None:
        lines.append(f"preprocessing: {fmt.describe()}")
    return lines


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def top_indices(probs: np.ndarray, top_k: int) -> np.ndarray:
    """Per row, the indices of the `top_k` highest probabilities, best first (stable)."""
    k = min(top_k, probs.shape[1])
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def prediction_row(
    name: str,
    idx: np.ndarray,
    scores: np.ndarray,
    labels: tuple[str, ...],
    truth_labels: set[str] | None,
    summary: InferSummary,
) -> dict:
    """One prediction row, typed (top-k labels and float32 scores, and the truth when the
    file sits in a class folder; see sinks/formats.py); counts it in the summary's accuracy."""
    row: dict[str, object] = {"path": name}
    for rank, (j, score) in enumerate(zip(idx, scores, strict=True), start=1):
        suffix = "" if rank == 1 else f"_{rank}"
        row[f"label{suffix}"] = _label(labels, j)
        row[f"score{suffix}"] = float(score)
    if truth_labels is not None:
        row["true_label"], row["correct"] = score_row(
            name, _label(labels, idx[0]), truth_labels, summary
        )
    return row


def score_row(
    name: str, top1: str | None, truth_labels: set[str], summary: InferSummary
) -> tuple[str | None, bool | None]:
    """A row's truth (its class folder, None outside one) and whether its top-1 label is
    it, counted in the summary's accuracy: this run's rows and, on --resume, the rows an
    earlier run wrote are scored here alike. A row in a class folder with no top-1 label
    (an earlier one that could not be read back) is counted apart, as not counted."""
    truth = truth_for(name, truth_labels)
    if truth is None:
        return None, None
    if top1 is None:
        summary.not_counted += 1
        return truth, None
    hit = truth == top1
    summary.count(truth, hit)
    return truth, hit


def score_earlier(
    summary: InferSummary, earlier: Callable[[], Earlier], truth_labels: set[str] | None
) -> None:
    """Count the rows an earlier run committed (--resume) in the accuracy, so that it is
    the whole job's, as one uninterrupted run would give; error rows are in no accuracy,
    and files whose rows could not be read back are counted apart, for the line to say.
    `earlier` is called only where accuracy is measured: it may read every committed part."""
    if truth_labels is None:
        return
    rows = earlier()
    for name, top1 in rows.rows:
        score_row(name, top1, truth_labels, summary)
    summary.not_counted += rows.unread


def job_key(cfg: InferConfig, model_sha256: str, columns: list[str]) -> dict:
    """What the rows of a block-committed output depend on besides its files: a resumed
    run must have the same (sinks/parts.py)."""
    return {
        "model_sha256": model_sha256,
        "inputs": [
            p if p.startswith("@") or stores.is_url(p) else os.path.abspath(p) for p in cfg.inputs
        ],
        "columns": columns,
        "block_size": cfg.block_size,
        "foreign": repr(cfg.foreign),
    }


def _label(labels: tuple[str, ...], j: int) -> str:
    return labels[j] if j < len(labels) else str(j)


def write_summary(cfg: InferConfig, summary: InferSummary) -> None:
    doc = summary.to_dict() | {
        "model": cfg.model,
        "inputs": list(cfg.inputs),
        "output": cfg.output,
        "errors_file": cfg.errors_path,
        "errors_csv": cfg.errors_path,  # its name before JSON lines and Parquet: kept for scripts
    }
    assert cfg.summary is not None, "called only with --summary"
    with atomic_open(cfg.summary) as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
