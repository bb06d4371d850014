"""The artefacts people look at after a run: history.csv/.png, report.txt, confusion.png,
config.json. Plots use matplotlib's object API (no pyplot, no global backend)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

HISTORY_FILE = "history.csv"
HISTORY_PLOT = "history.png"
REPORT_FILE = "report.txt"
CONFUSION_PLOT = "confusion.png"
CONFIG_FILE = "config.json"


def write_history(stages: Sequence[dict[str, list[float]]], path: str) -> list[dict[str, Any]]:
    """One row per epoch over all training stages; returns the rows."""
    rows: list[dict[str, Any]] = []
    for stage, history in enumerate(stages, start=1):
        for i in range(len(next(iter(history.values()), []))):
            rows.append({"epoch": len(rows) + 1, "stage": stage} | {
                k: float(v[i]) for k, v in history.items()
            })  # fmt: skip
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return rows


def plot_history(rows: list[dict[str, Any]], path: str) -> None:
    """Loss and accuracy per epoch, training and validation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = [r["epoch"] for r in rows]
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if rows and key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], marker="o", label=label)
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    fig.savefig(path, dpi=100)


def write_class_report(
    targets: np.ndarray, predicted: np.ndarray, labels: Sequence[str], path: str
) -> float:
    """Per-class precision, recall and F1 on the validation images; returns the accuracy."""
    from sklearn.metrics import classification_report

    accuracy = float(np.mean(targets == predicted)) if len(targets) else 0.0
    text = classification_report(
        targets,
        predicted,
        labels=list(range(len(labels))),
        target_names=list(labels),
        digits=3,
        zero_division=0,
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"validation images: {len(targets)}, accuracy: {accuracy:.4f}\n\n{text}")
    return accuracy


def plot_confusion(
    targets: np.ndarray, predicted: np.ndarray, labels: Sequence[str], path: str
) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(targets, predicted, labels=list(range(len(labels))))
    side = min(12, 2 + 0.5 * len(labels))
    fig = Figure(figsize=(side, side), layout="constrained")
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=90)
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (validation)")
    if len(labels) <= 30:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
    fig.savefig(path, dpi=100)


def write_config(record: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
