"""Every message of the protocol (protocol §2) as a pydantic model, and the decoders.

Reading is tolerant (other implementations of the assignment spell fields and `tipomsg`
differently); writing is canonical. Decoding happens once, at the edge of each program: what
comes out of `decode_request` is a model or an `Invalid` that says why, never a raw dict, and
never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AliasChoices,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
)
from pydantic import ValidationError as _ValidationError
from pydantic_core import from_json

from kvwire.feed import ChangeRecord, FimVigia, Historico, Mudanca, Vigia, WatchRecord
from kvwire.leasing import (
    Concessao,
    Expiracao,
    LeaseRecord,
    LeaseSummary,
    ListaConcessoes,
    Renovacao,
    Revogacao,
)
from kvwire.snapshot import Instantaneo
from kvwire.txn import Resultado, Transacao
from kvwire.wire import _TOPICO_RESP, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, RequestId, _idserv, _Wire

REQUESTS_TOPIC = "inf1406-reqs"
MONITOR_TOPIC = "inf1406-monitor"
SYNC_TOPIC_PREFIX = "inf1406-sync"

#: Replicas record their digest at every position that is a multiple of this.
CHECKPOINT_EVERY = 1000

#: Requests larger than this are not even parsed: the broker may carry them, we will not.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


class Consulta(_Wire):
    tipomsg: Literal["consulta"] = "consulta"
    chave: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class Insercao(_Wire):
    tipomsg: Literal["insercao"] = "insercao"
    chave: StrictStr
    novovalor: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId
    #: Compare-and-set (§13): applied only if the key's revision is this (0: no value).
    serevisao: StrictInt | None = None
    #: The live lease the key ends with (§18); a put without one detaches the key.
    concessao: StrictStr | None = None


class Remocao(_Wire):
    """A delete (§13): a write, applied by every replica, answered by the key's owner."""

    tipomsg: Literal["remocao"] = "remocao"
    chave: StrictStr
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId
    serevisao: StrictInt | None = None


class Listagem(_Wire):
    """Keys with a prefix, in order, a page at a time (§13); answered by one replica."""

    tipomsg: Literal["listagem"] = "listagem"
    prefixo: StrictStr = ""
    apos: StrictStr | None = None
    limite: StrictInt = Field(default=LIST_LIMIT_DEFAULT, ge=1, le=LIST_LIMIT_MAX)
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class FalhaServ(_Wire):
    tipomsg: Literal["falhaserv"] = "falhaserv"
    idserv: StrictInt = _idserv()
    vistoem: float = Field(validation_alias=AliasChoices("vistoem", "vistoEm"))
    incarnacao: StrictStr | None = None


class NovoServ(_Wire):
    tipomsg: Literal["novoserv"] = "novoserv"
    idserv: StrictInt = _idserv()
    topico_resp: StrictStr = _TOPICO_RESP
    incarnacao: StrictStr | None = None
    # protocol §11: a replica that lost its session says how far its candidate store goes.
    posicao: StrictInt | None = None


Request = (
    Consulta
    | Insercao
    | Remocao
    | Listagem
    | FalhaServ
    | NovoServ
    | Concessao
    | Renovacao
    | Revogacao
    | Expiracao
    | ListaConcessoes
    | Vigia
    | FimVigia
    | Historico
    | Transacao
    | Instantaneo
)
#: Control messages on the request topic: in a secured cluster (§16) only a holder of the
#: cluster key may say them, so they carry its signature and one without it is ignored.
SIGNED_REQUESTS = (FalhaServ, NovoServ, Expiracao)
#: The requests that change the store, de-duplicated by (topico-resp, idpedido) (§5).
Write = Insercao | Remocao


#: `compactada` (§19): a `vigia` from before the oldest change kept; `revisao` says from where.
#: `cota`: a write the cluster's quota refused (`--max-keys`, `--max-bytes`).
Status = Literal["ok", "naoencontrada", "conflito", "erro", "compactada", "cota"]


