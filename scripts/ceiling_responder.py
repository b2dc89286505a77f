"""The ceiling for the benchmark: a trivial responder that speaks the assignment's protocol
and nothing more (apply every insert, the key's owner answers), as cheap as paho allows:
MQTT 3.1.1 (no properties to build or parse), `json` only, no validation, TCP_NODELAY, and
the same loop on one thread as the replicas turn (`kvwire.mqtt.exchange`). What
mqtt-kv does beyond this (decoding into models, log, de-duplication, digest, heartbeats,
failover, MQTT 5 sessions) is what the benchmark prices.

    python scripts/ceiling_responder.py --id I --n N --broker HOST:PORT
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt

from kvwire.mqtt import broker_address, exchange, new_client, pump_only


def respond(
    store: dict[str, str], me: int, n: int, payload: bytes | bytearray
) -> list[tuple[str, str]]:
    """The protocol as the ceiling speaks it: apply an insert; the key's owner answers (the
    reply topic and the answer), the others say nothing. A `lote` (protocol §21): each of
    its requests so, and the owner's answers in one `respostas` per reply topic."""
    request = json.loads(payload)
    if request["tipomsg"] != "lote":
        answer = _answer(store, me, n, request)
        return [] if answer is None else [(request["topico-resp"], json.dumps(answer))]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for one in request["pedidos"]:
        answer = _answer(store, me, n, one)
        if answer is not None:
            grouped.setdefault(one["topico-resp"], []).append(answer)
    return [
        (topic, json.dumps({"tipomsg": "respostas", "respostas": answers, "idserv": me}))
        for topic, answers in grouped.items()
    ]


def _answer(
    store: dict[str, str], me: int, n: int, request: dict[str, Any]
) -> dict[str, Any] | None:
    key = request["chave"]
    if request["tipomsg"] == "insercao":
        store[key] = request["novovalor"]
    if sum(key.encode()) % n != me:
        return None
    value = store.get(key)
    return {
        "tipomsg": "resposta",
        "idpedido": request["idpedido"],
        "chave": key,
        "valor": value,
        "status": "ok" if value is not None else "naoencontrada",
        "idserv": me,
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--broker")
    return parser.parse_args()


def answering(client: mqtt.Client, me: int, n: int) -> None:
    """Make `client` a responder: each request in, its answer out (if `me` owns the key)."""
    store: dict[str, str] = {}

    def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        for topic, answer in respond(store, me, n, msg.payload):
            c.publish(topic, answer, qos=1)

    client.on_message = on_message


def main() -> None:
    args = arguments()
    host, port = broker_address(args.broker)
    me, n = args.id, args.n

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe("inf1406-reqs", qos=1)
        print("connected", flush=True)

    client = new_client(f"ceiling-{me}", v5=False)
    answering(client, me, n)
    client.on_connect = on_connect
    pump_only(client)
    client.connect(host, port)
    done: list[int] = []
    signal.signal(signal.SIGTERM, lambda *a: done.append(1))
    while not done and exchange(client, 0.2) == mqtt.MQTT_ERR_SUCCESS:
        pass


if __name__ == "__main__":
    main()
