"""The checker must accept what is linearizable and reject what is not: hand-made histories,
the classic anomalies among them."""

from __future__ import annotations

import itertools
import math
import random

from kvclient.linearizability import Operation, check, check_register


def put(value: str, call: float, ret: float, client: int = 0, key: str = "k") -> Operation:
    return Operation(client, "put", key, value, call, ret)


def get(value: str | None, call: float, ret: float, client: int = 1, key: str = "k") -> Operation:
    return Operation(client, "get", key, value, call, ret)


def unknown_put(value: str, call: float, client: int = 0) -> Operation:
    return Operation(client, "put", "k", value, call, math.inf, "unknown")


def test_a_sequential_history_is_linearizable() -> None:
    assert check_register([put("a", 0, 1), get("a", 2, 3), put("b", 4, 5), get("b", 6, 7)])


def test_reading_a_never_written_key_finds_nothing() -> None:
    assert check_register([get(None, 0, 1)])
    assert not check_register([get("ghost", 0, 1)])


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    base = [put("old", 0, 1)]
    assert check_register([*base, put("new", 2, 6), get("old", 3, 4)])
    assert check_register([*base, put("new", 2, 6), get("new", 3, 4)])


def test_stale_read_is_rejected() -> None:
    # The write of "new" completed before the read began, yet the read saw "old".
    assert not check_register([put("old", 0, 1), put("new", 2, 3), get("old", 4, 5)])


def test_lost_write_is_rejected() -> None:
    # An acknowledged write that a later read does not see at all.
    assert not check_register([put("a", 0, 1), get(None, 2, 3)])


def test_reads_must_agree_on_the_order_of_concurrent_writes() -> None:
    writes = [put("1", 0, 10, client=0), put("2", 0, 10, client=1)]
    assert check_register([*writes, get("2", 11, 12), get("2", 13, 14)])
    # Once both writes are over, the register holds one of them for good.
    assert not check_register([*writes, get("1", 11, 12), get("2", 13, 14)])
    # During them, a reader may see 1 then 2, but not 2, 1, 2, 1.
    assert check_register([*writes, get("1", 1, 2), get("2", 3, 4)])
    assert not check_register(
        [*writes, get("2", 1, 2), get("1", 3, 4), get("2", 5, 6), get("1", 7, 8)]
    )


def test_concurrent_readers_may_not_see_values_go_backwards() -> None:
    history = [
        put("1", 0, 1),
        put("2", 2, 20, client=2),
        get("2", 3, 4, client=3),
        get("1", 5, 6, client=4),  # after a read already saw "2"
    ]
    assert not check_register(history)


def test_a_write_of_unknown_outcome_may_or_may_not_have_happened() -> None:
    assert check_register([put("a", 0, 1), unknown_put("b", 2), get("a", 3, 4)])
    assert check_register([put("a", 0, 1), unknown_put("b", 2), get("b", 3, 4)])
    assert check_register([put("a", 0, 1), unknown_put("b", 2), get("b", 3, 4), get("b", 5, 6)])
    assert not check_register([put("a", 0, 1), unknown_put("b", 2), get("b", 3, 4), get("a", 5, 6)])
    # ...but not before it was called.
    assert not check_register([put("a", 0, 1), get("b", 2, 3), unknown_put("b", 4)])


def test_failed_operations_and_unknown_reads_are_left_out() -> None:
    failed = Operation(0, "put", "k", "x", 0, 1, "fail")
    lost_read = Operation(1, "get", "k", "whatever", 2, math.inf, "unknown")
    assert check_register([failed, lost_read, get(None, 3, 4)])


def test_keys_are_checked_independently() -> None:
    verdict = check(
        [
            put("a", 0, 1, key="x"),
            get("a", 2, 3, key="x"),
            put("b", 0, 1, key="y"),
            get("stale", 2, 3, key="y"),
        ]
    )
    assert verdict.bad_keys == ["y"]
    assert verdict.keys == 2
    assert not verdict.linearizable


