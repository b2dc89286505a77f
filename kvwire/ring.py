"""Who owns a key: the assignment's hash, walked around the ring of live replicas."""

from __future__ import annotations

from collections.abc import Sequence


def key_slot(key: str, n: int) -> int:
    """The assignment's hash: the sum of the key's UTF-8 bytes, mod n."""
    return sum(key.encode()) % n


def owners_by_slot(live: Sequence[bool]) -> list[int | None]:
    """For each slot, the first live id at or after it in ring order (None if none is live).

    Computed once per view change so that finding a key's owner is one sum and one lookup.
    """
    n = len(live)
    table: list[int | None] = []
    for slot in range(n):
        owner = None
        for step in range(n):
            candidate = (slot + step) % n
            if live[candidate]:
                owner = candidate
                break
        table.append(owner)
    return table


def successor(live: Sequence[bool], replica_id: int) -> int | None:
    """The first live id after `replica_id` in ring order, never `replica_id` itself."""
    n = len(live)
    for step in range(1, n):
        candidate = (replica_id + step) % n
        if live[candidate]:
            return candidate
    return None
