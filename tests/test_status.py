"""`kvclient status` and the divergence check against real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def status(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvclient", "status", "--listen", "1.0", *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def report(cluster: Cluster) -> dict[str, object]:
    result = status(cluster, "--json")
    parsed: dict[str, object] = json.loads(result.stdout)
    parsed["exit"] = result.returncode
    return parsed


def test_status_follows_a_kill_and_a_rejoin(cluster: Cluster) -> None:
    healthy = status(cluster)
    assert healthy.returncode == 0, healthy.stdout
    assert healthy.stdout.count(" live ") == 3
    assert "monitors: " in healthy.stdout and "none heard" not in healthy.stdout

    cluster.replicas[0].kill()
    cluster.wait_log(1, "takes over for replica 0", 10)
    degraded = status(cluster)
    assert degraded.returncode == 1
    row = next(line for line in degraded.stdout.splitlines() if line.startswith("0 "))
    assert "gone" in row or "down" in row
    assert "(by 1)" in row
    assert "problem: replica 0 is not live" in degraded.stdout

    cluster.start_replica(0)
    cluster.wait_log(0, "joined at position", 15)

    def healthy_report() -> dict[str, object] | None:
        current = report(cluster)
        return current if current["exit"] == 0 else None

    healed = wait_until(healthy_report, 15, "all live again")
    rows = healed["replicas"]
    assert isinstance(rows, list)
    assert len({(r["position"], r["digest"]) for r in rows}) == 1


def test_a_corrupted_replica_is_reported_as_divergent(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.broker.start()
        for i in range(3):
            extra = ("--corrupt-for-tests", "planted=bad") if i == 1 else ()
            cluster.start_replica(i, fresh=True, extra=extra)
        cluster.start_monitor()
        monitor = cluster.monitors[0]
        wait_until(
            lambda: "DIVERGENCE at position" in monitor.log(),
            10,
            "the monitor to report the divergence",
        )
        result = status(cluster)
        assert result.returncode == 1
        assert "report different digests" in result.stdout
    finally:
        cluster.close()
