"""The value mirror (protocol §14) against real processes, read as a user would: with
`mosquitto_sub`, with `kvclient watch`, and through failures of the owner."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys

import pytest

from kvclient.client import KVClient
from kvclient.operations import Put
from kvclient.watch import MirrorWatch
from tests.cluster import Cluster, Lines, interrupt, wait_until
from tests.test_cluster import key_owned_by

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def current(cluster: Cluster, prefix: str = "", expect: int | None = None) -> dict[str, str]:
    """What a subscriber arriving now is given: every key's retained value, as of now."""
    values: dict[str, str] = {}
    with MirrorWatch(cluster.address, prefix) as watch:

        def settled() -> bool:
            try:
                while True:
                    change = watch.changes.get(timeout=0.3)
                    if change.value is None:
                        values.pop(change.key, None)
                    else:
                        values[change.key] = change.value
            except queue.Empty:
                return expect is None or len(values) >= expect

        wait_until(settled, 15, f"{expect} retained values")
    return values


def test_a_late_subscriber_sees_every_value_and_a_delete_clears_one(mirrored: Cluster) -> None:
    with KVClient(mirrored.address, timeout=20) as kv:
        futures = [kv.submit(Put(f"m/{i:04d}", f"v{i}")) for i in range(1000)]
        assert all(f.result(20).status == "ok" for f in futures)
        kv.put("m/0007", "changed")
    host, port = mirrored.address.split(":")
    seen = subprocess.run(
        ["mosquitto_sub", "-h", host, "-p", port, "-t", "inf1406-kv/#", "-v", "-C", "1000",
         "-W", "15"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert seen.returncode == 0, seen.stderr
    by_topic = dict(line.split(" ", 1) for line in seen.stdout.splitlines())
    assert len(by_topic) == 1000
    assert json.loads(by_topic["inf1406-kv/m/0999"])["valor"] == "v999"
    assert json.loads(by_topic["inf1406-kv/m/0007"])["valor"] == "changed"
    with KVClient(mirrored.address, timeout=10) as kv:
        kv.delete("m/0007")
    values = current(mirrored, "m/", expect=999)
    assert len(values) == 999 and "m/0007" not in values


def test_the_successor_mirrors_writes_to_a_dead_owners_keys(mirrored: Cluster) -> None:
    keys = [key_owned_by(0, prefix=f"dead{i}-") for i in range(5)]
    with KVClient(mirrored.address, timeout=10) as kv:
        for key in keys:
            kv.put(key, "before")
        mirrored.replicas[0].kill()
        for key in keys:
            assert kv.request(Put(key, "after")).idserv == 1
    values = current(mirrored, "dead", expect=5)
    assert {values[k] for k in keys} == {"after"}


def test_a_false_suspicion_leaves_no_stale_value_once_the_replica_rejoined(
    mirrored: Cluster,
) -> None:
    keys = [key_owned_by(0, prefix=f"slow{i}-") for i in range(5)]
    with KVClient(mirrored.address, timeout=15, retry_interval=0.5) as kv:
        for key in keys:
            kv.put(key, "v1")
        mirrored.replicas[0].pause()
        pending = [kv.submit(Put(key, "v2")) for key in keys]  # in the stream, unanswered
        mirrored.wait_log(1, "takes over for replica 0", 10)
        assert all(f.result(15).status == "ok" for f in pending)
        for key in keys:
            kv.put(key, "v3")
        mirrored.replicas[0].signal(signal.SIGCONT)  # it may publish v2 late, as owner
        mirrored.wait_log(0, "joined at position", 20)
        expected = {key: kv.get(key) for key in keys}
    assert set(expected.values()) == {"v3"}
    values = current(mirrored, "slow", expect=5)
    assert {k: values[k] for k in keys} == expected


def test_kvclient_watch_prints_each_change_until_interrupted(mirrored: Cluster) -> None:
    with KVClient(mirrored.address, timeout=10) as kv:
        kv.put("w/a", "1")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "kvclient", "watch", "w/", "--json"],
            env=mirrored.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert watcher.stdout is not None
        lines = Lines(watcher.stdout)
        try:
            # The retained value, at once; a busy machine takes seconds to start Python.
            first = json.loads(lines.next(60, "kvclient watch"))
            assert (first["chave"], first["valor"]) == ("w/a", "1")
            revision = kv.put("w/b", "2")
            kv.put("other", "not under w/")
            kv.delete("w/a")
            second = json.loads(lines.next(30, "kvclient watch"))
            third = json.loads(lines.next(30, "kvclient watch"))
        finally:
            code = interrupt(watcher)
            lines.close()
    assert (second["chave"], second["valor"], second["revisao"]) == ("w/b", "2", revision)
    assert (third["chave"], third["valor"], third.get("apagada")) == ("w/a", None, True)
    assert watcher.stderr is not None
    assert code == 0, watcher.stderr.read()
    watcher.stderr.close()
