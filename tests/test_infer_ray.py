"""`infer --engine ray` on a real local Ray cluster: the same rows as the local engine,
exactly once through a killed driver, a killed worker and --resume, and one-line errors."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import (
    accuracy_of,
    assert_exactly_once,
    brightness_classifier,
    brightness_folder,
    committed_blocks,
    errors_of,
    local_ray,
    make_zoo,
    paths,
    ray_command,
    read_rows,
    wait_for_blocks,
)

from cnnbench.cli import cli

pytest.importorskip("ray", reason="needs the ray extra: pip install 'cnnbench[ray]'")
PNG_4x4 = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    with local_ray(object_store_mb=300) as address:
        yield address


def infer(model: Path, inputs: Path, out: Path, *extra: str):
    args = ["infer", str(model), str(inputs), "-o", str(out), "--no-progress", *extra]
    return CliRunner().invoke(cli, args)


def assert_same_files(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()
    assert errors_of(a).read_bytes() == errors_of(b).read_bytes()


def test_ray_rows_equal_local_rows_with_bad_files(
    ray_address: str, tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    good, bad = make_zoo(tmp_path / "zoo", photo_jpeg)
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert infer(tiny_model, tmp_path / "zoo", local, "--top-k", "2").exit_code == 0
    summary = tmp_path / "s.json"
    ray_args = ["--engine", "ray", "--address", ray_address, "--summary", str(summary)]
    result = infer(tiny_model, tmp_path / "zoo", remote, "--top-k", "2", *ray_args)
    result_small = infer(
        tiny_model, tmp_path / "zoo", tmp_path / "small.csv", "--top-k", "2", *ray_args,
        "--block-size", "3", "--batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0 and result_small.exit_code == 0, result.output
    assert_same_files(local, remote)
    assert_same_files(local, tmp_path / "small.csv")
    doc = json.loads(summary.read_text())
    assert (doc["images"], doc["errors"]) == (len(good), len(bad))
    assert sum(doc["per_worker"].values()) == len(good) + len(bad)
    assert doc["precision"] == "fp32", "what the actors ran (it was left empty)"
    assert "provider cpu fp32, batch" in result.output
    assert f"{len(bad)} files failed" in result.output
    assert not Path(f"{remote}.parts").exists() and not Path(f"{remote}.lock").exists()
    before = remote.read_bytes()
    again = infer(tiny_model, tmp_path / "zoo", remote, "--top-k", "2", *ray_args, "--resume")
    assert again.exit_code == 0, again.output
    assert "0 images, 0 errors" in again.output and "ray: " not in again.output
    assert f"{len(good) + len(bad)} already done (resumed)" in again.output
    assert remote.read_bytes() == before, "a finished run's output is left as it is"
    lines = local.read_text(encoding="utf-8").splitlines(keepends=True)
    local.write_text("".join(lines[:-2]), encoding="utf-8")  # a local run, stopped
    refused = infer(tiny_model, tmp_path / "zoo", local, "--top-k", "2", *ray_args, "--resume")
    assert refused.exit_code == 1 and "lacks 2 files" in refused.output, refused.output
    assert "--engine local --resume" in refused.output


@pytest.mark.slow
def test_ray_matches_local_with_class_folders(ray_address: str, digits_run, tmp_path: Path):
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert infer(digits_run.onnx_path, digits_run.heldout, local, "--top-k", "3").exit_code == 0
    ray_args = ["--engine", "ray", "--address", ray_address, "--block-size", "50"]
    result = infer(digits_run.onnx_path, digits_run.heldout, remote, "--top-k", "3", *ray_args)
    assert result.exit_code == 0, result.output
    assert "true_label" in remote.read_text().splitlines()[0]
    assert_same_files(local, remote)
    assert "accuracy" in result.output


def test_ray_workers_run_openvino(
    ray_address: str, tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="pip install 'cnnbench[openvino]'")
    good, bad = make_zoo(tmp_path / "zoo", photo_jpeg)
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert infer(tiny_model, tmp_path / "zoo", local, "--provider", "openvino").exit_code == 0
    ray_args = ["--engine", "ray", "--address", ray_address, "--block-size", "3"]
    result = infer(tiny_model, tmp_path / "zoo", remote, "--provider", "openvino", *ray_args)
    assert result.exit_code == 0, result.output
    assert "openvino" in result.output, "the workers' provider is reported"
    assert_same_files(local, remote)
    assert len(paths(remote)) == len(good) and f"{len(bad)} files failed" in result.output


def test_ray_reports_the_workers_score_choice(
    ray_address: str, foreign_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    make_zoo(tmp_path / "zoo", photo_jpeg)
    outputs, docs = {}, {}
    for engine in ("local", "ray"):
        out, summary = tmp_path / f"{engine}.csv", tmp_path / f"{engine}.json"
        extra = ["--address", ray_address, "--block-size", "3"] if engine == "ray" else []
        args = ["--preset", "raw", "--engine", engine, "--summary", str(summary), *extra]
        result = infer(foreign_model, tmp_path / "zoo", out, *args)
        assert result.exit_code == 0, result.output
        outputs[engine], docs[engine] = out, json.loads(summary.read_text())
    assert_same_files(outputs["local"], outputs["ray"])
    assert docs["ray"]["scores"] == docs["local"]["scores"]
    # what held the batches: timed by the local engine's loop only
    assert docs["local"]["bound_by"] in ("inputs", "decode", "model", "write")
    assert "bound_by" not in docs["ray"] and "stage_seconds" not in docs["ray"]
    # decided by each actor from its first batch (a softmax inside): not from a spec
    assert docs["ray"]["scores"] == "raw (auto: the output rows are already probabilities)"


def test_ray_scores_one_score_per_image_as_two_classes(ray_address: str, tmp_path: Path) -> None:
    """A binary classifier's single unit: the actors' top-k spans both classes, and the
    rows are the local engine's (the actors capped --top-k at the output's one column)."""
    model = brightness_classifier(tmp_path / "binary.onnx", sigmoid=True)
    folder = brightness_folder(tmp_path / "photos")
    foreign = ["--preset", "raw", "--labels", str(folder / "labels.txt"), "--top-k", "2"]
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.csv"
        extra = ["--address", ray_address] if engine == "ray" else []
        result = infer(model, folder, out, *foreign, "--engine", engine, *extra)
        assert result.exit_code == 0 and "accuracy 100.00% (6/6)" in result.output, result.output
        outputs[engine] = out
    assert_same_files(outputs["local"], outputs["ray"])
    assert "label_2,score_2" in outputs["ray"].read_text().splitlines()[0]


def committed_rows(out: Path) -> int:
    """Files in the committed blocks: their predictions and errors parts."""
    if out.suffix == ".parquet":
        return sum(
            len(paths(out / n)) + len(paths(errors_of(out) / n)) for n in committed_blocks(out)
        )
    shards = [Path(f"{out}.parts") / n for n in committed_blocks(out)]
    return sum(
        len(paths(p)) + len(paths(p.with_name(f"{p.stem}.errors{p.suffix}"))) for p in shards
    )


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_kill_driver_then_resume_exactly_once(
    ray_address: str, tiny_model: Path, slow_folder: Path, tmp_path: Path, ext: str
) -> None:
    out = tmp_path / f"pred.{ext}"
    proc = subprocess.Popen(
        ray_command(tiny_model, slow_folder, out, ray_address),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_blocks(out, 3, proc)
    second = infer(tiny_model, slow_folder, out, "--engine", "ray", "--address", ray_address)
    assert second.exit_code == 1 and "another cnnbench infer is writing" in second.output
    proc.kill()  # SIGKILL: no handler runs; Ray ends the dead driver's tasks and actors
    proc.wait()
    done = committed_blocks(out)
    assert 3 <= len(done) < 25, "killed mid-run"
    assert ext == "parquet" or not out.exists(), "before the merge"
    rows = committed_rows(out)
    resumed = infer(
        tiny_model, slow_folder, out, "--engine", "ray", "--address", ray_address,
        "--batch-size", "8", "--block-size", "25", "--resume",
    )  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert f"{rows} already done (resumed)" in resumed.output
    assert_exactly_once(slow_folder, out)
    local = tmp_path / f"local.{ext}"
    args = (
        ("--batch-size", "8", "--block-size", "25") if ext == "parquet" else ("--batch-size", "8")
    )
    assert infer(tiny_model, slow_folder, local, *args).exit_code == 0
    if ext == "parquet":  # the same parts, file for file
        assert sorted(os.listdir(local)) == sorted(os.listdir(out))
        assert read_rows(local) == read_rows(out)
        assert read_rows(errors_of(local)) == read_rows(errors_of(out))
    else:
        assert_same_files(local, out)


def stopped_by_ctrl_c(command: list[str], out: Path) -> str:
    """Run a Ray job, Ctrl-C it once two blocks are committed; its stderr (exit 130)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_blocks(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    return stderr


@pytest.mark.slow
def test_sigint_keeps_finished_blocks_and_resume_finishes(
    ray_address: str, tiny_model: Path, slow_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred.csv"
    command = ray_command(tiny_model, slow_folder, out, ray_address)
    stderr = stopped_by_ctrl_c(command, out)
    assert f"finished blocks are saved in {out}.parts;" in stderr and "Traceback" not in stderr
    assert not out.exists() and not Path(f"{out}.lock").exists()
    rows = committed_rows(out)
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{rows} already done (resumed)" in done.stderr
    assert_exactly_once(slow_folder, out)


@pytest.mark.slow
@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_resumed_ray_job_counts_every_row_in_its_accuracy(
    ray_address: str, tiny_model: Path, slow_classes: Path, tmp_path: Path, ext: str
) -> None:
    """--engine ray stopped by Ctrl-C and finished with --resume: the earlier run's blocks
    (staged CSV parts, Parquet parts) are read back and scored, so the accuracy lines are
    those of one uninterrupted run; and again when a finished output is resumed."""
    local = infer(tiny_model, slow_classes, tmp_path / f"local.{ext}")
    assert local.exit_code == 0, local.output
    whole = accuracy_of(local.output)
    out = tmp_path / f"pred.{ext}"
    command = ray_command(tiny_model, slow_classes, out, ray_address)
    stopped_by_ctrl_c(command, out)
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "already done (resumed)" in done.stderr
    assert accuracy_of(done.stderr) == whole
    again = infer(
        tiny_model, slow_classes, out, "--engine", "ray", "--block-size", "25", "--resume"
    )
    assert again.exit_code == 0 and "ray:" not in again.output, again.output
    assert accuracy_of(again.output) == whole


def ray_workers(title: str) -> list[int]:
    """Processes of this test's Ray cluster (descendants of this process) whose title
    starts with `title`, e.g. 'ray::MapWorker(MapBatches(Predictor))'."""
    parents, titles = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            titles[int(entry)] = cmd.decode("utf-8", "replace")

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, t in titles.items() if t.startswith(title) and ours(pid)]


@pytest.mark.slow
def test_killed_worker_is_restarted_and_its_block_redone(
    ray_address: str, tiny_model: Path, slow_folder: Path, tmp_path: Path
) -> None:
    out, summary = tmp_path / "pred.csv", tmp_path / "s.json"
    proc = subprocess.Popen(
        ray_command(tiny_model, slow_folder, out, ray_address, "--summary", str(summary)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_blocks(out, 2, proc)
    actors = ray_workers("ray::MapWorker(MapBatches(Predictor))")
    assert len(actors) == 1, actors
    os.kill(actors[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert_exactly_once(slow_folder, out)
    workers = json.loads(summary.read_text())["per_worker"]
    assert len(workers) == 2, f"the killed actor was replaced by a new one: {workers}"
    assert sum(workers.values()) == len(paths(out)) + len(paths(tmp_path / "pred.errors.csv"))


def test_one_line_errors(
    ray_address: str, tiny_model: Path, tmp_path: Path, photo_jpeg, cuda_missing: str | None
) -> None:
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(photo_jpeg)
    out = tmp_path / "p.csv"

    def error(*extra: str, model: Path = tiny_model) -> str:
        result = infer(model, tmp_path / "img", out, "--engine", "ray", *extra)
        assert result.exit_code == 1, result.output
        lines = result.output.splitlines()
        assert all(line.startswith("ray: ") for line in lines[:-1]), result.output
        assert lines[-1].startswith("Error: ") and "Traceback" not in result.output
        return lines[-1]

    started = time.monotonic()
    assert "no Ray cluster at 127.0.0.1:1 (" in error("--address", "127.0.0.1:1")
    assert time.monotonic() - started < 10
    assert not os.path.exists(f"{out}.parts"), "said before anything is written"
    cluster = ["--address", ray_address]
    assert "does not fit the Ray cluster" in error(*cluster, "--workers", "5")
    assert "the Ray cluster has 0 GPUs" in error(*cluster, "--num-gpus-per-worker", "1")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    assert "cannot load" in error(*cluster, model=broken)
    # A model the driver reads but the workers cannot load: they are asked for CUDA,
    # which this machine does not have (the workers' own error comes back, in one line).
    if cuda_missing:
        workers_cuda = error(*cluster, "--provider", "cuda", "--num-gpus-per-worker", "0")
        assert "a Ray worker cannot load the model: provider cuda did not load" in workers_cuda
    assert not out.exists()
    # resuming parts written for another model is refused
    assert infer(tiny_model, tmp_path / "img", out, "--engine", "ray", *cluster).exit_code == 0
    os.makedirs(f"{out}.parts")
    Path(f"{out}.parts/manifest.json").write_text(json.dumps({"model_sha256": "0"}))
    assert "cannot resume" in error(*cluster, "--resume")


def test_ray_not_installed_says_how_to_install(tiny_model: Path, tmp_path: Path) -> None:
    """Python's own way to make an import fail: a None entry in sys.modules."""
    code = "import sys; sys.modules['ray'] = None; from cnnbench.cli import main; main()"
    args = ["infer", str(tiny_model), str(tmp_path), "-o", str(tmp_path / "p.csv")]
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--engine", "ray"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith("pip install 'cnnbench[ray]'"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_parts_count_only_for_the_same_files_and_job(tmp_path: Path) -> None:
    """The shards folder on its own: a block is done only for the very files it was
    written for, a different job is refused, and the merge follows block order."""
    from cnnbench.infer.errors import InferError
    from cnnbench.infer.sinks.parts import Parts, names_digest

    out, columns = tmp_path / "p.csv", ["path", "label", "score"]
    errors = str(tmp_path / "p.errors.csv")
    job = {"model_sha256": "m", "block_size": 2}
    digests = [names_digest(["a", "b"]), names_digest(["c"])]
    parts = Parts(str(out), errors, job, resume=False)
    parts.write_block(1, digests[1], columns, [], [{"path": "c", "error": "empty file"}])
    rows = [{"path": n, "label": "x", "score": 0.5} for n in ("a", "b")]
    parts.write_block(0, digests[0], columns, rows, [])
    again = Parts(str(out), errors, job, resume=True)
    assert again.is_done(0, digests[0]) and again.is_done(1, digests[1])
    assert not again.is_done(0, names_digest(["a", "new"])), "other files: redo the block"
    with pytest.raises(InferError, match="another model_sha256"):
        Parts(str(out), errors, job | {"model_sha256": "other"}, resume=True)
    again.finish(digests, columns)
    assert paths(out) == ["a", "b"] and paths(tmp_path / "p.errors.csv") == ["c"]
    assert not Path(f"{out}.parts").exists()
    assert not Parts(str(out), errors, job, resume=False).is_done(0, digests[0]), "a fresh run"


def test_resume_that_only_merges_starts_no_cluster(
    ray_address: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block finished, the merge did not (writing the output failed): --resume
    merges without connecting to any cluster."""
    import cnnbench.infer.sinks.parts

    def full_disk(*args: object, **kwargs: object) -> NoReturn:
        raise OSError(28, "No space left on device")

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(7):
        (folder / f"{i}.png").write_bytes(b"not a png" if i == 3 else PNG_4x4)
    out = tmp_path / "pred.csv"
    args = ("--engine", "ray", "--address", ray_address, "--block-size", "3")
    with monkeypatch.context() as patch:
        patch.setattr(cnnbench.infer.sinks.parts.Parts, "merge", full_disk)
        failed = infer(tiny_model, folder, out, *args)
    assert failed.exit_code != 0 and len(committed_blocks(out)) == 3
    assert "cannot write: No space left on device" in failed.output
    assert "Traceback" not in failed.output
    merged = infer(tiny_model, folder, out, "--engine", "ray", "--block-size", "3", "--resume")
    assert merged.exit_code == 0, merged.output
    assert "ray:" not in merged.output, "no cluster: neither connected to nor started"
    assert "7 already done (resumed)" in merged.output
    local = tmp_path / "local.csv"
    assert infer(tiny_model, folder, local).exit_code == 0
    assert_same_files(local, out)
    assert not Path(f"{out}.parts").exists()
    recorded = json.loads(Path(f"{out}.job.json").read_text())
    assert recorded == json.loads(Path(f"{local}.job.json").read_text()), "the same job"
    recorded["model_sha256"] = "0" * 64  # as if another model had written it
    Path(f"{out}.job.json").write_text(json.dumps(recorded))
    again = infer(tiny_model, folder, out, "--engine", "ray", "--resume")
    assert again.exit_code != 0 and "another model_sha256" in again.output


def test_ray_reads_members_of_tar_shards(
    ray_address: str, tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """Workers read each member alone by its range in the shard (the driver ships the
    listing, not the bytes): the local engine's rows; a compressed shard is one line."""
    import io
    import tarfile

    image = cv2.imdecode(np.frombuffer(photo_jpeg, np.uint8), cv2.IMREAD_COLOR)
    for k, suffix in enumerate(("0.tar", "1.tar", "2.tar.gz")):
        with tarfile.open(tmp_path / f"s-{suffix}", "w:gz" if "gz" in suffix else "w") as tar:
            for i in range(5):
                shifted = cv2.imencode(".jpg", np.roll(image, 30 * (i + k), axis=1))[1]
                for name, data in ((f"{i:04d}.jpg", shifted.tobytes()), (f"{i:04d}.cls", b"1")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    pattern = tmp_path / "s-{0..1}.tar"
    local, remote = tmp_path / "local.csv", tmp_path / "ray.csv"
    assert infer(tiny_model, pattern, local).exit_code == 0
    result = infer(
        tiny_model,
        pattern,
        remote,
        "--engine",
        "ray",
        "--address",
        ray_address,
        "--block-size",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert_same_files(local, remote)
    assert len(paths(remote)) == 10 and paths(remote)[0] == "s-0.tar/0000.jpg"
    # by URL from Python's http.server, which ignores Range: members cut from the shard
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/s-0.tar"
    try:
        by_url = [
            infer(tiny_model, url, tmp_path / "url-local.csv"),  # type: ignore[arg-type]
            infer(
                tiny_model,
                url,
                tmp_path / "url-ray.csv",
                "--engine",
                "ray",
                "--address",
                ray_address,
            ),  # type: ignore[arg-type]
        ]
    finally:
        server.shutdown()
        server.server_close()
    assert all(r.exit_code == 0 for r in by_url), by_url[1].output
    assert_same_files(tmp_path / "url-local.csv", tmp_path / "url-ray.csv")
    assert len(paths(tmp_path / "url-ray.csv")) == 5
    refused = infer(
        tiny_model,
        tmp_path / "s-2.tar.gz",
        tmp_path / "gz.csv",
        "--engine",
        "ray",
        "--address",
        ray_address,
    )
    assert refused.exit_code == 1 and "uncompressed shards (.tar) only" in refused.output
    assert "Traceback" not in refused.output


class _SlowPhotos(http.server.ThreadingHTTPServer):
    """Serves one photo at every path, each answer held DELAY_S, and keeps the most
    requests it had in flight at once."""

    DELAY_S = 0.3

    def __init__(self, photo: bytes) -> None:
        photos = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with photos.lock:
                    photos.now += 1
                    photos.most = max(photos.most, photos.now)
                time.sleep(photos.DELAY_S)
                with photos.lock:  # before the answer: a client that waits for it to ask
                    photos.now -= 1  # again is never counted twice (a full run once saw 2)
                self.send_response(200)
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.now = self.most = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_ray_workers_read_urls_io_threads_at_a_time(
    ray_address: str, tiny_model: Path, photo_jpeg: bytes, tmp_path: Path
) -> None:
    """A decode task reads its batch's URLs --io-threads at a time (the workers' own
    reads, not the driver's): one batch of 12, one block, so that one task reads them."""
    server = _SlowPhotos(photo_jpeg)
    try:
        port = server.server_address[1]
        listing = tmp_path / "urls.txt"
        listing.write_text("".join(f"http://127.0.0.1:{port}/p{i:02d}.jpg\n" for i in range(12)))
        most = {}
        for threads in (1, 6):
            server.most = 0
            out = tmp_path / f"t{threads}.csv"
            result = CliRunner().invoke(
                cli,
                [
                    "infer", str(tiny_model), f"@{listing}", "-o", str(out), "--no-progress",
                    "--engine", "ray", "--address", ray_address, "--block-size", "12",
                    "--batch-size", "12", "--io-threads", str(threads),
                ],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert len(paths(out)) == 12
            most[threads] = server.most
    finally:
        server.shutdown()
    assert most[1] == 1, most
    assert most[6] >= 4, most


@pytest.mark.parametrize("progress", [False, True])
def test_ray_data_errors_stay_off_the_console(progress: bool) -> None:
    """Ray Data logs a cancelled or failed task, and its stats actor gone after the
    driver disconnects, with tracebacks (a Ctrl-C under load did): on the console the
    job's own one line stands for them, with progress on or off. Ray Data's own console
    handler, its stream swapped for a buffer here."""
    import io

    import ray.data  # noqa: F401  (sets up Ray Data's logging)

    from cnnbench.infer.engines.ray import _quiet_ray_data_console

    logger = logging.getLogger("ray.data._internal.stats")
    console = next(
        h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "PlainRayHandler"
    )
    shown = io.StringIO()
    stream = console.setStream(shown)
    try:
        _quiet_ray_data_console(progress)
        try:
            raise RuntimeError("Ray is not initialized")
        except RuntimeError as e:
            logger.warning("Error occurred during update_execution_metrics", exc_info=e)
            logger.error("An exception was raised from a task")
        logger.info("Execution plan: progress")
        logger.warning("Plain warning")
    finally:
        console.setStream(stream)
    assert "Traceback" not in shown.getvalue() and "raised from a task" not in shown.getvalue()
    assert "update_execution_metrics" not in shown.getvalue()
    assert ("Execution plan: progress" in shown.getvalue()) == progress
    assert ("Plain warning" in shown.getvalue()) == progress
