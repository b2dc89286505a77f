"""`kvclient health`: its verdict from heartbeats (unit), and its exit status in the three
situations on a real cluster: all live, a replica killed and failed over, and a replica killed
while no monitor runs (nobody takes its keys over)."""

from __future__ import annotations

import json

import pytest

from kvclient.health import health
from kvclient.status import ClusterStatus, ReplicaState, answering, why_unanswered
from kvwire.messages import Heartbeat
from kvwire.ring import key_slot
from tests.cluster import Cluster, wait_until
from tests.test_cluster import kvclient


def cluster_of(*beats: dict[str, object], stale: tuple[int, ...] = ()) -> ClusterStatus:
    replicas = {}
    for i, fields in enumerate(beats):
        beat = Heartbeat.model_validate({"idServ": i, "posicao": 10, "resumo": "d", **fields})
        replicas[i] = ReplicaState(i, beat, 5.0 if i in stale else 0.1)
    return ClusterStatus(replicas, {}, stale_after=1.0)


def test_every_replica_live_and_agreeing_is_healthy() -> None:
    found = health(cluster_of({}, {}, {}), 3)
    assert (found.verdict, found.code) == ("healthy", 0)


def test_a_replica_down_with_a_substitute_is_degraded() -> None:
    found = health(cluster_of({}, {"substituindo": [0]}, {}, stale=(0,)), 3)
    assert (found.verdict, found.code, found.served_by) == ("degraded", 1, {0: 1})


def test_keys_without_a_live_owner_or_disagreeing_digests_are_unavailable() -> None:
    unowned = health(cluster_of({}, {}, {}, stale=(2,)), 3)
    assert (unowned.code, unowned.reason) == (
        2, "replica 2 is down and no live replica answers for its keys",
    )  # fmt: skip
    split = health(cluster_of({}, {"resumo": "other"}, {}), 3)
    assert split.code == 2 and "different digests" in split.reason
    assert health(cluster_of(), 3).code == 2  # nobody heard
    assert health(cluster_of({"modo": "gone"}, {"modo": "joining"}), 2).code == 2


def test_a_timed_out_request_says_when_the_replica_answering_its_key_has_a_full_disk() -> None:
    key = next(k for k in (f"k{i}" for i in range(100)) if key_slot(k, 3) == 0)
    full = cluster_of({"disco": "cheio"}, {}, {})
    assert answering(full, key) == 0
    assert f"replica 0, which answers key {key!r}, says its data directory is full" in (
        why_unanswered(full, key) or ""
    )
    # Replica 0 down, replica 1 answering for it with a full disk of its own.
    taken = cluster_of({}, {"substituindo": [0], "disco": "cheio"}, {}, stale=(0,))
    assert answering(taken, key) == 1
    assert "replica 1, which answers" in (why_unanswered(taken, key) or "")
    assert why_unanswered(cluster_of({}, {}, {}), key) is None  # a timeout says the rest
    assert answering(cluster_of({}, {}, {}, stale=(0,)), key) is None
    assert answering(cluster_of(), key) is None  # nobody heard


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_kvclient_health_exit_status_in_the_three_situations(cluster: Cluster) -> None:
    def asked() -> tuple[int, dict[str, object]]:
        done = kvclient(cluster, "health", "--json", "--listen", "1")
        assert done.stderr == "" and done.stdout.count("\n") == 1, done
        return done.returncode, json.loads(done.stdout)

    code, said = asked()
    assert (code, said["verdict"]) == (0, "healthy"), said
    cluster.replicas[0].kill()
    wait_until(lambda: "takes over for replica 0" in cluster.replicas[1].log(), 15, "takeover")
    code, said = asked()
    assert (code, said["verdict"], said["served_by"]) == (1, "degraded", {"0": 1}), said
    text = kvclient(cluster, "health")
    assert text.returncode == 1 and text.stdout.startswith("degraded: "), text
    # No monitor: a replica killed now is failed over by nobody, and its keys have no owner.
    cluster.start_replica(0)
    wait_until(lambda: asked()[0] == 0, 30, "the cluster healthy again")
    cluster.monitors[0].kill()
    cluster.replicas[2].kill()
    wait_until(lambda: asked()[0] == 2, 15, "its last heartbeat to go stale")
    code, said = asked()
    assert (code, said["verdict"]) == (2, "unavailable"), said
    assert said["reason"] == "replica 2 is down and no live replica answers for its keys"
