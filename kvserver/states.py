"""The replica's named states and the one table of transitions between them, kept apart from
the machine that fires them, as h11 keeps its `_state.py`. `kvserver.replica`'s docstring
shows the same table for a reader; a test keeps the two equal."""

from __future__ import annotations

from typing import Literal

State = Literal["starting", "joining", "live", "fenced", "stopped"]
Event = Literal[
    "fresh", "connected", "loaded", "resumed", "asked again", "fenced", "session lost",
    "superseded",
]  # fmt: skip

NEXT: dict[tuple[State, Event], State] = {
    ("starting", "fresh"): "live",
    ("starting", "connected"): "joining",
    ("joining", "loaded"): "live",
    ("joining", "resumed"): "live",
    ("joining", "asked again"): "joining",
    ("live", "fenced"): "fenced",
    ("live", "session lost"): "fenced",
    ("joining", "session lost"): "fenced",
    ("fenced", "connected"): "joining",
    ("live", "superseded"): "stopped",
}
