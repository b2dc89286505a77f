"""Leases (protocol §18) on replica cores over the in-memory bus, with fake time: keys that end
with their lease at one position on every replica, expiry decided by the stream (the keeper's
`expiracao`, ignored when a keep-alive came first), failover of the keeper, a join, retries,
and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvserver.replica import Replica
from kvwire.leasing import Expiracao, ListaConcessoes
from kvwire.messages import Remocao
from kvwire.ring import key_slot
from tests.bus import CLIENT_TOPIC, Bus

N = 3


def named_for(slot: int, stem: str = "lease") -> str:
    """A lease name whose keeper (the owner of its slot) is replica `slot`."""
    return next(f"{stem}-{i}" for i in range(100) if key_slot(f"{stem}-{i}", N) == slot)


def values(bus: Bus, key: str) -> set[str | None]:
    """The key's value on every running replica."""
    return {bus.replica(i).store.get(key) for i in bus.members if bus.members[i].reading}


def agreed(bus: Bus) -> None:
    """Every replica at the same position holds the same store and the same leases."""
    assert len(bus.digests()) == 1
    first, *others = bus.leases()
    assert all(other == first for other in others)


def test_a_key_ends_with_its_lease_at_one_position_on_every_replica() -> None:
    bus = Bus.fresh(N, mirror="kv")
    lease = named_for(0)
    granted = bus.answer(bus.grant(lease, 2))
    assert (granted.status, granted.concessao, granted.ttl) == ("ok", lease, 2)
    assert bus.answer(bus.put("k", "v", lease=lease)).status == "ok"
    bus.put("kept", "forever")
    bus.advance(1.5)
    assert bus.answer(bus.get("k")).valor == "v"
    assert "kv/k" in bus.retained
    bus.advance(1.0)  # 2.5 s after the grant: its keeper has published the expiracao
    assert values(bus, "k") == {None}
    assert values(bus, "kept") == {"forever"}
    assert "kv/k" not in bus.retained  # the owner cleared the mirror's value
    agreed(bus)
    assert bus.leases() == [{}] * N
    expiries = [p for p in bus.stream if b'"expiracao"' in p]
    assert len(expiries) == 1, "one keeper, one expiracao"


def test_a_keep_alive_before_the_expiracao_is_applied_keeps_the_lease() -> None:
    bus = Bus.fresh(N)
    lease = named_for(1)
    bus.grant(lease, 2)
    bus.put("k", "v", lease=lease)
    granted_at = bus.replica(0).leases.agreed()[lease][1]
    # The keeper's expiracao and a client's keep-alive race; the keep-alive is first here.
    bus.keep_alive(lease)
    bus.publish(Expiracao(concessao=lease, renovadaem=granted_at, idserv=1))
    bus.run()
    assert values(bus, "k") == {"v"}
    for _ in range(10):  # kept alive every second for 10 s: nothing ends
        bus.advance(1.0)
        assert bus.answer(bus.keep_alive(lease)).status == "ok"
    assert values(bus, "k") == {"v"}
    bus.advance(2.5)  # no more keep-alives
    assert values(bus, "k") == {None}
    agreed(bus)


def test_the_keepers_successor_expires_the_lease_after_a_failover() -> None:
    bus = Bus.fresh(N)
    lease = named_for(0)
    bus.grant(lease, 2)
    bus.put("k", "v", lease=lease)
    bus.stop(0)  # the keeper is killed; the monitor declares it failed
    bus.fail(0)
    bus.advance(2.5)
    assert values(bus, "k") == {None}
    assert len(bus.digests(1, 2)) == 1


def test_revoke_deletes_the_keys_and_an_ended_lease_is_refused_everywhere() -> None:
    bus = Bus.fresh(N)
    lease = named_for(2)
    bus.grant(lease, 60)
    for i in range(5):
        bus.put(f"k{i}", "v", lease=lease)
    bus.put("k0", "detached")  # a put without the lease detaches the key
    revoked = bus.answer(bus.revoke(lease))
    assert (revoked.status, revoked.ttl) == ("ok", None)
    assert [values(bus, f"k{i}") for i in range(5)] == [{"detached"}] + [{None}] * 4
    for refused in (bus.revoke(lease), bus.keep_alive(lease)):
        answer = bus.answer(refused)
        assert answer.status == "erro" and "unknown or has ended" in (answer.erro or "")
    put = bus.answer(bus.put("late", "v", lease=lease))
    assert put.status == "erro" and values(bus, "late") == {None}
    agreed(bus)


