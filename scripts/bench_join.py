"""Join time and memory: a replica restarted beside a store of K keys, from its `novoserv` to
live, and its peak memory against a replica that never left.

Starts its own broker and 3-replica cluster on a free port, fills the store with K keys of
16 bytes and values of 100 bytes (pipelined puts), kills replica 0, restarts it and reads
the two moments from its log.

    .venv/bin/python scripts/bench_join.py [--keys 10000 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvclient.client import KVClient
from kvclient.operations import Put
from kvwire.messages import Resposta
from tests.cluster import Cluster


def fill(kv: KVClient, keys: int, depth: int = 256) -> float:
    started = time.monotonic()
    window: deque[Future[Resposta]] = deque()
    for i in range(keys):
        window.append(kv.submit(Put(f"key-{i:012d}", f"{i:0100d}")))
        if len(window) >= depth:
            window.popleft().result(timeout=60)
    while window:
        window.popleft().result(timeout=60)
    return keys / (time.monotonic() - started)


def memory_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else -1


def stamp(line: str) -> float:
    clock = datetime.strptime(line[:12], "%H:%M:%S.%f")
    return clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6


def one_size(keys: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            with KVClient(cluster.address, timeout=60) as kv:
                rate = fill(kv, keys)
                cluster.replicas[0].kill()
                time.sleep(0.5)
                joiner = cluster.start_replica(0)
                deadline = time.monotonic() + 120
                while "joined at position" not in joiner.log():
                    if time.monotonic() > deadline:
                        raise RuntimeError(cluster.logs())
                    time.sleep(0.01)
                lines = joiner.log().splitlines()
                began = next(stamp(x) for x in lines if "joining: novoserv" in x)
                live = next(stamp(x) for x in lines if "joined at position" in x)
                sender_lines = [
                    x
                    for r in cluster.replicas.values()
                    if r is not joiner
                    for x in r.log().splitlines()
                ]
                # Where the time goes: by "queued by" the sender has copied, encoded and handed
                # every chunk to paho; the rest is transport and the joiner.
                sent = max((stamp(x) for x in sender_lines if "state chunks to" in x), default=live)
                assert kv.get(f"key-{keys - 1:012d}") == f"{keys - 1:0100d}"
                return {
                    "keys": keys,
                    "fill_ops_per_s": rate,
                    "join_s": live - began,
                    "sender_done_s": sent - began,
                    "joiner_peak_mib": memory_kib(joiner.pid, "VmHWM") / 1024,
                    "joiner_rss_mib": memory_kib(joiner.pid, "VmRSS") / 1024,
                    "peer_rss_mib": memory_kib(cluster.replicas[2].pid, "VmRSS") / 1024,
                    # Replica 1, the joiner's successor, sent the state.
                    "sender_peak_mib": memory_kib(cluster.replicas[1].pid, "VmHWM") / 1024,
                }
        finally:
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = [one_size(k) for k in args.keys]
    print(
        f"{'keys':>9} {'join (s)':>9} {'queued by (s)':>14} {'joiner peak MiB':>16} "
        f"{'joiner RSS MiB':>15} "
        f"{'peer RSS MiB':>13} {'sender peak MiB':>16} {'fill ops/s':>11}"
    )
    for r in results:
        print(
            f"{r['keys']:>9} {r['join_s']:>9.3f} {r['sender_done_s']:>14.3f} "
            f"{r['joiner_peak_mib']:>16.0f} "
            f"{r['joiner_rss_mib']:>15.0f} {r['peer_rss_mib']:>13.0f} "
            f"{r['sender_peak_mib']:>16.0f} "
            f"{r['fill_ops_per_s']:>11.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
