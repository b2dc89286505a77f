"""What a watcher of the change feed (protocol §19) has seen, and what each event means to it.

Pure rules, no I/O: `kvclient.feed` feeds it the events of its current watch. Events are
numbered by the stream, so the rules are few: an event at or before the last revision seen is
a duplicate (a successor sending again what the dead owner sent); one whose `anterior` is
after it means something was missed, and the watch must be registered again from `last`.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NamedTuple

from kvwire.feed import ChangeKind, Evento, Mudanca

#: `new`: hand it to the user; `seen`: drop it; `gap`: register again from `last`; `end`:
#: the watch ended (its lease, or a cancel): register again if still wanted.
Verdict = Literal["new", "seen", "gap", "end"]


class Change(NamedTuple):
    """One change of a watched key: its revision, key, kind (`insercao` a put, `remocao` a
    delete, `expiracao` its lease ended) and new value (None unless a put)."""

    revision: int
    key: str
    kind: ChangeKind
    value: str | None

    @classmethod
    def of(cls, change: Mudanca, revision: int = 0) -> Change:
        return cls(change.revisao or revision, change.chave, change.tipo, change.valor)

    def text(self) -> str:
        if self.kind == "insercao":
            return f"{self.key} = {self.value} (revision {self.revision})"
        what = "deleted" if self.kind == "remocao" else "expired"
        return f"{self.key} {what} (revision {self.revision})"

    def json(self) -> str:
        body: dict[str, Any] = {
            "chave": self.key, "valor": self.value, "revisao": self.revision, "tipo": self.kind,
        }  # fmt: skip
        if self.value is None:
            body["apagada"] = True  # as `kvclient watch --mirror` says it
        return json.dumps(body, ensure_ascii=False)


class Cursor:
    """The last revision through which every matching change has been seen."""

    __slots__ = ("last",)

    def __init__(self, since: int) -> None:
        self.last = since

    def take(self, event: Evento) -> tuple[Verdict, list[Change]]:
        """What the event means, and (`new`) its changes not seen yet, in revision order."""
        if event.tipo == "fim":
            return "end", []
        if event.anterior > self.last:
            return "gap", []
        if event.tipo == "progresso":  # nothing matched from `anterior` through `revisao`
            self.last = max(self.last, event.revisao)
            return "seen", []
        if event.revisao <= self.last:
            return "seen", []
        before, self.last = self.last, event.revisao
        if event.mudancas is None:
            assert event.chave is not None
            kind: ChangeKind = event.tipo  # narrowed: not a note, a change
            return "new", [Change(event.revisao, event.chave, kind, event.valor)]
        # Sent again after a failover, an event may start before what was seen.
        fresh = [Change.of(m, event.revisao) for m in event.mudancas]
        return "new", [c for c in fresh if c.revision > before]
