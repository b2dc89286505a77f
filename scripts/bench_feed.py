"""The change feed (protocol §19): what watchers cost, how soon they hear, what the history holds.

- throughput: the lean generator at 64 in flight, half its puts of keys under `w/`, against a
  3-replica cluster with 0, 10 and 100 watches of `w/` (each on its own response topic, so
  their owners are spread over the replicas), consumed by one process of their own that
  counts every event (`--consume`: a bare paho subscriber, so the broker delivers each one).
  Paired rounds in one cluster, the order turned each round; the ratios are per round.
- latency: one writer puts keys under `w/lat/` one at a time while `KVClient.watch` follows
  `w/lat/`; for each change, the time from the put's acknowledgement (and from its sending)
  to the watcher handing the change on.
- memory: a history of 100,000 changes (`kvserver.feed.History`, in process), counted by
  tracemalloc: its own bookkeeping (values shared with the store), and with a distinct
  100-byte value per change (values the store no longer holds: the worst case).

    .venv/bin/python scripts/bench_feed.py [--rounds 3] [--ops 20000] [--json F]
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import WATCHED, generate
from paho.mqtt.client import MQTT_ERR_SUCCESS

from kvclient.client import KVClient
from kvclient.operations import Put
from kvserver.feed import History
from kvwire.feed import Vigia
from kvwire.mqtt import Link, broker_address, exchange, new_client
from tests.cluster import Cluster

WATCHERS = (0, 10, 100)


def consume(broker: str, count: int) -> None:
    """`--consume N`: register N watches of `w/` under one lease, count their events until
    SIGTERM, then print the count. A bare paho client: the consumer is not the bound."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    host, port = broker_address(broker)
    received = {"events": 0, "answers": 0}

    def on_message(topic: str, payload: bytes, dup: bool, props: object) -> None:
        received["events" if payload.startswith(b'{"tipomsg":"evento"') else "answers"] += 1

    client = new_client(f"watchers-{secrets.token_hex(4)}", v5=False)
    link = Link(client, host, port, on_connect=lambda _: None, on_message=on_message,
                on_error=lambda exc: None)  # fmt: skip
    link.open(5)
    base = f"bench-watch/{secrets.token_hex(4)}"
    client.subscribe(f"{base}/#", qos=0)
    with KVClient(broker, timeout=30) as kv, kv.lease(10) as lease:
        for i in range(count):
            vigia = Vigia(prefixo=WATCHED, concessao=lease.name, topico_resp=f"{base}/{i}",
                          idpedido=i)  # fmt: skip
            client.publish("inf1406-reqs", vigia.encode(), qos=1)
        deadline = time.monotonic() + 30
        while received["answers"] < count and time.monotonic() < deadline:
            exchange(client, 0.05)
        print("ready", flush=True)
        while not stop.is_set() and exchange(client, 0.05) == MQTT_ERR_SUCCESS:
            pass  # (the broker gone: done)
    print(json.dumps(received), flush=True)


