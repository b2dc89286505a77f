"""The request log and the de-duplication set, on their own."""

from __future__ import annotations

import gc

from kvserver.history import RequestLog, SeenSet
from kvwire.messages import LoggedRequest


def test_the_seen_set_keeps_the_last_writes_by_arrival() -> None:
    seen = SeenSet(3)
    for rid in range(5):
        seen.add(("t", rid))
    assert [("t", 1) in seen, ("t", 2) in seen, ("t", 4) in seen] == [False, True, True]
    assert len(seen) == 3
    # A write seen again keeps its place: every replica evicts the same entry next.
    seen.add(("t", 2))
    seen.add(("t", 5))
    assert seen.snapshot() == [("t", 3), ("t", 4), ("t", 5)]


def test_a_transferred_seen_set_evicts_in_the_senders_order() -> None:
    sender = SeenSet(4, [("a", 1), ("b", 1), ("a", 2)])
    joiner = SeenSet(4, sender.snapshot())
    for replica in (sender, joiner):
        replica.add(("c", 1))
        replica.add(("c", 2))
    assert joiner.snapshot() == sender.snapshot() == [("b", 1), ("a", 2), ("c", 1), ("c", 2)]


def test_the_log_replays_from_a_time_and_forgets_after_its_ttl() -> None:
    log = RequestLog(10.0)
    for at in (1.0, 2.0, 3.0, 12.5):
        log.append(LoggedRequest(at, "c", f"k{at}", "t", 1, None))
    assert [entry.at for entry in log.since(2.5)] == [3.0, 12.5]
    log.expire(now=12.5)
    assert [entry.at for entry in log.since(0.0)] == [3.0, 12.5]


def test_the_log_hands_out_what_was_logged_and_holds_nothing_the_collector_walks() -> None:
    log = RequestLog(10.0)
    write = LoggedRequest(1.0, "i", "k", "t", 7, "v", "conflito", 3)
    log.append(write)
    log.append_read(2.0, "k", "t", 8)
    assert log.snapshot() == [write, LoggedRequest(2.0, "c", "k", "t", 8, None)]
    assert all(isinstance(entry, LoggedRequest) for entry in log.since(0.0))
    found = log.find("t", 7)
    assert found == write and found is not None and found.status == "conflito"
    assert log.find("t", "7") is None  # an id is its JSON type: 7 is not "7"
    assert log.written_keys() == {"k"}
    # 10 s of requests are held: the collector stops tracking plain tuples of strings and
    # numbers once it has seen them, never a NamedTuple (issue 16).
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in log._entries)
