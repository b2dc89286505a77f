"""`kvclient watch`: the value mirror (protocol §14) read as a stream of changes.

The replicas publish each key's value retained on `<mirror>/<key>`: a new subscriber first
receives every current value, then each change as it happens; an empty payload is a delete.
"""

from __future__ import annotations

import json
import queue
from typing import Any

from kvclient.transport import MqttTransport, Transport
from kvwire.access import Access
from kvwire.messages import Espelho
from kvwire.mqtt import Closing, never_raises
from kvwire.topics import key_of_mirror_topic, mirror_topic

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
    """Subscribes to the keys under `prefix` on the mirror (with `exact`, to the key `prefix`
    alone); `changes` fills as they come."""

    def __init__(
        self,
        broker: str | None = None,
        prefix: str = "",
        *,
        mirror: str = DEFAULT_MIRROR,
        access: Access | None = None,
        connect_timeout: float = 5.0,
        transport: Transport | None = None,
        exact: bool = False,
    ) -> None:
        self.prefix, self.mirror, self.exact = prefix, mirror, exact
        self.changes: queue.Queue[Change] = queue.Queue()
        # A whole topic level can be subscribed to; a partial one is filtered here.
        base = mirror_topic(mirror, prefix)
        whole_levels = prefix.endswith("/") or not prefix
        self.topic = base + "#" if whole_levels else base.rsplit("/", 1)[0] + "/#"
        if exact:
            self.topic = base
        self._transport = transport or MqttTransport(
            broker, name="kvwatch", connect_timeout=connect_timeout, access=access, v5=False
        )
        self._transport.open(self.topic, self._on_message)

    @never_raises
    def _on_message(self, topic: str, payload: bytes) -> None:
        key = key_of_mirror_topic(self.mirror, topic)
        if key is None or not key.startswith(self.prefix) or (self.exact and key != self.prefix):
            return
        if not payload:
            self.changes.put(Change(key, None, None))
            return
        try:
            value = Espelho.model_validate_json(payload)
        except ValueError:
            return  # not a mirror message: someone else's retained payload
        self.changes.put(Change(key, value.valor, value.revisao))

    def close(self) -> None:
        self._transport.close()
