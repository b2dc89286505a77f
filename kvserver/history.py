"""What a replica remembers of past requests: the request log (for replay by a substitute,
protocol §6) and the de-duplication set (protocol §5)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from kvwire.messages import LoggedRequest, SeenEntry


class RequestLog:
    """Requests with their local arrival time, forgotten after `ttl` seconds.

    One is appended per request on the hot path, and each stays `ttl` seconds: 60,000 at
    6,000 requests a second. They are held as plain tuples and handed out as `LoggedRequest`:
    the collector stops tracking a tuple of strings and numbers once it has seen it, never a
    NamedTuple, whose every instance it would otherwise walk in each collection (issue 16).
    """

    __slots__ = ("_entries", "ttl")

    def __init__(self, ttl: float, entries: Iterable[LoggedRequest] = ()) -> None:
        self.ttl = ttl
        self._entries: deque[tuple[Any, ...]] = deque(tuple(entry) for entry in entries)

    def append(self, entry: LoggedRequest) -> None:
        self._entries.append(tuple(entry))

    def append_read(self, at: float, key: str, reply_to: str, request_id: int | str) -> None:
        """`append(LoggedRequest(at, "c", key, reply_to, request_id, None))`, without the
        LoggedRequest: half the requests are reads."""
        self._entries.append((at, "c", key, reply_to, request_id, None, "ok", None))

    def expire(self, now: float) -> None:
        horizon = now - self.ttl
        entries = self._entries
        while entries and entries[0][_AT] < horizon:
            entries.popleft()

    def since(self, when: float) -> Iterator[LoggedRequest]:
        # Entries are appended in arrival order; walk back from the newest end.
        entries = self._entries
        start = len(entries)
        while start > 0 and entries[start - 1][_AT] >= when:
            start -= 1
        for index in range(start, len(entries)):
            yield LoggedRequest._make(entries[index])

    def written_keys(self) -> set[str]:
        """Every key a logged write touched (a lease's request names a lease, not a key; a
        transaction's names the keys it wrote in its results, with their revisions)."""
        keys = set()
        for entry in self._entries:
            kind = entry[_KIND]
            if kind in "ir":
                keys.add(entry[_KEY])
            elif kind == "t" and entry[_VALUE]:
                said = json.loads(entry[_VALUE])
                keys.update(r["chave"] for r in said.get("resultados", ()) if "chave" in r)
        return keys

    def find(self, reply_to: str, request_id: int | str) -> LoggedRequest | None:
        """The newest entry of this request; a scan, for the rare retry of a write."""
        for entry in reversed(self._entries):
            if entry[_REQUEST_ID] == request_id and entry[_REPLY_TO] == reply_to:
                return LoggedRequest._make(entry)
        return None

    def snapshot(self) -> list[LoggedRequest]:
        return [LoggedRequest._make(entry) for entry in self._entries]

    def __len__(self) -> int:
        return len(self._entries)


#: Where a `LoggedRequest`'s fields are in the log's tuples.
_AT, _KIND, _KEY, _REPLY_TO, _REQUEST_ID, _VALUE = range(6)


class SeenSet:
    """The last `capacity` applied writes, by (topico-resp, idpedido).

    Bounded by count, not by time, so that every replica that applied the same stream holds
    the same set and decides a redelivered write the same way. Membership in a dict, arrival
    order in a deque: evicting the oldest key of the dict itself (`next(iter(d))`) scans past
    every key deleted before it, which made each write cost 20-100 us once the set was full,
    and an OrderedDict costs 10 MiB more at 200k entries.
    """

    __slots__ = ("_keys", "_order", "capacity")

    def __init__(self, capacity: int, entries: Iterable[SeenEntry] = ()) -> None:
        self.capacity = capacity
        self._keys: dict[SeenEntry, None] = {}
        self._order: deque[SeenEntry] = deque()
        for entry in entries:
            self.add(entry)

    def add(self, entry: SeenEntry) -> bool:
        """Remember a write; False if it was already remembered (it keeps its place)."""
        keys = self._keys
        if entry in keys:
            return False
        keys[entry] = None
        self._order.append(entry)
        if len(keys) > self.capacity:
            del keys[self._order.popleft()]
        return True

    def __contains__(self, entry: SeenEntry) -> bool:
        return entry in self._keys

    def snapshot(self) -> list[SeenEntry]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._keys)


class RedeliveryFilter:
    """Drops a QoS 1 message the broker sends again after a reconnect (DUP set) when this
    process already applied it, so that it is not counted twice in the stream position."""

    def __init__(self, size: int = 512) -> None:
        self._recent: deque[int] = deque(maxlen=size)
        self._counts: dict[int, int] = {}

    def is_repeat(self, payload: bytes | bytearray, dup: bool) -> bool:
        fingerprint = hash(payload if isinstance(payload, bytes) else bytes(payload))
        if dup and self._counts.get(fingerprint):
            return True
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._recent.append(fingerprint)
        self._counts[fingerprint] = self._counts.get(fingerprint, 0) + 1
        return False
