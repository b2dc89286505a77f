"""Backup and restore (issue 29) on real clusters: `kvclient snapshot save` while three writers
run, restored into a new cluster (`kvserver --restore`) whose every key holds its value and
revision as of the snapshot's position, with the digest the snapshot records; a truncated
snapshot is refused, by `kvclient snapshot verify` and by `kvserver --restore`, in one line."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from kvclient import KVClient
from kvclient.status import ClusterWatch
from kvwire.snapshot import read_snapshot
from tests.cluster import Cluster, all_equal, running
from tests.test_cluster import kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

KEYS = 300

Acked = list[tuple[str, str, int]]


def write_until(address: str, stop: threading.Event, writer: int, acked: Acked) -> None:
    """Puts until told to stop; every acknowledged one with its revision."""
    with KVClient(address, timeout=20) as kv:
        step = 0
        while not stop.is_set():
            key, value = f"w/{(writer * 7 + step) % KEYS:03}", f"{writer}:{step}"
            acked.append((key, value, kv.put(key, value)))
            step += 1


def test_a_snapshot_saved_under_load_restores_every_key_at_its_revision(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvsnap"
    acked: Acked = []
    with running(tmp_path / "old", data=True) as old:
        with KVClient(old.address, timeout=20) as kv:
            for i in range(KEYS):
                acked.append((f"w/{i:03}", "first", kv.put(f"w/{i:03}", "first")))
        stop = threading.Event()
        writers = [
            threading.Thread(target=write_until, args=(old.address, stop, w, acked), daemon=True)
            for w in range(3)
        ]
        for thread in writers:
            thread.start()
        try:
            count = len(acked)
            done = kvclient(old, "snapshot", "save", str(path))
            written_meanwhile = len(acked) - count
        finally:
            stop.set()
            for thread in writers:
                thread.join(30)
        assert done.returncode == 0 and done.stderr == "", done
        assert re.match(
            r"snapshot of position \d+: 300 keys, 0 leases, digest [0-9a-f]{16}", done.stdout
        )
        assert written_meanwhile > 0 and len(acked) > count + 20  # the writers went on
    snapshot = read_snapshot(path)
    # As of its position: each key's last acknowledged write at or before it.
    expected: dict[str, tuple[str, int]] = {}
    for key, value, revision in sorted(acked, key=lambda w: w[2]):
        if revision <= snapshot.position:
            expected[key] = (value, revision)
    assert any(revision > snapshot.position for _, _, revision in acked)
    assert snapshot.pairs == expected

    new = Cluster(tmp_path / "new", data=True)
    try:
        new.start(extra=dict.fromkeys(range(new.n), ("--restore", str(path))))
        with ClusterWatch(new.address) as watch:
            status = watch.wait_for(all_equal(new.n), 15)
        digests = {r.beat.resumo for r in status.replicas.values()}
        assert digests == {snapshot.digest}, status
        with KVClient(new.address, timeout=20) as kv:
            found = {key: (kv.get_entry(key).value, kv.get_entry(key).revision) for key in expected}
            assert found == expected
            assert kv.put("after-restore", "x") > snapshot.position
    finally:
        new.close()


def test_a_truncated_snapshot_or_a_missing_directory_is_refused_in_one_line(
    tmp_path: Path, cluster: Cluster
) -> None:
    with KVClient(cluster.address, timeout=20) as kv:
        for i in range(100):
            kv.put(f"t/{i}", "x" * 50)
    backups = tmp_path / "backups"
    backups.mkdir()
    path = backups / "whole.kvsnap"
    assert kvclient(cluster, "snapshot", "save", str(path)).returncode == 0
    assert [p.name for p in backups.iterdir()] == ["whole.kvsnap"]  # no scratch file left
    nowhere = kvclient(cluster, "snapshot", "save", str(tmp_path / "missing" / "x.kvsnap"))
    assert nowhere.returncode == 2 and nowhere.stderr.count("\n") == 1, nowhere
    assert f"cannot write in {tmp_path / 'missing'}" in nowhere.stderr
    cut = tmp_path / "cut.kvsnap"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    verify = kvclient(cluster, "snapshot", "verify", str(cut))
    assert verify.returncode == 2 and verify.stderr.count("\n") == 1
    assert "is truncated" in verify.stderr, verify.stderr
    (tmp_path / "restore").mkdir()
    restore = Cluster(tmp_path / "restore", data=True)
    process = restore.start_replica(0, extra=("--restore", str(cut)))
    try:
        assert process.proc.wait(30) == 2
        lines = process.log().strip().splitlines()
        assert len(lines) == 1 and "is truncated" in lines[0], lines
    finally:
        restore.close()
    assert json.loads(path.read_text().splitlines()[0])["keys"] == 100
