"""Prometheus metrics (issue 29) as an operator scrapes them: during a load of 64 requests in
flight and a `kill -9`, every replica's request counters rise and its histograms fill, the
successor counts its takeover, the monitor its declared failure, and the restarted replica its
join; each endpoint's text passes `promtool check metrics` (Debian's `prometheus`) and
prometheus-client's own parser. A metrics port in use costs the metrics, not the replica."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvclient import KVClient
from kvclient.workload import Workload
from tests.cluster import Cluster, running, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for (found, have), value in samples.items()
        if found == name and set(labels.items()) <= set(have)
    )


def promtool_passes(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package): scripts/setup.sh --browser"
    done = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_metrics_rise_under_load_and_show_a_failover_and_a_join(tmp_path: Path) -> None:
    with running(tmp_path, data=True, metrics=True) as cluster:
        urls = {i: cluster.metrics_url(p) for i, p in cluster.replicas.items()}
        monitor_url = cluster.metrics_url(cluster.monitors[0])
        before = {i: scrape(url)[1] for i, url in urls.items()}
        with Workload(cluster.address, clients=64, keys=500, shared=True, timeout=30) as load:
            wait_until(lambda: load.completed() >= 3000, 60, "3,000 operations")
            during = {i: scrape(url)[1] for i, url in urls.items()}
            for i in urls:
                # Every replica applies every request; each answers for its own keys.
                applied = total(during[i], "mqttkv_requests_total", status="ok")
                assert applied - total(before[i], "mqttkv_requests_total") >= 3000
                assert total(during[i], "mqttkv_answers_total") > 500
                assert total(during[i], "mqttkv_request_latency_seconds_count") > 100
                assert total(during[i], "mqttkv_disk_commit_seconds_count") > 10
                assert total(during[i], "mqttkv_state", state="live") == 1
            cluster.replicas[0].kill()
            wait_until(
                lambda: total(scrape(urls[1])[1], "mqttkv_takeovers_total") == 1, 20,
                "replica 1 to count its takeover of replica 0",
            )  # fmt: skip
            monitor = scrape(monitor_url)[1]
            assert total(monitor, "mqttkv_monitor_failures_declared_total", replica="0") == 1
            assert total(monitor, "mqttkv_monitor_replica_up", replica="0") == 0
            assert total(scrape(urls[2])[1], "mqttkv_failures_total") == 1
            answered = total(scrape(urls[1])[1], "mqttkv_answers_total")
            wait_until(
                lambda: total(scrape(urls[1])[1], "mqttkv_answers_total") > answered + 300, 30,
                "replica 1 to answer for replica 0's keys too",
            )  # fmt: skip
            cluster.start_replica(0)
            cluster.wait_log(0, "joined at position", 30)
            url_0 = cluster.metrics_url(cluster.replicas[0])
            wait_until(
                lambda: total(scrape(url_0)[1], "mqttkv_join_duration_seconds_count") == 1, 10,
                "replica 0's join to be timed",
            )  # fmt: skip
            rejoined = scrape(url_0)[1]
            assert total(rejoined, "mqttkv_joins_total") == 1
            assert total(rejoined, "mqttkv_state", state="live") == 1
            wait_until(
                lambda: total(scrape(urls[1])[1], "mqttkv_handbacks_total") == 1, 10,
                "replica 1 to count its hand-back",
            )  # fmt: skip
            report = load.report()  # every request answered, no acknowledged write lost
            assert report.problems() == [], report.render()
        for url in [*list(urls.values())[1:], monitor_url]:
            promtool_passes(scrape(url)[0])


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_metrics_port_in_use_costs_the_metrics_not_the_replica(cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster.replicas[0].stop()
        cluster.start_replica(0, extra=("--metrics-port", str(port)))
        cluster.wait_log(0, "joined at position", 30)
        said = [line for line in cluster.replicas[0].log().splitlines() if "metrics" in line]
        assert len(said) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in said[0], said
        with KVClient(cluster.address, timeout=10) as kv:
            for i in range(30):  # some of them owned by replica 0
                kv.put(f"m{i}", str(i))
            assert [kv.get(f"m{i}") for i in range(30)] == [str(i) for i in range(30)]
