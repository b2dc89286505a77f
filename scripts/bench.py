"""mqtt-kv against the bare-MQTT ceiling, side by side, on a broker of its own.

For each round, first the ceiling (N trivial paho responders of the same protocol,
scripts/ceiling_responder.py), then mqtt-kv (N replicas and the monitor), the same load
generator against both: sequential latency (one request in flight) and pipelined throughput
(64 and 256 in flight), half gets, half puts of 100-byte values over 1000 keys. Rounds
alternate (ceiling, ours, ceiling, ours) because the machine drifts; the table shows the
median of the rounds. Failover and join figures come from bench_failover.py and
bench_join.py, and the same load shapes against a 3-member etcd from bench_etcd.py; this
script runs them too unless --quick.

    .venv/bin/python scripts/bench.py [--rounds 3] [--quick] [--json bench.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvclient.client import KVClient  # noqa: E402
from kvwire.messages import Resposta  # noqa: E402
from tests.cluster import Broker, Cluster, Process  # noqa: E402

KEYS = 1000
VALUE = "v" * 100


def request(kv: KVClient, i: int) -> Future[Resposta]:
    key = f"bench-{i % KEYS}"
    return kv.submit(key, VALUE if i % 2 else None)


def sequential(kv: KVClient, count: int) -> tuple[float, float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        request(kv, i).result(timeout=10)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def pipelined(kv: KVClient, count: int, depth: int) -> float:
    window: deque[Future[Resposta]] = deque()
    started = time.perf_counter()
    for i in range(count):
        window.append(request(kv, i))
        if len(window) >= depth:
            window.popleft().result(timeout=30)
    while window:
        window.popleft().result(timeout=30)
    return count / (time.perf_counter() - started)


def measure(address: str, ops: int) -> dict[str, float]:
    with KVClient(address, timeout=30, retry_interval=10) as kv:
        pipelined(kv, 2000, 64)  # warm up: keys exist, caches are hot
        p50, p99 = sequential(kv, ops // 5)
        return {
            "p50_ms": p50,
            "p99_ms": p99,
            "ops_64": pipelined(kv, ops, 64),
            "ops_256": pipelined(kv, ops, 256),
        }


def run_ceiling(workdir: Path, n: int, ops: int) -> dict[str, float]:
    broker = Broker(workdir)
    broker.start(persistence=False)
    env = {"PYTHONUNBUFFERED": "1"}
    responders = [
        Process(
            f"ceiling-{i}",
            [
                sys.executable,
                str(ROOT / "scripts" / "ceiling_responder.py"),
                "--id",
                str(i),
                "--n",
                str(n),
                "--broker",
                broker.address,
            ],
            env,
            workdir,
        )
        for i in range(n)
    ]
    try:
        for responder in responders:
            deadline = time.monotonic() + 15
            while "connected" not in responder.log():
                if time.monotonic() > deadline:
                    raise RuntimeError(responder.log())
                time.sleep(0.02)
        return measure(broker.address, ops)
    finally:
        for responder in responders:
            responder.stop()
        broker.stop()


def run_ours(workdir: Path, n: int, ops: int) -> dict[str, float]:
    cluster = Cluster(workdir, n=n)
    try:
        cluster.start()
        return measure(cluster.address, ops)
    finally:
        cluster.close()


def median_of(rounds: list[dict[str, float]], field: str) -> float:
    return statistics.median(r[field] for r in rounds)


def in_tmp(fn: Callable[[Path, int, int], dict[str, float]], n: int, ops: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return fn(Path(tmp), n, ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip failover and join")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ceiling: list[dict[str, float]] = []
    ours: list[dict[str, float]] = []
    for _ in range(args.rounds):
        ceiling.append(in_tmp(run_ceiling, args.n, args.ops))
        ours.append(in_tmp(run_ours, args.n, args.ops))
    print(f"{args.n} replicas, {args.rounds} paired rounds, medians; 50% gets, 100-byte values")
    print(f"{'':26}{'ceiling':>10}{'mqtt-kv':>10}{'ratio':>8}")
    rows = [
        ("sequential p50 (ms)", "p50_ms"),
        ("sequential p99 (ms)", "p99_ms"),
        ("64 in flight (ops/s)", "ops_64"),
        ("256 in flight (ops/s)", "ops_256"),
    ]
    result: dict[str, object] = {"ceiling": ceiling, "mqtt_kv": ours}
    for label, field in rows:
        c, o = median_of(ceiling, field), median_of(ours, field)
        print(f"{label:26}{c:>10.2f}{o:>10.2f}{o / c:>8.2f}")
    if not args.quick:
        for script in ("bench_failover.py", "bench_join.py", "bench_etcd.py"):
            print(f"--- {script}")
            out = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / script)],
                capture_output=True,
                text=True,
                check=False,
            )
            print(out.stdout.strip() or out.stderr[-2000:])
            result[script] = out.stdout
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
