"""The replica's state machine, driven message by message with fake time (no broker)."""

from __future__ import annotations

import pytest

from kvserver.effects import Reconnect, SendState
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.settings import ReplicaSettings
from kvserver.store import unpack
from kvwire.errors import ConfigError
from kvwire.messages import Consulta, FalhaServ, Insercao, NovoServ
from kvwire.ring import key_slot
from tests.bus import CLIENT_TOPIC, Bus, fed

# With n = 3, the assignment's hash sends "c" to replica 0, "a" to 1 and "b" to 2.
KEY_OF = {0: "c", 1: "a", 2: "b"}


def state(replica: Replica) -> str:
    return replica.state  # read afresh, not narrowed by an earlier assertion


def test_keys_used_here_hash_where_the_tests_say() -> None:
    assert {i: key_slot(k, 3) for i, k in KEY_OF.items()} == {0: 0, 1: 1, 2: 2}


def test_every_replica_applies_inserts_in_stream_order() -> None:
    bus = Bus.fresh(3)
    for round_ in range(5):
        for key in ("a", "b", "c", "zz"):
            bus.put(key, f"{key}{round_}")
    assert len(bus.digests()) == 1
    for i in range(3):
        assert bus.replica(i).store.get("zz") == "zz4"
        assert bus.replica(i).position == 20


def test_each_request_is_answered_once_by_the_owner_of_its_key() -> None:
    bus = Bus.fresh(3)
    for owner, key in KEY_OF.items():
        put = bus.put(key, "v")
        get = bus.get(key)
        assert [a.idserv for a in bus.answers_to(put)] == [owner]
        assert [(a.idserv, a.valor, a.status) for a in bus.answers_to(get)] == [(owner, "v", "ok")]
    missing = bus.get("nothing-here")
    assert bus.answer(missing).status == "naoencontrada"
    assert bus.answer(missing).valor is None


def test_a_retried_write_is_applied_once_and_answered_again() -> None:
    bus = Bus.fresh(3)
    first = bus.put("c", "old")
    bus.put("c", "new")
    bus.put("c", "old", rid=first)  # the client retries its first put, late
    assert {bus.replica(i).store.get("c") for i in range(3)} == {"new"}
    assert len(bus.answers_to(first)) == 2
    assert all(a.status == "ok" for a in bus.answers_to(first))
    assert len(bus.digests()) == 1


def test_invalid_messages_get_one_error_reply_and_keep_replicas_equal() -> None:
    bus = Bus.fresh(3)
    bus.publish_raw(b'{"tipomsg": "consulta", "chave": 5, "topico-resp": "t/1", "idpedido": 1}')
    bus.publish_raw(b'{"tipomsg": "nope", "topico-resp": "t/1", "idpedido": 2}')
    bus.publish_raw(b"\xff\xfe garbage")
    bus.publish_raw(b"[1, 2]")
    bus.publish_raw(b'{"tipomsg": "insercao", "chave": "k", "topico-resp": "t/1", "idpedido": 3}')
    bus.run()
    errors = {a.idpedido: a for topic, a in bus.answers if topic == "t/1"}
    assert set(errors) == {1, 2, 3}
    assert all(a.status == "erro" and a.erro for a in errors.values())
    assert "chave" in (errors[1].erro or "")
    assert "novovalor" in (errors[3].erro or "")
    assert [a.idpedido for t, a in bus.answers if t == "t/1"] == [1, 2, 3]
    assert len(bus.digests()) == 1
    assert all(bus.replica(i).replies.invalid_count == 5 for i in range(3))
    rid = bus.put("a", "still works")
    assert bus.answer(rid).status == "ok"


def test_an_oversized_value_is_refused_by_every_replica() -> None:
    bus = Bus.fresh(3)
    rid = bus.put("a", "x" * (1024 * 1024))
    answer = bus.answer(rid)
    assert answer.status == "erro"
    assert "longer than" in (answer.erro or "")
    assert all(bus.replica(i).store.get("a") is None for i in range(3))


def test_an_empty_key_is_refused_by_every_replica() -> None:
    bus = Bus.fresh(3)
    answer = bus.answer(bus.put("", "v"))
    assert (answer.status, answer.erro) == ("erro", "empty key")
    assert all(len(bus.replica(i).store) == 0 for i in range(3))
    assert bus.answer(bus.delete("")).status == "erro"


