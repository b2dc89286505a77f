"""Leases (protocol §18) with real processes: a key put with `--ttl`, read before its end from
its owner and its successor and gone after it everywhere at once (mirror and watchers too); a
lease kept alive through a `kill -9` of its keeper; a session-bound lease that ends with its
client's process, by the broker's will."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvclient.client import KVClient
from kvclient.status import ClusterWatch
from kvclient.watch import MirrorWatch
from kvwire.errors import KeyNotFound
from kvwire.ring import key_slot
from tests.cluster import BOTH_MODES, Cluster, Lines, all_equal, wait_until
from tests.proxy import Proxy
from tests.test_cluster import key_owned_by, kvclient
from tests.test_disk_cluster import restart_everything

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def absent(kv: KVClient, key: str) -> bool:
    try:
        kv.get(key)
    except KeyNotFound:
        return True
    return False


#: Long enough for a command-line put and two reads on a busy machine before the key ends.
TTL_S = 5


def test_a_put_with_a_ttl_is_read_until_it_ends_then_gone_everywhere(mirrored: Cluster) -> None:
    key = key_owned_by(0, prefix="ttl/")
    with (
        KVClient(mirrored.address, timeout=10) as kv,
        MirrorWatch(mirrored.address, "ttl/") as watch,
        ClusterWatch(mirrored.address) as cluster_watch,
    ):
        launched = time.monotonic()  # the grant is later: the key lives at least TTL from here
        put = kvclient(mirrored, "put", key, "v", "--ttl", f"{TTL_S}s")
        assert put.returncode == 0, put.stderr
        assert kv.get_entry(key).value == "v"  # from its owner, replica 0
        mirrored.replicas[0].kill()  # kill -9: its successor answers, and keeps the lease
        assert kv.get_entry(key).value == "v"
        wait_until(lambda: absent(kv, key), TTL_S + 10, f"{key} to end")
        assert time.monotonic() - launched >= TTL_S  # not before its TTL
        # The watcher saw the value (again from the successor, which takes over the mirror
        # of the keys it inherits), then the deletion; the mirror holds nothing for it.
        seen = [watch.changes.get(timeout=5)]
        while seen[-1].value is not None:
            seen.append(watch.changes.get(timeout=5))
        assert {(c.key, c.value) for c in seen[:-1]} == {(key, "v")}
        assert (seen[-1].key, seen[-1].value) == (key, None)
        with MirrorWatch(mirrored.address, "ttl/") as late, pytest.raises(queue.Empty):
            late.changes.get(timeout=1.0)
        # Both live replicas applied the deletion at one position: equal digests.
        wait_until(lambda: all_equal(2)(cluster_watch.status()), 10, "equal digests")


def test_a_lease_kept_alive_outlives_a_kill_of_its_keeper_and_ends_when_left(
    mirrored: Cluster,
) -> None:
    with KVClient(mirrored.address, timeout=10) as kv:
        name = next(f"held-{i}" for i in range(100) if key_slot(f"held-{i}", 3) == 1)
        lease = kv.lease(2, name)  # kept alive every 0.67 s
        keys = [f"held/{i}" for i in range(10)]
        for key in keys:
            kv.put(key, "v", lease=lease.name)
        time.sleep(1.0)
        mirrored.replicas[1].kill()  # the lease's keeper, kill -9, while it is kept alive
        time.sleep(5.0)  # more than two TTLs, across the failover
        assert [kv.get(key) for key in keys] == ["v"] * 10
        assert not lease.lost.is_set()
        lease.close(revoke=False)  # no more keep-alives: the TTL ends it
        left = time.monotonic()
        wait_until(lambda: all(absent(kv, key) for key in keys), 10, "the keys to end")
        # TTL + failure timeout + 1 s at most (the successor became keeper long before).
        assert time.monotonic() - left < 2 + 1 + 1


SESSION_CLIENT = """
import sys, time
from kvclient import KVClient
kv = KVClient(sys.argv[1], session_lease=30)
for i in range(10):
    kv.put(f"dev/{i}", "here", lease=kv.session.name)
