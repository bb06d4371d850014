"""Start-up of `infer` (docs/fast.md, "Start-up of a small job"): the model file's header
read without its weights gives what the session gives; the first batches decode while the
session is built, with the same rows as when they wait for it; a session that fails
still fails first, in one line, with no output written; a plain run imports nothing it
does not use."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import assert_one_line_error, run
from onnx import TensorProto, helper, numpy_helper

from cnnbench.infer.engines.job import InferConfig
from cnnbench.infer.engines.local import _Head, _Writer, run_infer
from cnnbench.infer.errors import InferError
from cnnbench.infer.runtime.header import read_graph_view
from cnnbench.infer.runtime.preprocess import ForeignOptions, resolve_input_format
from cnnbench.infer.runtime.session import Provider, RuntimeOptions, create_session


def _as_onnx_runtime_says(graph) -> tuple:  # a session or a GraphView
    args = lambda xs: [(a.name, list(a.shape), a.type) for a in xs]  # noqa: E731
    meta = dict(graph.get_modelmeta().custom_metadata_map)
    return args(graph.get_inputs()), args(graph.get_outputs()), meta


def _old_style_model(path: Path) -> Path:
    """IR 3 style: the weights are listed among the graph's inputs too (ONNX Runtime
    leaves them out of its inputs), a fixed batch, a double output among others."""
    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"]),
            helper.make_node("Cast", ["y"], ["z"], to=TensorProto.DOUBLE),
        ],
        "old",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 2]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "classes"]),
            helper.make_tensor_value_info("z", TensorProto.DOUBLE, [4, None]),
        ],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    model.metadata_props.add(key="note", value="ünïcode")
    onnx.save(model, path)
    return path


def test_header_reads_what_the_session_reads(
    tiny_model: Path, foreign_model: Path, tmp_path: Path
) -> None:
    for path in (tiny_model, foreign_model):
        view = read_graph_view(str(path))
        assert view is not None, path
        session = create_session(str(path), RuntimeOptions(Provider.CPU))
        assert _as_onnx_runtime_says(view) == _as_onnx_runtime_says(session), path
    view = read_graph_view(str(tiny_model))
    assert view is not None
    session = create_session(str(tiny_model), RuntimeOptions(Provider.CPU))
    assert resolve_input_format(view) == resolve_input_format(session)
    # the weights listed among the inputs are left out, as ONNX Runtime does; the outputs'
    # shapes are the declared ones (ONNX Runtime infers what was left open: the session's
    # format decides, the header's only says how to decode)
    old = _old_style_model(tmp_path / "old.onnx")
    view = read_graph_view(str(old))
    assert view is not None
    inputs, outputs, meta = _as_onnx_runtime_says(view)
    assert inputs == [("x", [4, 3], "tensor(float)")] and meta == {"note": "ünïcode"}
    assert outputs == [
        ("y", [4, "classes"], "tensor(float)"),
        ("z", [4, None], "tensor(double)"),
    ]
    session = create_session(str(old), RuntimeOptions(Provider.CPU))
    assert _as_onnx_runtime_says(session)[0] == inputs


def test_header_of_what_is_not_onnx_is_none(tiny_model: Path, tmp_path: Path) -> None:
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model\n" * 10)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_model.read_bytes()[:-7])
    for path in (text, cut, tmp_path / "missing.onnx"):
        assert read_graph_view(str(path)) is None, path


def _config(model: Path, folder: Path | str, out: Path, **given: object) -> InferConfig:
    runtime = given.pop("runtime", RuntimeOptions(Provider.CPU))
    return InferConfig(
        str(model), (str(folder),), str(out), progress=False, runtime=runtime, **given
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_first_batches_decode_before_the_session_and_rows_are_the_same(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path, batch_size: int
) -> None:
    """A plain local run starts its first batches from the header, and so does one whose
    items go through `fetch_ahead` (--io-threads, as URLs do: tests/test_sources.py has
    objects read meanwhile); the rows equal those of a run whose batches wait for the
    session (--resume: no head)."""
    inputs = (str(tiny_folder),)
    cfg = _config(tiny_model, tiny_folder, tmp_path / "head.csv", batch_size=batch_size)
    fetched = dataclasses.replace(cfg, output=str(tmp_path / "fetched.csv"), io_threads=2)
    with ThreadPoolExecutor(1) as pool:
        for config, read_ahead in ((cfg, False), (fetched, True)):
            head = _Head.start(config, inputs, pool)
            assert head is not None and head.batch_size == batch_size
            items = [item for batch, _, _ in head.submitted for item in batch]
            assert len(items) == min(8, 3 * batch_size)
            assert (head.fetched is not None) == read_ahead
            assert head.classes.result()[0] is False  # no folder named as a label
            head.close()
        waited = _config(
            tiny_model, tiny_folder, tmp_path / "waited.csv", batch_size=batch_size, resume=True
        )
        assert _Head.start(waited, inputs, pool) is None
    runs = [run_infer(c) for c in (cfg, fetched, waited)]
    assert [r.images for r in runs] == [8, 8, 8]
    assert [r.skipped_by_extension for r in runs] == [{".txt": 1}] * 3
    rows = [(tmp_path / f).read_text() for f in ("head.csv", "fetched.csv", "waited.csv")]
    assert rows[0] == rows[1] == rows[2]


def test_the_objects_frozen_for_the_batches_are_handed_back(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """The start-up's objects are out of the garbage collector's passes while the
    batches run (`gc.freeze`) and back in them after; a process that froze objects
    itself keeps them frozen."""
    seen: list[int] = []
    real = _Writer.write

    def write(self: _Writer, *args: object) -> None:
        seen.append(gc.get_freeze_count())
        real(self, *args)

    _Writer.write = write  # type: ignore[method-assign]
    try:
        run_infer(_config(tiny_model, tiny_folder, tmp_path / "a.csv"))
        assert seen and min(seen) > 0  # frozen while the batches ran
        assert gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        run_infer(_config(tiny_model, tiny_folder, tmp_path / "b.csv"))
        # not handed back (that is 0); a few of them may be freed meanwhile (a full suite
        # saw 2 of 531,193 go: an earlier test's cached objects let go)
        assert gc.get_freeze_count() > frozen // 2
    finally:
        _Writer.write = real  # type: ignore[method-assign]
        gc.unfreeze()


def test_no_head_where_the_items_pass_through_the_sink_first_or_on_openvino(
    tiny_model: Path, foreign_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    inputs = (str(tiny_folder),)
    with ThreadPoolExecutor(1) as pool:
        openvino = RuntimeOptions(Provider.OPENVINO)
        for cfg in (
            _config(tiny_model, tiny_folder, tmp_path / "p.csv", resume=True),
            _config(tiny_model, tiny_folder, tmp_path / "p.csv", runtime=openvino),  # a compile
            _config(tiny_model, tiny_folder, tmp_path / "p.parquet"),
            _config(foreign_model, tiny_folder, tmp_path / "p.csv"),  # no preset: the session says
        ):
            assert _Head.start(cfg, inputs, pool) is None
        preset = ForeignOptions(preset="imagenet")
        head = _Head.start(
            _config(foreign_model, tiny_folder, tmp_path / "p.csv", foreign=preset), inputs, pool
        )
        assert head is not None
        head.close()


def test_an_error_reading_the_inputs_ahead_comes_after_the_sessions(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A list file whose second line has a NUL byte: the head starts no batch and keeps
    the error for where the run takes the next items, so a model that cannot load
    still says so first; else the line is named, in one line."""
    listed = tmp_path / "list.txt"
    listed.write_bytes(b"missing.jpg\nx\0.jpg\n")
    cfg = _config(tiny_model, f"@{listed}", tmp_path / "p.csv")
    with ThreadPoolExecutor(1) as pool:
        head = _Head.start(cfg, cfg.inputs, pool)
    assert head is not None and head.fetched is not None and head.submitted == []
    with pytest.raises(InferError, match="line 2: a NUL byte"):
        next(iter(head.rest))
    head.close()
    out = tmp_path / "p.csv"
    code, text = run(["infer", str(tiny_model), f"@{listed}", "-o", str(out), "--no-progress"])
    assert_one_line_error(code, text, "list.txt, line 2: a NUL byte", "one image path per line")
    bad = _unloadable(tiny_model, tmp_path / "bad.onnx")
    code, text = run(["infer", str(bad), f"@{listed}", "-o", str(tmp_path / "q.csv")])
    assert_one_line_error(code, text, "cannot load", "NoSuchOp")
    assert not (tmp_path / "q.csv").exists()


