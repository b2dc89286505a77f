"""Data on disk with real processes (protocol §17): a power cut of the whole cluster under
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

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self.acked)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._kv.close()


def restart_everything(cluster: Cluster, replicas: list[int], extra: tuple[str, ...] = ()) -> None:
    """After `kill_everything`: the broker without its saved state, then the replicas named
    (without --fresh: they resume from their data directories) and a monitor."""
    cluster.broker.wipe_state()
    cluster.broker.start()
    for i in replicas:
        cluster.start_replica(i, extra=extra)
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
            # Acknowledged before every process died: each must be read back after it.
            before_cut = {k: v for w in writers for k, v in w.snapshot().items()}
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
        print(f"answering {answering:.2f} s after the restart; {len(before_cut)} acked at the cut")
        assert len(before_cut) >= 1500
        assert read_back(cluster.address, before_cut) == {}
        assert read_back(cluster.address, acked) == {}  # and those acknowledged after it
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
    """A compare-and-set and a delete succeed, their answers never reach the client, later
    writes move both keys on, and every process dies. The client's retries (same idpedido)
    must be recognised from what is on disk: the compare-and-set answers its own `ok` and
    revision (executed again, it would meet a later revision: `conflito`), and the delete
    answers `ok` while the key re-created since survives (executed again, it would delete it)."""
    cluster = Cluster(tmp_path, data=True)
    # Outcomes are kept for the request log's lifetime: long enough for a slow restart here.
    long_log = ("--log-ttl", "120")
    cluster.start(extra=dict.fromkeys(range(cluster.n), long_log))
    try:
        listener = Listener(cluster.address, "retry/answers")
        try:

            def send(rid: str, **request: object) -> dict[str, object]:
                body = {**request, "topico-resp": "retry/answers", "idpedido": rid}
                listener.send(json.dumps(body))
                return listener.wait_for(rid, 20)

            first = send("put-1", tipomsg="insercao", chave="k", novovalor="v1")
            cas = {"tipomsg": "insercao", "chave": "k", "novovalor": "v2"} | {
                "serevisao": first["revisao"]
            }
            swapped = send("cas-1", **cas)
            assert swapped["status"] == "ok"
            assert send("put-2", tipomsg="insercao", chave="k", novovalor="v3")["status"] == "ok"
            send("put-3", tipomsg="insercao", chave="gone", novovalor="x")
            assert send("del-1", tipomsg="remocao", chave="gone")["status"] == "ok"
            send("put-4", tipomsg="insercao", chave="gone", novovalor="back")
        finally:
            listener.close()
        cluster.kill_everything()
        restart_everything(cluster, [0, 1, 2], extra=long_log)
        with ClusterWatch(cluster.address) as watch:
            assert len(watch.wait_for(lambda s: len(s.live()) == 3, 30).live()) == 3
        listener = Listener(cluster.address, "retry/answers")
        try:
            retried = send("cas-1", **cas)
            assert (retried["status"], retried["revisao"]) == ("ok", swapped["revisao"])
            assert send("del-1", tipomsg="remocao", chave="gone")["status"] == "ok"
        finally:
            listener.close()
        assert read_back(cluster.address, {"k": "v3", "gone": "back"}) == {}
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
        restart_everything(cluster, [0, 1], extra=("--join-timeout", "1"))
        wait_until(lambda: waiting_for(cluster, 2), 20, "replicas 0 and 1 to wait for 2")
        with ClusterWatch(cluster.address) as watch:
            # Two join timeouts and a half (1 s each here): in memory, the highest would have
            # resumed by now.
            time.sleep(2.5)
            assert watch.status(stale_after=2.5).live() == []  # nobody resumed on its own
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
