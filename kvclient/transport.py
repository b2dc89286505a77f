"""How `KVClient` and `ClusterWatch` reach the broker, behind one small seam.

`MqttTransport` is the real one (paho on its own thread). `MockTransport` answers in memory,
the way httpx's `MockTransport` does for HTTP: a function sees every payload published and
returns the payloads to deliver back, so the client's retry, timeout and error paths are
tested in milliseconds, without a broker.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from kvwire.access import Access
from kvwire.mqtt import broker_address, close_client, connect_blocking, never_raises, new_client

#: Called with the topic and payload of every message that arrives on the subscription.
Deliver = Callable[[str, bytes], None]


class Transport(Protocol):
    def open(self, topic: str, deliver: Deliver) -> None:
        """Connect and subscribe to `topic` (a filter); BrokerError if the broker cannot be
        used."""

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """`properties`: MQTT 5 properties (a signed control message's `assinatura`)."""

    def close(self) -> None: ...


class MqttTransport:
    """One paho client with its network thread. Callbacks only hand payloads over."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        name: str = "kvclient",
        connect_timeout: float = 5.0,
        qos: int = 1,
        access: Access | None = None,
        v5: bool = True,
    ) -> None:
        """`access`: credentials and TLS; by default from the environment (`Access.load`).
        `v5=False` speaks MQTT 3.1.1, cheaper per message in paho (no properties to build or
        parse), for a client that needs no MQTT 5 property."""
        self.host, self.port = broker_address(broker)
        self.connect_timeout = connect_timeout
        self.qos = qos
        self.access = access if access is not None else Access.load()
        self._client = new_client(f"{name}-{secrets.token_hex(6)}", access=self.access, v5=v5)
        self._topic = ""
        self._deliver: Deliver | None = None

    def open(self, topic: str, deliver: Deliver) -> None:
        self._topic, self._deliver = topic, deliver
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        connect_blocking(self._client, self.host, self.port, timeout=self.connect_timeout)

    @never_raises
    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if not reason.is_failure:  # again after every reconnect: our session may be gone
            c.subscribe(self._topic, qos=self.qos)

    @never_raises
    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._deliver is not None:
            self._deliver(msg.topic, bytes(msg.payload))  # the same object when it is bytes

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        self._client.publish(topic, payload, qos=1, properties=properties)

    def close(self) -> None:
        close_client(self._client)


class MockTransport:
    """An in-memory broker for one client: `handler(topic, payload)` returns what to
    deliver back, at once; `send` delivers a payload nobody asked for."""

    def __init__(self, handler: Callable[[str, bytes], Iterable[bytes]] | None = None) -> None:
        self.handler = handler
        self.published: list[tuple[str, bytes]] = []
        self.topic: str | None = None
        self.closed = False
        self._deliver: Deliver | None = None

    def open(self, topic: str, deliver: Deliver) -> None:
        self.topic, self._deliver = topic, deliver

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        self.published.append((topic, payload))
        if self.handler is not None:
            for answer in self.handler(topic, payload):
                self.send(answer)

    def send(self, payload: bytes, topic: str | None = None) -> None:
        """Deliver `payload`, on `topic` or the one subscribed to."""
        assert self._deliver is not None and self.topic is not None, "open() first"
        self._deliver(topic or self.topic, payload)

    def close(self) -> None:
        self.closed = True
