"""The thin MQTT adapter around the detector: heartbeats in, `falhaserv` out."""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

from paho.mqtt.properties import Properties

from kvwire.access import Forgeries
from kvwire.errors import ConfigError
from kvwire.events import forward_events
from kvwire.messages import (
    FalhaServ,
    Heartbeat,
    Invalid,
    MonitorBeat,
    decode_beat,
)
from kvwire.mqtt import Link, new_client
from monitor.detector import Detector
from monitor.divergence import DivergenceCheck
from monitor.settings import MonitorSettings

if TYPE_CHECKING:  # imported when metrics are asked for: prometheus-client costs start-up
    from kvwire.metrics import MetricsServer

log = logging.getLogger("kvmonitor")

#: Exit status after a bug: EX_SOFTWARE, as the replica's.
EXIT_BUG = 70


class MonitorService:
    """Like the replica's adapter: one thread pumps the connection (`kvwire.mqtt.Link`) and
    runs the detector's timer between pumps, so nothing is queued between threads."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.detector = Detector(settings.n, settings.failure_timeout, time.time())
        self.divergence = DivergenceCheck()
        self.name = secrets.token_hex(4)
        self._stopping = threading.Event()
        self._bad_beats = 0
        self._forgeries = Forgeries(f"monitor {self.name}", settings.cluster_key)
        self.link = Link(
            new_client(f"kvmonitor-{self.name}", access=settings.access),
            settings.host,
            settings.port,
            on_connect=self._on_connected,
            on_message=self._on_message,
            on_disconnect=self._on_disconnected,
            on_error=self._on_bug,
            key=settings.cluster_key,
        )
        forward_events(log, f"monitor {self.name}", lambda: self.link, settings.monitor_topic)
        self._metrics: MetricsServer | None = None
        if settings.metrics is not None:
            from kvwire.metrics import MetricsServer
            from monitor.metrics import monitor_registry

            try:
                self._metrics = MetricsServer(monitor_registry(self), settings.metrics)
            except ConfigError as exc:  # the monitor watches all the same
                log.error("monitor %s serves no metrics: %s", self.name, exc)
            else:
                log.info("monitor %s serves metrics on %s", self.name, self._metrics.url)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def bad_beats(self) -> int:
        return self._bad_beats

    @property
    def forgeries(self) -> int:
        return self._forgeries.counted or 0

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.link.open(self.settings.connect_timeout)
        log.info(
            "monitor %s watching %d replicas (failure timeout %.2f s)",
            self.name,
            self.settings.n,
            self.settings.failure_timeout,
        )
        tick = min(0.05, self.settings.failure_timeout / 4)
        next_beat = 0.0
        while not self._stopping.is_set():
            self.link.pump(tick)
            if self.link.failed is not None:
                return EXIT_BUG
            now = time.time()
            self._declare(self.detector.tick(now))
            if now >= next_beat and self.link.connected:
                forged = self._forgeries.counted
                port = self._metrics.port if self._metrics is not None else None
                beat = MonitorBeat(
                    idmonitor=self.name, enviadoem=now, semassinatura=forged, metricas=port
                )
                self.link.publish(self.settings.monitor_topic, beat.encode(), 0, signed=True)
                # Back through the broker, it tells the detector that the broker delivers.
                next_beat = now + self.settings.failure_timeout / 4
        self.link.close()
        if self._metrics is not None:
            self._metrics.close()
        return 0

    def _declare(self, failures: list[FalhaServ]) -> None:
        for failure in failures:
            self.link.publish(self.settings.requests_topic, failure.encode(), 1, signed=True)

    # --- inside the pump ------------------------------------------------------------------

    def _on_connected(self, session_present: bool) -> None:
        self.link.client.subscribe(self.settings.monitor_topic, qos=1)
        self.detector.on_connected(time.time())

    def _on_disconnected(self) -> None:
        self.detector.on_disconnected()
        log.warning("monitor %s lost the broker: declaring nothing until it is back", self.name)

    def _on_message(self, topic: str, payload: bytes, dup: bool, props: Properties | None) -> None:
        self.detector.on_traffic(time.time())
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
            # Else anyone could keep a dead replica "alive", or fail a live one by its will.
            if self._forgeries.forged(payload, props, "heartbeat", f"replica {beat.idserv}"):
                return
            self.divergence.observe(beat)
            self._declare(self.detector.on_heartbeat(beat, time.time()))

    def _on_bug(self, exc: BaseException) -> None:
        # A monitor in an unknown state must not go on declaring failures; it exits and is
        # restarted, and other monitors (protocol §9) keep watching meanwhile.
        log.critical("monitor %s hit a bug and exits", self.name, exc_info=exc)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()
