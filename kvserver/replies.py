"""What a replica tells clients: answers, error answers, and the two kinds of trouble a
request can bring (PROTOCOL §4, §5).

A request that is not a request is rejected by every replica alike and answered by one; a
request whose reply topic no MQTT client may publish to is applied and not answered (issue
11). Both are counted, for the heartbeats, and logged sparingly: a flood of bad requests
must not become a flood of log lines.
"""

from __future__ import annotations

import logging

from kvserver.effects import Effect, Publish
from kvserver.store import Store
from kvwire.messages import Invalid, LoggedRequest, Resposta, Status
from kvwire.topics import TopicCheck

log = logging.getLogger("kvserver")

_LOG_FIRST, _LOG_EVERY = 20, 1000


def _worth_logging(count: int) -> bool:
    return count <= _LOG_FIRST or count % _LOG_EVERY == 0


def write_problem(key: str, value: str, max_key_bytes: int, max_value_bytes: int) -> str | None:
    """Why every replica refuses this write, or None."""
    if len(key.encode()) > max_key_bytes:
        return f"key longer than {max_key_bytes} bytes"
    # A UTF-8 character is at most 4 bytes: most values need no encoding to be judged.
    if len(value) * 4 > max_value_bytes and len(value.encode()) > max_value_bytes:
        return f"value longer than {max_value_bytes} bytes"
    return None


class Replies:
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
        key: str,
        value: str | None,
        revision: int | None,
        topic: str,
        rid: int | str,
        position: int,
        out: list[Effect],
        status: Status | None = None,
    ) -> None:
        """A key's answer: `status` ok or naoencontrada from the value unless given."""
        # Validating (in Rust) costs half what model_construct (in Python) does.
        reply = Resposta(
            idpedido=rid,
            chave=key,
            valor=value,
            status=status or ("ok" if value is not None else "naoencontrada"),
            idserv=self.replica_id,
            revisao=revision,
        )
        self._send(topic, reply, position, out)

    def read(
        self, store: Store, key: str, topic: str, rid: int | str, position: int, out: list[Effect]
    ) -> None:
        """A read's answer: the key's value and revision as the store holds them now."""
        entry = store.entry(key)
        value, revision = entry if entry is not None else (None, None)
        self.answer(key, value, revision, topic, rid, position, out)

    def replay(self, entry: LoggedRequest, store: Store, position: int, out: list[Effect]) -> None:
        """A logged request answered again by a substitute (§6): a read as of now, a write
        with the outcome it had where it was applied."""
        if entry.is_read:
            self.read(store, entry.key, entry.reply_to, entry.request_id, position, out)
        else:
            self.answer(
                entry.key, entry.value, entry.revision, entry.reply_to, entry.request_id,
                position, out, entry.status,
            )  # fmt: skip

    def listing(
        self,
        keys: list[str],
        more: bool,
        topic: str,
        rid: int | str,
        position: int,
        out: list[Effect],
    ) -> None:
        reply = Resposta(
            idpedido=rid, status="ok", idserv=self.replica_id, chaves=keys, mais=more,
            posicao=position,
        )  # fmt: skip
        self._send(topic, reply, position, out)

    def error(
        self,
        topic: str,
        rid: int | str | None,
        reason: str,
        position: int,
        out: list[Effect],
        key: str | None = None,
    ) -> None:
        reply = Resposta(
            idpedido=rid, chave=key, valor=None, status="erro", idserv=self.replica_id, erro=reason
        )
        self._send(topic, reply, position, out)

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

    def _send(self, topic: str, reply: Resposta, position: int, out: list[Effect]) -> None:
        """Publish a reply, unless its address is one no MQTT client may publish to: the
        request stays applied (a write is still a write), only the reply is dropped."""
        problem = self._topics.problem(topic)
        if problem is None:
            out.append(Publish(topic, reply))
            return
        self.unanswered_count += 1
        if _worth_logging(self.unanswered_count):
            log.warning(
                "replica %d applied request %.40r at position %d without answering it (%d so "
                "far): its topico-resp %s",
                self.replica_id,
                reply.idpedido,
                position,
                self.unanswered_count,
                problem,
            )
