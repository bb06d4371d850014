"""`run_tune(cfg)`: the fastest configuration of one model whose answers stay within a
bound of fp32, written as a plan that `cnnbench infer --plan` runs.

Candidates are every runtime that loads x precision (fp32; int8 made from the images;
bf16 through OpenVINO where the CPU has it natively; fp16 on GPUs) x batch size x runs in
flight (the cores split among them: ORT intra-op threads, OpenVINO streams). Each variant
is first run over the images for its top-1 agreement with fp32 (and accuracy when the
images sit in class folders); one that loses more than `max_drop` points is not timed.
The others are timed by bench's own `bench_target` (warm-up apart, windows until three
agree, VALID rows only), in its doubling sweep that stops once img/s stops rising
(quick), or on every batch size up to `max_batch` (exhaustive). The fastest row of each
of the Pareto front's FINALISTS fastest variants then runs end to end over the images
(infer's own pipeline, as `infer --plan` will run it), and the fastest there is the plan.

Ctrl-C or SIGTERM (a `SignalStop` from the command group's `stop_signal`) drops the
configuration in flight, as bench does, and ends the search: the plan is then the fastest
of what was measured (the fastest end to end where finalists ran), marked `stopped` with
what was not measured; where nothing within the bounds was measured, no plan is made and
the int8/fp16 files made for it are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.bench.extras import check_images, labelled_images, place_images, spread
from cnnbench.bench.flops import write_matmul_model
from cnnbench.bench.machine import machine_facts
from cnnbench.bench.results import BenchConfig, BenchReport, Result, RunConfig, Target
from cnnbench.bench.run import bench_target
from cnnbench.bench.runners import open_session, probe_providers, ran_precision
from cnnbench.bench.tune_config import QUICK_PATIENCE, TuneConfig
from cnnbench.bench.tune_variants import (
    MADE_FILES,
    Variant,
    make_variant_files,
    variant_file,
    variants_for,
)
from cnnbench.convert.graph import lowered_precision
from cnnbench.convert.real_images import left_out_line
from cnnbench.cpu import has_native_bf16
from cnnbench.files import model_not_found, sha256_file, unwritable
from cnnbench.infer.decode.images import load_items
from cnnbench.infer.engines.job import IO_THREADS
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.plan import Expected, Plan, this_machine, write_plan
from cnnbench.infer.runtime.preprocess import InputFormat, resolve_input_format
from cnnbench.infer.runtime.runner import make_scorer
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, Session
from cnnbench.infer.sources.fetch import fetch_ahead
from cnnbench.infer.sources.items import Item
from cnnbench.infer.sources.stores import is_url
from cnnbench.signals import SignalStop, held_stops, signal_of

AGREEMENT_BATCH = 8
# the front's fastest variants run end to end over the images; the fastest there is chosen
FINALISTS = 3
MAX_IMAGES = 500  # tune's images at most (agreement to 0.2 points): more cost only time


@dataclass
class Candidate:
    """One variant at one batch size and number of runs in flight."""

    variant: Variant
    result: Result | None  # None: not timed (it lost too much, or did not load)
    agreement: float | None
    accuracy: float | None
    drop: float | None  # points lost against fp32
    note: str = ""  # why it was not timed, or why it is out
    # infer's own img/s over the images in this configuration (the finalists only)
    end_to_end_ips: float | None = None

    @property
    def eligible(self) -> bool:
        return self.result is not None and self.result.validity.valid and not self.note


@dataclass
class TuneReport:
    candidates: list[Candidate]
    front: list[Candidate]
    chosen: Candidate | None  # None: stopped before anything within the bounds was measured
    plan: Plan | None  # None: likewise; no plan is written
    skipped: dict[str, str]  # provider: why it did not load
    seconds: float
    unmeasured: list[str]  # left out by the time budget or the stop, and where
    stopped: str = ""  # where Ctrl-C or SIGTERM stopped the search; "" when it ran to its end
    stop_signal: int = signal.SIGINT  # which one came: the exit code is 128 + it


@dataclass
class _Progress:
    """The search so far, kept where a Ctrl-C or SIGTERM cannot lose it: each candidate
    is added as it is measured and each variant leaves `todo` once done, so a stopped
    search plans from what it measured and names what it did not."""

    start: float  # perf_counter
    deadline: float | None = None  # perf_counter: the end of --time-budget
    doing: str = "reading the images"  # what is in flight: the stop names it
    todo: list[Variant] = field(default_factory=list)  # not yet measured whole
    candidates: list[Candidate] = field(default_factory=list)
    finalists: list[Candidate] = field(default_factory=list)  # to run end to end
    unmeasured: list[str] = field(default_factory=list)
    made: list[str] = field(default_factory=list)  # the int8/fp16 files written
    skipped: dict[str, str] = field(default_factory=dict)  # provider: why not loaded

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def stopped_at(self) -> str:
        """Where the stop came, and what it left: the variant in flight past the last
        batch size it measured (the one in flight dropped), the variants after it whole,
        the finalists not yet run end to end."""
        self.unmeasured += [self._left(v) for v in self.todo]
        self.unmeasured += [
            f"{_configuration(c)} end to end" for c in self.finalists if c.end_to_end_ips is None
        ]
        left = f"; not measured: {', '.join(self.unmeasured)}" if self.unmeasured else ""
        return f"tune stopped while {self.doing}{left}"

    def _left(self, variant: Variant) -> str:
        sizes = [c.result.batch_size for c in self.candidates if c.variant is variant and c.result]
        return f"{variant.name} past batch {max(sizes)}" if sizes else variant.name


@dataclass
class _Images:
    """The tune images decoded once at the model's input size."""

    pixels: np.ndarray  # uint8 NHWC, the readable images only
    truth: list[str | None]  # class folder names


