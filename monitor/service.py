"""The thin MQTT adapter around the detector: heartbeats in, `falhaserv` out."""

from __future__ import annotations

import logging
import queue
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt

from kvwire.messages import (
    MONITOR_TOPIC,
    REQUESTS_TOPIC,
    Heartbeat,
    Invalid,
    MonitorBeat,
    decode_beat,
)
from kvwire.mqtt import close_client, connect_blocking, new_client
from monitor.detector import Detector
from monitor.divergence import DivergenceCheck

log = logging.getLogger("kvmonitor")


@dataclass(frozen=True)
class MonitorSettings:
    host: str
    port: int
    n: int
    failure_timeout: float
    requests_topic: str = REQUESTS_TOPIC
    monitor_topic: str = MONITOR_TOPIC
    connect_timeout: float = 10.0


_Event = tuple[str, bytes] | bool  # a message (topic, payload), or connected / disconnected


class MonitorService:
    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self.detector = Detector(settings.n, settings.failure_timeout, time.time())
        self.divergence = DivergenceCheck()
        self.name = secrets.token_hex(4)
        self._stopping = threading.Event()
        self._bad_beats = 0

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        client = new_client(f"kvmonitor-{self.name}")
        client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
            if not reason.is_failure:
                c.subscribe(self.settings.monitor_topic, qos=1)
                self.events.put(True)

        def on_disconnect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
            self.events.put(False)

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            self.events.put((msg.topic, bytes(msg.payload)))

        client.on_message = on_message
        client.on_disconnect = on_disconnect
        client.on_connect = on_connect
        connect_blocking(
            client,
            self.settings.host,
            self.settings.port,
            timeout=self.settings.connect_timeout,
            keepalive=5,
        )
        log.info(
            "monitor %s watching %d replicas (failure timeout %.2f s)",
            self.name,
            self.settings.n,
            self.settings.failure_timeout,
        )
        tick = min(0.05, self.settings.failure_timeout / 4)
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                event = self.events.get(timeout=tick)
            except queue.Empty:
                event = None
            now = time.time()
            if event is True:
                self.detector.on_connected(now)
            elif event is False:
                self.detector.on_disconnected()
                log.warning(
                    "monitor %s lost the broker: declaring nothing until it is back", self.name
                )
            elif event is not None:
                self._on_beat(client, event[1], now)
            for failure in self.detector.tick(now):
                client.publish(self.settings.requests_topic, failure.encode(), qos=1)
            if now >= next_beat:
                beat = MonitorBeat(idmonitor=self.name, enviadoem=now)
                client.publish(self.settings.monitor_topic, beat.encode(), qos=0)
                next_beat = now + 1.0
        close_client(client)
        return 0

    def _on_beat(self, client: mqtt.Client, payload: bytes, now: float) -> None:
        beat = decode_beat(payload)
        if isinstance(beat, Invalid):
            self._bad_beats += 1
            if self._bad_beats <= 20 or self._bad_beats % 1000 == 0:
                log.warning(
                    "monitor %s ignored a bad heartbeat (%d so far): %s",
                    self.name,
                    self._bad_beats,
                    beat.reason,
                )
            return
        if isinstance(beat, Heartbeat):
            self.divergence.observe(beat)
            for failure in self.detector.on_heartbeat(beat, now):
                client.publish(self.settings.requests_topic, failure.encode(), qos=1)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()
