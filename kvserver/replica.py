"""The replica as a deterministic state machine (PROTOCOL §4–§8, §11).

It is fed decoded messages and the current time and returns what to publish (`effects`). It
never touches paho, a thread, a clock or a random source: the adapter in `kvserver.node`
does that, and the tests drive this class directly with messages and fake time.

Its states, and every transition between them (`kvserver.states.NEXT` is this table):

    state     event          when                                          next
    --------  -------------  --------------------------------------------  --------
    starting  fresh          a new, empty cluster                          live
    starting  connected      the adapter's first connection: novoserv      joining
    joining   loaded         own novoserv came back, then a sound state    live
    joining   resumed        join timeout, nobody live, highest candidate  live
    joining   asked again    join timeout otherwise, or an unsound state   joining
    live      fenced         a falhaserv naming this incarnation           fenced
    live      session lost   the broker forgot our session                 fenced
    joining   session lost   the broker forgot our session                 fenced
    fenced    connected      a new incarnation's connection: novoserv      joining
    live      superseded     a novoserv with our id, another incarnation   stopped

`live`: every message of the request topic is applied in order, and the replica answers the
requests whose key it owns. `joining`: the stream is discarded until its own `novoserv` comes
back and buffered after it (`kvserver.join`). `fenced`: it stopped answering and reads
nothing until the adapter has a new connection; its store is kept as a §11 candidate.
`stopped`: another process has this id; the adapter exits.
"""

from __future__ import annotations

import logging
from typing import Literal

from kvserver.disk import Changes, OnDisk
from kvserver.effects import Effect, Publish, Reconnect, SendState, Stop
from kvserver.history import RequestLog, SeenSet
from kvserver.join import JoinAttempt, Rejoin, recovery_choice, waiting_reason
from kvserver.mirror import ValueMirror
from kvserver.replies import Replies, write_problem
from kvserver.settings import ReplicaSettings
from kvserver.states import NEXT, Event, State
from kvserver.store import Store
from kvserver.transfer import Snapshot
from kvserver.view import View
from kvserver.writes import apply_write, earlier_outcome
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
from kvwire.ring import key_slot

