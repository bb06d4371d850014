"""`cnnbench infer` over an uncurated folder: is every file accounted for, what are the
errors, how much memory and time, and how many lines reach the terminal?

Made for Pillow's decoder test images (`Tests/images` of the Pillow repository: corrupt
and fuzzer files, every format, huge declared sizes), fetched locally, never committed:

    git clone --depth 1 https://github.com/python-pillow/Pillow /tmp/pillow
    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/folder_corpus.py \\
        model.onnx /tmp/pillow/Tests/images

Runs `cnnbench infer` twice as a subprocess (default extensions, then `--extensions '*'`)
and prints, per run, a Markdown table: files under the folder (its own os.walk),
predictions, errors by reason, skipped by extension, peak RSS (wait4), wall time and the
stderr lines that are not cnnbench's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

OWN_LINES = re.compile(
    r"^(provider \S+.*|.*batch size \d+|\d+ images, \d+ errors, .*|per class: .*|"
    r"skipped \d+ files by extension: .*|\d+ files failed: see .*|"
    r"\d+ truncated files predicted .*)$"
)


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(model: str, folder: Path, work: Path, extra: list[str]) -> dict:
    out, summary, err = work / "pred.csv", work / "summary.json", work / "stderr.txt"
    cmd = [sys.executable, "-m", "cnnbench", "infer", model, str(folder), "-o", str(out)]
    cmd += ["--no-progress", "--summary", str(summary), *extra]
    start = time.perf_counter()
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    doc = json.loads(summary.read_text())
    errors = rows(work / "pred.errors.csv")
    lines = err.read_text(errors="replace").splitlines()
    return {
        "command": " ".join(cmd[1:]),
        "exit": os.waitstatus_to_exitcode(status),
        "files": count_files(folder),
        "predictions": len(rows(out)),
        "errors": len(errors),
        "by_reason": Counter(e["error"].split(":", 1)[0] for e in errors),
        "skipped": doc["skipped_by_extension"],
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "wall_s": wall,
        "native_lines": [line for line in lines if not OWN_LINES.match(line)],
    }


def report(result: dict) -> str:
    skipped = sum(result["skipped"].values())
    accounted = result["predictions"] + result["errors"] + skipped
    reasons = ", ".join(f"{n} {r}" for r, n in result["by_reason"].most_common())
    by_ext = ", ".join(f"{n} {e}" for e, n in result["skipped"].items()) or "none"
    return "\n".join(
        [
            f"`{result['command']}` (exit {result['exit']})",
            "",
            "| measure | value |",
            "|---|---|",
            f"| files under the folder (os.walk) | {result['files']} |",
            f"| predictions + errors + skipped | {accounted} |",
            f"| predictions | {result['predictions']} |",
            f"| errors | {result['errors']}: {reasons} |",
            f"| skipped by extension | {skipped}: {by_ext} |",
            f"| peak RSS | {result['peak_rss_mb']:.0f} MB |",
            f"| wall time | {result['wall_s']:.1f} s |",
            f"| stderr lines not from cnnbench | {len(result['native_lines'])} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    for extra in ([], ["--extensions", "*"]):
        with tempfile.TemporaryDirectory(prefix="cnnbench-corpus-") as tmp:
            result = run(args.model, args.folder, Path(tmp), extra)
        print(report(result), end="\n\n")
        for line in result["native_lines"][:20]:
            print(f"    {line}")


if __name__ == "__main__":
    main()
