"""Failure detection as a state machine fed heartbeats and time (protocol §9).

A replica is declared failed when no heartbeat came for `failure_timeout`, or at once when
its last will (`modo: "gone"`) arrives. Each failure of an incarnation is declared once; the
id is watched again when a heartbeat of a new incarnation (or any, for replicas that send
none) is heard. While the monitor is disconnected nothing is declared, and every timer starts
again on reconnect: an outage of the monitor or the broker is not a failure of the replicas.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kvwire.messages import FalhaServ, Heartbeat

log = logging.getLogger("kvmonitor")


@dataclass
class _Watch:
    last_seen: float
    incarnation: str | None
    declared: bool = False
    heard: bool = False


class Detector:
    def __init__(self, n: int, failure_timeout: float, now: float) -> None:
        self.n = n
        self.failure_timeout = failure_timeout
        self.connected = False
        # Replicas never heard from are expected too: one that never starts is failed after
        # the timeout, so that its successor answers for it.
        self._watches = [_Watch(last_seen=now, incarnation=None) for _ in range(n)]

    def on_connected(self, now: float) -> None:
        self.connected = True
        for watch in self._watches:
            watch.last_seen = now

    def on_disconnected(self) -> None:
        self.connected = False

    def on_heartbeat(self, beat: Heartbeat, now: float) -> list[FalhaServ]:
        if not 0 <= beat.idserv < self.n:
            return []
        watch = self._watches[beat.idserv]
        if beat.modo == "gone":
            if not self.connected:
                return []
            other = beat.incarnacao not in (None, watch.incarnation)
            if watch.declared and not other:
                return []  # this failure was declared already
            if not watch.declared and other and watch.incarnation is not None:
                return []  # the will of an incarnation already replaced
            # Declared, and the will names another incarnation: one that started and died
            # before any of its heartbeats reached us. It is failed too.
            watch.incarnation = beat.incarnacao or watch.incarnation
            return [self._declare(beat.idserv, watch, "its connection dropped")]
        new_incarnation = beat.incarnacao is None or beat.incarnacao != watch.incarnation
        if watch.declared and not new_incarnation:
            return []  # a fenced process still beating before it notices: not alive again
        if watch.declared:
            log.info("replica %d is alive again (incarnation %s)", beat.idserv, beat.incarnacao)
        watch.declared = False
        watch.heard = True
        watch.incarnation = beat.incarnacao
        watch.last_seen = now
        return []

    def tick(self, now: float) -> list[FalhaServ]:
        if not self.connected:
            return []
        out = []
        for replica_id, watch in enumerate(self._watches):
            if not watch.declared and now - watch.last_seen > self.failure_timeout:
                why = "no heartbeat" if watch.heard else "never heard"
                silence = f"{why} for {now - watch.last_seen:.2f} s"
                out.append(self._declare(replica_id, watch, silence))
        return out

    def _declare(self, replica_id: int, watch: _Watch, why: str) -> FalhaServ:
        watch.declared = True
        log.warning(
            "replica %d declared failed: %s (last heartbeat %.3f, incarnation %s)",
            replica_id,
            why,
            watch.last_seen,
            watch.incarnation,
        )
        return FalhaServ(idserv=replica_id, vistoem=watch.last_seen, incarnacao=watch.incarnation)
