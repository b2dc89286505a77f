"""Quotas (issue 29): `--max-keys` and `--max-bytes`, the same on every replica, like
`--mirror`. A put, or a transaction's branch, that would take the store past either is refused
at its position with `cota`, and nothing of it is written.

Every replica holds the same store at a position, so each judges a write alike: the refusal
is an outcome like a compare-and-set's `conflito`, de-duplicated and logged with it, and a
retry or a substitute's replay answers `cota` again. What only shrinks the store or leaves it
no larger (a delete, a read, an overwrite no longer than before) is never refused: a full
cluster can always be emptied. Bytes are a key's and its value's UTF-8 bytes
(`kvserver.store.entry_bytes`); revisions and the process's own overhead are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvserver.store import Store, entry_bytes, utf8_len


@dataclass(frozen=True)
class Quota:
    #: None: no limit.
    keys: int | None = None
    bytes: int | None = None

    def __bool__(self) -> bool:
        return self.keys is not None or self.bytes is not None

    def refuses(self, store: Store, writes: Iterable[tuple[str, str | None]]) -> str | None:
        """Why these writes, applied in order (a value, or None for a delete), would take the
        store past the quota; None if they may be applied."""
        count = len(store)
        sized = self.bytes is not None  # else a key's presence is all that counts
        size = store.nbytes() if sized else 0
        seen: dict[str, int | None] = {}  # each key's bytes after the writes so far; None: absent
        for key, value in writes:
            if key in seen:
                before = seen[key]
            else:
                packed = store.packed(key)
                before = None if packed is None else entry_bytes(key, packed) if sized else 0
            after = None if value is None else utf8_len(key) + utf8_len(value) if sized else 0
            count += (after is not None) - (before is not None)
            size += (after or 0) - (before or 0)
            seen[key] = after
        if self.keys is not None and count > self.keys and count > len(store):
            return f"the cluster's quota of {self.keys} keys is full (--max-keys)"
        if self.bytes is not None and size > self.bytes and size > store.nbytes():
            return (
                f"the cluster's quota of {self.bytes} bytes would be passed: {size} bytes of "
                "keys and values (--max-bytes)"
            )
        return None

    def start_problem(self, store: Store) -> str | None:
        """Why a replica may not start with this quota over the data it holds: a quota is
        never passed, so one already passed would refuse every write until deletes, and
        would mean the replicas were started with different quotas."""
        if self.keys is not None and len(store) > self.keys:
            return (
                f"--max-keys {self.keys} is smaller than the {len(store)} keys held: start with "
                "a larger quota, or without one and delete keys first"
            )
        if self.bytes is not None and store.nbytes() > self.bytes:
            return (
                f"--max-bytes {self.bytes} is smaller than the {store.nbytes()} bytes held: "
                "start with a larger quota, or without one and delete keys first"
            )
        return None
