"""The view: which replicas are live, in which incarnation, and so who answers for each slot
of the ring (protocol §4, §6). Every replica changes its view at the same stream positions
(`falhaserv`, `novoserv`), so all of them agree on every key's owner."""

from __future__ import annotations

from kvwire.ring import key_slot, owners_by_slot, successor


class View:
    __slots__ = ("_owners", "incarnations", "live", "n", "own_id", "since")

    def __init__(
        self,
        own_id: int,
        live: list[bool],
        incarnations: list[str | None],
        since: list[str | None] | None = None,
    ) -> None:
        self.own_id = own_id
        self.n = len(live)
        self.live = live
        self.incarnations = incarnations
        #: For each live replica, the `novoserv` (its sync topic) from which the view has
        #: counted it in without a break; None where not known (a new cluster, a restart).
        self.since: list[str | None] = since if since is not None else [None] * self.n
        #: The owner of each slot, computed once per change: finding a key's owner on the hot
        #: path is one sum and one lookup.
        self._owners = owners_by_slot(live)

    @classmethod
    def everyone(cls, own_id: int, n: int) -> View:
        """A new cluster's view: every replica presumed live, incarnations not known yet."""
        return cls(own_id, [True] * n, [None] * n)

    @classmethod
    def alone(cls, own_id: int, n: int, incarnation: str) -> View:
        """Resuming without anyone (§11): the others re-join from us."""
        return cls(
            own_id,
            [i == own_id for i in range(n)],
            [incarnation if i == own_id else None for i in range(n)],
        )

    def owns(self, key: str) -> bool:
        return self._owners[key_slot(key, self.n)] == self.own_id

    def owns_slot(self, slot: int) -> bool:
        return self._owners[slot] == self.own_id

    def is_stale(self, replica: int, incarnation: str | None) -> bool:
        """A message about an incarnation of `replica` older than the one we know."""
        known = self.incarnations[replica]
        return incarnation is not None and known is not None and incarnation != known

    def fail(self, replica: int) -> list[int | None] | None:
        """Take `replica` out; the owners before, or None if it was out already."""
        if not self.live[replica]:
            return None
        previous = self._owners
        self.live[replica] = False
        self._owners = owners_by_slot(self.live)
        return previous

    def add(self, replica: int, incarnation: str | None, announced_on: str) -> None:
        """Count `replica` in as `incarnation`, announced by a `novoserv` on `announced_on`. A
        joiner that asks again (protocol §7) is in already: it keeps the `novoserv` it has been
        counted in since, from which its keys were left to it."""
        known = self.incarnations[replica]
        again = self.live[replica] and known is not None and known == incarnation
        if not again:
            self.since[replica] = announced_on
        self.live[replica] = True
        self.incarnations[replica] = incarnation
        self._owners = owners_by_slot(self.live)

    def successor_of(self, replica: int) -> int | None:
        return successor(self.live, replica)

    def substituting(self) -> list[int]:
        """The ids this replica answers for besides its own."""
        return [s for s in range(self.n) if s != self.own_id and self._owners[s] == self.own_id]
