"""How `KVClient` and `ClusterWatch` reach the broker, behind one small seam.

`MqttTransport` is the real one (paho, turned by a thread of ours). `MockTransport` answers in
memory, the way httpx's `MockTransport` does for HTTP: a function sees every payload published and
returns the payloads to deliver back, so the client's retry, timeout and error paths are
tested in milliseconds, without a broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvwire.access import Access
from kvwire.mqtt import Link, broker_address, never_raises, new_client

log = logging.getLogger("kvclient")

#: Called with the topic and payload of every message that arrives on the subscription.
Deliver = Callable[[str, bytes], None]


class Transport(Protocol):
    def open(self, topic: str | Sequence[str], deliver: Deliver) -> None:
        """Connect and subscribe to `topic` (a filter, or several); BrokerError if the broker
        cannot be used."""

    @property
    def connected(self) -> bool:
        """Whether the broker is reachable now (the transport reconnects by itself)."""

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """`properties`: MQTT 5 properties (a signed control message's `assinatura`)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Will:
    """What the broker publishes for us when our connection dies without a DISCONNECT (MQTT
    5), `delay` seconds later unless we are back by then."""

    topic: str
    payload: bytes
    delay: int = 0


class MqttTransport:
    """One paho client shared by the caller's threads and one thread of ours, under a lock.

    A caller publishes and writes at once, on its own thread; our thread waits in select()
    without the lock, then reads under it and hands payloads over (`Link.pump`'s `hold`).
    Not paho's own thread: with it, every publish from a caller wakes the loop through a
    socket pair (a write, a read, and a context switch per request), and every packet is
    written alone (issue 16).
    """

    #: Seconds our thread waits in select() with nothing to read.
    IDLE = 0.25

    def __init__(
        self,
        broker: str | None = None,
        *,
        name: str = "kvclient",
        connect_timeout: float = 5.0,
        qos: int = 1,
        access: Access | None = None,
        v5: bool = True,
        will: Will | None = None,
    ) -> None:
        """`access`: credentials and TLS; by default from the environment (`Access.load`).
        `v5=False` speaks MQTT 3.1.1, cheaper per message in paho (no properties to build or
        parse), for a client that needs no MQTT 5 property. `qos`: of the subscription."""
        self.host, self.port = broker_address(broker)
        self.connect_timeout = connect_timeout
        self.qos = qos
        self.access = access if access is not None else Access.load()
        self._client = new_client(f"{name}-{secrets.token_hex(6)}", access=self.access, v5=v5)
        self._connect_args: dict[str, object] = {}
        if will is not None:
            properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            properties.WillDelayInterval = will.delay
            self._client.will_set(will.topic, will.payload, qos=1, properties=properties)
            # The session must outlive the delay, or the broker sends the will at once.
            session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            session.SessionExpiryInterval = will.delay
            # A reconnect resumes the session (a new one only at first): the will is not sent.
            clean = mqtt.MQTT_CLEAN_START_FIRST_ONLY
            self._connect_args = {"clean_start": clean, "properties": session}
        self._topics: list[str] = []
        self._deliver: Deliver | None = None
        self._link: Link | None = None
        #: Reentrant: a handler run under it (a future's callback) may publish.
        self._lock = threading.RLock()
        self._closing = False
        self._thread: threading.Thread | None = None
        #: Written by `close` alone, so that it need not wait for select() to time out.
        self._stop_r, self._stop_w = os.pipe()

    def open(self, topic: str | Sequence[str], deliver: Deliver) -> None:
        self._topics = [topic] if isinstance(topic, str) else list(topic)
        self._deliver = deliver
        link = Link(
            self._client,
            self.host,
            self.port,
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_error=self._on_error,
        )
        with self._lock:
            link.open(self.connect_timeout, keepalive=10, patient=False, **self._connect_args)
        self._link = link
        self._thread = threading.Thread(target=self._run, daemon=True, name="kv-mqtt")
        self._thread.start()

    def _on_connect(self, session_present: bool) -> None:
        # Again after every reconnect: a clean session has no subscription.
        self._client.subscribe([(topic, self.qos) for topic in self._topics])

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    @never_raises
    def _on_message(self, topic: str, payload: bytes, dup: bool, props: Properties | None) -> None:
        if self._deliver is not None:
            self._deliver(topic, bytes(payload))  # the same object when it is bytes

    def _on_error(self, exc: BaseException) -> None:  # pragma: no cover: handlers never raise
        log.error("MQTT client error: %s", exc)

    def _run(self) -> None:
        link = self._link
        assert link is not None
        while not self._closing:
            link.pump(self.IDLE, wake=self._stop_r, hold=self._lock)
            link.failed = None  # our handlers never raise; nothing to stop for

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        with self._lock:
            if self._link is not None:
                self._link.publish(topic, payload, properties=properties)
                self._link.flush()

    def close(self) -> None:
        self._closing = True
        thread, self._thread = self._thread, None
        if thread is not None:
            os.write(self._stop_w, b"!")
            thread.join(5)
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class MockTransport:
    """An in-memory broker for one client: `handler(topic, payload)` returns what to
    deliver back, at once; `send` delivers a payload nobody asked for."""

    def __init__(self, handler: Callable[[str, bytes], Iterable[bytes]] | None = None) -> None:
        self.handler = handler
        self.published: list[tuple[str, bytes]] = []
        self.topic: str | None = None
        self.closed = False
        self._deliver: Deliver | None = None

    connected = True

    def open(self, topic: str | Sequence[str], deliver: Deliver) -> None:
        self.topic = topic if isinstance(topic, str) else topic[0]
        self._deliver = deliver

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
