"""Batches (protocol §21): many requests in one message of the request topic, and their
answers in one message per response topic.

The cost of mqtt-kv is the cost of MQTT messages (issue 28): the broker and each of the
replicas pay paho's per-packet work for every message, whatever it holds. A `lote` carries
an ordered list of requests, which every replica applies as if they had arrived one after
another where the `lote` stands in the stream; each owner answers its part in one `respostas`
per response topic. A request alone is still answered alone.

Decoding is the hot path's, as for single requests: a canonical `lote` is parsed and
validated in one pass in Rust. Only a `lote` that pass refuses is taken apart request by
request, so that one bad request gets its own error answer and the others are applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, TypeAdapter
from pydantic import ValidationError as _ValidationError
from pydantic_core import from_json

from kvwire.feed import FimVigia, Historico, Vigia
from kvwire.leasing import Concessao, ListaConcessoes, Renovacao, Revogacao
from kvwire.messages import (
    MAX_PAYLOAD_BYTES,
    SIGNED_REQUESTS,
    Consulta,
    Insercao,
    Invalid,
    Listagem,
    Remocao,
    ReplyRoute,
    Request,
    Resposta,
    decode_object,
    decode_request,
)
from kvwire.txn import Transacao
from kvwire.wire import _Wire

#: The most requests one `lote` may hold: a replica applies a batch in one turn, and its
#: answers wait for the whole of it.
MAX_BATCH_REQUESTS = 1024

#: What a `lote` may hold: every request but the control messages (§16: `falhaserv`,
#: `novoserv` and `expiracao` are never batched) and a `lote` itself.
Batchable = (
    Consulta
    | Insercao
    | Remocao
    | Listagem
    | Concessao
    | Renovacao
    | Revogacao
    | ListaConcessoes
    | Vigia
    | FimVigia
    | Historico
    | Transacao
)


class Lote(_Wire):
    """A batch as it is written (`KVClient` writes its own faster, from the requests'
    encoded forms: `encode_batch`)."""

    tipomsg: Literal["lote"] = "lote"
    pedidos: list[Annotated[Batchable, Field(discriminator="tipomsg")]]


class Respostas(_Wire):
    """One owner's answers to one response topic's requests of a batch, in stream order."""

    tipomsg: Literal["respostas"] = "respostas"
    respostas: list[Resposta]
    idserv: StrictInt

    def encode(self) -> bytes:
        # Each answer as `Resposta.encode` writes it alone (it leaves out what its kind has
        # not), which the model's own serializer would not do.
        answers = b",".join(answer.encode() for answer in self.respostas)
        return b'{"tipomsg":"respostas","respostas":[%s],"idserv":%d}' % (answers, self.idserv)


@dataclass(frozen=True)
class Batch:
    """A decoded `lote`: each request, or why it is not one, in order. Each takes a position
    of the stream, as it would alone."""

    requests: tuple[Request | Invalid, ...]


_LOTE_PREFIX = b'{"tipomsg":"lote"'
_RESPOSTAS_PREFIX = b'{"tipomsg":"respostas"'
_CANONICAL_LOTE: TypeAdapter[Lote] = TypeAdapter(Lote)
_RESPOSTAS: TypeAdapter[Respostas] = TypeAdapter(Respostas)


def encode_batch(requests: list[bytes]) -> bytes:
    """A `lote` of requests each already encoded (as `Request.encode` writes them)."""
    return b'{"tipomsg":"lote","pedidos":[%s]}' % b",".join(requests)


def decode_stream(
    payload: bytes | bytearray, route: ReplyRoute | None = None
) -> Request | Batch | Invalid:
    """One payload of the request topic: a request, a batch, or why it is neither; never
    raises."""
    if payload.startswith(_LOTE_PREFIX) and len(payload) <= MAX_PAYLOAD_BYTES:
        try:
            lote = _CANONICAL_LOTE.validate_json(payload)
        except _ValidationError:
            return _decode_batch(payload)
        if 0 < len(lote.pedidos) <= MAX_BATCH_REQUESTS:
            return Batch(tuple(lote.pedidos))
        return _decode_batch(payload)
    request = decode_request(payload, route)
    if isinstance(request, Invalid) and request.unknown_kind == "lote":
        return _decode_batch(payload)  # another spelling of one
    return request


def _decode_batch(payload: bytes | bytearray) -> Batch | Invalid:
    """A batch the canonical pass refused, request by request: a bad one is an `Invalid`
    that names its own `topico-resp`, so that it is answered and the others applied."""
    try:
        obj = from_json(payload)
    except ValueError as exc:
        return Invalid(f"malformed JSON: {exc}")
    items = obj.get("pedidos") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        return Invalid("a lote needs 'pedidos', a list of requests")
    if not items:
        return Invalid("an empty lote: it holds no request")
    if len(items) > MAX_BATCH_REQUESTS:
        topic, rid = next(
            (_address(item) for item in items if _address(item)[0] is not None), (None, None)
        )
        why = f"a lote of {len(items)} requests is over the limit of {MAX_BATCH_REQUESTS}"
        return Invalid(f"{why}: none of them was applied", topic, rid)
    return Batch(tuple(_decode_item(item) for item in items))


def _address(item: object) -> tuple[str | None, int | str | None]:
    """Where an answer to this item would go, as far as it can be read."""
    if not isinstance(item, dict):
        return None, None
    topic = next((item[k] for k in ("topico-resp", "topicoresp", "topico_resp") if k in item), None)
    rid = item.get("idpedido")
    topic = topic if isinstance(topic, str) and topic else None
    rid = rid if isinstance(rid, int | str) and not isinstance(rid, bool) else None
    return topic, rid


def _decode_item(item: Any) -> Request | Invalid:
    if not isinstance(item, dict):
        return Invalid(f"a lote's request must be a JSON object, got {type(item).__name__}")
    request = decode_object(item)
    if isinstance(request, Invalid):
        if request.unknown_kind == "lote":
            return Invalid("a lote cannot hold a lote", *_address(item))
        return request
    if isinstance(request, SIGNED_REQUESTS):
        kind = request.tipomsg
        return Invalid(f"control messages ({kind}) are never batched", *_address(item))
    return request


def decode_answers(payload: bytes | bytearray) -> list[Resposta] | Invalid:
    """A message of a response topic: one `resposta`, or a `respostas` of a batch (ours are
    told apart by their first bytes; another writer's spacing takes a second try)."""
    ours_batch = payload.startswith(_RESPOSTAS_PREFIX)
    decoders = (_batch_of, _one_of) if ours_batch else (_one_of, _batch_of)
    try:
        return decoders[0](payload)
    except _ValidationError:
        pass
    try:
        return decoders[1](payload)
    except _ValidationError as exc:
        return Invalid(f"not a resposta nor a respostas: {exc.error_count()} errors")


def _batch_of(payload: bytes | bytearray) -> list[Resposta]:
    return _RESPOSTAS.validate_json(payload).respostas


def _one_of(payload: bytes | bytearray) -> list[Resposta]:
    return [Resposta.model_validate_json(payload)]
