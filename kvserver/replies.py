"""What a replica tells clients: answers, error answers, and the two kinds of trouble a
request can bring (protocol §4, §5).

A request that is not a request is rejected by every replica alike and answered by one; a
request whose reply topic no MQTT client may publish to is applied and not answered (issue
11). Both are counted, for the heartbeats, and logged sparingly: a flood of bad requests
must not become a flood of log lines.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from kvserver.durable import Change
from kvserver.effects import Publish
from kvserver.history import RequestLog
from kvserver.leases import LeaseOutcome, logged_lease_outcome
from kvserver.store import Store
from kvserver.txn import TxnOutcome, logged_txn_outcome
from kvserver.writes import earlier_outcome
from kvwire.feed import Mudanca
from kvwire.leasing import LeaseSummary
from kvwire.messages import Consulta, Invalid, LoggedRequest, Resposta, Status, Write
from kvwire.topics import TopicCheck

log = logging.getLogger("kvserver")

_LOG_FIRST, _LOG_EVERY = 20, 1000


def _worth_logging(count: int) -> bool:
    return count <= _LOG_FIRST or count % _LOG_EVERY == 0


class ReplyTo(NamedTuple):
    """Where an answer goes and what it answers: one per request, built by the core."""

    topic: str
    rid: int | str | None
    #: The stream position the request was applied at, for the log lines.
    position: int


class Replies:
    """Builds the answers (each a `Publish`, or None when its topic cannot be answered) and
    counts what went wrong; it never holds on to them: the core puts them in its `Ready`."""

    __slots__ = ("_topics", "invalid_count", "replica_id", "unanswered_count")

    def __init__(self, replica_id: int) -> None:
        self.replica_id = replica_id
        #: Messages of the request topic that were not valid requests.
        self.invalid_count = 0
        #: Requests applied but not answered: their reply topic cannot be published to.
        self.unanswered_count = 0
        self._topics = TopicCheck()

    def topic_problem(self, topic: str) -> str | None:
        return self._topics.problem(topic)

    def answer(
        self,
        to: ReplyTo,
        *,
        key: str,
        value: str | None,
        revision: int | None,
        status: Status | None = None,
    ) -> Publish | None:
        """A key's answer: `status` ok or naoencontrada from the value unless given."""
        # Validating (in Rust) costs half what model_construct (in Python) does.
        reply = Resposta(
            idpedido=to.rid,
            chave=key,
            valor=value,
            status=status or ("ok" if value is not None else "naoencontrada"),
            idserv=self.replica_id,
            revisao=revision,
        )
        return self._send(to, reply)

    def read(self, to: ReplyTo, store: Store, key: str) -> Publish | None:
        """A read's answer: the key's value and revision as the store holds them now."""
        entry = store.entry(key)
        value, revision = entry if entry is not None else (None, None)
        return self.answer(to, key=key, value=value, revision=revision)

    def replay(self, entry: LoggedRequest, store: Store, position: int) -> Publish | None:
        """A logged request answered again by a substitute (§6): a read as of now, a write
        with the outcome it had where it was applied."""
        to = ReplyTo(entry.reply_to, entry.request_id, position)
        if entry.is_read:
            return self.read(to, store, entry.key)
        if entry.kind == "l":
            outcome = logged_lease_outcome(entry.status, entry.value)
            return self.lease(to, entry.key, outcome, entry.revision)
        if entry.kind == "t":
            txn = logged_txn_outcome(entry.status, entry.value)
            return self.transaction(to, txn, entry.revision)
        value = entry.value
        if entry.kind == "i" and value is None and entry.status == "ok":
            # A plain put's outcome read back from disk keeps its revision, not its value: the
            # key holds it still if its revision is the put's.
            current = store.entry(entry.key)
            value = current[0] if current is not None and current[1] == entry.revision else None
        return self.answer(
            to, key=entry.key, value=value, revision=entry.revision, status=entry.status
        )

    def owed(
        self, message: Consulta | Write, store: Store, log: RequestLog, position: int
    ) -> Publish | None:
        """A request left unanswered while we joined (`kvserver.join.Rejoin.owed`): a read
        as of now, an applied write with the outcome it had."""
        to = ReplyTo(message.topico_resp, message.idpedido, position)
        if isinstance(message, Consulta):
            return self.read(to, store, message.chave)
        status, value, revision = earlier_outcome(log, store, message)
        return self.answer(to, key=message.chave, value=value, revision=revision, status=status)

    def lease(
        self, to: ReplyTo, name: str, outcome: LeaseOutcome, revision: int | None
    ) -> Publish | None:
        """A lease's answer (§18): its TTL after a grant or keep-alive, at `revision` (the
        position the request was applied at), or why it was refused."""
        reply = Resposta(
            idpedido=to.rid, status=outcome.status, idserv=self.replica_id, concessao=name,
            ttl=outcome.ttl, revisao=revision, erro=outcome.problem,
        )  # fmt: skip
        return self._send(to, reply)

    def lease_page(self, to: ReplyTo, leases: list[LeaseSummary], more: bool) -> Publish | None:
        reply = Resposta(
            idpedido=to.rid, status="ok", idserv=self.replica_id, concessoes=leases, mais=more,
            revisao=to.position,
        )  # fmt: skip
        return self._send(to, reply)

    def listing(self, to: ReplyTo, *, keys: list[str], more: bool) -> Publish | None:
        reply = Resposta(
            idpedido=to.rid, status="ok", idserv=self.replica_id, chaves=keys, mais=more,
            posicao=to.position,
        )  # fmt: skip
        return self._send(to, reply)

    def watching(self, to: ReplyTo, position: int, *, found: bool = True) -> Publish | None:
        """A `vigia`'s answer (registered at `position`), or a `fimvigia`'s."""
        status: Status = "ok" if found else "naoencontrada"
        reply = Resposta(idpedido=to.rid, status=status, idserv=self.replica_id, posicao=position)
        return self._send(to, reply)

    def compacted(self, to: ReplyTo, oldest: int) -> Publish | None:
        """A `vigia` from before what the history keeps: `oldest` is the earliest `desde`
        it can serve."""
        reply = Resposta(
            idpedido=to.rid, status="compactada", idserv=self.replica_id, revisao=oldest,
            erro=f"the history keeps the changes after revision {oldest} only",
        )  # fmt: skip
        return self._send(to, reply)

    def history(self, to: ReplyTo, key: str, changes: list[Change], more: bool) -> Publish | None:
        """A `historico`'s answer: the key's changes the history keeps, oldest first."""
        found = [Mudanca(chave=k, valor=v, tipo=t, revisao=r) for r, k, t, v, _ in changes]
        reply = Resposta(
            idpedido=to.rid, chave=key, status="ok", idserv=self.replica_id, mudancas=found,
            mais=more, posicao=to.position,
        )  # fmt: skip
        return self._send(to, reply)

    def transaction(self, to: ReplyTo, outcome: TxnOutcome, revision: int | None) -> Publish | None:
        """A transaction's answer (§20): which branch ran, its results, and its position."""
        reply = Resposta(
            idpedido=to.rid, status=outcome.status, idserv=self.replica_id, revisao=revision,
            sucesso=outcome.success, resultados=outcome.results, erro=outcome.problem,
        )  # fmt: skip
        return self._send(to, reply)

    def error(self, to: ReplyTo, reason: str, *, key: str | None = None) -> Publish | None:
        reply = Resposta(
            idpedido=to.rid, chave=key, valor=None, status="erro", idserv=self.replica_id,
            erro=reason,
        )  # fmt: skip
        return self._send(to, reply)

    def rejected(self, message: Invalid, position: int) -> None:
        self.invalid_count += 1
        if _worth_logging(self.invalid_count):
            log.warning(
                "replica %d rejected message at position %d (%d so far): %s",
                self.replica_id,
                position,
                self.invalid_count,
                message.reason,
            )

    def _send(self, to: ReplyTo, reply: Resposta) -> Publish | None:
        """The reply to publish, unless its address is one no MQTT client may publish to: the
        request stays applied (a write is still a write), only the reply is dropped."""
        problem = self._topics.problem(to.topic)
        if problem is None:
            return Publish(to.topic, reply)
        self.unanswered_count += 1
        if _worth_logging(self.unanswered_count):
            log.warning(
                "replica %d applied request %.40r at position %d without answering it (%d so "
                "far): its topico-resp %s",
                self.replica_id,
                reply.idpedido,
                to.position,
                self.unanswered_count,
                problem,
            )
        return None
