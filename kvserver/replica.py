"""The replica as a deterministic state machine (protocol §4–§8, §11).

It is fed decoded messages and the current time, and hands over what to publish. It
never touches paho, a thread, a clock or a random source: the adapter in `kvserver.node`
does that, and the tests drive this class directly with messages and fake time.

Its states (`starting`, `joining`, `live`, `fenced`, `stopped`) and every transition between
them are the tables of `kvserver.states`, with what each state means.

What each state takes in is `kvserver.states.ACCEPTS`; an input at a closed door is dropped.
Inputs return nothing: what they produce waits in the core until the adapter takes it with
`ready()`, what to make durable first, then what to publish (`kvserver.effects.Ready`).
"""

from __future__ import annotations

import logging
from typing import Literal

from kvserver.backup import backup, restored_store
from kvserver.batch import grouped
from kvserver.durable import Changes, OnDisk, Written, written
from kvserver.effects import Effect, Publish, Ready, Reconnect, SendState, Stop
from kvserver.failover import StaleNotices, inherited, to_replay
from kvserver.feed import Feed
from kvserver.history import RequestLog, SeenSet
from kvserver.join import JoinAttempt, Rejoin, recovery_choice, waiting_reason
from kvserver.leases import Leases, apply_lease, earlier_lease, lease_outcome_logged
from kvserver.mirror import ValueMirror
from kvserver.replies import Replies, ReplyTo
from kvserver.routing import Routed, StateChunk
from kvserver.settings import ReplicaSettings
from kvserver.states import ACCEPTS, NEXT, Event, IllegalTransition, Input, State
from kvserver.store import Entry, Store, unpack
from kvserver.tally import Tally
from kvserver.transfer import Snapshot
from kvserver.txn import apply_txn, logged_txn_outcome, txn_problem
from kvserver.view import View
from kvserver.writes import apply_write, earlier_outcome, write_problem
from kvwire.batch import Batch
from kvwire.feed import ChangeKind, FimVigia, Historico, Vigia
from kvwire.leasing import (
    Concessao,
    Expiracao,
    LeaseOp,
    ListaConcessoes,
    Renovacao,
    Revogacao,
    lease_name_problem,
)
from kvwire.messages import (
    CHECKPOINT_EVERY,
    Consulta,
    Estado,
    FalhaServ,
    Heartbeat,
    Insercao,
    Invalid,
    Listagem,
    LoggedRequest,
    NovoServ,
    Recuperacao,
    Remocao,
    Request,
)
from kvwire.snapshot import Instantaneo, SnapshotFile
from kvwire.txn import Transacao

log = logging.getLogger("kvserver")

#: The hand-off of a step that produced nothing (adapters only read what they are handed).
_NOTHING = Ready()


