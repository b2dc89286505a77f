"""Data on disk: a replica's start-up from its own directory, and the disk it takes.

Writes a data directory of K keys (16-byte keys, 100-byte values) through `kvserver.disk`,
then starts a one-replica cluster on it and times the replica from its start to live
(`resumes alone` in its log): reading and checking the directory, connecting, announcing.
Throughput with data on disk is measured by bench.py's paired rounds; `--paired R` measures
it alone: R rounds, each of an in-memory cluster, `--sync periodic` and `--sync always`, 64
requests in flight from the lean generator, with the ratios of each round.

    .venv/bin/python scripts/bench_disk.py [--keys 100000 1000000] [--json out.json]
    .venv/bin/python scripts/bench_disk.py --paired 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import generate

from kvserver.disk import DataDir
from kvserver.replica import Replica
from kvserver.settings import ReplicaSettings
from kvserver.store import Store
from tests.cluster import Cluster, wait_until


def fill(path: Path, keys: int) -> float:
    """A directory holding `keys` pairs; seconds it took to write."""
    store = Store()
    store.load({f"key-{i:012d}": (f"{i:0100d}", i + 1) for i in range(keys)})
    # What a fresh replica holding them hands its adapter to write: the whole state.
    settings = ReplicaSettings(replica_id=0, n=1, data_dir=path)
    written = Replica.fresh(settings, incarnation="bench", store=store).ready().durable
    assert written is not None
    started = time.monotonic()
    with DataDir(path, replica_id=0, n=1, sync="periodic") as disk:
        disk.write(written)
        disk.force()
    return time.monotonic() - started


def one_size(keys: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), n=1, data=True)
        try:
            write_s = fill(cluster.data_dir(0), keys)
            size = sum(f.stat().st_size for f in cluster.data_dir(0).iterdir())
            cluster.broker.start()
            started = time.monotonic()
            replica = cluster.start_replica(0)
            wait_until(lambda: "resumes alone" in replica.log(), 60, "the replica to resume")
            startup = time.monotonic() - started
        finally:
            cluster.close()
    return {
        "keys": keys,
        "startup_s": startup,
        "bytes_per_key": size / keys,
        "write_all_s": write_s,
    }


def paired(rounds: int, ops: int = 20_000) -> None:
    anonymous = {"KV_USERNAME": "", "KV_PASSWORD_FILE": "", "KV_PASSWORD": "", "KV_TLS_CA": ""}
    for r in range(rounds):
        ops_s = {}
        for sync in (None, "periodic", "always"):
            with tempfile.TemporaryDirectory() as tmp:
                cluster = Cluster(Path(tmp), n=3, data=sync is not None)
                try:
                    cluster.start(extra=dict.fromkeys(range(3), ("--sync", sync)) if sync else None)
                    ops_s[sync] = generate(cluster.address, ops, 64, "lean", anonymous)["ops_s"]
                finally:
                    cluster.close()
        base = ops_s[None]
        print(
            f"round {r + 1}: in memory {base:,.0f} ops/s, periodic {ops_s['periodic']:,.0f} "
            f"({ops_s['periodic'] / base:.2f}), always {ops_s['always']:,.0f} "
            f"({ops_s['always'] / base:.2f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--paired", type=int, metavar="ROUNDS", help="throughput rounds only")
    args = parser.parse_args()
    if args.paired:
        paired(args.paired)
        return
    results = [one_size(keys) for keys in args.keys]
    for r in results:
        print(
            f"{r['keys']:>9,} keys: start-up to live {r['startup_s']:.2f} s, "
            f"{r['bytes_per_key']:.0f} bytes per key on disk, "
            f"whole state written in {r['write_all_s']:.2f} s"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
