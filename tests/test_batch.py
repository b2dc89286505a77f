"""Batches (protocol §21) on in-memory replicas: a `lote`'s requests behave exactly as the
same requests sent one after another, and are answered in one message per owner and topic."""

from __future__ import annotations

import json

import pytest

from kvwire.batch import MAX_BATCH_REQUESTS, Batch, decode_answers, decode_stream, encode_batch
from kvwire.messages import Consulta, Insercao, Invalid, Remocao, Request
from tests.bus import CLIENT_TOPIC, Bus

pytestmark = pytest.mark.timeout(60)


def put(rid: int, key: str, value: str, if_revision: int | None = None) -> Insercao:
    return Insercao(
        chave=key, novovalor=value, topico_resp=CLIENT_TOPIC, idpedido=rid, serevisao=if_revision
    )


def get(rid: int, key: str) -> Consulta:
    return Consulta(chave=key, topico_resp=CLIENT_TOPIC, idpedido=rid)


def delete(rid: int, key: str) -> Remocao:
    return Remocao(chave=key, topico_resp=CLIENT_TOPIC, idpedido=rid)


def mixed() -> list[Request]:
    """Writes, reads and compare-and-sets of keys owned by every replica, some of the same
    key, so that what one request sees depends on those before it."""
    requests: list[Request] = []
    for i in range(30):
        key = f"k{i % 7}"
        if i % 5 == 0:
            requests.append(get(100 + i, key))
        elif i % 5 == 1:
            requests.append(delete(100 + i, key))
        elif i % 5 == 2:
            requests.append(put(100 + i, key, f"cas{i}", if_revision=0))
        else:
            requests.append(put(100 + i, key, f"v{i}"))
    return requests


def answers_by_id(bus: Bus) -> dict[int | str | None, tuple[object, ...]]:
    return {a.idpedido: (a.status, a.valor, a.revisao, a.chave) for _, a in bus.answers}


def test_a_batch_is_applied_as_its_requests_one_after_another() -> None:
    alone, batched = Bus.fresh(3), Bus.fresh(3)
    for request in mixed():
        alone.publish(request)
    alone.run()
    batched.batch(*mixed())
    batched.run()
    # The same store, revisions and positions on every replica, and the same answers.
    assert alone.digests() == batched.digests()
    assert len(batched.digests()) == 1
    assert batched.replica(0).position == len(mixed())
    assert answers_by_id(batched) == answers_by_id(alone)
    assert len(batched.answers) == len(mixed())  # each request answered once
    # Each write has a revision of its own: its position in the stream.
    revisions = [a.revisao for _, a in batched.answers if a.idpedido % 5 == 3]  # type: ignore[operator]
    assert len(set(revisions)) == len(revisions)


def test_each_owner_answers_a_batch_in_one_message_per_topic() -> None:
    bus = Bus.fresh(3)
    other = "client/2"
    requests = [*mixed(), Consulta(chave="k1", topico_resp=other, idpedido=1)]
    requests.append(Consulta(chave="k2", topico_resp=other, idpedido=2))
    bus.batch(*requests)
    bus.run()
    messages = bus.answer_messages
    # One message per (owner, topic) pair that had answers, never one per request.
    assert len(messages) == len({(replica, topic) for replica, topic, _ in messages})
    assert sum(count for _, _, count in messages) == len(requests)
    assert any(count > 1 for _, _, count in messages)
    # A request alone is still answered alone, with a plain `resposta`.
    bus.get("k1")
    assert bus.answer_messages[-1][2] == 1


def test_a_bad_request_in_a_batch_gets_its_own_error_and_the_others_are_applied() -> None:
    bus = Bus.fresh(3)
    good = [put(1, "a", "1"), put(3, "b", "3")]
    bad = {"tipomsg": "insercao", "chave": 5, "novovalor": "x", "topico-resp": CLIENT_TOPIC,
           "idpedido": 2}  # fmt: skip
    bus.publish_raw(encode_batch([good[0].encode(), json.dumps(bad).encode(), good[1].encode()]))
    bus.run()
    assert bus.answer(1).status == "ok"
    assert bus.answer(3).status == "ok"
    error = bus.answer(2)
    assert error.status == "erro" and "chave" in (error.erro or "")
    assert len(bus.digests()) == 1
    assert bus.replica(0).position == 3  # the bad one took its place in the stream too


@pytest.mark.parametrize("kind", ["falhaserv", "novoserv", "expiracao"])
def test_control_messages_are_never_batched(kind: str) -> None:
    bus = Bus.fresh(3)
    control = {"tipomsg": kind, "idserv": 1, "vistoem": 0.0, "concessao": "l", "renovadaem": 1,
               "topico-resp": CLIENT_TOPIC, "idpedido": 7}  # fmt: skip
    bus.publish_raw(encode_batch([json.dumps(control).encode(), put(1, "a", "1").encode()]))
    bus.run()
    assert all(r.state == "live" for r in (bus.replica(i) for i in range(3)))
    assert bus.replica(1).view.live == [True, True, True]  # no failure was declared
    refused = bus.answer(7)
    assert refused.status == "erro" and "never batched" in (refused.erro or "")
    assert bus.answer(1).status == "ok"
    assert len(bus.digests()) == 1


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"tipomsg":"lote","pedidos":[]}', "empty"),
        (b'{"tipomsg":"lote"}', "pedidos"),
        (b'{"tipomsg":"lote","pedidos":{"a":1}}', "pedidos"),
        (b'{"tipomsg":"lote","pedidos":[{"tipomsg":"lote","pedidos":[]}]}', "cannot hold a lote"),
        (b'{"tipomsg":"lote","pedidos":[1, "x"]}', "JSON object"),
        (b'{"pedidos":[],"tipomsg":"LOTE"}', "empty"),
    ],
)
def test_a_malformed_batch_is_refused_and_the_next_message_handled(
    payload: bytes, why: str
) -> None:
    decoded = decode_stream(payload)
    if isinstance(decoded, Invalid):
        reasons = [decoded.reason]
    else:
        assert isinstance(decoded, Batch)
        reasons = [r.reason for r in decoded.requests if isinstance(r, Invalid)]
    assert reasons and all(why in reason for reason in reasons), reasons
    bus = Bus.fresh(3)
    bus.publish_raw(payload)
    rid = bus.put("after", "1")
    assert bus.answer(rid).status == "ok"
    assert len(bus.digests()) == 1


