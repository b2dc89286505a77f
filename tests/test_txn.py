"""Transactions (protocol §20) on replica cores over the in-memory bus: all or nothing at one
position on every replica, the else branch's reads, a retry and a substitute's replay answered
with the outcome the transaction had, one step for the mirror and the feed, and bad input."""

from __future__ import annotations

import json

import pytest

from kvwire.ring import key_slot
from tests.bus import CLIENT_TOPIC, Bus

N = 3


def put(key: str, value: str, **more: object) -> dict[str, object]:
    return {"tipomsg": "insercao", "chave": key, "novovalor": value, **more}


def get(key: str) -> dict[str, object]:
    return {"tipomsg": "consulta", "chave": key}


def values(bus: Bus, key: str) -> set[tuple[str, int] | None]:
    return {bus.replica(i).store.entry(key) for i in bus.members}


def test_a_transaction_whose_compares_hold_writes_every_key_at_one_revision_everywhere() -> None:
    bus = Bus.fresh(N, mirror="kv")
    rev_a = bus.answer(bus.put("a", "10")).revisao
    rid = bus.txn(
        [{"chave": "a", "revisao": rev_a}, {"chave": "c", "ausente": True}],
        [put("a", "5"), put("b", "5"), {"tipomsg": "remocao", "chave": "gone"}, get("a")],
        [get("a")],
    )
    answer = bus.answer(rid)
    position = bus.replica(0).position
    assert (answer.status, answer.sucesso, answer.revisao) == ("ok", True, position)
    results = [r.model_dump(exclude_none=True) for r in answer.resultados or []]
    assert results == [
        {"chave": "a", "revisao": position},
        {"chave": "b", "revisao": position},
        {"chave": "gone", "status": "naoencontrada"},
        {"chave": "a", "valor": "5", "revisao": position},  # a get sees the put before it
    ]
    assert values(bus, "a") == {("5", position)} and values(bus, "b") == {("5", position)}
    assert len(bus.digests()) == 1
    assert [a.idserv for a in bus.answers_to(rid)] == [key_slot(CLIENT_TOPIC, N)]
    assert json.loads(bus.retained["kv/b"])["revisao"] == position  # the mirror: one step


def test_a_transaction_whose_compares_fail_writes_nothing_and_runs_the_else_reads() -> None:
    bus = Bus.fresh(N)
    bus.put("a", "10")
    before = bus.digests()
    rid = bus.txn([{"chave": "a", "valor": "11"}], [put("a", "0"), put("b", "0")], [get("a")])
    answer = bus.answer(rid)
    assert (answer.status, answer.sucesso) == ("ok", False)
    assert [(r.chave, r.valor) for r in answer.resultados or []] == [("a", "10")]
    assert values(bus, "b") == {None}
    assert {d for _, d in bus.digests()} == {d for _, d in before}


@pytest.mark.parametrize(
    ("comparacao", "wanted", "held"), [("<", 100, True), (">", 100, False), ("=", 0, False)]
)
def test_a_revision_compares_by_its_sign(comparacao: str, wanted: int, held: bool) -> None:
    bus = Bus.fresh(N)
    bus.put("a", "1")
    rid = bus.txn([{"chave": "a", "revisao": wanted, "comparacao": comparacao}], [get("a")])
    assert bus.answer(rid).sucesso is held


def test_a_failed_serevisao_inside_the_branch_applies_nothing() -> None:
    bus = Bus.fresh(N)
    bus.put("a", "1")
    rid = bus.txn([], [put("b", "2"), put("a", "2", serevisao=999)])
    answer = bus.answer(rid)
    assert answer.status == "conflito" and "revision" in (answer.erro or "")
    assert values(bus, "b") == {None}


