"""`KVClient`'s rule for when requests go and in which message (`kvclient.batching`), with
fake time: one at a time never waits; while a message is on its way they wait, and go together
once its last answer is in, or when the batch is full."""

from __future__ import annotations

from concurrent.futures import Future

from kvclient.batching import Outbox, Pending


def pending(size: int = 10) -> Pending:
    return Pending(Future(), b"x" * size, deadline=100.0, next_send=1.0)


def outbox(**options: float) -> Outbox:
    settings = {"max_batch": 4, "max_bytes": 1000, "max_in_flight": 1, "linger": 0.0} | options
    return Outbox(**settings)  # type: ignore[arg-type]


def test_a_request_with_a_free_slot_goes_at_once_alone() -> None:
    box = outbox()
    first = pending()
    assert box.alone(first) and box.out == 1
    assert not box.alone(pending())  # the slot is taken: the next one waits


def test_requests_wait_for_the_message_on_its_way_then_go_together() -> None:
    box = outbox(max_batch=10)
    first = pending()
    assert box.alone(first)
    waiting = [pending() for _ in range(3)]
    for p in waiting:
        box.add(p, now=0.0)
    assert not box.may_send(0.0)
    box.landed(first)
    assert box.out == 0 and box.may_send(0.0)
    taken = box.take(0.0)
    assert taken == waiting and box.out == 1 and not box.items
    # The slot frees only with the last answer of that message.
    box.landed(taken[0])
    box.landed(taken[1])
    box.add(pending(), 0.0)
    assert not box.may_send(0.0)
    box.landed(taken[2])
    assert box.may_send(0.0)
    box.landed(taken[2])  # a duplicate answer frees nothing more
    assert box.out == 0


def test_a_full_batch_goes_whatever_is_on_its_way_and_a_message_holds_at_most_one_batch() -> None:
    box = outbox(max_batch=3, max_bytes=25)
    assert box.alone(pending())
    for _ in range(2):
        box.add(pending(), 0.0)
    assert not box.may_send(0.0)
    box.add(pending(), 0.0)
    assert box.full() and box.may_send(0.0)
    assert len(box.take(0.0)) == 2  # 3 of 10 bytes would pass 25
    assert len(box.take(0.0)) == 1 and not box.items


def test_linger_holds_a_batch_until_it_has_waited_that_long() -> None:
    box = outbox(linger=0.005)
    first = pending()
    assert not box.alone(first)  # with linger nothing goes alone at once
    box.add(first, now=1.0)
    assert not box.may_send(1.001)
    assert box.may_send(1.006)


def test_given_up_requests_free_their_slot_too() -> None:
    box = outbox()
    first = pending()
    assert box.alone(first)
    box.landed(first)  # the client gave up on it (its deadline passed)
    assert box.alone(pending())
