"""Data on disk with real processes (PROTOCOL §17): a power cut of the whole cluster under
load, a restart with a replica missing, `cluster.sh down && up`, and directories refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import pytest

from kvclient.client import KVClient
from kvclient.operations import Get, Put
from kvclient.status import ClusterWatch
from kvclient.workload import Workload
from kvwire.messages import Resposta
from tests.cluster import ROOT, Cluster, all_equal, free_port, wait_until
from tests.test_cluster import Listener

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class PipelinedWriter:
    """Keeps `in_flight` puts of distinct keys in flight and remembers the acknowledged."""

    def __init__(self, address: str, prefix: str, in_flight: int = 64) -> None:
        self.acked: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kv = KVClient(address, timeout=60.0, retry_interval=1.0)
        self._prefix = prefix
        self._slots = threading.Semaphore(in_flight)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            key, value = f"{self._prefix}-{i}", f"v{i}"
            i += 1
            future = self._kv.submit(Put(key, value))
            future.add_done_callback(partial(self._done, key=key, value=value))

    def _done(self, future: Future[Resposta], *, key: str, value: str) -> None:
        self._slots.release()
        if not future.cancelled() and future.exception() is None and future.result().status == "ok":
            with self._lock:
                self.acked[key] = value

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._kv.close()


def restart_everything(cluster: Cluster, replicas: list[int]) -> None:
    """After `kill_everything`: the broker without its saved state, then the replicas named
    (without --fresh: they resume from their data directories) and a monitor."""
    cluster.broker.wipe_state()
    cluster.broker.start()
    for i in replicas:
        cluster.start_replica(i)
    cluster.start_monitor()


def read_back(address: str, expected: dict[str, str]) -> dict[str, str | None]:
    """Every key's value now; the keys whose value is not the expected one."""
    with KVClient(address, timeout=15.0, retry_interval=0.5) as kv:
        futures = {key: kv.submit(Get(key)) for key in expected}
        wrong = {}
        for key, future in futures.items():
            value = future.result(timeout=30).valor
            if value != expected[key]:
                wrong[key] = value
    return wrong


def test_a_power_cut_under_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, data=True)
    writers: list[PipelinedWriter] = []
    try:
        cluster.start()
        with Workload(cluster.address, clients=3, timeout=40) as load:
            writers = [PipelinedWriter(cluster.address, f"p{c}") for c in range(3)]
            load.wait_for_more(100)
            wait_until(lambda: sum(w.count() for w in writers) >= 1500, 60, "1500 writes")
            cluster.kill_everything()
            cut_at = sum(w.count() for w in writers)
            restarted = time.monotonic()
            restart_everything(cluster, [0, 1, 2])
            with KVClient(cluster.address, timeout=15.0, retry_interval=0.5) as kv:
                kv.get("p0-0")
            answering = time.monotonic() - restarted
            load.wait_for_more(100, timeout=60)
            for writer in writers:
                writer.close()
        assert answering < 15, f"the cluster answered again only {answering:.1f} s after restart"
        acked = {k: v for w in writers for k, v in w.acked.items()}
        print(f"answering {answering:.2f} s after the restart; {cut_at} writes acked at the cut")
        assert len(acked) >= cut_at
        assert read_back(cluster.address, acked) == {}
        report = load.report()
        assert report.problems() == [], report.render()
        with ClusterWatch(cluster.address) as watch:
            status = watch.wait_for(all_equal(3), 20)
            assert all_equal(3)(status), status
    finally:
        for writer in writers:
            writer.close()
        cluster.close()


def test_a_retry_after_a_power_cut_gets_the_outcome_the_write_had(tmp_path: Path) -> None:
    """A compare-and-set lost, and its answer never reached the client; every process dies;
    the client's retry (same idpedido) must hear `conflito` again, not `ok`: the outcome is on
    disk beside the de-duplication entry, not only in the request log of memory."""
    cluster = Cluster(tmp_path, data=True)
    cluster.start()
    try:
        listener = Listener(cluster.address, "retry/answers")
        try:

            def send(rid: str, **request: object) -> dict[str, object]:
                body = {**request, "topico-resp": "retry/answers", "idpedido": rid}
                listener.send(json.dumps(body))
                return listener.wait_for(rid, 20)

            first = send("put-1", tipomsg="insercao", chave="k", novovalor="v1")
            cas = {"tipomsg": "insercao", "chave": "k", "novovalor": "v2", "serevisao": 999}
            assert send("cas-1", **cas)["status"] == "conflito"
            deleted = send("del-1", tipomsg="remocao", chave="gone")
            assert deleted["status"] == "naoencontrada"
        finally:
            listener.close()
        cluster.kill_everything()
        restart_everything(cluster, [0, 1, 2])
        with ClusterWatch(cluster.address) as watch:
            assert len(watch.wait_for(lambda s: len(s.live()) == 3, 20).live()) == 3
        listener = Listener(cluster.address, "retry/answers")
        try:
            retried = send("cas-1", **cas)
            assert (retried["status"], retried["valor"]) == ("conflito", "v1")
            assert retried["revisao"] == first["revisao"]
            assert send("del-1", tipomsg="remocao", chave="gone")["status"] == "naoencontrada"
        finally:
            listener.close()
    finally:
        cluster.close()


