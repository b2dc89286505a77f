"""A steady load of puts and gets in background threads, with every operation recorded, and
the checks a user of a replicated store makes afterwards."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from kvclient.client import KVClient
from kvwire.errors import KeyNotFound, RequestTimeout

Outcome = Literal["ok", "fail", "unknown"]


@dataclass(frozen=True)
class Op:
    worker: int
    kind: Literal["put", "get"]
    key: str
    value: str | None  # written (put) or read (get)
    invoked: float
    completed: float
    outcome: Outcome
    idserv: int | None = None


@dataclass
class Load:
    address: str
    workers: int = 2
    keys_per_worker: int = 6
    timeout: float = 10.0
    ops: list[Op] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for worker in range(self.workers):
            thread = threading.Thread(target=self._run, args=(worker,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def completed(self) -> int:
        with self._lock:
            return len(self.ops)

    def wait_for_more(self, count: int, timeout: float = 20.0) -> None:
        target = self.completed() + count
        deadline = time.monotonic() + timeout
        while self.completed() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load stalled: {self.completed()} of {target} ops")
            time.sleep(0.02)

    def _record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def _run(self, worker: int) -> None:
        # Each worker owns its keys, so the operations on a key are sequential and a read
        # must return the value of the last acknowledged write (or of a later unknown one).
        keys = [f"w{worker}-k{i}" for i in range(self.keys_per_worker)]
        with KVClient(self.address, timeout=self.timeout, retry_interval=0.5) as kv:
            step = 0
            while not self._stop.is_set():
                key = keys[step % len(keys)]
                value = f"{worker}:{step}"
                self._call(kv, worker, "put", key, value)
                self._call(kv, worker, "get", key, None)
                step += 1

    def _call(
        self, kv: KVClient, worker: int, kind: Literal["put", "get"], key: str, value: str | None
    ) -> None:
        invoked = time.monotonic()
        outcome: Outcome = "ok"
        idserv = None
        try:
            answer = kv.request(key, value)
            idserv = answer.idserv
            if answer.status == "erro":
                outcome = "fail"
            elif kind == "get":
                value = answer.valor
        except RequestTimeout:
            outcome = "unknown"
        except KeyNotFound:  # pragma: no cover - request() does not raise it
            value = None
        self._record(Op(worker, kind, key, value, invoked, time.monotonic(), outcome, idserv))

    # --- checks -------------------------------------------------------------------------

    def unanswered(self) -> list[Op]:
        return [op for op in self.ops if op.outcome != "ok"]

    def stale_reads(self) -> list[tuple[Op, set[str | None]]]:
        """Reads that returned something other than the last acknowledged write to the key
        (or a write still in doubt after it)."""
        bad = []
        allowed: dict[str, set[str | None]] = {}
        for op in sorted(self.ops, key=lambda o: o.invoked):
            if op.kind == "put":
                if op.outcome == "ok":
                    allowed[op.key] = {op.value}
                else:
                    allowed.setdefault(op.key, {None}).add(op.value)
            elif op.outcome == "ok":
                expected = allowed.get(op.key, {None})
                if op.value not in expected:
                    bad.append((op, expected))
        return bad

    def last_acknowledged(self) -> dict[str, set[str | None]]:
        allowed: dict[str, set[str | None]] = {}
        for op in sorted(self.ops, key=lambda o: o.invoked):
            if op.kind != "put":
                continue
            if op.outcome == "ok":
                allowed[op.key] = {op.value}
            else:
                allowed.setdefault(op.key, {None}).add(op.value)
        return allowed

    def lost_writes(self, kv: KVClient) -> list[tuple[str, str | None, set[str | None]]]:
        """Read every key back now: each must hold its last acknowledged value."""
        lost = []
        for key, allowed in self.last_acknowledged().items():
            answer = kv.request(key)
            if answer.valor not in allowed:
                lost.append((key, answer.valor, allowed))
        return lost
