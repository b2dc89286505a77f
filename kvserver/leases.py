"""Leases (protocol §18) as rules every replica applies alike, and the keeper's clock.

What the stream decides is held the same on every replica: each lease's TTL, the position of
the grant or keep-alive applied last (`renewed_at`), and its keys. What this replica's own
clock says is kept apart: when it applied that grant or keep-alive, which only the lease's
keeper reads, to tell when to publish an `expiracao`. The `expiracao` names `renewed_at`, and
every replica ends the lease at its position only if that is still the lease's last renewal.
So a clock that jumps, or a keeper that fails over, changes when a lease ends, never whether
the replicas agree that it did.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from kvserver.history import RequestLog
from kvwire.leasing import (
    MAX_LEASES,
    Concessao,
    Expiracao,
    LeaseOp,
    LeaseRecord,
    LeaseSummary,
    Renovacao,
    Revogacao,
)


@dataclass
class Lease:
    ttl: int
    #: The stream position of the grant or keep-alive applied last.
    renewed_at: int
    keys: set[str] = field(default_factory=set)


class Leases:
    """Every lease of the cluster, and each key's lease.

    The keeper's deadlines are a heap of `(deadline, name, renewed_at)`, one entry per grant or
    keep-alive applied: an entry whose lease has been renewed since is dropped when it comes
    up, so a `tick` costs what is due, not a walk over every lease.
    """

    def __init__(self, capacity: int = MAX_LEASES) -> None:
        self.capacity = capacity
        self._leases: dict[str, Lease] = {}
        self._of_key: dict[str, str] = {}
        #: When this replica applied each lease's last renewal (its own clock).
        self._applied: dict[str, float] = {}
        self._due: list[tuple[float, str, int]] = []
        #: Loaded from disk: no clock has counted their TTL yet.
        self._unclocked = False

    # --- what the stream decides -----------------------------------------------------------

    def grant(self, name: str, ttl: int, position: int, now: float) -> str | None:
        """Grant `name`, or grant it again with `ttl`; why not, if refused."""
        lease = self._leases.get(name)
        if lease is None:
            if len(self._leases) >= self.capacity:
                return f"too many leases: the cluster holds {self.capacity}, its limit"
            self._leases[name] = Lease(ttl, position)
        else:
            lease.ttl, lease.renewed_at = ttl, position
        self._clock(name, now, 0.0)
        return None

    def renew(self, name: str, position: int, now: float) -> int | None:
        """Keep `name` alive from `position`: its TTL, or None if it is unknown or ended."""
        lease = self._leases.get(name)
        if lease is None:
            return None
        lease.renewed_at = position
        self._clock(name, now, 0.0)
        return lease.ttl

    def revoke(self, name: str) -> tuple[str, ...] | None:
        """End `name`: its keys, to delete at this position; None if it is unknown or ended."""
        lease = self._leases.pop(name, None)
        if lease is None:
            return None
        self._applied.pop(name, None)
        for key in lease.keys:
            del self._of_key[key]
        return tuple(sorted(lease.keys))  # every replica deletes them in the same order

    def expire(self, message: Expiracao) -> tuple[str, ...] | None:
        """An `expiracao`: the lease's keys if it ends here, None if it was renewed since (or
        has ended already, or was granted anew)."""
        lease = self._leases.get(message.concessao)
        if lease is None or lease.renewed_at != message.renovadaem:
            return None
        return self.revoke(message.concessao)

    def attach(self, key: str, name: str | None) -> bool:
        """`key` was written under lease `name` (live: `is_live` said so), or under none;
        whether that changed its lease."""
        old = self._of_key.get(key)
        if old == name:
            return False
        if old is not None:
            self._leases[old].keys.discard(key)
            del self._of_key[key]
        if name is not None:
            self._leases[name].keys.add(key)
            self._of_key[key] = name
        return True

    def is_live(self, name: str) -> bool:
        return name in self._leases

    def lease_of(self, key: str) -> str | None:
        return self._of_key.get(key)

    def ttl(self, name: str) -> int | None:
        lease = self._leases.get(name)
        return None if lease is None else lease.ttl

    def __len__(self) -> int:
        return len(self._leases)

    def __bool__(self) -> bool:
        return bool(self._leases)

    # --- the keeper's clock ---------------------------------------------------------------

    def _clock(self, name: str, now: float, age: float) -> None:
        applied = now - age
        self._applied[name] = applied
        lease = self._leases[name]
        heapq.heappush(self._due, (applied + lease.ttl, name, lease.renewed_at))

    def due(
        self, now: float, keeps: Callable[[str], bool], replica_id: int, retry: float
    ) -> list[Expiracao]:
        """The `expiracao`s this replica publishes now: for each lease it keeps whose TTL has
        passed on its clock. One not yet applied (lost with a broker, say) is said again after
        `retry` s; a lease kept by another replica is looked at again then too, in case this
        replica becomes its keeper."""
        if self._unclocked:
            self._unclocked = False
            for name in self._leases:
                self._clock(name, now, 0.0)
        said = []
        heap = self._due
        while heap and heap[0][0] <= now:
            _, name, renewed_at = heapq.heappop(heap)
            lease = self._leases.get(name)
            if lease is None or lease.renewed_at != renewed_at:
                continue  # renewed since (a later entry stands for it) or ended
            if keeps(name):
                said.append(Expiracao(concessao=name, renovadaem=renewed_at, idserv=replica_id))
            heapq.heappush(heap, (now + retry, name, renewed_at))
        return said

    # --- as a whole: transfers and the disk ------------------------------------------------

    def records(self, now: float) -> Iterator[LeaseRecord]:
        for name in self._leases:
            found = self.record(name, now)
            assert found is not None
            yield found

    def record(self, name: str, now: float) -> LeaseRecord | None:
        lease = self._leases.get(name)
        if lease is None:
            return None
        age = max(0.0, now - self._applied.get(name, now))
        return LeaseRecord(name, lease.ttl, lease.renewed_at, age, sorted(lease.keys))

    def load(self, records: Iterable[LeaseRecord], now: float | None) -> None:
        """Replace every lease with `records` (a join: their ages count on from `now`; a start
        from disk, `now` None: each TTL counts again from the first `due`, §18)."""
        self._leases, self._of_key, self._applied, self._due = {}, {}, {}, []
        for name, ttl, renewed_at, age, keys in records:
            self._leases[name] = Lease(ttl, renewed_at, set(keys))
            for key in keys:
                self._of_key[key] = name
            if now is not None:
                self._clock(name, now, age)
        self._unclocked = now is None

    def page(self, after: str | None, limit: int) -> tuple[list[LeaseSummary], bool]:
        """Up to `limit` leases in name order after `after`, and whether more follow."""
        names = sorted(n for n in self._leases if after is None or n > after)
        found = [
            LeaseSummary(concessao=n, ttl=x.ttl, chaves=len(x.keys), renovadaem=x.renewed_at)
            for n in names[:limit]
            for x in (self._leases[n],)
        ]
        return found, len(names) > limit

    def agreed(self) -> dict[str, tuple[int, int, frozenset[str]]]:
        """What every replica must hold alike (the tests compare it)."""
        return {n: (x.ttl, x.renewed_at, frozenset(x.keys)) for n, x in self._leases.items()}


class LeaseOutcome(NamedTuple):
    status: Literal["ok", "erro"]
    #: The lease's TTL after a grant or keep-alive; None after a revoke or a refusal.
    ttl: int | None = None
    problem: str | None = None
    #: The keys the lease took with it, deleted at this position.
    ended: tuple[str, ...] = ()


def apply_lease(leases: Leases, message: LeaseOp, position: int, now: float) -> LeaseOutcome:
    """A grant, keep-alive or revoke judged at `position`: every replica decides alike."""
    name = message.concessao
    if isinstance(message, Concessao):
        problem = leases.grant(name, message.ttl, position, now)
        if problem is not None:
            return LeaseOutcome("erro", problem=problem)
        return LeaseOutcome("ok", ttl=message.ttl)
    if isinstance(message, Renovacao):
        ttl = leases.renew(name, position, now)
        return LeaseOutcome("ok", ttl=ttl) if ttl is not None else _ended(name)
    ended = leases.revoke(name)
    return LeaseOutcome("ok", ended=ended) if ended is not None else _ended(name)


def _ended(name: str) -> LeaseOutcome:
    return LeaseOutcome("erro", problem=f"lease {name[:80]!r} is unknown or has ended")


def lease_outcome_logged(outcome: LeaseOutcome) -> str | None:
    """What the request log keeps of an outcome (its `value`): the TTL or the problem."""
    return outcome.problem if outcome.status == "erro" else _ttl_text(outcome.ttl)


def _ttl_text(ttl: int | None) -> str | None:
    return None if ttl is None else str(ttl)


def logged_lease_outcome(status: str, value: str | None) -> LeaseOutcome:
    """The outcome a logged lease request had, for its retry or a substitute's replay."""
    if status == "erro":
        return LeaseOutcome("erro", problem=value)
    return LeaseOutcome("ok", ttl=None if value is None else int(value))


def earlier_lease(
    log: RequestLog, leases: Leases, message: LeaseOp
) -> tuple[LeaseOutcome, int | None]:
    """What an already applied lease request was answered, and at which position, for its
    retry: from the log while it holds it, else the lease as it is now."""
    logged = log.find(message.topico_resp, message.idpedido)
    if logged is not None and logged.kind == "l":
        return logged_lease_outcome(logged.status, logged.value), logged.revision
    ttl = leases.ttl(message.concessao)
    if isinstance(message, Revogacao) or ttl is not None:
        return LeaseOutcome("ok", ttl=ttl), None
    return _ended(message.concessao), None
