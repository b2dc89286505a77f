"""Issue 11 on the state machine: one request or one pause must never take the cluster down.

A reply address no MQTT client may publish to; a forged `novoserv`; every replica fenced at
once (a host pause); replicas stopped one after another with overlaps.
"""

from __future__ import annotations

import json

import pytest

from kvserver.effects import Publish
from kvwire.messages import Consulta, Insercao, NovoServ
from kvwire.topics import MAX_TOPIC_BYTES, TopicCheck, topic_problem
from tests.bus import CLIENT_TOPIC, Bus, fed

BAD_TOPICS = {
    "x/#": "wildcard '#'",
    "x/+/y": "wildcard '+'",
    "": "empty",
    "a\x00b": "U+0000",
    "tab\there": "U+0009",
    "del\x7f": "U+007F",
    "c1\x85": "U+0085",
    "nonchar\ufffe": "U+FFFE",
    "nonchar\U0010ffff": "U+10FFFF",
    "arabic\ufdd0": "U+FDD0",
    "$SYS/x": "'$'",
    "x" * (MAX_TOPIC_BYTES + 1): "over MQTT's",
    "é" * (MAX_TOPIC_BYTES // 2 + 1): "over MQTT's",  # characters fit, bytes do not
}


@pytest.mark.parametrize("topic", list(BAD_TOPICS), ids=lambda t: repr(t[:12]))
def test_each_kind_of_unusable_topic_is_named(topic: str) -> None:
    problem = topic_problem(topic)
    assert problem is not None and BAD_TOPICS[topic] in problem


@pytest.mark.parametrize(
    "topic", ["a", "inf1406-resp/abc", "x/y/z", "sensors/ção/温度", "a$b", "/", "x" * 65535]
)
def test_ordinary_topics_are_usable(topic: str) -> None:
    assert topic_problem(topic) is None
    assert TopicCheck().problem(topic) is None


def test_the_check_keeps_answering_the_same_after_its_memory_fills() -> None:
    check = TopicCheck()
    for i in range(10_000):
        assert check.problem(f"t/{i}") is None
    assert check.problem("t/#") is not None
    assert check.problem("t/#") is not None


def publishes(bus: Bus) -> list[str]:
    return [topic for topic, _ in bus.answers]


@pytest.mark.parametrize("topic", list(BAD_TOPICS), ids=lambda t: repr(t[:12]))
def test_a_request_with_an_unusable_reply_topic_is_applied_but_not_answered(topic: str) -> None:
    bus = Bus.fresh(3)
    bus.publish(Insercao(chave="c", novovalor="v", topico_resp=topic, idpedido=1))
    bus.publish(Consulta(chave="c", topico_resp=topic, idpedido=2))
    bus.run()
    assert bus.answers == []
    assert all(bus.replica(i).store.get("c") == "v" for i in range(3))  # a write is a write
    assert [bus.replica(i).replies.unanswered_count for i in range(3)] == [
        2,
        0,
        0,
    ]  # only the owner
    assert bus.answer(bus.get("c")).valor == "v"  # the next request is answered as usual
    assert len(bus.digests()) == 1


def test_an_invalid_request_with_an_unusable_topic_is_counted_not_answered() -> None:
    bus = Bus.fresh(3)
    bus.publish_raw(json.dumps({"tipomsg": "nope", "topico-resp": "x/#", "idpedido": 1}).encode())
    bus.run()
    assert bus.answers == []
    assert sum(bus.replica(i).replies.unanswered_count for i in range(3)) == 1
    assert all(bus.replica(i).replies.invalid_count == 1 for i in range(3))


def test_a_novoserv_with_an_unusable_sync_topic_is_refused_by_every_replica() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    bus.publish(NovoServ(idserv=0, topico_resp="inf1406-sync/0/#", incarnacao="forged"))
    bus.run()
    assert bus.transfers == []
    assert all(bus.replica(i).view.live == [True, True, True] for i in range(3))
    assert bus.replica(0).state == "live"
    assert bus.answer(bus.get("c")).idserv == 0


def test_every_replica_paused_and_failed_resumes_from_the_highest_position() -> None:
    """A host pause: the monitor rightly fails all three, each reads its own failure and
    fences. The cluster must come back with every acknowledged write, not wait forever."""
    bus = Bus.fresh(3)
    acked = {}
    for i in range(30):
        key = f"k{i}"
        rid = bus.put(key, f"v{i}")
        assert bus.answer(rid).status == "ok"
        acked[key] = f"v{i}"
    for i in range(3):
        bus.pause(i)
    for i in range(3):
        bus.fail(i)
    for i in range(3):
        bus.members[i].reading = True
    bus.run()
    assert {bus.replica(i).state for i in range(3)} == {"joining"}
    assert all(len(bus.replica(i).store) == 30 for i in range(3))  # kept as candidates
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in range(3)] == ["live"] * 3
    assert len(bus.digests()) == 1
    for key, value in acked.items():
        assert bus.answer(bus.get(key)).valor == value


def test_replicas_stopped_one_after_another_with_overlaps_come_back() -> None:
    bus = Bus.fresh(3)
    rid = bus.put("c", "before")
    bus.pause(0)
    bus.fail(0)
    during = bus.put("c", "while-0-is-stopped")  # acknowledged by replica 1
    assert bus.answer(during).idserv == 1
    bus.pause(1)
    bus.fail(1)
    late = bus.put("c", "while-0-and-1-are-stopped")  # acknowledged by replica 2
    assert bus.answer(late).idserv == 2
    bus.resume(0)  # fences, re-joins from replica 2, the only live one
    bus.pause(2)
    bus.fail(2)
    bus.resume(1)
    bus.resume(2)
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in range(3)] == ["live"] * 3
    assert len(bus.digests()) == 1
    assert bus.answer(bus.get("c")).valor == "while-0-and-1-are-stopped"
    assert bus.answer(rid).status == "ok"


def test_no_effect_ever_publishes_to_an_unusable_topic() -> None:
    bus = Bus.fresh(3)
    for i, topic in enumerate(BAD_TOPICS):
        bus.publish(Consulta(chave=f"k{i}", topico_resp=topic, idpedido=i))
    bus.run()
    effects = []
    for replica_id in range(3):
        replica = bus.replica(replica_id)
        effects += fed(replica, Consulta(chave="c", topico_resp="x/#", idpedido=0))
    assert all(topic_problem(e.topic) is None for e in effects if isinstance(e, Publish))
    assert CLIENT_TOPIC not in publishes(bus)
