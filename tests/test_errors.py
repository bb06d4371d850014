"""Bad input: one clear line, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import pickle
import resource
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error, run


def test_missing_model_file(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(tmp_path / "nope.onnx"), str(tmp_path), "-o", str(out)])
    assert_one_line_error(code, output, "model file not found")
    assert not out.exists()


def test_a_model_given_by_url_says_to_copy_it(tmp_path: Path) -> None:
    """Images may be URLs, a model may not: each command says so in one line (it said
    'model file not found' of a URL that may well be there). Nothing is asked of it."""
    url = "s3://models/resnet50.onnx"  # no server: only the name is looked at
    out = tmp_path / "p.csv"
    for args in (
        ["infer", url, str(tmp_path), "-o", str(out)],
        ["bench", "--model", url],
        ["inspect", url],
        ["tune", url, "--images", str(tmp_path), "-o", str(tmp_path / "plan.json")],
        ["convert", url.replace(".onnx", ".keras"), "-o", str(tmp_path / "m.onnx")],
    ):
        code, output = run(args)
        assert_one_line_error(code, output, "is a URL: a model is read from a local file")


def test_model_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model")
    (tmp_path / "imgs").mkdir()
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(bad), str(tmp_path / "imgs"), "-o", str(out)])
    assert_one_line_error(code, output, "cannot load")
    assert not out.exists()


@pytest.mark.slow
def test_folder_with_no_images(digits_run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "p.csv"
    code, output = run(["infer", str(digits_run.onnx_path), str(empty), "-o", str(out)])
    assert_one_line_error(code, output, "no images found")
    assert not out.exists()


def test_unknown_architecture(tmp_path: Path) -> None:
    code, output = run(["train", "lenet9", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "unknown architecture 'lenet9'", "mnist_cnn")
    assert not (tmp_path / "run").exists()


def test_convert_not_a_keras_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.keras"
    bad.write_text("plain text")
    out = tmp_path / "m.onnx"
    code, output = run(["convert", str(bad), "-o", str(out)])
    assert_one_line_error(code, output, "not a Keras .keras file")
    assert not out.exists()


def test_bench_bad_batch_sizes(tmp_path: Path) -> None:
    code, output = run(["bench", "--model", str(tmp_path / "m.onnx"), "--batch-sizes", "1,0"])
    assert code != 0
    assert "positive integers" in output


def class_folder(root: Path, classes: dict[str, int]) -> Path:
    """A folder with `count` real-photo crops per class (0: the class holds a text file)."""
    from cnnbench.training.samples import write_photo_folder

    for name, count in classes.items():
        if count:
            write_photo_folder(str(root), per_class=count, size=24, photos=(name,))
        else:
            (root / name).mkdir(parents=True)
            (root / name / "readme.txt").write_text("no images")
    return root


def test_train_one_class(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3})
    code, output = run(["train", "mlp", "--data", str(data), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "1 class folder", "at least two")
    assert not (tmp_path / "run").exists()


def test_train_empty_class(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 0})
    code, output = run(["train", "mlp", "--data", str(data), "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "flower has no images")
    assert not (tmp_path / "run").exists()


def test_train_missing_data_folder(tmp_path: Path) -> None:
    code, output = run(["train", "mlp", "--data", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert_one_line_error(code, output, "data folder not found")


def test_train_image_size_too_small(tmp_path: Path) -> None:
    args = ["train", "alexnet", "--img-size", "32", "--out", str(tmp_path / "run")]
    code, output = run(args)
    assert_one_line_error(code, output, "too small for alexnet", "minimum is 57")
    assert not (tmp_path / "run").exists()


def test_train_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    args = ["train", "mlp", "--img-size", "8", "--epochs", "1", "--out", str(blocker / "run")]
    code, output = run(args)
    assert_one_line_error(code, output, "cannot create run folder", "choose another --out")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--weights", "imagenet"], "--weights is for architectures with a pretrained base"),
        (["--freeze-base"], "mnist_cnn has none"),
    ],
)
def test_train_fine_tuning_needs_a_base(tmp_path: Path, args: list[str], needle: str) -> None:
    code, output = run(["train", "mnist_cnn", *args, "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, needle)
    assert not (tmp_path / "run").exists()


def test_train_val_folder_with_other_classes(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 2, "flower": 2})
    val = class_folder(tmp_path / "val", {"china": 2, "coffee": 2})
    args = ["train", "mlp", "--data", str(data), "--val", str(val), "--out", str(tmp_path / "r")]
    code, output = run(args)
    assert_one_line_error(code, output, "has classes ['china', 'coffee']")


@pytest.mark.slow
def test_train_imagenet_without_internet(tmp_path: Path) -> None:
    """No network here: the download fails and says how to pass a local file instead."""
    from cnnbench.training.weights import IMAGENET_FILES

    home = os.environ.get("KERAS_HOME", Path.home() / ".keras")
    cached = Path(home, "models", Path(IMAGENET_FILES["resnet50"]).name)
    if cached.exists():
        pytest.skip(f"the weights are already in the Keras cache: {cached}")
    data = class_folder(tmp_path / "data", {"china": 2, "flower": 2})
    args = ["train", "resnet50", "--data", str(data), "--img-size", "32", "--weights", "imagenet"]
    code, output = run([*args, "--out", str(tmp_path / "run")])
    assert_one_line_error(
        code, output, "cannot download the ImageNet weights", "--weights /path/to"
    )
    assert not (tmp_path / "run").exists()


def test_train_undecodable_image(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 3})
    (data / "flower" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["train", "mlp", "--data", str(data), "--img-size", "8", "--epochs", "1"]
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "earlier.txt").write_text("a file of an earlier run")
    for out in (tmp_path / "run", tmp_path / "kept"):
        code, output = run([*args, "--out", str(out)])
        assert_one_line_error(code, output, "cannot decode", "broken.jpg", "fix or remove it")
    assert not (tmp_path / "run").exists(), "a failed run leaves no run folder of its own"
    assert os.listdir(tmp_path / "kept") == ["earlier.txt"], "a folder given is left as it was"


def test_train_that_diverges_writes_nothing(tmp_path: Path) -> None:
    """A learning rate far too high: the loss turns NaN, and a model of NaN weights was
    written (validation accuracy at chance), which convert then failed to verify."""
    data = class_folder(tmp_path / "data", {"china": 6, "flower": 6})
    args = ["train", "mlp", "--data", str(data), "--img-size", "8", "--epochs", "2"]
    code, output = run([*args, "--lr", "1e12", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "training diverged: the loss became NaN", "lower --lr")
    assert not (tmp_path / "run").exists()
    code, output = run([*args, "--lr", "-0.1", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, output, "--lr")
    code, output = run([*args, "--lr", "0.001", "--out", str(tmp_path / "run")])
    assert code == 0, output
    # a disk that cannot take the run (here a file size limit: EFBIG, as a full disk's
    # ENOSPC): one line naming the run folder, which is removed (a traceback before)
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # noqa: E731
    command = [sys.executable, "-m", "cnnbench", *args, "--out", str(tmp_path / "full")]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit)
    assert_one_line_error(done.returncode, done.stderr, f"cannot write {tmp_path / 'full'}: ")
    assert not (tmp_path / "full").exists()


@pytest.fixture(scope="module")
def not_onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files people pass as a model that are something else, each written as its own tool
    writes it (Keras's in a process of its own)."""
    root = tmp_path_factory.mktemp("not-onnx")
    script = (
        "import sys, keras; m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]); "
        "m.save(sys.argv[1]); m.save(sys.argv[2]); m.export(sys.argv[3], verbose=False)"
    )
    files = {"keras": root / "m.keras", "hdf5": root / "m.h5", "savedmodel": root / "saved"}
    subprocess.run([sys.executable, "-c", script, *map(str, files.values())], check=True)
    files["plan"] = root / "plan.json"
    files["plan"].write_text(json.dumps({"schema": "cnnbench.plan/2", "model": "plan.int8.onnx"}))
    files["pytorch"] = root / "m.pt"  # torch.save's layout: a zip with archive/data.pkl
    with zipfile.ZipFile(files["pytorch"], "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"fc.weight": [0.5]}, protocol=2))
        z.writestr("archive/version", "3\n")
    files["pickle"] = root / "m.pth"  # torch.save before 1.6: a bare pickle
    files["pickle"].write_bytes(pickle.dumps({"fc.weight": [0.5]}, protocol=2))
    files["tflite"] = root / "m.tflite"  # the FlatBuffer's identifier at bytes 4-8
    files["tflite"].write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    files["folder"] = root / "photos"
    files["folder"].mkdir()
    files["text"] = root / "m.onnx"
    files["text"].write_text("this is not a model")
    return files


NOT_ONNX_SAYS = {
    "keras": "it is a Keras model: export it first (cnnbench convert",
    "hdf5": "it is an HDF5 file (a Keras .h5 model?)",
    "plan": "it is a plan from cnnbench tune, not a model: classify with cnnbench infer --plan",
    "pytorch": "it is a PyTorch checkpoint, not ONNX: export the model with torch.onnx.export",
    "pickle": "it is a Python pickle (a PyTorch .pt or .pth?)",
    "tflite": "it is a TensorFlow Lite model: convert it to ONNX first",
    "text": "it is not an ONNX model (ONNX Runtime cannot parse it)",
    "savedmodel": "it is a TensorFlow SavedModel: export it to ONNX first",
    "folder": "it is a folder, not a model file: give the .onnx model first, then the inputs",
}


@pytest.mark.parametrize("kind", list(NOT_ONNX_SAYS))
def test_a_model_that_is_not_onnx_says_what_it_is(
    not_onnx_files: dict[str, Path], tiny_folder: Path, kind: str, tmp_path: Path
) -> None:
    model, says = str(not_onnx_files[kind]), NOT_ONNX_SAYS[kind]
    out = tmp_path / "p.csv"
    code, output = run(["infer", model, str(tiny_folder), "-o", str(out), "--provider", "cpu"])
    assert_one_line_error(code, output, says)
    assert not out.exists()
    if kind in ("savedmodel", "folder"):  # the other commands take files only (click says so)
        return
    code, output = run(["bench", "--model", model, "--provider", "cpu", "--duration", "0.1"])
    assert_one_line_error(code, output, says)
    if kind != "text":  # inspect parses with onnx itself: its own reason
        assert_one_line_error(*run(["inspect", model]), says)
    if kind not in ("keras", "hdf5"):  # convert reads .keras; an .h5 is refused as not .keras
        assert_one_line_error(*run(["convert", model, "-o", str(tmp_path / "m.onnx")]), says)


@pytest.mark.parametrize("kind", ["plan", "text"])
def test_openvino_says_in_one_line_why_a_model_does_not_load(
    not_onnx_files: dict[str, Path], tiny_folder: Path, kind: str, tmp_path: Path
) -> None:
    """As a command: OpenVINO's frontends log each failed parse on the process's stderr."""
    args = ["infer", str(not_onnx_files[kind]), str(tiny_folder), "-o", str(tmp_path / "p.csv")]
    done = subprocess.run(
        [sys.executable, "-m", "cnnbench", *args, "--provider", "openvino"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and not done.stdout.strip()
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "Exception from" not in done.stderr
    assert (NOT_ONNX_SAYS[kind] if kind == "plan" else "Unable to read the model") in done.stderr


def test_a_model_copied_without_its_weights_says_to_copy_them(
    tiny_model: Path, tiny_folder: Path, tmp_path: Path
) -> None:
    """Large models keep their weights in a file of their own (ONNX external data)."""
    import onnx

    model = tmp_path / "m.onnx"
    onnx.save(
        onnx.load(tiny_model), model, save_as_external_data=True, location="m.onnx.data",
        size_threshold=0,
    )  # fmt: skip
    (tmp_path / "m.onnx.data").unlink()
    says = "it keeps its weights in m.onnx.data (ONNX external data), which is not beside it"
    out = str(tmp_path / "p.csv")
    for provider in ("cpu", "openvino"):
        code, output = run(
            ["infer", str(model), str(tiny_folder), "-o", out, "--provider", provider]
        )
        assert_one_line_error(code, output, says)
    code, output = run(["bench", "--model", str(model), "--provider", "cpu", "--duration", "0.1"])
    assert_one_line_error(code, output, says)
    assert_one_line_error(*run(["convert", str(model), "-o", str(tmp_path / "w.onnx")]), says)


def test_train_takes_odd_names_and_says_why_a_file_fails(tmp_path: Path) -> None:
    """A symlink loop beside the class folders is no class; an image whose name is not
    UTF-8 trains; a named pipe (which would block a reader for good) is one line saying
    what it is."""
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 3})
    os.symlink("loop_b", data / "loop_a")
    os.symlink("loop_a", data / "loop_b")
    photo = next((data / "china").iterdir()).read_bytes()
    (data / "china" / os.fsdecode(b"latin1-\xe9.jpg")).write_bytes(photo)
    args = ["train", "mlp", "--data", str(data), "--img-size", "8", "--epochs", "1"]
    code, output = run([*args, "--out", str(tmp_path / "run")])
    assert code == 0, output
    assert "on 2 images" in output  # validation: one of each class's 3 or 4
    os.mkfifo(data / "flower" / "pipe.jpg")
    code, output = run([*args, "--out", str(tmp_path / "run2")])
    assert_one_line_error(code, output, "pipe.jpg", "not a regular file but a named pipe")
    assert not (tmp_path / "run2").exists()


def test_no_command_writes_over_a_device(tiny_model: Path, tmp_path: Path) -> None:
    """Reports and models are written beside their path and renamed onto it: as root,
    `bench --json /dev/null` or `convert -o /dev/null` replaced the device with a plain
    file (and `/dev/stdout`'s link likewise). Each is one line, and /dev/null stays."""
    photo = tmp_path / "x.png"
    photo.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    model = str(tiny_model)
    for args in (
        ["bench", "--model", model, "--json", os.devnull],
        ["bench", "--model", model, "--csv", "/dev/stdout"],
        ["inspect", model, "--json", os.devnull],
        ["convert", model, "-o", os.devnull],
        ["infer", model, str(photo), "-o", str(tmp_path / "p.csv"), "--summary", os.devnull],
    ):
        code, output = run(args)
        assert_one_line_error(code, output, "a pipe or a device is not a file to write")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_a_run_folder_inside_the_data_is_refused(tmp_path: Path) -> None:
    """`--out data/cat` wrote confusion.png and history.png into class 'cat': the next
    training took them as two more cat images. `--out data` put them beside the classes;
    `--export-val data/heldout` made the validation images a class."""
    data = class_folder(tmp_path / "data", {"china": 3, "flower": 3})
    args = ["train", "mlp", "--data", str(data), "--img-size", "8", "--epochs", "1"]
    for out in (data / "china", data):
        before = sorted(p.name for p in out.iterdir())
        code, output = run([*args, "--out", str(out)])
        assert_one_line_error(code, output, "is inside --data", "choose another --out")
        assert sorted(p.name for p in out.iterdir()) == before
    held = data / "heldout"
    code, output = run([*args, "--out", str(tmp_path / "run"), "--export-val", str(held)])
    assert_one_line_error(code, output, "--export-val", "is inside --data")
    assert not held.exists() and not (tmp_path / "run").exists()
    code, output = run([*args, "--out", str(tmp_path / "run")])
    assert code == 0, output


@pytest.mark.parametrize(
    ("sig", "said"),
    [(signal.SIGINT, "interrupted: "), (signal.SIGTERM, "stopped by SIGTERM: ")],
)
def test_a_stopped_training_leaves_no_run_folder(
    tmp_path: Path, sig: signal.Signals, said: str
) -> None:
    """Ctrl-C, or the SIGTERM a scheduler sends, in the middle of a training: the run
    folder made for it is removed, one line says so, exit 128 + the signal. SIGTERM left
    a half-made run folder (no clean-up ran); Ctrl-C said "Aborted!" and exited 1."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cnnbench", "train", "mlp", "--epochs", "500"]
    proc = subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not out.exists():  # made once the checks passed, before the first epoch
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert f"{said}the command stopped before its end" in stderr and "Traceback" not in stderr
    assert not out.exists()