def test_the_successor_replays_what_the_failed_owner_left_unanswered() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "before")
    last_heartbeat = bus.now
    bus.now += 0.5
    bus.stop(0)  # kill -9: replica 0 reads nothing more
    stranded = bus.get("c")
    assert bus.answers_to(stranded) == []
    bus.now += 1.0
    bus.fail(0, vistoem=last_heartbeat)
    answer = bus.answer(stranded)
    assert (answer.idserv, answer.valor) == (1, "before")
    later = bus.get("c")
    assert bus.answer(later).idserv == 1


def test_replay_skips_requests_older_than_the_last_heartbeat() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    old = bus.get("c")  # answered by 0 while it was alive
    bus.now += 5.0
    bus.stop(0)
    bus.fail(0, vistoem=bus.now - 1.0)
    assert [a.idserv for a in bus.answers_to(old)] == [0]


def test_ownership_walks_the_ring_after_several_failures() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    bus.stop(1)
    bus.fail(1)
    for key in ("a", "b", "c"):
        rid = bus.put(key, key.upper())
        assert bus.answer(rid).idserv == 2
        assert bus.answer(bus.get(key)).valor == key.upper()
    assert bus.replica(2).view.substituting() == [0, 1]


def test_duplicate_and_stale_failure_notices_change_nothing() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    view = list(bus.replica(1).view.live)
    bus.fail(0)  # a second monitor
    assert bus.replica(1).view.live == view
    assert len(bus.digests(1, 2)) == 1


def test_a_slow_replica_that_reads_its_own_failure_stops_answering() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    bus.pause(0)  # SIGSTOP
    bus.fail(0)
    held = bus.get("c")
    assert [a.idserv for a in bus.answers_to(held)] == [1]
    effects = fed(
        bus.replica(0),
        FalhaServ(idserv=0, vistoem=bus.now, incarnacao=bus.replica(0).incarnation),
        bus.now,
    )
    # It keeps its store, but only as a candidate for protocol §11's recovery: it answers
    # nothing until it has re-joined.
    assert any(isinstance(e, Reconnect) for e in effects)
    assert bus.replica(0).state == "fenced"
    assert bus.replica(0).store.get("c") == "v"
    assert heartbeat(bus.replica(0), bus.now).posicao == bus.replica(0).position
    assert fed(bus.replica(0), Consulta(chave="c", topico_resp="t", idpedido=9)) == []


def test_sigcont_after_fencing_answers_nothing_for_lost_keys_then_rejoins() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v1")
    bus.pause(0)
    bus.fail(0)
    during = bus.get("c")
    bus.put("c", "v2")
    bus.resume(0)  # SIGCONT: it reads the backlog, its own falhaserv among it
    assert [a.idserv for a in bus.answers_to(during)] == [1]
    bus.run()
    assert bus.replica(0).state == "live"  # re-joined through a state transfer
    assert bus.replica(0).store.get("c") == "v2"
    assert bus.answer(bus.get("c")).idserv == 0
    assert len(bus.digests()) == 1


def test_join_cut_hands_keys_back_without_loss_or_double_answers() -> None:
    bus = Bus.fresh(3)
    for i in range(10):
        bus.put(f"k{i}", "v0")
    bus.stop(0)
    bus.fail(0)
    bus.put("c", "while-down")
    bus.hold_transfers = True
    joiner = bus.start_joining(0)
    assert state(joiner) == "joining"
    # Requests after the cut belong to the joiner, which answers them once it has the state.
    after_cut = [bus.get("c"), bus.put("c", "after-cut"), bus.get("c")]
    assert all(bus.answers_to(rid) == [] for rid in after_cut)
    bus.hold_transfers = False
    bus.run()
    assert state(joiner) == "live"
    answers = [bus.answers_to(rid) for rid in after_cut]
    assert [[a.idserv for a in group] for group in answers] == [[0], [0], [0]]
    assert [group[0].valor for group in answers] == ["while-down", "after-cut", "after-cut"]
    assert len(bus.digests()) == 1
    assert joiner.view.live == [True, True, True]


def test_the_sender_is_the_first_live_replica_after_the_joiner() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    bus.stop(1)
    bus.fail(1)
    bus.hold_transfers = True
    bus.start_joining(0)
    assert [t.chunks[0].idserv for t in bus.transfers] == [2]


def sender_dies_mid_transfer(bus: Bus) -> Replica:
    """Replica 0 restarts and joins; its sender, replica 1, dies after three chunks."""
    for i in range(100):
        bus.put(f"key{i}", str(i))
    bus.stop(0)
    bus.fail(0)
    bus.hold_transfers = True
    joiner = bus.start_joining(0)
    first = bus.transfers[0]
    assert first.chunks[0].idserv == 1
    bus.deliver_chunks(first, 3)
    bus.stop(1)
    bus.fail(1)
    return joiner


