"""Joining a running cluster (protocol §7), or resuming without one (§11).

A `JoinAttempt` is one `novoserv` and what follows it: the stream is ignored until that
`novoserv` comes back (the cut), later messages are buffered, and the `estado` chunks of
exactly that cut are assembled. It never touches the replica: once everything is there,
`load()` hands back a `Loaded` state for the replica to install, and the buffer to apply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from kvserver.history import RequestLog, SeenSet
from kvserver.store import Store
from kvwire.batch import Batch
from kvwire.feed import ChangeRecord, WatchRecord
from kvwire.leasing import LeaseRecord
from kvwire.messages import (
    Consulta,
    Estado,
    Heartbeat,
    Insercao,
    Invalid,
    LoggedRequest,
    NovoServ,
    Remocao,
    Request,
    SeenEntry,
    sync_topic,
)
from kvwire.ring import key_slot

log = logging.getLogger("kvserver")

#: A message of the request topic and its local arrival time.
Arrival = tuple[Request | Batch | Invalid, float]


@dataclass(frozen=True)
class Loaded:
    """A replica's whole state as another replica sent it, at stream position `position`."""

    sender: int
    position: int
    store: Store
    seen: SeenSet
    log: RequestLog
    live: list[bool]
    incarnations: list[str | None]
    #: For each replica, the `novoserv` the sender has counted it in since (`View.since`).
    since: list[str | None]
    #: The leases (§18), their ages as of the cut.
    leases: list[LeaseRecord]
    #: The change feed (§19): watches, history (ages as of the cut), oldest `desde` served.
    watches: list[WatchRecord]
    history: list[ChangeRecord]
    history_floor: int


@dataclass
class Assembly:
    """The chunks of one transfer received so far, loaded as they come so that the joiner
    never holds the state twice."""

    sender: int
    cut: int
    total: int
    digest: str
    key_count: int
    live_ids: list[int]
    incarnations: dict[str, str | None]
    since: dict[str, str]
    store: Store = field(default_factory=Store)
    seen: list[SeenEntry] = field(default_factory=list)
    log: list[LoggedRequest] = field(default_factory=list)
    leases: list[LeaseRecord] = field(default_factory=list)
    watches: list[WatchRecord] = field(default_factory=list)
    history: list[ChangeRecord] = field(default_factory=list)
    history_floor: int = 0
    received: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, first: Estado) -> Assembly:
        return cls(
            sender=first.idserv,
            cut=first.corte,
            total=first.partes,
            digest=first.resumo,
            key_count=first.chaves,
            live_ids=list(first.vivos),
            incarnations=dict(first.incarnacoes),
            since=dict(first.desde),
            history_floor=first.compactada,
        )

    def belongs(self, chunk: Estado) -> bool:
        return (chunk.idserv, chunk.corte, chunk.partes) == (self.sender, self.cut, self.total)

    def add(self, chunk: Estado) -> None:
        if chunk.parte in self.received or not 0 <= chunk.parte < self.total:
            return
        self.received.add(chunk.parte)
        revisions = chunk.revisoes
        # Packed as the store keeps them (`kvserver.store.pack`), in one pass.
        self.store.load_packed({k: f"{revisions.get(k, 0)}\x00{v}" for k, v in chunk.pares.items()})
        self.seen.extend(chunk.vistos)
        self.log.extend(chunk.registro)
        self.leases.extend(chunk.concessoes)
        self.watches.extend(chunk.vigias)
        self.history.extend(chunk.historico)

    @property
    def complete(self) -> bool:
        return len(self.received) == self.total

    def problem(self) -> str | None:
        """Why the assembled state cannot be trusted, or None."""
        if len(self.store) != self.key_count:
            return f"got {len(self.store)} keys, the sender announced {self.key_count}"
        if self.store.digest() != self.digest:
            return f"digest {self.store.digest()} differs from the sender's {self.digest}"
        return None


