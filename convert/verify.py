"""Every export proves itself: ONNX checker, ONNX Runtime against Keras at the precision's
tolerance on two batch sizes of random images and on real images when given, and OpenCV
DNN agreement (informative)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnbench.convert.config import Precision
from cnnbench.convert.errors import ConvertError
from cnnbench.convert.keras_model import ModelFacts
from cnnbench.convert.real_images import RealImages
from cnnbench.errors import first_line
from cnnbench.infer.runtime.contract import INPUT_NAME

# (max abs difference of probabilities, minimum top-1 agreement); None: informative only
TOLERANCES: dict[Precision, tuple[float | None, float | None]] = {
    Precision.FP32: (1e-4, 1.0),
    Precision.FP16: (1e-2, 0.99),
    Precision.INT8: (None, None),  # the accuracy control's --max-drop rows gate int8
}
BATCHES = (1, 7)
RUN_CHUNK = 16


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    limit: str
    ok: bool | None  # None: informative only


@dataclass(frozen=True)
class ImageSet:
    name: str
    images: np.ndarray  # uint8 NHWC
    real: bool


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs difference, top-1 agreement) of two probability batches."""
    return float(np.max(np.abs(ref - got))), float(np.mean(ref.argmax(1) == got.argmax(1)))


def random_images(facts: ModelFacts, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *facts.size, facts.channels), dtype=np.uint8)


def image_sets(facts: ModelFacts, real: RealImages | None) -> list[ImageSet]:
    sets = [ImageSet(f"random, batch {n}", random_images(facts, n, seed=n), False) for n in BATCHES]
    if real is not None:
        sets.append(ImageSet(real.name, real.images, True))
    return sets


def input_dtype(session: Any) -> type[np.generic]:
    return np.float32 if session.get_inputs()[0].type == "tensor(float)" else np.uint8


def run_session(session: Any, images: np.ndarray) -> np.ndarray:
    """Probabilities for uint8 images, cast to the session's input type, in chunks (of the
    model's batch, the last one padded, where its batch dimension is fixed)."""
    dtype = input_dtype(session)
    fixed = session.get_inputs()[0].shape[0]
    rows = fixed if isinstance(fixed, int) and fixed > 0 else RUN_CHUNK
    out = []
    for i in range(0, len(images), rows):
        chunk = images[i : i + rows]
        x = np.zeros((rows if fixed == rows else len(chunk), *images.shape[1:]), dtype)
        x[: len(chunk)] = chunk
        out.append(session.run(None, {INPUT_NAME: x})[0][: len(chunk)])
    return np.concatenate(out)


def set_checks(
    image_set: ImageSet, ref: np.ndarray, got: np.ndarray, precision: Precision, against: str
) -> list[Check]:
    max_diff, min_agree = TOLERANCES[precision]
    diff, agree = compare(ref, got)
    return [
        Check(
            f"ORT vs {against} max|dp| ({image_set.name})",
            f"{diff:.2e}",
            "informative" if max_diff is None else f"<= {max_diff:.0e}",
            None if max_diff is None else diff <= max_diff,
        ),
        Check(
            f"ORT vs {against} top-1 ({image_set.name})",
            f"{agree:.1%}",
            "informative" if min_agree is None else f">= {min_agree:.0%}",
            None if min_agree is None else agree >= min_agree,
        ),
    ]


def ort_checks(
    reference: Callable[[np.ndarray], np.ndarray],
    session: Any,
    sets: list[ImageSet],
    precision: Precision,
    against: str = "Keras",
) -> list[Check]:
    checks = []
    for image_set in sets:
        ref = reference(image_set.images)
        got = run_session(session, image_set.images)
        checks += set_checks(image_set, ref, got, precision, against)
    return checks