def check_config(cfg: TuneConfig) -> None:
    if not os.path.isfile(cfg.model):
        raise BenchError(model_not_found(cfg.model))
    if not cfg.output.lower().endswith(".json"):
        raise BenchError(f"-o {cfg.output}: give a plan file name ending in .json")
    if why := unwritable(cfg.output):
        raise BenchError(f"cannot write {cfg.output}: {why}")
    for kind in MADE_FILES:
        if (made := variant_file(_stem(cfg), kind)) == os.path.abspath(cfg.model):
            raise BenchError(
                f"-o {cfg.output}: tune writes its {kind} file beside the plan as "
                f"{os.path.basename(made)}, which is MODEL itself; give the plan another name"
            )
    if cfg.max_batch < 1:
        raise BenchError(f"--max-batch must be a positive integer, got {cfg.max_batch}")
    if not 0 <= cfg.max_drop <= 100:
        raise BenchError(f"--max-drop is in points, 0 to 100; got {cfg.max_drop:g}")
    check_images(cfg.images)


def run_tune(cfg: TuneConfig, log: Callable[[str], None] = lambda line: None) -> TuneReport:
    """Search, pick, and write the plan (`cfg.output`) and the files it runs; see the
    module docstring. A Ctrl-C or SIGTERM ends the search with the report of what it
    measured (`stopped`); a second one, or a plan that cannot be written, leaves neither
    the plan nor the int8/fp16 files made for it."""
    check_config(cfg)
    start = time.perf_counter()
    budget = cfg.time_budget_s
    progress = _Progress(start, None if budget is None else start + budget)
    stopped, signum = "", int(signal.SIGINT)
    try:
        with tempfile.TemporaryDirectory(prefix="cnnbench-tune-images-") as tmp:
            _search(cfg, sample_images(cfg.images, tmp, log), progress, log)
    except KeyboardInterrupt as e:
        stopped, signum = progress.stopped_at(), signal_of(e)
    written = False
    try:
        report = _report(cfg, progress, stopped, signum)
        if report.plan is not None:
            with held_stops():  # a stop in the write comes once the plan is whole
                write_plan(report.plan, cfg.output)
                written = True
    except BaseException:  # a second stop, a full disk: no plan, so none of its files
        if not written:
            _remove(progress.made)
        raise
    return report


