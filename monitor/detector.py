"""Failure detection as a state machine fed heartbeats and time (protocol §9).

A replica is declared failed when no heartbeat came for `failure_timeout`, or at once when
its last will (`modo: "gone"`) arrives. Each failure of an incarnation is declared once; the
id is watched again when a heartbeat of a new incarnation (or any, for replicas that send
none) is heard. While the monitor is disconnected nothing is declared, and every timer starts
again on reconnect: an outage of the monitor or the broker is not a failure of the replicas.

Nor is a broker that stalls while connected (Mosquitto saving a large retained store, say: a
million mirrored keys take it a second, issue 28): while nothing at all has come from the
broker for half the failure timeout (the monitor's own beats come back every quarter of it,
`on_traffic`), nothing is declared, and when traffic comes again every replica's silence is
counted from the end of the stall, as after a reconnect.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from kvwire.messages import FalhaServ, Heartbeat

log = logging.getLogger("kvmonitor")


@dataclass
class _Watch:
    #: Its last heartbeat (a `falhaserv`'s `vistoem`: a substitute replays from there).
    last_seen: float
    incarnation: str | None
    declared: bool = False
    heard: bool = False
    #: When its silence began to count: its last heartbeat, or a later reconnect or end of a
    #: broker stall.
    counted_from: float = 0.0

    def silence(self, now: float) -> float:
        return now - max(self.last_seen, self.counted_from)


class Detector:
    def __init__(self, n: int, failure_timeout: float, now: float) -> None:
        self.n = n
        self.failure_timeout = failure_timeout
        self.connected = False
        # Replicas never heard from are expected too: one that never starts is failed after
        # the timeout, so that its successor answers for it.
        self._watches = [
            _Watch(last_seen=now, incarnation=None, counted_from=now) for _ in range(n)
        ]
        #: When anything last came from the broker (`on_traffic`), and whether the silence
        #: since was said in the log.
        self.last_traffic = now
        self._stall_said = False
        self._stalls, self._stall_logged_at = 0, -math.inf
        #: Failures declared, per replica, and heartbeats heard: for the metrics.
        self.declared = [0] * n
        self.beats = 0

    @property
    def stall_after(self) -> float:
        """Silence from the broker beyond this is the broker's, not the replicas'."""
        return self.failure_timeout / 2

    def on_connected(self, now: float) -> None:
        self.connected = True
        self.last_traffic = now
        for watch in self._watches:
            watch.counted_from = now

    def on_traffic(self, now: float) -> None:
        """Anything came from the broker (called first, for every message). After a stall,
        every replica's silence counts from now."""
        gap = now - self.last_traffic
        self.last_traffic = now
        if gap <= self.stall_after:
            return
        self._stalls += 1
        if now - self._stall_logged_at >= 10.0:  # a broker saving every second: a line a while
            self._stall_logged_at = now
            log.warning(
                "the broker delivered nothing for %.2f s (%d stalls so far): every replica's "
                "silence counts from now",
                gap,
                self._stalls,
            )
        self._stall_said = False
        for watch in self._watches:
            watch.counted_from = now

    def on_disconnected(self) -> None:
        self.connected = False

    @property
    def stalls(self) -> int:
        return self._stalls

    def up(self, replica_id: int) -> bool:
        """Heard from, and not declared failed since."""
        watch = self._watches[replica_id]
        return watch.heard and not watch.declared

    def last_seen(self, replica_id: int) -> float:
        return self._watches[replica_id].last_seen

    def on_heartbeat(self, beat: Heartbeat, now: float) -> list[FalhaServ]:
        self.on_traffic(now)
        self.beats += 1
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
        silent = now - self.last_traffic
        if silent > self.stall_after:  # the broker's silence, or ours
            if silent > self.failure_timeout and not self._stall_said:  # it would have failed
                self._stall_said = True
                log.warning("the broker delivers nothing: declaring nothing until it does")
            return []
        out = []
        for replica_id, watch in enumerate(self._watches):
            if not watch.declared and watch.silence(now) > self.failure_timeout:
                why = "no heartbeat" if watch.heard else "never heard"
                silence = f"{why} for {now - watch.last_seen:.2f} s"
                out.append(self._declare(replica_id, watch, silence))
        return out

    def _declare(self, replica_id: int, watch: _Watch, why: str) -> FalhaServ:
        watch.declared = True
        self.declared[replica_id] += 1
        log.warning(
            "replica %d declared failed: %s (last heartbeat %.3f, incarnation %s)",
            replica_id,
            why,
            watch.last_seen,
            watch.incarnation,
        )
        return FalhaServ(idserv=replica_id, vistoem=watch.last_seen, incarnacao=watch.incarnation)
