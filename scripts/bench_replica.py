"""What one request costs a replica in Python, without paho: decoding, the state machine,
encoding the answer. Measured in steady state, with the de-duplication set already full
(a full set is where an eviction that scanned the dict once cost 20-100 us a write).

The figures to compare against: json.loads and json.dumps of the same payloads, which is all
that scripts/ceiling_responder.py does per request besides paho. Under load, paho's own
handling of each message costs about 45 us in each process (py-spy), so a few us here is
what separates mqtt-kv from the ceiling.

    .venv/bin/python scripts/bench_replica.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvserver.effects import Publish
from kvserver.replica import Replica
from kvserver.settings import ReplicaSettings
from kvwire.messages import Consulta, Insercao, decode_request

T = TypeVar("T")
TOPIC = "inf1406-resp/0123456789ab"


def payloads(start: int, count: int) -> list[bytes]:
    """Half gets, half puts of 100-byte values over 1000 keys, as bench.py sends them."""
    out: list[Consulta | Insercao] = []
    for i in range(start, start + count):
        key = f"bench-{i % 1000}"
        if i % 2:
            out.append(Insercao(chave=key, novovalor="v" * 100, topico_resp=TOPIC, idpedido=i))
        else:
            out.append(Consulta(chave=key, topico_resp=TOPIC, idpedido=i))
    return [message.encode() for message in out]


def per_item(fn: Callable[[T], object], items: Iterable[T], count: int) -> float:
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    config = ReplicaSettings(replica_id=0, n=3)
    replica = Replica.fresh(config, incarnation="bench")
    now = time.time()
    # Fill the de-duplication set (it holds writes only: twice its size in requests).
    for payload in payloads(0, 2 * config.dedup_capacity + 2):
        replica.on_request(decode_request(payload), now)
    replica.ready()
    batch = payloads(10**9, args.requests)
    count = len(batch)
    decode = per_item(decode_request, batch, count)
    messages = [decode_request(p) for p in batch]
    answers: list[Publish] = []
    answered = 0

    def apply(message: object) -> None:
        nonlocal answered
        replica.on_request(message, now)  # type: ignore[arg-type]
        for effect in replica.ready().effects:  # the adapter takes one Ready per batch
            if isinstance(effect, Publish):
                answered += 1
                # A sample to encode: holding every answer would make the collector walk
                # 66k of them in each collection, which a replica never does.
                if len(answers) < 10_000:
                    answers.append(effect)

    machine = per_item(apply, messages, count)
    encode = per_item(lambda a: a.message.encode(), answers, len(answers)) * answered / count
    ceiling_in = per_item(json.loads, batch, count)
    sample = [json.loads(p) for p in batch[: len(answers)]]  # decoded before the clock starts
    ceiling_out = per_item(json.dumps, sample, len(sample)) * answered / count
    print(f"{count} requests (50% gets), replica 0 of 3, de-duplication set full")
    print(f"{'per request (us)':28}{'mqtt-kv':>10}{'ceiling':>10}")
    print(f"{'decode':28}{decode:>10.2f}{ceiling_in:>10.2f}")
    print(f"{'state machine':28}{machine:>10.2f}{'':>10}")
    print(f"{'encode answers (1 in 3)':28}{encode:>10.2f}{ceiling_out:>10.2f}")
    print(f"{'total':28}{decode + machine + encode:>10.2f}{ceiling_in + ceiling_out:>10.2f}")


if __name__ == "__main__":
    main()