def test_a_joiner_retries_when_the_sender_dies_mid_transfer() -> None:
    bus = Bus.fresh(3, chunk_items=10)
    joiner = sender_dies_mid_transfer(bus)
    # The joiner hears replica 2 alive, gives up after join_timeout and asks again.
    bus.hold_transfers = False
    bus.advance(3.5)
    assert state(joiner) == "live"
    assert bus.transfers[-1].chunks[0].idserv == 2
    assert joiner.store.get("key42") == "42"
    assert len(bus.digests(0, 2)) == 1


def test_the_joiner_inherits_the_dedup_set() -> None:
    bus = Bus.fresh(3)
    first = bus.put("c", "old")
    bus.put("c", "new")
    bus.stop(0)
    bus.fail(0)
    joiner = bus.start_joining(0)
    bus.put("c", "old", rid=first)  # a late retry of the first put
    assert joiner.store.get("c") == "new"
    assert len(bus.digests()) == 1


def test_the_joiner_inherits_the_log_and_can_replay_as_a_substitute() -> None:
    bus = Bus.fresh(3)
    bus.stop(0)
    bus.fail(0)
    joiner = bus.start_joining(0)
    assert state(joiner) == "live"
    bus.put("b", "v")
    seen_b = bus.now
    bus.stop(2)
    stranded = bus.get("b")  # replica 2's key; 2 is dead but not yet declared
    bus.fail(2, vistoem=seen_b)
    assert [a.idserv for a in bus.answers_to(stranded)] == [0]


def test_a_late_failure_notice_for_the_dead_predecessor_does_not_fence_the_new_process() -> None:
    bus = Bus.fresh(3)
    old_incarnation = bus.replica(0).incarnation
    bus.stop(0)
    bus.fail(0)
    joiner = bus.start_joining(0)
    bus.fail(0, incarnation=old_incarnation)  # a second monitor, late
    assert state(joiner) == "live"
    assert bus.replica(1).view.live[0]


def test_a_corrupt_transfer_is_rejected_and_asked_again() -> None:
    bus = Bus.fresh(3)
    bus.put("a", "1")
    bus.stop(0)
    bus.fail(0)
    bus.hold_transfers = True
    joiner = bus.start_joining(0)
    transfer = bus.transfers[0]
    bad = transfer.chunks[0].model_copy(update={"pares": {"a": "tampered"}})
    transfer.chunks[0] = bad
    bus.deliver_chunks(transfer, len(transfer.chunks))
    assert state(joiner) == "joining"
    bus.hold_transfers = False
    bus.run()
    assert state(joiner) == "live"
    assert joiner.store.get("a") == "1"


def test_a_replica_whose_id_is_taken_by_a_new_process_stops() -> None:
    bus = Bus.fresh(3)
    bus.start_joining(1)  # a second process with id 1 while the first still runs
    assert bus.members[1].replica.state == "live"
    old = Replica.fresh(bus.config(1), incarnation="inc-1-1")
    assert any(
        type(e).__name__ == "Stop"
        for e in fed(
            old, NovoServ(idserv=1, topico_resp="inf1406-sync/1/x", incarnacao="other"), bus.now
        )
    )


def test_when_the_broker_lost_every_session_the_highest_position_resumes() -> None:
    bus = Bus.fresh(3)
    for i in range(5):
        bus.put(f"k{i}", "v")
    # Replica 2 missed the last write (the broker died before delivering it).
    bus.stop(2)
    bus.put("k5", "only-on-0-and-1")
    positions = {i: bus.replica(i).position for i in range(3)}
    assert positions[0] == positions[1] > positions[2]
    bus.members[2].reading = True
    bus.members[2].cursor = len(bus.stream)
    for i in range(3):
        bus.replica(i).on_session_lost(bus.now)
        bus.settle(i)
    assert all(bus.replica(i).state == "joining" for i in range(3))
    bus.advance(3.1)
    assert bus.replica(0).state == "live"  # ties on position go to the lowest id
    bus.advance(3.1)
    assert [bus.replica(i).state for i in range(3)] == ["live"] * 3
    assert {bus.replica(i).store.get("k5") for i in range(3)} == {"only-on-0-and-1"}
    assert len(bus.digests()) == 1


def test_a_lone_joiner_with_no_store_waits() -> None:
    config = ReplicaSettings(replica_id=0, n=3)
    replica = Replica(config, incarnation="x")
    replica.connected("x", 0.0)
    replica.ready()
    replica.tick(10.0)
    effects = replica.ready().effects
    assert replica.state == "joining"
    assert [type(e).__name__ for e in effects] == ["Publish"]  # asks again, nothing else