@dataclass
class JoinAttempt:
    replica_id: int
    incarnation: str
    #: Which attempt of this incarnation: part of the sync topic, so that chunks sent for an
    #: earlier attempt are never taken for this one.
    number: int
    started_at: float
    progress_at: float
    announced: bool = False
    buffer: list[Arrival] = field(default_factory=list)
    assembly: Assembly | None = None
    #: When "waiting to join" was last logged: once per ten timeouts is enough.
    waiting_said_at: float = -math.inf

    @property
    def sync_topic(self) -> str:
        return sync_topic(self.replica_id, f"{self.incarnation}-{self.number}")

    def novoserv(self, position: int | None) -> NovoServ:
        return NovoServ(
            idserv=self.replica_id,
            topico_resp=self.sync_topic,
            incarnacao=self.incarnation,
            posicao=position,
        )

    def see(self, message: Request | Batch | Invalid, now: float) -> bool:
        """A message of the request topic. True when it is our own `novoserv`: the cut."""
        if self.announced:
            self.buffer.append((message, now))
            return False
        if (
            isinstance(message, NovoServ)
            and message.idserv == self.replica_id
            and message.topico_resp == self.sync_topic
        ):
            self.announced = True
            self.progress_at = now
            return True
        return False

    def add(self, chunk: Estado, now: float) -> str | None:
        """One `estado` chunk on our sync topic; why it was not taken, or None."""
        if self.assembly is None:
            self.assembly = Assembly.start(chunk)
        elif not self.assembly.belongs(chunk):
            return (
                f"a chunk from replica {chunk.idserv} at cut {chunk.corte} is of another "
                f"transfer than the one under way (from {self.assembly.sender} at "
                f"{self.assembly.cut})"
            )
        self.assembly.add(chunk)
        self.progress_at = now
        return None

    @property
    def ready(self) -> bool:
        return self.announced and self.assembly is not None and self.assembly.complete

    def load(self, n: int, dedup_capacity: int, log_ttl: float) -> Loaded | str:
        """The state to install, or why it cannot be trusted. Only once `ready`."""
        assembly = self.assembly
        assert assembly is not None
        problem = assembly.problem()
        if problem is not None:
            return problem
        return Loaded(
            sender=assembly.sender,
            position=assembly.cut,
            store=assembly.store,
            seen=SeenSet(dedup_capacity, assembly.seen),
            log=RequestLog(log_ttl, sorted(assembly.log, key=lambda entry: entry.at)),
            live=[str(i) in assembly.incarnations for i in range(n)],
            incarnations=[assembly.incarnations.get(str(i)) for i in range(n)],
            since=[assembly.since.get(str(i)) for i in range(n)],
            leases=assembly.leases,
            watches=assembly.watches,
            history=sorted(assembly.history, key=lambda change: change.revision),
            history_floor=assembly.history_floor,
        )

    def stalled(self, now: float, timeout: float) -> bool:
        return now - self.progress_at >= timeout

    def again(self, now: float) -> JoinAttempt:
        """The next attempt of the same incarnation: the replicas already know it."""
        return JoinAttempt(
            self.replica_id,
            self.incarnation,
            self.number + 1,
            started_at=now,
            progress_at=now,
            waiting_said_at=self.waiting_said_at,
        )


@dataclass
class Peer:
    mode: str
    position: int | None
    seen_at: float


class Peers:
    """The other replicas' latest heartbeats: whom a joiner can expect state from."""

    def __init__(self, own_id: int, n: int) -> None:
        self.own_id = own_id
        self.n = n
        self._latest: dict[int, Peer] = {}

    def hear(self, beat: Heartbeat, now: float) -> None:
        if beat.idserv == self.own_id or not 0 <= beat.idserv < self.n:
            return
        if beat.modo == "gone":
            self._latest.pop(beat.idserv, None)
        else:
            self._latest[beat.idserv] = Peer(beat.modo, beat.posicao, now)

    def heard(self, now: float, timeout: float) -> dict[int, Peer]:
        return {i: p for i, p in self._latest.items() if now - p.seen_at <= timeout}


Choice = Literal["ask again", "resume", "wait"]


def recovery_choice(
    own_id: int, own_position: int | None, heard: dict[int, Peer], awaited: set[int]
) -> Choice:
    """What a joiner does when no state came in time (protocol §11, §17).

    If a live replica is heard, its state is merely late: ask again. If none is, the
    re-joining replica with the highest position (ties: the lowest id) resumes from its own
    store, and the others wait for it; but not before every replica in `awaited` has reported
    a position. A replica without a store of its own never resumes.
    """
    if any(peer.mode == "live" for peer in heard.values()):
        return "ask again"
    if own_position is None or _missing(heard, awaited):
        return "wait"
    mine = (own_position, -own_id)
    for peer_id, peer in heard.items():
        position = peer.position if peer.position is not None else -1
        if (position, -peer_id) > mine:
            return "wait"
    return "resume"


def _missing(heard: dict[int, Peer], awaited: set[int]) -> list[int]:
    return sorted(i for i in awaited if i not in heard or heard[i].position is None)


