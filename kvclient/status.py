"""What the cluster looks like from its heartbeats on the monitor topic.

`ClusterWatch` listens; `ClusterStatus` is one reading of it: which replicas are live, at
which stream position, with which digest, answering for whom; which monitors are running;
and whether replicas at the same position disagree (a divergence, as etcd's corruption check
reports it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kvclient.transport import MqttTransport, Transport
from kvwire.access import Access, ClusterKey
from kvwire.events import Evento, decode_evento, events_topic
from kvwire.messages import MONITOR_TOPIC, Heartbeat, MonitorBeat, decode_beat
from kvwire.mqtt import Closing, never_raises
from kvwire.ring import key_slot


@dataclass(frozen=True)
class ReplicaState:
    id: int
    beat: Heartbeat
    age: float

    @property
    def up(self) -> bool:
        return self.beat.modo != "gone"


@dataclass(frozen=True)
class ClusterStatus:
    replicas: dict[int, ReplicaState]
    monitors: dict[str, float]
    stale_after: float
    #: Per monitor, control messages it ignored for their signature (secured mode only).
    monitor_forgeries: dict[str, int] = field(default_factory=dict)
    #: Per monitor that serves metrics, its port.
    monitor_metrics: dict[str, int] = field(default_factory=dict)

    def live(self) -> list[int]:
        return sorted(
            i
            for i, r in self.replicas.items()
            if r.up and r.beat.modo == "live" and r.age <= self.stale_after
        )

    def divergent(self) -> list[tuple[int, int]]:
        """Pairs of live replicas that report the same position and different digests."""
        live = [self.replicas[i].beat for i in self.live()]
        return [
            (a.idserv, b.idserv)
            for k, a in enumerate(live)
            for b in live[k + 1 :]
            if a.posicao == b.posicao and a.resumo != b.resumo
        ]


class ClusterWatch(Closing):
    """Keeps the latest heartbeat of every replica and monitor seen since it started, and
    with `events`, that many of the last events the replicas and monitors published."""

    def __init__(
        self,
        broker: str | None = None,
        *,
        monitor_topic: str = MONITOR_TOPIC,
        connect_timeout: float = 5.0,
        access: Access | None = None,
        transport: Transport | None = None,
        events: int = 0,
    ) -> None:
        self.monitor_topic = monitor_topic
        self._events_topic = events_topic(monitor_topic)
        #: Numbered from 1, so that a reader can ask for those after the last it saw.
        self._events: deque[tuple[int, Evento]] = deque(maxlen=max(events, 1))
        self._event_count = 0
        self._lock = threading.Lock()
        self._replicas: dict[int, tuple[Heartbeat, float]] = {}
        self._monitors: dict[str, float] = {}
        self._monitor_forgeries: dict[str, int] = {}
        self._monitor_metrics: dict[str, int] = {}
        self._changed = threading.Condition(self._lock)
        self._transport = transport or MqttTransport(
            broker, name="kvstatus", connect_timeout=connect_timeout, qos=0, access=access
        )
        topics = [monitor_topic, self._events_topic] if events else [monitor_topic]
        self._transport.open(topics, self._on_beat)

    @property
    def connected(self) -> bool:
        return self._transport.connected

    def events_after(self, seen: int) -> list[tuple[int, Evento]]:
        with self._lock:
            return [(number, event) for number, event in self._events if number > seen]

    @never_raises
    def _on_beat(self, topic: str, payload: bytes) -> None:
        if topic == self._events_topic:
            event = decode_evento(payload)
            if isinstance(event, Evento):
                with self._changed:
                    self._event_count += 1
                    self._events.append((self._event_count, event))
                    self._changed.notify_all()
            return
        beat = decode_beat(payload)
        now = time.monotonic()
        with self._changed:
            if isinstance(beat, Heartbeat):
                self._replicas[beat.idserv] = (beat, now)
            elif isinstance(beat, MonitorBeat):
                self._monitors[beat.idmonitor] = now
                if beat.semassinatura is not None:
                    self._monitor_forgeries[beat.idmonitor] = beat.semassinatura
                if beat.metricas is not None:
                    self._monitor_metrics[beat.idmonitor] = beat.metricas
            else:
                return
            self._changed.notify_all()

    def status(self, stale_after: float = 1.0) -> ClusterStatus:
        now = time.monotonic()
        with self._lock:
            replicas = {
                i: ReplicaState(i, beat, now - at) for i, (beat, at) in self._replicas.items()
            }
            monitors = {name: now - at for name, at in self._monitors.items()}
            forgeries = dict(self._monitor_forgeries)
            ports = dict(self._monitor_metrics)
        return ClusterStatus(replicas, monitors, stale_after, forgeries, ports)

    def wait_change(self, timeout: float) -> None:
        """Until a heartbeat or an event arrives, or `timeout` s pass."""
        with self._changed:
            self._changed.wait(timeout)

    def wait_for(self, predicate: Any, timeout: float, stale_after: float = 1.0) -> ClusterStatus:
        """Wait until `predicate(status)` holds; return the status that satisfied it, or the
        last one read when the deadline passed (the caller asserts on it)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(stale_after)
            if predicate(status) or time.monotonic() >= deadline:
                return status
            with self._changed:
                self._changed.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    def announce(self, payload: bytes, key: ClusterKey | None = None) -> None:
        """Publish on the monitor topic: how an operator's order reaches waiting replicas;
        signed with `key` for a secured cluster."""
        self._transport.publish(
            self.monitor_topic, payload, key.properties(payload) if key else None
        )

    def close(self) -> None:
        self._transport.close()


