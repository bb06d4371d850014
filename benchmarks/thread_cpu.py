"""Where an `infer` job's CPU goes, thread by thread: local disk against `s3://` (issue 22).

The same mnist_cnn job over --photos 500x375 JPEGs, from the local folder and from
s3://photos/set/ on s3rver (the benchmark's S3 server, benchmarks/sources_bench.py), run
alternately in one process, --rounds times. For each run, the CPU each thread spent per
image in the run's middle (from 0.5 s after its start to 0.3 s before its end; threads
named by Python's `threading`, ONNX Runtime's and other native threads as `native`), the
idle time of the client's cores (/proc/stat), the server's CPU, and the img/s of the
whole run (as `infer` reports it, and of the whole `run_infer` call: start-up included).
Then each round's s3/local ratio of img/s and of CPU per image, median and range: a wall
ratio under the CPU ratio means the client's core waited.

Rows as in sources_bench.py: `pinned` (the default: the server on core 1 alone, the job
on core 0 alone with one decode thread and one ONNX Runtime thread) or `shared`. Run from
the repository root, under the benchmark lock, at normal priority (what users run: under
SCHED_FIFO a thread runs until it blocks and nice is ignored, which changes who waits for
whom), or with `chrt -f 10` to see that case:

    flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/thread_cpu.py

Needs what sources_bench.py needs (the `train`, `s3` and `dev` extras, npm) and Linux.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import threading
import time
from pathlib import Path

import sources_bench

SAMPLE_S = 0.2  # how often the threads' CPU is read
SKIP_HEAD_S, SKIP_TAIL_S = 0.5, 0.3  # the run's start and end, left out of its middle
TICK = os.sysconf("SC_CLK_TCK")


def snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds so far: of each of this process's threads, keyed 'name#tid', the
    server's, and each core's idle time."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            seconds = sources_bench.stat_cpu_seconds(f"/proc/self/task/{tid}/stat")
        except OSError:  # ended meanwhile
            continue
        out[f"{_kind(names.get(int(tid), 'native'))}#{tid}"] = seconds
    out["(server)"] = sources_bench.proc_cpu_seconds(server_pid)
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                fields = line.split()
                out[f"(cpu{fields[0][3:]} idle)"] = (int(fields[4]) + int(fields[5])) / TICK
    return dict(out)


def _kind(name: str) -> str:
    """A thread's name without its number in its pool ('cnnbench-decode_1')."""
    return name.rstrip("_0123456789") or name


class Sampler:
    """Snapshots every SAMPLE_S on a thread of its own, kept with their time."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.taken: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="(sampler)", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.taken.append((time.perf_counter(), snapshot(self.server_pid)))
            self.stop.wait(SAMPLE_S)

    def middle(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """Seconds and CPU seconds by name between the first snapshot after the run's
        start and the last before its end (SKIP_HEAD_S and SKIP_TAIL_S left out). A
        thread that ends in between (the listing thread, once the last page is read)
        counts up to the last snapshot it is in."""
        inside = [s for s in self.taken if start + SKIP_HEAD_S <= s[0] <= end - SKIP_TAIL_S]
        (t0, first), t1 = inside[0], inside[-1][0]
        last: dict[str, float] = {}
        for _, taken in inside:
            last |= taken
        used: dict[str, float] = collections.defaultdict(float)
        for key, value in last.items():
            used[key.split("#", 1)[0]] += value - first.get(key, 0.0)
        return t1 - t0, dict(used)


def one_run(
    model: Path, source: str, out: Path, images: int, pinned: bool, sampler: Sampler
) -> dict:
    """img/s of the run (as `infer` reports it, and of the whole call) and, in its
    middle, us per image by thread and core."""
    calls: list[float] = []
    rate = sources_bench.infer_rate(model, source, out, None, pinned, calls=calls)
    end = time.perf_counter()
    seconds, used = sampler.middle(end - images / rate, end)
    per_image = {k: 1e6 * v / seconds / rate for k, v in used.items() if v > 0}
    client = sum(v for k, v in per_image.items() if not k.startswith("("))
    return {
        "img_per_s": rate,
        "call_img_per_s": calls[0],
        "client_us": client,
        "us_per_image": per_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sources-bench"))
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--row", choices=["pinned", "shared"], default="pinned")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from cnnbench.bench.photos import write_sized_photos
    from cnnbench.bench.workloads import spread

    args.work.mkdir(parents=True, exist_ok=True)
    photos = write_sized_photos(args.work / f"photos-{args.photos}", args.photos)
    model = sources_bench.models_apart(args.work, photos)["mnist_cnn"]
    server = sources_bench.start_server("s3rver", args.work)
    doc: dict = {"machine": sources_bench.machine()}
    doc["args"] = {k: str(v) for k, v in vars(args).items()}
    try:
        os.environ.update(server.env)
        sources_bench.upload(server, "photos", sorted(photos.glob("*.jpg")), "set/")
        os.environ["SOURCES_BENCH_SERVER_PID"] = str(server.proc.pid)
        sampler = Sampler(server.proc.pid)
        sources = {"local": str(photos), "s3": "s3://photos/set/"}
        runs: dict[str, list[dict]] = {name: [] for name in sources}
        for _ in range(args.rounds):
            for name, source in sources.items():
                got = one_run(
                    model,
                    source,
                    args.work / "thread-cpu.csv",
                    args.photos,
                    args.row == "pinned",
                    sampler,
                )
                runs[name].append(got)
                print(name, json.dumps(got, default=lambda x: round(x, 1)), flush=True)
        sampler.stop.set()
    finally:
        server.stop()
    pairs = list(zip(runs["local"], runs["s3"], strict=True))
    doc["runs"] = runs
    doc["s3_vs_local"] = {
        "img_per_s": spread([s["img_per_s"] / loc["img_per_s"] for loc, s in pairs]),
        "call_img_per_s": spread([s["call_img_per_s"] / loc["call_img_per_s"] for loc, s in pairs]),
        "cpu_per_image": spread([loc["client_us"] / s["client_us"] for loc, s in pairs]),
    }
    sources_bench.report(doc, args.json)


if __name__ == "__main__":
    main()