class Resposta(_Wire):
    tipomsg: Literal["resposta"] = "resposta"
    idpedido: RequestId | None
    chave: StrictStr | None = None
    valor: StrictStr | None = None
    status: Status
    idserv: StrictInt
    #: The key's revision after the request (§12); null when it has no value.
    revisao: StrictInt | None = None
    erro: StrictStr | None = None
    #: A `listagem` answer (§13): the keys, whether more follow, and as of which position.
    chaves: list[StrictStr] | None = None
    mais: bool | None = None
    posicao: StrictInt | None = None
    #: A lease's answer (§18): its name, and its TTL after a grant or keep-alive.
    concessao: StrictStr | None = None
    ttl: StrictInt | None = None
    #: A `concessoes` answer: a page of leases (with `mais`).
    concessoes: list[LeaseSummary] | None = None
    #: A `historico` answer (§19): the key's changes, oldest first (with `mais`, `posicao`).
    mudancas: list[Mudanca] | None = None
    #: A `transacao` answer (§20): which branch ran, and one result per operation.
    sucesso: bool | None = None
    resultados: list[Resultado] | None = None

    def encode(self) -> bytes:
        # `valor: null` and `revisao: null` are part of the contract for a key's answer (a
        # naoencontrada says so with them); a listing has neither, an error no revision.
        if self.concessao is not None or self.concessoes is not None:
            return self.__pydantic_serializer__.to_json(
                self, exclude=_LEASE_DROPS, exclude_none=True
            )
        if self.mudancas is not None or self.resultados is not None:
            return self.__pydantic_serializer__.to_json(self, exclude_none=True)
        if self.chave is None and self._watch_answer:
            return self.__pydantic_serializer__.to_json(self, exclude_none=True)
        if self.chaves is not None:
            drop = _LISTING_DROPS
        elif self.status == "erro":
            drop = _ERROR_DROPS if self.erro is not None else _ERROR_DROPS | _ANSWER_DROPS
        else:
            drop = _ANSWER_DROPS if self.erro is None else _LISTING_FIELDS
        return self.__pydantic_serializer__.to_json(self, exclude=drop)

    @property
    def _watch_answer(self) -> bool:
        """A `vigia`'s or `fimvigia`'s (a position, or `compactada`), not a listing."""
        return self.chaves is None and (self.posicao is not None or self.status == "compactada")


# What `Resposta.encode` leaves out, built once: it runs for every answer.
_LISTING_FIELDS = {
    "chaves", "mais", "posicao", "concessao", "ttl", "concessoes", "mudancas", "sucesso",
    "resultados",
}  # fmt: skip
_ANSWER_DROPS = _LISTING_FIELDS | {"erro"}
_ERROR_DROPS = _LISTING_FIELDS | {"revisao"}
_LISTING_DROPS = {
    "chave", "valor", "revisao", "erro", "concessao", "ttl", "concessoes", "mudancas", "sucesso",
    "resultados",
}  # fmt: skip
_LEASE_DROPS = {"chave", "valor", "chaves", "posicao", "mudancas", "sucesso", "resultados"}


class Espelho(_Wire):
    """A key's current value on the value mirror (§14): retained on `<prefix>/<key>`; a
    deleted key's topic holds an empty retained payload instead."""

    chave: StrictStr
    valor: StrictStr
    revisao: StrictInt


Mode = Literal["live", "joining", "gone"]