@dataclass(frozen=True)
class _Sample:
    """Where tune reads its images: `root` (a folder or prefix) for the answers, the int8
    calibration and its check, `end_to_end` for infer's run (a folder, prefix or @list)."""

    root: str
    end_to_end: str


def sample_images(images: str, folder: str, log: Callable[[str], None]) -> _Sample:
    """The images as given, or MAX_IMAGES of them spread over their order when there are
    more (the job's own folder of millions, say: each was decoded and held in memory),
    placed in `folder` at their names (`place_images`: the class folders kept); infer's
    end-to-end run then reads a prefix's objects themselves."""
    listed = labelled_images(images)
    if len(listed) <= MAX_IMAGES:
        return _Sample(images, images)
    chosen = [i.path for i in spread(listed, MAX_IMAGES)]
    log(f"{MAX_IMAGES} of the {len(listed):,} images in {images}, spread over them, are tune's")
    root = os.path.join(folder, "images")
    place_images(chosen, images, root)
    if not is_url(images):
        return _Sample(root, root)
    listing = os.path.join(folder, "images.txt")
    Path(listing).write_text("".join(f"{url}\n" for url in chosen), encoding="utf-8")
    return _Sample(root, f"@{listing}")


def _search(
    cfg: TuneConfig, sample: _Sample, progress: _Progress, log: Callable[[str], None]
) -> None:
    """Measure every variant into `progress`, then run the finalists end to end."""
    session = open_session(cfg.model, RunConfig(Provider.CPU), cfg.runtime)
    fmt = _contract_format(cfg.model, session)
    images = _load_images(sample.root, fmt, log)
    log(f"{len(images.pixels)} images from {cfg.images}, {fmt.size[0]}x{fmt.size[1]}")
    reference = predict(session, fmt, images.pixels)
    variants = _variants(cfg, progress, log)
    progress.todo = list(variants)
    progress.doing = "making the model files of the variants"
    try:
        make_variant_files(variants, cfg, _stem(cfg), log, sample.root, progress.made)
        answers = _Answers(fmt, images, reference, top1_accuracy(reference, images.truth, fmt))
        _measure(cfg, answers, progress, log)
        _run_finalists(cfg, progress, log, sample.end_to_end)
    except Exception:  # no plan: the files made for it go too (a stop plans from them)
        _remove(progress.made)
        raise


def _variants(cfg: TuneConfig, progress: _Progress, log: Callable[[str], None]) -> list[Variant]:
    """Every variant worth a try on the providers that load here (those that do not are
    said, and kept in `progress.skipped`)."""
    progress.doing = "probing the providers"
    with tempfile.TemporaryDirectory(prefix="cnnbench-tune-") as tmp:
        probe = write_matmul_model(os.path.join(tmp, "probe.onnx"), 8)
        providers, progress.skipped = probe_providers(cfg.providers, probe, cfg.runtime)
    for name, why in progress.skipped.items():
        log(f"provider {name} skipped: {why}")
    if lowered := lowered_precision(cfg.model):
        log(
            f"{cfg.model} is {lowered} already (its weights): measured as it is, no int8 or "
            "fp16 file made from it; agreement is with its own top-1 on ORT's CPU"
        )
    return variants_for(providers, has_native_bf16(), lowered)


def _stem(cfg: TuneConfig) -> str:
    """The plan's path without `.json`: its int8/fp16 files are named after it."""
    return os.path.splitext(os.path.abspath(cfg.output))[0]


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.remove(path)


@dataclass(frozen=True)
class _Answers:
    """What every variant is held to: fp32's top-1 on the tune images (and its accuracy)."""

    fmt: InputFormat
    images: _Images
    reference: np.ndarray  # the source model's top-1 on ORT's CPU
    base_accuracy: float | None


