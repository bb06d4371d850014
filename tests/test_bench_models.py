"""bench on real converted models: FLOPs of ResNet-50, the zoo with its Keras baseline and
the end-to-end mode, and the precision comparison with a real int8 file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import pytest
from bench_helpers import FAST, bench


@pytest.mark.slow
def test_resnet50_flops_match_the_published_figures() -> None:
    """Keras' ResNet50 is the original v1 (stride 2 in the first 1x1 convolution): He et al.
    (2015), table 1, give 3.8e9 multiply-adds. The often-quoted 4.1 GMACs is torchvision's
    v1.5, which moves that stride into the 3x3 convolution."""
    import keras

    from cnnbench.bench.flops import graph_facts
    from cnnbench.convert.export import ConvertConfig, model_facts, to_onnx

    model = keras.applications.ResNet50(weights=None)
    proto = to_onnx(model, model_facts(model), ConvertConfig(model="resnet50", output="-"))
    facts = graph_facts(proto, (1, 224, 224, 3))
    assert facts.macs_per_image / 1e9 == pytest.approx(3.86, abs=0.02)
    assert facts.macs_by_op["Gemm"] == 2048 * 1000
    # 25.64M in Keras, less the BatchNorm statistics that tf2onnx folds into the convolutions
    assert facts.params / 1e6 == pytest.approx(25.5, abs=0.1)
    # v1.5 runs the first 1x1 of stages 3-5 (2c -> c channels) at the input's resolution,
    # (2 hw)^2 instead of hw^2 outputs: 3 hw^2 x 2c x c more MACs per stage, 0.23 G in all
    v15_extra = sum(3 * hw**2 * 2 * c * c for hw, c in ((28, 128), (14, 256), (7, 512)))
    assert (facts.macs_per_image + v15_extra) / 1e9 == pytest.approx(4.1, abs=0.03)


@pytest.mark.slow
def test_zoo_with_keras_baseline_and_end_to_end(digits_run, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = tmp_path / "zoo.json"
    args = ["--arch", "mnist_cnn", "--provider", "cpu", "--batch-sizes", "1,8", *FAST]
    args += ["--cache-dir", str(cache), "--baseline", "keras", "--images", str(digits_run.heldout)]
    code, output = bench([*args, "--json", str(path)])
    assert code == 0, output
    assert "zoo: building mnist_cnn" in output
    doc = json.loads(path.read_text())
    assert doc["models"][0]["architecture"] == "mnist_cnn"
    assert doc["models"][0]["input_shape"] == [1, 28, 28, 1]
    runtimes = {(b["runtime"], b["batch_size"]) for b in doc["baselines"]}
    # Batch 1 and the CPU's best batch size (on a busy machine that can be batch 1 too).
    best = max(doc["results"], key=lambda r: r["throughput_ips"])["batch_size"]
    assert runtimes == {(r, b) for r in ("keras predict", "tf.function") for b in {1, best}}
    assert all(b["ort_speedup"] > 0 for b in doc["baselines"])
    (e2e,) = doc["end_to_end"]
    assert e2e["images"] == len(list(digits_run.heldout.rglob("*.png")))
    assert e2e["bottleneck"] in ("read", "decode+resize", "batch assembly", "run", "write")
    assert e2e["accuracy"]["images"] == e2e["images"]
    assert "bottleneck:" in output and "ONNX Runtime is" in output
    code, output = bench(
        [
            "--arch",
            "mnist_cnn",
            "--provider",
            "cpu",
            "--batch-sizes",
            "1",
            *FAST,
            "--cache-dir",
            str(cache),
        ]
    )
    assert code == 0, output
    assert "zoo: building" not in output  # converted once, then taken from the cache


@pytest.mark.slow
def test_precision_side_by_side_with_a_real_int8_file(digits_run, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from cnnbench.infer.runtime.contract import read_spec, write_spec

    int8 = tmp_path / "digits-int8.onnx"
    quantize_dynamic(str(digits_run.onnx_path), str(int8), weight_type=QuantType.QInt8)
    model = onnx.load(str(int8))
    spec = read_spec({p.key: p.value for p in model.metadata_props})
    del model.metadata_props[:]
    write_spec(model, dataclasses.replace(spec, precision="int8"))
    onnx.save(model, str(int8))
    path = tmp_path / "prec.json"
    args = ["--model", str(digits_run.onnx_path), "--model", str(int8), "--provider", "cpu"]
    code, output = bench([*args, "--batch-sizes", "1,8", *FAST, "--json", str(path)])
    assert code == 0, output
    assert "best configuration per precision" in output
    doc = json.loads(path.read_text())
    fp32, q8 = doc["models"]
    assert (fp32["precision"], q8["precision"]) == ("fp32", "int8")
    # the same multiply-accumulates, whatever their precision
    assert q8["facts"]["gmacs_per_image"] == pytest.approx(fp32["facts"]["gmacs_per_image"])
    assert set(q8["facts"]["macs_by_op"]) & {"ConvInteger", "MatMulInteger"}