def test_the_state_sent_is_the_state_at_the_cut() -> None:
    bus = Bus.fresh(2)
    bus.put("x", "1")
    sender = bus.replica(1)
    effects = fed(sender, NovoServ(idserv=0, topico_resp="inf1406-sync/0/n", incarnacao="i"))
    state = next(e for e in effects if isinstance(e, SendState))
    sender.on_request(
        Insercao(chave="x", novovalor="2", topico_resp=CLIENT_TOPIC, idpedido=99), bus.now
    )
    assert {k: unpack(p)[0] for k, p in state.snapshot.pairs.items()} == {"x": "1"}
    assert state.snapshot.cut == sender.position - 1


def test_config_rejects_impossible_settings() -> None:
    with pytest.raises(ConfigError):
        ReplicaSettings(replica_id=3, n=3)
    with pytest.raises(ConfigError):
        ReplicaSettings(replica_id=0, n=0)
    with pytest.raises(ConfigError):
        ReplicaSettings(replica_id=0, n=1, log_ttl=0.1, skew_margin=0.25)


def test_log_forgets_requests_after_its_ttl() -> None:
    bus = Bus.fresh(3, log_ttl=2.0)
    bus.get("a")
    bus.advance(5.0)
    assert len(bus.replica(0).log) == 0


def test_after_a_whole_cluster_stall_each_request_is_answered_once() -> None:
    """SIGSTOP of every replica, each declared failed, SIGCONT: all re-join at once, nobody
    is live, the highest resumes alone and answers every key; the others' first attempts
    buffered the same requests, which they must not answer again once they join from it."""
    bus = Bus.fresh(3)
    for key in KEY_OF.values():
        bus.put(key, "before")
    bus.stall_everyone()
    assert {state(bus.replica(i)) for i in range(3)} == {"joining"}
    reads = [bus.get(key) for key in KEY_OF.values() for _ in range(3)]
    write = bus.put("a", "during")
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [state(bus.replica(i)) for i in range(3)] == ["live"] * 3
    assert len(bus.digests()) == 1
    counts = bus.answer_counts()
    assert {rid: counts[rid] for rid in [*reads, write]} == dict.fromkeys([*reads, write], 1)
    assert bus.answer(write).status == "ok"


def test_what_arrives_between_two_attempts_of_one_join_is_answered_by_the_joiner() -> None:
    """The opposite case: the live replicas counted the joiner in at its first novoserv, so
    nobody else answers its keys while its transfer is cut short; it answers them once in."""
    bus = Bus.fresh(3, chunk_items=10)
    joiner = sender_dies_mid_transfer(bus)
    reads = [bus.get(KEY_OF[0]) for _ in range(3)]
    assert all(bus.answers_to(rid) == [] for rid in reads)  # nobody answered them yet
    bus.hold_transfers = False
    bus.advance(3.5)  # the joiner asks again, from replica 2 this time
    assert state(joiner) == "live"
    assert [[a.idserv for a in bus.answers_to(rid)] for rid in reads] == [[0]] * 3


def test_a_joiner_answers_only_what_was_left_to_it_since_it_was_counted_in() -> None:
    """After a stall of the whole cluster, replica 0 needs three attempts: its first novoserv
    precedes the resumer's own, so the resumer answers 0's keys itself; its second is
    applied, from which 0 owns them while it waits; the third loads. Only what came after
    the second is 0's to answer (found with real processes, `scripts/stall_answers.py`)."""
    bus = Bus.fresh(3)
    for key in KEY_OF.values():
        bus.put(key, "before")
    bus.stall_everyone(order=(0, 2, 1))  # novoservs in this order
    reads = {bus.get(key): key for key in KEY_OF.values() for _ in range(3)}
    for _ in range(5):
        bus.advance(bus.join_timeout)
        reads |= {bus.get(key): key for key in KEY_OF.values()}
    assert [state(bus.replica(i)) for i in range(3)] == ["live"] * 3
    assert {rid: n for rid, n in bus.answer_counts().items() if rid in reads and n > 1} == {}
    for rid, key in reads.items():  # a client retries what is unanswered, with the same id
        if not bus.answers_to(rid):
            bus.publish(Consulta(chave=key, topico_resp=CLIENT_TOPIC, idpedido=rid))
    bus.run()
    assert {rid: bus.answer_counts()[rid] for rid in reads} == dict.fromkeys(reads, 1)