def waiting_reason(heard: dict[int, Peer], awaited: set[int]) -> str:
    missing = _missing(heard, awaited)
    if missing:
        names = ", ".join(map(str, missing))
        flags = " ".join(f"--without {i}" for i in missing)
        return (
            f"no replica is live, and replica(s) {names} of the last view have not reported "
            "their position: they may hold the only copy of acknowledged writes. Start them, "
            f"or resume without them: kvclient recover {flags}"
        )
    if any(peer.position is not None for peer in heard.values()):
        return "no replica is live; the re-joining replica with the highest position will resume"
    return (
        "no live replica is heard on the monitor topic (start one with --fresh to create a "
        "new cluster)"
    )


class Rejoin:
    """What a replica keeps while it is not live, to get back: the attempt under way, the
    peers heard, the requests owed an answer, and the replicas an operator said not to wait
    for (§17)."""

    def __init__(self, own_id: int, n: int) -> None:
        self.own_id = own_id
        self.n = n
        self.attempt: JoinAttempt | None = None
        self.peers = Peers(own_id, n)
        #: Requests that arrived after an attempt's cut and before the one that loads, each
        #: with the sync topic of the attempt whose period it arrived in.
        self.owed: list[tuple[Request | Batch | Invalid, float, str]] = []
        #: The sync topics of this incarnation's attempts, in order.
        self._topics: list[str] = []
        self.excluded: set[int] = set()

    def start(self, attempt: JoinAttempt) -> None:
        if attempt.number == 1:
            self._topics, self.owed = [], []
        self._topics.append(attempt.sync_topic)
        self.attempt = attempt

    def see(self, message: Request | Batch | Invalid, now: float) -> bool:
        """A message of the request topic while joining; True at the attempt's cut. Between
        an abandoned attempt and the next one's cut, the message is kept as owed too."""
        attempt = self.attempt
        assert attempt is not None
        if attempt.see(message, now):
            return True
        if not attempt.announced and len(self._topics) > 1:
            self.owed.append((message, now, self._topics[-2]))
        return False

    def abandon(self, now: float, log_ttl: float) -> None:
        """Drop the attempt, keeping what it buffered that a client may still wait for."""
        attempt, self.attempt = self.attempt, None
        if attempt is not None:
            horizon = now - log_ttl
            topic = attempt.sync_topic
            kept = [*self.owed, *((m, at, topic) for m, at in attempt.buffer)]
            self.owed = [entry for entry in kept if entry[1] >= horizon]

    def exclude(self, ids: list[int]) -> list[int]:
        """Not to be waited for any more; the ids that were still awaited."""
        new = {i for i in ids if 0 <= i < self.n and i != self.own_id} - self.excluded
        self.excluded |= new
        return sorted(new)

    def awaited(self, last_view: list[bool] | None) -> set[int]:
        """With data on disk (`last_view` given), every other replica of the last view must
        report its position before anyone resumes: one still down may hold the only copy of
        acknowledged writes. In memory, a replica that is down holds nothing."""
        if last_view is None:
            return set()
        return {i for i, up in enumerate(last_view) if up and i != self.own_id} - self.excluded

    def owed_requests(
        self, seen: SeenSet, counted_since: str | None
    ) -> Iterator[Consulta | Insercao | Remocao]:
        """What nobody answered while we joined (protocol §7), to answer once live: the owed
        requests that arrived since the `novoserv` the view has counted us in from
        (`counted_since`, the state sender's `desde`), for keys of our own slot, which we own
        wherever the view counts us in. Before that `novoserv` their owner was someone else, a
        replica that resumed alone after a stall of the whole cluster, say, and answered them.
        Keys of other slots were ours only while the replicas before us were down, which we
        cannot tell from here: their clients retry. A read is answered with today's value (it
        is before the cut), a write only if it was applied (with its outcome)."""
        owed, self.owed = self.owed, []
        topics = self._topics
        first = topics.index(counted_since) if counted_since in topics else len(topics)
        ours = set(topics[first:])
        left = 0
        for arrived, _, topic in owed:
            # A batch's requests are owed as they would be alone (§21).
            for message in arrived.requests if isinstance(arrived, Batch) else (arrived,):
                if not isinstance(message, Consulta | Insercao | Remocao):
                    continue
                if topic not in ours or key_slot(message.chave, self.n) != self.own_id:
                    left += 1
                elif (
                    isinstance(message, Consulta) or (message.topico_resp, message.idpedido) in seen
                ):
                    yield message
        if left:
            log.info(
                "replica %d leaves %d requests of earlier attempts to others", self.own_id, left
            )
