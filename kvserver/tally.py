"""What a replica counts of its own work, for its metrics (issue 29): plain numbers the state
machine keeps as it applies the stream, which the adapter reads when Prometheus scrapes.

Counting here, not in the adapter, is what lets every counter say what was applied (a
write's outcome is known only where it is decided) without the core importing a metrics
library; the scrape reads them from another thread, so each is a plain int or a dict copied
whole (`applied_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tally:
    #: Requests applied, by `tipomsg` and the status they were given ("invalido" for a
    #: message that was none): every replica counts each, whoever answers it.
    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Failures of others this replica read, and those it took over (became the substitute).
    failures: int = 0
    takeovers: int = 0
    #: Joins: state sent to a joiner (hand-backs), and this replica's own joins completed.
    handbacks: int = 0
    joins: int = 0
    #: Times this replica read its own failure and stopped answering (fenced).
    fenced: int = 0
    #: When the join under way began, and how long the last one took (None: none yet).
    join_began: float | None = None
    join_seconds: float | None = None

    def count(self, kind: str, status: str) -> None:
        key = (kind, status)
        applied = self.applied
        applied[key] = applied.get(key, 0) + 1

    def joined(self, now: float) -> None:
        self.joins += 1
        if self.join_began is not None:
            self.join_seconds = max(0.0, now - self.join_began)
        self.join_began = None

    def applied_counts(self) -> dict[tuple[str, str], int]:
        # dict.copy of str-tuple keys runs without releasing the GIL: a consistent copy.
        return self.applied.copy()
