"""`cnnbench inspect`: what cnnbench reads from an ONNX file and what it will do with it.

The file is parsed with `onnx` (weights in external files are not read), and the same
`resolve_input_format` that `infer` uses runs on a view of the graph, so no ONNX Runtime
session is made: inspecting a large model takes the time of reading it once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cnnbench.bench.errors import BenchError
from cnnbench.errors import first_line
from cnnbench.files import model_not_found, not_onnx
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.contract import SPEC_KEY
from cnnbench.infer.runtime.header import Arg, GraphView
from cnnbench.infer.runtime.preprocess import (
    PRESET_NAMES,
    ForeignOptions,
    InputFormat,
    Layout,
    resolve_input_format,
    shape_text,
)


@dataclass
class Inspection:
    path: str
    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: list[Arg]
    outputs: list[Arg]
    spec: dict | None
    fmt: InputFormat | None = None
    problem: str | None = None  # why infer would stop, as infer would say it
    needs: str | None = None  # what infer needs to be told
    params: int | None = None
    gflops_per_image: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        fmt = self.fmt
        return {
            "path": self.path,
            "ir_version": self.ir_version,
            "opsets": self.opsets,
            "producer": self.producer,
            "inputs": [_arg_dict(a) for a in self.inputs],
            "outputs": [_arg_dict(a) for a in self.outputs],
            "spec": self.spec,
            "will_do": None
            if fmt is None
            else {
                "input": fmt.input_name,
                "layout": fmt.layout.value,
                "size": list(fmt.size),
                "channels": fmt.channels,
                "fixed_batch": fmt.batch,
                "output": fmt.output_name,
                "classes": fmt.num_classes,
                "labels": len(fmt.labels),
                "pixels": fmt.describe_pixels(),
                "resize": fmt.describe_resize(),
                "resize_policy": fmt.policy.to_dict(),
                "scores": fmt.scores.value,
            },
            "needs": self.needs,
            "problem": self.problem,
            "params": self.params,
            "gflops_per_image": self.gflops_per_image,
        }


def _arg_dict(a: Arg) -> dict:
    return {"name": a.name, "shape": a.shape, "type": a.type.removeprefix("tensor(")[:-1]}


def _dims(value_info: Any) -> list:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def _type(value_info: Any) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    return f"tensor({onnx.TensorProto.DataType.Name(elem).lower()})"


def load_graph(path: str) -> Any:
    """The ModelProto without external weights; one line when it is not an ONNX model."""
    import onnx

    if not os.path.isfile(path):
        raise BenchError(model_not_found(path))
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError, and others for damaged files
        if why := not_onnx(path):
            raise BenchError(f"cannot read {path}: {why}") from e
        raise BenchError(f"{path} is not an ONNX model (it does not parse: {first_line(e)})") from e
    if not model.ir_version or not model.graph.node or not model.graph.output:
        raise BenchError(f"{path} is not an ONNX model (no graph in it): give an .onnx file")
    return model


def inspect_model(path: str, options: ForeignOptions | None = None) -> Inspection:
    options = options or ForeignOptions()
    model = load_graph(path)
    weights = {t.name for t in model.graph.initializer}
    inputs = [Arg(v.name, _dims(v), _type(v)) for v in model.graph.input if v.name not in weights]
    outputs = [Arg(v.name, _dims(v), _type(v)) for v in model.graph.output]
    metadata = {p.key: p.value for p in model.metadata_props}
    producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown"
    found = Inspection(
        path=path,
        ir_version=model.ir_version,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
        producer=producer,
        inputs=inputs,
        outputs=outputs,
        spec=None,
    )
    from cnnbench.bench.flops import count_params

    found.params = count_params(model)
    del model
    view = GraphView(inputs, outputs, metadata)
    try:
        found.fmt = resolve_input_format(view, options, need_pixels=False)
    except InferError as e:
        found.problem = str(e)
    if SPEC_KEY in metadata:
        import json

        try:
            found.spec = json.loads(metadata[SPEC_KEY])
        except json.JSONDecodeError:
            found.spec = {"unreadable": metadata[SPEC_KEY][:200]}
    fmt = found.fmt
    if (
        fmt is not None
        and fmt.spec is None
        and fmt.dtype.name != "uint8"
        and not options.says_pixels
    ):
        found.needs = f"--preset {PRESET_NAMES} (or --mean/--std/--scale): the file does not say"
    if fmt is not None:
        found.gflops_per_image = _gflops(path, fmt, found)
    return found


def _gflops(path: str, fmt: InputFormat, found: Inspection) -> float | None:
    from cnnbench.bench.flops import graph_facts

    h, w = fmt.size
    batch = fmt.batch or 1
    shape = (
        (batch, fmt.channels, h, w) if fmt.layout is Layout.NCHW else (batch, h, w, fmt.channels)
    )
    try:
        facts = graph_facts(path, shape)
    except BenchError as e:
        found.notes.append(f"GFLOPs not counted: {e}")
        return None
    if facts.note:
        found.notes.append(f"GFLOPs: {facts.note}")
    return facts.gflops_per_image


def render(found: Inspection) -> list[str]:
    """The inspection as lines for the terminal."""
    opsets = ", ".join(f"{d} {v}" for d, v in found.opsets.items())
    lines = [f"{found.path}: ONNX IR {found.ir_version}, opset {opsets}, producer {found.producer}"]
    fmt = found.fmt
    for kind, args in (("input ", found.inputs), ("output", found.outputs)):
        for a in args:
            mark = "  <- classifier output" if fmt and a.name == fmt.output_name else ""
            if mark and len(a.shape) == 2 and a.shape[1] == 1:
                mark += " (one score per image: the second of two classes)"
            lines.append(f"  {kind} {a.name}: {_arg_dict(a)['type']} {shape_text(a.shape)}{mark}")
    if found.spec is None:
        lines.append("  spec: none (not a cnnbench export): preprocessing must be given")
    else:
        keys = ("format_version", "architecture", "precision", "channel_order", "preprocessing")
        shown = ", ".join(f"{k} {found.spec.get(k)!r}" for k in keys if k in found.spec)
        lines.append(f"  spec ({SPEC_KEY}): {shown}")
    if fmt is not None:
        batch = f"fixed at {fmt.batch}" if fmt.batch else "dynamic"
        lines += [
            f"  layout {fmt.layout.value.upper()}, batch {batch}, size {fmt.size[0]}x{fmt.size[1]}"
            f", {fmt.channels} channel(s)",
            f"  classes {fmt.num_classes or 'dynamic'}, labels {len(fmt.labels)}, scores "
            f"{fmt.scores.value}",
        ]
        if found.needs:
            lines.append(f"  infer needs: {found.needs}")
        else:
            lines.append(f"  pixels: {fmt.describe_pixels()}")
            lines.append(f"  resize: {fmt.describe_resize()}")
        lines += [f"  {note}" for note in fmt.notes]
    if found.problem:
        lines.append(f"  infer would stop: {found.problem}")
    gflops = "?" if found.gflops_per_image is None else f"{found.gflops_per_image:.3g}"
    params = "?" if found.params is None else f"{found.params:,}"
    lines.append(f"  parameters {params}, GFLOPs per image {gflops}")
    lines += [f"  {note}" for note in found.notes]
    return lines
