"""A plan: the configuration `cnnbench tune` found fastest within its bounds, tied to the
model file's sha256 and to the machine it was measured on, and run as it is by
`cnnbench infer --plan`.

The model path is stored relative to the plan's folder (the int8 file tune writes sits
beside the plan), so the two move together. A changed model file is refused; another CPU
or a provider that is missing here is a warning: the plan still runs, its expected figures
may not hold.

A tune stopped by Ctrl-C or SIGTERM writes its plan from what it measured, and says so in
`stopped` (where it stopped, what it did not measure); its expected end-to-end figure is
null when it stopped before the end-to-end runs. infer runs such a plan with a warning.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cnnbench import fields as checked
from cnnbench.cpu import cpu_model, isa_flags
from cnnbench.files import sha256_file
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.openvino_runner import PrecisionHint
from cnnbench.infer.runtime.session import ORT_NAMES, Provider, gpu_missing

# 2: `expected.images_per_second` became the end-to-end figure (1: the model alone)
PLAN_SCHEMA = "cnnbench.plan/2"
OLD_SCHEMAS = ("cnnbench.plan/1",)
RETUNE = "re-run cnnbench tune"


@dataclass(frozen=True)
class Expected:
    """What the configuration reached when it was measured. `images_per_second` is what
    `infer --plan` promises: infer's own img/s (decode and model) over the tune images;
    the model alone, and its latency per batch, are kept beside it as model-only figures."""

    # end to end: infer --plan over the tune images; None: tune stopped before that run
    images_per_second: float | None
    model_only_images_per_second: float  # the model alone, bench's methodology (VALID)
    p50_ms: float  # the model alone, per batch
    p99_ms: float  # the model alone, per batch; the max where fewer than 100 runs give no p99
    agreement: float | None = None  # share of the tune images with fp32's top-1
    accuracy: float | None = None  # top-1 on the tune images' class folders


@dataclass(frozen=True)
class PlanMachine:
    """Where the plan was measured."""

    cpu: str
    cpu_flags: tuple[str, ...]
    cores: int
    onnxruntime: str
    openvino: str | None = None
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    model: str  # relative to the plan's folder, or absolute
    sha256: str
    provider: Provider
    precision: str  # what runs: fp32, int8, bf16, fp16
    batch_size: int
    threads: int  # intra-op threads of each run in flight (0: every core)
    concurrency: int  # runs in flight (OpenVINO: streams)
    expected: Expected
    machine: PlanMachine
    precision_hint: str = "auto"  # OpenVINO's INFERENCE_PRECISION_HINT
    trt_fp16: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # the search's record, not read back
    stopped: str | None = None  # a tune stopped early: where, and what it did not measure
    path: str = ""  # the plan file it was read from (not stored)

    @property
    def model_path(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), self.model)

    def describe(self) -> str:
        """'openvino bf16 (hint bf16), batch 8, 1 in flight x 2 threads'"""
        hint = f" (hint {self.precision_hint})" if self.provider is Provider.OPENVINO else ""
        threads = self.threads or "all"
        return (
            f"{self.provider.value} {self.precision}{hint}, batch {self.batch_size}, "
            f"{self.concurrency} in flight x {threads} threads"
        )

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"schema": PLAN_SCHEMA}
        doc |= {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        doc["provider"] = self.provider.value
        doc["expected"] = asdict(self.expected)
        doc["machine"] = asdict(self.machine)
        return doc


def this_machine() -> PlanMachine:
    import onnxruntime as ort

    try:
        import openvino

        ov: str | None = openvino.__version__
    except ImportError:
        ov = None
    return PlanMachine(cpu_model(), isa_flags(), os.cpu_count() or 1, ort.__version__, ov)


def read_plan(path: str) -> Plan:
    """The plan in `path`, every field checked: one line naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InferError(f"--plan: cannot read {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InferError(f"--plan: {path} is not JSON ({e}); {RETUNE}") from e
    if isinstance(doc, dict) and doc.get("schema") in OLD_SCHEMAS:
        raise InferError(
            f"--plan: {path} was written by an older cnnbench (schema {doc['schema']!r}, "
            f"whose expected img/s meant another figure); {RETUNE}"
        )
    if not isinstance(doc, dict) or doc.get("schema") != PLAN_SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise InferError(
            f"--plan: {path} is not a cnnbench plan (schema {found!r}, expected "
            f"{PLAN_SCHEMA!r}); write one with cnnbench tune"
        )
    try:
        return _plan_from(doc, path)
    except (KeyError, TypeError, ValueError) as e:
        raise InferError(f"--plan: {path} has a missing or bad field ({e}); {RETUNE}") from e


def _plan_from(doc: dict[str, Any], path: str) -> Plan:
    """The plan's fields, each of the type and range tune writes (`cnnbench.fields`)."""
    hint = checked.text(doc.get("precision_hint", "auto"), "precision_hint")
    if hint not in tuple(PrecisionHint):
        raise ValueError(f"precision_hint {hint!r}: one of {', '.join(PrecisionHint)}")
    stopped = doc.get("stopped")
    if stopped is not None:
        checked.text(stopped, "stopped")
    expected = checked.mapping(doc["expected"], "expected")
    for key in ("images_per_second", "model_only_images_per_second"):
        # only a stopped tune may lack the end-to-end figure
        if not (key == "images_per_second" and stopped and expected[key] is None):
            checked.number(expected[key], f"expected.{key}", positive=True)
    for key in ("p50_ms", "p99_ms"):
        checked.number(expected[key], f"expected.{key}", positive=False)
    for key in ("agreement", "accuracy"):
        if expected.get(key) is not None:
            checked.number(expected[key], f"expected.{key}", positive=False, most=1.0)
    machine = checked.mapping(doc["machine"], "machine")
    machine["cpu_flags"] = tuple(map(str, machine.get("cpu_flags", ())))
    machine["gpus"] = tuple(map(str, machine.get("gpus", ())))
    checked.whole(machine["cores"], "machine.cores", 1)
    return Plan(
        model=checked.text(doc["model"], "model"),
        sha256=checked.text(doc["sha256"], "sha256"),
        provider=Provider(doc["provider"]),
        precision=checked.text(doc["precision"], "precision"),
        batch_size=checked.whole(doc["batch_size"], "batch_size", 1),
        threads=checked.whole(doc["threads"], "threads", 0),
        concurrency=checked.whole(doc["concurrency"], "concurrency", 1),
        expected=Expected(**expected),
        machine=PlanMachine(**machine),
        precision_hint=hint,
        trt_fp16=checked.flag(doc.get("trt_fp16", False), "trt_fp16"),
        extra=checked.mapping(doc.get("extra", {}), "extra"),
        stopped=stopped,
        path=path,
    )


def check_model(plan: Plan) -> str:
    """The model file's path, once its bytes are the ones the plan was measured on."""
    model = plan.model_path
    if not os.path.isfile(model):
        raise InferError(
            f"--plan: the plan's model file {model} is not there: a plan names its model "
            f"beside itself, so copy {plan.model} with it, or {RETUNE}"
        )
    digest = sha256_file(model)
    if digest != plan.sha256:
        raise InferError(
            f"--plan: {model} changed since the plan was made (sha256 {digest[:12]}..., "
            f"the plan's {plan.sha256[:12]}...); {RETUNE}"
        )
    return model


def machine_difference(plan: Plan, here: PlanMachine | None = None) -> str | None:
    """One line saying how this CPU differs from the plan's, None when it does not."""
    here = here or this_machine()
    then = plan.machine
    if (here.cpu, here.cpu_flags, here.cores) == (then.cpu, then.cpu_flags, then.cores):
        return None
    parts = []
    if here.cpu != then.cpu:
        parts.append(f"CPU {here.cpu!r}, the plan's {then.cpu!r}")
    if here.cores != then.cores:
        parts.append(f"{here.cores} cores, the plan's {then.cores}")
    missing = [f for f in then.cpu_flags if f not in here.cpu_flags]
    added = [f for f in here.cpu_flags if f not in then.cpu_flags]
    if missing:
        parts.append(f"lacks {', '.join(missing)}")
    if added:
        parts.append(f"also has {', '.join(added)}")
    return (
        f"this machine differs from the one the plan was measured on ({'; '.join(parts)}): "
        "its expected figures may not hold here"
    )


def stopped_early(plan: Plan) -> str | None:
    """One line saying the plan is from a tune stopped before its end (a faster
    configuration may be among those it did not measure), None for a whole search."""
    if not plan.stopped:
        return None
    return (
        f"the plan is from a tune stopped before its end ({plan.stopped}): a faster "
        f"configuration may be among those not measured; {RETUNE} to finish the search"
    )


def missing_provider(provider: Provider) -> str | None:
    """Why `provider` cannot load here, None when it may (a GPU provider is only known to
    load once a session has it)."""
    if provider is Provider.OPENVINO:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install 'cnnbench[openvino]')"
        return None
    if provider in (Provider.CUDA, Provider.TENSORRT):
        import onnxruntime as ort

        if ORT_NAMES[provider] not in ort.get_available_providers():
            return f"this onnxruntime build has no {ORT_NAMES[provider]}"
        return gpu_missing()  # the GPU wheel lists its providers on any machine
    return None


def write_plan(plan: Plan, path: str) -> None:
    from cnnbench.files import atomic_open

    with atomic_open(path) as f:
        json.dump(plan.to_dict(), f, indent=2, ensure_ascii=False)
        f.write("\n")
