"""Peak RSS of listing a prefix of 1,000,000 objects vs 1,000 through infer's listing
(issue 22: the target is <= 1.2x): a prefix is listed page by page, never held.

`prefixes.list_prefix` lists a prefix of --big zero-byte objects, and one of 1,000, each
in a process of its own that imports only the listing; its VmHWM is the figure. The
server is moto's S3 server on 127.0.0.1 (what the tests start), in a process of its own:
the big bucket is filled inside that process through moto's backend (an HTTP PUT per
object runs at a few hundred a second here), and moto's ListObjectsV2 is given a sorted
index: moto sorts the whole bucket for every page (4.4 s a page at 100,000 keys, so hours
for a million), which says nothing about the client being measured. Best (lowest) of
--rounds interleaved runs. Needs the `s3` and `dev` extras (moto). From the repository
root, under the shared benchmark lock:

    chrt -f 10 flock /tmp/cnnbench-bench.lock .venv/bin/python benchmarks/listing_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# The listing process must hold only what listing needs (its peak RSS is the figure):
# nothing else is imported at the top.
ROOT = Path(__file__).resolve().parent.parent


def serve_listing(counts: list[int], port_file: Path) -> None:
    """moto's S3 server with a bucket per count of zero-byte objects, filled in-process,
    and a ListObjectsV2 that slices a sorted index instead of sorting every page."""
    import bisect

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import S3Backend, s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    start = time.perf_counter()
    index: dict[str, list[str]] = {}
    for n in counts:
        bucket = f"list-{n}"
        backend.create_bucket(bucket, "us-east-1")
        for i in range(n):
            backend.put_object(bucket, f"p/{i:07d}.jpg", b"")
        index[bucket] = sorted(backend.get_bucket(bucket).keys.keys())
    filled = time.perf_counter() - start

    def list_objects_v2(self, bucket, prefix, delimiter, continuation_token, start_after, max_keys):  # type: ignore[no-untyped-def]
        names = index[bucket.name]
        after = (
            self._pagination_tokens.get(continuation_token) if continuation_token else start_after
        )
        lo = bisect.bisect_right(names, after) if after else bisect.bisect_left(names, prefix or "")
        page = [n for n in names[lo : lo + max_keys + 1] if n.startswith(prefix or "")]
        keys = [bucket.keys[n] for n in page]
        return self._truncate_result(keys, max_keys)

    S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_file.write_text(json.dumps({"port": server.get_host_and_port()[1], "fill_s": filled}))
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


def list_once(url: str) -> None:
    """List `url` through infer's listing; print the count, seconds and peak RSS."""
    from cnnbench.infer.sources import prefixes

    start = time.perf_counter()
    count = sum(1 for _ in prefixes.list_prefix(url))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a
    # process that held a gigabyte reports that gigabyte whatever it did itself.
    status = Path("/proc/self/status").read_text()
    peak = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:"))) * 1024
    print(json.dumps({"objects": count, "seconds": time.perf_counter() - start, "peak_rss": peak}))


def listing_memory(args: argparse.Namespace) -> dict:
    """Peak RSS of listing 1,000 objects and --big objects, each in a process of its own,
    --rounds interleaved rounds, the lowest of each; the ratio is the figure."""
    counts = [1000, args.big]
    port_file = args.work / "listing-port.json"
    port_file.unlink(missing_ok=True)
    me = [sys.executable, __file__, "--work", str(args.work)]
    server = subprocess.Popen(
        [*me, "--serve-listing", ",".join(map(str, counts))], stdin=subprocess.PIPE
    )
    try:
        while not port_file.exists():
            assert server.poll() is None, "the listing server ended"
            time.sleep(0.5)
        info = json.loads(port_file.read_text())
        sys.path.insert(0, str(ROOT / "tests"))  # the test servers' client settings
        from helpers import s3_env

        env = s3_env(f"http://127.0.0.1:{info['port']}")
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for _ in range(args.rounds):
            for n in counts:
                out = subprocess.run(
                    [*me, "--list", f"s3://list-{n}/p/"],
                    env=os.environ | env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = {n: min(r, key=lambda x: x["peak_rss"]) for n, r in runs.items()}
        doc = {
            "fill_seconds": info["fill_s"],
            "runs": {str(n): r for n, r in runs.items()},
            "peak_rss_ratio": best[args.big]["peak_rss"] / best[1000]["peak_rss"],
        }
        print(json.dumps({"listing": doc}), flush=True)
        return doc
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/listing-memory"))
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve-listing", help=argparse.SUPPRESS)
    parser.add_argument("--list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_listing:
        serve_listing(
            [int(n) for n in args.serve_listing.split(",")], args.work / "listing-port.json"
        )
        return
    if args.list:
        list_once(args.list)
        return
    from sources_bench import machine, report

    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    doc["listing"] = listing_memory(args)
    report(doc, args.json)


if __name__ == "__main__":
    main()
