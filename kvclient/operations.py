"""What a client can ask of the cluster, as typed values: one `KVClient.submit` takes any of
them (as nats.py's one `request` verb does), and each knows its message on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kvwire.errors import Conflict, KeyNotFound, QuotaExceeded, ServerError
from kvwire.feed import HISTORY_LIMIT_DEFAULT, FimVigia, Historico, Vigia
from kvwire.leasing import Concessao, ListaConcessoes, Renovacao, Revogacao
from kvwire.messages import Consulta, Insercao, Listagem, Remocao, Resposta
from kvwire.txn import Se, Transacao, TxnDelete, TxnGet, TxnList, TxnOp, TxnPut
from kvwire.wire import LIST_LIMIT_DEFAULT

Message = (
    Consulta | Insercao | Remocao | Listagem | Concessao | Renovacao | Revogacao | ListaConcessoes
    | Vigia | FimVigia | Historico | Transacao
)  # fmt: skip


@dataclass(frozen=True)
class Get:
    key: str

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Consulta(chave=self.key, topico_resp=reply_to, idpedido=rid)

    def in_txn(self) -> TxnOp:
        return TxnGet(chave=self.key)


@dataclass(frozen=True)
class Put:
    """A put; with `if_revision`, a compare-and-set (0: only if the key is absent); with
    `lease`, the key ends with that lease (protocol §18)."""

    key: str
    value: str
    if_revision: int | None = None
    lease: str | None = None

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Insercao(
            chave=self.key, novovalor=self.value, topico_resp=reply_to, idpedido=rid,
            serevisao=self.if_revision, concessao=self.lease,
        )  # fmt: skip

    def in_txn(self) -> TxnOp:
        return TxnPut(
            chave=self.key, novovalor=self.value, serevisao=self.if_revision,
            concessao=self.lease,
        )  # fmt: skip


@dataclass(frozen=True)
class Delete:
    key: str
    if_revision: int | None = None

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Remocao(
            chave=self.key, topico_resp=reply_to, idpedido=rid, serevisao=self.if_revision
        )

    def in_txn(self) -> TxnOp:
        return TxnDelete(chave=self.key, serevisao=self.if_revision)


@dataclass(frozen=True)
class List:
    """One page of keys starting with `prefix`, after `after` (exclusive)."""

    prefix: str = ""
    after: str | None = None
    limit: int = LIST_LIMIT_DEFAULT

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Listagem(
            prefixo=self.prefix, apos=self.after, limite=self.limit, topico_resp=reply_to,
            idpedido=rid,
        )  # fmt: skip

    def in_txn(self) -> TxnOp:
        return TxnList(prefixo=self.prefix, apos=self.after, limite=self.limit)


@dataclass(frozen=True)
class Grant:
    """Grant the lease `name` for `ttl` seconds, or grant it again (§18)."""

    name: str
    ttl: int

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Concessao(concessao=self.name, ttl=self.ttl, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class KeepAlive:
    name: str

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Renovacao(concessao=self.name, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class Revoke:
    name: str

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Revogacao(concessao=self.name, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class ListLeases:
    """One page of the cluster's leases, in name order, after `after` (exclusive)."""

    after: str | None = None
    limit: int = LIST_LIMIT_DEFAULT

    def message(self, reply_to: str, rid: int | str) -> Message:
        return ListaConcessoes(
            apos=self.after, limite=self.limit, topico_resp=reply_to, idpedido=rid
        )


@dataclass(frozen=True)
class Watch:
    """Register a watch of the keys starting with `prefix`: the changes after `since` (None:
    from now), while the lease `lease` lives (protocol §19)."""

    prefix: str
    since: int | None
    lease: str

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Vigia(
            prefixo=self.prefix, desde=self.since, concessao=self.lease, topico_resp=reply_to,
            idpedido=rid,
        )  # fmt: skip


@dataclass(frozen=True)
class Unwatch:
    """Cancel the watch registered with the request id `watch`."""

    watch: int | str

    def message(self, reply_to: str, rid: int | str) -> Message:
        return FimVigia(vigia=self.watch, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class History:
    """The key's newest `limit` changes that the history keeps."""

    key: str
    limit: int = HISTORY_LIMIT_DEFAULT

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Historico(chave=self.key, limite=self.limit, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class Compare:
    """One compare of a transaction: the key's `revision` (`op` "=", "<" or ">"; 0 is "no
    value"), or its `value`, or that it is `absent` (True) or present (False)."""

    key: str
    revision: int | None = None
    value: str | None = None
    absent: bool | None = None
    op: str = "="

    def wire(self) -> Se:
        return Se.model_validate(
            {"chave": self.key, "revisao": self.revision, "valor": self.value,
             "ausente": self.absent, "comparacao": self.op}
        )  # fmt: skip


#: What a transaction's branches hold.
TxnStep = Put | Delete | Get | List


@dataclass(frozen=True)
class Txn:
    """If every compare holds, `success`, else `failure`, at one position (protocol §20)."""

    compares: tuple[Compare, ...] = ()
    success: tuple[TxnStep, ...] = ()
    failure: tuple[TxnStep, ...] = ()

    def message(self, reply_to: str, rid: int | str) -> Message:
        return Transacao(
            se=[c.wire() for c in self.compares], entao=[op.in_txn() for op in self.success],
            senao=[op.in_txn() for op in self.failure], topico_resp=reply_to, idpedido=rid,
        )  # fmt: skip


Operation = (
    Get | Put | Delete | List | Grant | KeepAlive | Revoke | ListLeases | Watch | Unwatch | History
    | Txn
)  # fmt: skip


class Asks(Protocol):
    """What a lease and the recipes built on it need of a client (`KVClient` is one): one
    operation in, the replica's answer out."""

    def request(self, operation: Operation) -> Resposta: ...


def checked(answer: Resposta) -> Resposta:
    """The answer if it is `ok`; the matching KVError otherwise."""
    if answer.status == "ok":
        return answer
    if answer.status == "naoencontrada":
        raise KeyNotFound(answer.chave or "")
    if answer.status == "conflito":
        raise Conflict(answer.chave or "", answer.valor, answer.revisao)
    if answer.status == "cota":
        raise QuotaExceeded(answer.chave or "", answer.erro)
    raise ServerError(f"replica {answer.idserv} refused the request: {answer.erro}")
