"""A linearizability checker for a key-value store of registers.

Each key is a register checked on its own (linearizability is compositional: a history is
linearizable if and only if the sub-history of every object is). For one key the search is
Wing and Gong's, with Lowe's memoisation of (operations linearized, register value) as
Porcupine and Knossos do: walk the history in time order, try to linearize each pending call
whose model step succeeds, and backtrack when a return is reached whose call was not
linearized yet.

An operation is a put of a value or a get that observed a value (None: not found). A put
whose outcome is unknown (the client timed out) may have taken effect at any point after its
call, or never: its return is at infinity. A get whose outcome is unknown tells nothing and
is left out, as is any operation that definitely failed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["put", "get"]
Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class Operation:
    client: int
    kind: Kind
    key: str
    value: str | None  # written by a put; observed by a get (None: not found)
    call: float
    ret: float  # math.inf when the outcome is unknown
    outcome: Outcome = "ok"


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
        op for op in ops if op.outcome == "ok" or (op.outcome == "unknown" and op.kind == "put")
    ]
    usable = [
        op
        if op.outcome == "ok"
        else Operation(op.client, op.kind, op.key, op.value, op.call, math.inf, op.outcome)
        for op in usable
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
            op = usable[entry.op]
            if op.kind == "put":
                ok, after = True, op.value
            else:
                ok, after = op.value == state, state
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
