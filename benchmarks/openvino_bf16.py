"""OpenVINO bf16 against ONNX Runtime fp32, with accuracy on real labelled photos, in one
`cnnbench bench` run per model:

1. ResNet50 (zoo, random weights) at batch 8 on cpu and openvino f32,bf16: the speed-up of
   OpenVINO bf16 over ORT fp32 (goal >= 1.8x), and the accuracy table on the photos
   (random weights: agreement is shown, not gated).
2. simple_vgg trained on crops of the bundled photos, measured the same way on held-out
   crops: top-1 agreement of bf16 with fp32 (goal >= 99%).

Run under the shared benchmark lock, from the repository root (needs the train and
openvino extras):

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/openvino_bf16.py runs/ov

Rows state the precision that really ran: on a CPU without native bf16 (AVX512_BF16 or
AMX), OpenVINO runs f32 whatever the hint, and the script says so.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from cnnbench.training.samples import write_photo_folder

CNNBENCH = str(Path(sys.executable).with_name("cnnbench"))


def sh(args: list[str]) -> None:
    print("$ " + shlex.join(["cnnbench", *args[1:]]), flush=True)
    subprocess.run(args, check=True)


def bench(model_args: list[str], images: Path, out: Path, batch: int) -> dict:
    sh(
        [
            CNNBENCH,
            "bench",
            *model_args,
            *("--provider", "cpu,openvino", "--precision-hint", "f32,bf16"),
            *("--batch-sizes", str(batch), "--images", str(images), "--no-peak"),
            *("--json", str(out)),
        ]
    )
    return json.loads(out.read_text())


def rows(doc: dict) -> dict[tuple[str, str], dict]:
    """(provider, precision hint) -> the row at concurrency 1."""
    return {
        (r["provider"], r["precision_hint"]): r for r in doc["results"] if r["concurrency"] == 1
    }


def summary(name: str, doc: dict) -> None:
    by = rows(doc)
    ort = by[("cpu", "auto")]
    print(f"\n{name}:")
    for (provider, hint), r in by.items():
        acc = r.get("accuracy") or {}
        top1 = acc.get("top1")
        agree = acc.get("agreement")
        print(
            f"  {provider:<8} hint {hint:<4} ran {r['precision']:<5} "
            f"{r['throughput_ips']:8.1f} img/s  x{r['throughput_ips'] / ort['throughput_ips']:.2f}"
            f" vs ORT fp32  top-1 {'-' if top1 is None else f'{top1:.1%}'}  agreement "
            f"{'-' if agree is None else f'{agree:.1%}'}  {r['validity']['status']}"
        )
    bf16 = by.get(("openvino", "bf16"))
    if bf16 and bf16["precision"] != "bf16":
        print(f"  note: bf16 was asked but {bf16['precision']} ran: this CPU has no native bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    photos, heldout = out / "photos", out / "heldout"
    if not photos.is_dir():
        write_photo_folder(str(photos), args.per_class, 224, seed=0)
    if not heldout.is_dir():
        write_photo_folder(str(heldout), args.per_class, 224, seed=1)
    docs = {}
    if not args.skip_resnet:
        docs["ResNet50 (random weights), batch 8"] = bench(
            ["--arch", "resnet50"], photos, out / "resnet50.json", 8
        )
    onnx = out / "simple_vgg.onnx"
    if not onnx.is_file():
        run = out / "simple_vgg"
        sh(
            [
                *(CNNBENCH, "train", "simple_vgg", "--data", str(photos), "--img-size", "64"),
                *("--epochs", str(args.epochs), "--out", str(run)),
            ]
        )
        sh([CNNBENCH, "convert", str(run / "model.keras"), "-o", str(onnx)])
    docs["simple_vgg trained on the photos, held-out crops, batch 8"] = bench(
        ["--model", str(onnx)], heldout, out / "simple_vgg.json", 8
    )
    for name, doc in docs.items():
        summary(name, doc)


if __name__ == "__main__":
    main()
