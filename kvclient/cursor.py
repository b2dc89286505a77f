"""What a watcher of the change feed (protocol §19) has seen, and what each event means to it.

Pure rules, no I/O: `kvclient.feed` feeds it the events of its current watch. Events are
numbered by the stream, so the rules are few: an event at or before the last revision seen is
a duplicate (a successor sending again what the dead owner sent); one whose `anterior` is
after it means something was missed, and the watch must be registered again from `last`.
"""

from __future__ import annotations

from typing import Literal

from kvwire.feed import Evento

#: `new`: hand it to the user; `seen`: drop it; `gap`: register again from `last`; `end`:
#: the watch ended (its lease, or a cancel): register again if still wanted.
Verdict = Literal["new", "seen", "gap", "end"]


class Cursor:
    """The last revision through which every matching change has been seen."""

    __slots__ = ("last",)

    def __init__(self, since: int) -> None:
        self.last = since

    def take(self, event: Evento) -> Verdict:
        if event.tipo == "fim":
            return "end"
        if event.anterior > self.last:
            return "gap"
        if event.tipo == "progresso":  # nothing matched from `anterior` through `revisao`
            self.last = max(self.last, event.revisao)
            return "seen"
        if event.revisao <= self.last:
            return "seen"
        self.last = event.revisao
        return "new"