class Replica:
    def __init__(
        self, settings: ReplicaSettings, *, incarnation: str, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.id = settings.replica_id
        self.n = settings.n
        self.incarnation = incarnation
        self.state: State = "starting"
        self.store = store if store is not None else Store()
        self.position = 0
        self.view = View.everyone(self.id, self.n)
        self.log = RequestLog(settings.log_ttl)
        self.seen = SeenSet(settings.dedup_capacity)
        self.replies = Replies(self.id)
        self.duplicates_ignored = 0
        self.checkpoint: tuple[int, str] | None = None
        #: Whether `store` and `position` are a prefix of the stream (§11): true once live.
        self.has_candidate = False
        self._rejoin = Rejoin(self.id, self.n)
        #: With a data directory, every answer waits for its write to be durable (§17).
        self.durable = settings.data_dir is not None
        #: What the adapter has yet to write to disk (None without a data directory), and the
        #: position last handed over to be written.
        self._changes, self._written_at = Changes() if self.durable else None, -1
        #: What the adapter has yet to perform, in order (`ready`).
        self._out: list[Effect] = []
        self._stale = StaleNotices(self.id)
        self.mirror = ValueMirror(self.id, settings.mirror) if settings.mirror else None
        self.leases = Leases()
        self.feed = Feed(settings.history, settings.history_age, durable=self.durable)
        self.quota = settings.quota
        #: What writes are judged against: None without a quota (the hot path's test).
        self._limits = self.quota if self.quota else None
        self.tally = Tally()

    def _warning(self, text: str, *args: object) -> None:
        log.warning("replica %d " + text, self.id, *args)

    def _info(self, text: str, *args: object) -> None:
        log.info("replica %d " + text, self.id, *args)

    def _fire(self, event: Event) -> None:
        """Every change of state goes through here, and only along `NEXT`."""
        after = NEXT.get((self.state, event))
        if after is None:
            raise IllegalTransition(self.id, self.state, event)
        self.state = after

    def _admits(self, what: Input) -> bool:
        return what in ACCEPTS[self.state]

    def _say(self, effect: Effect | None) -> None:
        if effect is not None:
            self._out.append(effect)

    # --- the hand-off -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many effects wait for `ready()`: the adapter's metrics tell by it which
        message made which answer."""
        return len(self._out)

    def ready(self) -> Ready:
        """What the input since the last call produced: first what to make durable, then the
        effects to perform once it is (`Ready`)."""
        if self.feed.unsent:  # a watch's changes of the whole batch: one event
            self._out.extend(self.feed.flush(self.id))
        if not self._out and self._changes is None:
            return _NOTHING  # most turns of a replica in memory that owns none of the batch
        effects, self._out = self._out, []
        return Ready(self._durable(), effects)

    def write_everything(self) -> None:
        """The adapter could not write what it was handed (a full disk) and dropped it: the
        next hand-off carries the whole state at its position instead."""
        if self._changes is not None:
            self._changes = Changes(everything=True)

    def _durable(self) -> Written | None:
        """The state to write now: None without a data directory or if nothing moved (a read
        moves the position too, and the directory's position stays the stream's)."""
        changes = self._changes
        if changes is None or (not changes and self.position == self._written_at):
            return None
        self._changes, self._written_at = Changes(), self.position
        state = (self.store, self.view, self.seen, self.log)
        feed, settings = self.feed.saved(changes.everything), self.settings
        return written(
            self.position, changes, state, self.leases, feed,
            seen_capacity=settings.dedup_capacity, history_limit=settings.history,
        )  # fmt: skip

    # --- the adapter's connection ---------------------------------------------------------

    @classmethod
    def fresh(
        cls, settings: ReplicaSettings, *, incarnation: str, store: Store | None = None
    ) -> Replica:
        """A member of a new, empty cluster: live at once, every replica presumed live."""
        replica = cls._founding(settings, incarnation, store)
        log.info("replica %d starts fresh at position 0", replica.id)
        return replica

    @classmethod
    def _founding(cls, settings: ReplicaSettings, incarnation: str, store: Store | None) -> Replica:
        """A replica of a new cluster (fresh or restored), live from the start."""
        replica = cls(settings, incarnation=incarnation, store=store)
        replica._fire("fresh")
        # Its own incarnation stays out of its view, like everyone's: a falhaserv's staleness
        # is judged from what all know alike (`docs/DECISIONS.md`, issue 24).
        replica.has_candidate = True
        if replica._changes is not None:
            replica._changes.everything = True  # on disk at once: a candidate from the start
        return replica

    @classmethod
    def restored(
        cls, settings: ReplicaSettings, *, incarnation: str, snapshot: SnapshotFile
    ) -> Replica:
        """A member of a new cluster started from a snapshot (`kvserver --restore`): live at
        once like a fresh one, at the snapshot's position, so every key keeps its revision
        and every later write gets a higher one. Each lease's TTL counts again from now."""
        replica = cls._founding(settings, incarnation, restored_store(snapshot))
        replica.position = snapshot.position
        replica.leases.load(snapshot.leases, None)
        replica.feed.load([], [], snapshot.position, None)  # a watch from before: compactada
        what = (replica.id, len(replica.store), snapshot.position, replica.store.digest())
        log.info(
            "replica %d starts fresh from a snapshot: %d keys at position %d (digest %s)", *what
        )
        return replica

    @classmethod
    def recovered(cls, settings: ReplicaSettings, *, incarnation: str, disk: OnDisk) -> Replica:
        """A replica whose data directory held state: a §11 candidate at its disk position."""
        replica = cls(settings, incarnation=incarnation, store=disk.store)
        replica.seen, replica.position = disk.seen, disk.position
        replica.leases.load(disk.leases, None)  # each TTL counts again from the resume (§18)
        replica.feed.load(disk.watches, disk.history, disk.history_floor, None)
        # What a write that was applied before the stop answered, for its retry (§5).
        replica.log = RequestLog(settings.log_ttl, disk.outcomes)
        replica.view = View(replica.id, disk.live, disk.incarnations)
        replica.has_candidate = True
        replica._written_at = disk.position
        what = (replica.id, len(replica.store), replica.position)
        log.info("replica %d holds %d keys at position %d on disk", *what)
        return replica

    def connected(self, incarnation: str, now: float) -> None:
        """The adapter's connection for `incarnation` is up. Unless live already (a fresh
        replica), join: announce a `novoserv` with a new sync topic."""
        if not self._admits("connected"):
            return
        self._fire("connected")
        self.incarnation = incarnation
        self.tally.join_began = now
        if not self.has_candidate:
            self.store = Store()  # never hold the old state beside the one being loaded
            self.leases = Leases()
            self.feed = Feed(self.settings.history, self.settings.history_age, durable=self.durable)
        self._announce(JoinAttempt(self.id, incarnation, 1, now, now))

    def on_session_lost(self, now: float) -> None:
        """The broker forgot our session: messages were lost, so what we hold is only a
        candidate (protocol §11), and nothing more may be applied on top of the gap."""
        if not self._admits("session lost"):
            return
        if self.state == "live":
            self._warning("lost its broker session at position %d: re-joining", self.position)
        self._fire("session lost")
        self._out.extend(self.feed.flush(self.id))  # what was applied before: its events
        self._rejoin.abandon(now, self.settings.log_ttl)
        self._out.append(Reconnect("session lost", with_will=True))

    @property
    def join_topic(self) -> str | None:
        attempt = self._rejoin.attempt
        return attempt.sync_topic if attempt else None

    # --- input ----------------------------------------------------------------------------

    def receive(self, message: Routed, now: float) -> None:
        """Whatever `kvserver.routing` made of a message from the broker."""
        if not isinstance(message, Heartbeat | Recuperacao | StateChunk):
            self.on_request(message, now)  # first: the hot path
        elif isinstance(message, Heartbeat):
            self.on_heartbeat(message, now)
        elif isinstance(message, Recuperacao):
            self.on_recovery_order(message, now)
        else:
            self.on_state(message.topic, message.chunk, now)

    def on_request(self, message: Request | Batch | Invalid, now: float) -> None:
        """One message of the request topic, in broker order."""
        if self.state == "live":  # first: the hot path
            self._apply(message, now)
            return
        if not self._admits("request"):
            return
        # At the cut, the state may be here already, or (data on disk) no one to wait for.
        if self._rejoin.see(message, now) and not self._maybe_finish_join(now):
            self.tick(now)

    def on_state(self, topic: str, chunk: Estado, now: float) -> None:
        """One `estado` chunk on a sync topic."""
        join = self._rejoin.attempt
        if not self._admits("state chunk") or join is None or topic != join.sync_topic:
            return
        refused = join.add(chunk, now)
        if refused is not None:
            self._warning("ignores a state chunk: %s", refused)
            return
        self._maybe_finish_join(now)

    def on_heartbeat(self, beat: Heartbeat, now: float) -> None:
        """A peer's heartbeat or last will: only used to decide how to join (§7, §11)."""
        if self._admits("heartbeat"):
            self._rejoin.peers.hear(beat, now)

    def on_recovery_order(self, order: Recuperacao, now: float) -> None:
        """An operator says not to wait for these replicas before resuming (§17)."""
        if not self._admits("recovery order"):
            return
        excluded = self._rejoin.exclude(order.sem)
        if excluded:
            self._warning("will not wait for replicas %s to resume", excluded)

    def tick(self, now: float) -> None:
        """Time passes: expire the log, and decide about a join attempt that stalled, or, with
        data on disk, one that need not wait: the whole last view reported, and nobody is live."""
        if not self._admits("tick"):
            return
        self.log.expire(now)
        self.feed.history.expire(now)
        if self.mirror is not None:
            self.mirror.expire(now - self.settings.log_ttl)
        if self.state == "live" and self.leases:
            retry = self.settings.failure_timeout
            for expiry in self.leases.due(now, self.view.owns, self.id, retry):
                self._out.append(Publish(self.settings.requests_topic, expiry))
        if self.state == "live" and self.feed:
            self._out.extend(self.feed.progress(now, self.position, self.view.owns, self.id))
        join = self._rejoin.attempt
        if join is None:  # not joining
            return
        heard = self._rejoin.peers.heard(now, self.settings.failure_timeout)
        awaited = self._rejoin.awaited(self.view.live if self.durable else None)
        position = self.position if self.has_candidate else None
        choice = recovery_choice(self.id, position, heard, awaited)
        early = self.durable and join.announced and choice == "resume"
        if not early and not join.stalled(now, self.settings.join_timeout):
            return
        if choice == "resume":
            self.tally.joined(now)
            self._resume_alone(join)
            return
        if choice == "ask again":
            self._warning("got no state within %.1f s: asking again", self.settings.join_timeout)
        elif now - join.waiting_said_at >= 10 * self.settings.join_timeout:
            join.waiting_said_at = now
            reason = waiting_reason(heard, awaited)
            self._warning("is waiting to join: %s", reason)
        self._ask_again(join, now)

    # --- applying the stream --------------------------------------------------------------

    def _apply(self, message: Request | Batch | Invalid, now: float) -> None:
        if isinstance(message, Batch):
            self._apply_batch(message, now)
            return
        self.position += 1
        if self.position % CHECKPOINT_EVERY == 0:
            self.checkpoint = (self.position, self.store.digest())
        status = "ok"
        if isinstance(message, Consulta):
            key = message.chave
            self.log.append_read(now, key, message.topico_resp, message.idpedido)
            if self.view.owns(key):
                to = ReplyTo(message.topico_resp, message.idpedido, self.position)
                self._say(self.replies.read(to, self.store, key))
        elif isinstance(message, Insercao | Remocao):
            status = self._apply_write(message, now)
        elif isinstance(message, Listagem):
            # Keyless: one replica answers, chosen as if the response topic were the key.
            if self.view.owns(message.topico_resp):
                keys, more = self.store.keys(message.prefixo, message.apos, message.limite)
                to = ReplyTo(message.topico_resp, message.idpedido, self.position)
                self._say(self.replies.listing(to, keys=keys, more=more))
        elif isinstance(message, FalhaServ):
            self._apply_failure(message)
        elif isinstance(message, NovoServ):
            self._apply_join(message, now)
        elif isinstance(message, ListaConcessoes):
            if self.view.owns(message.topico_resp):  # keyless, as a listagem
                to = ReplyTo(message.topico_resp, message.idpedido, self.position)
                page = self.leases.page(message.apos, message.limite)
                self._say(self.replies.lease_page(to, *page))
        elif isinstance(message, Expiracao):
            ended = self.leases.expire(message)
            if ended is not None:
                self._lease_ended(message.concessao, ended, now)
        elif isinstance(message, Concessao | Renovacao | Revogacao):
            status = self._apply_lease(message, now)
        elif isinstance(message, Vigia):
            self._apply_watch(message)
        elif isinstance(message, FimVigia):
            self._apply_cancel(message)
        elif isinstance(message, Transacao):
            status = self._apply_txn(message, now)
        elif isinstance(message, Instantaneo):
            self._apply_backup(message, now)
        elif isinstance(message, Historico):
            self._apply_history(message)
        else:
            self._reject(message)
            self.tally.count("invalido", "erro")
            return
        self.tally.count(message.tipomsg, status)

    def _apply_history(self, message: Historico) -> None:
        if self.view.owns(message.chave):
            to = ReplyTo(message.topico_resp, message.idpedido, self.position)
            changes = self.feed.history.of_key(message.chave, message.limite)
            self._say(self.replies.history(to, message.chave, *changes))

    def _apply_backup(self, message: Instantaneo, now: float) -> None:
        """An `instantaneo`: its owner (of `topico-resp` hashed as a key) sends the store and
        the leases as of this position there, as it would to a joiner."""
        topic = message.topico_resp
        if not self.view.owns(topic):
            return
        problem = self.replies.topic_problem(topic)
        if problem is not None:
            to = ReplyTo(topic, message.idpedido, self.position)
            self._say(self.replies.error(to, f"its topico-resp {problem}"))
            return
        snapshot = backup(self.id, self.position, self.store, self.leases, now)
        what = (self.position, len(snapshot.pairs), topic)
        self._info("sends a snapshot at position %d: %d keys to %s", *what)
        self._out.append(SendState(topic, snapshot))

    def _apply_batch(self, batch: Batch, now: float) -> None:
        """A `lote` (§21): each request at the next position, as if it had come alone (none
        is a control message: `kvwire.batch` refused those); their answers grouped."""
        start = len(self._out)
        for message in batch.requests:
            self._apply(message, now)
        if len(self._out) - start > 1:
            grouped(self._out, start, self.id)

    def _apply_write(self, message: Insercao | Remocao, now: float) -> str:
        """Its status, for the tally."""
        key, topic, rid = message.chave, message.topico_resp, message.idpedido
        written = message.novovalor if isinstance(message, Insercao) else ""
        limits = self.settings.max_key_bytes, self.settings.max_value_bytes
        problem = write_problem(key, written, *limits)
        lease = message.concessao if isinstance(message, Insercao) else None
        if lease is not None and problem is None and not self.leases.is_live(lease):
            problem = f"lease {lease[:80]!r} is unknown or has ended"
        if problem is not None:
            # Every replica refuses it alike; only the owner says so.
            if self.view.owns(key):
                self._say(self.replies.error(ReplyTo(topic, rid, self.position), problem, key=key))
            return "erro"
        fresh = self.seen.add((topic, rid))
        if fresh:
            outcome = apply_write(self.store, message, self.position, self._limits)
        else:
            self.duplicates_ignored += 1
            outcome = earlier_outcome(self.log, self.store, message)
        kind: Literal["i", "r"] = "i" if isinstance(message, Insercao) else "r"
        status, value, revision = outcome
        # A plain put's outcome is its revision: a retry answers with its own value, a replay
        # with the key's if it still has that revision (`Replies.replay`). Not holding the
        # value here keeps it from being held twice for `log_ttl` (the store packs its own).
        plain = kind == "i" and message.serevisao is None and status == "ok"
        logged = LoggedRequest(
            now, kind, key, topic, rid, None if plain else value, status, revision
        )
        self.log.append(logged)
        if fresh and self._changes is not None:
            self._changes.seen.append(logged)
        if fresh and status == "ok":
            self._key_written(key, lease, now)
            if self.feed.pending:
                self.feed.matched(self.view.owns)
        if self.view.owns(key):
            to = ReplyTo(topic, rid, self.position)
            self._say(
                self.replies.answer(to, key=key, value=value, revision=revision, status=status)
            )
            if self.mirror is not None and status == "ok" and revision == self.position:
                self._out.extend(self.mirror.value(key, self.store.entry(key)))
        return status

    def _apply_lease(self, message: LeaseOp, now: float) -> str:
        """A grant, keep-alive or revoke (§18): a write like a put, to the lease's name."""
        name, topic, rid = message.concessao, message.topico_resp, message.idpedido
        to = ReplyTo(topic, rid, self.position)
        problem = lease_name_problem(name)
        if problem is not None:
            if self.view.owns(name or topic):
                self._say(self.replies.error(to, problem))
            return "erro"
        revision: int | None = self.position
        if self.seen.add((topic, rid)):
            outcome = apply_lease(self.leases, message, self.position, now)
            if outcome.ended or isinstance(message, Revogacao):
                self._lease_ended(name, outcome.ended, now)
            elif outcome.status == "ok":
                self._lease_moved(name)
        else:
            self.duplicates_ignored += 1
            outcome, revision = earlier_lease(self.log, self.leases, message)
        value = lease_outcome_logged(outcome)
        logged = LoggedRequest(now, "l", name, topic, rid, value, outcome.status, revision)
        self.log.append(logged)
        if self._changes is not None:
            self._changes.seen.append(logged)
        if self.view.owns(name):
            self._say(self.replies.lease(to, name, outcome, revision))
        return outcome.status

    def _lease_moved(self, name: str) -> None:
        if self._changes is not None:
            self._changes.leases[name] = self.leases.record(name, 0.0)

    def _lease_ended(self, name: str, keys: tuple[str, ...], now: float) -> None:
        """The lease ended at this position: its keys are deleted here, on every replica."""
        changes, mirror = self._changes, self.mirror
        if changes is not None:
            changes.leases[name] = None
        for key in keys:
            if self.store.delete(key) and changes is not None:
                changes.puts[key] = None
                changes.attached[key] = None
            if mirror is not None:
                mirror.ended(key, now)  # a later owner clears it too, should this one not
                if self.view.owns(key):
                    self._out.extend(mirror.value(key, None))
        feed = self.feed
        for key in keys:
            feed.changed(self.position, key, "expiracao", None, now)
        feed.matched(self.view.owns)
        for watch in feed.lease_ended(name):
            if self.view.owns(watch.topic):
                self._out.extend(feed.ended(watch, self.position, self.id))

    def _apply_txn(self, message: Transacao, now: float) -> str:
        """A transaction (§20): a write of several keys at this one position, or none; its
        owner is the owner of `topico-resp` hashed as a key."""
        topic, rid = message.topico_resp, message.idpedido
        to = ReplyTo(topic, rid, self.position)
        limits = self.settings.max_key_bytes, self.settings.max_value_bytes
        problem = txn_problem(message, *limits)
        if problem is not None:
            if self.view.owns(topic):
                self._say(self.replies.error(to, problem))
            return "erro"
        revision: int | None = self.position
        if self.seen.add((topic, rid)):
            outcome = apply_txn(self.store, self.leases, message, self.position, self._limits)
            self._txn_applied(outcome.written, outcome.deleted, now)
        else:
            self.duplicates_ignored += 1
            logged = self.log.find(topic, rid)
            if logged is None or logged.kind != "t":
                problem = "this transaction was applied earlier; its outcome is forgotten"
                if self.view.owns(topic):
                    self._say(self.replies.error(to, problem))
                return "erro"
            outcome, revision = logged_txn_outcome(logged.status, logged.value), logged.revision
        entry = LoggedRequest(
            now, "t", topic, topic, rid, outcome.logged(), outcome.status, revision
        )
        self.log.append(entry)
        if self._changes is not None:
            self._changes.seen.append(entry)
        if self.view.owns(topic):
            self._say(self.replies.transaction(to, outcome, revision))
        return outcome.status

    def _txn_applied(
        self, written: list[tuple[str, str | None]], deleted: list[str], now: float
    ) -> None:
        """A transaction's writes, each as a put or delete applied at this position is."""
        mirror, owns = self.mirror, self.view.owns
        for key, lease in [*written, *((key, None) for key in deleted)]:
            entry = self._key_written(key, lease, now)
            if mirror is not None and owns(key):
                self._out.extend(mirror.value(key, entry))
        if self.feed.pending:
            self.feed.matched(owns)

    def _key_written(self, key: str, lease: str | None, now: float) -> Entry | None:
        """A put (`lease`: the one it ends with) or delete applied at this position, alone or
        in a transaction: what the disk, the leases and the feed keep of it. The key's entry."""
        packed, changes = self.store.packed(key), self._changes
        entry = None if packed is None else unpack(packed)
        if changes is not None:
            changes.puts[key] = entry
        if self.leases.attach(key, lease) and changes is not None:
            changes.attached[key] = lease
        # The store's own string: the history holds no second copy of the value.
        kind: ChangeKind = "remocao" if packed is None else "insercao"
        self.feed.changed(self.position, key, kind, packed, now)
        return entry

    def _apply_watch(self, message: Vigia) -> None:
        """A `vigia` (§19): every replica registers it; its owner (of `topico-resp` hashed as
        a key) answers, then sends the history since `desde`."""
        topic = message.topico_resp
        problem = self.replies.topic_problem(topic)
        if problem is not None:
            problem = f"its topico-resp {problem}"
        elif len(message.prefixo.encode()) > self.settings.max_key_bytes:
            problem = f"prefix longer than {self.settings.max_key_bytes} bytes"
        elif not self.leases.is_live(message.concessao):
            problem = f"lease {message.concessao[:80]!r} is unknown or has ended"
        registered = self.feed.register(message, self.position, problem)
        if not self.view.owns(topic):
            return
        to = ReplyTo(topic, message.idpedido, self.position)
        watch = registered.watch
        if watch is None:
            self._say(self.replies.error(to, registered.problem or "refused"))
        elif watch.since < self.feed.history.compacted:
            self._say(self.replies.compacted(to, self.feed.history.compacted))
        else:
            self._say(self.replies.watching(to, watch.registered_at))
            self._out.extend(self.feed.backlog(watch, self.id))

    def _apply_cancel(self, message: FimVigia) -> None:
        watch = self.feed.cancel(message.topico_resp, message.vigia)
        if not self.view.owns(message.topico_resp):
            return
        to = ReplyTo(message.topico_resp, message.idpedido, self.position)
        self._say(self.replies.watching(to, self.position, found=watch is not None))
        if watch is not None:
            self._out.extend(self.feed.ended(watch, self.position, self.id))

    def _reject(self, message: Invalid) -> None:
        self.replies.rejected(message, self.position)
        # One replica answers, chosen as if the response topic were the key.
        if message.topico_resp is not None and self.view.owns(message.topico_resp):
            to = ReplyTo(message.topico_resp, message.idpedido, self.position)
            self._say(self.replies.error(to, message.reason))

    def _apply_failure(self, message: FalhaServ) -> None:
        failed = message.idserv
        if not 0 <= failed < self.n:
            self._reject(Invalid(f"falhaserv names replica {failed}, not in 0..{self.n - 1}"))
            return
        if self.view.is_stale(failed, message.incarnacao):
            self._stale.ignore(failed, message.incarnacao, self.position)
            return
        if failed == self.id:
            self._warning(
                "fenced at position %d: declared failed (last seen %.3f); "
                "it stops answering and re-joins, its store kept as a candidate",
                self.position,
                message.vistoem,
            )
            # Its store is the stream applied up to here, like everyone's: if every
            # replica was fenced at once (a host pause), the highest of them resumes
            # (protocol §11) instead of the cluster waiting forever with no data.
            self._fire("fenced")
            self.tally.fenced += 1
            self._out.extend(self.feed.flush(self.id))
            self._out.append(Reconnect("fenced", with_will=False))
            return
        previous = self.view.fail(failed)
        taken = inherited(previous, failed, self.view) if previous is not None else None
        self.tally.failures += previous is not None
        self.tally.takeovers += taken is not None
        if taken is None:
            if previous is not None:
                log.info("replica %d: replica %d failed at %d", self.id, failed, self.position)
            return
        # We now answer for `failed`: replay what it may have left unanswered (protocol §6).
        replayed = to_replay(self.log, message.vistoem - self.settings.skew_margin, taken)
        for entry in replayed:
            self._say(self.replies.replay(entry, self.store, self.position))
        if self.mirror is not None:  # its keys' values, which it may not have published
            self._out.extend(self.mirror.again(self.log, self.store, taken))
        since = message.vistoem - self.settings.skew_margin  # its watches' events, likewise
        for watch in self.feed.watches_of(taken):
            self._out.extend(self.feed.backlog(watch, self.id, since_time=since))
        what = (failed, self.position, len(replayed), message.vistoem)
        self._warning(
            "takes over for replica %d at position %d: replayed %d requests since %.3f", *what
        )

    def _apply_join(self, message: NovoServ, now: float) -> None:
        joiner = message.idserv
        if not 0 <= joiner < self.n:
            self._reject(Invalid(f"novoserv names replica {joiner}, not in 0..{self.n - 1}"))
            return
        problem = self.replies.topic_problem(message.topico_resp)
        if problem is not None:
            # No joiner can listen there, and sending state to it would fail on every chunk.
            self._reject(Invalid(f"novoserv of replica {joiner}: its topico-resp {problem}"))
            return
        if joiner == self.id:
            if message.incarnacao != self.incarnation:
                at = (self.id, self.position)
                log.error("replica %d: another process took its id at position %d: it stops", *at)
                self._fire("superseded")
                self._out.append(Stop("another process took this replica's id"))
            return
        self.view.add(joiner, message.incarnacao, message.topico_resp)
        if self.view.successor_of(joiner) != self.id:
            log.info("replica %d: replica %d joins at position %d", self.id, joiner, self.position)
            return
        state = (self.store, self.view, self.seen, self.log)
        leases, feed = list(self.leases.records(now)), self.feed.copy(now)
        snapshot = Snapshot.take(self.id, self.position, state, leases, feed)
        what = (joiner, self.position, len(snapshot.pairs), message.topico_resp)
        self._warning("hands back to replica %d at position %d: %d keys to %s", *what)
        self.tally.handbacks += 1
        self._out.append(SendState(message.topico_resp, snapshot))

    def state_sent(self, snapshot: Snapshot) -> None:
        """The adapter is done with `snapshot` (sent, or given up): its pairs may change again."""
        self.store.thaw(snapshot.pairs)

    # --- joining --------------------------------------------------------------------------

    def _announce(self, join: JoinAttempt) -> None:
        self._rejoin.start(join)
        position = self.position if self.has_candidate else None
        where = (join.sync_topic, "none" if position is None else position)
        self._info("joining: novoserv on %s (candidate position %s)", *where)
        self._out.append(Publish(self.settings.requests_topic, join.novoserv(position)))

    def _ask_again(self, join: JoinAttempt, now: float) -> None:
        self._fire("asked again")
        self._rejoin.abandon(now, self.settings.log_ttl)
        self._announce(join.again(now))

    def _maybe_finish_join(self, now: float) -> bool:
        """Load the state if all of it is here; whether the attempt ended (either way)."""
        join = self._rejoin.attempt
        assert join is not None
        if not join.ready:
            return False
        loaded = join.load(self.n, self.settings.dedup_capacity, self.settings.log_ttl)
        if isinstance(loaded, str):
            log.error("replica %d rejects the state it was sent: %s", self.id, loaded)
            self._ask_again(join, now)
            return True
        self.store, self.seen, self.log = loaded.store, loaded.seen, loaded.log
        self.leases.load(loaded.leases, now)
        self.feed.load(loaded.watches, loaded.history, loaded.history_floor, now)
        self.position, self.checkpoint = loaded.position, None
        self.view = View(self.id, loaded.live, loaded.incarnations, loaded.since)
        if self._changes is not None:
            self._changes = Changes(everything=True)
        what = (self.position, loaded.sender, len(self.store), len(join.buffer))
        self._warning("joined at position %d from replica %d: %d keys, %d buffered messages", *what)
        self._fire("loaded")
        self.tally.joined(now)
        self._go_live(join, counted_since=loaded.since[self.id])
        return True

    def _resume_alone(self, join: JoinAttempt) -> None:
        why = "no replica is live and none heard has a later position"
        self._warning("resumes alone from its own store at position %d: %s", self.position, why)
        self.view = View.alone(self.id, self.n, join.incarnation)
        self._fire("resumed")
        # Nobody counted us in while we were away: whoever owned our keys answered them.
        self._go_live(join, counted_since=None)

    def _go_live(self, join: JoinAttempt, *, counted_since: str | None) -> None:
        """`counted_since`: the novoserv the view counts us in from (`Rejoin.owed_requests`)."""
        self.has_candidate = True
        self._rejoin.attempt = None
        for message, arrived in join.buffer:
            self._apply(message, arrived)
            if self.state != "live":  # fenced or superseded by what we just applied
                return
        if self.mirror is not None:  # the keys we took back: correct what others published
            self._out.extend(self.mirror.again(self.log, self.store, self.view.owns))
        for message in self._rejoin.owed_requests(self.seen, counted_since):
            self._say(self.replies.owed(message, self.store, self.log, self.position))
