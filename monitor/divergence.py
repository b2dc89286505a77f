"""Divergence check: replicas that report the same stream position must report the same
digest (as etcd's corruption check compares hashes at the same revision)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from kvwire.messages import Heartbeat

log = logging.getLogger("kvmonitor")


@dataclass(frozen=True)
class Divergence:
    position: int
    digests: dict[int, str]


class DivergenceCheck:
    def __init__(self, positions_kept: int = 256) -> None:
        self._kept = positions_kept
        self._digests: OrderedDict[int, dict[int, str]] = OrderedDict()
        self._reported: set[int] = set()
        #: Divergences found since the start (each position once).
        self.found = 0

    def observe(self, beat: Heartbeat) -> list[Divergence]:
        if beat.modo != "live":
            return []
        found = []
        for position, digest in ((beat.posicao, beat.resumo), (beat.marco, beat.resumomarco)):
            if position is None or digest is None:
                continue
            digests = self._digests.setdefault(position, {})
            digests[beat.idserv] = digest
            if len(set(digests.values())) > 1 and position not in self._reported:
                self._reported.add(position)
                self.found += 1
                found.append(Divergence(position, dict(digests)))
                log.error(
                    "DIVERGENCE at position %d: replicas report different digests %s",
                    position,
                    ", ".join(f"{i}={d}" for i, d in sorted(digests.items())),
                )
        while len(self._digests) > self._kept:
            old, _ = self._digests.popitem(last=False)
            self._reported.discard(old)
        return found
