"""Fault scenarios under a steady load from three clients. Each ends as a user would check a
replicated store: every request answered, no acknowledged write lost, the recorded history
linearizable, and every replica's digest equal once the load stops."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvclient.status import ClusterStatus, ClusterWatch, ReplicaState
from kvclient.workload import Workload
from kvwire.messages import Heartbeat
from tests.cluster import BOTH_MODES, Cluster, all_equal, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def finish(cluster: Cluster, load: Workload, replicas: int = 3) -> None:
    load.stop()
    report = load.report()
    assert report.operations > 100, report.render()
    assert report.problems() == [], report.render()
    with ClusterWatch(cluster.address) as watch:
        status = watch.wait_for(all_equal(replicas), 20)
        assert all_equal(replicas)(status), status


def healthy(status: ClusterStatus) -> bool:
    return len(status.live()) == 3 and not status.divergent()


def recovered_since(wall_time: float) -> Callable[[ClusterStatus], bool]:
    """Healthy, on heartbeats every replica sent after `wall_time` (the end of a fault): a
    beat from before a power cut is under a second old for a while, and says nothing."""

    def check(status: ClusterStatus) -> bool:
        beats = [status.replicas[i].beat for i in status.live()]
        return healthy(status) and all((b.enviadoem or 0) > wall_time for b in beats)

    return check


@BOTH_MODES
def test_the_owner_is_killed_while_reads_wait_for_it(cluster: Cluster) -> None:
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        # Stopped first, so that requests reach the stream but not the owner; then killed.
        cluster.replicas[0].pause()
        time.sleep(0.2)  # the fault's length: reads pile up for replica 0
        cluster.replicas[0].kill()
        load.wait_for_more(150)
        cluster.start_replica(0)
        cluster.wait_log(0, "joined at position", 15)
        load.wait_for_more(100)
    finish(cluster, load)


def test_the_substitute_is_killed_during_its_replay(cluster: Cluster) -> None:
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.replicas[0].kill()
        cluster.wait_log(1, "takes over for replica 0", 15)
        cluster.replicas[1].kill()  # its replay's answers may or may not have left
        cluster.wait_log(2, "takes over for replica 1", 15)
        load.wait_for_more(150)
        for replica_id in (0, 1):
            cluster.start_replica(replica_id)
            cluster.wait_log(replica_id, "joined at position", 15)
        load.wait_for_more(100)
    finish(cluster, load)


@BOTH_MODES
@pytest.mark.replica0("--pace-transfers-for-tests", "0.5")
def test_the_state_sender_is_killed_during_a_join(cluster: Cluster) -> None:
    """Replica 2 re-joins; its sender, replica 0, sends a chunk every half second and is
    killed after the first: the joiner must ask again and load from replica 1."""
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.replicas[2].kill()
        load.wait_for_more(50)
        cluster.start_replica(2)
        cluster.wait_log(0, "hands back to replica 2", 15)
        cluster.replicas[0].kill()
        cluster.wait_log(2, "joined at position", 30)
        joiner = cluster.replicas[2].log()
        assert "asking again" in joiner and "from replica 1" in joiner, joiner
        load.wait_for_more(100)
        cluster.start_replica(0)
        cluster.wait_log(0, "joined at position", 15)
        load.wait_for_more(50)
    finish(cluster, load)


@BOTH_MODES
def test_false_suspicion_of_a_stopped_replica(cluster: Cluster) -> None:
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.replicas[1].pause()
        cluster.wait_log(2, "takes over for replica 1", 10)
        load.wait_for_more(100)
        cluster.replicas[1].signal(signal.SIGCONT)
        cluster.wait_log(1, "fenced at position", 10)
        cluster.wait_log(1, "joined at position", 15)
        load.wait_for_more(100)
    finish(cluster, load)


def test_a_broker_stopped_cleanly_and_started_again_loses_nothing(cluster: Cluster) -> None:
    """A clean stop (SIGTERM) and a start under load. Mosquitto 2.0.11 does not restore the
    sessions of clients connected when it stops, so every replica finds its session gone and
    goes through protocol §11's recovery: that is what this tests."""
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.broker.kill(signal.SIGTERM)
        cluster.broker.start()
        load.wait_for_more(200, timeout=60)
    finish(cluster, load)


def test_the_monitor_is_killed_and_restarted(cluster: Cluster) -> None:
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.monitors[0].kill()
        load.wait_for_more(50)
        cluster.start_monitor()
        cluster.replicas[2].kill()
        load.wait_for_more(100)
        cluster.start_replica(2)
        cluster.wait_log(2, "joined at position", 15)
        load.wait_for_more(50)
    finish(cluster, load)


def test_two_monitors_side_by_side(cluster: Cluster) -> None:
    cluster.start_monitor()
    with Workload(cluster.address, clients=3) as load:
        load.wait_for_more(100)
        cluster.replicas[0].kill()
        load.wait_for_more(100)
        cluster.start_replica(0)
        cluster.wait_log(0, "joined at position", 15)
        load.wait_for_more(100)
    finish(cluster, load)
    assert cluster.replicas[1].log().count("takes over for replica 0") == 1


