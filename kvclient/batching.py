"""When `KVClient`'s requests go, and in which message (protocol §21, issue 28).

The cost of a request is mostly the cost of its MQTT message, paid by the broker and by every
replica; a `lote` of many requests costs about as much as one. So requests wait in an outbox
while the connection already has `max_in_flight` messages on their way (unanswered), and go
together as one `lote` when one of those is answered, or when the batch is full (Kafka's
producer and TCP's Nagle rule do the same, with one message in flight). A request with a
free slot goes at once, alone or with whatever waited: one request at a time never waits.
`linger` makes a bulk job's batches fill: a batch then also waits that long for more.

One message in flight is `KVClient`'s default: measured on 3 replicas against 2 and 4, it gave
the most requests a second at 64 and 256 in flight (18,700 and 31,100 a second against 19,000
and 20,700 with 2) and with 16 threads sharing a client (7,000 against 6,000); with 4 threads,
each doing one request at a time, every setting cost 8–18% against batching off (3,100 a
second against 3,400: a request may wait for the answer of another thread's).

No clock and no thread here: the client calls these under its own lock with the time.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from kvwire.messages import Resposta


@dataclass
class Sent:
    """One message on its way: how many of its requests are still unanswered."""

    left: int


@dataclass
class Pending:
    """A request of `KVClient`: its answer's future, its payload (sent again as it is on a
    retry), its deadlines, and the message that carried it (None: not sent yet)."""

    future: Future[Resposta]
    payload: bytes
    deadline: float
    next_send: float
    sent: Sent | None = None


class Outbox:
    __slots__ = ("items", "linger", "max_batch", "max_bytes", "max_in_flight", "out", "since",
                 "size")  # fmt: skip

    def __init__(
        self, *, max_batch: int, max_bytes: int, max_in_flight: int, linger: float
    ) -> None:
        self.max_batch, self.max_bytes = max_batch, max_bytes
        self.max_in_flight, self.linger = max_in_flight, linger
        #: The requests waiting, oldest first; their bytes; when the oldest came.
        self.items: list[Pending] = []
        self.size = 0
        self.since = 0.0
        #: Messages on their way with a request still unanswered.
        self.out = 0

    def add(self, pending: Pending, now: float) -> None:
        if not self.items:
            self.since = now
        self.items.append(pending)
        self.size += len(pending.payload)

    def alone(self, pending: Pending) -> bool:
        """Whether `pending` goes at once by itself (then it is on its way): nothing waits,
        a slot is free and no `linger` asks to wait. The common path at one in flight."""
        if self.items or self.out >= self.max_in_flight or self.linger:
            return False
        pending.sent = Sent(1)
        self.out += 1
        return True

    def full(self) -> bool:
        return len(self.items) >= self.max_batch or self.size >= self.max_bytes

    def may_send(self, now: float) -> bool:
        """Whether the waiting requests should go now."""
        if not self.items:
            return False
        if self.full():
            return True
        if self.out >= self.max_in_flight:
            return False  # they go when an answer frees a slot
        return not self.linger or now - self.since >= self.linger

    def take(self, now: float) -> list[Pending]:
        """The oldest waiting requests, as many as one message holds, now on their way."""
        size, count = 0, 0
        for pending in self.items:
            length = len(pending.payload)
            if count and (count >= self.max_batch or size + length > self.max_bytes):
                break
            size += length
            count += 1
        taken, self.items = self.items[:count], self.items[count:]
        self.size -= size
        self.since = now
        if taken:
            sent = Sent(len(taken))
            for pending in taken:
                pending.sent = sent
            self.out += 1
        return taken

    def landed(self, pending: Pending) -> None:
        """`pending` was answered or given up: the last of its message frees a slot."""
        sent = pending.sent
        if sent is not None and sent.left > 0:
            sent.left -= 1
            if sent.left == 0:
                self.out -= 1

    def clear(self) -> None:
        self.items, self.size = [], 0
