"""The ONNX side: read any ONNX image classifier, resolve how it is fed exactly as `infer`
does (its spec, or the foreign options), and wrap it into the model contract by graph
surgery: a uint8 NHWC RGB `image` input whose channel order, cast, scaling, normalisation
and layout are nodes in front of the source graph, and a `probs` output (a Softmax appended
when the source outputs logits)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cnnbench.convert.errors import ConvertError
from cnnbench.convert.graph import rename_value
from cnnbench.convert.keras_model import ModelFacts
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.contract import BATCH_DIM, INPUT_NAME, OUTPUT_NAME
from cnnbench.infer.runtime.preprocess import (
    ForeignOptions,
    InputFormat,
    Layout,
    resolve_input_format,
)
from cnnbench.infer.runtime.runner import PlainRunner
from cnnbench.infer.runtime.scores import ScoreMode, Scorer
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, Session, create_session

PREFIX = "cnnbench_"  # names of everything the wrap adds
SCORE_PROBE_SEED = 12345


@dataclass(frozen=True)
class OnnxSource:
    """A source model and how infer feeds it; `softmax`: its output rows are logits."""

    path: str
    fmt: InputFormat
    softmax: bool
    scores: str  # how the scores are made, in words (Scorer.describe)
    binary: bool = False  # one score per image: the second class's (scores.py)

    @property
    def facts(self) -> ModelFacts:
        fmt = self.fmt
        return ModelFacts(fmt.size, fmt.channels, len(fmt.labels), fmt.dtype.name)

    @property
    def is_contract(self) -> bool:
        """Already a cnnbench model: uint8 NHWC RGB `image` in, probabilities out."""
        return (
            self.fmt.spec is not None
            and self.fmt.dtype == np.uint8
            and not self.fmt.bgr
            and not self.softmax
            and not self.binary
            and self.fmt.output_name == OUTPUT_NAME
        )


def open_source(path: str) -> Session:
    """A CPU session of the source, with infer's own loading errors."""
    try:
        return create_session(path, RuntimeOptions(provider=Provider.CPU))
    except InferError as e:
        raise ConvertError(str(e)) from e


def read_source(path: str, options: ForeignOptions) -> tuple[OnnxSource, Session]:
    """Resolve the source's input format as `infer` does (same one-line errors) and decide
    its scores as infer's `--scores auto` would: softmax unless the rows are probabilities."""
    session = open_source(path)
    try:
        fmt = resolve_input_format(session, options)
    except InferError as e:
        raise ConvertError(str(e)) from e
    scorer = Scorer(fmt.scores, known_probabilities=fmt.spec is not None)
    rng = np.random.default_rng(SCORE_PROBE_SEED)
    probe = rng.integers(0, 256, (max(4, fmt.batch or 0), *fmt.size, fmt.channels), np.uint8)
    try:
        out = PlainRunner(session, fmt).raw(probe, len(probe))
    except InferError as e:
        raise ConvertError(str(e)) from e
    scorer(out)  # decides auto's softmax (or sigmoid) on the probe's rows
    assert scorer.apply_softmax is not None  # decided above
    decided = ScoreMode.SOFTMAX if scorer.apply_softmax else ScoreMode.RAW
    fmt = replace(fmt, scores=decided)
    source = OnnxSource(path, fmt, scorer.apply_softmax, scorer.describe(), scorer.binary)
    return source, session


def source_reference(session: Session, fmt: InputFormat) -> Any:
    """The source's probabilities for uint8 NHWC RGB images, exactly as `infer` computes
    them: channels flipped where infer's decoder flips them, its numpy preprocessing, its
    scorer; padded to a fixed batch where the model has one."""
    runner = PlainRunner(session, fmt)
    rows = fmt.batch or 16
    flip = fmt.bgr and fmt.channels == 3

    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), rows):
            chunk = images[start : start + rows]
            buf = np.zeros((rows, *chunk.shape[1:]), np.uint8)
            buf[: len(chunk)] = chunk[..., ::-1] if flip else chunk
            out.append(runner.run(buf, len(chunk)))
        return np.concatenate(out)

    return predict


def wrap_contract(model: Any, source: OnnxSource) -> Any:
    """Graph surgery on `model` (an onnx.ModelProto, changed in place and returned): only
    the chosen output is kept, the contract's `image` input and the preprocessing nodes
    go in front, the cast to float32 and the softmax (if the scores are logits) behind."""
    fmt = source.fmt
    graph = model.graph
    for name in (INPUT_NAME, OUTPUT_NAME):
        if name in _value_names(graph):
            rename_value(graph, name, PREFIX + "source_" + name)
    src_in = fmt.input_name if fmt.input_name != INPUT_NAME else PREFIX + "source_" + INPUT_NAME
    src_out = fmt.output_name if fmt.output_name != OUTPUT_NAME else PREFIX + "source_probs"
    _keep_output(graph, src_out)
    elem = _elem_type(graph, src_out)
    front, front_inits = _front_nodes(fmt, src_in)
    nodes = front + list(graph.node) + _back_nodes(src_out, elem, source.softmax, source.binary)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(front_inits)
    _set_io(graph, fmt, src_in, source.binary)
    return model


