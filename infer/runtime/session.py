"""ONNX Runtime sessions: provider choice that trusts only what actually loaded."""

from __future__ import annotations

import contextlib
import ctypes
import enum
import importlib.metadata
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from cnnbench import native_logs
from cnnbench.files import missing_weights, model_not_found, not_onnx
from cnnbench.infer.errors import InferError, first_line

if TYPE_CHECKING:
    import numpy as np


class TensorInfo(Protocol):
    """A model input or output as ONNX Runtime reports it (onnxruntime.NodeArg)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> list[Any]: ...  # ints, or names/None for dynamic dimensions

    @property
    def type(self) -> str: ...  # e.g. "tensor(float)"


class ModelGraph(Protocol):
    """A model's inputs, outputs and metadata: a session, or `bench inspect`'s view of the
    file."""

    def get_inputs(self) -> Sequence[TensorInfo]: ...

    def get_outputs(self) -> Sequence[TensorInfo]: ...

    def get_modelmeta(self) -> Any: ...


class Session(ModelGraph, Protocol):
    """What cnnbench uses of a session: an onnxruntime.InferenceSession (untyped: Any
    fits) or an `OpenVINOSession`. ONNX Runtime's IO binding is used through Any."""

    def get_providers(self) -> list[str]: ...

    def run(
        self, output_names: list[str] | None, input_feed: dict[str, np.ndarray], /
    ) -> list[np.ndarray]: ...


TENSORRT_HINT = (
    "install TensorRT 10 (e.g. pip install tensorrt) and put its libraries on LD_LIBRARY_PATH"
)
CUDA_HINT = "pip install 'cnnbench[cuda]' (CUDA 13 and cuDNN 9 from pip; needs an NVIDIA driver)"


