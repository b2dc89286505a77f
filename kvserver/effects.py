"""What the replica's state machine asks its adapter to do.

The state machine returns these and never acts itself: `kvserver.node` performs them on a
real broker, `tests/bus.py` on an in-memory one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvserver.transfer import Snapshot
from kvwire.messages import _Wire


@dataclass(frozen=True)
class Publish:
    topic: str
    message: _Wire


@dataclass(frozen=True)
class Mirror:
    """Publish `payload` retained on `topic` (the value mirror, PROTOCOL §14); an empty
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
