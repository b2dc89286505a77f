"""Delete, revisions, compare-and-set and listing in the state machine (PROTOCOL §12, §13),
driven over the in-memory bus: every replica decides alike, the owner answers."""

from __future__ import annotations

from tests.bus import Bus


def test_every_answer_carries_the_revision_the_write_got() -> None:
    bus = Bus.fresh(3)
    first = bus.answer(bus.put("k", "v1"))
    second = bus.answer(bus.put("k", "v2"))
    read = bus.answer(bus.get("k"))
    assert first.status == second.status == "ok"
    assert first.revisao is not None and second.revisao is not None
    assert second.revisao > first.revisao
    assert (read.valor, read.revisao) == ("v2", second.revisao)
    assert bus.answer(bus.get("absent")).revisao is None
    assert len(bus.digests(0, 1, 2)) == 1


def test_delete_then_read_then_delete_again() -> None:
    bus = Bus.fresh(3)
    bus.put("k", "v")
    deleted = bus.answer(bus.delete("k"))
    assert (deleted.status, deleted.valor) == ("ok", None) and deleted.revisao is not None
    assert bus.answer(bus.get("k")).status == "naoencontrada"
    assert bus.answer(bus.delete("k")).status == "naoencontrada"
    assert all(bus.replica(i).store.get("k") is None for i in range(3))
    assert len(bus.digests(0, 1, 2)) == 1


def test_compare_and_set_applies_only_at_the_revision_asked() -> None:
    bus = Bus.fresh(3)
    created = bus.answer(bus.put("k", "v1", if_revision=0))  # only if absent
    assert created.status == "ok" and created.revisao is not None
    again = bus.answer(bus.put("k", "other", if_revision=0))
    assert (again.status, again.valor, again.revisao) == ("conflito", "v1", created.revisao)
    stale = bus.answer(bus.put("k", "v2", if_revision=created.revisao - 1))
    assert (stale.status, stale.valor) == ("conflito", "v1")
    assert all(bus.replica(i).store.get("k") == "v1" for i in range(3))
    won = bus.answer(bus.put("k", "v2", if_revision=created.revisao))
    assert won.status == "ok" and won.revisao is not None and won.revisao > created.revisao
    lost_delete = bus.answer(bus.delete("k", if_revision=created.revisao))
    assert (lost_delete.status, lost_delete.valor) == ("conflito", "v2")
    assert bus.answer(bus.delete("k", if_revision=won.revisao)).status == "ok"
    assert len(bus.digests(0, 1, 2)) == 1


def test_a_retried_compare_and_set_gets_its_first_answer_not_a_new_judgement() -> None:
    bus = Bus.fresh(3)
    rev = bus.answer(bus.put("k", "v1")).revisao
    lost = bus.put("k", "late", if_revision=999)
    bus.put("k", "v2")
    bus.put("k", "late", rid=lost, if_revision=999)  # the client retries the same request
    answers = bus.answers_to(lost)
    assert [a.status for a in answers] == ["conflito", "conflito"]
    assert answers[1].valor == "v1" and answers[1].revisao == rev
    assert bus.replica(0).store.get("k") == "v2"


def test_a_substitute_replays_a_write_with_the_outcome_it_had() -> None:
    bus = Bus.fresh(3)
    owner = next(i for i in range(3) if bus.replica(i).view.owns("k"))
    bus.put("k", "v1")
    bus.pause(owner)  # the write reaches the stream, its owner never answers
    rid = bus.put("k", "v2", if_revision=1_000_000)
    bus.fail(owner)
    replayed = bus.answer(rid)
    assert replayed.status == "conflito" and replayed.idserv != owner
    assert replayed.valor == "v1"


def test_listing_pages_in_order_answered_once() -> None:
    bus = Bus.fresh(3)
    for i in range(30):
        bus.put(f"p/{i:02d}", "v")
    bus.put("q", "v")
    rid = bus.list_keys("p/", limit=12)
    [page] = bus.answers_to(rid)
    assert page.chaves == [f"p/{i:02d}" for i in range(12)] and page.mais is True
    assert page.posicao == bus.replica(0).position
    last = bus.answer(bus.list_keys("p/", after="p/23", limit=12))
    assert last.chaves == [f"p/{i:02d}" for i in range(24, 30)] and last.mais is False
    assert bus.answer(bus.list_keys("zz")).chaves == []


def test_bad_listing_and_revision_values_get_an_error_and_change_nothing() -> None:
    bus = Bus.fresh(3)
    bus.put("k", "v")
    for payload in (
        b'{"tipomsg":"listagem","limite":1000000000,"topico-resp":"client/1","idpedido":"a"}',
        b'{"tipomsg":"listagem","limite":-1,"topico-resp":"client/1","idpedido":"b"}',
        b'{"tipomsg":"insercao","chave":"k","novovalor":"x","serevisao":"3",'
        b'"topico-resp":"client/1","idpedido":"c"}',
    ):
        bus.publish_raw(payload)
        bus.run()
    for rid in ("a", "b", "c"):
        answer = bus.answer(rid)
        assert answer.status == "erro" and answer.erro
    assert bus.replica(0).store.get("k") == "v"
    assert bus.answer(bus.get("k")).valor == "v"
