"""The ceiling's logic inside a replica's own adapter: `kvserver.node.Node` (its one-thread
loop, MQTT 5 session, heartbeats, read-ahead socket), with the state machine's handling of
requests replaced by what scripts/ceiling_responder.py does (`json` only: apply every insert,
the key's owner answers). Between the ceiling and mqtt-kv, it says how much of the gap is the
transport and how much the replica's own work (issue 16):

    .venv/bin/python scripts/bench_cpu.py --side adapter

    python scripts/adapter_responder.py --id I --n N --broker HOST:PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ceiling_responder import arguments, respond
from paho.mqtt.properties import Properties

from kvserver.node import Node
from kvserver.settings import ReplicaSettings
from kvwire.mqtt import broker_address


class AdapterResponder(Node):
    def __init__(self, settings: ReplicaSettings) -> None:
        super().__init__(settings)
        self._values: dict[str, str] = {}

    def _on_connected(self, session_present: bool) -> None:
        super()._on_connected(session_present)  # subscribes, on the first connection
        print("connected", flush=True)  # what bench.connected waits for, as for the ceiling

    def _on_message(self, topic: str, payload: bytes, dup: bool, props: Properties | None) -> None:
        if topic != self.settings.requests_topic or self.link is None:
            super()._on_message(topic, payload, dup, props)  # heartbeats: the adapter's own
            return
        settings = self.settings
        for to, answer in respond(self._values, settings.replica_id, settings.n, payload):
            self.link.publish(to, answer.encode())


def main() -> None:
    args = arguments()
    host, port = broker_address(args.broker)
    settings = ReplicaSettings(replica_id=args.id, n=args.n, host=host, port=port, fresh=True)
    sys.exit(AdapterResponder(settings).run())


if __name__ == "__main__":
    main()
