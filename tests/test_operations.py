"""Delete, revisions, compare-and-set and listing in the state machine (protocol §12, §13),
driven over the in-memory bus: every replica decides alike, the owner answers."""

from __future__ import annotations

import json

from kvwire.topics import mirror_topic
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


def owned_keys(bus: Bus, owner: int, count: int) -> list[str]:
    return [k for k in (f"m{i}" for i in range(200)) if bus.replica(owner).view.owns(k)][:count]


def retained_value(bus: Bus, key: str) -> tuple[str, int] | None:
    payload = bus.retained.get(mirror_topic("kv", key))
    if payload is None:
        return None
    body = json.loads(payload)
    assert body["chave"] == key
    return body["valor"], body["revisao"]


def test_the_owner_mirrors_each_write_and_a_delete_clears_it() -> None:
    bus = Bus.fresh(3, mirror="kv")
    key = owned_keys(bus, 1, 1)[0]
    rev = bus.answer(bus.put(key, "v1")).revisao
    assert rev is not None and retained_value(bus, key) == ("v1", rev)
    assert {r for r, _, _ in bus.mirrored} == {1}  # the owner alone publishes
    bus.put(key, "v1b", if_revision=rev + 1000)  # a conflict changes nothing: no publish
    assert len(bus.mirrored) == 1
    bus.delete(key)
    assert retained_value(bus, key) is None and bus.mirrored[-1][2] == b""
    bus.put("a+b#c%", "odd")  # wildcard characters are percent-encoded in the topic
    assert "kv/a%2Bb%23c%25" in bus.retained


def test_a_successor_mirrors_again_what_a_dead_owner_may_not_have() -> None:
    bus = Bus.fresh(3, mirror="kv")
    keys = owned_keys(bus, 0, 3)
    for key in keys:
        bus.put(key, "old")
    bus.pause(0)  # these writes are applied by the others; their owner never mirrors them
    for key in keys:
        bus.put(key, "new")
    assert all(retained_value(bus, k) == ("old", retained_value(bus, k)[1]) for k in keys)  # type: ignore[index]
    bus.fail(0)
    assert [retained_value(bus, k)[0] for k in keys] == ["new"] * 3  # type: ignore[index]
    assert {r for r, t, _ in bus.mirrored[-3:]} == {1}


def test_a_slow_owners_late_publish_is_corrected_when_it_rejoins() -> None:
    bus = Bus.fresh(3, mirror="kv")
    key = owned_keys(bus, 0, 1)[0]
    bus.pause(0)
    bus.put(key, "v1")  # replica 0 will apply (and mirror) this late, after...
    bus.fail(0)  # ...it was declared failed,
    bus.put(key, "v2")  # and its successor mirrored this.
    assert retained_value(bus, key)[0] == "v2"  # type: ignore[index]
    before = len(bus.mirrored)
    # The slow one wakes: it publishes v1 as the owner it still thinks it is, reads its
    # falhaserv, is fenced, re-joins, takes its keys back and mirrors their values again.
    bus.resume(0)
    late = [json.loads(p)["valor"] for r, _, p in bus.mirrored[before:] if r == 0 and p]
    assert late[0] == "v1" and late[-1] == "v2"
    assert bus.replica(0).state == "live" and bus.replica(0).view.owns(key)
    assert retained_value(bus, key)[0] == "v2"  # type: ignore[index]
