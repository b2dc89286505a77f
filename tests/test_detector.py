"""The failure detector, driven with heartbeats and fake time."""

from __future__ import annotations

from kvwire.messages import FalhaServ, Heartbeat
from monitor.detector import Detector


def beat(i: int, inc: str | None = "a", mode: str = "live") -> Heartbeat:
    return Heartbeat.model_validate({"idServ": i, "incarnacao": inc, "modo": mode})


def connected(n: int = 3, now: float = 0.0) -> Detector:
    detector = Detector(n, failure_timeout=1.0, now=now)
    detector.on_connected(now)
    return detector


def ticked(detector: Detector, now: float) -> list[FalhaServ]:
    """A tick with the broker delivering: the monitor's own beats came back every 0.25 s."""
    at = detector.last_traffic
    while at + 0.25 < now:
        at += 0.25
        detector.on_traffic(at)
    detector.on_traffic(now)
    return detector.tick(now)


def test_silence_longer_than_the_timeout_is_a_failure_declared_once() -> None:
    detector = connected()
    for i in range(3):
        detector.on_heartbeat(beat(i), 0.5)
    assert ticked(detector, 1.4) == []
    detector.on_heartbeat(beat(0), 1.4)
    detector.on_heartbeat(beat(2), 1.4)
    failures = ticked(detector, 1.6)
    assert [(f.idserv, f.vistoem, f.incarnacao) for f in failures] == [(1, 0.5, "a")]
    assert ticked(detector, 5.0) != []  # 0 and 2 fall silent too
    assert all(f.idserv != 1 for f in ticked(detector, 9.0))


def test_a_last_will_is_a_failure_at_once() -> None:
    detector = connected()
    detector.on_heartbeat(beat(1), 0.2)
    failures = detector.on_heartbeat(beat(1, mode="gone"), 0.21)
    assert [(f.idserv, f.vistoem) for f in failures] == [(1, 0.2)]
    assert detector.on_heartbeat(beat(1, mode="gone"), 0.22) == []


def test_the_will_of_a_replaced_incarnation_is_ignored() -> None:
    detector = connected()
    detector.on_heartbeat(beat(1, inc="new"), 0.2)
    assert detector.on_heartbeat(beat(1, inc="old", mode="gone"), 0.3) == []


def test_the_will_of_an_incarnation_never_heard_is_a_failure_too() -> None:
    detector = connected()
    detector.on_heartbeat(beat(1, inc="a"), 0.2)
    assert [f.incarnacao for f in detector.on_heartbeat(beat(1, inc="a", mode="gone"), 0.3)] == [
        "a"
    ]
    # Incarnation "b" started and died before any heartbeat of it reached the monitor.
    failures = detector.on_heartbeat(beat(1, inc="b", mode="gone"), 0.9)
    assert [(f.idserv, f.incarnacao) for f in failures] == [(1, "b")]


def test_a_replica_heard_again_in_a_new_incarnation_is_watched_again() -> None:
    detector = connected()
    detector.on_heartbeat(beat(0, inc="a"), 0.0)
    assert [f.idserv for f in ticked(detector, 1.5) if f.idserv == 0] == [0]
    detector.on_heartbeat(beat(0, inc="a"), 1.6)  # the fenced process, not yet aware
    assert [f.idserv for f in ticked(detector, 3.0) if f.idserv == 0] == []
    detector.on_heartbeat(beat(0, inc="b"), 3.1)
    assert [f.incarnacao for f in ticked(detector, 4.5) if f.idserv == 0] == ["b"]


def test_a_replica_never_heard_is_failed_after_the_timeout() -> None:
    detector = connected(now=10.0)
    failures = ticked(detector, 11.5)
    assert sorted(f.idserv for f in failures) == [0, 1, 2]
    assert all(f.incarnacao is None for f in failures)


def test_nothing_is_declared_while_disconnected_and_timers_restart_on_reconnect() -> None:
    detector = connected()
    for i in range(3):
        detector.on_heartbeat(beat(i), 0.0)
    detector.on_disconnected()
    assert ticked(detector, 30.0) == []
    assert detector.on_heartbeat(beat(1, mode="gone"), 30.0) == []
    detector.on_connected(30.0)
    assert ticked(detector, 30.9) == []
    assert len(ticked(detector, 31.1)) == 3


def test_heartbeats_of_ids_outside_the_cluster_are_ignored() -> None:
    detector = connected()
    assert detector.on_heartbeat(beat(7), 0.1) == []


def test_a_stalled_broker_is_not_a_failure_of_the_replicas() -> None:
    """Nothing at all comes for longer than the timeout (Mosquitto saving a large store):
    nothing is declared, and each replica's silence counts from the end of the stall."""
    detector = connected()
    for i in range(3):
        detector.on_heartbeat(beat(i), 0.5)
    assert detector.tick(1.8) == []  # 1.3 s without a beat, but nothing came at all
    detector.on_heartbeat(beat(0), 2.0)  # the stall ends: queued beats arrive
    assert ticked(detector, 2.9) == []
    detector.on_heartbeat(beat(0), 2.9)
    failures = ticked(detector, 3.1)  # 1 and 2 stay silent after it: failed
    assert sorted(f.idserv for f in failures) == [1, 2]
    # ... as of their last heartbeat, from which their successors replay (§6)
    assert [f.vistoem for f in failures] == [0.5, 0.5]


def test_replicas_silent_while_the_broker_delivers_are_failed() -> None:
    """The monitor's own beats come back, so the broker works: silence is the replicas'."""
    detector = connected()
    for i in range(3):
        detector.on_heartbeat(beat(i), 0.5)
    assert sorted(f.idserv for f in ticked(detector, 1.6)) == [0, 1, 2]
