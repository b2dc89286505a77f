"""The metrics' names as Prometheus reads them, without a cluster: what a replica and a monitor
export passes prometheus-client's parser (and `promtool check metrics`), counts what the
replica applied, and every `mqttkv_` name the README's queries and the Grafana dashboard use
is one of them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvserver.metrics import AdapterState, ReplicaMetrics
from monitor.detector import Detector
from monitor.divergence import DivergenceCheck
from monitor.metrics import monitor_registry
from tests.bus import Bus
from tests.cluster import ROOT
from tests.test_metrics_cluster import promtool_passes


class FakeMonitor:
    def __init__(self) -> None:
        self.detector = Detector(3, 1.0, time.time())
        self.divergence = DivergenceCheck()
        self.connected = True
        self.bad_beats = 2
        self.forgeries = 0


def exported() -> tuple[str, str]:
    bus = Bus.fresh(3, max_keys=10, max_bytes=1000)
    bus.put("a", "1")
    bus.put("b", "22")
    bus.get("a")
    bus.put("c", "3")
    metrics = ReplicaMetrics(lambda: bus.replica(0), lambda: AdapterState(True, None, False))
    replica = generate_latest(metrics.registry).decode()
    monitor = generate_latest(monitor_registry(FakeMonitor())).decode()
    return replica, monitor


def names(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_a_replica_s_and_a_monitor_s_metrics_are_what_prometheus_reads() -> None:
    replica, monitor = exported()
    promtool_passes(replica)
    promtool_passes(monitor)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(replica)
        for s in family.samples
    }
    assert samples[("mqttkv_requests_total", (("kind", "insercao"), ("status", "ok")))] == 3
    assert samples[("mqttkv_requests_total", (("kind", "consulta"), ("status", "ok")))] == 1
    assert samples[("mqttkv_keys", ())] == 3 and samples[("mqttkv_bytes", ())] == 7
    assert samples[("mqttkv_quota_keys", ())] == 10
    assert samples[("mqttkv_state", (("state", "live"),))] == 1
    assert "mqttkv_monitor_bad_heartbeats_total 2.0" in monitor


def test_every_metric_the_readme_and_the_dashboard_name_is_exported() -> None:
    replica, monitor = exported()
    known = names(replica) | names(monitor)
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"mqttkv_\w+", " ".join(exprs))) | set(re.findall(r"mqttkv_\w+", readme))
    assert used, "the dashboard and the README name metrics"
    assert sorted(used - known) == []
    assert Path(ROOT / "docs" / "prometheus.yml").is_file()


def test_a_histogram_counts_a_value_on_a_bound_in_that_bucket_and_every_one_above() -> None:
    from kvserver.metrics import Buckets

    histogram = Buckets("mqttkv_x_seconds", "x", (0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    family = histogram.family()
    found = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert found[("mqttkv_x_seconds_bucket", "0.1")] == 1
    assert found[("mqttkv_x_seconds_bucket", "1.0")] == 3
    assert found[("mqttkv_x_seconds_bucket", "+Inf")] == 4
    assert found[("mqttkv_x_seconds_count", None)] == 4
    assert found[("mqttkv_x_seconds_sum", None)] == 8.6