def test_a_long_concurrent_history_of_a_correct_register_is_accepted() -> None:
    """Simulate a real register with three clients and overlapping operations."""
    rng = random.Random(7)
    ops: list[Operation] = []
    value: str | None = None
    clock = 0.0
    busy_until = [0.0, 0.0, 0.0]
    for step in range(3000):
        client = rng.randrange(3)
        call = max(clock, busy_until[client]) + rng.random()
        effect = call + rng.random()  # the instant the register changes or is read
        ret = effect + rng.random() * 3
        clock = effect
        if rng.random() < 0.5:
            value = f"v{step}"
            ops.append(Operation(client, "put", "k", value, call, ret))
        else:
            ops.append(Operation(client, "get", "k", value, call, ret))
        busy_until[client] = ret
    ops.sort(key=lambda op: op.call)
    # Effects happen in call order here, so the history is linearizable by construction.
    assert check_register(ops)
    broken = list(ops)
    first_get = next(i for i, op in enumerate(broken) if op.kind == "get" and op.value)
    victim = broken[first_get]
    broken[first_get] = Operation(
        victim.client, "get", "k", "never-written", victim.call, victim.ret
    )
    assert not check_register(broken)
    # A stale read, which only the search can reject: a value that was written, but then
    # overwritten by a put that completed before the read began.
    puts = [op for op in ops if op.kind == "put"]
    i, old = next(
        (i, old)
        for i, get in enumerate(ops)
        if get.kind == "get" and i > len(ops) // 2
        for old, newer in itertools.pairwise(puts)
        if old.ret < newer.call and newer.ret < get.call and get.value != old.value
    )
    stale = list(ops)
    stale[i] = Operation(ops[i].client, "get", "k", old.value, ops[i].call, ops[i].ret)
    assert not check_register(stale)


def delete(found: bool, call: float, ret: float, client: int = 2) -> Operation:
    return Operation(client, "delete", "k", None, call, ret, applied=found)


def cas(
    expected: str | None,
    new: str,
    call: float,
    ret: float,
    applied: bool = True,
    observed: str | None = None,
    client: int = 3,
) -> Operation:
    return Operation(
        client, "cas", "k", new, call, ret, applied=applied, expected=expected, observed=observed
    )


def test_a_delete_finds_the_key_only_if_it_holds_a_value() -> None:
    assert check_register([put("a", 0, 1), delete(True, 2, 3), get(None, 4, 5)])
    assert check_register([delete(False, 0, 1), put("a", 2, 3), delete(True, 4, 5)])
    assert not check_register([put("a", 0, 1), delete(False, 2, 3)])  # it was there
    assert not check_register([put("a", 0, 1), delete(True, 2, 3), get("a", 4, 5)])
    assert not check_register([put("a", 0, 1), delete(True, 2, 3), delete(True, 4, 5)])


def test_compare_and_set_applies_only_on_the_value_expected() -> None:
    assert check_register([cas(None, "a", 0, 1), cas("a", "b", 2, 3), get("b", 4, 5)])
    assert check_register([put("a", 0, 1), cas(None, "x", 2, 3, applied=False, observed="a")])
    # Two clients read "a" and both try to move it on: only one may win.
    two = [put("a", 0, 1), cas("a", "b", 2, 5, client=3), cas("a", "c", 3, 6, client=4)]
    assert not check_register(two)
    lost = [put("a", 0, 1), cas("a", "b", 2, 5), cas("a", "c", 3, 6, False, "b", client=4)]
    assert check_register(lost)
    # A loss that reports a value the key never held then is wrong; so is a loss on a match.
    assert not check_register([put("a", 0, 1), cas("a", "b", 2, 3, applied=False, observed="a")])
    assert not check_register([put("a", 0, 1), cas("z", "b", 2, 3, applied=False, observed="q")])


def test_writes_of_unknown_outcome_may_or_may_not_have_happened() -> None:
    gone = Operation(2, "delete", "k", None, 2, math.inf, "unknown")
    assert check_register([put("a", 0, 1), gone, get("a", 3, 4), get(None, 5, 6)])
    maybe = Operation(3, "cas", "k", "b", 2, math.inf, "unknown", expected="a")
    assert check_register([put("a", 0, 1), maybe, get("a", 3, 4)])
    assert check_register([put("a", 0, 1), maybe, get("b", 3, 4)])
    assert not check_register([put("a", 0, 1), maybe, get("b", 3, 4), get("a", 5, 6)])
