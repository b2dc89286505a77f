"""State transfers under way, fed to the broker a window at a time by the replica's adapter
(protocol §7, the sender's side), so that requests keep flowing while a million keys go out.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from kvserver.transfer import Snapshot
from kvwire.messages import Estado
from kvwire.mqtt import Link

log = logging.getLogger("kvserver")

#: State chunks handed to paho and not yet acknowledged by the broker (~130 KB each).
_SEND_WINDOW = 32
#: Chunks encoded per pass of the loop, so that requests keep flowing during a transfer.
_CHUNKS_PER_PASS = 4


@dataclass
class _Transfer:
    """A state transfer under way: chunks are encoded as the window to the broker allows."""

    topic: str
    snapshot: Snapshot
    chunks: Iterator[Estado]
    window: deque[mqtt.MQTTMessageInfo] = field(default_factory=deque)
    sent: int = 0
    exhausted: bool = False
    waiting_since: float = 0.0


class Transfers:
    def __init__(
        self,
        replica_id: int,
        ack_timeout: float,
        done: Callable[[Snapshot], None],
        pace: float = 0.0,
    ) -> None:
        self.replica_id = replica_id
        #: Seconds between chunks (a test switch, `Faults.pace_transfers`); 0: the window's pace.
        self.pace = pace
        self._next_at = 0.0
        #: A transfer whose chunks the broker stops acknowledging this long is given up.
        self.ack_timeout = ack_timeout
        self._done = done
        self._under_way: list[_Transfer] = []

    def start(self, topic: str, snapshot: Snapshot, chunk_items: int) -> None:
        self._under_way.append(_Transfer(topic, snapshot, snapshot.chunks(chunk_items)))

    @property
    def busy(self) -> bool:
        """Whether a transfer has chunks to send and room in its window: the loop spins."""
        room = any(not t.exhausted and len(t.window) < _SEND_WINDOW for t in self._under_way)
        return room and not self.pace

    def drop(self, reason: str) -> None:
        for transfer in list(self._under_way):
            self._end(transfer, reason)

    def feed(self, link: Link, now: float) -> None:
        for transfer in list(self._under_way):
            window = transfer.window
            while window and window[0].is_published():
                window.popleft()
                transfer.waiting_since = now
            budget = _CHUNKS_PER_PASS if not self.pace else int(now >= self._next_at)
            if self.pace and budget:
                self._next_at = now + self.pace
            while not transfer.exhausted and len(window) < _SEND_WINDOW and budget:
                chunk = next(transfer.chunks, None)
                if chunk is None:
                    transfer.exhausted = True
                    break
                info = link.publish(transfer.topic, chunk.encode(), signed=True)
                if info is None:
                    self._end(transfer, "paho refused a chunk")
                    break
                if not window:
                    transfer.waiting_since = now
                window.append(info)
                transfer.sent += 1
                budget -= 1
            if transfer not in self._under_way:
                continue
            if transfer.exhausted and not window:
                self._end(transfer, None)
            elif window and now - transfer.waiting_since > self.ack_timeout:
                self._end(transfer, "the broker acknowledged no chunk in time")

    def _end(self, transfer: _Transfer, problem: str | None) -> None:
        if transfer in self._under_way:
            self._under_way.remove(transfer)
        if problem is None:
            log.info(
                "replica %d sent %d state chunks to %s", self.replica_id, transfer.sent,
                transfer.topic,
            )  # fmt: skip
        else:
            log.warning(
                "replica %d stopped sending state to %s after %d chunks: %s",
                self.replica_id, transfer.topic, transfer.sent, problem,
            )  # fmt: skip
        self._done(transfer.snapshot)
