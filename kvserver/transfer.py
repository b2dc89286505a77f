"""State transfer to a joining replica (PROTOCOL §7): cutting a snapshot into `estado` chunks
on the sender, and putting them back together on the joiner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from kvserver.history import RequestLog, SeenSet
from kvserver.store import Store
from kvwire.messages import Estado, LogEntry, SeenEntry


@dataclass(frozen=True)
class Snapshot:
    """A replica's state at exactly one stream position (`corte`)."""

    sender: int
    corte: int
    pairs: dict[str, str]
    digest: str
    live: tuple[bool, ...]
    incarnations: tuple[str | None, ...]
    seen: list[SeenEntry]
    log: list[LogEntry]

    def chunks(self, chunk_items: int) -> Iterator[Estado]:
        """Pairs first, then the de-duplication set, then the log; `chunk_items` of each."""
        pair_parts = -(-len(self.pairs) // chunk_items)
        seen_parts = -(-len(self.seen) // chunk_items)
        log_parts = -(-len(self.log) // chunk_items)
        total = max(1, pair_parts + seen_parts + log_parts)
        vivos = [i for i, up in enumerate(self.live) if up]
        incarnacoes = {str(i): self.incarnations[i] for i in vivos}

        def chunk(
            part: int,
            pares: dict[str, str] | None = None,
            vistos: list[SeenEntry] | None = None,
            registro: list[LogEntry] | None = None,
        ) -> Estado:
            return Estado.model_construct(
                tipomsg="estado",
                idserv=self.sender,
                corte=self.corte,
                parte=part,
                partes=total,
                vivos=vivos,
                incarnacoes=incarnacoes,
                resumo=self.digest,
                chaves=len(self.pairs),
                pares=pares or {},
                vistos=vistos or [],
                registro=registro or [],
            )

        part = 0
        items = iter(self.pairs.items())
        for _ in range(pair_parts):
            yield chunk(part, pares=dict(islice(items, chunk_items)))
            part += 1
        for start in range(0, len(self.seen), chunk_items):
            yield chunk(part, vistos=self.seen[start : start + chunk_items])
            part += 1
        for start in range(0, len(self.log), chunk_items):
            yield chunk(part, registro=self.log[start : start + chunk_items])
            part += 1
        if part == 0:
            yield chunk(0)


@dataclass
class Assembly:
    """The chunks of one transfer received so far, loaded as they come so that the joiner
    never holds the state twice."""

    sender: int
    corte: int
    partes: int
    resumo: str
    chaves: int
    vivos: list[int]
    incarnacoes: dict[str, str | None]
    store: Store = field(default_factory=Store)
    seen: list[SeenEntry] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)
    parts: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, first: Estado) -> Assembly:
        return cls(
            sender=first.idserv,
            corte=first.corte,
            partes=first.partes,
            resumo=first.resumo,
            chaves=first.chaves,
            vivos=list(first.vivos),
            incarnacoes=dict(first.incarnacoes),
        )

    def belongs(self, chunk: Estado) -> bool:
        return (chunk.idserv, chunk.corte, chunk.partes) == (self.sender, self.corte, self.partes)

    def add(self, chunk: Estado) -> None:
        if chunk.parte in self.parts or not 0 <= chunk.parte < self.partes:
            return
        self.parts.add(chunk.parte)
        self.store.load(chunk.pares)
        self.seen.extend(chunk.vistos)
        self.log.extend(chunk.registro)

    @property
    def complete(self) -> bool:
        return len(self.parts) == self.partes

    def problem(self) -> str | None:
        """Why the assembled state cannot be trusted, or None."""
        if len(self.store) != self.chaves:
            return f"got {len(self.store)} keys, the sender announced {self.chaves}"
        if self.store.digest() != self.resumo:
            return f"digest {self.store.digest()} differs from the sender's {self.resumo}"
        return None

    def seen_set(self, capacity: int) -> SeenSet:
        return SeenSet(capacity, self.seen)

    def request_log(self, ttl: float) -> RequestLog:
        return RequestLog(ttl, sorted(self.log, key=lambda entry: entry[0]))
