"""Ray nodes on hosts that share no disk, made on one Linux machine (root): three network
namespaces joined by a bridge, a Ray head in one and a worker node in each of the others,
each with its own --temp-dir, and an S3 server (moto) on the head's address that the
workers read the images from. Addresses are in 198.18.0.0/24 (RFC 2544's benchmarking
range); the bridge lives inside the head's namespace, so nothing is routed in or out of
the machine's own network and two of these can run side by side.

Used by tests/test_ray_hosts.py (once) and benchmarks/ray_node_kill.py (repeated).
What the issue found when this was tried by hand, and is done here:
- RAY_AUTH_MODE is set for every process (else a token file in the home folder turns
  auth on for the head only, and the workers fail after ~20 s);
- the driver runs in the head's namespace and `infer` tells Ray its address (the one it
  reaches the cluster from), else it advertises one the workers cannot reach and hangs;
- the head's health checks are fast (1 s x 3), so a lost node is declared dead in
  seconds, not 30;
- processes are ended by PID, every one in each namespace (`ip netns pids`): log_monitor
  outlives its raylet, gcs_server ignores SIGTERM for > 10 s, and `ray stop` would stop
  every Ray process on the machine, not only these.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from helpers import s3_env

HEAD_IP = "198.18.0.2"
WORKER_IPS = ("198.18.0.3", "198.18.0.4")
RAY_PORT = 6379
S3_PORT = 9000
BUCKET = "photos"
HEALTH = {  # on the head: a node that stops answering is dead after ~3 s
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def photo_folder(root: Path, files: int) -> Path:
    """`files` photo PNGs (about 10 ms each to decode: a job long enough to kill a node
    in) as hard links of one, and one broken file."""
    import cv2
    from sklearn.datasets import load_sample_images

    image = cv2.resize(load_sample_images().images[1], (600, 450))
    root.mkdir()
    first = root / "img_0000.png"
    first.write_bytes(cv2.imencode(".png", image)[1].tobytes())
    for i in range(1, files):
        os.link(first, root / f"img_{i:04d}.png")
    (root / "broken.png").write_bytes(b"nope")
    return root


def missing() -> str | None:
    """Why namespace nodes cannot be made here, or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"cbprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Cluster:
    """The namespaces, the S3 server and the Ray nodes; `close()` ends them all."""

    def __init__(self, root: Path, cpus_per_worker: int = 2) -> None:
        tag = uuid.uuid4().hex[:6]
        self.root = root
        self.head = f"cb{tag}h"
        self.workers = [f"cb{tag}w{i}" for i in range(len(WORKER_IPS))]
        self.cpus = cpus_per_worker
        self.bin = Path(sys.executable).parent
        self.s3_url = f"http://{HEAD_IP}:{S3_PORT}"
        self.address = f"{HEAD_IP}:{RAY_PORT}"
        # Ray's socket paths must stay under 108 bytes: its temp dirs go to a short folder
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="cb-", dir="/tmp"))
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        home = root / "home"  # no ~/.ray of the machine's user
        home.mkdir(exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))},
            "HOME": str(home),
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            **s3_env(self.s3_url),
        }
        self.namespaces: list[str] = []
        self.starts = 0  # worker nodes started so far (each gets its own --temp-dir)

    # -- the network ---------------------------------------------------------------
    def make_network(self) -> None:
        for ns in (self.head, *self.workers):
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.head, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.head, "addr", "add", f"{HEAD_IP}/24", "dev", "br0")
        _ip("-n", self.head, "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(zip(self.workers, WORKER_IPS, strict=True)):
            port = f"p{i}"
            _ip(
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", port, "netns", self.head
            )
            _ip("-n", self.head, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def run(self, ns: str, args: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """A process inside a namespace (it and its children stay there)."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], env=env or self.env, **kwargs)

    def check(self, ns: str, args: list[str], timeout: float = 120, **kwargs) -> str:
        """Run to the end inside a namespace; its output, or an AssertionError with it."""
        proc = self.run(ns, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
        out, _ = proc.communicate(timeout=timeout)
        text = out.decode("utf-8", "replace")
        assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{text}"
        return text

    # -- the S3 server ---------------------------------------------------------------
    def start_s3(self, folder: Path) -> None:
        """moto's server on the head's address, with `folder` uploaded to the bucket."""
        moto = [str(self.bin / "python"), "-m", "moto.server", "-H", HEAD_IP, "-p", str(S3_PORT)]
        with open(self.logs / "moto.log", "wb") as log:  # the process has its own copy
            self.run(self.head, moto, stdout=log, stderr=subprocess.STDOUT)
        upload = (
            "import sys, time, pathlib, boto3\n"
            "s3 = boto3.client('s3', endpoint_url=sys.argv[1])\n"
            "for _ in range(300):\n"
            "    try: s3.create_bucket(Bucket=sys.argv[2]); break\n"
            "    except Exception: time.sleep(0.1)\n"
            "root = pathlib.Path(sys.argv[3])\n"
            "for p in sorted(root.rglob('*')):\n"
            "    if p.is_file():\n"
            "        s3.put_object(Bucket=sys.argv[2], Key='in/' + p.relative_to(root).as_posix(),"
            " Body=p.read_bytes())\n"
        )
        python = str(self.bin / "python")
        self.check(self.head, [python, "-c", upload, self.s3_url, BUCKET, str(folder)])

    # -- Ray -------------------------------------------------------------------------
    COMMON = ("--object-store-memory", "100000000", "--disable-usage-stats")

    def start_ray(self) -> None:
        ray = str(self.bin / "ray")
        head = [ray, "start", "--head", "--node-ip-address", HEAD_IP, "--port", str(RAY_PORT)]
        head += ["--num-cpus", "0", "--include-dashboard=false", *self.COMMON]
        self.check(
            self.head, [*head, "--temp-dir", str(self.ray_tmp / "head")], env=self.env | HEALTH
        )
        self.start_workers(self.workers)

    def start_workers(self, namespaces: list[str]) -> None:
        """A worker node in each namespace (side by side: each takes seconds), each with a
        --temp-dir of its own, then wait until the cluster counts all of them alive."""
        starting = []
        for ns in namespaces:
            address = WORKER_IPS[self.workers.index(ns)]
            self.starts += 1
            node = [str(self.bin / "ray"), "start", "--address", self.address]
            node += ["--node-ip-address", address, "--num-cpus", str(self.cpus), *self.COMMON]
            node += ["--temp-dir", f"{self.ray_tmp}/{ns}-{self.starts}"]
            with open(self.logs / f"start-{ns}-{self.starts}.log", "wb") as log:
                starting.append(self.run(ns, node, stdout=log, stderr=subprocess.STDOUT))
        for proc in starting:
            assert proc.wait(timeout=180) == 0, f"ray start failed: see {self.logs}"
        self.wait_for_nodes(1 + len(self.workers))

    def restart_worker(self, ns: str) -> None:
        """The node in `ns` ended (every process left there killed) and started anew."""
        self.kill_all(ns)
        self.start_workers([ns])

    def kill_all(self, ns: str, timeout: float = 30) -> None:
        """SIGKILL every process in the namespace until none is left."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids(ns)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def wait_for_nodes(self, alive: int, timeout: float = 60) -> None:
        code = (
            "import ray, sys, time\n"
            "ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], logging_level='ERROR')\n"
            "deadline = time.time() + float(sys.argv[4])\n"
            "while sum(n['Alive'] for n in ray.nodes()) != int(sys.argv[3]):\n"
            "    assert time.time() < deadline, ray.nodes()\n"
            "    time.sleep(0.2)\n"
        )
        args = [
            str(self.bin / "python"),
            "-c",
            code,
            self.address,
            HEAD_IP,
            str(alive),
            str(timeout),
        ]
        self.check(self.head, args, timeout=timeout + 30)

    def pids(self, ns: str) -> list[int]:
        found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        return [int(p) for p in found.stdout.split()]

    def raylet(self, ns: str) -> int:
        for pid in self.pids(ns):
            try:
                exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if exe.endswith(b"/raylet"):
                return pid
        raise AssertionError(f"no raylet in {ns}")

    def node_of(self, title: bytes) -> str | None:
        """The worker namespace running a process whose title starts with `title`."""
        for ns in self.workers:
            for pid in self.pids(ns):
                try:
                    if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                        return ns
                except OSError:
                    continue
        return None

    def close(self) -> None:
        """SIGKILL every process in the namespaces (until none is left), then delete them."""
        for ns in self.namespaces:
            self.kill_all(ns)
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        self.namespaces.clear()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ACTOR = b"ray::MapWorker(MapBatches(Predictor))"


def infer_command(cluster: Cluster, model: Path, inputs: str, out: Path, *extra: str) -> list[str]:
    python = str(cluster.bin / "python")
    args = [python, "-m", "cnnbench", "infer", str(model), inputs, "-o", str(out)]
    args += ["--engine", "ray", "--address", cluster.address, "--no-progress"]
    return [*args, "--batch-size", "8", "--block-size", "25", *extra]


def committed(out: Path) -> int:
    folder = out if out.suffix == ".parquet" else Path(f"{out}.parts")
    names = os.listdir(folder) if folder.is_dir() else []
    return sum(n.startswith("block-") and ".errors" not in n for n in names)


def node_kill_run(
    cluster: Cluster, model: Path, inputs: str, out: Path, limit_s: float = 60
) -> dict:
    """`infer --engine ray` from the head's namespace; once a block is committed, the
    raylet of the node that runs the inference actor is killed (SIGKILL). The run must end
    by itself within `limit_s` of the kill; if it stopped, `--resume` once. Returns what
    happened: exit codes, seconds from the kill to the end, the node killed."""
    summary = out.with_suffix(".summary.json")
    command = infer_command(cluster, model, inputs, out, "--summary", str(summary))
    with open(out.with_suffix(".stderr"), "w+") as stderr:
        start = time.monotonic()
        proc = cluster.run(cluster.head, command, stdout=subprocess.DEVNULL, stderr=stderr)
        while committed(out) < 1:
            assert proc.poll() is None, f"ended before any block: {_text(stderr)}"
            assert time.monotonic() - start < 180, "no block committed in 180 s"
            time.sleep(0.05)
        victim = cluster.node_of(ACTOR) or cluster.workers[0]
        os.kill(cluster.raylet(victim), signal.SIGKILL)
        killed = time.monotonic()
        blocks_at_kill = committed(out)
        try:
            code = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            proc.kill()  # it hung: what the limit is there to catch
            proc.wait()
            code = None
        text = _text(stderr)
        result = {
            "killed_node": victim,
            "blocks_at_kill": blocks_at_kill,
            "exit": code,
            "seconds_to_end": round(time.monotonic() - killed, 1),
            "ended_by_itself": code is not None,
            "said_resume": "--resume" in text,
            "said_node_lost": "ray: lost node" in text,
            "stderr_lines": len(text.splitlines()),
            "resumed": False,
        }
        if code != 0:
            again = cluster.run(
                cluster.head, [*command, "--resume"], stdout=subprocess.DEVNULL, stderr=stderr
            )
            result["resume_exit"] = again.wait(timeout=300)
            result["resumed"] = True
    result["run_seconds"] = round(time.monotonic() - start, 1)
    return result


def _text(f) -> str:
    f.flush()
    f.seek(0)
    return f.read()
