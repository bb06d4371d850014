"""Running batches through a session: plain `run` on CPU, IO binding with fixed shapes on GPU.

On CUDA and TensorRT every batch has the same shape (the last one is padded), so cuDNN's
algorithm search and TensorRT's engine build happen once, during warm-up; the uint8
batch is copied into one preallocated device buffer (4x fewer bytes than float32), and
`run_with_iobinding` releases the GIL like `run` does.
"""

from __future__ import annotations

import numpy as np

from cnnbench.infer.preprocess import InputFormat
from cnnbench.infer.session import Provider

DEFAULT_BATCH_SIZE = {
    Provider.CPU: 32,
    Provider.CUDA: 64,
    Provider.TENSORRT: 64,
    Provider.OPENVINO: 32,
}
WARMUP_RUNS = 2


class PlainRunner:
    """`session.run` on exactly the rows given (CPU: no padding, no copies)."""

    def __init__(self, session, fmt: InputFormat) -> None:
        self.session, self.fmt = session, fmt
        self.output_name = session.get_outputs()[0].name

    def run(self, buf: np.ndarray, n: int) -> np.ndarray:
        """Probabilities for the first `n` images of the uint8 NHWC batch `buf`."""
        x = self.fmt.to_model_input(buf[:n])
        return self.session.run([self.output_name], {self.fmt.input_name: x})[0]

    def warm_up(self, buf: np.ndarray) -> None:
        """Nothing to do on CPU: the first run costs little more than the others."""


class BoundRunner:
    """IO binding: the full (padded) batch goes into one preallocated device buffer."""

    def __init__(self, session, fmt: InputFormat, device: str = "cuda", device_id: int = 0):
        import onnxruntime as ort

        self.session, self.fmt, self.ort = session, fmt, ort
        self.device, self.device_id = device, device_id
        self.output_name = session.get_outputs()[0].name
        self.binding = session.io_binding()
        self.input = None  # OrtValue on the device, created on the first batch

    def run(self, buf: np.ndarray, n: int) -> np.ndarray:
        x = np.ascontiguousarray(self.fmt.to_model_input(buf))
        if self.input is None:
            self.input = self.ort.OrtValue.ortvalue_from_shape_and_type(
                x.shape, x.dtype, self.device, self.device_id
            )
            self.binding.bind_ortvalue_input(self.fmt.input_name, self.input)
        self.input.update_inplace(x)
        self.binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0][:n]

    def warm_up(self, buf: np.ndarray) -> None:
        """Build kernels/engines for the one batch shape before anything is timed."""
        zeros = np.zeros_like(buf)
        for _ in range(WARMUP_RUNS):
            self.run(zeros, len(zeros))


def make_runner(session, fmt: InputFormat, provider: Provider, device_id: int):
    if provider in (Provider.CPU, Provider.OPENVINO):  # OpenVINO: an OpenVINOSession
        return PlainRunner(session, fmt)
    return BoundRunner(session, fmt, "cuda", device_id)
