"""Transactions (protocol §20): what one costs against the puts it holds.

- throughput: the lean generator (scripts/loadgen.py's, one paho client, payloads prepared in
  advance) keeps 64 requests in flight against a 3-replica cluster: single puts, then
  transactions of 4 puts (no compares), paired in each round; transactions and operations a
  second, and what an operation costs inside a transaction against a put of its own;
- latency: one at a time with `KVClient`, a put, a transaction of 4 puts, one of 128 (the
  most a branch may hold): p50 and p99.

    .venv/bin/python scripts/bench_txn.py [--rounds 3] [--ops 10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import VALUE, Lean

from kvclient.client import KVClient
from kvclient.operations import Put
from tests.cluster import Cluster


def payloads(topic: str, count: int, per_txn: int, first: int) -> list[bytes]:
    out = []
    for i in range(first, first + count):
        body: dict[str, object]
        if per_txn == 1:
            body = {"tipomsg": "insercao", "chave": f"b-{i % 1000}", "novovalor": VALUE}
        else:
            puts = [
                {
                    "tipomsg": "insercao",
                    "chave": f"b-{(i * per_txn + j) % 1000}",
                    "novovalor": VALUE,
                }
                for j in range(per_txn)
            ]
            body = {"tipomsg": "transacao", "entao": puts}
        out.append(json.dumps({**body, "topico-resp": topic, "idpedido": i}).encode())
    return out


def throughput(address: str, rounds: int, ops: int) -> dict[str, float]:
    gen = Lean(address)
    first = 0
    puts: list[float] = []
    txns: list[float] = []
    for r in range(rounds):
        for per_txn in (1, 4) if r % 2 == 0 else (4, 1):
            count = ops if per_txn == 1 else ops // 4
            requests = payloads(gen.topic, count, per_txn, first)
            first += count
            rate = gen.run(requests, 64, timed=False, first_id=first - count)
            (puts if per_txn == 1 else txns).append(rate)
        print(f"  round {r + 1}: puts {puts[-1]:.0f}/s, transactions of 4 {txns[-1]:.0f}/s",
              flush=True)  # fmt: skip
    put_s, txn_s = statistics.median(puts), statistics.median(txns)
    return {
        "puts_s": put_s,
        "txns_s": txn_s,
        "txn_ops_s": 4 * txn_s,
        "op_cost_ratio": statistics.median(p / (4 * t) for p, t in zip(puts, txns, strict=True)),
    }


def latency(address: str, samples: int) -> dict[str, float]:
    found: dict[str, float] = {}
    with KVClient(address, timeout=30) as kv:
        for name, size in (("put", 0), ("txn_4", 4), ("txn_128", 128)):
            times = []
            for i in range(samples):
                started = time.perf_counter()
                if size:
                    kv.txn([], [Put(f"l-{j}", str(i)) for j in range(size)])
                else:
                    kv.put("l-0", str(i))
                times.append(time.perf_counter() - started)
            times.sort()
            found[f"{name}_p50_ms"] = times[len(times) // 2] * 1e3
            found[f"{name}_p99_ms"] = times[int(len(times) * 0.99)] * 1e3
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            t = throughput(cluster.address, args.rounds, args.ops)
            lat = latency(cluster.address, args.samples)
        finally:
            cluster.close()
    print("\ntransactions (protocol §20), 3 replicas, lean generator at 64 in flight")
    print(f"  single puts: {t['puts_s']:.0f}/s; transactions of 4 puts: {t['txns_s']:.0f}/s "
          f"= {t['txn_ops_s']:.0f} puts/s ({t['op_cost_ratio']:.2f}: a put inside a "
          "transaction costs that fraction of one on its own)")  # fmt: skip
    print(f"  one at a time (KVClient): put p50 {lat['put_p50_ms']:.2f} ms, p99 "
          f"{lat['put_p99_ms']:.2f}; 4 puts p50 {lat['txn_4_p50_ms']:.2f}, p99 "
          f"{lat['txn_4_p99_ms']:.2f}; 128 puts p50 {lat['txn_128_p50_ms']:.2f}, p99 "
          f"{lat['txn_128_p99_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
