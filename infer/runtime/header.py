"""An ONNX file's inputs, outputs and metadata, read from its protobuf without its weights.

`infer` reads them to decide how to decode (input size, channels, the spec's resize
policy) while ONNX Runtime is still building the session, so that the first batches
decode meanwhile. Only the fields that `resolve_input_format` reads are walked: the
graph's `input`, `output` and `initializer` names, and the model's `metadata_props`;
nodes and the weights' bytes are skipped by seeking past them, so a 100 MB model is read
in a few hundred small reads. It is a guess that the session then confirms (or
overrides): anything it cannot read gives None, and the caller waits for the session.

ONNX's field numbers (onnx/onnx.proto3): ModelProto graph 7, metadata_props 14;
GraphProto initializer 5, input 11, output 12; TensorProto name 8; ValueInfoProto name 1,
type 2; TypeProto tensor_type 1; Tensor elem_type 1, shape 2; TensorShapeProto dim 1;
Dimension dim_value 1, dim_param 2; StringStringEntryProto key 1, value 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Any

# ONNX TensorProto.DataType -> ONNX Runtime's type string (the ones models take or give)
_ELEM_TYPES = {
    1: "float",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    10: "float16",
    11: "double",
    16: "bfloat16",
}
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_MAX_FIELD = 1 << 26  # a name, a value info, a metadata entry: never near 64 MB


@dataclass(frozen=True)
class Arg:
    """One graph input or output, as ONNX Runtime's NodeArg shows it: name, shape (ints,
    or names/None for dynamic dimensions), type string. Also what the OpenVINO session
    reports (openvino_runner.py)."""

    name: str
    shape: list
    type: str  # e.g. "tensor(float)"


@dataclass(frozen=True)
class ModelMeta:
    """ONNX Runtime's ModelMetadata, the part cnnbench reads."""

    custom_metadata_map: dict[str, str]


@dataclass
class GraphView:
    """The part of an InferenceSession's API that `resolve_input_format` reads."""

    inputs: list[Arg]
    outputs: list[Arg]
    metadata: dict[str, str]

    def get_inputs(self) -> list[Arg]:
        return self.inputs

    def get_outputs(self) -> list[Arg]:
        return self.outputs

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(self.metadata)


class _Malformed(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field, wire type, value) of a message held in memory: ints, or bytes."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _BYTES:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire in (_FIXED64, _FIXED32):
            step = 8 if wire == _FIXED64 else 4
            value, pos = data[pos : pos + step], pos + step
        else:
            raise _Malformed(f"wire type {wire}")
        if pos > len(data):
            raise _Malformed("truncated field")
        out.append((field, wire, value))
    return out


def _read_varint(f: IO[bytes]) -> int | None:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            if shift:
                raise _Malformed("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _Malformed("varint too long")


def _walk(f: IO[bytes], start: int, end: int, wanted: set[int]) -> list[tuple[int, int, int]]:
    """(field, offset, size) of the length-delimited fields in `wanted` of the message
    between `start` and `end`; every other field is skipped by seeking past it."""
    out = []
    f.seek(start)
    while f.tell() < end:
        key = _read_varint(f)
        if key is None:
            raise _Malformed("truncated message")
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _read_varint(f)
            continue
        if wire in (_FIXED64, _FIXED32):
            f.seek(8 if wire == _FIXED64 else 4, os.SEEK_CUR)
            continue
        size = _read_varint(f) if wire == _BYTES else None
        if size is None:
            raise _Malformed(f"wire type {wire}")
        here = f.tell()
        if field in wanted:
            out.append((field, here, size))
        f.seek(here + size)
    if f.tell() != end:
        raise _Malformed("a field runs past the message's end")
    return out


def _read_at(f: IO[bytes], offset: int, size: int) -> bytes:
    if size > _MAX_FIELD:
        raise _Malformed(f"a {size}-byte field where a small one was expected")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise _Malformed("truncated field")
    return data


def _arg(data: bytes) -> Arg:
    name, type_bytes = "", b""
    for field, _, value in _fields(data):
        if field == 1:
            name = value.decode()
        elif field == 2:
            type_bytes = value
    tensor = next((v for k, _, v in _fields(type_bytes) if k == 1), None)
    if tensor is None:
        raise _Malformed(f"{name} is not a tensor")
    elem, dims = 0, []
    for field, _, value in _fields(tensor):
        if field == 1:
            elem = value
        elif field == 2:
            for k, _, dim in _fields(value):
                if k == 1:
                    dims.append(_dim(dim))
    return Arg(name, dims, f"tensor({_ELEM_TYPES.get(elem, f'type {elem}')})")


def _dim(data: bytes) -> int | str | None:
    for field, _, value in _fields(data):
        if field == 1:
            return value
        if field == 2:
            return value.decode() or None
    return None


def read_graph_view(path: str) -> GraphView | None:
    """The inputs (weights left out, as ONNX Runtime lists them), outputs and metadata of
    the ONNX file at `path`; None when it cannot be read this way (ONNX Runtime then says
    what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            return _read(f, os.fstat(f.fileno()).st_size)
    except (OSError, UnicodeDecodeError, _Malformed):
        return None


def _read(f: IO[bytes], size: int) -> GraphView:
    top = _walk(f, 0, size, {7, 14})
    graphs = [(offset, n) for field, offset, n in top if field == 7]
    if len(graphs) != 1:
        raise _Malformed("not one graph")
    metadata = {}
    for _, offset, n in (t for t in top if t[0] == 14):
        pairs = {k: v.decode() for k, _, v in _fields(_read_at(f, offset, n))}
        metadata[pairs.get(1, "")] = pairs.get(2, "")
    offset, n = graphs[0]
    parts = _walk(f, offset, offset + n, {5, 11, 12})
    weights: set[str] = set()
    for _, at, length in (p for p in parts if p[0] == 5):
        names = _walk(f, at, at + length, {8})
        weights.update(_read_at(f, o, m).decode() for _, o, m in names)
    inputs = [_arg(_read_at(f, o, m)) for k, o, m in parts if k == 11]
    outputs = [_arg(_read_at(f, o, m)) for k, o, m in parts if k == 12]
    if not outputs:
        raise _Malformed("no outputs")
    return GraphView([a for a in inputs if a.name not in weights], outputs, metadata)