class Provider(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"  # the openvino package, not ORT's EP (infer/runtime/openvino_runner.py)


ORT_NAMES = {
    Provider.CPU: "CPUExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.TENSORRT: "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a model: the options `infer` and `bench` share."""

    provider: Provider = Provider.AUTO
    device_id: int = 0
    threads: int = 0  # intra-op threads; 0 lets ONNX Runtime use every core
    trt_cache: str | None = None  # TensorRT engine + timing cache folder (None: no cache)
    trt_fp16: bool = False  # let TensorRT pick fp16 kernels
    # ORT's idle intra-op threads spin waiting for work; off, they leave the cores to
    # other threads (infer's decoders) between runs.
    spinning: bool = True
    precision_hint: str = "auto"  # OpenVINO: f32, bf16 or auto (the device's default)
    streams: int = 1  # OpenVINO: infer requests run at once (compiled for that many streams)
    first_batch: int = 1  # OpenVINO: the batch size compiled when the session opens
    # ONNX Runtime's profiler on, its JSON written with this file prefix (bench --profile)
    profile_prefix: str | None = None


def check_ort_install() -> str | None:
    """A warning when both ORT distributions are installed (they overwrite each other)."""
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.distribution(dist)
            found.append(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(found) == 2:
        return (
            "both onnxruntime and onnxruntime-gpu are installed and overwrite each other's "
            "files; fix with: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu"
        )
    return None


def import_ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as e:
        hint = check_ort_install() or "pip install onnxruntime-gpu (or onnxruntime)"
        raise InferError(f"cannot import onnxruntime ({e}); {hint}") from e
    return onnxruntime


@contextlib.contextmanager
def quiet_stderr() -> Iterator[list[str]]:
    """Keep C++-level stderr (ORT's loud provider-load errors) off the terminal for the
    block; the list it yields holds what was written, for a one-line reason.

    ORT writes to file descriptor 2 whatever `sys.stderr` is, so the descriptor is what
    gets redirected; its Python layer print()s the provider fallback notice on stdout, so
    that is captured too. Remove when ONNX Runtime reports provider-load failures only
    through its logger (`log_severity_level`) or an exception.

    The redirection is process-wide: what other threads write meanwhile (the decoders
    of the first batches, while the session builds on a thread) lands here too, so with
    CNNBENCH_NATIVE_LOGS=1 it is all written to stderr afterwards."""
    captured: list[str] = []
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield captured
        return
    python_text = io.StringIO()  # ORT's Python layer prints its EP fallback notice
    with (
        tempfile.TemporaryFile() as log,
        contextlib.redirect_stdout(python_text),
        contextlib.redirect_stderr(python_text),
    ):
        try:
            os.dup2(log.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            native = log.read()
            captured.extend(python_text.getvalue().splitlines())
            captured.extend(native.decode("utf-8", "replace").splitlines())
            if native_logs.asked_for():  # and other threads' lines (decoders') are in it
                os.write(2, native)


def load_error(lines: list[str]) -> str | None:
    """The reason in ORT's provider-load log, e.g. 'libcublasLt.so.13: cannot open
    shared object file: No such file or directory'."""
    for line in lines:
        if "Please install TensorRT libraries" in line:
            return f"TensorRT libraries not found: {TENSORRT_HINT}"
    for line in lines:
        if "with error: " in line:
            return line.split("with error: ", 1)[1].strip()
    errors = [line for line in lines if "[E:onnxruntime" in line]
    return errors[0].rsplit("] ", 1)[-1].strip() if errors else None


def _provider_entry(provider: Provider, opts: RuntimeOptions) -> tuple[str, dict[str, str]]:
    name = ORT_NAMES[provider]
    if provider is Provider.CUDA:
        return name, {"device_id": str(opts.device_id), "cudnn_conv_algo_search": "HEURISTIC"}
    if provider is Provider.TENSORRT:
        # Booleans as "1"/"0": the one spelling every ORT version's option parser accepts.
        trt = {"device_id": str(opts.device_id), "trt_fp16_enable": str(int(opts.trt_fp16))}
        if opts.trt_cache:
            trt |= {
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": opts.trt_cache,
                "trt_timing_cache_enable": "1",
                "trt_timing_cache_path": opts.trt_cache,
            }
        return name, trt
    return name, {}


_preloaded = False


def preload_gpu_libraries() -> None:
    """Load CUDA and cuDNN from pip's `nvidia` packages, once, before the first GPU session.

    The CUDA provider's library has no RPATH to site-packages, so without this (or an
    `import torch` first, or LD_LIBRARY_PATH) `pip install 'cnnbench[cuda]'` alone never
    loads CUDA (ONNX Runtime docs, CUDA provider, "Preload DLLs", 1.21 and later). It
    print()s what it cannot load instead of raising: that stays off the terminal, and the
    session's own load log gives the reason when CUDA then fails.
    """
    global _preloaded
    if _preloaded:
        return
    _preloaded = True
    preload = getattr(import_ort(), "preload_dlls", None)
    if preload is None:  # onnxruntime < 1.21
        return
    with quiet_stderr(), contextlib.suppress(OSError, RuntimeError):
        preload()


NOT_PROTOBUF = (
    "it is not an ONNX model (ONNX Runtime cannot parse it): give an .onnx file, or export "
    "one (cnnbench convert for Keras, torch.onnx.export for PyTorch)"
)


def _try_session(
    model_path: str, provider: Provider, opts: RuntimeOptions
) -> tuple[Session, list[str]]:
    """A session and what ORT logged while loading its providers."""
    ort = import_ort()
    if provider is not Provider.CPU:
        preload_gpu_libraries()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if opts.threads:
        so.intra_op_num_threads = opts.threads
    if not opts.spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if opts.profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = opts.profile_prefix
    providers = [_provider_entry(provider, opts)]
    if provider is Provider.TENSORRT:
        if opts.trt_cache:
            os.makedirs(opts.trt_cache, exist_ok=True)
        providers.append(_provider_entry(Provider.CUDA, opts))
    if provider is not Provider.CPU:
        providers.append(_provider_entry(Provider.CPU, opts))
    try:
        with quiet_stderr() as log:
            session = ort.InferenceSession(model_path, so, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        if why := not_onnx(model_path) or missing_weights(model_path):
            raise InferError(f"cannot load {model_path}: {why}") from e
        if type(e).__name__ == "InvalidProtobuf":  # ORT's type for bytes that are not ONNX
            raise InferError(f"cannot load {model_path}: {NOT_PROTOBUF}") from e
        raise InferError(f"cannot load {model_path} with ONNX Runtime: {first_line(e)}") from e
    return session, log


def create_session(model_path: str, opts: RuntimeOptions) -> Session:
    """A session on the asked provider; `auto` tries CUDA and falls back to CPU.

    ONNX Runtime lists CUDA as available whenever the GPU wheel is installed and falls back
    to CPU silently, so the providers the session reports are the only truth.
    """
    return choose_session(model_path, opts)[0]


def choose_session(model_path: str, opts: RuntimeOptions) -> tuple[Session, str]:
    """`create_session`, plus one line saying which provider was chosen and why."""
    if os.path.isdir(model_path):
        raise InferError(f"cannot load {model_path}: {not_onnx(model_path)}")
    if not os.path.isfile(model_path):
        raise InferError(model_not_found(model_path))
    if opts.provider is Provider.OPENVINO:
        from cnnbench.infer.runtime.openvino_runner import create_openvino_session

        ov = create_openvino_session(
            model_path, opts.precision_hint, opts.threads, opts.streams, batch=opts.first_batch
        )
        return ov, f"provider openvino ({ov.precision()})"
    if opts.provider is Provider.AUTO:
        ort = import_ort()
        # Ask the driver first: a CUDA session on a machine without a GPU is built in full
        # (graph optimisation included) before ONNX Runtime falls back to the CPU.
        no_gpu = gpu_missing()
        if no_gpu is not None:
            why = no_gpu
        elif ORT_NAMES[Provider.CUDA] in ort.get_available_providers():
            session, log = _try_session(model_path, Provider.CUDA, opts)
            if ORT_NAMES[Provider.CUDA] in session.get_providers():
                return session, f"provider cuda (device {opts.device_id}), chosen by auto"
            why = _why_not(Provider.CUDA, log)
        else:
            why = f"this onnxruntime build has no {ORT_NAMES[Provider.CUDA]}"
        session, _ = _try_session(model_path, Provider.CPU, opts)
        return session, f"provider cpu, chosen by auto (CUDA not used: {why})"
    session, log = _try_session(model_path, opts.provider, opts)
    wanted = ORT_NAMES[opts.provider]
    if wanted not in session.get_providers():
        raise InferError(
            f"provider {opts.provider.value} did not load ({_why_not(opts.provider, log)}); "
            f"use --provider cpu, or install GPU support: {CUDA_HINT}"
        )
    return session, f"provider {opts.provider.value}"


def _why_not(provider: Provider, log: list[str] | None = None) -> str:
    """Why a GPU provider did not load: the machine's reason first (no driver, no GPU),
    then what ONNX Runtime's loader missed."""
    ort = import_ort()
    if ORT_NAMES[provider] not in ort.get_available_providers():
        return f"this onnxruntime build has no {ORT_NAMES[provider]}"
    detail = load_error(log or [])
    machine = gpu_missing()
    if machine and detail:
        return f"{machine}; onnxruntime: {detail}"
    return machine or detail or "no usable GPU, driver, or CUDA/cuDNN libraries were found"


DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
CUDA_SUCCESS = 0


def gpu_missing() -> str | None:
    """Why this machine cannot run CUDA whatever is installed, in the machine's terms (no
    NVIDIA driver, a driver that fails to start, no GPU); None when the driver sees a GPU.

    Asked of the driver library itself (the CUDA driver API: cuInit, cuDeviceGetCount),
    since ONNX Runtime's own log names only the first CUDA library its loader missed."""
    try:
        driver = ctypes.CDLL(DRIVER_LIBRARY)
    except OSError:
        return f"no NVIDIA driver: {DRIVER_LIBRARY} not found"
    status = driver.cuInit(0)
    if status != CUDA_SUCCESS:
        return f"the NVIDIA driver did not start: cuInit returned CUDA error {status}"
    count = ctypes.c_int(0)
    status = driver.cuDeviceGetCount(ctypes.byref(count))
    if status != CUDA_SUCCESS or count.value == 0:
        return "no NVIDIA GPU: the driver sees none"
    return None


def active_provider(session: Session) -> Provider:
    first = session.get_providers()[0]
    if first == "OpenVINO":
        return Provider.OPENVINO
    return next(p for p, name in ORT_NAMES.items() if name == first)