def test_a_retry_and_a_substitutes_replay_answer_the_outcome_it_had() -> None:
    topic_owner = key_slot(CLIENT_TOPIC, N)
    bus = Bus.fresh(N)
    bus.put("a", "1")
    rid = bus.txn([{"chave": "a", "valor": "1"}], [put("a", "2")])
    first = bus.answer(rid)
    bus.put("a", "3")  # the compare would fail now: a retry must not judge it again
    bus.txn([{"chave": "a", "valor": "1"}], [put("a", "2")], rid=rid)
    again = bus.answers_to(rid)[-1]
    assert (again.sucesso, again.revisao) == (first.sucesso, first.revisao) == (True, 2)
    assert values(bus, "a") == {("3", 3)}
    bus.stop(topic_owner)  # kill -9 of the owner; its successor replays what it logged
    bus.fail(topic_owner, vistoem=bus.now - 1)
    replayed = bus.answers_to(rid)[-1]
    assert replayed.idserv != topic_owner
    assert (replayed.sucesso, replayed.revisao, replayed.resultados) == (
        first.sucesso, first.revisao, first.resultados,
    )  # fmt: skip


def test_a_transaction_is_one_event_of_the_feed() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    watch = bus.watch("w", "acct/")
    bus.txn([], [put("acct/1", "90"), put("acct/2", "110"), put("other", "x")])
    events = [e for e in bus.events_of(watch) if e.tipo != "progresso"]
    assert len(events) == 1 and events[0].mudancas is not None
    assert [(m.chave, m.revisao) for m in events[0].mudancas] == [
        ("acct/1", events[0].revisao),
        ("acct/2", events[0].revisao),
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('"se":[],"entao":[],"senao":[]', "no operations"),
        ('"se":[{"chave":"a","revisao":1,"valor":"x"}],"entao":[{"tipomsg":"consulta","chave":"a"}]',
         "one of revisao, valor and ausente"),
        ('"se":[{"chave":"a","valor":"x","comparacao":"<"}],"entao":[{"tipomsg":"consulta","chave":"a"}]',
         "only a revision"),
        ('"se":[{"chave":"a","idade":1}],"entao":[{"tipomsg":"consulta","chave":"a"}]',
         "one of revisao"),
        ('"se":[{"chave":"a","revisao":1,"comparacao":"!="}],"entao":[]', "comparacao"),
        ('"entao":[{"tipomsg":"expulsao","chave":"a"}]', "expulsao"),
        ('"entao":[{"tipomsg":"insercao","chave":"a","novovalor":"1"},'
         '{"tipomsg":"insercao","chave":"a","novovalor":"2"}]', "twice"),
        ('"entao":[{"tipomsg":"insercao","chave":"a","novovalor":7}]', "valid string"),
        ('"entao":{"tipomsg":"consulta","chave":"a"}', "valid list"),
        ('"entao":[' + ",".join(['{"tipomsg":"consulta","chave":"a"}'] * 129) + "]", "128"),
        ('"entao":[{"tipomsg":"insercao","chave":"","novovalor":"1"}]', "empty key"),
        ('"entao":[{"tipomsg":"insercao","chave":"a","novovalor":"1","concessao":"none"}]',
         "unknown or has ended"),
    ],
)  # fmt: skip
def test_bad_transactions_are_refused_with_a_reason_and_nothing_applied(
    body: str, says: str
) -> None:
    bus = Bus.fresh(N)
    before = bus.digests()
    bus.publish_raw(
        b'{"tipomsg":"transacao",' + body.encode() + b',"topico-resp":"client/1","idpedido":99}'
    )
    bus.run()
    answer = bus.answer(99)
    assert answer.status == "erro" and says in (answer.erro or ""), answer
    assert {d for _, d in bus.digests()} == {d for _, d in before}
    assert bus.answer(bus.put("k", "v")).status == "ok"  # and the next request is handled


def test_a_substitute_publishes_again_the_mirror_of_keys_a_transaction_wrote() -> None:
    owner = key_slot("acct/9", N)
    bus = Bus.fresh(N, mirror="kv")
    bus.txn([], [put("acct/9", "1"), put("acct/8", "2")])
    bus.stop(owner)  # its mirror publish may have been lost with it
    del bus.retained["kv/acct/9"]
    bus.fail(owner)
    assert json.loads(bus.retained["kv/acct/9"])["valor"] == "1"
