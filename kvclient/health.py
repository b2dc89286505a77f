"""`kvclient health`: one verdict from the replicas' heartbeats, for load balancers and
scripts (issue 29), as the exit status: 0 every replica live and agreeing; 1 degraded (a
replica down, its keys answered by the successor that took them over); 2 some keys with no
live owner, replicas that disagree, or no replica heard at all."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from kvclient.status import ClusterStatus, serving

Verdict = Literal["healthy", "degraded", "unavailable"]
CODES: dict[Verdict, int] = {"healthy": 0, "degraded": 1, "unavailable": 2}


@dataclass(frozen=True)
class Health:
    verdict: Verdict
    #: One line for a person.
    reason: str
    live: list[int] = field(default_factory=list)
    #: Each replica that is down, and the live one answering for its keys.
    served_by: dict[int, int] = field(default_factory=dict)

    @property
    def code(self) -> int:
        return CODES[self.verdict]

    def as_json(self) -> dict[str, object]:
        return asdict(self) | {"code": self.code}


def health(status: ClusterStatus, n: int) -> Health:
    """The verdict on what the heartbeats say now (`status`) of a cluster of `n`."""
    live = status.live()
    if not live:
        return Health("unavailable", "no replica is live: nothing answers", live)
    for a, b in status.divergent():
        position = status.replicas[a].beat.posicao
        why = f"replicas {a} and {b} report different digests at position {position}"
        return Health("unavailable", why, live)
    for full in (i for i in live if status.replicas[i].beat.disk_full):
        why = f"replica {full}'s data directory is full: its keys are not answered"
        return Health("unavailable", why, live)
    served_by: dict[int, int] = {}
    for down in (i for i in range(n) if i not in live):
        substitute = serving(status, down)
        if substitute is None:
            why = f"replica {down} is down and no live replica answers for its keys"
            return Health("unavailable", why, live, served_by)
        served_by[down] = substitute
    if served_by:
        taken = ", ".join(f"{down} by {by}" for down, by in sorted(served_by.items()))
        why = f"replicas {', '.join(map(str, live))} live; keys of down replicas served: {taken}"
        return Health("degraded", why, live, served_by)
    return Health("healthy", f"replicas {', '.join(map(str, live))} live and agreeing", live)
