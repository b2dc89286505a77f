"""Transactions (protocol §20): compares, and the operations of each branch, applied by every
replica whole at the transaction's one position.

A transaction's operations are the requests a client knows (`insercao`, `remocao`,
`consulta`, `listagem`), without `topico-resp` and `idpedido`: the transaction has those.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from kvwire.wire import _TOPICO_RESP, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, RequestId, _Wire

#: The most compares, and the most operations in each branch (etcd's default is 128 in all):
#: a constant of the protocol, as every replica must refuse alike.
MAX_TXN_OPS = 128


class Se(_Wire):
    """One compare: the key's revision (`=`, `<` or `>` R; 0 is "no value"), its value
    (`=` V), or its absence. Exactly one of `revisao`, `valor` and `ausente`."""

    chave: StrictStr
    revisao: StrictInt | None = None
    valor: StrictStr | None = None
    ausente: StrictBool | None = None
    comparacao: Literal["=", "<", ">"] = "="


class TxnPut(_Wire):
    tipomsg: Literal["insercao"] = "insercao"
    chave: StrictStr
    novovalor: StrictStr
    serevisao: StrictInt | None = None
    concessao: StrictStr | None = None


class TxnDelete(_Wire):
    tipomsg: Literal["remocao"] = "remocao"
    chave: StrictStr
    serevisao: StrictInt | None = None


class TxnGet(_Wire):
    tipomsg: Literal["consulta"] = "consulta"
    chave: StrictStr


class TxnList(_Wire):
    tipomsg: Literal["listagem"] = "listagem"
    prefixo: StrictStr = ""
    apos: StrictStr | None = None
    limite: StrictInt = Field(default=LIST_LIMIT_DEFAULT, ge=1, le=LIST_LIMIT_MAX)


TxnOp = Annotated[TxnPut | TxnDelete | TxnGet | TxnList, Field(discriminator="tipomsg")]


class Transacao(_Wire):
    """If every compare of `se` holds, the operations of `entao`, else those of `senao`."""

    tipomsg: Literal["transacao"] = "transacao"
    se: list[Se] = Field(default_factory=list, max_length=MAX_TXN_OPS)
    entao: list[TxnOp] = Field(default_factory=list, max_length=MAX_TXN_OPS)
    senao: list[TxnOp] = Field(default_factory=list, max_length=MAX_TXN_OPS)
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Resultado(_Wire):
    """One operation's result: a put's or delete's key and the transaction's revision (a
    delete of a key with no value: `status` naoencontrada); a get's value and revision; a
    listing's keys and whether more follow."""

    chave: StrictStr | None = None
    valor: StrictStr | None = None
    revisao: StrictInt | None = None
    status: Literal["ok", "naoencontrada"] | None = None
    chaves: list[StrictStr] | None = None
    mais: StrictBool | None = None