def waiting_for(cluster: Cluster, missing: int) -> bool:
    text = f"replica(s) {missing} of the last view have not reported their position"
    return any(text in cluster.replicas[i].log() for i in cluster.replicas if i != missing)


def test_two_of_three_wait_for_the_third_unless_told_not_to(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, data=True)
    try:
        cluster.start()
        expected = {f"k{i}": f"v{i}" for i in range(300)}
        with KVClient(cluster.address, timeout=10) as kv:
            for future in [kv.submit(Put(k, v)) for k, v in expected.items()]:
                assert future.result(timeout=20).status == "ok"

        cluster.kill_everything()
        restart_everything(cluster, [0, 1])
        wait_until(lambda: waiting_for(cluster, 2), 20, "replicas 0 and 1 to wait for 2")
        with ClusterWatch(cluster.address) as watch:
            time.sleep(1.0)
            assert watch.status().live() == []  # nobody resumed on its own
        cluster.start_replica(2)
        with ClusterWatch(cluster.address) as watch:
            status = watch.wait_for(all_equal(3), 30)
            assert all_equal(3)(status), status
        assert read_back(cluster.address, expected) == {}

        cluster.kill_everything()
        restart_everything(cluster, [0, 1])
        wait_until(lambda: waiting_for(cluster, 2), 20, "replicas 0 and 1 to wait for 2")
        recover = subprocess.run(
            [sys.executable, "-m", "kvclient", "recover", "--without", "2"],
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert recover.returncode == 0, recover.stderr
        assert "lost, if they hold any" in recover.stderr
        assert read_back(cluster.address, expected) == {}
        with ClusterWatch(cluster.address) as watch:
            status = watch.wait_for(all_equal(2), 20)
            assert status.live() == [0, 1], status
    finally:
        cluster.close()


def kvserver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvserver", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def test_directories_that_must_not_be_served_from_are_refused(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, data=True)
    try:
        cluster.start()
        with KVClient(cluster.address, timeout=10) as kv:
            kv.put("k", "v")
        env = cluster.env
        in_use = kvserver("--id", "0", "--n", "3", "--data-dir", str(cluster.data_dir(0)), env=env)
        assert in_use.returncode == 2
        assert "is in use by process" in in_use.stderr
        assert len(in_use.stderr.strip().splitlines()) == 1

        cluster.replicas[0].kill()
        wrong_size = kvserver("--id", "0", "--n", "5", "--data-dir", str(cluster.data_dir(0)))
        assert wrong_size.returncode == 2
        assert "belongs to a cluster of 3 replicas, not 5" in wrong_size.stderr
        fresh = kvserver("--id", "0", "--n", "3", "--fresh", "--data-dir", str(cluster.data_dir(0)))
        assert fresh.returncode == 2
        assert "start without --fresh to resume" in fresh.stderr

        damaged = cluster.data_dir(0) / "replica.sqlite3"
        damaged.write_bytes(damaged.read_bytes()[:100])
        (cluster.data_dir(0) / "replica.sqlite3-wal").unlink(missing_ok=True)
        refused = kvserver("--id", "0", "--n", "3", "--data-dir", str(cluster.data_dir(0)), env=env)
        assert refused.returncode == 2
        assert "is damaged" in refused.stderr and "Move it away" in refused.stderr
        assert "connected to" not in refused.stderr  # refused before serving anything
    finally:
        cluster.close()


def test_cluster_sh_down_and_up_keeps_every_key(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, KV_RUN_DIR=str(tmp_path / "run"), KV_PORT=str(port))
    env["KV_BROKER"] = f"127.0.0.1:{port}"
    script = str(ROOT / "scripts" / "cluster.sh")

    def cluster_sh(*args: str) -> str:
        done = subprocess.run(
            ["bash", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        assert "a new, empty cluster" in cluster_sh("up")
        with KVClient(env["KV_BROKER"], timeout=10) as kv:
            for i in range(50):
                kv.put(f"kept-{i}", str(i))
        assert "data kept" in cluster_sh("down")
        assert "resumed from the data" in cluster_sh("up")
        with KVClient(env["KV_BROKER"], timeout=15) as kv:
            assert [kv.get(f"kept-{i}") for i in range(50)] == [str(i) for i in range(50)]
        assert "data deleted" in cluster_sh("down", "--wipe")
        assert "a new, empty cluster" in cluster_sh("up")
    finally:
        subprocess.run(
            ["bash", script, "down", "--wipe"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
