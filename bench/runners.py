"""Sessions and the calls that are timed: which providers really load, and how one run is
made on each (plain `session.run` on CPU; IO binding with the input already on the GPU)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from cnnbench.bench.errors import BenchError
from cnnbench.infer.errors import InferError
from cnnbench.infer.session import ORT_NAMES, Provider, RuntimeOptions, create_session

OOM_MARKERS = ("out of memory", "bad_alloc", "failed to allocate", "alloc_failed", "_alloc")


def with_provider(runtime: RuntimeOptions, provider: Provider) -> RuntimeOptions:
    return dataclasses.replace(runtime, provider=provider)


def candidate_providers(asked: tuple[Provider, ...] | None) -> tuple[Provider, ...]:
    """The asked providers, or every one this onnxruntime build lists."""
    if asked:
        return asked
    import onnxruntime as ort

    listed = set(ort.get_available_providers())
    return tuple(
        p for p in (Provider.CPU, Provider.CUDA, Provider.TENSORRT) if ORT_NAMES[p] in listed
    )


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


def timed_session(path: str, runtime: RuntimeOptions) -> tuple[object, float]:
    """(session, milliseconds to create it)."""
    t0 = time.perf_counter_ns()
    try:
        session = create_session(path, runtime)
    except InferError as e:
        raise BenchError(str(e)) from e
    return session, (time.perf_counter_ns() - t0) / 1e6


def host_runner(session, input_name: str, array: np.ndarray) -> Callable[[], object]:
    """`session.run` with a numpy input: on a GPU this includes both host-device copies."""
    feed = {input_name: array}
    return lambda: session.run(None, feed)


def device_runner(
    session, input_name: str, array: np.ndarray, device_id: int
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
