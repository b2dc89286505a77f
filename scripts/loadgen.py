"""Load generators for the benchmark, each run in a process of its own so that its CPU time
is its own: the lean one (a bare paho MQTT 3.1.1 client, payloads prepared in advance, one
thread) is the cheapest way to ask, so that the cluster, not the generator, is what is
measured; `kvclient` is what users run (`KVClient`, with retries and futures), batching
(protocol §21), and `kvclient-unbatched` the same with batching off.

    python scripts/loadgen.py --broker HOST:PORT --ops N --depth D [--client lean|kvclient]

Half gets, half puts of 100-byte values over 1000 keys; with `--leased`, half the puts name a
lease (protocol §18), granted first for an hour; with `--split`, half the puts are of keys
under `w/` (what `scripts/bench_feed.py`'s watchers watch, §19). Prints one JSON object: ops_s,
p50_ms and p99_ms (depth 1 only), and cpu_us (user_us), this process's CPU time per request.
Credentials and TLS come from the environment, as for every program (`kvwire.access`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from kvclient.client import KVClient
from kvclient.operations import Get, Put
from kvwire.access import Access
from kvwire.messages import Resposta
from kvwire.mqtt import Link, broker_address, exchange, new_client

KEYS = 1000
VALUE = "v" * 100


def generate(
    address: str,
    ops: int,
    depth: int,
    client: str,
    env: dict[str, str] | None,
    leased: bool = False,
    split: bool = False,
) -> dict[str, float]:
    """One load shape from a generator process of its own (scripts/loadgen.py), so that its
    CPU per request is measured apart from everything else."""
    done = subprocess.run(
        [sys.executable, __file__, "--broker", address,
         "--ops", str(ops), "--depth", str(depth), "--client", client,
         *(["--leased"] if leased else []), *(["--split"] if split else [])],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    if depth == 1 and "p50_ms" not in result:
        raise RuntimeError(f"loadgen timed nothing: {done.stdout} {done.stderr[-2000:]}")
    return result


def cpu() -> tuple[float, float]:
    """User and system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def per_request(before: tuple[float, float], ops: int) -> dict[str, float]:
    user, system = (now - then for now, then in zip(cpu(), before, strict=True))
    return {"cpu_us": (user + system) / ops * 1e6, "user_us": user / ops * 1e6}


def request(kv: KVClient, i: int) -> Future[Resposta]:
    """The i-th request as `KVClient` sends it: the same shape as `payloads`."""
    key = f"bench-{i % KEYS}"
    return kv.submit(Put(key, VALUE) if i % 2 else Get(key))


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
    }


#: The lease half the puts name with `--leased`.
LEASE = "bench-lease"


#: The prefix of half the puts' keys with `--split`.
WATCHED = "w/"


def payloads(
    topic: str, count: int, first_id: int = 0, leased: bool = False, split: bool = False
) -> list[bytes]:
    """Requests prepared before the clock starts: the generator only sends them. Every id is
    new: a repeated one would be a retry, which the replicas answer from their log."""
    out = []
    for i in range(first_id, first_id + count):
        key = f"bench-{i % KEYS}"
        if i % 2:
            if split and i % 4 == 1:
                key = WATCHED + key
            body = {"tipomsg": "insercao", "chave": key, "novovalor": VALUE}
            if leased and i % 4 == 1:
                body["concessao"] = LEASE
        else:
            body = {"tipomsg": "consulta", "chave": key}
        out.append(json.dumps({**body, "topico-resp": topic, "idpedido": i}).encode())
    return out


