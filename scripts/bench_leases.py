"""Leases (protocol §18): what one costs a replica, and many ending at once.

- memory: a replica's core (in process, no broker) applies N grants, then N × K puts under
  them; tracemalloc's count of what that holds, per lease and per key under a lease beyond
  the same key without one;
- expiry: a 3-replica cluster holds L leases with K keys each; all are granted again with a
  5 s TTL in one burst, so they end within the burst's length of each other; the time from
  the last lease's TTL passing to every replica having applied every end (their heartbeats
  count the keys), and the lean generator's throughput at 64 in flight, started once the
  burst is answered, over a window that holds every end (each `expiracao` a message through
  every replica, and K deletes), against the same load right after, with nothing ending.

The throughput with half the writes under a lease is one of bench.py's paired sides.

    .venv/bin/python scripts/bench_leases.py [--leases 10000] [--keys-per-lease 10] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import generate

from kvclient.client import KVClient
from kvclient.operations import Grant, Put
from kvclient.status import ClusterWatch
from kvserver.replica import Replica
from kvserver.settings import ReplicaSettings
from kvwire.leasing import Concessao
from kvwire.messages import Insercao
from tests.cluster import Cluster

#: Longer than the burst of grants that starts it (10,000 take ~2 s), so that the load runs
#: alone before the first lease ends and every end falls inside its window.
TTL_S = 5


def held_bytes(apply: Any) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = apply()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def memory(leases: int, per_lease: int) -> dict[str, float]:
    """Bytes a replica's core holds per lease, and per key under one beyond a plain key."""

    def core() -> Replica:
        return Replica.fresh(ReplicaSettings(replica_id=0, n=1), incarnation="bench")

    def grants() -> Replica:
        replica = core()
        for i in range(leases):
            grant = Concessao(concessao=f"lease-{i:08d}", ttl=60, topico_resp="b", idpedido=i)
            replica.on_request(grant, 0.0)
            replica.ready()
        replica.log.expire(1e9)  # the request log is not the lease's: it lasts 10 s
        return replica

    def puts(leased: bool) -> Replica:
        replica = grants()
        for i in range(leases * per_lease):
            lease = f"lease-{i % leases:08d}" if leased else None
            put = Insercao(
                chave=f"key-{i:010d}", novovalor="v", topico_resp="b", idpedido=f"p{i}",
                concessao=lease,
            )  # fmt: skip
            replica.on_request(put, 0.0)
            replica.ready()
        replica.log.expire(1e9)
        return replica

    base = held_bytes(core)
    with_leases = held_bytes(grants)
    plain, leased = held_bytes(lambda: puts(False)), held_bytes(lambda: puts(True))
    return {
        "leases": leases,
        "bytes_per_lease": (with_leases - base) / leases,
        "bytes_per_leased_key_extra": (leased - plain) / (leases * per_lease),
    }


def leased_keys(watch: ClusterWatch, baseline: int) -> int:
    """The most keys any live replica holds beyond `baseline`, from its last heartbeat."""
    status = watch.status()
    counts = [status.replicas[i].beat.chaves or 0 for i in status.live()]
    return max(counts, default=baseline) - baseline


def expiry(leases: int, per_lease: int, ops: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            address = cluster.address
            generate(address, 2000, 64, "lean", None)  # the load's keys exist from here
            names = [f"lease-{i:08d}" for i in range(leases)]
            with (
                KVClient(address, timeout=120, retry_interval=30) as kv,
                ClusterWatch(address) as watch,
            ):
                time.sleep(1.0)  # a heartbeat from each replica
                baseline = leased_keys(watch, 0)  # the load's keys
                for future in [kv.submit(Grant(name, 600)) for name in names]:
                    assert future.result(120).status == "ok"
                puts = [
                    kv.submit(Put(f"leased-{i:08d}", "v" * 16, lease=names[i % leases]))
                    for i in range(leases * per_lease)
                ]
                for future in puts:
                    assert future.result(300).status == "ok"
                time.sleep(1.0)
                assert leased_keys(watch, baseline) == leases * per_lease
                regrants = [kv.submit(Grant(name, TTL_S)) for name in names]
                for future in regrants:
                    assert future.result(120).status == "ok"
                last_due = time.monotonic() + TTL_S  # the last grant was answered just now
                during: dict[str, float] = {}
                load = threading.Thread(
                    target=lambda: during.update(generate(address, ops, 64, "lean", None))
                )
                load.start()
                while leased_keys(watch, baseline) > 0:
                    time.sleep(0.05)
                ended = time.monotonic() - last_due
                load.join()
            after = generate(address, ops, 64, "lean", None)
            return {
                "leases": leases,
                "keys": leases * per_lease,
                "all_applied_after_last_ttl_s": ended,
                "ops_64_during": during["ops_s"],
                "ops_64_after": after["ops_s"],
            }
        finally:
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=10_000)
    parser.add_argument("--keys-per-lease", type=int, default=10)
    parser.add_argument("--memory-leases", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=45_000, help="the load across the expiry")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {
        "memory": memory(args.memory_leases, args.keys_per_lease),
        "expiry": expiry(args.leases, args.keys_per_lease, args.ops),
    }
    mem, end = result["memory"], result["expiry"]
    print(f"a lease held by a replica: {mem['bytes_per_lease']:.0f} bytes")
    print(f"a key under a lease, beyond a plain key: {mem['bytes_per_leased_key_extra']:.0f} bytes")
    print(
        f"{end['leases']:,} leases with {end['keys']:,} keys ending at once: every replica "
        f"applied every end {end['all_applied_after_last_ttl_s']:.2f} s after the last TTL "
        f"(heartbeats every 0.25 s)"
    )
    print(
        f"64 in flight across that expiry: {end['ops_64_during']:,.0f} ops/s; right after, "
        f"with nothing ending: {end['ops_64_after']:,.0f} ops/s "
        f"({end['ops_64_during'] / end['ops_64_after']:.2f}×)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