def nemesis(
    cluster: Cluster,
    faults: int,
    seed: int,
    whole_cluster: bool = False,
    cap: float = 150,
    shared: bool = False,
) -> None:
    """`faults` random faults under load, one at a time, each held for a random while; the
    cluster must be healthy again after each, on heartbeats sent after it ended, before the
    next. With `whole_cluster`, some faults are a power cut: every replica, the monitor and
    the broker killed at once, then restarted (data on disk). The load mixes gets, puts,
    deletes and compare-and-sets, three clients on eight keys, so that some compare-and-sets
    lose. `cap`: seconds the whole may take, on a slow machine too. `shared`: four clients on
    one connection, whose requests go out in batches (protocol §21)."""
    rng = random.Random(seed)
    events: list[str] = []
    started = time.monotonic()
    timeout = 30 if whole_cluster else 10  # a request in flight across a power cut waits
    with (
        Workload(
            cluster.address,
            clients=4 if shared else 3,
            timeout=timeout,
            get_ratio=0.4,
            delete_ratio=0.1,
            cas_ratio=0.25,
            shared=shared,
        ) as load,
        ClusterWatch(cluster.address) as watch,
    ):
        while len(events) < faults:
            assert time.monotonic() - started < cap, f"{len(events)} faults in {cap} s"
            load.wait_for_more(30, timeout=60)
            victim = rng.randrange(3)
            hold = rng.uniform(0.3, 2.0)  # how long the fault lasts: the nemesis's choice
            at = f"{time.monotonic() - started:5.1f}s"
            roll = rng.random()
            if whole_cluster and roll < 0.2:
                events.append(f"{at} kill -9 of everything, broker included, for {hold:.1f}s")
                cluster.kill_everything()
                time.sleep(hold)
                cluster.broker.wipe_state()
                cluster.broker.start()
                for i in range(cluster.n):
                    cluster.start_replica(i)
                cluster.start_monitor()
            elif roll < (0.6 if whole_cluster else 0.5):
                events.append(f"{at} kill -9 replica {victim}")
                cluster.replicas[victim].kill()
                time.sleep(hold)
                cluster.start_replica(victim)
            else:
                events.append(f"{at} SIGSTOP replica {victim} for {hold:.1f}s")
                cluster.replicas[victim].pause()
                time.sleep(hold)
                cluster.replicas[victim].signal(signal.SIGCONT)
            recovered = recovered_since(time.time())
            status = watch.wait_for(recovered, 30)
            assert recovered(status), f"not healthy after {events[-1]}: {status}"
    print("\n".join(events))
    if shared:  # the clients' requests went out in batches, not one message each
        batched = load._shared_client.batched_requests if load._shared_client else 0
        assert batched > 100, batched
    if whole_cluster:
        assert any("everything" in e for e in events), events
    finish(cluster, load)
    answered = [op for op in load.history if op.outcome == "ok"]
    assert any(op.kind == "cas" and not op.applied for op in answered), "no conflict tried"
    assert any(op.kind == "cas" and op.applied for op in answered)
    assert any(op.kind == "delete" and op.applied for op in answered)


def test_random_nemesis_of_nine_faults_with_batches(cluster: Cluster) -> None:
    nemesis(cluster, 9, seed=20261122, shared=True)


def test_random_nemesis_with_data_on_disk_and_power_cuts(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, data=True)
    try:
        cluster.start()
        nemesis(cluster, 8, seed=20261125, whole_cluster=True)
    finally:
        cluster.close()


def test_a_replica_that_acknowledges_before_applying_is_caught(tmp_path: Path) -> None:
    """The suite's own check: a deliberately broken replica must make it fail."""
    cluster = Cluster(tmp_path)
    try:
        cluster.broker.start()
        for i in range(3):
            extra = ("--lag-writes-for-tests", "3") if i == 0 else ()
            cluster.start_replica(i, fresh=True, extra=extra)
        cluster.start_monitor()
        wait_until(lambda: "watching" in cluster.monitors[0].log(), 10, "the monitor")
        with Workload(cluster.address, clients=3) as load:
            load.wait_for_more(300)
        report = load.report()
        assert report.problems() != [], "a stale-reading replica went unnoticed"
        assert not report.verdict.linearizable
    finally:
        cluster.close()


def test_recovery_counts_only_heartbeats_sent_after_the_fault() -> None:
    """The beats of three live replicas, each sent just before a power cut and still under a
    second old: healthy to look at, yet they say nothing of after the fault."""
    beats = {
        i: ReplicaState(i, Heartbeat(idserv=i, modo="live", posicao=9, enviadoem=100.0), 0.2)
        for i in range(3)
    }
    before = ClusterStatus(beats, {}, stale_after=1.0)
    assert healthy(before)
    assert not recovered_since(100.5)(before)
    after = {
        i: ReplicaState(i, Heartbeat(idserv=i, modo="live", posicao=9, enviadoem=101.0), 0.1)
        for i in range(3)
    }
    assert recovered_since(100.5)(ClusterStatus(after, {}, stale_after=1.0))
