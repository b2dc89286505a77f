"""What a client can ask of the cluster, as typed values: one `KVClient.submit` takes any of
them (as nats.py's one `request` verb does), and each knows its message on the wire."""

from __future__ import annotations

from dataclasses import dataclass

from kvwire.messages import LIST_LIMIT_DEFAULT, Consulta, Insercao, Listagem, Remocao

Message = Consulta | Insercao | Remocao | Listagem


@dataclass(frozen=True)
class Get:
    key: str

    def message(self, reply_to: str, rid: int) -> Message:
        return Consulta(chave=self.key, topico_resp=reply_to, idpedido=rid)


@dataclass(frozen=True)
class Put:
    """A put; with `if_revision`, a compare-and-set (0: only if the key is absent)."""

    key: str
    value: str
    if_revision: int | None = None

    def message(self, reply_to: str, rid: int) -> Message:
        return Insercao(
            chave=self.key, novovalor=self.value, topico_resp=reply_to, idpedido=rid,
            serevisao=self.if_revision,
        )  # fmt: skip


@dataclass(frozen=True)
class Delete:
    key: str
    if_revision: int | None = None

    def message(self, reply_to: str, rid: int) -> Message:
        return Remocao(
            chave=self.key, topico_resp=reply_to, idpedido=rid, serevisao=self.if_revision
        )


@dataclass(frozen=True)
class List:
    """One page of keys starting with `prefix`, after `after` (exclusive)."""

    prefix: str = ""
    after: str | None = None
    limit: int = LIST_LIMIT_DEFAULT

    def message(self, reply_to: str, rid: int) -> Message:
        return Listagem(
            prefixo=self.prefix, apos=self.after, limite=self.limit, topico_resp=reply_to,
            idpedido=rid,
        )  # fmt: skip


Operation = Get | Put | Delete | List
