"""Every export proves itself: ONNX checker, ONNX Runtime against Keras at the precision's
tolerance on two batch sizes, and OpenCV DNN agreement."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnbench.convert.errors import ConvertError
from cnnbench.infer.contract import INPUT_NAME

# (max abs difference of probabilities, minimum top-1 agreement)
TOLERANCES = {"fp32": (1e-4, 1.0), "fp16": (1e-2, 0.99), "int8": (None, 0.98)}
BATCHES = (1, 7)


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    limit: str
    ok: bool | None  # None: informative only


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs difference, top-1 agreement) of two probability batches."""
    return float(np.max(np.abs(ref - got))), float(np.mean(ref.argmax(1) == got.argmax(1)))


def ort_checks(
    reference: Callable[[np.ndarray], np.ndarray],
    path: str,
    images_for: Callable[[int], np.ndarray],
    precision: str,
) -> list[Check]:
    import onnxruntime as ort

    max_diff, min_agree = TOLERANCES[precision]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    checks = []
    for n in BATCHES:
        images = images_for(n)
        diff, agree = compare(reference(images), session.run(None, {INPUT_NAME: images})[0])
        if max_diff is not None:
            checks.append(
                Check(
                    f"ORT vs Keras max|dp| (batch {n})",
                    f"{diff:.2e}",
                    f"<= {max_diff:.0e}",
                    diff <= max_diff,
                )
            )
        checks.append(
            Check(
                f"ORT vs Keras top-1 (batch {n})",
                f"{agree:.1%}",
                f">= {min_agree:.0%}",
                agree >= min_agree,
            )
        )
    return checks


def opencv_check(path: str, session_probs: np.ndarray, images: np.ndarray) -> Check:
    """OpenCV DNN reads the file and agrees on top-1 (informative: OpenCV lacks some ops)."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(path)
        net.setInput(images)
        probs = net.forward()
    except cv2.error as e:
        return Check(
            "OpenCV DNN top-1",
            f"not loadable: {str(e).strip().splitlines()[-1]:.60}",
            "informative",
            None,
        )
    _, agree = compare(session_probs, probs.reshape(session_probs.shape))
    return Check("OpenCV DNN top-1", f"{agree:.1%}", "informative", None)


def verify_export(
    reference: Callable[[np.ndarray], np.ndarray],
    path: str,
    facts: object,
    precision: object,
    report: Callable[[str], None],
) -> list[Check]:
    """Run every check; print the table through `report`; raise if any check fails."""
    import onnx
    import onnxruntime as ort

    from cnnbench.convert.export import random_images

    try:
        onnx.checker.check_model(path, full_check=True)
        checks = [Check("onnx.checker (full)", "passed", "must pass", True)]
    except onnx.checker.ValidationError as e:
        checks = [Check("onnx.checker (full)", str(e).splitlines()[0][:60], "must pass", False)]
    checks += ort_checks(reference, path, lambda n: random_images(facts, n, seed=n), str(precision))
    images = random_images(facts, 4, seed=99)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    checks.append(opencv_check(path, session.run(None, {INPUT_NAME: images})[0], images))
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok" if c.ok else ("--" if c.ok is None else "FAIL")
        report(f"  {c.name:<{width}}  {c.value:>12}  {c.limit:<12} {mark}")
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        raise ConvertError(
            f"verification failed ({'; '.join(failed)}); nothing was written. "
            "Pass --no-verify to keep the file anyway"
        )
    return checks
