"""The key-value store with an order-independent digest kept up to date on every write.

Replicas that applied the same writes hold the same digest, whatever order their dicts were
filled in (a joiner loads chunks, the others applied requests one by one), so comparing two
16-hex-digit strings is enough to tell whether two replicas diverged.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator
from hashlib import blake2b

_MASK = (1 << 64) - 1


def pair_digest(key: str, value: str) -> bytes:
    # Python's hash() is salted per process, so it cannot be compared across replicas.
    return blake2b(f"{key}\x00{value}".encode(), digest_size=8).digest()


def pair_hash(key: str, value: str) -> int:
    return int.from_bytes(pair_digest(key, value), "little")


class Store:
    """Pairs and their digest.

    A state transfer reads the store as it was at the cut while writes go on. Rather than a
    copy (40 MB at 1M keys, on top of the store), `freeze()` hands out the dict itself and
    later writes go to an overlay until `thaw()` folds them back in.
    """

    __slots__ = ("_added", "_base", "_data", "_sum")

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._sum = 0
        #: While frozen: the pairs as of `freeze()`, not to be changed until `thaw()`.
        self._base: dict[str, str] | None = None
        #: While frozen: keys in the overlay that the base does not hold.
        self._added = 0

    def get(self, key: str) -> str | None:
        value = self._data.get(key)
        if value is None and self._base is not None:
            return self._base.get(key)
        return value

    def put(self, key: str, value: str) -> None:
        old = self.get(key)
        if old is not None:
            self._sum -= pair_hash(key, old)
        elif self._base is not None:
            self._added += 1
        self._data[key] = value
        self._sum = (self._sum + pair_hash(key, value)) & _MASK

    def update(self, pairs: Iterable[tuple[str, str]]) -> None:
        for key, value in pairs:
            self.put(key, value)

    def load(self, pairs: dict[str, str]) -> None:
        """Add pairs in bulk (a state transfer): one tight loop, not a call per pair."""
        data = self._data
        if self._base is not None or not data.keys().isdisjoint(pairs):
            self.update(pairs.items())
            return
        data.update(pairs)
        self._sum_in(pairs)

    def _sum_in(self, pairs: dict[str, str]) -> None:
        # The digests side by side, read back as one array of 64-bit ints: a quarter less
        # time than int.from_bytes per pair, and a 1M-key join hashes every pair.
        words = array("Q", b"".join([pair_digest(k, v) for k, v in pairs.items()]))
        if sys.byteorder == "big":
            words.byteswap()
        self._sum = (self._sum + sum(words)) & _MASK

    def items(self) -> Iterator[tuple[str, str]]:
        """Every pair, as `get` sees them."""
        if self._base is None:
            return iter(self._data.items())
        return iter({**self._base, **self._data}.items())

    def adopt(self, pairs: dict[str, str]) -> None:
        """Load `pairs` into an empty store, keeping the dict itself rather than a copy (a
        start-up from disk reads a million pairs into a dict made for the purpose)."""
        assert not self._data and self._base is None, "adopt into an empty store only"
        self._data = pairs
        self._sum = 0
        self._sum_in(pairs)

    def digest(self) -> str:
        return f"{self._sum:016x}"

    def freeze(self) -> dict[str, str]:
        """Every pair as of now, unchanged until `thaw()` is given it back."""
        if self._base is not None:
            return {**self._base, **self._data}  # a second transfer at once: a copy
        self._base, self._data, self._added = self._data, {}, 0
        return self._base

    def thaw(self, frozen: dict[str, str]) -> None:
        """The transfer that read `frozen` is over: fold the overlay back into it."""
        if frozen is not self._base:
            return  # a copy, or a store since replaced
        frozen.update(self._data)
        self._data, self._base, self._added = frozen, None, 0

    def __len__(self) -> int:
        if self._base is not None:
            return len(self._base) + self._added
        return len(self._data)