def test_a_delete_detaches_the_key_so_a_later_put_outlives_the_lease() -> None:
    bus = Bus.fresh(N)
    bus.grant("l", 2)
    bus.put("k", "v", lease="l")
    bus.publish(Remocao(chave="k", topico_resp=CLIENT_TOPIC, idpedido="del"))
    bus.put("k", "again")
    bus.advance(3)
    assert values(bus, "k") == {"again"}
    agreed(bus)


def test_a_retried_grant_is_applied_once_and_answered_with_its_position() -> None:
    bus = Bus.fresh(N)
    rid = bus.grant("l", 5)
    first = bus.answer(rid)
    bus.advance(3)
    bus.grant("l", 5, rid=rid)  # the client's retry, 3 s later
    answers = bus.answers_to(rid)
    assert [a.revisao for a in answers] == [first.revisao] * 2
    bus.advance(2.5)  # the retry did not count as a keep-alive
    assert bus.leases() == [{}] * N


def test_a_joiner_gets_the_leases_and_expires_the_ones_it_keeps_on_time() -> None:
    bus = Bus.fresh(N)
    lease = named_for(0)
    bus.grant(lease, 4)
    bus.put("k", "v", lease=lease)
    bus.stop(0)
    bus.fail(0)
    bus.advance(1.0)
    bus.start_joining(0)  # takes its keys (and the keeping of the lease) back
    assert bus.replica(0).state == "live"
    agreed(bus)
    bus.advance(2.0)  # 3 s after the grant
    assert values(bus, "k") == {"v"}
    bus.advance(1.5)  # 4.5 s: the joiner counted on from the age it was sent
    assert values(bus, "k") == {None}
    agreed(bus)


def test_a_substitute_answers_a_grant_its_dead_keeper_left_unanswered() -> None:
    bus = Bus.fresh(N)
    lease = named_for(1)
    bus.pause(1)  # applies nothing, answers nothing: then declared failed
    rid = bus.grant(lease, 30)
    assert bus.answers_to(rid) == []
    bus.fail(1, vistoem=bus.now - 0.5)
    answer = bus.answer(rid)
    assert (answer.status, answer.ttl, answer.idserv) == ("ok", 30, 2)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b'{"tipomsg":"concessao","concessao":"l","ttl":0,"topico-resp":"c","idpedido":1}', "ttl"),
        (b'{"tipomsg":"concessao","concessao":"l","ttl":-5,"topico-resp":"c","idpedido":1}', "ttl"),
        (
            b'{"tipomsg":"concessao","concessao":"l","ttl":"x","topico-resp":"c","idpedido":1}',
            "ttl",
        ),
        (
            b'{"tipomsg":"concessao","concessao":"l","ttl":86401,"topico-resp":"c","idpedido":1}',
            "ttl",
        ),
        (
            b'{"tipomsg":"concessao","concessao":7,"ttl":5,"topico-resp":"c","idpedido":1}',
            "concessao",
        ),
        (b'{"tipomsg":"renovacao","concessao":"","topico-resp":"c","idpedido":1}', "empty lease"),
        (
            b'{"tipomsg":"concessao","concessao":"' + b"x" * 129 + b'","ttl":5,'
            b'"topico-resp":"c","idpedido":1}',
            "longer than 128 bytes",
        ),
        (b'{"tipomsg":"expiracao","concessao":"l","idserv":1}', "renovadaem"),
    ],
)
def test_bad_lease_requests_are_refused_with_a_reason_and_the_next_is_handled(
    payload: bytes, why: str
) -> None:
    bus = Bus.fresh(N)
    bus.publish_raw(payload)
    bus.run()
    refusals = [a for t, a in bus.answers if t == "c"]
    if b"expiracao" not in payload:
        assert len(refusals) == 1 and refusals[0].status == "erro"
        assert why in (refusals[0].erro or ""), refusals[0].erro
    assert bus.answer(bus.grant("fine", 5)).status == "ok"
    agreed(bus)


