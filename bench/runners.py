"""Sessions and the calls that are timed: which providers really load, and how one run is
made on each (plain `session.run` on CPU and OpenVINO; IO binding with the input already on
the GPU).

`--concurrency N` puts N runs in flight at once and splits the cores among them: one ONNX
Runtime session with cores/N intra-op threads run from N threads, or one OpenVINO model
compiled for N streams (benchmark_app's -nstreams), one infer request per thread.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.bench.results import RunConfig
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.session import (
    ORT_NAMES,
    Provider,
    RuntimeOptions,
    Session,
    create_session,
)

OOM_MARKERS = ("out of memory", "bad_alloc", "failed to allocate", "alloc_failed", "_alloc")
GPU_PROVIDERS = (Provider.CUDA, Provider.TENSORRT)


def with_provider(runtime: RuntimeOptions, provider: Provider) -> RuntimeOptions:
    return dataclasses.replace(runtime, provider=provider)


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


def candidate_providers(asked: tuple[Provider, ...] | None) -> tuple[Provider, ...]:
    """The asked providers, or every one this onnxruntime build lists, and OpenVINO when
    the package is installed."""
    if asked:
        return asked
    import onnxruntime as ort

    listed = set(ort.get_available_providers())
    found = [p for p in (Provider.CPU, Provider.CUDA, Provider.TENSORRT) if ORT_NAMES[p] in listed]
    if openvino_version() is not None:
        found.append(Provider.OPENVINO)
    return tuple(found)


def probe_providers(
    asked: tuple[Provider, ...] | None, probe_model: str, runtime: RuntimeOptions
) -> tuple[list[Provider], dict[str, str]]:
    """(providers that load, {provider: why not} for the others).

    A provider that does not load is skipped with its reason, unless it was the only one
    asked for, or none loads at all: then it is an error.
    """
    loaded, skipped = [], {}
    cause: InferError | None = None  # kept as the __cause__ of the error raised below
    for provider in candidate_providers(asked):
        try:
            # create_session keeps onnxruntime's printed provider fallbacks off stdout
            create_session(probe_model, with_provider(runtime, provider))
            loaded.append(provider)
        except InferError as e:
            skipped[provider.value], cause = str(e), e
    if asked and len(asked) == 1 and skipped:
        raise BenchError(next(iter(skipped.values()))) from cause
    if not loaded:
        raise BenchError(
            "no provider loaded: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        ) from cause
    return loaded, skipped


def run_configs(providers: list[Provider], hints: tuple[str, ...]) -> list[RunConfig]:
    """Each provider once; OpenVINO once per precision hint."""
    out = []
    for p in providers:
        out += [RunConfig(p, h) for h in hints] if p is Provider.OPENVINO else [RunConfig(p)]
    return out


def split_threads(runtime: RuntimeOptions, concurrency: int) -> int:
    """Intra-op threads of each of `concurrency` runs in flight: the cores shared out."""
    cores = runtime.threads or os.cpu_count() or 1
    return max(1, cores // concurrency)


def open_session(
    path: str,
    run: RunConfig,
    runtime: RuntimeOptions,
    concurrency: int = 1,
    profile: bool = False,
) -> Session:
    """A session for `run` with the cores split among `concurrency` runs in flight."""
    try:
        if run.provider is Provider.OPENVINO:
            from cnnbench.infer.runtime.openvino_runner import create_openvino_session

            return create_openvino_session(
                path, run.hint, runtime.threads, streams=concurrency, profile=profile
            )
        opts = with_provider(runtime, run.provider)
        if concurrency > 1:
            opts = dataclasses.replace(opts, threads=split_threads(runtime, concurrency))
        if profile:  # onnxruntime_perf_test -p
            folder = tempfile.mkdtemp(prefix="cnnbench-prof-")
            opts = dataclasses.replace(opts, profile_prefix=os.path.join(folder, "ort"))
        return create_session(path, opts)
    except InferError as e:
        raise BenchError(str(e)) from e


def ran_precision(session: Session, declared: str) -> str:
    """The precision that really runs: OpenVINO says it; ONNX Runtime runs the weights'."""
    precision = getattr(session, "precision", None)
    return precision() if callable(precision) else declared


def timed_session(path: str, run: RunConfig, runtime: RuntimeOptions) -> tuple[Session, float]:
    """(session, milliseconds to create it)."""
    t0 = time.perf_counter_ns()
    session = open_session(path, run, runtime)
    return session, (time.perf_counter_ns() - t0) / 1e6


def make_run(
    session: Session, input_name: str, array: np.ndarray, provider: Provider, device_id: int
) -> Callable[[], object]:
    if provider in GPU_PROVIDERS:
        return device_runner(session, input_name, array, device_id)
    return host_runner(session, input_name, array)


def host_runner(session: Session, input_name: str, array: np.ndarray) -> Callable[[], object]:
    """`session.run` with a numpy input: on a GPU this includes both host-device copies."""
    feed = {input_name: array}
    return lambda: session.run(None, feed)


def device_runner(
    session: Any, input_name: str, array: np.ndarray, device_id: int
) -> Callable[[], object]:
    """IO binding: the input copied to the GPU once, outputs left on the GPU, and a
    synchronise after each run, so the figure is the model alone (ONNX Runtime docs,
    "I/O Binding")."""
    import onnxruntime as ort

    binding = session.io_binding()
    value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", device_id)
    binding.bind_ortvalue_input(input_name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", device_id)
    binding.synchronize_inputs()  # the one host-to-device copy has landed before any run

    def run(keep_alive: object = value) -> None:  # the device buffer must outlive the binding
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return run


def is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, MemoryError) or any(m in text for m in OOM_MARKERS)
