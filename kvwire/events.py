"""What the replicas and monitors log, also published for those who watch the cluster.

Every program logs one line per event that matters (a failure declared, a takeover, a join,
a hand-back, a fencing, a divergence). `EventForwarder`, a `logging.Handler`, publishes each
of those lines as an `Evento` on `<monitor topic>/events`, so that `kvclient web` can draw a
timeline without reading anyone's log file. The lines stay the source: what is logged is
what is published, and nothing in the state machines changes.

Only the kinds below leave the program: every client may read the topic (protocol §16), and
other lines may quote a request (a key). QoS 1, because a broker's ACL that does not let a
replica write the topic then answers "not authorized" in a PUBACK; at QoS 0 Mosquitto drops
the connection of an MQTT 5 client instead, and a view would have cost a failover.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import StrictFloat, StrictInt, StrictStr, ValidationError

from kvwire.messages import Invalid
from kvwire.wire import _Wire

if TYPE_CHECKING:
    from kvwire.mqtt import Link

Kind = Literal["failure", "takeover", "join", "handback", "fenced", "divergence", "recovery"]

#: What each event is, by the words of its log line's format: the page draws them apart.
_KINDS: tuple[tuple[str, Kind], ...] = (
    ("declared failed", "failure"),
    ("takes over for replica", "takeover"),
    ("joined at position", "join"),
    ("hands back to replica", "handback"),
    ("fenced at position", "fenced"),
    ("DIVERGENCE", "divergence"),
    ("resumes", "recovery"),
)

#: At most this many events a second leave one program; a flood of bad input must not
#: become a flood on the events topic.
RATE_LIMIT = 20


def events_topic(monitor_topic: str) -> str:
    return f"{monitor_topic}/events"


class Evento(_Wire):
    """One logged event: who, when, how serious, what, at which stream position."""

    origem: StrictStr
    tipo: Kind
    nivel: Literal["info", "warning", "error", "critical"] = "info"
    texto: StrictStr
    em: StrictFloat
    posicao: StrictInt | None = None


def decode_evento(payload: bytes | bytearray) -> Evento | Invalid:
    try:
        return Evento.model_validate_json(payload)
    except ValidationError as exc:
        return Invalid(f"invalid event: {exc.errors()[0]['msg']}")


def kind_of(template: str) -> Kind | None:
    return next((kind for words, kind in _KINDS if words in template), None)


class EventForwarder(logging.Handler):
    """Publishes the log records of its program (INFO and above) that are events.

    `publish` is called on the thread that logs (the replica's and the monitor's only
    thread), and must neither block nor log. `position` gives the stream position now.
    """

    def __init__(
        self,
        origin: str,
        publish: Callable[[bytes], None],
        position: Callable[[], int | None] = lambda: None,
    ) -> None:
        super().__init__(logging.INFO)
        self.origin = origin
        self._publish = publish
        self._position = position
        self._second = 0
        self._sent = 0
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        kind = kind_of(str(record.msg))
        if kind is None:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._sent = second, 0
        if self._sent >= RATE_LIMIT:
            self.dropped += 1
            return
        self._sent += 1
        level = record.levelname.lower()
        try:
            event = Evento(
                origem=self.origin,
                tipo=kind,
                nivel=level if level in ("warning", "error", "critical") else "info",  # type: ignore[arg-type]
                texto=record.getMessage()[:500],
                em=now,
                posicao=self._position(),
            )
            self._publish(event.encode())
        except Exception:  # a handler must never break the program that logs
            self.handleError(record)


def forward_events(
    logger: logging.Logger,
    origin: str,
    link: Callable[[], Link | None],
    monitor_topic: str,
    position: Callable[[], int | None] = lambda: None,
) -> None:
    """Publish `logger`'s events on the events topic beside `monitor_topic`, over the link
    `link()` gives at that moment (a replica makes a new one when it reconnects). An event
    logged while disconnected is lost: a watcher wants the present, not a backlog."""
    topic = events_topic(monitor_topic)

    def publish(payload: bytes) -> None:
        current = link()
        if current is not None and current.connected:
            current.publish(topic, payload, 1)

    logger.addHandler(EventForwarder(origin, publish, position))