class Lean:
    """One paho client on this thread, turning the replicas' loop (`kvwire.mqtt.exchange`):
    each answer sends the next request (closed loop)."""

    def __init__(self, broker: str) -> None:
        host, port = broker_address(broker)
        access = Access.load()
        # Where a secured broker lets this user read its answers (protocol §16).
        user = f"{access.username}/" if access.username else ""
        self.topic = f"inf1406-resp/{user}lean-{secrets.token_hex(4)}"
        self.client = new_client(f"lean-{secrets.token_hex(4)}", v5=False, access=access)
        link = Link(
            self.client, host, port,
            on_connect=lambda _: None, on_message=self._on_message, on_error=_raise,
        )  # fmt: skip
        link.open(5)
        self.client.subscribe(self.topic, qos=1)
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.answered = 0
        self._queue: deque[bytes] = deque()
        self._timed = False
        self._first_id = 0
        self._sent = 0

    def _on_message(self, topic: str, payload: bytes, dup: bool, props: object) -> None:
        self.answered += 1
        if self._timed:
            rid = json.loads(payload)["idpedido"]
            self.latencies.append(time.perf_counter() - self.sent_at.pop(rid))
        if self._queue:
            self._send(self._queue.popleft())

    def _send(self, payload: bytes) -> None:
        if self._timed:
            self.sent_at[self._first_id + self._sent] = time.perf_counter()
        self._sent += 1
        self.client.publish("inf1406-reqs", payload, qos=1)

    def run(self, requests: list[bytes], depth: int, timed: bool, first_id: int = 0) -> float:
        self.answered, self._timed, self._sent, self._first_id = 0, timed, 0, first_id
        self._queue = deque(requests[depth:])
        started = time.perf_counter()
        for payload in requests[:depth]:
            self._send(payload)
        deadline = time.monotonic() + 120
        while self.answered < len(requests) and time.monotonic() < deadline:
            exchange(self.client, 0.01)
        return len(requests) / (time.perf_counter() - started)


def _raise(exc: BaseException) -> None:
    raise exc


def lean(
    broker: str, ops: int, depth: int, leased: bool = False, split: bool = False
) -> dict[str, float]:
    gen = Lean(broker)
    if leased:
        grant = {"tipomsg": "concessao", "concessao": LEASE, "ttl": 3600}
        grant_id = {"topico-resp": gen.topic, "idpedido": -1}
        gen.run([json.dumps({**grant, **grant_id}).encode()], 1, timed=False)
    warm_up = payloads(gen.topic, 1000, leased=leased, split=split)
    gen.run(warm_up, 64, timed=False)  # keys exist
    requests = payloads(gen.topic, ops, first_id=1000, leased=leased, split=split)
    before = cpu()
    ops_s = gen.run(requests, depth, timed=depth == 1, first_id=1000)
    result = {"ops_s": ops_s, **per_request(before, ops)}
    return result | percentiles(gen.latencies) if gen.latencies else result


def with_kvclient(broker: str, ops: int, depth: int, batching: bool = True) -> dict[str, float]:
    access = Access.load()
    with KVClient(broker, timeout=30, retry_interval=10, access=access, batching=batching) as kv:
        for future in [request(kv, i) for i in range(1000)]:
            future.result(30)
        latencies = []
        before = cpu()
        started = time.perf_counter()
        window: deque[Future[Resposta]] = deque()
        for i in range(ops):
            sent = time.perf_counter()
            window.append(request(kv, i))
            if depth == 1:
                window.popleft().result(30)
                latencies.append(time.perf_counter() - sent)
            elif len(window) >= depth:
                window.popleft().result(30)
        while window:
            window.popleft().result(30)
        ops_s = ops / (time.perf_counter() - started)
        result = {"ops_s": ops_s, **per_request(before, ops)}
    return result | percentiles(latencies) if latencies else result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument(
        "--client", choices=["lean", "kvclient", "kvclient-unbatched"], default="lean"
    )
    parser.add_argument("--leased", action="store_true", help="half the puts under a lease")
    parser.add_argument("--split", action="store_true", help=f"half the puts under {WATCHED}")
    args = parser.parse_args()
    if args.client == "lean":
        result = lean(args.broker, args.ops, args.depth, args.leased, args.split)
    else:
        result = with_kvclient(args.broker, args.ops, args.depth, args.client == "kvclient")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
