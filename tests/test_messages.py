"""Tolerant reading of other implementations' spellings, canonical writing, bad payloads."""

from __future__ import annotations

import json

import pytest

from kvwire.messages import (
    Consulta,
    FalhaServ,
    Heartbeat,
    Insercao,
    Invalid,
    MonitorBeat,
    NovoServ,
    Resposta,
    _decode_general,
    decode_beat,
    decode_request,
)


def _payload(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("kind", ["consulta", "consult", "query", "leitura", "C", "c", "CONSULTA"])
@pytest.mark.parametrize("topic_field", ["topico-resp", "topicoresp", "topico_resp"])
def test_every_spelling_of_a_read_is_understood(kind: str, topic_field: str) -> None:
    message = decode_request(_payload(tipomsg=kind, chave="k", idpedido=7, **{topic_field: "t"}))
    assert message == Consulta(chave="k", topico_resp="t", idpedido=7)


@pytest.mark.parametrize("kind", ["insercao", "inserção", "insere", "insert", "I", "i", "Insert"])
def test_every_spelling_of_an_insert_is_understood(kind: str) -> None:
    message = decode_request(
        _payload(tipomsg=kind, chave="k", novovalor="v", idpedido="x", **{"topico-resp": "t"})
    )
    assert message == Insercao(chave="k", novovalor="v", topico_resp="t", idpedido="x")


@pytest.mark.parametrize("id_field", ["idserv", "idServ"])
@pytest.mark.parametrize("seen_field", ["vistoem", "vistoEm"])
def test_failure_notices_in_either_spelling(id_field: str, seen_field: str) -> None:
    message = decode_request(_payload(tipomsg="falhaserv", **{id_field: 2, seen_field: 12}))
    assert message == FalhaServ(idserv=2, vistoem=12.0)


def test_canonical_forms_are_written() -> None:
    consulta = Consulta(chave="k", topico_resp="T", idpedido=7)
    assert json.loads(consulta.encode()) == {
        "tipomsg": "consulta",
        "chave": "k",
        "topico-resp": "T",
        "idpedido": 7,
    }
    novo = NovoServ(idserv=2, topico_resp="inf1406-sync/2/n", incarnacao="tok")
    assert json.loads(novo.encode()) == {
        "tipomsg": "novoserv",
        "idserv": 2,
        "topico-resp": "inf1406-sync/2/n",
        "incarnacao": "tok",
    }
    beat = Heartbeat(idserv=1, incarnacao="tok")
    assert json.loads(beat.encode())["idServ"] == 1


def test_a_not_found_answer_carries_a_null_value_and_revision_and_no_error_field() -> None:
    answer = Resposta(idpedido=1, chave="k", valor=None, status="naoencontrada", idserv=0)
    assert json.loads(answer.encode()) == {
        "tipomsg": "resposta",
        "idpedido": 1,
        "chave": "k",
        "valor": None,
        "revisao": None,
        "status": "naoencontrada",
        "idserv": 0,
    }


@pytest.mark.parametrize(
    ("payload", "reason", "topic", "rid"),
    [
        (b"{not json", "malformed JSON", None, None),
        (b"\x00\xff\xfe\x80", "malformed JSON", None, None),
        (b'"a string"', "expected a JSON object", None, None),
        (b'{"chave": "k"}', "tipomsg", None, None),
        (b'{"tipomsg": "apagar", "topico-resp": "t", "idpedido": 1}', "unknown tipomsg", "t", 1),
        (
            b'{"tipomsg": "consulta", "chave": 12, "topico-resp": "t", "idpedido": 1}',
            "chave",
            "t",
            1,
        ),
        (
            b'{"tipomsg": "insercao", "chave": "k", "novovalor": 3, "topicoresp": "t", '
            b'"idpedido": 2}',
            "novovalor",
            "t",
            2,
        ),
        (
            b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": true}',
            "idpedido",
            "t",
            None,
        ),
        (b'{"tipomsg": "consulta", "chave": "k", "idpedido": 5}', "topico", None, 5),
        (b'{"tipomsg": "falhaserv", "idserv": "two", "vistoem": 1}', "idserv", None, None),
    ],
)
def test_bad_payloads_say_why_and_keep_what_can_be_answered(
    payload: bytes, reason: str, topic: str | None, rid: int | None
) -> None:
    result = decode_request(payload)
    assert isinstance(result, Invalid)
    assert reason in result.reason
    assert (result.topico_resp, result.idpedido) == (topic, rid)


def test_a_huge_payload_is_refused_unread() -> None:
    result = decode_request(b"{" + b" " * (5 * 1024 * 1024) + b"}")
    assert isinstance(result, Invalid)
    assert "limit" in result.reason


def test_monitor_topic_messages() -> None:
    assert isinstance(decode_beat(b'{"idServ": 1}'), Heartbeat)
    assert isinstance(
        decode_beat(b'{"papel": "monitor", "idmonitor": "m", "enviadoem": 1}'), MonitorBeat
    )
    assert isinstance(decode_beat(b'{"idServ": "one"}'), Invalid)
    assert isinstance(decode_beat(b"]["), Invalid)
    beat = decode_beat(b'{"idServ": 1, "extra": {"anything": [1, 2]}}')
    assert isinstance(beat, Heartbeat)
    assert beat.modo == "live"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": 1}',
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": "x"}',
        b'{"tipomsg": "insercao", "chave": "k", "novovalor": "v", "topico-resp": "t", "idpedido": 2'
        b"}",
        b'{"tipomsg": "consulta", "chave": "k", "topicoresp": "t", "idpedido": 1, "x": [1]}',
        b'{"tipomsg": "consulta", "chave": "k", "chave": "j", "topico-resp": "t", "idpedido": 1}',
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": 1'
        b"0000000000000000000000}",
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": true}',
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": 1.0}',
        b'{"tipomsg": "consulta", "chave": "\\ud800", "topico-resp": "t", "idpedido": 1}',
        b'{"tipomsg": "insercao", "chave": "k", "novovalor": 1, "topico-resp": "t", "idpedido": 2}',
        b'{"tipomsg": "falhaserv", "idServ": 1, "vistoEm": 3}',
        b'{"tipomsg": "falhaserv", "idserv": 1, "vistoem": 1e400, "incarnacao": null}',
        b'{"tipomsg": "novoserv", "idserv": 0, "topico-resp": "s", "posicao": 7}',
        b'{"tipomsg": "Consulta", "chave": "k", "topico-resp": "t", "idpedido": 1}',
        b'\xef\xbb\xbf{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": 1}',
        b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "t", "idpedido": 1',
    ],
)
def test_the_fast_path_decodes_exactly_as_the_general_path(payload: bytes) -> None:
    """Every replica must decide alike whichever path a message took."""
    fast = decode_request(payload)
    general = _decode_general(payload)
    assert fast == general
    if not isinstance(fast, Invalid) and not isinstance(general, Invalid):
        assert fast.encode() == general.encode()


def test_a_lone_surrogate_is_refused_before_it_reaches_the_hash_or_the_reply() -> None:
    # json.loads accepts it, and str.encode() then raises in key_slot and in paho.
    payload = b'{"tipomsg": "consulta", "chave": "\\udc80", "topico-resp": "t", "idpedido": 1}'
    result = decode_request(payload)
    assert isinstance(result, Invalid)
    assert "malformed JSON" in result.reason
