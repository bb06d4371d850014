"""The machine's facts, recorded with every result: CPU, GPU, versions, command line."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from cnnbench import __version__
from cnnbench.bench.results import Machine
from cnnbench.bench.runners import openvino_version
from cnnbench.cpu import cpu_model


def machine_facts() -> Machine:
    import onnxruntime as ort

    return Machine(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        load_average=load_average(),
        gpus=gpu_facts(),
        platform=platform.platform(),
        python=platform.python_version(),
        onnxruntime=ort.__version__,
        openvino=openvino_version(),
        available_providers=ort.get_available_providers(),
        cnnbench=__version__,
        command=" ".join(sys.argv),
    )


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages when the run started: other processes at work."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def gpu_facts() -> list[dict[str, str]]:
    """Name, driver and memory of each NVIDIA GPU, from nvidia-smi; [] when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        out = subprocess.run(
            [smi, query, "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(",", 2))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    return gpus
