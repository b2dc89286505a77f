"""The monitor's Prometheus metrics (issue 29), read from its detector when scraped: which
replicas it holds live, how old each one's last heartbeat is, the failures it declared, the
broker's stalls it sat out, and divergences found."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvwire.metrics import broker_connected, counters, new_registry
from monitor.detector import Detector
from monitor.divergence import DivergenceCheck


class Watched(Protocol):
    """What the collector reads of the monitor (`monitor.service.MonitorService` is one)."""

    @property
    def detector(self) -> Detector: ...
    @property
    def divergence(self) -> DivergenceCheck: ...
    @property
    def connected(self) -> bool: ...
    @property
    def bad_beats(self) -> int: ...
    @property
    def forgeries(self) -> int: ...


class MonitorCollector(Collector):
    def __init__(self, service: Watched) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        detector, now = service.detector, time.time()
        yield broker_connected(service.connected)
        up = GaugeMetricFamily(
            "mqttkv_monitor_replica_up", "1 while the replica is heard and not declared failed.",
            labels=["replica"],
        )  # fmt: skip
        age = GaugeMetricFamily(
            "mqttkv_monitor_heartbeat_age_seconds", "Seconds since the replica's last heartbeat.",
            labels=["replica"],
        )  # fmt: skip
        declared = CounterMetricFamily(
            "mqttkv_monitor_failures_declared", "Failures declared (falhaserv published).",
            labels=["replica"],
        )  # fmt: skip
        for replica in range(detector.n):
            label = [str(replica)]
            up.add_metric(label, int(detector.up(replica)))
            age.add_metric(label, max(0.0, now - detector.last_seen(replica)))
            declared.add_metric(label, detector.declared[replica])
        yield from (up, age, declared)
        yield from counters("mqttkv_monitor_", (
            ("heartbeats", detector.beats, "Heartbeats heard."),
            ("bad_heartbeats", service.bad_beats, "Heartbeats ignored as malformed."),
            ("forged_messages", service.forgeries, "Heartbeats ignored for their signature."),
            ("broker_stalls", detector.stalls, "Times the broker delivered nothing for half "
             "the failure timeout (no failure is declared for those)."),
            ("divergences", service.divergence.found, "Positions where digests disagreed."),
        ))  # fmt: skip


def monitor_registry(service: Watched) -> CollectorRegistry:
    registry = new_registry()
    registry.register(MonitorCollector(service))
    return registry
