"""The architecture zoo: every registry entry built with random weights, converted once
and cached, so `bench --arch all` compares the architectures in one table."""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from cnnbench.bench.errors import BenchError
from cnnbench.files import atomic_path

ZOO_SEED = 0
ZOO_CLASSES = 1000  # as the registry's reference parameter counts: an ImageNet head for all


@dataclass(frozen=True)
class ZooModel:
    name: str
    onnx_path: str
    keras_path: str


def default_cache_dir() -> str:
    return os.environ.get("CNNBENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnbench"
    )


def parse_archs(text: str) -> tuple[str, ...]:
    """'all' or comma-separated registry names; an unknown one lists the known."""
    from cnnbench.training.registry import ARCHITECTURES

    if text.strip().lower() == "all":
        return tuple(ARCHITECTURES)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown or not names:
        known = ", ".join(ARCHITECTURES)
        raise BenchError(
            f"unknown architecture {', '.join(unknown) or text!r}; known: all, {known}"
        )
    return names


def source_digest(spec: object) -> str:
    """Changes whenever the registry entry or a training or convert source changes: a
    cached model is never an older version of the architecture or of its export."""
    import cnnbench.convert
    import cnnbench.training

    digest = hashlib.sha256(f"{spec!r} seed={ZOO_SEED}".encode())
    for package in (cnnbench.training, cnnbench.convert):
        folder = package.__path__[0]
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


def zoo_model(name: str, cache_dir: str, log: Callable[[str], None]) -> ZooModel:
    """The cached ONNX of `name` with random weights (seed 0), converting it when missing."""
    from cnnbench.training.registry import get_arch

    spec = get_arch(name)
    classes = ZOO_CLASSES
    stem = f"{name}-{spec.input_size}x{spec.channels}-{classes}c-{source_digest(spec)}"
    model = ZooModel(
        name, os.path.join(cache_dir, f"{stem}.onnx"), os.path.join(cache_dir, f"{stem}.keras")
    )
    if os.path.isfile(model.onnx_path) and os.path.isfile(model.keras_path):
        return model
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot create cache folder {cache_dir}: {e.strerror}") from e
    log(f"zoo: building {name} ({classes} classes, random weights) and converting it ...")
    _convert(name, classes, model)
    return model


def _convert(name: str, classes: int, model: ZooModel) -> None:
    import keras

    from cnnbench.convert.errors import ConvertError
    from cnnbench.convert.export import ConvertConfig, export_onnx
    from cnnbench.training.errors import TrainError
    from cnnbench.training.registry import build

    keras.utils.set_random_seed(ZOO_SEED)
    try:
        with atomic_path(model.keras_path, suffix=".keras") as tmp:
            build(name, classes).save(tmp)
        keras.backend.clear_session()
        gc.collect()
        cfg = ConvertConfig(
            model=model.keras_path,
            output=model.onnx_path,
            architecture=name,
            dataset="random weights (cnnbench bench zoo)",
        )
        export_onnx(cfg)
    except (TrainError, ConvertError) as e:
        raise BenchError(f"zoo: cannot prepare {name}: {e}") from e
    finally:
        keras.backend.clear_session()
        gc.collect()
