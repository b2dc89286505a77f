"""From a message as the broker delivers it to what the replica's core is fed: one rule for
every adapter (h11's `receive_data`), so that the in-memory bus of the tests routes exactly
as `kvserver.node` does.

Routing is where three things happen once, before the core sees anything: the topic says
what a payload is, the payload is decoded into a model (or an `Invalid`, on the request topic,
which every replica rejects alike), a QoS 1 message the broker sent again after a reconnect
is dropped (`RedeliveryFilter`), and so is a control message without a valid signature in a
secured cluster (`Forgeries`, protocol §16). Every replica drops the same forged messages,
so the stream stays the same for all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from paho.mqtt.properties import Properties

from kvserver.history import RedeliveryFilter
from kvwire.access import ClusterKey, Forgeries
from kvwire.batch import Batch, decode_stream
from kvwire.leasing import Expiracao
from kvwire.messages import (
    SIGNED_REQUESTS,
    SYNC_TOPIC_PREFIX,
    Estado,
    FalhaServ,
    Heartbeat,
    Invalid,
    NovoServ,
    Recuperacao,
    Request,
    decode_beat,
    decode_estado,
)
from kvwire.mqtt import reply_route

log = logging.getLogger("kvserver")


@dataclass(frozen=True)
class StateChunk:
    """An `estado` chunk and the sync topic it came on: only the attempt that owns that topic
    takes it (protocol §7)."""

    topic: str
    chunk: Estado


#: What the core is fed from the broker: a message of the request topic (in broker order), a
#: heartbeat or recovery order of the monitor topic, or a chunk of a state transfer.
Routed = Request | Batch | Invalid | Heartbeat | Recuperacao | StateChunk


class Router:
    """The routing of one replica process; it keeps what routing must remember (the recent
    payloads, for redeliveries; the forgeries counted, for the heartbeats)."""

    def __init__(
        self,
        replica_id: int,
        *,
        requests_topic: str,
        monitor_topic: str,
        key: ClusterKey | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.requests_topic = requests_topic
        self.monitor_topic = monitor_topic
        self.forgeries = Forgeries(f"replica {replica_id}", key)
        self._redelivery = RedeliveryFilter()

    def route(
        self,
        topic: str,
        payload: bytes,
        dup: bool = False,
        properties: Properties | None = None,
    ) -> Routed | None:
        """The message for the core, or None: nothing for it (a repeat, a forgery, a topic
        or a monitor message it has no use for)."""
        if topic == self.requests_topic:
            if self._redelivery.is_repeat(payload, dup):
                return None
            request = decode_stream(payload)
            # An MQTT 5 request/response (§15) is not a valid request until routed: only then
            # are its properties read, off the path of every other request.
            if isinstance(request, Invalid) and (route := reply_route(properties)) is not None:
                request = decode_stream(payload, route)
            if isinstance(request, SIGNED_REQUESTS) and self.forgeries.forged(
                payload, properties, request.tipomsg, _claimed_sender(request)
            ):
                return None
            return request
        if topic == self.monitor_topic:
            beat = decode_beat(payload)
            if isinstance(beat, Heartbeat):
                sender = f"replica {beat.idserv}"
                forged = self.forgeries.forged(payload, properties, "heartbeat", sender)
                return None if forged else beat
            if isinstance(beat, Recuperacao):
                forged = self.forgeries.forged(payload, properties, "recovery order", "an operator")
                return None if forged else beat
            return None  # a monitor's own beat, or not ours to judge
        if topic.startswith(SYNC_TOPIC_PREFIX):
            chunk = decode_estado(payload)
            if isinstance(chunk, Invalid):
                why = chunk.reason
                log.warning("replica %d ignores a bad state chunk: %s", self.replica_id, why)
                return None
            sender = f"replica {chunk.idserv}"
            if self.forgeries.forged(payload, properties, "state chunk", sender):
                return None
            return StateChunk(topic, chunk)
        return None


def _claimed_sender(request: FalhaServ | NovoServ | Expiracao) -> str:
    # A falhaserv does not say which monitor sent it; a novoserv or expiracao names a replica.
    return "an unnamed sender" if isinstance(request, FalhaServ) else f"replica {request.idserv}"