def _measure(
    cfg: TuneConfig, answers: _Answers, progress: _Progress, log: Callable[[str], None]
) -> None:
    """Each variant in turn, into `progress`; past the time budget the rest are named."""
    while progress.todo:
        variant = progress.todo[0]
        if progress.out_of_time():
            progress.unmeasured.append(variant.name)
        else:
            progress.doing = f"measuring {variant.name}"
            _tune_variant(variant, cfg, answers, log, progress)
        progress.todo.pop(0)
    if progress.unmeasured:
        log(f"time budget reached: not measured: {', '.join(progress.unmeasured)}")


def _contract_format(path: str, session: Session) -> InputFormat:
    try:
        return resolve_input_format(session, need_pixels=True)
    except InferError as e:
        raise BenchError(
            f"{path}: {e}; tune takes a self-describing model: wrap it first with "
            "cnnbench convert MODEL.onnx -o OUT.onnx --preset ... --labels ..."
        ) from e


def _load_images(folder: str, fmt: InputFormat, log: Callable[[str], None]) -> _Images:
    """The images decoded at the model's size; a prefix's objects read IO_THREADS at a
    time (`fetch_ahead`), as infer reads them. Those that cannot be read are left out,
    with one line."""
    listed = labelled_images(folder)
    pixels = np.zeros((len(listed), *fmt.size, fmt.channels), dtype=np.uint8)
    items = [Item(i.path, i.path) for i in listed]
    if is_url(folder):
        with contextlib.closing(fetch_ahead(iter(items), IO_THREADS)) as fetched:
            items = list(fetched)
    reasons = load_items(items, pixels, fmt.bgr, fmt.policy)
    ok = [k for k, why in enumerate(reasons) if why is None]
    if not ok:
        raise BenchError(f"--images {folder}: none of the {len(listed)} images could be read")
    if len(ok) < len(listed):
        k, why = next((k, why) for k, why in enumerate(reasons) if why is not None)
        first = f"{items[k].name}: {why}"
        log(left_out_line("--images", folder, first, len(listed) - len(ok), len(ok)))
    return _Images(pixels[ok], [listed[k].truth for k in ok])


def predict(session: Session, fmt: InputFormat, pixels: np.ndarray) -> np.ndarray:
    """Top-1 class index of every image, AGREEMENT_BATCH at a time, of the scores infer
    makes (one score per image is a binary classifier's: its argmax was always 0)."""
    output = fmt.output_name or session.get_outputs()[0].name
    rows = fmt.batch or AGREEMENT_BATCH
    scorer = make_scorer(fmt)
    tops = []
    for start in range(0, len(pixels), rows):
        chunk = pixels[start : start + rows]
        n = len(chunk)
        if fmt.batch and n < fmt.batch:  # a fixed batch: pad the last one
            chunk = np.concatenate(
                [chunk, np.zeros((fmt.batch - n, *chunk.shape[1:]), chunk.dtype)]
            )
        out = session.run([output], {fmt.input_name: fmt.to_model_input(chunk)})[0][:n]
        tops.append(scorer(out).argmax(axis=1))
    return np.concatenate(tops)


def top1_accuracy(top: np.ndarray, truth: list[str | None], fmt: InputFormat) -> float | None:
    """Share of the images in a class folder named like a label whose top-1 is it."""
    index = {label: i for i, label in enumerate(fmt.labels)}
    pairs = [(index[t], p) for t, p in zip(truth, top, strict=True) if t in index]
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else None


