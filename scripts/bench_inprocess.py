"""A replica's and a ceiling responder's whole per-message path, paho included, in one
process: each reads the same recorded stream of requests (and the broker's PUBACKs for its
answers) from memory instead of a socket. No broker, no other process, no network: what is
left is the code's own cost and the machine's drift, without the scheduling of five busy
processes on two cores; compare the two sides within a round (issue 16).

    .venv/bin/python scripts/bench_inprocess.py [--requests 30000] [--rounds 3] [--profile]

The stream is bench.py's load (half gets, half puts of 100-byte values over 1000 keys) as
replica 0 of 3 sees it. `--profile` prints cProfile's top functions of one replica round.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import paho.mqtt.client as mqtt
from bench_replica import payloads
from ceiling_responder import answering

from kvserver.node import Node
from kvserver.replica import Replica
from kvserver.settings import ReplicaSettings
from kvwire.mqtt import Link, new_client, pump_only, write_batch
from kvwire.paho_speed import BufferedSocket

REQUESTS_TOPIC = "inf1406-reqs"


class Recorded:
    """What a socket would have read: the bytes given, then nothing (BlockingIOError)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def recv(self, size: int) -> bytes:
        if self.at >= len(self.data):
            raise BlockingIOError
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def send(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass


def publish_packet(payload: bytes, mid: int, v5: bool) -> bytes:
    topic = REQUESTS_TOPIC.encode()
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid)
    body += (b"\x00" if v5 else b"") + payload  # MQTT 5: no properties
    length, left = b"", len(body)
    while True:
        byte, left = left % 128, left // 128
        length += bytes([byte | (0x80 if left else 0)])
        if not left:
            return b"\x32" + length + body


def puback(mid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid)


def ceiling_client() -> mqtt.Client:
    client = new_client("ceiling", v5=False)
    answering(client, 0, 3)
    pump_only(client)
    return client


def replica_client() -> mqtt.Client:
    """A real `Node` and its state machine, as `Node.run` wires them, minus the connection."""
    settings = ReplicaSettings(replica_id=0, n=3, fresh=True)
    node = Node(settings)
    node.core = Replica.fresh(settings, incarnation="bench")
    client = new_client("replica")
    node.link = Link(
        client, "-", 0, on_connect=node._on_connected, on_message=node._on_message,
        on_error=node._on_bug, on_batch=node._commit,
    )  # fmt: skip
    node._next_beat = float("inf")  # no heartbeats: no broker to take them
    client.user_data_set(node._commit)  # what `exchange` calls after each read: the Ready
    return client


def feed(client: mqtt.Client, data: bytes) -> float:
    """Seconds to read and answer `data`, writing after each of paho's reads (both sides alike)."""
    client._sock = BufferedSocket(Recorded(data))
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]
    sock = client._sock
    started = time.perf_counter()
    after_read = client.user_data_get()
    while sock._sock.at < len(data) or sock.pending():
        client.loop_read()
        if after_read is not None:
            after_read()
        write_batch(client)
    return time.perf_counter() - started


def stream(
    make: Callable[[], mqtt.Client], v5: bool, warm: list[bytes], requests: list[bytes]
) -> tuple[mqtt.Client, bytes]:
    """A warmed-up client, and the stream of `requests` with a PUBACK after each request it
    answers: which those are comes from a dry run on a twin, one request at a time."""
    warm_stream = b"".join(publish_packet(p, 1 + i % 60000, v5) for i, p in enumerate(warm))
    twin = make()
    feed(twin, warm_stream)
    answers = []
    for i, payload in enumerate(requests):
        before = twin._last_mid
        feed(twin, publish_packet(payload, 1 + i % 60000, v5))
        answers.append(twin._last_mid != before)
    client = make()
    feed(client, warm_stream)
    client._out_messages.clear()
    mid, parts = client._last_mid, []
    for i, payload in enumerate(requests):
        parts.append(publish_packet(payload, 1 + i % 60000, v5))
        if answers[i]:
            mid = mid % 65535 + 1
            parts.append(puback(mid))
    return client, b"".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    warm, requests = payloads(0, 3000), payloads(10**9, args.requests)
    sides = {"ceiling": (ceiling_client, False), "replica": (replica_client, True)}
    print(f"{args.requests} requests (50% gets), as responder 0 of 3 reads them; µs a request")
    for _ in range(args.rounds):
        figures = {}
        for name, (make, v5) in sides.items():
            client, data = stream(make, v5, warm, requests)
            figures[name] = feed(client, data) / args.requests * 1e6
        ratio = figures["replica"] / figures["ceiling"]
        print(
            f"ceiling {figures['ceiling']:6.2f}  replica {figures['replica']:6.2f}  ({ratio:.2f}x)"
        )
    if args.profile:
        client, data = stream(replica_client, True, warm, requests)
        profiler = cProfile.Profile()
        profiler.runcall(feed, client, data)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
