"""What a replica hands its adapter to make durable, and what it reads back (protocol §17).

Plain records, no I/O: the core (`kvserver.replica`) assembles a `Written` in `Replica.ready`,
the one place that knows its internals; `kvserver.disk` stores it and reads an `OnDisk` back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from kvserver.history import RequestLog, SeenSet
from kvserver.leases import Leases
from kvserver.store import Entry, Store, value_of
from kvserver.view import View
from kvwire.feed import ChangeKind, ChangeRecord, WatchRecord
from kvwire.leasing import LeaseRecord
from kvwire.messages import LoggedRequest, SeenEntry

#: One change as the feed's history holds it (protocol §19): (revision, key, kind, value, at),
#: `at` on the replica's clock. Plain tuples (indexed by number, which mypy types): the
#: collector stops tracking a tuple of strings and numbers, never a NamedTuple
#: (`kvserver.history`). Inside the feed the value is the store's own packed string
#: (`kvserver.store.pack`, shared: no second copy); what leaves it is unpacked (`unpacked`).
Change = tuple[int, str, ChangeKind, str | None, float]


def unpacked(change: Change) -> Change:
    """The change with its value as a client sees it, not packed."""
    r, k, t, v, at = change
    return (r, k, t, None if v is None else value_of(v), at)


#: A watch's identity: the `topico-resp` and `idpedido` of its `vigia`.
WatchId = tuple[str, int | str]


class FeedSaved(NamedTuple):
    """What the change feed has to write (`kvserver.feed.Feed.saved`): its changes applied
    since (with the whole state: all it keeps), the watches registered or ended since (None:
    ended; with the whole state: all of them), and the oldest `desde` the history serves."""

    history: list[Change]
    watches: dict[WatchId, WatchRecord | None]
    floor: int


@dataclass
class Changes:
    """What a replica applied since its state was last written.

    `everything` means the state was replaced as a whole (loaded from another replica), so
    the next write replaces everything on disk.
    """

    #: Each key written since, with its entry now; None: deleted.
    puts: dict[str, Entry | None] = field(default_factory=dict)
    #: Each write applied since (its de-duplication entry is its reply topic and id), with
    #: its outcome; `value` None unless the outcome needs it (not a plain put's own value).
    seen: list[LoggedRequest] = field(default_factory=list)
    #: Each lease granted, kept alive or ended since (§18), as it is now; None: ended.
    leases: dict[str, LeaseRecord | None] = field(default_factory=dict)
    #: Each key whose lease changed since: the lease it ends with now, or None.
    attached: dict[str, str | None] = field(default_factory=dict)
    everything: bool = False

    def __bool__(self) -> bool:
        return bool(self.puts or self.seen or self.leases or self.attached or self.everything)


@dataclass(frozen=True)
class OnDisk:
    """A replica's state as read back from its data directory."""

    position: int
    store: Store
    seen: SeenSet
    live: list[bool]
    incarnations: list[str | None]
    #: The outcomes of the writes applied since `since` (`load`), for the request log.
    outcomes: list[LoggedRequest] = field(default_factory=list)
    #: The leases with their keys (§18); their ages are 0: each TTL counts again.
    leases: list[LeaseRecord] = field(default_factory=list)
    #: The change feed (§19): the watches, the history (each record's `age` is the wall-clock
    #: time it was applied), and the oldest `desde` it serves.
    watches: list[WatchRecord] = field(default_factory=list)
    history: list[ChangeRecord] = field(default_factory=list)
    history_floor: int = 0


@dataclass(frozen=True)
class Written:
    """The replica's state at one position, as `Replica.ready` hands it over for
    `DataDir.write`."""

    position: int
    changes: Changes
    digest: str
    key_count: int
    live: list[bool]
    incarnations: list[str | None]
    seen_capacity: int
    #: The whole state, read only when `changes.everything`.
    pairs: Iterable[tuple[str, Entry]] = ()
    all_seen: list[SeenEntry] = field(default_factory=list)
    #: With the whole state: the outcomes the request log holds, by de-duplication entry.
    outcomes: dict[SeenEntry, LoggedRequest] = field(default_factory=dict)
    #: With the whole state: every lease, with its keys.
    leases: list[LeaseRecord] = field(default_factory=list)
    #: The feed's changes applied since (with the whole state: all it keeps), the watches
    #: registered or ended since (None: ended; with the whole state: all of them), how many
    #: changes to keep, and the oldest `desde` the history serves.
    history: list[Change] = field(default_factory=list)
    watches: dict[WatchId, WatchRecord | None] = field(default_factory=dict)
    history_limit: int = 0
    history_floor: int = 0


def written(
    position: int,
    changes: Changes,
    state: tuple[Store, View, SeenSet, RequestLog],
    leases: Leases,
    feed: FeedSaved,
    *,
    seen_capacity: int,
    history_limit: int,
) -> Written:
    """A replica's state at `position` for its adapter to write: the changes since the last
    one, or with `changes.everything` the whole state (the pairs read lazily, while the
    adapter writes them, before anything else is applied)."""
    store, view, seen, log = state
    whole = changes.everything
    return Written(
        position=position,
        changes=changes,
        digest=store.digest(),
        key_count=len(store),
        live=list(view.live),
        incarnations=list(view.incarnations),
        seen_capacity=seen_capacity,
        pairs=store.items() if whole else (),
        all_seen=seen.snapshot() if whole else [],
        # Read only with the whole state: the log holds ~60,000 requests under load.
        outcomes=_outcomes(log) if whole else {},
        leases=list(leases.records(0.0)) if whole else [],
        history=feed.history,
        watches=feed.watches,
        history_limit=history_limit,
        history_floor=feed.floor,
    )


def _outcomes(log: RequestLog) -> dict[SeenEntry, LoggedRequest]:
    """The outcomes of the writes the request log holds, by de-duplication entry."""
    return {(e.reply_to, e.request_id): e for e in log.snapshot() if not e.is_read}
