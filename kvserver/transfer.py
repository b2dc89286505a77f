"""State transfer to a joining replica (protocol §7), the sender's side: a snapshot at one
stream position, cut into `estado` chunks. The joiner's side is `kvserver.join`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

from kvserver.history import RequestLog, SeenSet
from kvserver.store import Packed, Store
from kvserver.view import View
from kvwire.feed import ChangeRecord, WatchRecord
from kvwire.leasing import LeaseRecord
from kvwire.messages import Estado, LoggedRequest, SeenEntry


class FeedCopy(NamedTuple):
    """The change feed as a joiner gets it (`kvserver.feed.Feed.copy`): its watches, its
    history (ages as of the cut) and the oldest `desde` it serves."""

    watches: list[WatchRecord]
    history: list[ChangeRecord]
    floor: int


@dataclass(frozen=True)
class Snapshot:
    """A replica's state at exactly one stream position (`cut`)."""

    sender: int
    cut: int
    #: Packed (`kvserver.store.pack`): the store's own dict, frozen (`Store.freeze`).
    pairs: dict[str, Packed]
    digest: str
    live: tuple[bool, ...]
    incarnations: tuple[str | None, ...]
    seen: list[SeenEntry]
    log: list[LoggedRequest]
    #: For each live replica, the `novoserv` it has been counted in since (`View.since`).
    since: tuple[str | None, ...] = ()
    leases: list[LeaseRecord] = field(default_factory=list)
    #: The change feed (§19): its watches, its history and the oldest `desde` it serves.
    watches: list[WatchRecord] = field(default_factory=list)
    history: list[ChangeRecord] = field(default_factory=list)
    history_floor: int = 0

    @classmethod
    def take(
        cls,
        sender: int,
        cut: int,
        state: tuple[Store, View, SeenSet, RequestLog],
        leases: list[LeaseRecord] | None = None,
        feed: FeedCopy | None = None,
    ) -> Snapshot:
        """The state as of now, without copying the store: `Store.freeze` keeps its pairs
        unchanged until the transfer is over (`Replica.state_sent`)."""
        store, view, seen, log = state
        return cls(
            sender=sender,
            cut=cut,
            pairs=store.freeze(),
            digest=store.digest(),
            live=tuple(view.live),
            incarnations=tuple(view.incarnations),
            seen=seen.snapshot(),
            log=log.snapshot(),
            since=tuple(view.since),
            leases=leases or [],
            watches=feed.watches if feed is not None else [],
            history=feed.history if feed is not None else [],
            history_floor=feed.floor if feed is not None else 0,
        )

    def chunks(self, chunk_items: int) -> Iterator[Estado]:
        """Pairs first, then the de-duplication set, the log, the leases, the watches and the
        history; `chunk_items` of each."""
        pair_parts = -(-len(self.pairs) // chunk_items)
        seen_parts = -(-len(self.seen) // chunk_items)
        log_parts = -(-len(self.log) // chunk_items)
        lease_parts = -(-len(self.leases) // chunk_items)
        watch_parts = -(-len(self.watches) // chunk_items)
        history_parts = -(-len(self.history) // chunk_items)
        parts = (pair_parts, seen_parts, log_parts, lease_parts, watch_parts, history_parts)
        total = max(1, sum(parts))
        vivos = [i for i, up in enumerate(self.live) if up]
        incarnacoes = {str(i): self.incarnations[i] for i in vivos}
        desde = {str(i): topic for i in vivos if (topic := self.since[i]) is not None}

        def chunk(
            part: int,
            entries: list[tuple[str, Packed]] | None = None,
            vistos: list[SeenEntry] | None = None,
            registro: list[LoggedRequest] | None = None,
            concessoes: list[LeaseRecord] | None = None,
            vigias: list[WatchRecord] | None = None,
            historico: list[ChangeRecord] | None = None,
        ) -> Estado:
            pares, revisoes = {}, {}
            for key, packed in entries or ():
                revision, _, pares[key] = packed.partition("\x00")
                revisoes[key] = int(revision)
            return Estado.model_construct(
                tipomsg="estado",
                idserv=self.sender,
                corte=self.cut,
                parte=part,
                partes=total,
                vivos=vivos,
                incarnacoes=incarnacoes,
                resumo=self.digest,
                chaves=len(self.pairs),
                pares=pares,
                revisoes=revisoes,
                vistos=vistos or [],
                registro=registro or [],
                desde=desde,
                concessoes=concessoes or [],
                vigias=vigias or [],
                historico=historico or [],
                compactada=self.history_floor,
            )

        part = 0
        items = iter(self.pairs.items())
        for _ in range(pair_parts):
            yield chunk(part, entries=list(islice(items, chunk_items)))
            part += 1
        for start in range(0, len(self.seen), chunk_items):
            yield chunk(part, vistos=self.seen[start : start + chunk_items])
            part += 1
        for start in range(0, len(self.log), chunk_items):
            yield chunk(part, registro=self.log[start : start + chunk_items])
            part += 1
        for start in range(0, len(self.leases), chunk_items):
            yield chunk(part, concessoes=self.leases[start : start + chunk_items])
            part += 1
        for start in range(0, len(self.watches), chunk_items):
            yield chunk(part, vigias=self.watches[start : start + chunk_items])
            part += 1
        for start in range(0, len(self.history), chunk_items):
            yield chunk(part, historico=self.history[start : start + chunk_items])
            part += 1
        if part == 0:
            yield chunk(0)
