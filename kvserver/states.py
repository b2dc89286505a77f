"""The replica's named states, the one table of transitions between them, and the one table of
what each state takes in, kept apart from the machine that uses them (`kvserver.replica`), as
h11 keeps its `_state.py`. A test keeps the table below equal to `NEXT`, and others walk every
pair of both tables.

Its states, and every transition between them (`NEXT` is this table):

    state     event          when                                          next
    --------  -------------  --------------------------------------------  --------
    starting  fresh          a new, empty cluster                          live
    starting  connected      the adapter's first connection: novoserv      joining
    joining   loaded         own novoserv came back, then a sound state    live
    joining   resumed        join timeout, nobody live, highest candidate  live
    joining   asked again    join timeout otherwise, or an unsound state   joining
    live      fenced         a falhaserv naming this incarnation           fenced
    live      session lost   the broker forgot our session                 fenced
    joining   session lost   the broker forgot our session                 fenced
    fenced    connected      a new incarnation's connection: novoserv      joining
    live      superseded     a novoserv with our id, another incarnation   stopped

`live`: every message of the request topic is applied in order, and the replica answers the
requests whose key it owns. `joining`: the stream is discarded until its own `novoserv` comes
back and buffered after it (`kvserver.join`). `fenced`: it stopped answering and reads
nothing until the adapter has a new connection; its store is kept as a §11 candidate.
`stopped`: another process has this id; the adapter exits.
"""

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

#: What the adapter feeds the core.
Input = Literal[
    "connected", "session lost", "request", "state chunk", "heartbeat", "recovery order", "tick"
]

_ALWAYS: frozenset[Input] = frozenset({"heartbeat", "recovery order", "tick"})

ACCEPTS: dict[State, frozenset[Input]] = {
    # Not connected yet: only the first connection does anything (a novoserv).
    "starting": _ALWAYS | {"connected"},
    # Waiting for its own novoserv, then the state: the stream is watched, chunks taken.
    "joining": _ALWAYS | {"request", "state chunk", "session lost"},
    # Applies the stream; a fresh replica is live before its adapter connects.
    "live": _ALWAYS | {"request", "session lost"},
    # Stopped answering: nothing until a new incarnation's connection.
    "fenced": _ALWAYS | {"connected"},
    # Another process has this id: the adapter exits.
    "stopped": frozenset(),
}
"""What each state takes in. Anything else is dropped unseen, which is what the state means
(a fenced replica reads no request): the adapter cannot know the state a batch will leave the
core in, so a closed door is not an error. A transition missing from `NEXT` is one
(`IllegalTransition`): it would be a bug of the core."""


class IllegalTransition(RuntimeError):
    """The core tried a change of state the table does not have."""

    def __init__(self, replica_id: int, state: State, event: Event) -> None:
        super().__init__(f"replica {replica_id}: no transition from {state} on {event!r}")
        self.state = state
        self.event = event