def _value_names(graph: Any) -> set[str]:
    names = {v.name for v in list(graph.input) + list(graph.output) + list(graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _keep_output(graph: Any, name: str) -> None:
    """Only output `name`; nodes that no longer feed it go (other heads, aux outputs)."""
    needed, kept = {name}, []
    for node in reversed(graph.node):
        if set(node.output) & needed:
            kept.append(node)
            needed.update(_reads(node))
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    inputs = [i for i in graph.input if i.name in needed]  # old files list weights as inputs
    del graph.input[:]
    graph.input.extend(inputs)
    outputs = [o for o in graph.output if o.name == name]
    del graph.output[:]
    graph.output.extend(outputs)


def _reads(node: Any) -> set[str]:
    """The values a node reads, those its subgraphs (If, Loop) read from outside included."""
    names = {i for i in node.input if i}
    for attr in node.attribute:
        for sub in [attr.g, *attr.graphs] if attr.HasField("g") or attr.graphs else []:
            for inner in sub.node:
                names |= _reads(inner)
    return names


def _elem_type(graph: Any, output: str) -> int:
    return next(o.type.tensor_type.elem_type for o in graph.output if o.name == output)


def _front_nodes(fmt: InputFormat, src_in: str) -> tuple[list[Any], list[Any]]:
    """image (uint8 NHWC RGB) -> the source's input: channel flip, cast, x * a + b,
    transpose, as infer's `to_model_input` does in numpy (and in that order)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    x = INPUT_NAME

    def add(op: str, inputs: list[str], **attrs: Any) -> None:
        nonlocal x
        out = f"{PREFIX}{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, [x, *inputs], [out], **attrs))
        x = out

    if fmt.bgr and fmt.channels == 3:
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), PREFIX + "bgr"))
        add("Gather", [PREFIX + "bgr"], axis=3)
    if fmt.dtype != np.uint8:
        add("Cast", [], to=TensorProto.FLOAT)
        if (ab := fmt.affine) is not None:
            inits.append(numpy_helper.from_array(ab[0], PREFIX + "scale"))
            inits.append(numpy_helper.from_array(ab[1], PREFIX + "shift"))
            add("Mul", [PREFIX + "scale"])
            add("Add", [PREFIX + "shift"])
        if fmt.dtype == np.float16:
            add("Cast", [], to=TensorProto.FLOAT16)
    if fmt.layout is Layout.NCHW:
        add("Transpose", [], perm=[0, 3, 1, 2])
    if nodes:
        nodes[-1].output[0] = src_in
    else:
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [src_in]))
    return nodes, inits


def _back_nodes(src_out: str, elem: int, softmax: bool, binary: bool = False) -> list[Any]:
    """The source's output -> float32 `probs`: a cast when it is not float32, the softmax
    when its rows are logits (axis 1 of [batch, classes], the same in every opset). One
    score per image (`binary`) becomes [1 - p, p], p the score or its sigmoid (a logit),
    as infer scores it."""
    from onnx import TensorProto, helper

    nodes, x = [], src_out
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], [PREFIX + "cast_out"], to=TensorProto.FLOAT))
        x = PREFIX + "cast_out"
    if binary:
        if softmax:
            nodes.append(helper.make_node("Sigmoid", [x], [PREFIX + "p"]))
            x = PREFIX + "p"
        one = helper.make_tensor(PREFIX + "one_value", TensorProto.FLOAT, [1], [1.0])
        nodes.append(helper.make_node("Constant", [], [PREFIX + "one"], value=one))
        nodes.append(helper.make_node("Sub", [PREFIX + "one", x], [PREFIX + "q"]))
        nodes.append(helper.make_node("Concat", [PREFIX + "q", x], [OUTPUT_NAME], axis=1))
    elif softmax:
        nodes.append(helper.make_node("Softmax", [x], [OUTPUT_NAME], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME]))
    return nodes


def _set_io(graph: Any, fmt: InputFormat, src_in: str, binary: bool = False) -> None:
    from onnx import TensorProto, helper

    batch: int | str = fmt.batch or BATCH_DIM
    (source_out,) = graph.output
    classes = source_out.type.tensor_type.shape.dim[1]
    image = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.UINT8, [batch, *fmt.size, fmt.channels]
    )
    width: int | str = classes.dim_value if classes.HasField("dim_value") else "classes"
    probs = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, [batch, 2 if binary else width]
    )
    kept = [i for i in graph.input if i.name != src_in]  # weights listed as inputs stay
    del graph.input[:]
    graph.input.extend([image, *kept])
    del graph.output[:]
    graph.output.append(probs)
