"""An in-memory broker for replica cores: one ordered request stream, fake time.

Every message goes through the real encoder and decoder, so the wire models are exercised
too. Replicas can be stopped (they stop reading, as after `kill -9`), delayed (they read
later, as after SIGSTOP) and started again; state transfers can be held back or cut short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kvserver.effects import Effect, Mirror, Publish, Reconnect, SendState, Stop
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.settings import ReplicaSettings
from kvwire.messages import (
    REQUESTS_TOPIC,
    Consulta,
    Estado,
    FalhaServ,
    Insercao,
    Listagem,
    Remocao,
    Request,
    Resposta,
    decode_estado,
    decode_request,
)

CLIENT_TOPIC = "client/1"


@dataclass
class Member:
    replica: Replica
    cursor: int
    reading: bool = True
    exited: bool = False
    incarnations: int = 1


@dataclass
class Transfer:
    topic: str
    chunks: list[Estado]
    #: Tells the sender it is done (its store stays frozen until then, as in kvserver.node).
    sent: Callable[[], None]
    delivered: int = 0


@dataclass
class Bus:
    n: int
    now: float = 1_000.0
    log_ttl: float = 10.0
    join_timeout: float = 3.0
    members: dict[int, Member] = field(default_factory=dict)
    stream: list[Request | object] = field(default_factory=list)
    answers: list[tuple[str, Resposta]] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    hold_transfers: bool = False
    chunk_items: int = 1000
    #: Replicas as if started with --data-dir: the core's side of PROTOCOL §17 (no files).
    durable: bool = False
    #: The value mirror's prefix (PROTOCOL §14), or None: off.
    mirror: str | None = None
    #: Every mirror publish (replica, topic, payload), and what the broker retains.
    mirrored: list[tuple[int, str, bytes]] = field(default_factory=list)
    retained: dict[str, bytes] = field(default_factory=dict)
    _next_id: int = 1

    # --- membership ---------------------------------------------------------------------

    def config(self, replica_id: int) -> ReplicaSettings:
        return ReplicaSettings(
            replica_id=replica_id,
            n=self.n,
            log_ttl=self.log_ttl,
            join_timeout=self.join_timeout,
            chunk_items=self.chunk_items,
            data_dir=Path(f"/nonexistent/replica-{replica_id}") if self.durable else None,
            mirror=self.mirror,
        )

    @classmethod
    def fresh(cls, n: int, **kwargs: object) -> Bus:
        bus = cls(n, **kwargs)  # type: ignore[arg-type]
        for i in range(n):
            replica = Replica.fresh(bus.config(i), incarnation=f"inc-{i}-1")
            bus.members[i] = Member(replica, cursor=0)
        return bus

    def replica(self, replica_id: int) -> Replica:
        return self.members[replica_id].replica

    def stop(self, replica_id: int) -> None:
        """The process is gone: it reads nothing more."""
        self.members[replica_id].reading = False

    def pause(self, replica_id: int) -> None:
        self.members[replica_id].reading = False

    def resume(self, replica_id: int) -> None:
        self.members[replica_id].reading = True
        self.run()

    def start_joining(self, replica_id: int) -> Replica:
        """A new process for this id subscribes now and joins."""
        incarnation = f"inc-{replica_id}-new"
        replica = Replica(self.config(replica_id), incarnation=incarnation)
        self.members[replica_id] = Member(replica, cursor=len(self.stream))
        self._perform(replica_id, replica.connected(incarnation, self.now))
        self.run()
        return replica

    # --- traffic ------------------------------------------------------------------------

    def publish(self, message: Request) -> None:
        decoded = decode_request(message.encode())
        self.stream.append(decoded)

    def publish_raw(self, payload: bytes) -> None:
        self.stream.append(decode_request(payload))

    def put(
        self, key: str, value: str, rid: int | None = None, if_revision: int | None = None
    ) -> int:
        rid = rid if rid is not None else self._fresh_id()
        self.publish(
            Insercao(
                chave=key, novovalor=value, topico_resp=CLIENT_TOPIC, idpedido=rid,
                serevisao=if_revision,
            )
        )  # fmt: skip
        self.run()
        return rid

    def delete(self, key: str, rid: int | None = None, if_revision: int | None = None) -> int:
        rid = rid if rid is not None else self._fresh_id()
        self.publish(
            Remocao(chave=key, topico_resp=CLIENT_TOPIC, idpedido=rid, serevisao=if_revision)
        )
        self.run()
        return rid

    def list_keys(self, prefix: str = "", after: str | None = None, limit: int = 1000) -> int:
        rid = self._fresh_id()
        self.publish(
            Listagem(
                prefixo=prefix, apos=after, limite=limit, topico_resp=CLIENT_TOPIC, idpedido=rid
            )
        )
        self.run()
        return rid

    def get(self, key: str) -> int:
        rid = self._fresh_id()
        self.publish(Consulta(chave=key, topico_resp=CLIENT_TOPIC, idpedido=rid))
        self.run()
        return rid

    def fail(
        self, replica_id: int, vistoem: float | None = None, incarnation: str | None = None
    ) -> None:
        """What the monitor publishes."""
        member = self.members[replica_id]
        self.publish(
            FalhaServ(
                idserv=replica_id,
                vistoem=self.now if vistoem is None else vistoem,
                incarnacao=incarnation or member.replica.incarnation,
            )
        )
        self.run()

    def _fresh_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid

    def exchange_heartbeats(self) -> None:
        """Heartbeats flow all the time in a real cluster: every running replica hears the
        others' latest."""
        running = [m.replica for m in self.members.values() if m.reading and not m.exited]
        beats = [heartbeat(r, self.now) for r in running]
        for replica in running:
            for beat in beats:
                replica.on_heartbeat(beat, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.exchange_heartbeats()
        for replica_id, member in list(self.members.items()):
            if member.reading and not member.exited:
                self._perform(replica_id, member.replica.tick(self.now))
        self.run()

    # --- delivery -----------------------------------------------------------------------

    def run(self) -> None:
        """Deliver until nothing moves: every reading replica has read the whole stream and
        every transfer not held back is delivered."""
        moved = True
        while moved:
            moved = False
            for replica_id, member in list(self.members.items()):
                while member.reading and not member.exited and member.cursor < len(self.stream):
                    message = self.stream[member.cursor]
                    member.cursor += 1
                    self._perform(replica_id, member.replica.on_request(message, self.now))  # type: ignore[arg-type]
                    moved = True
            if not self.hold_transfers:
                for transfer in self.transfers:
                    moved |= self.deliver_chunks(transfer, len(transfer.chunks))

    def deliver_chunks(self, transfer: Transfer, count: int) -> bool:
        moved = False
        while transfer.delivered < min(count, len(transfer.chunks)):
            chunk = transfer.chunks[transfer.delivered]
            transfer.delivered += 1
            for replica_id, member in self.members.items():
                if member.reading and member.replica.join_topic == transfer.topic:
                    self._perform(
                        replica_id, member.replica.on_state(transfer.topic, chunk, self.now)
                    )
            moved = True
            if transfer.delivered == len(transfer.chunks):
                transfer.sent()
        return moved

    def _perform(self, replica_id: int, effects: list[Effect]) -> None:
        member = self.members[replica_id]
        for effect in effects:
            if isinstance(effect, Publish):
                if effect.topic == REQUESTS_TOPIC:
                    self.publish(effect.message)  # type: ignore[arg-type]
                else:
                    answer = Resposta.model_validate_json(effect.message.encode())
                    self.answers.append((effect.topic, answer))
            elif isinstance(effect, Mirror):
                self.mirrored.append((replica_id, effect.topic, effect.payload))
                if effect.payload:
                    self.retained[effect.topic] = effect.payload
                else:
                    self.retained.pop(effect.topic, None)
            elif isinstance(effect, SendState):
                chunks = []
                for chunk in effect.snapshot.chunks(self.chunk_items):
                    decoded = decode_estado(chunk.encode())
                    assert isinstance(decoded, Estado)
                    chunks.append(decoded)
                done = partial(member.replica.state_sent, effect.snapshot)
                self.transfers.append(Transfer(effect.topic, chunks, done))
            elif isinstance(effect, Reconnect):
                member.incarnations += 1
                member.cursor = len(self.stream)  # a new connection sees only what follows
                incarnation = f"inc-{replica_id}-{member.incarnations}"
                self._perform(replica_id, member.replica.connected(incarnation, self.now))
                return
            elif isinstance(effect, Stop):
                member.exited = True
                return

    # --- what a user would check --------------------------------------------------------

    def answers_to(self, rid: int | str) -> list[Resposta]:
        return [a for t, a in self.answers if t == CLIENT_TOPIC and a.idpedido == rid]

    def answer(self, rid: int | str) -> Resposta:
        found = self.answers_to(rid)
        assert found, f"request {rid} was not answered"
        return found[0]

    def answer_counts(self) -> Counter[int | str | None]:
        return Counter(a.idpedido for t, a in self.answers if t == CLIENT_TOPIC)

    def digests(self, *ids: int) -> set[tuple[int, str]]:
        chosen = ids or tuple(self.members)
        return {(self.replica(i).position, self.replica(i).store.digest()) for i in chosen}