def _unloadable(model_path: Path, bad: Path) -> Path:
    """The model with a node of an operator ONNX Runtime does not know."""
    model = onnx.load(str(model_path))
    model.graph.node.append(helper.make_node("NoSuchOp", ["probs"], ["extra"], domain="x.y"))
    model.opset_import.append(helper.make_opsetid("x.y", 1))
    onnx.save(model, bad)
    return bad


def test_a_session_that_fails_after_the_header_read_is_one_line(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """The header reads (the spec, the input), the first batches start decoding, and ONNX
    Runtime then refuses the graph: its error is the one line, and nothing is written."""
    bad = _unloadable(tiny_model, tmp_path / "bad.onnx")
    cfg = _config(bad, tiny_folder, tmp_path / "p.csv")
    with ThreadPoolExecutor(1) as pool:
        head = _Head.start(cfg, (str(tiny_folder),), pool)
    assert head is not None
    head.close()
    out = tmp_path / "p.csv"
    code, text = run(["infer", str(bad), str(tiny_folder), "-o", str(out), "--provider", "cpu"])
    assert_one_line_error(code, text, "cannot load", "NoSuchOp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_plain_infer_imports_only_what_it_uses(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """No other stage's commands, no Ray, OpenVINO, TensorFlow, Arrow; no progress bar
    library where no bar shows (not a terminal)."""
    out = tmp_path / "p.csv"
    code = (
        "import sys; from cnnbench.cli import cli\n"
        f"try:\n    cli(['infer', {str(tiny_model)!r}, {str(tiny_folder)!r}, '-o', {str(out)!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "unused = ('tensorflow', 'keras', 'ray', 'openvino', 'pyarrow', 'tqdm', 'onnx', "
        "'cnnbench.bench.cli', 'cnnbench.convert.cli', 'cnnbench.training.cli', "
        "'cnnbench.infer.engines.ray')\n"
        "print([m for m in unused if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
    assert out.is_file()