def _tune_variant(
    variant: Variant,
    cfg: TuneConfig,
    answers: _Answers,
    log: Callable[[str], None],
    progress: _Progress,
) -> None:
    """The variant's agreement, then (within the bound) its timed configurations, each
    added to `progress` as it is measured; past the deadline the batch sweep stops, and
    `progress.unmeasured` says where."""
    add = progress.candidates.append
    if variant.unavailable:
        log(f"{variant.name}: not a candidate ({variant.unavailable})")
        add(Candidate(variant, None, None, None, None, variant.unavailable))
        return
    fmt, images, reference = answers.fmt, answers.images, answers.reference
    rc = RunConfig(variant.provider, variant.hint)
    runtime = dataclasses.replace(cfg.runtime, trt_fp16=variant.trt_fp16)
    if variant.provider is Provider.CPU and variant.file == "source":
        top = reference  # the reference itself
    else:
        try:
            session = open_session(variant.path, rc, runtime)
        except BenchError as e:
            log(f"{variant.name}: did not load ({e})")
            add(Candidate(variant, None, None, None, None, f"did not load: {e}"))
            return
        top = predict(session, fmt, images.pixels)
        if variant.file == "source" and variant.precision != "int8":
            # OpenVINO says what it runs: fp32 or bf16 (int8 layers run int8 whatever it says)
            variant.precision = ran_precision(session, variant.precision)
        del session
    agreement = float(np.mean(top == reference))
    accuracy = top1_accuracy(top, images.truth, fmt)
    drop = (
        100 * (answers.base_accuracy - accuracy)
        if accuracy is not None and answers.base_accuracy is not None
        else 100 * (1 - agreement)
    )
    figure = f"agreement {agreement:.1%}" + (
        f", accuracy {accuracy:.1%}" if accuracy is not None else ""
    )
    if drop > cfg.max_drop + 1e-9:
        note = f"loses {drop:.1f} points > --max-drop {cfg.max_drop:g}"
        log(f"{variant.name}: {figure}: {note}, not timed")
        add(Candidate(variant, None, agreement, accuracy, drop, note))
        return
    log(f"{variant.name}: {figure}; timing it ...")

    def timed(r: Result) -> None:
        add(Candidate(variant, r, agreement, accuracy, drop, _budget_note(r, cfg)))

    _time_variant(variant, rc, runtime, cfg, log, progress, timed)


def _budget_note(result: Result, cfg: TuneConfig) -> str:
    if not result.validity.valid:
        return str(result.validity)
    p99 = result.stats.p99_or_max_ms
    if cfg.latency_budget_ms is not None and p99 > cfg.latency_budget_ms:
        return f"p99 {p99:.1f} ms > --latency-budget {cfg.latency_budget_ms:g}"
    return ""


def concurrency_levels(cores: int, exhaustive: bool) -> tuple[int, ...]:
    """Runs in flight: 1, 2, 4, ... up to the cores (exhaustive: every count up to them)."""
    if exhaustive:
        return tuple(range(1, cores + 1))
    levels, n = [], 1
    while n <= cores:
        levels.append(n)
        n *= 2
    return tuple(levels)


def _time_variant(
    variant: Variant,
    rc: RunConfig,
    runtime: RuntimeOptions,
    cfg: TuneConfig,
    log: Callable[[str], None],
    progress: _Progress,
    timed: Callable[[Result], None] = lambda row: None,
) -> list[Result]:
    """The variant's rows from bench's sweep, each given to `timed` once measured (a stop
    keeps them). The time budget is checked after each batch size (once its every count
    of runs in flight is measured): a long sweep overruns it by one batch size's
    measurement at most."""
    cores = runtime.threads or os.cpu_count() or 1
    levels = concurrency_levels(cores, cfg.exhaustive)
    sizes = None
    if cfg.exhaustive:
        sizes = tuple(2**k for k in range(cfg.max_batch.bit_length()))
    bench_cfg = BenchConfig(
        models=(variant.path,),
        providers=(variant.provider,),
        precision_hints=(variant.hint,),
        batch_sizes=sizes,
        max_batch=cfg.max_batch,
        sweep_patience=QUICK_PATIENCE,
        concurrency=levels,
        timing=cfg.timing,
        runtime=runtime,
        peak=False,
    )
    report = BenchReport(machine_facts(), bench_cfg, [variant.provider.value], {}, {})

    def measured(r: Result) -> None:
        timed(r)  # kept before it is said: a stop on seeing the line finds it kept
        log(r.progress_line(variant.name))
        if r.concurrency == levels[-1] and progress.out_of_time():
            raise _OutOfTime(r.batch_size)

    try:
        bench_target(Target(variant.name, variant.path), rc, bench_cfg, report, measured)
    except BenchError as e:
        log(f"{variant.name}: timing stopped ({e})")
    except _OutOfTime as cut:
        log(f"{variant.name}: time budget reached: stopped after batch {cut.batch}")
        progress.unmeasured.append(f"{variant.name} past batch {cut.batch}")
    return report.results


