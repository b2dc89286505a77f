"""An in-memory broker for replica cores: one ordered request stream, fake time.

Every message goes through the real encoder and through `kvserver.routing`, the adapter's own
routing (decoding, redeliveries, forgeries), and each core's output is taken as `kvserver.node`
takes it: one `Ready`, its durable part written first (to an in-memory disk that a test can
make fail), then its effects. The bus checks that order on every hand-off. Replicas can be
stopped (they stop reading, as after `kill -9`), delayed (they read later, as after SIGSTOP)
and started again; state transfers can be held back or cut short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from kvserver.disk import DataDir
from kvserver.durable import OnDisk, Written
from kvserver.effects import Effect, Mirror, Publish, Ready, Reconnect, SendState, Stop
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.routing import Router
from kvserver.settings import ReplicaSettings
from kvwire.batch import decode_answers, encode_batch
from kvwire.feed import Evento, FimVigia, Historico, Vigia
from kvwire.leasing import Concessao, Renovacao, Revogacao
from kvwire.messages import (
    MONITOR_TOPIC,
    REQUESTS_TOPIC,
    SYNC_TOPIC_PREFIX,
    Consulta,
    Estado,
    FalhaServ,
    Insercao,
    Invalid,
    Listagem,
    Recuperacao,
    Remocao,
    Request,
    Resposta,
    decode_estado,
)
from kvwire.txn import Transacao

CLIENT_TOPIC = "client/1"


def fed(replica: Replica, message: Request | Invalid, now: float = 0.0) -> list[Effect]:
    """One request fed to one core, and the effects it made ready (for tests of one core)."""
    replica.on_request(message, now)
    return replica.ready().effects


class DiskFailed(OSError):
    """What the in-memory disk raises for a replica whose disk a test made fail."""


def router_for(replica_id: int) -> Router:
    return Router(replica_id, requests_topic=REQUESTS_TOPIC, monitor_topic=MONITOR_TOPIC)


@dataclass
class Member:
    replica: Replica
    cursor: int
    reading: bool = True
    exited: bool = False
    incarnations: int = 1
    #: The position of the last state written to its (in-memory) disk.
    on_disk: int | None = None
    router: Router = field(init=False)

    def __post_init__(self) -> None:
        self.router = router_for(self.replica.id)


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
    #: The request topic's payloads, in broker order.
    stream: list[bytes] = field(default_factory=list)
    answers: list[tuple[str, Resposta]] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    hold_transfers: bool = False
    chunk_items: int = 1000
    dedup_capacity: int = 200_000
    #: Replicas as if started with --data-dir: the core's side of protocol §17 (no files).
    durable: bool = False
    #: The value mirror's prefix (protocol §14), or None: off.
    mirror: str | None = None
    #: The change feed's history bounds (protocol §19).
    history_limit: int = 100_000
    history_age: float = 3600.0
    #: The cluster's quota (issue 29), or None: no limit.
    max_keys: int | None = None
    max_bytes: int | None = None
    #: Every mirror publish (replica, topic, payload), and what the broker retains.
    mirrored: list[tuple[int, str, bytes]] = field(default_factory=list)
    retained: dict[str, bytes] = field(default_factory=dict)
    #: Replicas whose disk fails on the next write: the process dies, as `kvserver.node`'s.
    failing_disks: set[int] = field(default_factory=set)
    #: Every durable write (replica, what was written), in order.
    written: list[tuple[int, Written]] = field(default_factory=list)
    #: Every change feed event (§19) sent: (replica, topic, event), in order.
    events: list[tuple[int, str, Evento]] = field(default_factory=list)
    #: Every message of answers sent: (replica, topic, answers it held), in order.
    answer_messages: list[tuple[int, str, int]] = field(default_factory=list)
    _next_id: int = 1

    # --- membership ---------------------------------------------------------------------

    def config(self, replica_id: int) -> ReplicaSettings:
        return ReplicaSettings(
            replica_id=replica_id,
            n=self.n,
            log_ttl=self.log_ttl,
            join_timeout=self.join_timeout,
            chunk_items=self.chunk_items,
            dedup_capacity=self.dedup_capacity,
            data_dir=Path(f"/nonexistent/replica-{replica_id}") if self.durable else None,
            mirror=self.mirror,
            history=self.history_limit,
            history_age=self.history_age,
            max_keys=self.max_keys,
            max_bytes=self.max_bytes,
        )

    @classmethod
    def fresh(cls, n: int, **kwargs: object) -> Bus:
        bus = cls(n, **kwargs)  # type: ignore[arg-type]
        for i in range(n):
            replica = Replica.fresh(bus.config(i), incarnation=f"inc-{i}-1")
            bus.members[i] = Member(replica, cursor=0)
            bus.settle(i)  # a fresh replica's directory holds position 0 from the start
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

    def stall_everyone(self, order: tuple[int, ...] | None = None) -> None:
        """SIGSTOP of every replica, long enough for the monitor to declare each failed, then
        SIGCONT in `order`: each reads its own failure, is fenced and joins again."""
        for i in self.members:
            self.pause(i)
        for i in self.members:
            self.fail(i)
        for i in order or tuple(self.members):
            self.resume(i)

    def start_joining(self, replica_id: int) -> Replica:
        """A new process for this id subscribes now and joins."""
        incarnation = f"inc-{replica_id}-new"
        replica = Replica(self.config(replica_id), incarnation=incarnation)
        self.members[replica_id] = Member(replica, cursor=len(self.stream))
        replica.connected(incarnation, self.now)
        self.settle(replica_id)
        self.run()
        return replica

    # --- traffic ------------------------------------------------------------------------

    def publish(self, message: Request) -> None:
        self.stream.append(message.encode())

    def publish_raw(self, payload: bytes) -> None:
        self.stream.append(payload)

    def batch(self, *messages: Request) -> None:
        """One `lote` (§21) of these requests, as `KVClient` writes it; not delivered yet."""
        self.stream.append(encode_batch([message.encode() for message in messages]))

    def next_id(self) -> int:
        return self._fresh_id()

    def put(
        self,
        key: str,
        value: str,
        rid: int | None = None,
        if_revision: int | None = None,
        lease: str | None = None,
    ) -> int:
        rid = rid if rid is not None else self._fresh_id()
        self.publish(
            Insercao(
                chave=key, novovalor=value, topico_resp=CLIENT_TOPIC, idpedido=rid,
                serevisao=if_revision, concessao=lease,
            )
        )  # fmt: skip
        self.run()
        return rid

    def grant(self, name: str, ttl: int, rid: int | None = None) -> int:
        rid = rid if rid is not None else self._fresh_id()
        self.publish(Concessao(concessao=name, ttl=ttl, topico_resp=CLIENT_TOPIC, idpedido=rid))
        self.run()
        return rid

    def keep_alive(self, name: str) -> int:
        rid = self._fresh_id()
        self.publish(Renovacao(concessao=name, topico_resp=CLIENT_TOPIC, idpedido=rid))
        self.run()
        return rid

    def revoke(self, name: str) -> int:
        rid = self._fresh_id()
        self.publish(Revogacao(concessao=name, topico_resp=CLIENT_TOPIC, idpedido=rid))
        self.run()
        return rid

    def watch(
        self,
        lease: str,
        prefix: str = "",
        since: int | None = None,
        topic: str = CLIENT_TOPIC,
        rid: int | None = None,
    ) -> int:
        rid = rid if rid is not None else self._fresh_id()
        self.publish(
            Vigia(prefixo=prefix, desde=since, concessao=lease, topico_resp=topic, idpedido=rid)
        )
        self.run()
        return rid

    def txn(
        self,
        se: list[dict[str, object]],
        entao: list[dict[str, object]],
        senao: list[dict[str, object]] | None = None,
        rid: int | None = None,
    ) -> int:
        rid = rid if rid is not None else self._fresh_id()
        body = {"tipomsg": "transacao", "se": se, "entao": entao, "senao": senao or []}
        self.publish(
            Transacao.model_validate({**body, "topico-resp": CLIENT_TOPIC, "idpedido": rid})
        )
        self.run()
        return rid

    def cancel_watch(self, watch: int, topic: str = CLIENT_TOPIC) -> int:
        rid = self._fresh_id()
        self.publish(FimVigia(vigia=watch, topico_resp=topic, idpedido=rid))
        self.run()
        return rid

    def history(self, key: str, limit: int = 1000) -> int:
        rid = self._fresh_id()
        self.publish(Historico(chave=key, limite=limit, topico_resp=CLIENT_TOPIC, idpedido=rid))
        self.run()
        return rid

    def events_of(self, watch: int, topic: str = CLIENT_TOPIC) -> list[Evento]:
        return [e for _, t, e in self.events if t == topic and e.idpedido == watch]

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

    def _running(self) -> list[int]:
        return [i for i, m in self.members.items() if m.reading and not m.exited]

    def exchange_heartbeats(self) -> None:
        """Heartbeats flow all the time in a real cluster: every running replica hears the
        others' latest."""
        running = self._running()
        beats = [heartbeat(self.replica(i), self.now).encode() for i in running]
        for i in running:
            for beat in beats:
                self.deliver(i, MONITOR_TOPIC, beat)

    def order_recovery(self, without: list[int]) -> None:
        """What `kvclient recover --without ...` publishes on the monitor topic."""
        order = Recuperacao(sem=without, enviadoem=self.now).encode()
        for i in self._running():
            self.deliver(i, MONITOR_TOPIC, order)
        self.run()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.exchange_heartbeats()
        for replica_id in self._running():
            self.replica(replica_id).tick(self.now)
            self.settle(replica_id)
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
                    payload = self.stream[member.cursor]
                    member.cursor += 1
                    self.deliver(replica_id, REQUESTS_TOPIC, payload)
                    moved = True
            if not self.hold_transfers:
                for transfer in self.transfers:
                    moved |= self.deliver_chunks(transfer, len(transfer.chunks))

    def deliver_chunks(self, transfer: Transfer, count: int) -> bool:
        moved = False
        subscribed = f"{SYNC_TOPIC_PREFIX}/{{}}/"  # each replica reads its own sync topics
        while transfer.delivered < min(count, len(transfer.chunks)):
            payload = transfer.chunks[transfer.delivered].encode()
            transfer.delivered += 1
            for replica_id, member in list(self.members.items()):
                if member.reading and transfer.topic.startswith(subscribed.format(replica_id)):
                    self.deliver(replica_id, transfer.topic, payload)
            moved = True
            if transfer.delivered == len(transfer.chunks):
                transfer.sent()
        return moved

    def deliver(self, replica_id: int, topic: str, payload: bytes) -> None:
        """One message to one replica, routed as its adapter routes it; then its output."""
        member = self.members[replica_id]
        if member.exited:
            return
        routed = member.router.route(topic, payload)
        if routed is not None:
            member.replica.receive(routed, self.now)
        self.settle(replica_id)

    def settle(self, replica_id: int) -> None:
        """Take the replica's `Ready`s until it has nothing more, as its adapter does."""
        member = self.members[replica_id]
        while not member.exited and (ready := member.replica.ready()):
            if not self._make_durable(replica_id, ready):
                return
            self._perform(replica_id, ready)

    def _make_durable(self, replica_id: int, ready: Ready) -> bool:
        """Write `ready.durable`; False if the disk failed (the process dies, its effects
        with it, as `kvserver.node`'s does)."""
        member = self.members[replica_id]
        if ready.durable is not None:
            if replica_id in self.failing_disks:
                member.exited = True
                return False
            # Written now, as the adapter does: the whole state is read from the live store.
            whole = replace(ready.durable, pairs=list(ready.durable.pairs))
            self.written.append((replica_id, whole))
            member.on_disk = ready.durable.position
        elif self.durable and any(isinstance(e, Publish | Mirror) for e in ready.effects):
            # Nothing new to write is fine only if what was applied is on disk already.
            assert member.on_disk == member.replica.position, (
                f"replica {replica_id} publishes at position {member.replica.position} with "
                f"position {member.on_disk} on disk"
            )
        return True

    def _perform(self, replica_id: int, ready: Ready) -> None:
        member = self.members[replica_id]
        for effect in ready.effects:
            if isinstance(effect, Publish):
                if effect.topic == REQUESTS_TOPIC:
                    self.publish(effect.message)  # type: ignore[arg-type]
                elif isinstance(effect.message, Evento):
                    event = Evento.model_validate_json(effect.message.encode())
                    self.events.append((replica_id, effect.topic, event))
                else:  # one answer, or a batch's (§21): as a client reads them
                    answers = decode_answers(effect.message.encode())
                    assert not isinstance(answers, Invalid), answers
                    self.answer_messages.append((replica_id, effect.topic, len(answers)))
                    self.answers.extend((effect.topic, answer) for answer in answers)
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
                member.router = router_for(replica_id)
                incarnation = f"inc-{replica_id}-{member.incarnations}"
                member.replica.connected(incarnation, self.now)
                return
            elif isinstance(effect, Stop):
                member.exited = True
                return

    # --- what a user would check --------------------------------------------------------

    def answers_to(self, rid: int | str, topic: str = CLIENT_TOPIC) -> list[Resposta]:
        return [a for t, a in self.answers if t == topic and a.idpedido == rid]

    def answer(self, rid: int | str, topic: str = CLIENT_TOPIC) -> Resposta:
        found = self.answers_to(rid, topic)
        assert found, f"request {rid} was not answered"
        return found[0]

    def answer_counts(self) -> Counter[int | str | None]:
        return Counter(a.idpedido for t, a in self.answers if t == CLIENT_TOPIC)

    def digests(self, *ids: int) -> set[tuple[int, str]]:
        chosen = ids or tuple(self.members)
        return {(self.replica(i).position, self.replica(i).store.digest()) for i in chosen}

    def read_back(self, replica_id: int, where: Path) -> OnDisk:
        """Every write the replica handed over, made by a real `DataDir` in `where`, and
        read back as after a stop."""
        path = where / str(replica_id)
        with DataDir(path, replica_id=replica_id, n=self.n, sync="never") as disk:
            for i, written in self.written:
                if i == replica_id:
                    disk.write(written)
        with DataDir(path, replica_id=replica_id, n=self.n, sync="never") as disk:
            back = disk.load()
        assert back is not None
        return back

    def watches(self, *ids: int) -> list[object]:
        """What each replica holds of the watches (`Feed.agreed`): equal on all, or a bug."""
        chosen = ids or tuple(self.members)
        return [self.replica(i).feed.agreed() for i in chosen]

    def leases(self, *ids: int) -> list[object]:
        """What each replica holds of the leases (`Leases.agreed`): equal on all, or a bug."""
        chosen = ids or tuple(self.members)
        return [self.replica(i).leases.agreed() for i in chosen]
