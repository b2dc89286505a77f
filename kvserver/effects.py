"""What the replica's state machine asks its adapter to do.

The state machine never acts itself. After each batch of input the adapter takes one `Ready`
(etcd's raft hands its node the same kind of value): first what must be made durable, then
the effects that may be performed only once it is. `kvserver.node` performs them on a real
broker and disk, `tests/bus.py` on in-memory ones, and both keep that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserver.durable import Written
from kvserver.transfer import Snapshot
from kvwire.wire import _Wire


@dataclass(frozen=True)
class Publish:
    topic: str
    message: _Wire
    #: 0 for a change feed's event (§19): a watcher that misses one sees the gap and asks
    #: again, so the broker's acknowledgement would be paid for nothing.
    qos: int = 1


@dataclass(frozen=True)
class Mirror:
    """Publish `payload` retained on `topic` (the value mirror, protocol §14); an empty
    payload clears the topic."""

    topic: str
    payload: bytes


@dataclass(frozen=True)
class SendState:
    """Publish this snapshot to `topic` in `estado` chunks, as fast as the broker takes them."""

    topic: str
    snapshot: Snapshot


@dataclass(frozen=True)
class Reconnect:
    """Drop this connection and make a new one, as a new incarnation: once it is up, the
    adapter tells the replica (`Replica.connected`), which joins again."""

    reason: str
    with_will: bool


@dataclass(frozen=True)
class Stop:
    """Another process took this replica's id: this one must exit."""

    reason: str


Effect = Publish | Mirror | SendState | Reconnect | Stop


@dataclass(frozen=True)
class Ready:
    """One hand-off from the core to its adapter.

    `durable` (None: nothing new, or no data directory) must be on disk before any of
    `effects` is performed: an answer says its write is durable. An adapter that cannot write
    it performs none of them and exits, as a replica whose disk fails must (its last will
    fails it over; a retry is answered by its successor).
    """

    durable: Written | None = None
    effects: list[Effect] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.durable is not None or bool(self.effects)