class _OutOfTime(Exception):
    """The time budget ran out during a variant's batch sweep."""

    def __init__(self, batch: int) -> None:
        super().__init__(batch)
        self.batch = batch


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """The eligible candidates no other one beats on img/s, p99 and agreement at once."""
    pool = [c for c in candidates if c.eligible]

    def key(c: Candidate) -> tuple[float, float, float]:
        assert c.result is not None, "eligible"
        return (c.result.stats.throughput_ips, -c.result.stats.p99_or_max_ms, -(c.drop or 0.0))

    def dominated(c: Candidate) -> bool:
        a = key(c)
        return any(
            all(x >= y for x, y in zip(key(o), a, strict=True)) and key(o) != a for o in pool
        )

    return sorted((c for c in pool if not dominated(c)), key=key, reverse=True)


def _run_finalists(
    cfg: TuneConfig, progress: _Progress, log: Callable[[str], None], images: str
) -> None:
    """The front's fastest variants, each run end to end over the images."""
    front = pareto_front(progress.candidates)
    if not front:
        raise BenchError(_nothing_fits(progress.candidates, cfg))
    progress.finalists = _distinct(front)[:FINALISTS]
    for c in progress.finalists:
        # the trial plan is only run, so its expected img/s is not known yet (0)
        trial = make_plan(c, cfg, progress.candidates, end_to_end_ips=0.0)
        progress.doing = f"running {_configuration(c)} end to end"
        log(f"end to end over {cfg.images}: {trial.describe()} ...")
        c.end_to_end_ips = end_to_end(trial, images)
        log(f"  {c.end_to_end_ips:.1f} img/s end to end")


def _configuration(c: Candidate) -> str:
    """'cpu int8 batch 8 x2': a timed candidate, as the stop names it."""
    assert c.result is not None, "timed"
    return f"{c.variant.name} batch {c.result.batch_size} x{c.result.concurrency}"


def _report(cfg: TuneConfig, progress: _Progress, stopped: str, signum: int) -> TuneReport:
    """The plan of the front's fastest end to end (a stopped search: where none ran end
    to end, the fastest model-only); no plan, and no files made for it, where a stopped
    search measured nothing within the bounds."""
    front = pareto_front(progress.candidates)
    chosen = _choose(front) if front else None
    plan = None
    if chosen is not None:
        plan = make_plan(chosen, cfg, progress.candidates, chosen.end_to_end_ips, stopped)
    else:
        _remove(progress.made)
    seconds = time.perf_counter() - progress.start
    return TuneReport(
        progress.candidates,
        front,
        chosen,
        plan,
        progress.skipped,
        seconds,
        progress.unmeasured,
        stopped,
        signum,
    )


def _choose(front: list[Candidate]) -> Candidate:
    """The fastest end to end of those that ran it, else the front's fastest model-only."""
    ran = [c for c in front if c.end_to_end_ips is not None]
    return max(ran, key=lambda c: c.end_to_end_ips or 0.0) if ran else front[0]


def _distinct(front: list[Candidate]) -> list[Candidate]:
    """The front's fastest row of each variant, fastest first."""
    seen: set[str] = set()
    out = []
    for c in front:
        if c.variant.name not in seen:
            seen.add(c.variant.name)
            out.append(c)
    return out


def end_to_end(plan: Plan, images: str) -> float:
    """infer's own img/s over the images with the plan, as `infer --plan` will run it."""
    from cnnbench.infer.engines.job import InferConfig, apply_plan
    from cnnbench.infer.engines.local import run_infer

    with tempfile.TemporaryDirectory(prefix="cnnbench-tune-") as tmp:
        cfg = InferConfig(
            model=plan.model_path,
            inputs=(images,),
            output=os.path.join(tmp, "predictions.csv"),
            progress=False,
        )
        try:
            cfg, _ = apply_plan(cfg, plan)
            summary = run_infer(cfg)
        except InferError as e:
            raise BenchError(f"the chosen plan did not run end to end: {e}") from e
    if summary.interrupted:  # infer stopped after its batches in flight: so does tune
        raise SignalStop(summary.stop_signal)
    return summary.images_per_second