def expected_size(status: ClusterStatus, n: int | None) -> int:
    """The cluster's size: as given, else as the replicas announce it."""
    if n is not None:
        return n
    announced = [r.beat.n for r in status.replicas.values() if r.beat.n]
    return max(announced, default=max(status.replicas, default=-1) + 1)


def serving(status: ClusterStatus, slot: int) -> int | None:
    """The replica that answers the keys of `slot`, as the heartbeats tell: replica `slot`
    while live, else the live replica that says it is replacing it; None if none says so."""
    live = status.live()
    if slot in live:
        return slot
    return next((i for i in live if slot in (status.replicas[i].beat.substituindo or [])), None)


def answering(status: ClusterStatus, key: str) -> int | None:
    """The replica that answers `key` (`serving` its slot)."""
    n = expected_size(status, None)
    return serving(status, key_slot(key, n)) if n > 0 else None


def why_unanswered(status: ClusterStatus, key: str) -> str | None:
    """What the heartbeats say about a request for `key` that got no answer, when they say
    something a person can act on; None otherwise (a timeout says the rest)."""
    i = answering(status, key)
    if i is not None and status.replicas[i].beat.disk_full:
        return (
            f"replica {i}, which answers key {key!r}, says its data directory is full: it "
            "answers nothing until there is room"
        )
    return None


def problems(status: ClusterStatus, n: int) -> list[str]:
    """What an operator must look at; empty when every replica is live and they agree."""
    found = []
    live = set(status.live())
    for i in range(n):
        if i not in live:
            state = status.replicas.get(i)
            mode = "no heartbeat heard: down, or not started" if state is None else state.beat.modo
            found.append(f"replica {i} is not live ({mode})")
        elif status.replicas[i].beat.disk_full:
            found.append(
                f"replica {i}'s data directory is full: it answers nothing until there is room"
            )
    for a, b in status.divergent():
        position = status.replicas[a].beat.posicao
        found.append(f"replicas {a} and {b} report different digests at position {position}")
    quotas = {i: _quota_of(status.replicas[i].beat) for i in sorted(live)}
    if len(set(quotas.values())) > 1:  # one would refuse a write another applies
        each = "; ".join(f"replica {i}: {quota}" for i, quota in quotas.items())
        found.append(
            f"the replicas were started with different quotas ({each}): start every replica "
            "with the same --max-keys and --max-bytes"
        )
    return found


def _quota_of(beat: Heartbeat) -> str:
    parts = []
    if beat.cotachaves is not None:
        parts.append(f"--max-keys {beat.cotachaves}")
    if beat.cotabytes is not None:
        parts.append(f"--max-bytes {beat.cotabytes}")
    return ", ".join(parts) or "none"


def as_rows(status: ClusterStatus, n: int) -> list[dict[str, object]]:
    live = set(status.live())
    rows: list[dict[str, object]] = []
    for i in range(n):
        state = status.replicas.get(i)
        beat = state.beat if state else None
        up = i in live
        rows.append(
            {
                "replica": i,
                "state": ("live" if up else beat.modo if beat and beat.modo != "live" else "down"),
                "position": beat.posicao if beat and up else None,
                "keys": beat.chaves if beat and up else None,
                "digest": beat.resumo if beat and up else None,
                "answering_for": (beat.substituindo or []) if beat and up else [],
                "answered_by": None if up else serving(status, i),
                "heartbeat_age": round(state.age, 2) if state else None,
                "invalid": beat.invalidas if beat else None,
                "unanswered": beat.semresposta if beat else None,
                "forged": beat.semassinatura if beat else None,
                "bytes": beat.tamanho if beat and up else None,
                "quota_keys": beat.cotachaves if beat else None,
                "quota_bytes": beat.cotabytes if beat else None,
                "metrics_port": beat.metricas if beat and up else None,
                "disk_full": bool(beat and up and beat.disk_full),
            }
        )
    return rows


