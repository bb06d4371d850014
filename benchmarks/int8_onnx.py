"""int8 of an ONNX model with accuracy control against its fp32 file, in one `cnnbench
bench` run: speed (img/s at batch 8, ORT CPU) and top-1 agreement with fp32 on held-out
photos.

simple_vgg is trained on crops of the bundled photos (64x64, augmented) and exported to
fp32 ONNX; that file is the input of `cnnbench convert --precision int8 --max-drop 1`, calibrated
on the training crops and verified on held-out crops (another seed). Then
`cnnbench bench --model fp32.onnx --model int8.onnx --images held-out` measures both in one
run (the first model is the reference of the agreement). Goal: agreement >= 99%.

Run under the shared benchmark lock, from the repository root (needs the train extra):

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/int8_onnx.py runs/int8

State the CPU flags beside the figures: int8 gains need VNNI (AVX-512 VNNI or AVX-VNNI).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=3.0, help="bench's --duration")
    args = parser.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    photos, held_out = out / "photos", out / "held_out"
    if not photos.is_dir():
        write_photo_folder(str(photos), args.per_class, 64, seed=0)
    if not held_out.is_dir():
        write_photo_folder(str(held_out), args.per_class, 64, seed=1)
    fp32, int8 = out / "simple_vgg.onnx", out / "simple_vgg-int8.onnx"
    if not fp32.is_file():
        run = out / "simple_vgg"
        sh(
            [
                *(CNNBENCH, "train", "simple_vgg", "--data", str(photos), "--augment"),
                *("--epochs", str(args.epochs), "--out", str(run)),
            ]
        )
        sh([CNNBENCH, "convert", str(run / "model.keras"), "-o", str(fp32)])
    sh(
        [
            *(CNNBENCH, "convert", str(fp32), "-o", str(int8), "--precision", "int8"),
            *("--calibration", str(photos), "--verify-images", str(held_out)),
            *("--max-drop", str(args.max_drop)),
        ]
    )
    report = out / "bench.json"
    sh(
        [
            *(CNNBENCH, "bench", "--model", str(fp32), "--model", str(int8)),
            *("--provider", "cpu", "--batch-sizes", str(args.batch)),
            *("--images", str(held_out), "--no-peak", "--json", str(report)),
            *("--duration", str(args.window), "--max-seconds", str(10 * args.window)),
        ]
    )
    rows = [r for r in json.loads(report.read_text())["results"] if r["concurrency"] == 1]
    base = rows[0]["throughput_ips"]
    for r in rows:
        acc = r.get("accuracy") or {}
        print(
            f"{Path(r['model']).name:<24} {r['throughput_ips']:8.1f} img/s  "
            f"x{r['throughput_ips'] / base:.2f}  top-1 {acc.get('top1', float('nan')):.1%}  "
            f"agreement {acc.get('agreement', float('nan')):.1%}  {r['validity']['status']}"
        )


if __name__ == "__main__":
    main()
