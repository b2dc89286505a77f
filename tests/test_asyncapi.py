"""docs/asyncapi.yaml: valid AsyncAPI 3.0, generated from the models, and true to the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kvwire.asyncapi import document
from kvwire.messages import (
    Consulta,
    Estado,
    FalhaServ,
    Heartbeat,
    Insercao,
    LoggedRequest,
    NovoServ,
    Resposta,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json").read_text())


def written() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    return loaded


def test_the_document_is_valid_asyncapi_3() -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(written())


def test_the_document_matches_the_models() -> None:
    assert written() == document(), "run: .venv/bin/python scripts/gen_asyncapi.py"


def test_the_validator_rejects_a_broken_document() -> None:
    broken = written()
    broken["channels"]["requests"]["address"] = 42
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(broken)


@pytest.mark.parametrize(
    "message",
    [
        Consulta(chave="k", topico_resp="t", idpedido=1),
        Insercao(chave="k", novovalor="v", topico_resp="t", idpedido="x"),
        FalhaServ(idserv=1, vistoem=1.5, incarnacao="i"),
        NovoServ(idserv=1, topico_resp="inf1406-sync/1/n", incarnacao="i", posicao=3),
        Resposta(idpedido=1, chave="k", valor=None, status="naoencontrada", idserv=0),
        Heartbeat(idserv=0, incarnacao="i", posicao=3, resumo="00"),
        Estado(
            idserv=0,
            corte=3,
            parte=0,
            partes=1,
            vivos=[0, 1],
            resumo="00",
            chaves=1,
            pares={"k": "v"},
            vistos=[("t", 1)],
            registro=[LoggedRequest(1.0, "c", "k", "t", 1, None)],
        ),
    ],
)
def test_what_the_programs_send_matches_the_documented_payloads(message: Any) -> None:
    # The message's schema as the document holds it, its references resolved within it.
    schemas = document()["components"]["schemas"]
    schema = {
        "$ref": f"#/components/schemas/{type(message).__name__}",
        "components": {"schemas": schemas},
    }
    jsonschema.Draft202012Validator(schema).validate(json.loads(message.encode()))


def test_a_log_entry_of_an_unknown_kind_breaks_the_documented_schema() -> None:
    schemas = document()["components"]["schemas"]
    schema = {"$ref": "#/components/schemas/LoggedRequest", "components": {"schemas": schemas}}
    jsonschema.Draft202012Validator(schema).validate([1.0, "i", "k", "t", 1, "v"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate([1.0, "x", "k", "t", 1, "v"])
