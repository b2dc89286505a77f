"""The thin MQTT adapter around the replica's state machine.

paho's network thread decodes each payload once, feeds the state machine and publishes what
it returns, inside the callback: handing each message to another thread cost ~0.35 ms per
request (a thread wake-up and a GIL hand-off). A lock keeps the state machine single-entry;
the main thread takes it between messages for timers and heartbeats, and alone does what
must not run on paho's thread: dropping and re-opening the connection.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kvserver.replica import (
    Effect,
    Publish,
    Reconnect,
    Replica,
    ReplicaConfig,
    SendState,
    Stop,
    new_incarnation,
)
from kvserver.transfer import Snapshot
from kvwire.errors import BrokerError
from kvwire.messages import (
    MONITOR_TOPIC,
    SYNC_TOPIC_PREFIX,
    Heartbeat,
    Invalid,
    decode_beat,
    decode_estado,
    decode_request,
)
from kvwire.mqtt import new_client

log = logging.getLogger("kvserver")


@dataclass(frozen=True)
class NodeSettings:
    host: str
    port: int
    monitor_topic: str = MONITOR_TOPIC
    heartbeat_interval: float = 0.25
    #: How long the broker keeps our session across a disconnect (PROTOCOL §3).
    session_expiry: int = 10
    connect_timeout: float = 10.0
    fresh: bool = False
    #: Test only: KEY=VALUE stored on this replica alone, to show the divergence check works.
    corrupt_for_tests: str | None = None


_Control = Reconnect | Stop

#: State chunks handed to paho and not yet acknowledged by the broker (~130 KB each).
_SEND_WINDOW = 32


class RedeliveryFilter:
    """Drops a QoS 1 message the broker sends again after a reconnect (DUP set) when this
    process already applied it, so that it is not counted twice in the stream position."""

    def __init__(self, size: int = 512) -> None:
        self._recent: deque[int] = deque(maxlen=size)
        self._counts: dict[int, int] = {}

    def is_repeat(self, payload: bytes | bytearray, dup: bool) -> bool:
        fingerprint = hash(payload if isinstance(payload, bytes) else bytes(payload))
        if dup and self._counts.get(fingerprint):
            return True
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._recent.append(fingerprint)
        self._counts[fingerprint] = self._counts.get(fingerprint, 0) + 1
        return False


class Node:
    def __init__(self, config: ReplicaConfig, settings: NodeSettings) -> None:
        self.config = config
        self.settings = settings
        self.control: queue.SimpleQueue[_Control] = queue.SimpleQueue()
        self.generation = 0
        self.client: mqtt.Client | None = None
        self.core: Replica
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._join_on_connect: bool | None = None  # keep_store for the join to start
        self._first_connect = True
        self._redelivery = RedeliveryFilter()
        self._exit_code = 0

    # --- connections ----------------------------------------------------------------------

    def _connect(self, incarnation: str) -> None:
        """A new connection is a new incarnation: new client id, new will, clean session."""
        with self._lock:
            self.generation += 1
            generation = self.generation
            self._first_connect = True
        client = new_client(f"kvserver-{self.config.replica_id}-{incarnation}")
        will = Heartbeat(idserv=self.config.replica_id, incarnacao=incarnation, modo="gone")
        client.will_set(self.settings.monitor_topic, will.encode(), qos=1)
        client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
            with self._lock:
                if generation == self.generation:
                    self._on_connected(c, reason, bool(flags.session_present), time.time())

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                if generation == self.generation:
                    self._on_message(c, msg.topic, msg.payload, bool(msg.dup))

        client.on_connect = on_connect
        client.on_message = on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry
        deadline = time.monotonic() + self.settings.connect_timeout
        while True:
            try:
                client.connect(
                    self.settings.host,
                    self.settings.port,
                    keepalive=5,
                    # A new session for a new incarnation; the same one across reconnects,
                    # so that a short disconnect loses nothing (PROTOCOL §3).
                    clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                )
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"cannot reach the MQTT broker at {self.settings.host}:"
                        f"{self.settings.port}: {exc}"
                    ) from None
                time.sleep(0.2)
        self.client = client
        client.loop_start()

    def _subscribe(self, client: mqtt.Client) -> None:
        own_sync = f"{SYNC_TOPIC_PREFIX}/{self.config.replica_id}/+"
        client.subscribe(
            [(self.config.requests_topic, 1), (self.settings.monitor_topic, 0), (own_sync, 1)]
        )

    def _drop_connection(self, with_will: bool) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        if with_will:
            # Let the monitor know at once, so that a substitute answers for the gap.
            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            client.disconnect()
        client.loop_stop()

    # --- the main thread: timers, heartbeats, reconnections -------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        incarnation = new_incarnation()
        if self.settings.fresh:
            self.core = Replica.fresh(self.config, incarnation=incarnation)
            if self.settings.corrupt_for_tests:
                key, _, value = self.settings.corrupt_for_tests.partition("=")
                self.core.store.put(key, value)
                log.warning("replica %d corrupted on purpose (test switch)", self.core.id)
        else:
            self.core = Replica(self.config, incarnation=incarnation)
            self._join_on_connect = False
        self._connect(incarnation)
        next_beat = 0.0
        interval = self.settings.heartbeat_interval
        tick = min(interval, 0.05)
        while not self._stopping.is_set():
            with contextlib.suppress(queue.Empty):
                self._on_control(self.control.get(timeout=tick))
            now = time.time()
            client = self.client
            if now >= next_beat and client is not None:
                with self._lock:
                    self._perform(client, self.core.tick(now))
                    beat = self.core.heartbeat(now)
                client.publish(self.settings.monitor_topic, beat.encode(), qos=0)
                next_beat = now + interval
        self._shutdown()
        return self._exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _on_control(self, effect: _Control) -> None:
        if isinstance(effect, Stop):
            log.error("replica %d exits: %s", self.core.id, effect.reason)
            self._exit_code = 3
            self._stopping.set()
            return
        self._drop_connection(effect.with_will)
        incarnation = new_incarnation()
        with self._lock:
            self.core.incarnation = incarnation
            self._join_on_connect = effect.keep_store
        self._connect(incarnation)

    def _shutdown(self) -> None:
        client = self.client
        if client is None:
            return
        gone = Heartbeat(idserv=self.core.id, incarnacao=self.core.incarnation, modo="gone")
        info = client.publish(self.settings.monitor_topic, gone.encode(), qos=1)
        with contextlib.suppress(RuntimeError):  # not connected: the will does the job
            info.wait_for_publish(timeout=1.0)
        self._drop_connection(with_will=False)
        log.info("replica %d stopped at position %d", self.core.id, self.core.position)

    # --- paho's thread, under the lock ----------------------------------------------------

    def _on_message(
        self, client: mqtt.Client, topic: str, payload: bytes | bytearray, dup: bool
    ) -> None:
        now = time.time()
        if topic == self.config.requests_topic:
            if self._redelivery.is_repeat(payload, dup):
                return
            self._perform(client, self.core.on_request(decode_request(payload), now))
        elif topic == self.settings.monitor_topic:
            beat = decode_beat(payload)
            if isinstance(beat, Heartbeat):
                self._perform(client, self.core.on_heartbeat(beat, now))
        elif topic.startswith(SYNC_TOPIC_PREFIX):
            chunk = decode_estado(payload)
            if isinstance(chunk, Invalid):
                log.warning("replica %d ignores a bad state chunk: %s", self.core.id, chunk.reason)
                return
            self._perform(client, self.core.on_state(topic, chunk, now))

    def _on_connected(
        self, client: mqtt.Client, reason: Any, session_present: bool, now: float
    ) -> None:
        if reason.is_failure:
            log.error("replica %d: the broker refused the connection: %s", self.core.id, reason)
            return
        if self._first_connect:
            self._first_connect = False
            self._subscribe(client)
            # Beat at once: the monitor learns this incarnation before anything else happens.
            # (A beat published before CONNACK is dropped by paho.)
            beat = self.core.heartbeat(now)
            client.publish(self.settings.monitor_topic, beat.encode(), qos=0)
            if self._join_on_connect is not None:
                keep_store, self._join_on_connect = self._join_on_connect, None
                effects = self.core.start_join(self.core.incarnation, now, keep_store=keep_store)
                self._perform(client, effects)
            log.info(
                "replica %d connected to %s:%d",
                self.core.id,
                self.settings.host,
                self.settings.port,
            )
        elif not session_present:
            self._perform(client, self.core.on_session_lost(now))

    def _perform(self, client: mqtt.Client, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Publish):
                client.publish(effect.topic, effect.message.encode(), qos=1)
            elif isinstance(effect, SendState):
                threading.Thread(
                    target=self._send_state,
                    args=(client, effect.topic, effect.snapshot),
                    daemon=True,
                    name="state-sender",
                ).start()
            else:
                # Reconnecting stops paho's thread, which may be the one running this.
                self.control.put(effect)
                return

    def _send_state(self, client: mqtt.Client, topic: str, snapshot: Snapshot) -> None:
        # A window of chunks the broker has not acknowledged yet: encoding ahead of the socket
        # only piles up payloads in paho (at 1M keys, 125 MB on top of the store).
        window: deque[mqtt.MQTTMessageInfo] = deque()
        sent = 0
        try:
            for chunk in snapshot.chunks(self.config.chunk_items):
                window.append(client.publish(topic, chunk.encode(), qos=1))
                sent += 1
                if len(window) >= _SEND_WINDOW:
                    oldest = window.popleft()
                    oldest.wait_for_publish(timeout=self.settings.connect_timeout)
                    if not oldest.is_published():
                        raise RuntimeError("the broker acknowledged no chunk in time")
        except (RuntimeError, ValueError) as exc:
            # The joiner hears nothing more and asks again (PROTOCOL §7).
            log.warning(
                "replica %d stopped sending state to %s after %d chunks: %s",
                self.config.replica_id,
                topic,
                sent,
                exc,
            )
        else:
            log.info("replica %d sent %d state chunks to %s", self.config.replica_id, sent, topic)
        with self._lock:
            self.core.state_sent(snapshot)