print("ready", flush=True)
time.sleep(600)
"""


def test_a_session_bound_lease_ends_with_its_killed_client_and_with_a_clean_close(
    mirrored: Cluster,
) -> None:
    keys = [f"dev/{i}" for i in range(10)]
    client = subprocess.Popen(
        [sys.executable, "-c", SESSION_CLIENT, mirrored.address],
        env=mirrored.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    lines = Lines(client.stdout)
    try:
        assert lines.next(60, "the session client") == "ready\n"
        with KVClient(mirrored.address, timeout=10) as kv:
            assert [kv.get(key) for key in keys] == ["here"] * 10
            client.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends its will
            client.wait(10)
            killed = time.monotonic()
            wait_until(lambda: all(absent(kv, key) for key in keys), 10, "the keys to end")
            # Not the TTL (30 s): the connection's will, at once (well under a second when
            # the machine is idle; a busy one takes longer to read the keys back).
            assert time.monotonic() - killed < 5.0
            with KVClient(mirrored.address, session_lease=30) as holder:
                assert holder.session is not None
                holder.put("dev/clean", "x", lease=holder.session.name)
                assert kv.get("dev/clean") == "x"
            assert absent(kv, "dev/clean")  # close() revoked it at once
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        lines.close()


@BOTH_MODES
def test_the_keepers_expiracao_ends_a_lease_in_an_open_and_a_secured_cluster(
    cluster: Cluster,
) -> None:
    """Secured, the `expiracao` is a signed control message: a replica's is applied."""
    with KVClient(cluster.address, timeout=10) as kv:
        name = kv.grant(1)
        kv.put("brief", "v", lease=name)
        wait_until(lambda: absent(kv, "brief"), 10, "the lease to end")
    assert "without a valid signature" not in cluster.logs()


def test_a_session_bound_lease_outlives_a_connection_back_within_the_will_delay(
    mirrored: Cluster,
) -> None:
    proxy = Proxy(mirrored.broker.port)
    try:
        with (
            KVClient(proxy.address, timeout=2, session_lease=30, will_delay=3) as holder,
            KVClient(mirrored.address, timeout=10) as kv,
        ):
            assert holder.session is not None
            holder.put("dev/kept", "x", lease=holder.session.name)
            proxy.cut()  # the network drops; the client is back through the relay at once
            time.sleep(4.0)  # past the will delay
            assert kv.get("dev/kept") == "x"
            assert holder.keep_alive(holder.session.name) == 30
            proxy.refuse()  # now it cannot come back
            proxy.cut()
            cut = time.monotonic()
            wait_until(lambda: absent(kv, "dev/kept"), 10, "the will to end the lease")
            assert 3.0 <= time.monotonic() - cut < 3.0 + 1.0
    finally:
        proxy.close()


def test_leases_survive_a_power_cut_and_count_their_ttl_again_from_the_restart(
    tmp_path: Path,
) -> None:
    """Every process killed at once, with data on disk: the leases and their keys come back,
    and each TTL counts again from the resume (docs/protocol.md §18)."""
    cluster = Cluster(tmp_path, data=True)
    try:
        cluster.start()
        with KVClient(cluster.address, timeout=10) as kv:
            short = kv.grant(3)
            kv.put("cut/short", "v", lease=short)
            kv.put("cut/plain", "v")
            kept = kv.grant(600)
            kv.put("cut/kept", "v", lease=kept)
        granted = time.monotonic()
        cluster.kill_everything()
        time.sleep(max(0.0, 3.5 - (time.monotonic() - granted)))  # the short TTL has passed
        restart_everything(cluster, [0, 1, 2])
        with KVClient(cluster.address, timeout=15, retry_interval=0.5) as kv:
            assert kv.get("cut/short") == "v"  # its TTL counts from the resume, not before
            resumed = time.monotonic()
            assert {lease.concessao for lease in kv.leases()} == {short, kept}
            wait_until(lambda: absent(kv, "cut/short"), 15, "the short lease to end")
            assert time.monotonic() - resumed >= 1.5
            assert (kv.get("cut/plain"), kv.get("cut/kept")) == ("v", "v")
            assert [lease.concessao for lease in kv.leases()] == [kept]
    finally:
        cluster.close()