class Heartbeat(_Wire):
    """A replica's heartbeat; also its MQTT last will, with `modo: "gone"`."""

    idserv: StrictInt = _idserv("idServ")
    incarnacao: StrictStr | None = None
    modo: Mode = "live"
    posicao: StrictInt | None = None
    chaves: StrictInt | None = None
    resumo: StrictStr | None = None
    # The ids this replica answers for besides its own (it is their substitute).
    substituindo: list[StrictInt] | None = None
    # The digest at the last stream position that is a multiple of CHECKPOINT_EVERY: replicas
    # under load are rarely at the same position when they beat, but they all pass these.
    marco: StrictInt | None = None
    resumomarco: StrictStr | None = None
    n: StrictInt | None = None
    enviadoem: float | None = None
    # Counters since the process started: messages refused as invalid, and requests applied
    # but left unanswered because their reply topic cannot be published to.
    invalidas: StrictInt | None = None
    semresposta: StrictInt | None = None
    # Secured mode (protocol §16): control messages ignored for a missing or wrong signature.
    semassinatura: StrictInt | None = None
    # `tamanho`: bytes of keys and values held; the cluster's quota (issue 29; absent: none).
    # `metricas`: the port of this replica's Prometheus endpoint, if it serves one.
    tamanho: StrictInt | None = None
    cotachaves: StrictInt | None = None
    cotabytes: StrictInt | None = None
    metricas: StrictInt | None = None
    # "cheio": its data directory is full; it answers nothing until there is room (issue 29).
    disco: Literal["cheio"] | None = None

    @property
    def disk_full(self) -> bool:
        return self.disco == "cheio"


class Recuperacao(_Wire):
    """An operator's order on the monitor topic (`kvclient recover --without I`): replicas
    waiting to resume after a whole-cluster stop no longer wait for these (protocol §17)."""

    papel: Literal["operador"] = "operador"
    sem: list[StrictInt]
    enviadoem: float


class MonitorBeat(_Wire):
    """A monitor announces itself on the monitor topic, so `kvclient status` can list it."""

    papel: Literal["monitor"] = "monitor"
    idmonitor: StrictStr
    enviadoem: float
    semassinatura: StrictInt | None = None
    #: The port of the monitor's Prometheus endpoint, if it serves one (issue 29).
    metricas: StrictInt | None = None


class LoggedRequest(NamedTuple):
    """One request in a replica's log (protocol §6). On the wire, inside `estado`, it is the
    JSON array `[at, kind, chave, topico-resp, idpedido, valor, status, revisao]`.

    A write's outcome was decided at its position (a compare-and-set may have lost), so a
    substitute replays it as it was: `status`, and `value` and `revision` as answered then.
    A read is answered with the value at replay time, which is still linearizable: its
    client has not been answered yet."""

    #: Local arrival time at the replica that logged it.
    at: float
    #: "c" for a consulta, "i" for an insercao, "r" for a remocao, "l" for a grant, keep-alive
    #: or revoke of the lease named by `key` (§18; `value` is its TTL, or the problem), "t"
    #: for a transaction (§20; `key` is its topico-resp, `value` its answer's JSON).
    kind: Literal["c", "i", "r", "l", "t"]
    key: str
    reply_to: str
    request_id: StrictInt | StrictStr
    #: A write's answer: the value and revision it answered with; None for a read.
    value: StrictStr | None
    status: Literal["ok", "naoencontrada", "conflito", "erro", "cota"] = "ok"
    revision: StrictInt | None = None

    @property
    def is_read(self) -> bool:
        return self.kind == "c"


#: One de-duplication key: (topico-resp, idpedido).
SeenEntry = tuple[str, StrictInt | StrictStr]


class Estado(_Wire):
    """One chunk of a state transfer to a joining replica (protocol §7)."""

    tipomsg: Literal["estado"] = "estado"
    idserv: StrictInt
    corte: StrictInt
    parte: StrictInt
    partes: StrictInt
    vivos: list[StrictInt]
    incarnacoes: dict[str, StrictStr | None] = Field(default_factory=dict)
    resumo: StrictStr
    chaves: StrictInt
    pares: dict[str, str] = Field(default_factory=dict)
    #: The revision of each pair in `pares` (§12).
    revisoes: dict[str, StrictInt] = Field(default_factory=dict)
    vistos: list[SeenEntry] = Field(default_factory=list)
    registro: list[LoggedRequest] = Field(default_factory=list)
    #: For each live replica, the `topico-resp` of the `novoserv` from which the sender's
    #: view has counted it in without a break (§7); a joiner answers what it buffered since.
    desde: dict[str, StrictStr] = Field(default_factory=dict)
    #: Leases (§18): `[name, ttl, renewed_at, age, keys]`, age in seconds at the cut.
    concessoes: list[LeaseRecord] = Field(default_factory=list)
    #: The change feed (§19): the watches, and the changes the history keeps, oldest first.
    vigias: list[WatchRecord] = Field(default_factory=list)
    historico: list[ChangeRecord] = Field(default_factory=list)
    #: The oldest `desde` the sender's history serves (every change after it is kept).
    compactada: StrictInt = 0


