"""Quotas (issue 29) on replica cores over the in-memory bus: a write past `--max-keys` or
`--max-bytes` refused with `cota` by every replica alike at its position; overwrites, deletes
and reads still work; room made by deletes is used again; a transaction refused whole; a
retry answered as the first time; a quota smaller than what is held refused at start."""

from __future__ import annotations

import pytest

from kvserver.quota import Quota
from kvserver.store import Store
from tests.bus import Bus

N = 3


def statuses(bus: Bus, *rids: int) -> list[str]:
    return [bus.answer(rid).status for rid in rids]


def test_the_key_past_max_keys_is_refused_by_every_replica_and_room_is_made_by_deletes() -> None:
    bus = Bus.fresh(N, max_keys=3)
    assert statuses(bus, *(bus.put(f"k{i}", "v") for i in range(3))) == ["ok"] * 3
    refused = bus.put("k3", "v")
    answer = bus.answer(refused)
    assert (answer.status, answer.revisao, answer.valor) == ("cota", None, None)
    assert len(bus.answers_to(refused)) == 1  # its owner alone answers, as for any write
    assert {bus.replica(i).store.entry("k3") for i in range(N)} == {None}
    assert {len(bus.replica(i).store) for i in range(N)} == {3}
    assert len(bus.digests()) == 1
    # An overwrite adds no key; a read and a delete are never refused; a delete makes room.
    assert statuses(bus, bus.put("k0", "again"), bus.get("k1"), bus.delete("k2")) == ["ok"] * 3
    assert statuses(bus, bus.put("k3", "v")) == ["ok"]
    assert statuses(bus, bus.put("k4", "v")) == ["cota"]
    assert {bus.replica(i).store.get("k3") for i in range(N)} == {"v"}


def test_a_retry_of_a_refused_put_is_answered_cota_again_even_after_room_is_made() -> None:
    bus = Bus.fresh(N, max_keys=1)
    bus.put("a", "1")
    rid = bus.put("b", "1")
    bus.delete("a")
    bus.put("b", "1", rid=rid)  # the same request again: its outcome was decided
    assert [a.status for a in bus.answers_to(rid)] == ["cota", "cota"]
    assert bus.replica(0).store.entry("b") is None


def test_bytes_count_keys_and_values_in_utf8_and_a_shrinking_overwrite_passes() -> None:
    bus = Bus.fresh(N, max_bytes=20)
    assert statuses(bus, bus.put("ab", "é" * 4)) == ["ok"]  # 2 + 8 bytes
    assert {bus.replica(i).store.nbytes() for i in range(N)} == {10}
    assert statuses(bus, bus.put("cd", "x" * 9)) == ["cota"]  # 21 bytes
    assert statuses(bus, bus.put("cd", "x" * 8)) == ["ok"]  # 20: at the quota, not past it
    assert statuses(bus, bus.put("ab", "")) == ["ok"]
    assert {bus.replica(i).store.nbytes() for i in range(N)} == {12}


def test_a_transaction_past_the_quota_writes_nothing_and_one_that_frees_room_passes() -> None:
    bus = Bus.fresh(N, max_keys=2)
    bus.put("a", "1")
    put = {"tipomsg": "insercao", "novovalor": "1"}
    refused = bus.txn([], [{**put, "chave": "b"}, {**put, "chave": "c"}])
    answer = bus.answer(refused)
    assert answer.status == "cota" and "2 keys" in (answer.erro or "")
    assert {bus.replica(i).store.entry("b") for i in range(N)} == {None}
    # A delete before the puts in the same branch makes room for one of them.
    passed = bus.txn(
        [], [{"tipomsg": "remocao", "chave": "a"}, {**put, "chave": "b"}, {**put, "chave": "c"}]
    )
    assert bus.answer(passed).status == "ok"
    assert {tuple(sorted(k for k, _ in bus.replica(i).store.items())) for i in range(N)} == {
        ("b", "c")
    }


def test_a_joiner_gets_the_quota_s_count_and_refuses_alike() -> None:
    bus = Bus.fresh(N, max_keys=2)
    bus.put("a", "1")
    bus.stop(1)
    bus.fail(1)
    bus.start_joining(1)
    bus.put("b", "1")
    rid = bus.put("c", "1")
    assert bus.answer(rid).status == "cota"
    assert {len(bus.replica(i).store) for i in range(N)} == {2}
    assert {bus.replica(i).store.nbytes() for i in range(N)} == {4}


@pytest.mark.parametrize(
    ("quota", "said"),
    [(Quota(keys=1), "--max-keys 1 is smaller than the 2 keys held"),
     (Quota(bytes=3), "--max-bytes 3 is smaller than the 4 bytes held")],
)  # fmt: skip
def test_a_quota_smaller_than_the_data_held_is_refused_at_start(quota: Quota, said: str) -> None:
    store = Store()
    store.load({"a": ("1", 1), "b": ("2", 2)})
    assert said in (quota.start_problem(store) or "")
    assert Quota(keys=2, bytes=4).start_problem(store) is None


def test_kvclient_status_says_when_replicas_were_started_with_different_quotas() -> None:
    from kvclient.status import problems
    from tests.test_health import cluster_of

    same = cluster_of({"cotachaves": 1000}, {"cotachaves": 1000}, {"cotachaves": 1000})
    assert problems(same, 3) == []
    odd = cluster_of({"cotachaves": 1000}, {}, {"cotachaves": 1000, "cotabytes": 65536})
    [found] = problems(odd, 3)
    assert found == (
        "the replicas were started with different quotas (replica 0: --max-keys 1000; "
        "replica 1: none; replica 2: --max-keys 1000, --max-bytes 65536): start every "
        "replica with the same --max-keys and --max-bytes"
    )
