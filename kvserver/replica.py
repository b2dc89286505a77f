"""The replica as a deterministic state machine (PROTOCOL §4–§8, §11).

It is fed decoded messages and the current time and returns what to publish. It never
touches paho, a thread or a clock: the adapter in `kvserver.node` does that, and the tests
drive this class directly with messages and fake time.

Two modes. `live`: every message of the request topic is applied in order, and this replica
answers the requests whose key it owns. `joining`: it has no trustworthy state; it discards
the stream until its own `novoserv` comes back, buffers what follows, loads the `estado`
chunks cut at exactly that position, applies the buffer and goes live.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Literal

from kvserver.effects import Effect, Publish, Reconnect, SendState, Stop
from kvserver.history import RequestLog, SeenSet
from kvserver.store import Store
from kvserver.transfer import Assembly, Snapshot
from kvwire.errors import ConfigError
from kvwire.messages import (
    CHECKPOINT_EVERY,
    REQUESTS_TOPIC,
    Consulta,
    Estado,
    FalhaServ,
    Heartbeat,
    Insercao,
    Invalid,
    LogEntry,
    NovoServ,
    Request,
    Resposta,
    sync_topic,
)
from kvwire.ring import key_slot, owners_by_slot, successor
from kvwire.topics import TopicCheck

log = logging.getLogger("kvserver")


@dataclass(frozen=True)
class ReplicaConfig:
    replica_id: int
    n: int
    requests_topic: str = REQUESTS_TOPIC
    #: How long a request stays in the log (PROTOCOL §6: 10 × the failure timeout).
    log_ttl: float = 10.0
    #: How far before `vistoem` a substitute replays (a duplicate answer is harmless).
    skew_margin: float = 0.25
    #: How many applied writes are remembered for de-duplication.
    dedup_capacity: int = 200_000
    #: A join attempt with no progress for this long is started again.
    join_timeout: float = 3.0
    #: A peer whose last heartbeat is older than this is not counted as heard.
    peer_timeout: float = 1.0
    max_key_bytes: int = 1024
    max_value_bytes: int = 256 * 1024
    #: Pairs (or log entries) per `estado` chunk.
    chunk_items: int = 1000
    #: Test only: a broken replica that acknowledges writes but applies each one this many
    #: writes late, so its reads are stale. The fault suite must catch it.
    lag_writes_for_tests: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, not {self.n}")
        if not 0 <= self.replica_id < self.n:
            raise ConfigError(f"--id must be between 0 and {self.n - 1}, not {self.replica_id}")
        if self.log_ttl <= self.skew_margin:
            raise ConfigError("the log must outlive the skew margin (log_ttl > skew_margin)")
        if self.chunk_items < 1:
            raise ConfigError("a state chunk must hold at least one item")


@dataclass
class _Peer:
    mode: str
    position: int | None
    seen_at: float


@dataclass
class _Join:
    incarnation: str
    sync_topic: str
    keep_store: bool
    started_at: float
    progress_at: float
    announced: bool = False
    buffer: list[tuple[Request | Invalid, float]] = field(default_factory=list)
    assembly: Assembly | None = None
    waiting_said_at: float = float("-inf")


_INVALID_LOG_EVERY = 1000


class Replica:
    def __init__(self, config: ReplicaConfig, *, incarnation: str) -> None:
        self.config = config
        self.id = config.replica_id
        self.n = config.n
        self.incarnation = incarnation
        self.mode: Literal["live", "joining"] = "joining"
        self.store = Store()
        self.position = 0
        self.live: list[bool] = [True] * self.n
        self.incarnations: list[str | None] = [None] * self.n
        self.log = RequestLog(config.log_ttl)
        self.seen = SeenSet(config.dedup_capacity)
        self.invalid_count = 0
        #: Requests applied but not answered: their reply topic cannot be published to.
        self.unanswered_count = 0
        self.duplicates_ignored = 0
        self._topics = TopicCheck()
        self.checkpoint: tuple[int, str] | None = None
        self._lagging: list[tuple[str, str]] = []
        self._owners = owners_by_slot(self.live)
        self._join: _Join | None = None
        self._pending: list[tuple[Request | Invalid, float]] = []
        self._peers: dict[int, _Peer] = {}
        self._has_candidate = False

    # --- starting -------------------------------------------------------------------------

    @classmethod
    def fresh(cls, config: ReplicaConfig, *, incarnation: str) -> Replica:
        """A member of a new, empty cluster: live at once, every replica presumed live."""
        replica = cls(config, incarnation=incarnation)
        replica.mode = "live"
        replica.incarnations[replica.id] = incarnation
        replica._has_candidate = True
        log.info("replica %d starts fresh at position 0", replica.id)
        return replica

    def start_join(self, incarnation: str, now: float, *, keep_store: bool) -> list[Effect]:
        """Begin (or begin again) to join: announce a `novoserv` with a fresh sync topic."""
        if self._join is not None:
            # Only requests a client may still wait for are worth answering later.
            horizon = now - self.config.log_ttl
            self._pending = [p for p in (*self._pending, *self._join.buffer) if p[1] >= horizon]
        self.incarnation = incarnation
        self.mode = "joining"
        self._has_candidate = keep_store and self._has_candidate
        if not self._has_candidate:
            self.store = Store()  # never hold the old state beside the one being loaded
        topic = sync_topic(self.id, secrets.token_hex(6))
        self._join = _Join(incarnation, topic, keep_store, now, now)
        log.info(
            "replica %d joining: novoserv on %s (candidate position %s)",
            self.id,
            topic,
            self.position if self._has_candidate else "none",
        )
        return [Publish(self.config.requests_topic, self._novoserv())]

    @property
    def join_topic(self) -> str | None:
        return self._join.sync_topic if self._join else None

    def _novoserv(self) -> NovoServ:
        assert self._join is not None
        return NovoServ(
            idserv=self.id,
            topico_resp=self._join.sync_topic,
            incarnacao=self._join.incarnation,
            posicao=self.position if self._has_candidate else None,
        )

    # --- input ----------------------------------------------------------------------------

    def on_request(self, message: Request | Invalid, now: float) -> list[Effect]:
        """One message of the request topic, in broker order."""
        if self.mode == "live":
            out: list[Effect] = []
            self._apply(message, now, out)
            return out
        join = self._join
        if join is None:  # fenced: the adapter is about to start a new join
            return []
        if join.announced:
            join.buffer.append((message, now))
        elif (
            isinstance(message, NovoServ)
            and message.idserv == self.id
            and message.topico_resp == join.sync_topic
        ):
            join.announced = True
            join.progress_at = now
            return self._maybe_finish_join(now)
        return []

    def on_state(self, topic: str, chunk: Estado, now: float) -> list[Effect]:
        """One `estado` chunk on a sync topic."""
        join = self._join
        if self.mode != "joining" or join is None or topic != join.sync_topic:
            return []
        if join.assembly is None:
            join.assembly = Assembly.start(chunk)
        elif not join.assembly.belongs(chunk):
            log.warning(
                "replica %d ignores a state chunk from replica %d at cut %d: another transfer "
                "(from %d at %d) is under way",
                self.id,
                chunk.idserv,
                chunk.corte,
                join.assembly.sender,
                join.assembly.corte,
            )
            return []
        join.assembly.add(chunk)
        join.progress_at = now
        return self._maybe_finish_join(now)

    def on_heartbeat(self, beat: Heartbeat, now: float) -> list[Effect]:
        """A peer's heartbeat or last will: only used to decide how to join (§7, §11)."""
        if beat.idserv == self.id or not 0 <= beat.idserv < self.n:
            return []
        if beat.modo == "gone":
            self._peers.pop(beat.idserv, None)
        else:
            self._peers[beat.idserv] = _Peer(beat.modo, beat.posicao, now)
        return []

    def on_session_lost(self, now: float) -> list[Effect]:
        """The broker forgot our session: messages were lost, so what we hold is only a
        candidate (PROTOCOL §11)."""
        if self.mode == "live":
            log.warning(
                "replica %d lost its broker session at position %d: re-joining",
                self.id,
                self.position,
            )
        return [Reconnect("session lost", keep_store=True, with_will=True)]

    def tick(self, now: float) -> list[Effect]:
        """Time passes: expire the log, and give up on a join attempt that stalled."""
        self.log.expire(now)
        join = self._join
        if self.mode != "joining" or join is None:
            return []
        if now - join.progress_at < self.config.join_timeout:
            return []
        heard = {
            i: peer
            for i, peer in self._peers.items()
            if now - peer.seen_at <= self.config.peer_timeout
        }
        if any(peer.mode == "live" for peer in heard.values()):
            log.warning(
                "replica %d got no state within %.1f s: asking again",
                self.id,
                self.config.join_timeout,
            )
        elif self._wins_recovery(heard):
            return self._resume_alone(now)
        elif now - join.waiting_said_at >= 10 * self.config.join_timeout:
            if any(peer.position is not None for peer in heard.values()):
                log.warning(
                    "replica %d is waiting to join: no replica is live; the re-joining replica "
                    "with the highest position will resume",
                    self.id,
                )
            else:
                log.warning(
                    "replica %d is waiting to join: no live replica is heard on the monitor "
                    "topic (start one with --fresh to create a new cluster)",
                    self.id,
                )
            join.waiting_said_at = now
        # Ask again (new nonce), keeping the incarnation: the replicas already know it.
        waiting_said_at = join.waiting_said_at
        out = self.start_join(join.incarnation, now, keep_store=join.keep_store)
        assert self._join is not None
        self._join.waiting_said_at = waiting_said_at
        return out

    # --- applying the stream --------------------------------------------------------------

    def _apply(self, message: Request | Invalid, now: float, out: list[Effect]) -> None:
        self.position += 1
        if self.position % CHECKPOINT_EVERY == 0:
            self.checkpoint = (self.position, self.store.digest())
        if isinstance(message, Consulta):
            self.log.append((now, "c", message.chave, message.topico_resp, message.idpedido, None))
            if self._owns(message.chave):
                self._answer_read(message.chave, message.topico_resp, message.idpedido, out)
        elif isinstance(message, Insercao):
            self._apply_write(message, now, out)
        elif isinstance(message, FalhaServ):
            self._apply_failure(message, now, out)
        elif isinstance(message, NovoServ):
            self._apply_join(message, out)
        else:
            self._reject(message, out)

    def _owns(self, key: str) -> bool:
        return self._owners[key_slot(key, self.n)] == self.id

    def _answer(
        self, key: str, value: str | None, topic: str, rid: int | str, out: list[Effect]
    ) -> None:
        # Validating (in Rust) costs half what model_construct (in Python) does.
        status: Literal["ok", "naoencontrada"] = "ok" if value is not None else "naoencontrada"
        answer = Resposta(idpedido=rid, chave=key, valor=value, status=status, idserv=self.id)
        self._reply(topic, answer, out)

    def _reply(self, topic: str, answer: Resposta, out: list[Effect]) -> None:
        """Publish an answer, unless its address is one no MQTT client may publish to: the
        request stays applied (a write is still a write), only the answer is dropped."""
        problem = self._topics.problem(topic)
        if problem is None:
            out.append(Publish(topic, answer))
            return
        self.unanswered_count += 1
        if self.unanswered_count <= 20 or self.unanswered_count % _INVALID_LOG_EVERY == 0:
            log.warning(
                "replica %d applied request %.40r at position %d without answering it (%d so "
                "far): its topico-resp %s",
                self.id,
                answer.idpedido,
                self.position,
                self.unanswered_count,
                problem,
            )

    def _answer_read(self, key: str, topic: str, rid: int | str, out: list[Effect]) -> None:
        self._answer(key, self.store.get(key), topic, rid, out)

    def _apply_write(self, message: Insercao, now: float, out: list[Effect]) -> None:
        key, value = message.chave, message.novovalor
        problem = self._write_problem(key, value)
        if problem is not None:
            # Every replica refuses it alike; only the owner says so.
            if self._owns(key):
                self._error(message.topico_resp, message.idpedido, problem, out, key)
            return
        request_key = (message.topico_resp, message.idpedido)
        self.log.append((now, "i", key, message.topico_resp, message.idpedido, value))
        if not self.seen.add(request_key):
            self.duplicates_ignored += 1
        elif self.config.lag_writes_for_tests:
            self._lagging.append((key, value))
            if len(self._lagging) > self.config.lag_writes_for_tests:
                self.store.put(*self._lagging.pop(0))
        else:
            self.store.put(key, value)
        if self._owns(key):
            self._answer(key, value, message.topico_resp, message.idpedido, out)

    def _write_problem(self, key: str, value: str) -> str | None:
        if len(key.encode()) > self.config.max_key_bytes:
            return f"key longer than {self.config.max_key_bytes} bytes"
        # A UTF-8 character is at most 4 bytes: most values need no encoding to be judged.
        limit = self.config.max_value_bytes
        if len(value) * 4 > limit and len(value.encode()) > limit:
            return f"value longer than {limit} bytes"
        return None

    def _error(
        self,
        topic: str,
        rid: int | str | None,
        reason: str,
        out: list[Effect],
        key: str | None = None,
    ) -> None:
        answer = Resposta(
            idpedido=rid, chave=key, valor=None, status="erro", idserv=self.id, erro=reason
        )
        self._reply(topic, answer, out)

    def _reject(self, message: Invalid, out: list[Effect]) -> None:
        self.invalid_count += 1
        if self.invalid_count <= 20 or self.invalid_count % _INVALID_LOG_EVERY == 0:
            log.warning(
                "replica %d rejected message at position %d (%d so far): %s",
                self.id,
                self.position,
                self.invalid_count,
                message.reason,
            )
        # One replica answers, chosen as if the response topic were the key.
        if message.topico_resp is not None and self._owns(message.topico_resp):
            self._error(message.topico_resp, message.idpedido, message.reason, out)

    def _apply_failure(self, message: FalhaServ, now: float, out: list[Effect]) -> None:
        failed = message.idserv
        if not 0 <= failed < self.n:
            self._reject(Invalid(f"falhaserv names replica {failed}, not in 0..{self.n - 1}"), out)
            return
        known = self.incarnations[failed]
        stale = message.incarnacao is not None and known is not None and message.incarnacao != known
        if failed == self.id:
            if not stale:
                log.warning(
                    "replica %d fenced at position %d: declared failed (last seen %.3f); "
                    "it stops answering and re-joins, its store kept as a candidate",
                    self.id,
                    self.position,
                    message.vistoem,
                )
                # Its store is the stream applied up to here, like everyone's: if every
                # replica was fenced at once (a host pause), the highest of them resumes
                # (PROTOCOL §11) instead of the cluster waiting forever with no data.
                self.mode = "joining"
                out.append(Reconnect("fenced", keep_store=True, with_will=False))
            return
        if not self.live[failed] or stale:
            return
        previous = self._owners
        self.live[failed] = False
        self._owners = owners_by_slot(self.live)
        if self._owners[failed] != self.id:
            log.info("replica %d: replica %d failed at position %d", self.id, failed, self.position)
            return
        # We now answer for `failed`: replay what it may have left unanswered (PROTOCOL §6).
        replayed = 0
        for entry in self.log.since(message.vistoem - self.config.skew_margin):
            slot = key_slot(entry[2], self.n)
            if previous[slot] == failed and self._owners[slot] == self.id:
                self._replay(entry, out)
                replayed += 1
        log.warning(
            "replica %d takes over for replica %d at position %d: replayed %d requests since %.3f",
            self.id,
            failed,
            self.position,
            replayed,
            message.vistoem,
        )

    def _replay(self, entry: LogEntry, out: list[Effect]) -> None:
        _, kind, key, topic, rid, value = entry
        if kind == "c":
            self._answer_read(key, topic, rid, out)
        elif value is not None:
            self._answer(key, value, topic, rid, out)

    def _apply_join(self, message: NovoServ, out: list[Effect]) -> None:
        joiner = message.idserv
        if not 0 <= joiner < self.n:
            self._reject(Invalid(f"novoserv names replica {joiner}, not in 0..{self.n - 1}"), out)
            return
        problem = self._topics.problem(message.topico_resp)
        if problem is not None:
            # No joiner can listen there, and sending state to it would fail on every chunk.
            self._reject(Invalid(f"novoserv of replica {joiner}: its topico-resp {problem}"), out)
            return
        if joiner == self.id:
            if message.incarnacao != self.incarnation:
                log.error(
                    "replica %d: another process announced itself with this id at position %d; "
                    "this one stops",
                    self.id,
                    self.position,
                )
                self.mode = "joining"
                out.append(Stop("another process took this replica's id"))
            return
        self.live[joiner] = True
        self.incarnations[joiner] = message.incarnacao
        self._owners = owners_by_slot(self.live)
        if successor(self.live, joiner) != self.id:
            log.info("replica %d: replica %d joins at position %d", self.id, joiner, self.position)
            return
        snapshot = Snapshot(
            sender=self.id,
            corte=self.position,
            pairs=self.store.freeze(),
            digest=self.store.digest(),
            live=tuple(self.live),
            incarnations=tuple(self.incarnations),
            seen=self.seen.snapshot(),
            log=self.log.snapshot(),
        )
        log.warning(
            "replica %d hands back to replica %d at position %d: sending %d keys to %s",
            self.id,
            joiner,
            self.position,
            len(snapshot.pairs),
            message.topico_resp,
        )
        out.append(SendState(message.topico_resp, snapshot))

    def state_sent(self, snapshot: Snapshot) -> None:
        """The adapter is done with `snapshot` (sent, or given up): its pairs may change again."""
        self.store.thaw(snapshot.pairs)

    # --- finishing a join -----------------------------------------------------------------

    def _maybe_finish_join(self, now: float) -> list[Effect]:
        join = self._join
        assert join is not None
        assembly = join.assembly
        if not (join.announced and assembly is not None and assembly.complete):
            return []
        problem = assembly.problem()
        if problem is not None:
            log.error(
                "replica %d rejects the state from replica %d: %s",
                self.id,
                assembly.sender,
                problem,
            )
            return self.start_join(join.incarnation, now, keep_store=join.keep_store)
        self.store = assembly.store
        self.seen = assembly.seen_set(self.config.dedup_capacity)
        self.log = assembly.request_log(self.config.log_ttl)
        self.position = assembly.corte
        self.checkpoint = None
        self.live = [str(i) in assembly.incarnacoes for i in range(self.n)]
        self.incarnations = [assembly.incarnacoes.get(str(i)) for i in range(self.n)]
        log.warning(
            "replica %d joined at position %d from replica %d: %d keys, %d buffered messages",
            self.id,
            self.position,
            assembly.sender,
            len(self.store),
            len(join.buffer),
        )
        return self._go_live(join, now)

    def _go_live(self, join: _Join, now: float) -> list[Effect]:
        self._owners = owners_by_slot(self.live)
        self.mode = "live"
        self._has_candidate = True
        self._join = None
        out: list[Effect] = []
        for message, arrived in join.buffer:
            self._apply(message, arrived, out)
            if self.mode != "live":  # fenced or superseded by what we just applied
                return out
        # Requests that arrived during an earlier, failed attempt were meant for us and
        # nobody answered them; they are before the cut, so answer with today's value.
        for message, _ in self._pending:
            if isinstance(message, (Consulta, Insercao)) and self._owns(message.chave):
                if isinstance(message, Consulta):
                    self._answer_read(message.chave, message.topico_resp, message.idpedido, out)
                elif (message.topico_resp, message.idpedido) in self.seen:
                    self._answer(
                        message.chave, message.novovalor, message.topico_resp, message.idpedido, out
                    )
        self._pending = []
        return out

    def _wins_recovery(self, heard: dict[int, _Peer]) -> bool:
        """PROTOCOL §11: nobody is live; the re-joining replica with the highest position
        (ties: lowest id) resumes from its own store."""
        if not self._has_candidate:
            return False
        mine = (self.position, -self.id)
        for peer_id, peer in heard.items():
            position = peer.position if peer.position is not None else -1
            if (position, -peer_id) > mine:
                return False
        return True

    def _resume_alone(self, now: float) -> list[Effect]:
        join = self._join
        assert join is not None
        log.warning(
            "replica %d resumes alone from its own store at position %d: no replica is live "
            "and none heard has a later position",
            self.id,
            self.position,
        )
        self.live = [i == self.id for i in range(self.n)]
        self.incarnations = [join.incarnation if i == self.id else None for i in range(self.n)]
        self._pending = []
        return self._go_live(join, now)

    # --- reporting ------------------------------------------------------------------------

    def substituting(self) -> list[int]:
        return [s for s in range(self.n) if s != self.id and self._owners[s] == self.id]

    def heartbeat(self, now: float) -> Heartbeat:
        live = self.mode == "live"
        return Heartbeat(
            idserv=self.id,
            incarnacao=self.incarnation,
            modo=self.mode,
            posicao=self.position if live or self._has_candidate else None,
            chaves=len(self.store),
            resumo=self.store.digest() if live else None,
            substituindo=self.substituting() if live else None,
            marco=self.checkpoint[0] if live and self.checkpoint else None,
            resumomarco=self.checkpoint[1] if live and self.checkpoint else None,
            n=self.n,
            enviadoem=now,
            invalidas=self.invalid_count,
            semresposta=self.unanswered_count,
        )


def new_incarnation() -> str:
    return secrets.token_hex(8)