log = logging.getLogger("kvserver")


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
        #: What the adapter has yet to write to disk; None without a data directory.
        self._changes = Changes() if settings.data_dir is not None else None
        self._stale_said: set[tuple[int, str | None]] = set()
        self.mirror = ValueMirror(self.id, settings.mirror) if settings.mirror else None

    def _warning(self, text: str, *args: object) -> None:
        log.warning("replica %d " + text, self.id, *args)

    def _info(self, text: str, *args: object) -> None:
        log.info("replica %d " + text, self.id, *args)

    def _error(self, text: str, *args: object) -> None:
        log.error("replica %d " + text, self.id, *args)

    def _fire(self, event: Event) -> None:
        """Every change of state goes through here, and only along `NEXT`."""
        after = NEXT.get((self.state, event))
        if after is None:
            raise RuntimeError(f"replica {self.id}: no transition from {self.state} on {event}")
        self.state = after

    # --- the adapter's connection ---------------------------------------------------------

    @classmethod
    def fresh(
        cls, settings: ReplicaSettings, *, incarnation: str, store: Store | None = None
    ) -> Replica:
        """A member of a new, empty cluster: live at once, every replica presumed live."""
        replica = cls(settings, incarnation=incarnation, store=store)
        replica._fire("fresh")
        replica.view.incarnations[replica.id] = incarnation
        replica.has_candidate = True
        if replica._changes is not None:
            replica._changes.everything = True  # on disk at once: a candidate from the start
        log.info("replica %d starts fresh at position 0", replica.id)
        return replica

    @classmethod
    def recovered(cls, settings: ReplicaSettings, *, incarnation: str, disk: OnDisk) -> Replica:
        """A replica whose data directory held state: a §11 candidate at its disk position."""
        replica = cls(settings, incarnation=incarnation, store=disk.store)
        replica.seen, replica.position = disk.seen, disk.position
        # What a write that was applied before the stop answered, for its retry (§5).
        replica.log = RequestLog(settings.log_ttl, disk.outcomes)
        replica.view = View(replica.id, disk.live, disk.incarnations)
        replica.has_candidate = True
        what = (replica.id, len(replica.store), replica.position)
        log.info("replica %d holds %d keys at position %d on disk", *what)
        return replica

    def take_changes(self) -> Changes | None:
        """What to write to disk since the last call, or None if nothing (or no disk)."""
        changes = self._changes
        if not changes:
            return None
        self._changes = Changes()
        return changes

    def connected(self, incarnation: str, now: float) -> list[Effect]:
        """The adapter's connection for `incarnation` is up. Unless live already (a fresh
        replica), join: announce a `novoserv` with a new sync topic."""
        if self.state not in ("starting", "fenced"):
            return []
        self._fire("connected")
        self.incarnation = incarnation
        if not self.has_candidate:
            self.store = Store()  # never hold the old state beside the one being loaded
        return self._announce(JoinAttempt(self.id, incarnation, 1, now, now))

    def on_session_lost(self, now: float) -> list[Effect]:
        """The broker forgot our session: messages were lost, so what we hold is only a
        candidate (PROTOCOL §11), and nothing more may be applied on top of the gap."""
        if self.state not in ("live", "joining"):
            return []
        if self.state == "live":
            self._warning("lost its broker session at position %d: re-joining", self.position)
        self._fire("session lost")
        self._rejoin.abandon(now, self.settings.log_ttl)
        return [Reconnect("session lost", with_will=True)]

    @property
    def join_topic(self) -> str | None:
        attempt = self._rejoin.attempt
        return attempt.sync_topic if attempt else None

    # --- input ----------------------------------------------------------------------------

    def on_request(self, message: Request | Invalid, now: float) -> list[Effect]:
        """One message of the request topic, in broker order."""
        if self.state == "live":
            out: list[Effect] = []
            self._apply(message, now, out)
            return out
        attempt = self._rejoin.attempt
        if self.state == "joining" and attempt is not None and attempt.see(message, now):
            # The cut: the state may be here already, or (data on disk) no one to wait for.
            return self._maybe_finish_join(now) or self.tick(now)
        return []

    def on_state(self, topic: str, chunk: Estado, now: float) -> list[Effect]:
        """One `estado` chunk on a sync topic."""
        join = self._rejoin.attempt
        if self.state != "joining" or join is None or topic != join.sync_topic:
            return []
        refused = join.add(chunk, now)
        if refused is not None:
            self._warning("ignores a state chunk: %s", refused)
            return []
        return self._maybe_finish_join(now)

    def on_heartbeat(self, beat: Heartbeat, now: float) -> list[Effect]:
        """A peer's heartbeat or last will: only used to decide how to join (§7, §11)."""
        self._rejoin.peers.hear(beat, now)
        return []

    def on_recovery_order(self, order: Recuperacao, now: float) -> list[Effect]:
        """An operator says not to wait for these replicas before resuming (§17)."""
        excluded = self._rejoin.exclude(order.sem)
        if excluded:
            self._warning("will not wait for replicas %s to resume", excluded)
        return []

    def tick(self, now: float) -> list[Effect]:
        """Time passes: expire the log, and decide about a join attempt that stalled, or, with
        data on disk, one that need not wait: the whole last view reported, and nobody is live."""
        self.log.expire(now)
        join = self._rejoin.attempt
        if self.state != "joining" or join is None:
            return []
        heard = self._rejoin.peers.heard(now, self.settings.failure_timeout)
        awaited = self._rejoin.awaited(self.view.live if self._changes is not None else None)
        position = self.position if self.has_candidate else None
        choice = recovery_choice(self.id, position, heard, awaited)
        early = self._changes is not None and join.announced and choice == "resume"
        if not early and not join.stalled(now, self.settings.join_timeout):
            return []
        if choice == "resume":
            return self._resume_alone(join, now)
        if choice == "ask again":
            self._warning("got no state within %.1f s: asking again", self.settings.join_timeout)
        elif now - join.waiting_said_at >= 10 * self.settings.join_timeout:
            join.waiting_said_at = now
            reason = waiting_reason(heard, awaited)
            self._warning("is waiting to join: %s", reason)
        return self._ask_again(join, now)

    # --- applying the stream --------------------------------------------------------------

    def _apply(self, message: Request | Invalid, now: float, out: list[Effect]) -> None:
        self.position += 1
        if self.position % CHECKPOINT_EVERY == 0:
            self.checkpoint = (self.position, self.store.digest())
        if isinstance(message, Consulta):
            key = message.chave
            self.log.append_read(now, key, message.topico_resp, message.idpedido)
            if self.view.owns(key):
                topic, rid = message.topico_resp, message.idpedido
                self.replies.read(self.store, key, topic, rid, self.position, out)
        elif isinstance(message, Insercao | Remocao):
            self._apply_write(message, now, out)
        elif isinstance(message, Listagem):
            # Keyless: one replica answers, chosen as if the response topic were the key.
            if self.view.owns(message.topico_resp):
                keys, more = self.store.keys(message.prefixo, message.apos, message.limite)
                topic, rid = message.topico_resp, message.idpedido
                self.replies.listing(keys, more, topic, rid, self.position, out)
        elif isinstance(message, FalhaServ):
            self._apply_failure(message, out)
        elif isinstance(message, NovoServ):
            self._apply_join(message, out)
        else:
            self._reject(message, out)

    def _apply_write(self, message: Insercao | Remocao, now: float, out: list[Effect]) -> None:
        key, topic, rid = message.chave, message.topico_resp, message.idpedido
        written = message.novovalor if isinstance(message, Insercao) else ""
        limits = self.settings.max_key_bytes, self.settings.max_value_bytes
        problem = write_problem(key, written, *limits)
        if problem is not None:
            # Every replica refuses it alike; only the owner says so.
            if self.view.owns(key):
                self.replies.error(topic, rid, problem, self.position, out, key)
            return
        fresh = self.seen.add((topic, rid))
        if fresh:
            outcome = apply_write(self.store, message, self.position)
        else:
            self.duplicates_ignored += 1
            outcome = earlier_outcome(self.log, self.store, message)
        kind: Literal["i", "r"] = "i" if isinstance(message, Insercao) else "r"
        status, value, revision = outcome
        logged = LoggedRequest(now, kind, key, topic, rid, value, status, revision)
        self.log.append(logged)
        if fresh and self._changes is not None:  # a plain put's retry answers its own value
            plain = kind == "i" and message.serevisao is None
            self._changes.seen.append(logged._replace(value=None) if plain else logged)
            if status == "ok":
                self._changes.puts[key] = self.store.entry(key)
        if self.view.owns(key):
            self.replies.answer(key, value, revision, topic, rid, self.position, out, status)
            if self.mirror is not None and status == "ok" and revision == self.position:
                out.extend(self.mirror.value(key, self.store.entry(key)))

    def _reject(self, message: Invalid, out: list[Effect]) -> None:
        self.replies.rejected(message, self.position)
        # One replica answers, chosen as if the response topic were the key.
        if message.topico_resp is not None and self.view.owns(message.topico_resp):
            self.replies.error(
                message.topico_resp, message.idpedido, message.reason, self.position, out
            )

    def _apply_failure(self, message: FalhaServ, out: list[Effect]) -> None:
        failed = message.idserv
        if not 0 <= failed < self.n:
            self._reject(Invalid(f"falhaserv names replica {failed}, not in 0..{self.n - 1}"), out)
            return
        if self.view.is_stale(failed, message.incarnacao):
            self._ignore_stale(failed, message.incarnacao)
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
            # (PROTOCOL §11) instead of the cluster waiting forever with no data.
            self._fire("fenced")
            out.append(Reconnect("fenced", with_will=False))
            return
        previous = self.view.fail(failed)
        if previous is None:
            return
        if not self.view.owns_slot(failed):
            log.info("replica %d: replica %d failed at position %d", self.id, failed, self.position)
            return
        # We now answer for `failed`: replay what it may have left unanswered (PROTOCOL §6).
        replayed = 0
        for entry in self.log.since(message.vistoem - self.settings.skew_margin):
            slot = key_slot(entry.key, self.n)
            if previous[slot] == failed and self.view.owns_slot(slot):
                self.replies.replay(entry, self.store, self.position, out)
                replayed += 1
        if self.mirror is not None:  # its keys' values, which it may not have published
            taken = lambda k: previous[key_slot(k, self.n)] == failed and self.view.owns(k)  # noqa: E731
            out.extend(self.mirror.again(self.log, self.store, taken))
        what = (failed, self.position, replayed, message.vistoem)
        self._warning(
            "takes over for replica %d at position %d: replayed %d requests since %.3f", *what
        )

    def _ignore_stale(self, failed: int, incarnation: str | None) -> None:
        """A falhaserv naming an incarnation already replaced: a monitor's late verdict, or an
        old one replayed. Logged once for each, since a replay can come in a loop."""
        said = (failed, incarnation)
        if said not in self._stale_said and len(self._stale_said) < 1024:
            self._stale_said.add(said)
            what = (incarnation, failed, self.position)
            self._info("ignores a falhaserv for an old incarnation %s of replica %d at %d", *what)

    def _apply_join(self, message: NovoServ, out: list[Effect]) -> None:
        joiner = message.idserv
        if not 0 <= joiner < self.n:
            self._reject(Invalid(f"novoserv names replica {joiner}, not in 0..{self.n - 1}"), out)
            return
        problem = self.replies.topic_problem(message.topico_resp)
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
                self._fire("superseded")
                out.append(Stop("another process took this replica's id"))
            return
        self.view.add(joiner, message.incarnacao)
        if self.view.successor_of(joiner) != self.id:
            log.info("replica %d: replica %d joins at position %d", self.id, joiner, self.position)
            return
        snapshot = Snapshot.take(self.id, self.position, self.store, self.view, self.seen, self.log)
        what = (joiner, self.position, len(snapshot.pairs), message.topico_resp)
        self._warning("hands back to replica %d at position %d: %d keys to %s", *what)
        out.append(SendState(message.topico_resp, snapshot))

    def state_sent(self, snapshot: Snapshot) -> None:
        """The adapter is done with `snapshot` (sent, or given up): its pairs may change again."""
        self.store.thaw(snapshot.pairs)

    # --- joining --------------------------------------------------------------------------

    def _announce(self, join: JoinAttempt) -> list[Effect]:
        self._rejoin.attempt = join
        position = self.position if self.has_candidate else None
        where = (join.sync_topic, "none" if position is None else position)
        self._info("joining: novoserv on %s (candidate position %s)", *where)
        return [Publish(self.settings.requests_topic, join.novoserv(position))]

    def _ask_again(self, join: JoinAttempt, now: float) -> list[Effect]:
        self._fire("asked again")
        self._rejoin.abandon(now, self.settings.log_ttl)
        return self._announce(join.again(now))

    def _maybe_finish_join(self, now: float) -> list[Effect]:
        join = self._rejoin.attempt
        assert join is not None
        if not join.ready:
            return []
        loaded = join.load(self.n, self.settings.dedup_capacity, self.settings.log_ttl)
        if isinstance(loaded, str):
            self._error("rejects the state it was sent: %s", loaded)
            return self._ask_again(join, now)
        self.store, self.seen, self.log = loaded.store, loaded.seen, loaded.log
        self.position, self.checkpoint = loaded.position, None
        self.view = View(self.id, loaded.live, loaded.incarnations)
        if self._changes is not None:
            self._changes = Changes(everything=True)
        what = (self.position, loaded.sender, len(self.store), len(join.buffer))
        self._warning("joined at position %d from replica %d: %d keys, %d buffered messages", *what)
        self._fire("loaded")
        return self._go_live(join)

    def _resume_alone(self, join: JoinAttempt, now: float) -> list[Effect]:
        self._warning(
            "resumes alone from its own store at position %d: no replica is live "
            "and none heard has a later position",
            self.position,
        )
        self.view = View.alone(self.id, self.n, join.incarnation)
        self._rejoin.owed = []
        self._fire("resumed")
        return self._go_live(join)

    def _go_live(self, join: JoinAttempt) -> list[Effect]:
        self.has_candidate = True
        self._rejoin.attempt = None
        out: list[Effect] = []
        for message, arrived in join.buffer:
            self._apply(message, arrived, out)
            if self.state != "live":  # fenced or superseded by what we just applied
                return out
        if self.mirror is not None:  # the keys we took back: correct what others published
            out.extend(self.mirror.again(self.log, self.store, self.view.owns))
        # Requests that arrived during an earlier, failed attempt: nobody answered them.
        for message in self._rejoin.owed_requests(self.view.owns, self.seen):
            topic, rid = message.topico_resp, message.idpedido
            if isinstance(message, Consulta):
                self.replies.read(self.store, message.chave, topic, rid, self.position, out)
            else:
                status, value, revision = earlier_outcome(self.log, self.store, message)
                answer = (value, revision, topic, rid, self.position, out, status)
                self.replies.answer(message.chave, *answer)
        return out