def test_a_grant_beyond_the_clusters_limit_is_refused() -> None:
    bus = Bus.fresh(N)
    for member in bus.members.values():
        member.replica.leases.capacity = 3
    assert [bus.answer(bus.grant(f"l{i}", 60)).status for i in range(4)] == ["ok"] * 3 + ["erro"]
    assert "too many leases" in (bus.answer(bus.grant("l9", 60)).erro or "")
    assert bus.answer(bus.grant("l0", 30)).status == "ok"  # granting one again is no new lease
    agreed(bus)


def test_leases_and_their_keys_are_handed_to_the_disk() -> None:
    bus = Bus.fresh(N, durable=True)
    bus.grant("l", 5)
    bus.put("k", "v", lease="l")
    changes = [w.changes for i, w in bus.written if i == 0 and not w.changes.everything]
    assert any(c.leases.get("l") is not None for c in changes)
    assert any(c.attached.get("k") == "l" for c in changes)
    bus.revoke("l")
    last = [w.changes for i, w in bus.written if i == 0][-1]
    assert last.leases == {"l": None} and last.attached == {"k": None} and last.puts == {"k": None}


def test_leases_read_back_from_disk_count_their_ttl_again_from_the_resume(tmp_path: Path) -> None:
    bus = Bus.fresh(N, durable=True)
    bus.grant("l", 3)
    bus.put("a", "1", lease="l")
    bus.put("b", "2", lease="l")
    bus.put("c", "3")
    bus.grant("gone", 3)
    bus.revoke("gone")
    bus.start_joining(2)  # a whole-state write (its join) must carry the leases too
    for replica_id in (0, 2):
        back = bus.read_back(replica_id, tmp_path)
        assert [(x.name, x.ttl, sorted(x.keys)) for x in back.leases] == [("l", 3, ["a", "b"])]
        settings = bus.config(replica_id)
        replica = Replica.recovered(settings, incarnation="again", disk=back)
        assert replica.leases.agreed() == bus.replica(0).leases.agreed()
        # Long after the grant, by the clock: the TTL counts from the first tick after resume.
        start = bus.now + 3600
        assert replica.leases.due(start, lambda _: True, replica_id, 1.0) == []
        due = replica.leases.due(start + 3.0, lambda _: True, replica_id, 1.0)
        assert [d.concessao for d in due] == ["l"]


def test_the_leases_are_listed_a_page_at_a_time_by_one_replica() -> None:
    bus = Bus.fresh(N)
    for name in ("b", "a", "c"):
        bus.grant(name, 30)
    bus.put("k1", "v", lease="a")
    bus.put("k2", "v", lease="a")
    bus.publish(ListaConcessoes(limite=2, topico_resp=CLIENT_TOPIC, idpedido="page-1"))
    bus.publish(ListaConcessoes(apos="b", topico_resp=CLIENT_TOPIC, idpedido="page-2"))
    bus.run()
    [first] = bus.answers_to("page-1")
    [second] = bus.answers_to("page-2")
    assert first.concessoes is not None and second.concessoes is not None
    assert [(x.concessao, x.ttl, x.chaves) for x in first.concessoes] == [
        ("a", 30, 2),
        ("b", 30, 0),
    ]
    assert first.mais is True
    assert [x.concessao for x in second.concessoes] == ["c"] and second.mais is False


def test_a_successor_clears_the_mirror_of_a_key_whose_lease_ended_while_its_owner_was_stalled() -> (
    None
):
    """The key's owner is stalled when the lease ends, so it never clears the retained value;
    its successor does when it takes over, though the key's put has left the request log."""
    bus = Bus.fresh(N, mirror="kv")
    key = next(f"k{i}" for i in range(100) if key_slot(f"k{i}", N) == 0)
    lease = named_for(1)  # kept by replica 1, which stays up
    bus.grant(lease, 20)
    bus.put(key, "v", lease=lease)
    assert f"kv/{key}" in bus.retained
    bus.pause(0)
    bus.advance(21.0)  # the lease ends; the put is older than the request log (10 s)
    assert values(bus, key) == {None}
    assert f"kv/{key}" in bus.retained  # stale: its owner did not clear it
    bus.fail(0, vistoem=bus.now - 21.0)
    assert f"kv/{key}" not in bus.retained
