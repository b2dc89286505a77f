"""The change feed's messages (protocol §19): register a watch, cancel it, read a key's history,
and the events a watch's owner sends.

A watch is known by its `topico-resp` and the `idpedido` of its `vigia`, like any request, so
every event names the watch it belongs to with that `idpedido`. Events are numbered by the
stream: `revisao` is the position of the change, `anterior` the position of the change this
watch was sent before it (or the watch's `desde`), so a client that missed one sees it.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import Field, StrictInt, StrictStr

from kvwire.wire import _TOPICO_RESP, RequestId, _idserv, _Wire

#: The most watches a cluster holds, and the most on one response topic (one client's, as a
#: rule): a `vigia` beyond either is refused. Constants of the protocol, as `MAX_LEASES`:
#: replicas that disagreed would register different watches.
MAX_WATCHES = 10_000
MAX_WATCHES_PER_TOPIC = 1_000

#: The most changes one `historico` answer holds, and how many when `limite` is left out.
HISTORY_LIMIT_MAX, HISTORY_LIMIT_DEFAULT = 10_000, 1000

#: What a change did: a put, a delete, or the end of the key's lease (§18).
ChangeKind = Literal["insercao", "remocao", "expiracao"]


class Vigia(_Wire):
    """Register a watch of the keys starting with `prefixo`: the changes after revision
    `desde` (absent: from this position on), for as long as the lease `concessao` lives."""

    tipomsg: Literal["vigia"] = "vigia"
    prefixo: StrictStr = ""
    desde: StrictInt | None = Field(default=None, ge=0)
    concessao: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class FimVigia(_Wire):
    """Cancel the watch that `topico-resp` registered with the `idpedido` `vigia`."""

    tipomsg: Literal["fimvigia"] = "fimvigia"
    vigia: RequestId
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Historico(_Wire):
    """A key's changes that the history still holds, the newest `limite` of them; answered by
    the key's owner, from its history."""

    tipomsg: Literal["historico"] = "historico"
    chave: StrictStr
    limite: StrictInt = Field(default=HISTORY_LIMIT_DEFAULT, ge=1, le=HISTORY_LIMIT_MAX)
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Mudanca(_Wire):
    """One change: in a `historico` answer (with its `revisao`), or one of several that share
    a revision in an `evento` (a lease's end deletes all its keys at one position)."""

    chave: StrictStr
    valor: StrictStr | None = None
    tipo: ChangeKind
    revisao: StrictInt | None = None


#: `evento.tipo`: a change's kind; `progresso`, nothing matched from `anterior` through
#: `revisao` (sent to a quiet watch every few seconds, so a lost event shows as a gap even
#: when no other follows); `fim`, the watch ended (its lease ended, or it was cancelled).
EventKind = Literal["insercao", "remocao", "expiracao", "progresso", "fim"]


class Evento(_Wire):
    """One event of a watch. A revision whose several changes match comes as one event with
    `mudancas` (and no `chave`), so that a revision is never split across events."""

    tipomsg: Literal["evento"] = "evento"
    idpedido: RequestId
    revisao: StrictInt
    anterior: StrictInt
    tipo: EventKind
    chave: StrictStr | None = None
    valor: StrictStr | None = None
    mudancas: list[Mudanca] | None = None
    idserv: StrictInt = _idserv()

    def encode(self) -> bytes:
        # `valor: null` is a delete's word for "no value": kept for a key's event.
        if self.chave is None:
            return self.__pydantic_serializer__.to_json(self, exclude_none=True)
        return self.__pydantic_serializer__.to_json(self, exclude=_EVENT_DROPS)


_EVENT_DROPS = {"mudancas"}


class ChangeRecord(NamedTuple):
    """A change as a replica's history keeps it, and as it travels in `estado`
    (`[revision, key, kind, value, age]`: `age` in seconds of the sender's clock)."""

    revision: int
    key: str
    kind: ChangeKind
    value: str | None
    age: float


class WatchRecord(NamedTuple):
    """A watch as it travels in `estado` and is kept on disk: `[topic, rid, prefix, lease,
    since, registered_at, last]`; `last` is the revision of the last change that matched its
    prefix (0: none known), from which the next event's `anterior` follows."""

    topic: str
    rid: int | str
    prefix: str
    lease: str
    since: int
    registered_at: int
    last: int


def decode_evento(payload: bytes | bytearray) -> Evento | None:
    try:
        return Evento.model_validate_json(payload)
    except ValueError:
        return None
