"""A linearizability checker for a key-value store of registers.

Each key is a register checked on its own (linearizability is compositional: a history is
linearizable if and only if the sub-history of every object is). For one key the search is
Wing and Gong's, with Lowe's memoisation of (operations linearized, register value) as
Porcupine and Knossos do: walk the history in time order, try to linearize each pending call
whose model step succeeds, and backtrack when a return is reached whose call was not
linearized yet.

An operation is a put of a value, a get that observed a value (None: not found), a delete
that found the key or not, or a compare-and-set (protocol §13) that expected a value and
applied, or lost and observed the value it lost to. The store compares revisions; the
workload writes every value once, so a revision names one value and the checker compares
values. A write whose outcome is unknown (the client timed out) may have taken effect at any
point after its call, or never: its return is at infinity. A get whose outcome is unknown
tells nothing and is left out, as is any operation that definitely failed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

Kind = Literal["put", "get", "delete", "cas"]
Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class Operation:
    client: int
    kind: Kind
    key: str
    value: str | None  # written by a put or cas; observed by a get (None: not found)
    call: float
    ret: float  # math.inf when the outcome is unknown
    outcome: Outcome = "ok"
    #: A delete: whether it found the key. A cas: whether it applied.
    applied: bool = True
    #: A cas: the value it expected (None: the key absent); when it lost, `observed` is the
    #: value it was told the key had.
    expected: str | None = None
    observed: str | None = None


def step(op: Operation, state: str | None) -> tuple[bool, str | None]:
    """Can `op` take effect on a register holding `state`, and what does it hold after?"""
    unknown = op.outcome == "unknown"
    if op.kind == "put":
        return True, op.value
    if op.kind == "get":
        return op.value == state, state
    if op.kind == "delete":
        if unknown:
            return True, None
        return (state is not None) == op.applied, None
    matches = state == op.expected
    if unknown:
        return True, op.value if matches else state
    if op.applied:
        return matches, op.value
    return not matches and op.observed == state, state


@dataclass
class _Entry:
    op: int
    is_call: bool
    time: float
    match: _Entry | None = None
    prev: _Entry | None = None
    next: _Entry | None = None


def _entries(ops: list[Operation]) -> _Entry:
    """A doubly linked list of call and return entries in time order, behind a sentinel."""
    raw: list[_Entry] = []
    for index, op in enumerate(ops):
        call = _Entry(index, True, op.call)
        ret = _Entry(index, False, op.ret)
        call.match = ret
        raw.extend((call, ret))
    # At equal times calls come first: touching operations count as concurrent.
    raw.sort(key=lambda e: (e.time, not e.is_call))
    head = _Entry(-1, False, -math.inf)
    previous = head
    for entry in raw:
        previous.next = entry
        entry.prev = previous
        previous = entry
    return head


def _lift(entry: _Entry) -> None:
    for node in (entry, entry.match):
        assert node is not None and node.prev is not None
        node.prev.next = node.next
        if node.next is not None:
            node.next.prev = node.prev


def _unlift(entry: _Entry) -> None:
    for node in (entry.match, entry):
        assert node is not None and node.prev is not None
        node.prev.next = node
        if node.next is not None:
            node.next.prev = node


def check_register(ops: list[Operation], initial: str | None = None) -> bool:
    """Is this history of one register linearizable?"""
    usable = [
        op if op.outcome == "ok" else replace(op, ret=math.inf)
        for op in ops
        if op.outcome == "ok" or (op.outcome == "unknown" and op.kind != "get")
    ]
    if not usable:
        return True
    head = _entries(usable)
    state = initial
    linearized = 0
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Entry, str | None]] = []
    entry = head.next
    while head.next is not None:
        if entry is not None and entry.is_call:
            ok, after = step(usable[entry.op], state)
            if ok:
                marked = linearized | (1 << entry.op)
                if (marked, after) not in seen:
                    seen.add((marked, after))
                    stack.append((entry, state))
                    state, linearized = after, marked
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is not linearized yet (or the end): undo the last choice.
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op)
            _unlift(entry)
            entry = entry.next
    return True


@dataclass
class Verdict:
    keys: int
    operations: int
    bad_keys: list[str] = field(default_factory=list)

    @property
    def linearizable(self) -> bool:
        return not self.bad_keys


def check(history: Iterable[Operation]) -> Verdict:
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    verdict = Verdict(keys=len(by_key), operations=sum(len(v) for v in by_key.values()))
    for key, ops in sorted(by_key.items()):
        if not check_register(ops):
            verdict.bad_keys.append(key)
    return verdict
