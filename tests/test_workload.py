"""The lost-write check of the load report, on hand-made histories."""

from __future__ import annotations

import math

from kvclient.linearizability import Operation
from kvclient.workload import lost_writes


def put(value: str, call: float, ret: float, outcome: str = "ok") -> Operation:
    return Operation(0, "put", "k", value, call, ret, outcome)  # type: ignore[arg-type]


def test_the_last_acknowledged_write_must_survive() -> None:
    history = [put("a", 0, 1), put("b", 2, 3)]
    assert lost_writes(history, {"k": "b"}) == []
    assert lost_writes(history, {"k": "a"}) == [("k", "a", ["b"])]
    assert lost_writes(history, {"k": None}) == [("k", None, ["b"])]


def test_concurrent_or_doubtful_writes_may_be_the_last() -> None:
    history = [put("a", 0, 5), put("b", 1, 4), put("c", 6, math.inf, "unknown")]
    assert lost_writes(history, {"k": "a"}) == []
    assert lost_writes(history, {"k": "b"}) == []
    assert lost_writes(history, {"k": "c"}) == []
