"""The change feed (protocol §19) as rules every replica applies alike: the history of changes,
the watches, and the events a watch's owner sends.

Every replica keeps the same watches, registered in stream order, and numbers each watch's
events the same way: an event's `anterior` is the revision of the change matched before it
(or the watch's `desde`), a fact of the stream, not of who sent what. So any replica can send
a watch's next event, and a client that missed one sees the gap whoever sent it: after a
failover, the successor sends again what the dead owner may not have (as §6 replays answers),
and a quiet watch gets a `progresso` every few seconds, so even a lost last event shows.

The history is bounded by count (the same on every replica) and by age (each replica's own
clock); which changes it still holds is this replica's business: it decides whether a `vigia`
starts too far back (`compacted`), never whether the watch exists.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from kvserver.durable import Change, FeedSaved, WatchId, unpacked
from kvserver.effects import Publish
from kvserver.store import pack, value_of
from kvserver.transfer import FeedCopy
from kvwire.feed import (
    MAX_WATCHES,
    MAX_WATCHES_PER_TOPIC,
    ChangeKind,
    ChangeRecord,
    EventKind,
    Evento,
    Mudanca,
    Vigia,
    WatchRecord,
)

#: A watch with no event for this long gets a `progresso` (more watches: less often).
PROGRESS_EVERY_S = 2.0
_PROGRESS_PER_S = 500
#: The most changes in one event of a watch's history.
_EVENT_CHANGES = 1000


class History:
    """The last changes applied, oldest first, at most `limit` of them and none older than
    `max_age` seconds. `compacted` is the oldest `desde` that can still be served: every
    change after it is here (0 while nothing has been dropped)."""

    __slots__ = ("_changes", "compacted", "limit", "max_age")

    def __init__(self, limit: int, max_age: float) -> None:
        self.limit, self.max_age = limit, max_age
        self._changes: deque[Change] = deque()
        self.compacted = 0

    def record(self, change: Change) -> None:
        changes = self._changes
        changes.append(change)
        if len(changes) > self.limit:
            self.compacted = changes.popleft()[0]

    def expire(self, now: float) -> None:
        changes, horizon = self._changes, now - self.max_age
        while changes and changes[0][4] < horizon:
            self.compacted = changes.popleft()[0]

    def newest_first(self, after: int) -> Iterator[Change]:
        """The changes after revision `after`, newest first."""
        for change in reversed(self._changes):
            if change[0] <= after:
                return
            yield change

    def matching(self, prefix: str, after: int) -> list[Change]:
        """The changes of keys starting with `prefix` after revision `after`, oldest first."""
        found = [c for c in self.newest_first(after) if c[1].startswith(prefix)]
        found.reverse()
        return found

    def last_matching(self, prefix: str, after: int) -> int:
        """The revision of the newest change of a key starting with `prefix` after `after`;
        0 if there is none."""
        return next((c[0] for c in self.newest_first(after) if c[1].startswith(prefix)), 0)

    def of_key(self, key: str, limit: int) -> tuple[list[Change], bool]:
        """The key's newest `limit` changes, oldest first (unpacked), and whether older ones
        are kept."""
        found: list[Change] = []
        for change in reversed(self._changes):
            if change[1] == key:
                if len(found) == limit:
                    return [unpacked(c) for c in reversed(found)], True
                found.append(change)
        return [unpacked(c) for c in reversed(found)], False

    def all(self) -> list[Change]:
        """Every change kept, unpacked."""
        return [unpacked(c) for c in self._changes]

    def records(self, now: float) -> list[ChangeRecord]:
        return [
            ChangeRecord(r, k, t, _value(v), max(0.0, now - at)) for r, k, t, v, at in self._changes
        ]

    def load(self, records: Iterable[ChangeRecord], compacted: int, now: float | None) -> None:
        """Replace the history (a join: ages count on from `now`; from disk, `now` None: each
        record's `age` is its wall-clock time)."""
        self._changes = deque(
            (r, k, t, None if v is None else pack(v, r), at if now is None else now - at)
            for r, k, t, v, at in records
        )  # packed, as `Feed.changed` keeps them
        self.compacted = compacted  # the sender's (or the disk's) word: all after it is here
        while len(self._changes) > self.limit:  # started with a smaller --history
            self.compacted = self._changes.popleft()[0]

    def __len__(self) -> int:
        return len(self._changes)


@dataclass(slots=True)
class Watch:
    topic: str
    rid: int | str
    prefix: str
    lease: str
    #: Changes after this revision are the watch's.
    since: int
    registered_at: int
    #: The last matching change up to its registration (0: none after `since`); the group's
    #: `last` takes over once a change matches after that.
    last: int
    #: The owner's: no event was sent to it since the last round of progress notes.
    quiet: bool = True

    @property
    def id(self) -> WatchId:
        return self.topic, self.rid

    def record(self, group_last: int) -> WatchRecord:
        last = max(self.last, group_last)
        return WatchRecord(
            self.topic, self.rid, self.prefix, self.lease, self.since, self.registered_at, last
        )


@dataclass(slots=True)
class _Group:
    """The watches of one prefix, and the last change that matched it since the group began
    (0: none yet), so that a write costs one prefix test per group, not per watch."""

    last: int = 0
    watches: dict[WatchId, Watch] = field(default_factory=dict)


@dataclass(frozen=True)
class Registered:
    """What a `vigia` came to: `problem` (every replica refuses it alike), or the watch, and
    whether it was registered before (a retry: its owner answers and sends again)."""

    watch: Watch | None = None
    again: bool = False
    problem: str | None = None


class Feed:
    """Every watch of the cluster, the history, and the events a replica sends as owner."""

    def __init__(self, history_limit: int, history_age: float, *, durable: bool = False) -> None:
        self.history = History(history_limit, history_age)
        self._watches: dict[WatchId, Watch] = {}
        self._groups: dict[str, _Group] = {}
        #: How many groups have a prefix of each length: a key is tested for those only.
        self._lengths: Counter[int] = Counter()
        self._by_lease: dict[str, set[WatchId]] = {}
        self._per_topic: Counter[str] = Counter()
        #: The changes applied at the current position that a watch may want (`matched`).
        self.pending: list[Change] = []
        self._progress_at = 0.0
        #: The owner's: each watch's changes not yet sent, and the `anterior` of the first.
        self.unsent: dict[WatchId, tuple[Watch, int, list[Change]]] = {}
        #: With a data directory: what to write next (`unsaved`).
        self._durable = durable
        self._new_changes: list[Change] = []
        self._moved_watches: dict[WatchId, WatchRecord | None] = {}

    # --- the stream -----------------------------------------------------------------------

    def changed(
        self, revision: int, key: str, kind: ChangeKind, packed: str | None, at: float
    ) -> None:
        """A change applied at `revision`, its value as the store packs it (the store's own
        string, shared); `matched` then turns the position's changes into events, if any watch
        may want them (`pending`). Every write comes here: inlined."""
        change = (revision, key, kind, packed, at)
        history = self.history
        kept = history._changes
        kept.append(change)
        if len(kept) > history.limit:
            history.compacted = kept.popleft()[0]
        if self._durable:
            self._new_changes.append(change)
        if self._groups:
            self.pending.append(change)

    def matched(self, owns: Callable[[str], bool]) -> None:
        """Match the changes applied at this position against the watches: every replica
        moves each matched group's `last` on alike, and the owner keeps the changes for its
        watches' next event (`flush`)."""
        pending, self.pending = self.pending, []
        if not pending:  # (a lease that ends without keys)
            return
        revision = pending[0][0]
        matched: dict[str, list[Change]] = {}
        for change in pending:
            for prefix in self._prefixes_of(change[1]):
                matched.setdefault(prefix, []).append(change)
        unsent = self.unsent
        for prefix, changes in matched.items():
            group = self._groups[prefix]
            for wid, watch in group.watches.items():
                # (A watch may start from a revision still to come: the changes after it.)
                if revision > watch.since and owns(watch.topic):
                    waiting = unsent.get(wid)
                    if waiting is None:
                        anterior = max(watch.since, watch.last, group.last)
                        unsent[wid] = (watch, anterior, list(changes))
                    else:
                        waiting[2].extend(changes)
            group.last = revision

    def flush(self, replica_id: int) -> list[Publish]:
        """One event for each watch with changes matched since the last flush: every change
        of the watch from its `anterior` through the last one, so a batch of the stream costs
        a watch one message, not one per change."""
        unsent, self.unsent = self.unsent, {}
        made: dict[int, Mudanca] = {}  # the watches of one prefix share their changes
        return [
            _event(w, before, changes, replica_id, made) for w, before, changes in unsent.values()
        ]

    def _prefixes_of(self, key: str) -> Iterator[str]:
        groups = self._groups
        if len(groups) <= len(self._lengths):
            yield from (p for p in groups if key.startswith(p))
            return
        for length in self._lengths:
            if length <= len(key) and key[:length] in groups:
                yield key[:length]

    def register(self, message: Vigia, position: int, problem: str | None) -> Registered:
        """A `vigia` applied at `position`; `problem`: why the replica refuses it (its lease
        or its topic), judged alike by every replica."""
        wid = (message.topico_resp, message.idpedido)
        found = self._watches.get(wid)
        if found is not None:
            return Registered(found, again=True)
        if problem is None:
            problem = self._limit_problem(message.topico_resp)
        if problem is not None:
            return Registered(problem=problem)
        since = position if message.desde is None else message.desde
        last = self.history.last_matching(message.prefixo, since) if since < position else 0
        watch = Watch(
            message.topico_resp, message.idpedido, message.prefixo, message.concessao, since,
            position, last,
        )  # fmt: skip
        self._add(watch)
        return Registered(watch)

    def _limit_problem(self, topic: str) -> str | None:
        if len(self._watches) >= MAX_WATCHES:
            return f"too many watches: the cluster holds {MAX_WATCHES}, its limit"
        if self._per_topic[topic] >= MAX_WATCHES_PER_TOPIC:
            return (
                f"too many watches on this response topic: {MAX_WATCHES_PER_TOPIC}, the limit "
                "for one topico-resp"
            )
        return None

    def _add(self, watch: Watch) -> None:
        wid = watch.id
        self._watches[wid] = watch
        group = self._groups.get(watch.prefix)
        if group is None:
            group = self._groups[watch.prefix] = _Group()
            self._lengths[len(watch.prefix)] += 1
        group.watches[wid] = watch
        self._by_lease.setdefault(watch.lease, set()).add(wid)
        self._per_topic[watch.topic] += 1
        if self._durable:
            self._moved_watches[wid] = watch.record(0)

    def _remove(self, wid: WatchId) -> Watch | None:
        watch = self._watches.pop(wid, None)
        if watch is None:
            return None
        group = self._groups[watch.prefix]
        watch.last = max(watch.last, group.last)  # for its `fim`
        del group.watches[wid]
        if not group.watches:
            del self._groups[watch.prefix]
            self._lengths[len(watch.prefix)] -= 1
            if not self._lengths[len(watch.prefix)]:
                del self._lengths[len(watch.prefix)]
        leased = self._by_lease[watch.lease]
        leased.discard(wid)
        if not leased:
            del self._by_lease[watch.lease]
        self._per_topic[watch.topic] -= 1
        if not self._per_topic[watch.topic]:
            del self._per_topic[watch.topic]
        if self._durable:
            self._moved_watches[wid] = None
        return watch

    def cancel(self, topic: str, rid: int | str) -> Watch | None:
        """A `fimvigia`: the watch it ended, or None if there was none."""
        return self._remove((topic, rid))

    def lease_ended(self, name: str) -> list[Watch]:
        """The watches that end with the lease `name`, removed."""
        ended = [self._remove(wid) for wid in sorted(self._by_lease.get(name, ()), key=str)]
        return [watch for watch in ended if watch is not None]

    # --- what an owner sends --------------------------------------------------------------

    def backlog(
        self, watch: Watch, replica_id: int, *, since_time: float | None = None
    ) -> list[Publish]:
        """The watch's events from the history: every matching change after its `desde` up to
        now, or (`since_time`, a takeover) those applied since that time on this clock."""
        said = self.flush(replica_id)  # what was matched before goes first
        changes = self.history.matching(watch.prefix, watch.since)
        anterior, start = watch.since, 0
        if since_time is not None:  # from the first change applied since then
            while start < len(changes) and changes[start][4] < since_time:
                anterior, start = changes[start][0], start + 1
        while start < len(changes):
            end = min(start + _EVENT_CHANGES, len(changes))
            while end < len(changes) and changes[end][0] == changes[end - 1][0]:
                end += 1  # a revision is never split across events
            said.append(_event(watch, anterior, changes[start:end], replica_id))
            anterior, start = changes[end - 1][0], end
        return said

    def matched_since(self, watch: Watch) -> int:
        """The revision of the last change the watch matched (its `desde` if none)."""
        return max(watch.since, watch.last, self._groups[watch.prefix].last)

    def ended(self, watch: Watch, position: int, replica_id: int) -> list[Publish]:
        """The `fim` event of a watch removed at `position`, after what was matched before."""
        said = self.flush(replica_id)
        said.append(_note(watch, "fim", position, max(watch.since, watch.last), replica_id))
        return said

    def progress(
        self, now: float, position: int, owns: Callable[[str], bool], replica_id: int
    ) -> list[Publish]:
        """A `progresso` for each watch this replica owns that had no event since the last
        round: nothing matched from its last change through `position`."""
        if now < self._progress_at or not self._watches:
            return []
        owned = [w for w in self._watches.values() if owns(w.topic)]
        self._progress_at = now + max(PROGRESS_EVERY_S, len(owned) / _PROGRESS_PER_S)
        said = self.flush(replica_id)  # a note says nothing matched since: it goes after
        for watch in owned:
            if watch.quiet:
                last = self.matched_since(watch)
                said.append(_note(watch, "progresso", position, last, replica_id))
            watch.quiet = True
        return said

    def watches_of(self, owns: Callable[[str], bool]) -> list[Watch]:
        return [w for w in self._watches.values() if owns(w.topic)]

    # --- as a whole: transfers and the disk ------------------------------------------------

    def records(self) -> list[WatchRecord]:
        return [w.record(self._groups[w.prefix].last) for w in self._watches.values()]

    def load(
        self,
        watches: Iterable[WatchRecord],
        history: Iterable[ChangeRecord],
        compacted: int,
        now: float | None,
    ) -> None:
        """Replace the watches and the history (a join's, or from disk with `now` None, where
        each watch's last match is found again in the history)."""
        self.history.load(history, compacted, now)
        self._watches, self._groups, self._lengths = {}, {}, Counter()
        self._by_lease, self._per_topic, self.pending = {}, Counter(), []
        self.unsent = {}
        for topic, rid, prefix, lease, since, registered_at, sent_last in watches:
            last = self.history.last_matching(prefix, since) if now is None else sent_last
            self._add(Watch(topic, rid, prefix, lease, since, registered_at, last))
        self._moved_watches = {}

    def saved(self, everything: bool) -> FeedSaved:
        """What changed since the last call (or all of it), for the data directory."""
        history, watches = [unpacked(c) for c in self._new_changes], self._moved_watches
        self._new_changes, self._moved_watches = [], {}
        if everything:
            history = self.history.all()
            watches = {(x.topic, x.rid): x for x in self.records()}
        return FeedSaved(history, watches, self.history.compacted)

    def copy(self, now: float) -> FeedCopy:
        """The feed for a joiner, as of now."""
        return FeedCopy(self.records(), self.history.records(now), self.history.compacted)

    def agreed(self) -> dict[WatchId, tuple[str, str, int, int]]:
        """What every replica must hold alike (the tests compare it): each watch and the
        revision its next event names as `anterior`."""
        return {
            wid: (w.prefix, w.lease, w.registered_at, self.matched_since(w))
            for wid, w in self._watches.items()
        }

    def __len__(self) -> int:
        return len(self._watches)


def _event(
    watch: Watch,
    anterior: int,
    changes: list[Change],
    replica_id: int,
    made: dict[int, Mudanca] | None = None,
) -> Publish:
    """The watch's changes after `anterior` through the last of `changes`: one change in the
    event's own fields, several in `mudancas`, each with its revision."""
    watch.quiet = False
    revision, key, kind, value, _ = changes[-1]
    if len(changes) == 1:
        message = Evento(
            idpedido=watch.rid, revisao=revision, anterior=anterior, tipo=kind, chave=key,
            valor=_value(value), idserv=replica_id,
        )  # fmt: skip
    else:
        made = {} if made is None else made
        mudancas = [made.get(id(c)) or _mudanca(c, made) for c in changes]
        message = Evento(
            idpedido=watch.rid, revisao=revision, anterior=anterior, tipo=kind,
            mudancas=mudancas, idserv=replica_id,
        )  # fmt: skip
    return Publish(watch.topic, message, qos=0)


def _mudanca(change: Change, made: dict[int, Mudanca]) -> Mudanca:
    r, k, t, v, _ = change
    found = made[id(change)] = Mudanca(chave=k, valor=_value(v), tipo=t, revisao=r)
    return found


def _value(packed: str | None) -> str | None:
    """A history value as a client sees it (`kvserver.store.pack` has the revision first)."""
    return None if packed is None else value_of(packed)


def _note(watch: Watch, kind: EventKind, position: int, anterior: int, replica_id: int) -> Publish:
    watch.quiet = False
    message = Evento(
        idpedido=watch.rid, revisao=position, anterior=anterior, tipo=kind, idserv=replica_id
    )
    return Publish(watch.topic, message, qos=0)
