"""OpenVINO as a runtime: an ONNX model compiled by the `openvino` package (not ONNX
Runtime's OpenVINO execution provider), behind the few session methods the pipeline and
`bench` use (`get_inputs`, `get_outputs`, `get_modelmeta`, `get_providers`, `run`).

The model is compiled once per input shape (static shapes are OpenVINO's fast path, as in
benchmark_app), and the precision that really runs is read back from the compiled model
(`INFERENCE_PRECISION_HINT`), never assumed from the hint that was asked.
"""

from __future__ import annotations

import enum
import os
import threading
from typing import Any

import numpy as np

from cnnbench.files import missing_weights, model_not_found, not_onnx
from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.runtime.header import Arg, ModelMeta
from cnnbench.infer.runtime.session import quiet_stderr

OPENVINO_NAME = "OpenVINO"  # what `get_providers()` answers, beside ORT's EP names
OPENVINO_HINT = "pip install 'cnnbench[openvino]'"
MAX_COMPILED_SHAPES = 4  # a sweep visits a few batch sizes; infer two (full and last)

_OV_TYPES = {"f32": "tensor(float)", "u8": "tensor(uint8)", "f16": "tensor(float16)"}
# what ov.Type names mean in the rows' precision column
_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


class PrecisionHint(enum.StrEnum):
    AUTO = "auto"  # OpenVINO's default for the device (bf16 where the CPU has it natively)
    F32 = "f32"
    BF16 = "bf16"


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise InferError(f"openvino is not installed ({e}); {OPENVINO_HINT}") from e
    return openvino


def _graph_io(model: Any) -> tuple[list[Arg], list[Arg], dict[str, str]]:
    """Inputs, outputs and metadata of the model OpenVINO read, as ORT would report them
    (the ONNX metadata sits in its rt_info under 'framework'). Read from OpenVINO's model,
    not by parsing the file a second time: onnx.load of a 100 MB file costs a second or
    more at start-up."""

    def arg(port: Any) -> Arg:
        dims = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        kind = port.get_element_type().get_type_name()
        return Arg(port.get_any_name(), dims, _OV_TYPES.get(kind, f"openvino type {kind}"))

    meta: dict[str, str] = {}
    if model.has_rt_info(["framework"]):
        framework = model.get_rt_info(["framework"]).astype(dict)
        meta = {key: value.astype(str) for key, value in framework.items()}
    return [arg(p) for p in model.inputs], [arg(p) for p in model.outputs], meta


def openvino_reason(e: BaseException) -> str:
    """OpenVINO's message without the lines that name its own source files ("Exception
    from src/inference/src/cpp/core.cpp:84:"), which come first."""
    lines = [line.strip() for line in str(e).splitlines()]
    told = [line for line in lines if line and not line.startswith("Exception from ")]
    return told[0] if told else first_line(e)


class OpenVINOSession:
    """One ONNX model on one OpenVINO device, compiled per input shape on first use.

    `streams` > 1 compiles for that many requests in flight (benchmark_app's -nstreams);
    `run` is then safe from that many threads at once, each with its own infer request.
    """

    def __init__(
        self,
        path: str,
        precision_hint: PrecisionHint = PrecisionHint.AUTO,
        threads: int = 0,
        streams: int = 1,
        device: str = "CPU",
        profile: bool = False,
        batch: int = 1,
    ) -> None:
        ov = import_openvino()
        self.path, self.device, self.streams = path, device, streams
        self.core = ov.Core()
        try:
            with quiet_stderr():  # its TensorFlow frontend logs each failed parse
                self.model = self.core.read_model(path)
        except Exception as e:
            why = not_onnx(path) or missing_weights(path) or openvino_reason(e)
            raise InferError(f"cannot load {path} with OpenVINO: {why}") from e
        self._inputs, self._outputs, self._meta = _graph_io(self.model)
        self.config: dict[str, str] = {
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": str(streams),
        }
        if precision_hint is not PrecisionHint.AUTO:
            self.config["INFERENCE_PRECISION_HINT"] = precision_hint.value
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = str(threads)
        if profile:
            self.config["PERF_COUNT"] = "YES"
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        # fail here, not mid-run; at the batch size that will run, not one more compile
        self.compile(self._static_shape(self._inputs[0].shape, batch))

    @staticmethod
    def _static_shape(shape: list, batch: int = 1) -> tuple[int, ...]:
        """The input shape with its dynamic dimensions fixed: the batch, else 1."""
        fixed = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
        if not (isinstance(shape[0], int) and shape[0] > 0):
            fixed[0] = batch
        return tuple(fixed)

    # ---- the session interface the pipeline uses
    def get_inputs(self) -> list[Arg]:
        return self._inputs

    def get_outputs(self) -> list[Arg]:
        return self._outputs

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(self._meta)

    def get_providers(self) -> list[str]:
        return [OPENVINO_NAME]

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = next(iter(feed.values()))
        request = self.request(x.shape)
        # no copy of the input into the request, none of the outputs into a dict: the one
        # copy made is of the output this call returns
        request.infer({0: np.ascontiguousarray(x)}, share_inputs=True, share_outputs=True)
        return [request.get_output_tensor(0).data.copy()]

    # ---- OpenVINO's own
    def compile(self, shape: tuple[int, ...]) -> Any:
        """The compiled model for this input shape (compiled once, the oldest dropped)."""
        compiled = self._compiled.get(shape)
        if compiled is not None:
            return compiled
        with self._lock:
            if shape in self._compiled:
                return self._compiled[shape]
            model = self.model.clone()
            try:
                model.reshape({model.inputs[0].any_name: list(shape)})
                compiled = self.core.compile_model(model, self.device, self.config)
            except Exception as e:
                raise InferError(
                    f"cannot compile {self.path} for OpenVINO {self.device} at input shape "
                    f"{list(shape)}: {openvino_reason(e)}"
                ) from e
            if len(self._compiled) >= MAX_COMPILED_SHAPES:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[shape] = compiled
            return compiled

    def request(self, shape: tuple[int, ...]) -> Any:
        """This thread's infer request for `shape` (one per thread: requests are not
        thread-safe, and one per thread is how streams run side by side)."""
        compiled = self.compile(tuple(shape))
        requests = self._local.__dict__.setdefault("requests", {})
        req = requests.get(id(compiled))
        if req is None or req[0] is not compiled:
            req = requests[id(compiled)] = (compiled, compiled.create_infer_request())
        return req[1]

    def precision(self) -> str:
        """The precision the compiled model really runs: fp32, bf16, fp16 ..."""
        compiled = next(iter(self._compiled.values()))
        value = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        name = value.get_type_name() if hasattr(value, "get_type_name") else str(value)
        return _PRECISIONS.get(name.lower(), name.lower())

    def execution_devices(self) -> list[str]:
        compiled = next(iter(self._compiled.values()))
        return list(compiled.get_property("EXECUTION_DEVICES"))

    def profiling_info(self, shape: tuple[int, ...]) -> list:
        """Per-node counters of this thread's last run at `shape` (needs profile=True)."""
        return self.request(shape).get_profiling_info()


def create_openvino_session(
    path: str,
    precision_hint: str = "auto",
    threads: int = 0,
    streams: int = 1,
    profile: bool = False,
    batch: int = 1,
) -> OpenVINOSession:
    if not os.path.isfile(path):
        raise InferError(model_not_found(path))
    hint = PrecisionHint(precision_hint)
    return OpenVINOSession(path, hint, threads, streams, profile=profile, batch=batch)