def _nothing_fits(candidates: list[Candidate], cfg: TuneConfig) -> str:
    timed = [c for c in candidates if c.result is not None and c.result.validity.valid]
    if not timed:
        return (
            "no configuration was timed VALID within --max-drop "
            f"{cfg.max_drop:g}: see the lines above"
        )
    best = min(timed, key=lambda c: c.result.stats.p99_or_max_ms if c.result else 0.0)
    assert best.result is not None, "timed"
    return (
        f"no configuration keeps p99 within --latency-budget {cfg.latency_budget_ms:g} ms: "
        f"the lowest was {best.result.stats.p99_or_max_ms:.1f} ms ({best.variant.name}, "
        f"batch {best.result.batch_size}); raise the budget"
    )


def make_plan(
    chosen: Candidate,
    cfg: TuneConfig,
    candidates: list[Candidate],
    end_to_end_ips: float | None,
    stopped: str = "",
) -> Plan:
    """The plan running `chosen`; `end_to_end_ips` is what `infer --plan` is expected to
    reach (infer's own img/s over the tune images; None: a search stopped before that run),
    the model-only figure stays beside it. `stopped`: where a stop ended the search."""
    r, v = chosen.result, chosen.variant
    assert r is not None, "the chosen candidate was timed"
    folder = os.path.dirname(os.path.abspath(cfg.output))
    # OpenVINO's streams share the threads it is given; ORT's runs in flight each get theirs
    threads = cfg.runtime.threads if v.provider is Provider.OPENVINO else r.threads
    return Plan(
        model=os.path.relpath(os.path.abspath(v.path), folder),
        sha256=sha256_file(v.path),
        provider=v.provider,
        precision=v.precision,
        batch_size=r.batch_size,
        threads=threads,
        concurrency=r.concurrency,
        expected=Expected(
            images_per_second=end_to_end_ips,
            model_only_images_per_second=r.stats.throughput_ips,
            p50_ms=r.stats.p50_ms,
            p99_ms=r.stats.p99_or_max_ms,
            agreement=chosen.agreement,
            accuracy=chosen.accuracy,
        ),
        machine=this_machine(),
        precision_hint=v.hint,
        trt_fp16=v.trt_fp16,
        extra={
            "source": os.path.abspath(cfg.model),
            "images": cfg.images if is_url(cfg.images) else os.path.abspath(cfg.images),
            "max_drop": cfg.max_drop,
            "latency_budget_ms": cfg.latency_budget_ms,
            "search": "exhaustive" if cfg.exhaustive else "quick",
            "candidates": [candidate_row(c) for c in candidates],
        },
        stopped=stopped or None,
        path=cfg.output,
    )


def candidate_row(c: Candidate) -> dict[str, object]:
    """One candidate as data: the plan's record of the search and `tune`'s table."""
    r = c.result
    return {
        "variant": c.variant.name,
        "provider": c.variant.provider.value,
        "precision": c.variant.precision,
        "precision_hint": c.variant.hint,
        "batch_size": r.batch_size if r else None,
        "concurrency": r.concurrency if r else None,
        "threads": r.threads if r else None,
        "model_only_images_per_second": r.stats.throughput_ips if r else None,
        "end_to_end_images_per_second": c.end_to_end_ips,
        "p50_ms": r.stats.p50_ms if r else None,
        "p99_ms": r.stats.p99_or_max_ms if r else None,
        "p99_is_max": r.stats.p99_ms is None if r else None,
        "validity": str(r.validity) if r else None,
        "agreement": c.agreement,
        "accuracy": c.accuracy,
        "drop_points": c.drop,
        "note": c.note,
    }