def open_session(path: str, precision: Precision) -> Any:
    """A CPU session without the memory arena, which would keep its peak for good."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = False
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types, not exported
        raise ConvertError(
            f"ONNX Runtime cannot load the {precision.value} export: {first_line(e)}"
        ) from e


def checker_check(path: str) -> Check:
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except onnx.checker.ValidationError as e:
        return Check("onnx.checker (full)", first_line(e)[:60], "must pass", False)
    return Check("onnx.checker (full)", "passed", "must pass", True)


def opencv_engines() -> list[tuple[int | None, str]]:
    """Every ONNX engine this OpenCV has, its default first: OpenCV 4 has none to choose
    (one importer), 5.0 `ENGINE_AUTO` and `ENGINE_CLASSIC`, 5.1 `ENGINE_AUTO`,
    `ENGINE_OPENCV` and `ENGINE_ORT`. Which one loads which precision is a fact of the
    version (docs/convert.md), so none is assumed here."""
    import cv2

    names = sorted(a for a in dir(cv2.dnn) if a.startswith("ENGINE_") and a != "ENGINE_AUTO")
    engines: list[tuple[int | None, str]] = [(getattr(cv2.dnn, "ENGINE_AUTO", None), "default")]
    return engines + [(getattr(cv2.dnn, a), a.removeprefix("ENGINE_").lower()) for a in names]


def _opencv_forward(path: str, images: np.ndarray, engine: int | None) -> np.ndarray:
    import cv2

    net = cv2.dnn.readNetFromONNX(path) if engine is None else cv2.dnn.readNetFromONNX(path, engine)
    net.setInput(images)
    return net.forward()


def opencv_check(path: str, session_probs: np.ndarray, images: np.ndarray) -> Check:
    """OpenCV DNN reads the file and agrees on top-1 (informative: OpenCV lacks some ops).
    Each engine this OpenCV has is tried, its default first; the check names the one that
    loaded, or says that none could with OpenCV's own message for each."""
    import cv2

    reasons = []
    for engine, name in opencv_engines():
        try:
            probs = _opencv_forward(path, images, engine)
        except cv2.error as e:
            # cv2.error carries the failed check and the function apart from the source path;
            # OpenCV 4's parse errors span lines: the table row stays one line.
            said = " ".join((getattr(e, "err", "") or str(e)).split())
            func = getattr(e, "func", "")
            reasons.append(f"{name}: {said} in {func}" if func else f"{name}: {said}")
            continue
        _, agree = compare(session_probs, probs.reshape(session_probs.shape))
        return Check(f"OpenCV DNN top-1 ({name} engine)", f"{agree:.1%}", "informative", None)
    loadable = f"OpenCV {cv2.__version__} cannot load it ({'; '.join(reasons)})"
    return Check("OpenCV DNN top-1", loadable, "informative", None)


def print_table(checks: list[Check], report: Callable[[str], None]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok" if c.ok else ("--" if c.ok is None else "FAIL")
        report(f"  {c.name:<{width}}  {c.value:>12}  {c.limit:<12} {mark}")


def verify_export(
    reference: Callable[[np.ndarray], np.ndarray],
    path: str,
    facts: ModelFacts,
    precision: Precision,
    report: Callable[[str], None],
    real: RealImages | None = None,
    *,
    against: str = "Keras",
    extra: Sequence[Check] = (),
) -> list[Check]:
    """Run every check; print the table through `report` (with the `extra` rows, e.g. the
    int8 accuracy control's); raise if any check fails. `against`: the reference's name."""
    checks = [checker_check(path)]
    session = open_session(path, precision)
    checks += ort_checks(reference, session, image_sets(facts, real), precision, against)
    checks += extra
    images = random_images(facts, 4, seed=99).astype(input_dtype(session))
    probs = run_session(session, images)
    del session  # OpenCV loads its own copy of the weights
    checks.append(opencv_check(path, probs, images))
    report(f"verification ({precision.value}):")
    print_table(checks, report)
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        raise ConvertError(
            f"verification failed ({'; '.join(failed)}); nothing was written. "
            "Pass --no-verify to keep the file anyway"
        )
    return checks
