"""The change feed (protocol §19) on replica cores over the in-memory bus, with fake time: a
watch from a revision gets exactly the changes after it, once each and in order, through its
owner's failure, a join, a stop from disk and the history's compaction; and bad input.

Events are read as a client reads them (`kvclient.cursor.Cursor`): what a test checks is what a
watcher would have handed its user, and whether it saw a gap."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvclient.cursor import Cursor
from kvserver.replica import Replica
from kvwire.feed import MAX_WATCHES_PER_TOPIC, Evento, Vigia
from kvwire.ring import key_slot
from tests.bus import CLIENT_TOPIC, Bus

N = 3

Seen = tuple[int, str, str, str | None]


def topic_owned_by(slot: int, stem: str = "watcher") -> str:
    """A response topic whose watches are owned by replica `slot`."""
    return next(f"{stem}/{i}" for i in range(100) if key_slot(f"{stem}/{i}", N) == slot)


def follow(events: list[Evento], since: int) -> tuple[list[Seen], int, Cursor]:
    """What a watcher hands its user, and how many gaps it saw."""
    cursor, seen, gaps = Cursor(since), list[Seen](), 0
    for event in events:
        verdict, changes = cursor.take(event)
        seen.extend((c.revision, c.key, c.kind, c.value) for c in changes)
        gaps += verdict == "gap"
    return seen, gaps, cursor


def agreed(bus: Bus, *ids: int) -> None:
    first, *others = bus.watches(*ids)
    assert all(other == first for other in others)


def test_a_watch_from_a_revision_gets_exactly_the_later_changes_once_each_in_order() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 30)
    early = bus.answer(bus.put("a/1", "old")).revisao
    assert early is not None
    bus.put("b/1", "other prefix")
    bus.put("a/2", "x")
    cas = bus.put("a/2", "lost", if_revision=1)  # a compare-and-set that fails changes nothing
    assert bus.answer(cas).status == "conflito"
    watch = bus.watch("w", "a/", since=early)
    answer = bus.answer(watch)
    assert (answer.status, answer.posicao) == ("ok", bus.replica(0).position)
    bus.delete("a/1")
    bus.put("a/3", "y")
    seen, gaps, _ = follow(bus.events_of(watch), early)
    assert [(k, t, v) for _, k, t, v in seen] == [
        ("a/2", "insercao", "x"),
        ("a/1", "remocao", None),
        ("a/3", "insercao", "y"),
    ]
    assert gaps == 0
    revisions = [r for r, *_ in seen]
    assert revisions == sorted(revisions) and revisions[0] > early
    # One replica sent them: the owner of the response topic.
    assert {i for i, t, _ in bus.events if t == CLIENT_TOPIC} == {key_slot(CLIENT_TOPIC, N)}
    agreed(bus)


def test_a_lease_that_ends_deletes_its_keys_in_one_event_then_ends_its_watches() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 60)
    bus.grant("keys", 2)
    bus.put("s/1", "v", lease="keys")
    bus.put("s/2", "v", lease="keys")
    watch = bus.watch("w", "s/")
    bus.advance(3.0)
    events = [e for e in bus.events_of(watch) if e.tipo != "progresso"]
    assert len(events) == 1 and events[0].mudancas is not None
    assert [(m.chave, m.tipo) for m in events[0].mudancas] == [
        ("s/1", "expiracao"),
        ("s/2", "expiracao"),
    ]
    bus.revoke("w")
    last = bus.events_of(watch)[-1]
    assert (last.tipo, last.anterior) == ("fim", events[0].revisao)
    assert bus.watches() == [{}] * N


def test_a_watch_whose_lease_ends_with_no_keys_ends_and_the_stream_goes_on() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    watch = bus.watch("w", "")
    assert bus.answer(bus.revoke("w")).status == "ok"
    assert [e.tipo for e in bus.events_of(watch)] == ["fim"]
    assert all(m.replica.state == "live" and not m.exited for m in bus.members.values())
    assert bus.answer(bus.put("k", "v")).status == "ok"


def test_the_owners_successor_sends_what_it_may_have_missed_and_the_watcher_sees_no_gap() -> None:
    topic = topic_owned_by(1)
    bus = Bus.fresh(N)
    bus.grant("w", 60)
    watch = bus.watch("w", "k", since=0, topic=topic)
    for i in range(3):
        bus.put(f"k{i}", str(i))
    bus.stop(1)  # killed: it reads nothing more, so sends nothing more
    for i in range(3, 6):
        bus.put(f"k{i}", str(i))
    bus.fail(1, vistoem=bus.now)
    bus.put("k6", "6")
    events = bus.events_of(watch, topic)
    senders = {i for i, t, e in bus.events if t == topic}
    assert senders == {1, 2}
    seen, gaps, _ = follow(events, 0)
    assert [k for _, k, _, _ in seen] == [f"k{i}" for i in range(7)]
    assert gaps == 0


def test_a_successor_that_cannot_say_what_was_missed_shows_a_gap_and_a_new_watch_fills_it() -> None:
    topic = topic_owned_by(1)
    bus = Bus.fresh(N)
    bus.grant("w", 60)
    watch = bus.watch("w", "", since=0, topic=topic)
    bus.put("a", "1")
    bus.stop(1)
    bus.put("b", "2")
    bus.advance(30)  # the monitor says so late: its vistoem is after the change it missed
    bus.fail(1, vistoem=bus.now)
    bus.put("c", "3")
    seen, gaps, cursor = follow(bus.events_of(watch, topic), 0)
    assert gaps >= 1 and [k for _, k, _, _ in seen] == ["a"]
    again = bus.watch("w", "", since=cursor.last, topic=topic)
    more, gaps, _ = follow(bus.events_of(again, topic), cursor.last)
    assert [k for _, k, _, _ in more] == ["b", "c"] and gaps == 0


def test_a_quiet_watch_gets_progress_notes_that_reveal_a_lost_last_event() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    watch = bus.watch("w", "p/")
    bus.put("p/1", "v")
    bus.put("q/1", "v")
    bus.advance(3.0)  # the first round passes it by: it had an event since the last
    bus.advance(3.0)
    notes = [e for e in bus.events_of(watch) if e.tipo == "progresso"]
    assert notes and notes[-1].anterior == bus.answer(bus.get("p/1")).revisao
    # A watcher that never got the p/1 event learns of it from the note.
    assert Cursor(notes[-1].anterior - 1).take(notes[-1]) == ("gap", [])
    cursor = Cursor(notes[-1].anterior)
    assert cursor.take(notes[-1]) == ("seen", []) and cursor.last == notes[-1].revisao


def test_a_joiner_gets_the_watches_and_the_history_and_continues_without_a_gap() -> None:
    topic = topic_owned_by(2)
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    watch = bus.watch("w", "", since=0, topic=topic)
    bus.put("a", "1")
    bus.stop(2)
    bus.fail(2)
    bus.put("b", "2")
    bus.start_joining(2)
    bus.put("c", "3")
    seen, gaps, cursor = follow(bus.events_of(watch, topic), 0)
    assert [k for _, k, _, _ in seen] == ["a", "b", "c"] and gaps == 0
    assert bus.events[-1][0] == 2  # handed back: the joiner sends again
    agreed(bus)
    # Its history came with the state: it serves a watch from the start.
    again = bus.watch("w", "", since=0, topic=topic)
    assert bus.answer(again, topic).status == "ok"
    assert [k for _, k, _, _ in follow(bus.events_of(again, topic), 0)[0]] == ["a", "b", "c"]
    del cursor


def test_a_watch_from_before_the_history_is_told_where_it_starts() -> None:
    bus = Bus.fresh(N, history_limit=3)
    bus.grant("w", 600)
    for i in range(6):
        bus.put(f"k{i}", "v")
    oldest = bus.replica(0).feed.history.compacted
    assert oldest > 0
    answer = bus.answer(bus.watch("w", "", since=1))
    assert (answer.status, answer.revisao) == ("compactada", oldest)
    assert bus.answer(bus.watch("w", "", since=oldest)).status == "ok"


def test_the_history_forgets_changes_older_than_its_age() -> None:
    bus = Bus.fresh(N, history_age=60.0)
    bus.grant("w", 600)
    bus.put("k", "1")
    bus.advance(61)
    bus.put("k", "2")
    answer = bus.answer(bus.history("k"))
    assert [(m.valor, m.tipo) for m in answer.mudancas or []] == [("2", "insercao")]
    assert bus.answer(bus.watch("w", "", since=0)).status == "compactada"


def test_a_keys_history_is_answered_by_its_owner_newest_last() -> None:
    bus = Bus.fresh(N)
    for value in ("1", "2", "3"):
        bus.put("k", value)
    bus.delete("k")
    bus.put("other", "x")
    rid = bus.history("k", limit=3)
    answer = bus.answer(rid)
    assert [(m.valor, m.tipo) for m in answer.mudancas or []] == [
        ("2", "insercao"),
        ("3", "insercao"),
        (None, "remocao"),
    ]
    assert answer.mais is True
    assert [a.idserv for a in bus.answers_to(rid)] == [key_slot("k", N)]


def test_a_cancelled_watch_ends_and_sends_nothing_more() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    watch = bus.watch("w", "")
    bus.put("a", "1")
    cancel = bus.cancel_watch(watch)
    assert bus.answer(cancel).status == "ok"
    assert bus.events_of(watch)[-1].tipo == "fim"
    count = len(bus.events_of(watch))
    bus.put("b", "2")
    bus.advance(5)
    assert len(bus.events_of(watch)) == count
    assert bus.answer(bus.cancel_watch(watch)).status == "naoencontrada"


def test_a_retried_vigia_registers_once_and_is_answered_again_with_its_history() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    bus.put("a", "1")
    watch = bus.watch("w", "", since=0)
    bus.watch("w", "", since=0, rid=watch)
    assert [a.status for a in bus.answers_to(watch)] == ["ok", "ok"]
    assert len(bus.replica(0).feed) == 1
    seen, gaps, _ = follow(bus.events_of(watch), 0)
    assert [k for _, k, _, _ in seen] == ["a"] and gaps == 0


def test_a_malformed_vigia_is_answered_and_the_next_request_handled() -> None:
    bus = Bus.fresh(N)
    bus.publish_raw(b'{"tipomsg":"vigia","prefixo":"a","topico-resp":"client/1","idpedido":99')
    bus.publish_raw(b'{"tipomsg":"vigia","prefixo":"a","topico-resp":"client/1","idpedido":98}')
    bus.run()
    assert "concessao" in (bus.answer(98).erro or "")
    assert bus.answer(bus.put("k", "v")).status == "ok"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('"prefixo":"a","desde":-1,"concessao":"w"', "greater than or equal to 0"),
        ('"prefixo":"a","desde":"7","concessao":"w"', "valid integer"),
        ('"prefixo":"a","desde":1.5,"concessao":"w"', "valid integer"),
        ('"prefixo":7,"concessao":"w"', "valid string"),
        ('"prefixo":"a"', "concessao"),
        ('"prefixo":"a","concessao":"nope"', "unknown or has ended"),
    ],
)
def test_bad_vigias_are_refused_with_a_reason(body: str, reason: str) -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    bus.publish_raw(
        b'{"tipomsg":"vigia",' + body.encode() + b',"topico-resp":"client/1","idpedido":99}'
    )
    bus.run()
    answer = bus.answer(99)
    assert answer.status == "erro" and reason in (answer.erro or "")
    assert bus.watches() == [{}] * N
    assert bus.answer(bus.put("k", "v")).status == "ok"


def test_watches_beyond_the_limit_of_one_topic_are_refused() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    for _ in range(MAX_WATCHES_PER_TOPIC):
        bus.publish(bus_vigia(bus))
    bus.run()
    refused = bus.watch("w", "x")
    assert "too many watches" in (bus.answer(refused).erro or "")
    assert len(bus.replica(0).feed) == MAX_WATCHES_PER_TOPIC
    other = bus.watch("w", "x", topic="another/client")
    assert bus.answer(other, "another/client").status == "ok"


def bus_vigia(bus: Bus) -> Vigia:
    return Vigia(prefixo="", concessao="w", topico_resp=CLIENT_TOPIC, idpedido=bus._fresh_id())


def test_a_watch_whose_topic_cannot_be_answered_is_not_registered() -> None:
    bus = Bus.fresh(N)
    bus.grant("w", 600)
    bus.watch("w", "", topic="bad/+/topic")
    assert bus.watches() == [{}] * N
    assert bus.answer(bus.put("k", "v")).status == "ok"


def test_the_feed_is_handed_to_the_disk_and_read_back_after_a_stop(tmp_path: Path) -> None:
    bus = Bus.fresh(N, durable=True)
    bus.grant("w", 600)
    bus.watch("w", "a", since=0)
    bus.put("a1", "1")
    bus.put("b1", "x")
    bus.start_joining(2)  # a whole-state write (its join) must carry the feed too
    bus.put("a2", "2")
    for replica_id in range(N):
        back = bus.read_back(replica_id, tmp_path)
        assert [(c.key, c.value) for c in back.history] == [("a1", "1"), ("b1", "x"), ("a2", "2")]
        replica = Replica.recovered(bus.config(replica_id), incarnation="again", disk=back)
        assert replica.feed.agreed() == bus.replica(0).feed.agreed()
