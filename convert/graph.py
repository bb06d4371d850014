"""Graph surgery after tracing: weights become initializers, names follow the contract,
constant sub-graphs fold, unused initializers and opset imports go."""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from typing import Any

import numpy as np

from cnnbench.convert.errors import ConvertError
from cnnbench.convert.writer import PROTO_LIMIT, save_model
from cnnbench.infer.runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME

PRECISION_OF_TYPE = {1: "fp32", 2: "int8", 3: "int8", 10: "fp16", 11: "fp64", 16: "bf16"}


def inputs_to_initializers(model: Any, arrays: dict[str, np.ndarray]) -> None:
    from onnx import numpy_helper

    big = [name for name, array in arrays.items() if array.nbytes > PROTO_LIMIT]
    if big:
        raise ConvertError(
            f"weight {big[0]} holds {arrays[big[0]].nbytes / 1e9:.1f} GB; cnnbench converts "
            "models whose single weights are under 2 GB (the total may be larger)"
        )
    graph = model.graph
    kept = [i for i in graph.input if i.name not in arrays]
    used = {i.name for i in graph.input} & arrays.keys()
    for name in sorted(used):
        graph.initializer.append(numpy_helper.from_array(arrays[name], name))
    del graph.input[:]
    graph.input.extend(kept)


def apply_contract_names(model: Any) -> None:
    """Input `image`, output `probs`, first dim of both named `batch`."""
    graph = model.graph
    (inp,) = graph.input
    (out,) = graph.output
    rename_value(graph, inp.name, INPUT_NAME)
    rename_value(graph, out.name, OUTPUT_NAME)
    for value in (inp, out):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM


def rename_value(graph: Any, old: str, new: str) -> None:
    """Value `old` is called `new` wherever the graph names it."""
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        if value.name == old:
            value.name = new


def name_nodes(graph: Any, prefix: str = "cnnbench_") -> None:
    """Every node gets a unique name: int8's `nodes_to_exclude` and the table name them."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{prefix}{node.op_type}_{i}"
        seen.add(node.name)


def fold_and_clean(model: Any, external: bool = False) -> Any:
    """Fold constant sub-graphs (weight transposes, batch-norm arithmetic) with ONNX
    Runtime's basic level, which rewrites only with standard ONNX ops, then drop
    unused opset imports. `external`: pass the weights through external data files
    (needed past protobuf's 2 GB). Returns a new ModelProto; `model` loses its weights
    once they are on disk, so two copies are never held at once."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="cnnbench-") as tmp:
        raw, folded = os.path.join(tmp, "raw.onnx"), os.path.join(tmp, "folded.onnx")
        save_model(model, raw, external)
        del model.graph.initializer[:]
        _ort_basic_optimize(raw, folded, external)
        result = onnx.load(folded)
    used_domains = {node.domain or "" for node in result.graph.node}
    imports = [op for op in result.opset_import if (op.domain or "") in used_domains | {""}]
    del result.opset_import[:]
    result.opset_import.extend(imports)
    result.producer_name = "cnnbench"
    return result


def _ort_basic_optimize(src: str, dst: str, external: bool) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = dst
    options.log_severity_level = 3  # it reports each unused initializer it drops
    if external:
        name = os.path.basename(dst) + ".data"
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", name
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
    ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


def lowered_precision(path: str) -> str | None:
    """int8, fp16, ...: the precision of a model whose weights are lowered already; None
    for an fp32 one (or a file that does not parse: said where it is loaded)."""
    import onnx

    try:
        found = weights_precision(onnx.load(path, load_external_data=False))
    except Exception:  # protobuf's DecodeError, a damaged file, ...
        return None
    return None if found in ("fp32", "unknown") else found


def weights_precision(model: Any) -> str:
    """fp32, fp16, int8, ...: the type of the majority of the weights' elements."""
    counts: Counter[str] = Counter()
    for t in model.graph.initializer:
        if t.data_type in PRECISION_OF_TYPE:
            counts[PRECISION_OF_TYPE[t.data_type]] += math.prod(t.dims)
    return counts.most_common(1)[0][0] if counts else "unknown"
