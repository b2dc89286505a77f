"""`KVClient`'s batching rule against its alternatives (issue 28): batching off, and one, two
or four messages in flight before requests wait (`kvclient/batching.py`), each on the same
3-replica cluster, in rounds that turn through them: one thread keeping 64 and 256 requests in
flight (half puts of 100-byte values, half gets), and 4 and 16 threads sharing the client,
each doing one request at a time (requests a second and p50).

    .venv/bin/python scripts/bench_batching.py [--rounds 2] [--ops 20000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvclient.client import KVClient
from kvclient.operations import Get, Put
from kvwire.messages import Resposta
from tests.cluster import Cluster

SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"batching": False},
    "1 in flight": {"max_in_flight": 1},
    "2 in flight": {"max_in_flight": 2},
    "4 in flight": {"max_in_flight": 4},
}


def windowed(kv: KVClient, depth: int, ops: int) -> float:
    window: deque[Future[Resposta]] = deque()
    started = time.perf_counter()
    for i in range(ops):
        key = f"k{i % 1000}"
        window.append(kv.submit(Put(key, "v" * 100) if i % 2 else Get(key)))
        if len(window) >= depth:
            window.popleft().result(30)
    while window:
        window.popleft().result(30)
    return ops / (time.perf_counter() - started)


def threads(kv: KVClient, count: int, seconds: float) -> tuple[float, float]:
    done = [0] * count
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def run(j: int) -> None:
        while time.monotonic() < stop:
            sent = time.perf_counter()
            kv.request(Get(f"t{j}") if done[j] % 2 else Put(f"t{j}", "v"))
            latencies.append(time.perf_counter() - sent)
            done[j] += 1

    workers = [threading.Thread(target=run, args=(j,)) for j in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds, statistics.median(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), n=3)
        try:
            cluster.start()
            for r in range(args.rounds):
                for name, options in SETTINGS.items():
                    with KVClient(cluster.address, timeout=30, retry_interval=10, **options) as kv:
                        at_64 = windowed(kv, 64, args.ops)
                        at_256 = windowed(kv, 256, args.ops)
                        four = threads(kv, 4, args.seconds)
                        sixteen = threads(kv, 16, args.seconds)
                    print(
                        f"round {r + 1}, {name:>11}: 64 in flight {at_64:,.0f}/s, 256 in flight "
                        f"{at_256:,.0f}/s | 4 threads {four[0]:,.0f}/s p50 {four[1]:.2f} ms | "
                        f"16 threads {sixteen[0]:,.0f}/s p50 {sixteen[1]:.2f} ms",
                        flush=True,
                    )
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