@dataclass(frozen=True)
class Invalid:
    """A payload on the request topic that is not a valid request, and why.

    `topico_resp` and `idpedido` are whatever could be read, so that the sender can still be
    told what was wrong.
    """

    reason: str
    topico_resp: str | None = None
    idpedido: int | str | None = None
    #: The `tipomsg` that no request has (lower case), for `kvwire.batch`: a `lote` is one.
    unknown_kind: str | None = None


_KINDS: dict[str, type[Request]] = {
    "consulta": Consulta,
    "consult": Consulta,
    "query": Consulta,
    "leitura": Consulta,
    "insercao": Insercao,
    "inserção": Insercao,
    "insere": Insercao,
    "insert": Insercao,
    "remocao": Remocao,
    "remoção": Remocao,
    "listagem": Listagem,
    "falhaserv": FalhaServ,
    "novoserv": NovoServ,
    "concessao": Concessao,
    "concessão": Concessao,
    "renovacao": Renovacao,
    "renovação": Renovacao,
    "revogacao": Revogacao,
    "revogação": Revogacao,
    "expiracao": Expiracao,
    "expiração": Expiracao,
    "concessoes": ListaConcessoes,
    "concessões": ListaConcessoes,
    "vigia": Vigia,
    "fimvigia": FimVigia,
    "historico": Historico,
    "histórico": Historico,
    "transacao": Transacao,
    "transação": Transacao,
    "instantaneo": Instantaneo,
    "instantâneo": Instantaneo,
}
_SHORT_KINDS: dict[str, type[Consulta | Insercao]] = {
    "C": Consulta,
    "c": Consulta,
    "I": Insercao,
    "i": Insercao,
}


