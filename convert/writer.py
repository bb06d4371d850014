"""Atomic writes: everything goes to a hidden staging folder beside the output and is
renamed into place only once verified; models past protobuf's 2 GB go to external data."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cnnbench.convert.errors import ConvertError

PROTO_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB cap on one message, less room for the graph
DATA_SUFFIX = ".data"


def check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConvertError(f"cannot write {path}: it is a folder; give a file name ending .onnx")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConvertError(
            f"cannot write {path}: folder {folder} does not exist or is not writable; "
            "choose another output path"
        )


def weight_bytes(model: Any) -> int:
    """Bytes of initializer data held in the ModelProto."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) for t in model.graph.initializer)


def needs_external(model: Any, forced: bool | None) -> bool:
    return weight_bytes(model) > PROTO_LIMIT if forced is None else forced


def save_model(model: Any, path: str, external: bool) -> None:
    """`path`, and with `external` its weights in `path + '.data'` beside it."""
    import onnx

    if not external:
        onnx.save(model, path)
        return
    onnx.save(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=os.path.basename(path) + DATA_SUFFIX,
        size_threshold=1024,
    )


@contextmanager
def staged(output: str) -> Iterator[str]:
    """Yield a path named like `output` in a staging folder beside it (scratch files may go
    in the same folder). On success move it, and its external data, into place; on any
    error leave nothing behind."""
    stage = tempfile.mkdtemp(prefix=".cnnbench-", dir=os.path.dirname(os.path.abspath(output)))
    path = os.path.join(stage, os.path.basename(output))
    try:
        yield path
        if os.path.exists(path + DATA_SUFFIX):
            shutil.copymode(path, path + DATA_SUFFIX)  # onnx writes it owner-only
            os.replace(path + DATA_SUFFIX, output + DATA_SUFFIX)
        os.replace(path, output)
    finally:
        shutil.rmtree(stage)
