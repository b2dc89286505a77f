"""`kvclient watch`: the value mirror (PROTOCOL §14) read as a stream of changes.

The replicas publish each key's value retained on `<mirror>/<key>`: a new subscriber first
receives every current value, then each change as it happens; an empty payload is a delete.
"""

from __future__ import annotations

import json
import queue
import secrets
from typing import Any

import paho.mqtt.client as mqtt

from kvwire.access import Access
from kvwire.messages import Espelho, key_of_mirror_topic, mirror_topic
from kvwire.mqtt import (
    Closing,
    broker_address,
    close_client,
    connect_blocking,
    never_raises,
    new_client,
)

#: The mirror's topic prefix that `scripts/cluster.sh` gives the replicas.
DEFAULT_MIRROR = "inf1406-kv"


class Change:
    """One key's new value (None: deleted) and revision."""

    __slots__ = ("key", "revision", "value")

    def __init__(self, key: str, value: str | None, revision: int | None) -> None:
        self.key, self.value, self.revision = key, value, revision

    def text(self) -> str:
        if self.value is None:
            return f"{self.key} deleted"
        return f"{self.key} = {self.value} (revision {self.revision})"

    def json(self) -> str:
        body: dict[str, Any] = {"chave": self.key, "valor": self.value, "revisao": self.revision}
        if self.value is None:
            body["apagada"] = True
        return json.dumps(body, ensure_ascii=False)


class MirrorWatch(Closing):
    """Subscribes to the keys under `prefix` on the mirror; `changes` fills as they come."""

    def __init__(
        self,
        broker: str | None = None,
        prefix: str = "",
        *,
        mirror: str = DEFAULT_MIRROR,
        access: Access | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.prefix, self.mirror = prefix, mirror
        self.changes: queue.Queue[Change] = queue.Queue()
        # A whole topic level can be subscribed to; a partial one is filtered here.
        base = mirror_topic(mirror, prefix)
        self.topic = (
            base + "#" if prefix.endswith("/") or not prefix else base.rsplit("/", 1)[0] + "/#"
        )
        host, port = broker_address(broker)
        access = access if access is not None else Access.load()
        self._client = new_client(f"kvwatch-{secrets.token_hex(6)}", access=access)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        connect_blocking(self._client, host, port, timeout=connect_timeout)

    @never_raises
    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            c.subscribe(self.topic, qos=1)

    @never_raises
    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        key = key_of_mirror_topic(self.mirror, msg.topic)
        if key is None or not key.startswith(self.prefix):
            return
        if not msg.payload:
            self.changes.put(Change(key, None, None))
            return
        try:
            value = Espelho.model_validate_json(msg.payload)
        except ValueError:
            return  # not a mirror message: someone else's retained payload
        self.changes.put(Change(key, value.valor, value.revisao))

    def close(self) -> None:
        close_client(self._client)