def _first_of(obj: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in obj:
            return obj[name]
    return None


def _describe(error: _ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg'].lower()}")
    return "; ".join(parts)


def _json_object(payload: bytes | bytearray) -> dict[str, Any] | Invalid:
    # pydantic's parser, not json.loads: json.loads lets a lone surrogate ("\\ud800") into a
    # string, which no UTF-8 encoder (the key's hash, paho, our replies) can write back.
    try:
        obj = from_json(payload)
    except ValueError as exc:
        return Invalid(f"malformed JSON: {exc}")
    if not isinstance(obj, dict):
        return Invalid(f"expected a JSON object, got {type(obj).__name__}")
    return obj


#: Our own programs' requests, canonical `tipomsg` first: pydantic parses and validates them
#: in one pass in Rust (~1 us), 4x cheaper than json.loads and then building the model, and
#: every replica decodes every request. Whatever this refuses takes the general path below,
#: which alone says why a message is invalid.
_CANONICAL_REQUEST: TypeAdapter[Request] = TypeAdapter(
    Annotated[Request, Field(discriminator="tipomsg")]
)


#: The `idpedido` given to an MQTT 5 request that has none (§15): its Correlation Data in
#: hex after this prefix, so that it reaches the answer, the log and the de-duplication set
#: as any `idpedido` does, and the adapter copies it back onto the answer.
MQTT5_ID_PREFIX = "mqtt5:"


@dataclass(frozen=True)
class ReplyRoute:
    """MQTT 5's Response Topic and Correlation Data of a request (§15)."""

    topic: str
    correlation: bytes | None = None


def decode_request(
    payload: bytes | bytearray, route: ReplyRoute | None = None
) -> Request | Invalid:
    """Decode one payload of the request topic; never raises."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Invalid(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    try:
        return _CANONICAL_REQUEST.validate_json(payload)
    except _ValidationError:
        return _decode_general(payload, route)


def correlation_of(request_id: object) -> bytes | None:
    """The Correlation Data an answer to this `idpedido` carries back, if any."""
    if isinstance(request_id, str) and request_id.startswith(MQTT5_ID_PREFIX):
        try:
            return bytes.fromhex(request_id[len(MQTT5_ID_PREFIX) :]) or None
        except ValueError:
            return None
    return None


def _routed(obj: dict[str, Any], route: ReplyRoute) -> None:
    """An MQTT 5 request without `topico-resp` is answered on its Response Topic; without
    `idpedido` it is known by its Correlation Data (a read needs neither)."""
    obj["topico-resp"] = route.topic
    if "idpedido" not in obj:
        if route.correlation is not None:
            obj["idpedido"] = MQTT5_ID_PREFIX + route.correlation.hex()
        elif obj.get("tipomsg") in ("consulta", "listagem"):
            obj["idpedido"] = MQTT5_ID_PREFIX


def _decode_general(
    payload: bytes | bytearray, route: ReplyRoute | None = None
) -> Request | Invalid:
    """Other implementations' spellings, and the reason a message is invalid."""
    obj = _json_object(payload)
    if isinstance(obj, Invalid):
        return obj
    return decode_object(obj, route)


def decode_object(obj: dict[str, Any], route: ReplyRoute | None = None) -> Request | Invalid:
    """A request already parsed from JSON (one of a batch's, say), in any spelling we read."""
    if route is not None and _first_of(obj, "topico-resp", "topicoresp", "topico_resp") is None:
        _routed(obj, route)
    topic = _first_of(obj, "topico-resp", "topicoresp", "topico_resp")
    topic = topic if isinstance(topic, str) and topic else None
    rid = obj.get("idpedido")
    rid = rid if isinstance(rid, (int, str)) and not isinstance(rid, bool) else None
    kind = obj.get("tipomsg")
    if not isinstance(kind, str):
        return Invalid("missing or non-string field 'tipomsg'", topic, rid)
    model = _SHORT_KINDS.get(kind) or _KINDS.get(kind.lower())
    if model is None:
        return Invalid(f"unknown tipomsg {kind[:40]!r}", topic, rid, kind.lower())
    body = dict(obj)
    body.pop("tipomsg")
    try:
        return model.model_validate(body)
    except _ValidationError as exc:
        return Invalid(f"invalid {model.__name__.lower()}: {_describe(exc)}", topic, rid)


def decode_beat(payload: bytes | bytearray) -> Heartbeat | MonitorBeat | Recuperacao | Invalid:
    """Decode one payload of the monitor topic; never raises."""
    obj = _json_object(payload)
    if isinstance(obj, Invalid):
        return obj
    try:
        if obj.get("papel") == "monitor":
            return MonitorBeat.model_validate(obj)
        if obj.get("papel") == "operador":
            return Recuperacao.model_validate(obj)
        return Heartbeat.model_validate(obj)
    except _ValidationError as exc:
        return Invalid(f"invalid heartbeat: {_describe(exc)}")


def decode_estado(payload: bytes | bytearray) -> Estado | Invalid:
    try:
        return Estado.model_validate_json(payload)
    except _ValidationError as exc:
        return Invalid(f"invalid estado: {_describe(exc)}")


def decode_resposta(payload: bytes | bytearray) -> Resposta | Invalid:
    try:
        return Resposta.model_validate_json(payload)
    except _ValidationError as exc:
        return Invalid(f"invalid resposta: {_describe(exc)}")


def sync_topic(replica_id: int, nonce: str) -> str:
    return f"{SYNC_TOPIC_PREFIX}/{replica_id}/{nonce}"
