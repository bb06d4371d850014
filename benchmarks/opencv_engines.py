"""Which ONNX files each OpenCV version loads, engine by engine (docs/convert.md's table).

OpenCV is a runtime users carry cnnbench's exports into; what it loads is a fact of its
version, not of cnnbench. This runs in a small venv with only numpy and one
opencv-python-headless version, on files `cnnbench convert` wrote:

    for v in 4.10.0.84 4.13.0.92 5.0.0.93 5.1.0.95; do
      .uv/bin/uv venv -q /tmp/cv-$v && VIRTUAL_ENV=/tmp/cv-$v .uv/bin/uv pip install -q \\
        numpy opencv-python-headless==$v && /tmp/cv-$v/bin/python benchmarks/opencv_engines.py \\
        digits-fp32.onnx digits-fp16.onnx digits-int8.onnx
    done
"""

from __future__ import annotations

import sys

import cv2
import numpy as np


def engines() -> list[tuple[str, int | None]]:
    """OpenCV's own engine constants; OpenCV 4 has one importer and no choice."""
    names = sorted(a for a in dir(cv2.dnn) if a.startswith("ENGINE_"))
    return [(a, getattr(cv2.dnn, a)) for a in names] or [("(no engine choice)", None)]


def outcome(path: str, engine: int | None) -> str:
    """'loads' when the file reads and one forward pass runs, else OpenCV's message."""
    try:
        net = cv2.dnn.readNetFromONNX(path, *([] if engine is None else [engine]))
        net.setInput(np.zeros((1, 28, 28, 1), np.uint8))
        net.forward()
    except cv2.error as e:
        return f"fails: {' '.join(e.err.split())} in {e.func}"
    return "loads"


def main(paths: list[str]) -> None:
    for path in paths:
        for name, engine in engines():
            print(f"OpenCV {cv2.__version__}\t{path}\t{name}\t{outcome(path, engine)}")


if __name__ == "__main__":
    main(sys.argv[1:])