def test_a_batch_over_the_limit_is_refused_whole_and_its_sender_told() -> None:
    requests = [put(i, f"k{i}", "v").encode() for i in range(MAX_BATCH_REQUESTS + 1)]
    bus = Bus.fresh(3)
    bus.publish_raw(encode_batch(requests))
    bus.run()
    refused = bus.answer(0)
    assert refused.status == "erro" and "over the limit" in (refused.erro or "")
    assert len(bus.answers) == 1
    assert len(bus.replica(0).store) == 0
    at_limit = decode_stream(encode_batch(requests[:MAX_BATCH_REQUESTS]))
    assert isinstance(at_limit, Batch) and len(at_limit.requests) == MAX_BATCH_REQUESTS


def test_a_batch_sent_again_is_applied_once_and_answered_as_before() -> None:
    bus = Bus.fresh(3)
    first = [put(1, "a", "1"), put(2, "a", "2"), put(3, "b", "x", if_revision=0)]
    bus.batch(*first)
    bus.run()
    before = answers_by_id(bus)
    bus.answers.clear()
    bus.publish(put(4, "b", "y"))  # b changes meanwhile: the retry of 3 must not
    bus.batch(*first)  # the client's retry, whole (a retry of one goes alone, as here)
    bus.publish(put(2, "a", "2"))
    bus.run()
    assert bus.replica(0).store.entry("a") == ("2", 2)
    assert bus.replica(0).store.entry("b") == ("y", 4)
    again = answers_by_id(bus)
    assert all(again[rid] == before[rid] for rid in (1, 2, 3))
    assert len(bus.digests()) == 1


def test_a_joiner_applies_a_batch_that_follows_its_cut_and_agrees() -> None:
    bus = Bus.fresh(3)
    for i in range(20):
        bus.put(f"pre{i}", "v")
    bus.stop(1)
    bus.fail(1)
    bus.run()
    bus.hold_transfers = True
    joiner = bus.start_joining(1)
    assert joiner.state == "joining"
    bus.batch(*mixed())  # after the cut: buffered by the joiner, applied once it has the state
    bus.run()
    bus.hold_transfers = False
    bus.run()
    assert bus.replica(1).state == "live"
    assert len(bus.digests()) == 1
    assert joiner.position == bus.replica(0).position


def test_a_substitute_answers_again_the_part_of_a_batch_its_dead_owner_left() -> None:
    bus = Bus.fresh(3)
    owned = [key for key in (f"key{i}" for i in range(40)) if bus.replica(0).view.owns(key)][:5]
    requests: list[Request] = [put(10 + i, key, f"v{i}") for i, key in enumerate(owned)]
    requests += [get(20 + i, key) for i, key in enumerate(owned)]
    bus.members[0].exited = True  # replica 0 dies before it reads the batch: nobody answers
    bus.batch(*requests)
    bus.run()
    assert not bus.answers
    bus.fail(0, vistoem=bus.now - 1)
    bus.run()
    for i in range(len(owned)):
        assert bus.answer(10 + i).status == "ok"
        assert bus.answer(20 + i).valor == f"v{i}"
    assert len(bus.digests(1, 2)) == 1


def test_answers_of_a_batch_wait_for_its_writes_to_be_durable() -> None:
    bus = Bus.fresh(3, durable=True)  # the bus checks every answer follows its write
    bus.batch(*mixed())
    bus.run()
    assert len(bus.answers) == len(mixed())
    assert {w.position for _, w in bus.written} >= {len(mixed())}


def test_answers_decode_alone_or_in_a_batch() -> None:
    bus = Bus.fresh(1)
    bus.batch(put(1, "a", "1"), get(2, "a"))
    bus.run()
    assert [a.idpedido for _, a in bus.answers] == [1, 2]
    assert isinstance(decode_answers(b'{"tipomsg":"respostas","respostas":[1]}'), Invalid)
    assert isinstance(decode_answers(b"nonsense"), Invalid)


def test_answers_in_another_writers_spacing_are_read() -> None:
    """A responder written with `json.dumps` (spaces after colons) is understood too: a
    client that missed them would wait for its retries (found by the batched ceiling)."""
    one = {"tipomsg": "resposta", "idpedido": 1, "status": "ok", "idserv": 0, "valor": "v"}
    batch = {"tipomsg": "respostas", "respostas": [one, {**one, "idpedido": 2}], "idserv": 0}
    decoded = decode_answers(json.dumps(batch).encode())
    assert not isinstance(decoded, Invalid) and [a.idpedido for a in decoded] == [1, 2]
    single = decode_answers(json.dumps(one).encode())
    assert not isinstance(single, Invalid) and single[0].valor == "v"
