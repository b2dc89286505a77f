"""The key-value store: each value with its revision (protocol §12), an order-independent
digest kept up to date on every write, and the keys in order for listing (§13).

Replicas that applied the same writes hold the same digest, whatever order their dicts were
filled in (a joiner loads chunks, the others applied requests one by one), so comparing two
16-hex-digit strings is enough to tell whether two replicas diverged. The revision is part of
what is hashed: two replicas that agree on a value but not on when it was written diverged.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from kvwire.digest import MASK, pack, pair_hash, sum_of

__all__ = ["MASK", "Entry", "Packed", "Store", "pack", "pair_hash", "sum_of", "unpack"]

#: A value and its revision: the stream position of the write that set it.
Entry = tuple[str, int]

#: How the store holds an entry: one string, the revision in decimal, NUL, then the value.
#: A tuple and a boxed int per key cost 88 bytes beside the value; this costs the revision's
#: digits and one byte (at 1M keys, ~80 MiB less: issue 28). Revisions have no NUL, so the
#: first one ends it whatever the value holds.
Packed = str


def unpack(packed: Packed) -> Entry:
    revision, _, value = packed.partition("\x00")
    return value, int(revision)


def value_of(packed: Packed) -> str:
    """The value alone, without parsing the revision."""
    return packed.partition("\x00")[2]


def utf8_len(text: str) -> int:
    # isascii() reads a flag of the string: most keys and values need no encoding to be sized.
    return len(text) if text.isascii() else len(text.encode())


def entry_bytes(key: str, packed: Packed) -> int:
    """What an entry counts against `--max-bytes`: its key's and its value's UTF-8 bytes."""
    return utf8_len(key) + utf8_len(packed) - packed.index("\x00") - 1


class Store:
    """Entries and their digest.

    A state transfer reads the store as it was at the cut while writes go on. Rather than a
    copy (40 MB at 1M keys, on top of the store), `freeze()` hands out the dict itself and
    later writes go to an overlay, and deletes of frozen keys to a set, until `thaw()` folds
    them in.
    """

    __slots__ = ("_base", "_bytes", "_count", "_data", "_deleted", "_sorted", "_sum")

    def __init__(self) -> None:
        self._data: dict[str, Packed] = {}
        #: While frozen: keys of the base deleted since.
        self._deleted: set[str] = set()
        self._sum = 0
        self._count = 0
        #: `entry_bytes` summed over every entry; None until first asked for (`nbytes`), and
        #: kept up to date only from then on: a store is sized only when a byte quota or the
        #: metrics want it (0.3 µs a write otherwise spent for nothing).
        self._bytes: int | None = None
        #: While frozen: the entries as of `freeze()`, not to be changed until `thaw()`.
        self._base: dict[str, Packed] | None = None
        #: Every key in order, for listing; None when a key was added or removed since.
        self._sorted: list[str] | None = None

    def packed(self, key: str) -> Packed | None:
        """The key's entry as the store holds it (`pack`), the string itself."""
        found = self._data.get(key)
        if found is None and self._base is not None and key not in self._deleted:
            return self._base.get(key)
        return found

    def entry(self, key: str) -> Entry | None:
        found = self.packed(key)
        return None if found is None else unpack(found)

    def get(self, key: str) -> str | None:
        found = self.packed(key)
        return None if found is None else value_of(found)

    def revision(self, key: str) -> int:
        """The key's revision; 0 when it has no value (what `serevisao: 0` asks for)."""
        found = self.packed(key)
        return 0 if found is None else int(found[: found.index("\x00")])

    def nbytes(self) -> int:
        """Keys' and values' UTF-8 bytes (`entry_bytes`), summed once and then kept."""
        if self._bytes is None:
            self._bytes = sum(entry_bytes(key, packed) for key, packed in self.packed_items())
        return self._bytes

    @property
    def known_bytes(self) -> int | None:
        """`nbytes` if it is summed already: what another thread may read without summing."""
        return self._bytes

    def put(self, key: str, value: str, revision: int) -> None:
        old = self.packed(key)
        size = self._bytes
        if old is not None:
            self._sum -= pair_hash(key, old)
            if size is not None:
                size -= entry_bytes(key, old)
        else:
            self._count += 1
            self._sorted = None
        packed = self._data[key] = pack(value, revision)
        self._sum = (self._sum + pair_hash(key, packed)) & MASK
        if size is not None:
            self._bytes = size + entry_bytes(key, packed)
        if self._deleted:
            self._deleted.discard(key)

    def delete(self, key: str) -> bool:
        """Remove the key; False if it had no value."""
        old = self.packed(key)
        if old is None:
            return False
        self._sum = (self._sum - pair_hash(key, old)) & MASK
        if self._bytes is not None:
            self._bytes -= entry_bytes(key, old)
        self._count -= 1
        self._sorted = None
        self._data.pop(key, None)
        if self._base is not None and key in self._base:
            self._deleted.add(key)
        return True

    def update(self, entries: Iterable[tuple[str, Entry]]) -> None:
        for key, (value, revision) in entries:
            self.put(key, value, revision)

    def load(self, entries: dict[str, Entry]) -> None:
        self.load_packed({key: pack(value, revision) for key, (value, revision) in entries.items()})

    def load_packed(self, entries: dict[str, Packed]) -> None:
        """Add packed entries in bulk (a state transfer): one tight loop, not a call each."""
        data = self._data
        if self._base is not None or not data.keys().isdisjoint(entries):
            self.update((key, unpack(packed)) for key, packed in entries.items())
            return
        data.update(entries)
        self._count += len(entries)
        self._bytes = None
        self._sorted = None
        self._sum_in(entries)

    def _sum_in(self, entries: dict[str, Packed]) -> None:
        self._sum = (self._sum + sum_of(entries.items())) & MASK

    def items(self) -> Iterator[tuple[str, Entry]]:
        """Every entry, as `entry` sees them."""
        return ((key, unpack(packed)) for key, packed in self.packed_items())

    def packed_items(self) -> Iterator[tuple[str, Packed]]:
        if self._base is None:
            return iter(self._data.items())
        merged = {**self._base, **self._data}
        for key in self._deleted:
            merged.pop(key, None)
        return iter(merged.items())

    def adopt(self, entries: dict[str, Packed], summed: int | None = None) -> None:
        """Load `entries` into an empty store, keeping the dict itself rather than a copy (a
        start-up from disk reads a million entries into a dict made for the purpose).
        `summed`: their `sum_of`, when it was worked out elsewhere (`kvserver.disk`)."""
        assert not self._data and self._base is None, "adopt into an empty store only"
        self._data = entries
        self._sum, self._count, self._sorted, self._bytes = 0, len(entries), None, None
        if summed is None:
            self._sum_in(entries)
        else:
            self._sum = summed & MASK

    def keys(self, prefix: str, after: str | None, limit: int) -> tuple[list[str], bool]:
        """Up to `limit` keys starting with `prefix`, in order, strictly after `after`, and
        whether more follow. Code point order is UTF-8 byte order, so `sorted` is enough; the
        order is kept between listings and rebuilt only after a key is added or removed."""
        if self._sorted is None:
            self._sorted = sorted(k for k, _ in self.packed_items())
        ordered = self._sorted
        start = bisect_left(ordered, prefix)
        if after is not None and after >= prefix:
            start = max(start, bisect_right(ordered, after))
        found = []
        for index in range(start, min(start + limit + 1, len(ordered))):
            key = ordered[index]
            if not key.startswith(prefix):
                break
            found.append(key)
        return found[:limit], len(found) > limit

    def digest(self) -> str:
        return f"{self._sum:016x}"

    def freeze(self) -> dict[str, Packed]:
        """Every entry as of now (packed: `unpack`), unchanged until `thaw()` is given it
        back."""
        if self._base is not None:
            return dict(self.packed_items())  # a second transfer at once: a copy
        self._base, self._data = self._data, {}
        return self._base

    def thaw(self, frozen: dict[str, Packed]) -> None:
        """The transfer that read `frozen` is over: fold the overlay back into it."""
        if frozen is not self._base:
            return  # a copy, or a store since replaced
        for key in self._deleted:
            frozen.pop(key, None)
        frozen.update(self._data)
        self._data, self._base, self._deleted = frozen, None, set()

    def __len__(self) -> int:
        return self._count
