"""Atomic writes: everything goes to a hidden staging folder beside the output and is
renamed into place only once verified; models past protobuf's 2 GB go to external data."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from cnnbench import files
from cnnbench.convert.errors import ConvertError
from cnnbench.files import not_a_file, unwritable

PROTO_LIMIT = 2**31 - 2**26  # protobuf's 2 GiB cap on one message, less room for the graph
DATA_SUFFIX = ".data"


def check_writable(path: str) -> None:
    if why := unwritable(path):
        if os.path.isdir(path):
            why += "; give a file name ending .onnx"
        elif not not_a_file(path):
            why += "; choose another output path"
        raise ConvertError(f"cannot write {path}: {why}")


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


def staged(output: str) -> contextlib.AbstractContextManager[str]:
    """A path named like `output` in a hidden staging folder beside it (scratch files may go
    there too), moved into place with its external data once the block succeeds."""
    return files.staged(output, companions=(DATA_SUFFIX,))
