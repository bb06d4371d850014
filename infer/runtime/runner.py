"""Running batches through a session: plain `run` on CPU, IO binding with fixed shapes on GPU.

On CUDA and TensorRT every batch has the same shape (the last one is padded), so cuDNN's
algorithm search and TensorRT's engine build happen once, during warm-up; the uint8
batch is copied into one preallocated device buffer (4x fewer bytes than float32), and
`run_with_iobinding` releases the GIL like `run` does.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cnnbench.infer.errors import InferError, first_line
from cnnbench.infer.runtime.preprocess import InputFormat, shape_text
from cnnbench.infer.runtime.scores import Scorer, class_count
from cnnbench.infer.runtime.session import Provider, Session

DEFAULT_BATCH_SIZE = {
    Provider.CPU: 32,
    Provider.CUDA: 64,
    Provider.TENSORRT: 64,
    Provider.OPENVINO: 32,
}
WARMUP_RUNS = 2


def make_scorer(fmt: InputFormat) -> Scorer:
    return Scorer(fmt.scores, known_probabilities=fmt.spec is not None)


def model_error(e: Exception, x: np.ndarray) -> InferError:
    """ONNX Runtime's failure on a batch, as one line."""
    return InferError(
        f"ONNX Runtime failed on a batch shaped {shape_text(list(x.shape))}: {first_line(e)}"
    )


class Runner(Protocol):
    """What the pipelines call on a runner (`PlainRunner` or `BoundRunner`)."""

    fmt: InputFormat
    scorer: Scorer

    def run(self, buf: np.ndarray, n: int) -> np.ndarray: ...

    def raw(self, buf: np.ndarray, n: int) -> np.ndarray: ...

    def warm_up(self, buf: np.ndarray) -> None: ...


class PlainRunner:
    """`session.run` on exactly the rows given (CPU: no padding, no copies), or on the
    whole padded buffer when the model's batch dimension is fixed or `pad` asks for it
    (OpenVINO compiles once per input shape: a short last batch would compile again)."""

    def __init__(self, session: Session, fmt: InputFormat, pad: bool = False) -> None:
        self.session, self.fmt, self.pad = session, fmt, pad
        self.output_name = fmt.output_name or session.get_outputs()[0].name
        self.scorer = make_scorer(fmt)

    def run(self, buf: np.ndarray, n: int) -> np.ndarray:
        """Scores (probabilities) for the first `n` images of the uint8 NHWC batch `buf`."""
        return self.scorer(self.raw(buf, n))

    def raw(self, buf: np.ndarray, n: int) -> np.ndarray:
        """The model's output for the first `n` images, as it is."""
        rows = self.fmt.batch or (len(buf) if self.pad else n)
        x = self.fmt.to_model_input(buf[:rows])
        try:
            out = self.session.run([self.output_name], {self.fmt.input_name: x})[0]
        except Exception as e:  # ORT raises its own Fail/InvalidArgument types
            raise model_error(e, x) from e
        return out[:n]

    def warm_up(self, buf: np.ndarray) -> None:
        """Nothing to do on CPU: the first run costs little more than the others."""


class BoundRunner:
    """IO binding: the full (padded) batch goes into one preallocated device buffer."""

    def __init__(
        self, session: Any, fmt: InputFormat, device: str = "cuda", device_id: int = 0
    ) -> None:
        import onnxruntime as ort

        self.session, self.fmt, self.ort = session, fmt, ort
        self.device, self.device_id = device, device_id
        self.output_name = fmt.output_name or session.get_outputs()[0].name
        self.scorer = make_scorer(fmt)
        self.binding = session.io_binding()
        self.input: Any = None  # an onnxruntime.OrtValue on the device, made on the first batch

    def run(self, buf: np.ndarray, n: int) -> np.ndarray:
        return self.scorer(self.raw(buf, n))

    def raw(self, buf: np.ndarray, n: int) -> np.ndarray:
        x = np.ascontiguousarray(self.fmt.to_model_input(buf))
        if self.input is None:
            self.input = self.ort.OrtValue.ortvalue_from_shape_and_type(
                x.shape, x.dtype, self.device, self.device_id
            )
            self.binding.bind_ortvalue_input(self.fmt.input_name, self.input)
        self.input.update_inplace(x)
        # A copy from pageable host memory may still be in flight when cudaMemcpy returns,
        # and the provider runs on its own stream: wait for it (ORT's SynchronizeBoundInputs).
        self.binding.synchronize_inputs()
        self.binding.bind_output(self.output_name, "cpu")
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception as e:  # ORT raises its own Fail/InvalidArgument types
            raise model_error(e, x) from e
        return self.binding.copy_outputs_to_cpu()[0][:n]

    def warm_up(self, buf: np.ndarray) -> None:
        """Build kernels/engines for the one batch shape before anything is timed."""
        zeros = np.zeros_like(buf)
        for _ in range(WARMUP_RUNS):
            self.raw(zeros, len(zeros))


def check_output(runner: Runner, buf: np.ndarray) -> None:
    """Run one batch of black images before anything is written: the model must run on
    what will be fed, and give one score per label."""
    fmt = runner.fmt
    out = runner.raw(np.zeros_like(buf), 1)  # the whole buffer: IO binding keeps its shape
    if class_count(out) != len(fmt.labels):
        what = f"{len(fmt.labels)} labels" if out.ndim == 2 else "one row of scores per image"
        raise InferError(
            f"model output {fmt.output_name} gives shape {shape_text(list(out.shape))} for one "
            f"image, but there are {what}: check --labels or --output-name"
        )


def make_runner(session: Session, fmt: InputFormat, provider: Provider, device_id: int) -> Runner:
    if provider in (Provider.CPU, Provider.OPENVINO):  # OpenVINO: an OpenVINOSession
        return PlainRunner(session, fmt, pad=provider is Provider.OPENVINO)
    return BoundRunner(session, fmt, "cuda", device_id)