class Consumer:
    def __init__(self, broker: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--consume", str(count), "--broker", broker],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the watchers did not register: {line!r}")

    def stop(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
        return counts


def throughput(address: str, rounds: int, ops: int) -> dict[str, Any]:
    per_round: list[dict[int, float]] = []
    events: dict[int, list[float]] = {n: [] for n in WATCHERS}
    for r in range(rounds):
        measured: dict[int, float] = {}
        for count in WATCHERS if r % 2 == 0 else WATCHERS[::-1]:
            consumer = Consumer(address, count) if count else None
            try:
                started = time.monotonic()
                measured[count] = generate(address, ops, 64, "lean", None, split=True)["ops_s"]
                elapsed = time.monotonic() - started
            finally:
                got = consumer.stop() if consumer is not None else {"events": 0}
            events[count].append(got["events"] / elapsed)
            print(f"  round {r + 1}: {count:3d} watchers {measured[count]:8.0f} ops/s, "
                  f"{got['events'] / elapsed:8.0f} events/s received", flush=True)  # fmt: skip
        per_round.append(measured)
    ops_s = {n: statistics.median(m[n] for m in per_round) for n in WATCHERS}
    ratio = {n: statistics.median(m[n] / m[0] for m in per_round) for n in WATCHERS}
    received = {n: statistics.median(events[n]) for n in WATCHERS}
    return {"ops_s": ops_s, "ratio": ratio, "events_s": received}


def latency(address: str, samples: int) -> dict[str, float]:
    acked: dict[int, tuple[float, float]] = {}
    heard: dict[int, float] = {}
    with KVClient(address, timeout=10) as kv, kv.watch(f"{WATCHED}lat/") as watch:

        def follow() -> None:
            while len(heard) < samples:
                change = watch.get(timeout=5)
                if change is None:
                    return
                heard[change.revision] = time.perf_counter()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        for i in range(samples):
            sent = time.perf_counter()
            revision = kv.request(Put(f"{WATCHED}lat/{i % 10}", str(i))).revisao or 0
            acked[revision] = (sent, time.perf_counter())
        thread.join(30)
    from_ack = sorted(heard[r] - acked[r][1] for r in acked if r in heard)
    from_send = sorted(heard[r] - acked[r][0] for r in acked if r in heard)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))] * 1e3

    return {
        "heard": len(from_ack),
        "p50_ms": pct(from_ack, 0.5),
        "p99_ms": pct(from_ack, 0.99),
        "send_p50_ms": pct(from_send, 0.5),
        "send_p99_ms": pct(from_send, 0.99),
    }


def memory(changes: int = 100_000) -> dict[str, float]:
    def held(distinct_values: bool) -> int:
        gc.collect()
        shared = "v" * 100
        keys = [f"sensors/{i % 10_000}" for i in range(changes)]
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        history = History(changes, 3600.0)
        now = time.time()
        for i in range(changes):
            value = f"{i:0100d}" if distinct_values else shared
            history.record((i + 1, keys[i], "insercao", value, now))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(history) == changes
        return after - before

    bookkeeping, with_values = held(False), held(True)
    return {
        "changes": changes,
        "bookkeeping_mb": bookkeeping / 1e6,
        "with_values_mb": with_values / 1e6,
        "bytes_per_change": bookkeeping / changes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--consume", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume is not None:
        consume(args.broker, args.consume)
        return
    result: dict[str, Any] = {"memory": memory()}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            result["throughput"] = throughput(cluster.address, args.rounds, args.ops)
            result["latency"] = latency(cluster.address, args.samples)
        finally:
            cluster.close()
    t, lat, mem = result["throughput"], result["latency"], result["memory"]
    print("\nchange feed (protocol §19), 3 replicas, lean generator at 64 in flight, half the "
          "puts under w/")  # fmt: skip
    for n in WATCHERS:
        target = "  (target >= 0.85)" if n == 10 else ""
        print(f"  {n:3d} watchers of w/: {t['ops_s'][n]:8.0f} ops/s, {t['ratio'][n]:.2f} of none"
              f"{target}; {t['events_s'][n]:.0f} events/s received")  # fmt: skip
    print(f"  feed latency, put acknowledged -> watcher: p50 {lat['p50_ms']:.2f} ms, p99 "
          f"{lat['p99_ms']:.2f} ms (from sending: p50 {lat['send_p50_ms']:.2f}, p99 "
          f"{lat['send_p99_ms']:.2f}; {lat['heard']} changes)")  # fmt: skip
    print(f"  history of {mem['changes']:,} changes: {mem['bookkeeping_mb']:.1f} MB "
          f"({mem['bytes_per_change']:.0f} B each, values shared with the store), "
          f"{mem['with_values_mb']:.1f} MB with a distinct 100-byte value each")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
