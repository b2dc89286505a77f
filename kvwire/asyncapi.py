"""The machine-readable protocol: an AsyncAPI 3.0 document built from the wire models.

`docs/asyncapi.yaml` is this document written out (`scripts/gen_asyncapi.py`); a test fails
when the two disagree, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kvwire.batch import Lote, Respostas
from kvwire.feed import Evento, FimVigia, Historico, Vigia
from kvwire.leasing import Concessao, Expiracao, ListaConcessoes, Renovacao, Revogacao
from kvwire.messages import (
    MONITOR_TOPIC,
    REQUESTS_TOPIC,
    SYNC_TOPIC_PREFIX,
    Consulta,
    Espelho,
    Estado,
    FalhaServ,
    Heartbeat,
    Insercao,
    Listagem,
    MonitorBeat,
    NovoServ,
    Recuperacao,
    Remocao,
    Resposta,
)
from kvwire.snapshot import Instantaneo
from kvwire.txn import Transacao

VERSION = "0.1.0"

_MESSAGES: dict[str, tuple[type[BaseModel], str]] = {
    "consulta": (Consulta, "A read of one key, answered by the key's owner."),
    "insercao": (
        Insercao,
        "A write, applied by every replica; acknowledged by the owner. With serevisao, a "
        "compare-and-set (protocol §13).",
    ),
    "remocao": (Remocao, "A delete: a write, applied by every replica, answered by the owner."),
    "listagem": (Listagem, "Keys with a prefix, in order, a page at a time; one replica answers."),
    "falhaserv": (FalhaServ, "The monitor declares a replica failed (last heartbeat seen)."),
    "novoserv": (NovoServ, "A replica joins; the stream position of this message is the cut."),
    "concessao": (
        Concessao,
        "Grant a lease (protocol §18), named by the client, with a TTL in seconds; again: a new "
        "TTL from here. A write, answered by the owner of the lease's name.",
    ),
    "renovacao": (Renovacao, "Keep a lease alive: its TTL counts again from here."),
    "revogacao": (
        Revogacao,
        "End a lease: its keys are deleted here. A session-bound lease's MQTT will.",
    ),
    "concessoes": (
        ListaConcessoes,
        "The leases in name order, a page at a time; one replica answers (protocol §18).",
    ),
    "expiracao": (
        Expiracao,
        "The lease's keeper says its TTL passed since renovadaem; it ends the lease only if "
        "no grant or keep-alive was applied since. Signed in a secured cluster.",
    ),
    "vigia": (
        Vigia,
        "Register a watch of a key prefix from revision desde, for as long as its lease lives "
        "(protocol §19); the owner of topico-resp answers, then sends the history since desde "
        "and every later matching change as an evento.",
    ),
    "fimvigia": (FimVigia, "Cancel the watch topico-resp registered with idpedido vigia."),
    "historico": (
        Historico,
        "A key's changes the history keeps, the newest limite of them; the key's owner answers.",
    ),
    "evento": (
        Evento,
        "One event of a watch, on its topico-resp: the change at revisao (several at one "
        "revision: mudancas), anterior the revision of the watch's previous change; tipo "
        "progresso: nothing matched through revisao; fim: the watch ended.",
    ),
    "transacao": (
        Transacao,
        "A transaction (protocol §20): if every compare of se holds, the operations of entao, "
        "else those of senao, applied whole by every replica at its one position; a write for "
        "de-duplication; answered by the owner of topico-resp with sucesso and resultados.",
    ),
    "instantaneo": (
        Instantaneo,
        "Ask for a snapshot as of this request's position (issue 29): the owner of topico-resp "
        "sends the keys, values, revisions and leases there in estado chunks, while writes go "
        "on (kvclient snapshot save).",
    ),
    "lote": (
        Lote,
        "A batch (protocol §21): requests applied by every replica as if sent one after another "
        "here, each at a position of its own (a write's revision is its position); never a "
        "falhaserv, novoserv, expiracao or lote; at most 1024 requests.",
    ),
    "resposta": (Resposta, "The answer to a consulta or insercao, or an error."),
    "respostas": (
        Respostas,
        "One owner's answers to the requests of one batch that name this topico-resp, in "
        "stream order (a topic with one answer gets a plain resposta).",
    ),
    "estado": (Estado, "One chunk of the state sent to a joining replica at the cut."),
    "heartbeat": (Heartbeat, "A replica's heartbeat, or its MQTT last will (modo: gone)."),
    "monitorBeat": (MonitorBeat, "A monitor announces itself."),
    "espelho": (
        Espelho,
        "A key's current value, retained on the value mirror; an empty payload: deleted.",
    ),
    "recuperacao": (
        Recuperacao,
        "An operator resumes a stopped cluster without the replicas listed (protocol §17).",
    ),
}


def message_models() -> list[type[BaseModel]]:
    """Every message the document describes (`tests/test_docs.py` holds the prose to them too)."""
    return [model for model, _ in _MESSAGES.values()]


def _schemas() -> dict[str, Any]:
    """Every message's schema, and the schemas they share (a log entry), side by side in
    `components/schemas`, where the references point."""
    schemas: dict[str, Any] = {}
    for model, _ in _MESSAGES.values():
        schema = model.model_json_schema(
            by_alias=True, mode="serialization", ref_template="#/components/schemas/{model}"
        )
        schema.pop("title", None)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    cleaned: dict[str, Any] = _without_mappings(schemas)
    return cleaned


def _without_mappings(schema: Any) -> Any:
    """AsyncAPI's `discriminator` is a property's name, not OpenAPI's object with a mapping
    (pydantic's, for a transaction's operations): the `oneOf` says as much without it."""
    if isinstance(schema, dict):
        return {
            k: _without_mappings(v)
            for k, v in schema.items()
            if not (k == "discriminator" and isinstance(v, dict))
        }
    if isinstance(schema, list):
        return [_without_mappings(v) for v in schema]
    return schema


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/{kind}/{name}"}


def _qos1(retain: bool = False) -> dict[str, Any]:
    return {"mqtt": {"qos": 1, "retain": retain, "bindingVersion": "0.2.0"}}


def _operation(
    action: str, channel: str, messages: list[str], summary: str, retain: bool = False
) -> dict[str, Any]:
    return {
        "action": action,
        "channel": _ref("channels", channel),
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in messages],
        "bindings": _qos1(retain),
    }


def document() -> dict[str, Any]:
    requests = ["consulta", "insercao", "remocao", "listagem", "falhaserv", "novoserv"]
    requests += ["concessao", "renovacao", "revogacao", "expiracao", "concessoes"]
    requests += ["vigia", "fimvigia", "historico", "transacao", "lote"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "mqtt-kv",
            "version": VERSION,
            "description": (
                "A replicated key-value store over one MQTT broker. Every replica applies the "
                "request topic in broker order; the owner of a key answers it. "
                "See docs/protocol.md. "
                "An MQTT 5 request without topico-resp is answered on its Response Topic with "
                "its Correlation Data (protocol §15). "
                "In a secured cluster (protocol §16) every falhaserv, novoserv, expiracao, estado, "
                "heartbeat, monitorBeat and recuperacao carries the MQTT 5 user property "
                "`assinatura`: the hex HMAC-SHA256 of the payload under the cluster key."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "Mosquitto configured by the project's mosquitto.conf.",
            }
        },
        "channels": {
            "requests": {
                "address": REQUESTS_TOPIC,
                "description": "The ordered request stream every replica applies.",
                "messages": {m: _ref("components/messages", m) for m in requests},
            },
            "monitor": {
                "address": MONITOR_TOPIC,
                "description": (
                    "Heartbeats and last wills of replicas; monitors announce here; an "
                    "operator's recovery order."
                ),
                "messages": {
                    m: _ref("components/messages", m)
                    for m in ("heartbeat", "monitorBeat", "recuperacao")
                },
            },
            "responses": {
                "address": "{topicoResp}",
                "description": "The topico-resp a client named in its request.",
                "parameters": {"topicoResp": {"description": "The request's topico-resp."}},
                "messages": {
                    m: _ref("components/messages", m) for m in ("resposta", "respostas", "evento")
                },
            },
            "mirror": {
                "address": "{mirror}/{key}",
                "description": (
                    "The value mirror (protocol §14), when replicas run with --mirror: each "
                    "key's value retained, published by its owner; `%`, `+`, `#` and NUL in "
                    "keys percent-encoded."
                ),
                "parameters": {
                    "mirror": {"description": "The replicas' --mirror prefix (inf1406-kv)."},
                    "key": {"description": "The key; its `/` make topic levels."},
                },
                "messages": {"espelho": _ref("components/messages", "espelho")},
            },
            "sync": {
                "address": SYNC_TOPIC_PREFIX + "/{idserv}/{nonce}",
                "description": "State transfer to one join attempt of one replica.",
                "parameters": {
                    "idserv": {"description": "The joining replica's id."},
                    "nonce": {"description": "Fresh for each join attempt."},
                },
                "messages": {"estado": _ref("components/messages", "estado")},
            },
        },
        "operations": {
            "sendRequest": _operation(
                "send", "requests", requests, "Clients, the monitor and joining replicas publish."
            ),
            "applyRequest": _operation(
                "receive", "requests", requests, "Every replica applies, in broker order."
            ),
            "sendResponse": _operation(
                "send", "responses", ["resposta", "respostas"], "The owner of the key answers."
            ),
            "sendEvent": _operation(
                "send", "responses", ["evento"], "The owner of a watch's topico-resp (§19)."
            ),
            "sendHeartbeat": _operation(
                "send", "monitor", ["heartbeat", "monitorBeat"], "Replicas and monitors beat."
            ),
            "watchHeartbeats": _operation(
                "receive", "monitor", ["heartbeat", "monitorBeat"], "Monitors and status watch."
            ),
            "orderRecovery": _operation(
                "send",
                "monitor",
                ["recuperacao"],
                "kvclient recover: replicas waiting after a whole-cluster stop stop waiting.",
            ),
            "mirrorValue": _operation(
                "send", "mirror", ["espelho"], "The key's owner, retained, after each write.", True
            ),
            "watchValues": _operation(
                "receive", "mirror", ["espelho"], "Any MQTT client: kvclient watch, mosquitto_sub."
            ),
            "sendState": _operation(
                "send", "sync", ["estado"], "The joiner's successor sends the state at the cut."
            ),
        },
        "components": {
            "messages": {
                name: {
                    "name": name,
                    "summary": summary,
                    "payload": _ref("components/schemas", model.__name__),
                }
                for name, (model, summary) in _MESSAGES.items()
            },
            "schemas": _schemas(),
        },
    }