def _counters(rows: list[dict[str, object]], monitor_forgeries: dict[str, int]) -> list[str]:
    """A line for each program that refused something: quiet when all is well."""
    lines = []
    names = (
        ("invalid", "invalid requests (not requests at all: answered erro where they name a "
         "reply topic; the replica's log says why)"),
        ("unanswered", "requests applied but not answered (their reply topic is one no client "
         "may publish to)"),
    )  # fmt: skip
    for row in rows:
        parts = [f"{row[k]} {label}" for k, label in names if row[k]]
        if row["forged"]:
            parts.append(f"{row['forged']} control messages with a bad signature")
        if parts:
            lines.append(f"replica {row['replica']} ignored: {', '.join(parts)}")
    for name, count in sorted(monitor_forgeries.items()):
        if count:
            lines.append(f"monitor {name} ignored: {count} heartbeats with a bad signature")
    return lines


def quota_fill(rows: list[dict[str, object]]) -> dict[str, object] | None:
    """How full the cluster's quota is, as its most advanced live replica says; None when the
    cluster has no quota."""
    live = [r for r in rows if r["state"] == "live" and r["position"] is not None]
    if not live:
        return None
    row = max(live, key=lambda r: r["position"])  # type: ignore[arg-type,return-value]
    keys, size = row["quota_keys"], row["quota_bytes"]
    if keys is None and size is None:
        return None
    return {"keys": row["keys"], "max_keys": keys, "bytes": row["bytes"], "max_bytes": size}


def _quota_line(fill: dict[str, object]) -> str:
    parts = []
    if fill["max_keys"] is not None:
        held, most = int(fill["keys"] or 0), int(fill["max_keys"])  # type: ignore[call-overload]
        parts.append(f"{held} of {most} keys ({100 * held / most:.0f}%)")
    if fill["max_bytes"] is not None:
        held, most = int(fill["bytes"] or 0), int(fill["max_bytes"])  # type: ignore[call-overload]
        parts.append(f"{held} of {most} bytes ({100 * held / most:.0f}%)")
    return "quota: " + ", ".join(parts)


def render(status: ClusterStatus, n: int) -> str:
    header = f"{'replica':<8}{'state':<9}{'position':>9}{'keys':>9}  {'digest':<17}"
    header += f"{'answering for':<15}{'last beat':>9}"
    lines = [header]
    for row in as_rows(status, n):
        if row["state"] == "live":
            extra = ",".join(str(i) for i in row["answering_for"]) or "-"  # type: ignore[attr-defined]
        else:
            extra = f"(by {row['answered_by']})" if row["answered_by"] is not None else "(nobody)"
        age = row["heartbeat_age"]
        lines.append(
            f"{row['replica']!s:<8}{row['state']!s:<9}"
            f"{'-' if row['position'] is None else row['position']!s:>9}"
            f"{'-' if row['keys'] is None else row['keys']!s:>9}  "
            f"{row['digest'] or '-'!s:<17}{extra:<15}"
            f"{'never' if age is None else f'{age:.1f} s':>9}"
        )
    monitors = ", ".join(
        f"{name} ({age:.1f} s ago)" for name, age in sorted(status.monitors.items())
    )
    lines.append(f"monitors: {monitors or 'none heard'}")
    rows = as_rows(status, n)
    fill = quota_fill(rows)
    if fill is not None:
        lines.append(_quota_line(fill))
    lines.extend(_counters(rows, status.monitor_forgeries))
    for problem in problems(status, n):
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def resume_without(
    watcher: ClusterWatch, without: list[int], key: ClusterKey | None, timeout: float
) -> list[int]:
    """`kvclient recover`: order the waiting replicas not to wait for `without` (protocol §17),
    again every second (a replica started meanwhile must hear it too), until one is live or
    `timeout` s pass; the live replicas then (none: nobody resumed)."""
    from kvwire.messages import Recuperacao

    deadline = time.monotonic() + timeout
    while True:
        order = Recuperacao(sem=without, enviadoem=time.time()).encode()
        watcher.announce(order, key)
        status = watcher.wait_for(lambda s: bool(s.live()), timeout=1.0)
        if status.live() or time.monotonic() >= deadline:
            return status.live()
