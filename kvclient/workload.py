"""A load of puts and gets from several clients, recorded as a history (invoke, then ok,
fail or unknown, with monotonic times, as Jepsen records them), and the report a user of a
replicated store wants at the end: was every request answered, was any acknowledged write
lost, is the history linearizable."""

from __future__ import annotations

import contextlib
import math
import random
import secrets
import threading
import time
from dataclasses import dataclass, field

from kvclient.client import KVClient
from kvclient.linearizability import Kind, Operation, Outcome, Verdict, check
from kvclient.operations import Delete, Get, Put
from kvwire.access import Access
from kvwire.errors import KVError, RequestTimeout


@dataclass
class Report:
    operations: int
    ok: int
    failed: int
    unknown: int
    lost: list[tuple[str, str | None, list[str | None]]]
    verdict: Verdict
    #: Why client threads stopped before the end (a KVError each), if any did.
    stopped: list[str] = field(default_factory=list)
    #: The keys the load used.
    keys: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        found = []
        if self.unknown:
            found.append(f"{self.unknown} requests got no answer before their deadline")
        if self.failed:  # the load sends nothing malformed: any `erro` is the cluster's fault
            found.append(f"{self.failed} requests were answered with an error")
        found += [f"a client stopped: {why}" for why in self.stopped]
        for key, value, expected in self.lost:
            found.append(f"key {key!r} holds {value!r}; an acknowledged write left {expected!r}")
        if not self.verdict.linearizable:
            found.append(f"not linearizable on keys {self.verdict.bad_keys}")
        return found

    def render(self) -> str:
        lines = [
            f"operations: {self.operations} (ok {self.ok}, failed {self.failed}, "
            f"unknown {self.unknown})",
            f"acknowledged writes lost: {len(self.lost)}",
            f"linearizable: {'yes' if self.verdict.linearizable else 'NO'} "
            f"({self.verdict.keys} keys checked: {', '.join(self.keys)})",
        ]
        lines += [f"problem: {p}" for p in self.problems()]
        return "\n".join(lines)


@dataclass
class Workload:
    broker: str | None
    clients: int = 3
    keys: int = 8
    timeout: float = 10.0
    get_ratio: float = 0.5
    #: Shares of deletes and of compare-and-sets (a read of the key's revision, then a put
    #: with `if_revision`); puts take what is left.
    delete_ratio: float = 0.0
    cas_ratio: float = 0.0
    seed: int | None = None
    #: Credentials and TLS; None: from the environment, as `KVClient`.
    access: Access | None = None
    #: One `KVClient` for every client thread: their requests in flight at once go out in
    #: batches (protocol §21), as a multi-threaded program's do. Else one each.
    shared: bool = False
    history: list[Operation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _errors: list[str] = field(default_factory=list)
    #: In every value written, so that no value of an earlier run is taken for one of ours.
    _token: str = field(default_factory=lambda: secrets.token_hex(3))
    _shared_client: KVClient | None = None

    def key_names(self) -> list[str]:
        return [f"load-{i}" for i in range(self.keys)]

    def start(self) -> Workload:
        """Read what the keys hold now, then start the clients. A key's history starts from
        that value, written before the load began: keys left by an earlier run are not a
        history that starts from nothing (a read of an old value is no anomaly)."""
        with KVClient(
            self.broker, timeout=self.timeout, retry_interval=0.5, access=self.access
        ) as kv:
            for key in self.key_names():
                called = time.monotonic()
                value = kv.request(Get(key)).valor
                if value is not None:
                    before = Operation(-2, "put", key, value, called, time.monotonic())
                    self.history.append(before)
        self._shared_client = (
            KVClient(self.broker, timeout=self.timeout, retry_interval=0.5, access=self.access)
            if self.shared
            else None
        )
        for client in range(self.clients):
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __enter__(self) -> Workload:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 10)
        if self._shared_client is not None:
            self._shared_client.close()

    def completed(self) -> int:
        with self._lock:
            return len(self.history)

    def wait_for_more(self, count: int, timeout: float = 30.0) -> None:
        target = self.completed() + count
        deadline = time.monotonic() + timeout
        while self.completed() < target:
            if self._errors:
                raise KVError(self._errors[0])
            if time.monotonic() > deadline:
                raise AssertionError(f"the load stalled: {self.completed()} of {target} ops")
            time.sleep(0.02)

    def _run(self, client: int) -> None:
        rng = random.Random(None if self.seed is None else self.seed + client)
        names = self.key_names()
        try:
            with (
                contextlib.nullcontext(self._shared_client)
                if self._shared_client is not None
                else KVClient(
                    self.broker, timeout=self.timeout, retry_interval=0.5, access=self.access
                )
            ) as kv:
                step = 0
                while not self._stop.is_set():
                    key = rng.choice(names)
                    draw = rng.random() - self.get_ratio
                    if draw < 0:
                        self._call(kv, client, "get", key, None)
                    elif draw < self.delete_ratio:
                        self._call(kv, client, "delete", key, None)
                    elif draw < self.delete_ratio + self.cas_ratio:
                        self._compare_and_set(kv, client, key, f"{self._token}:{client}:{step}")
                    else:
                        self._call(kv, client, "put", key, f"{self._token}:{client}:{step}")
                    step += 1
        except KVError as exc:
            self._errors.append(str(exc))

    def _call(self, kv: KVClient, client: int, kind: Kind, key: str, value: str | None) -> None:
        called = time.monotonic()
        outcome: Outcome = "ok"
        applied = True
        try:
            if kind == "delete":
                answer = kv.request(Delete(key))
                applied = answer.status == "ok"
            else:
                answer = kv.request(Get(key) if value is None else Put(key, value))
            if answer.status == "erro":
                outcome = "fail"
            elif kind == "get":
                value = answer.valor
        except RequestTimeout:
            outcome = "unknown"
        returned = time.monotonic() if outcome != "unknown" else math.inf
        with self._lock:
            self.history.append(
                Operation(client, kind, key, value, called, returned, outcome, applied)
            )

    def _compare_and_set(self, kv: KVClient, client: int, key: str, value: str) -> None:
        """Read the key's value and revision (a get of the history), then write `value` only
        if the key is still at that revision."""
        called = time.monotonic()
        try:
            read = kv.request(Get(key))
        except RequestTimeout:
            return
        with self._lock:
            self.history.append(Operation(client, "get", key, read.valor, called, time.monotonic()))
        called = time.monotonic()
        outcome: Outcome = "ok"
        answer = None
        try:
            answer = kv.request(Put(key, value, read.revisao or 0))
            if answer.status == "erro":
                outcome = "fail"
        except RequestTimeout:
            outcome = "unknown"
        returned = time.monotonic() if outcome != "unknown" else math.inf
        applied = answer is not None and answer.status == "ok"
        observed = answer.valor if answer is not None and not applied else None
        op = Operation(
            client, "cas", key, value, called, returned, outcome, applied, read.valor, observed
        )
        with self._lock:
            self.history.append(op)

    def report(self) -> Report:
        """Stop the load, read every key back (into the history) and judge the whole history.
        Read back while clients still write, a key's final value could be older than a write
        acknowledged after it was read: a lost write that was not."""
        self.stop()
        with KVClient(
            self.broker, timeout=self.timeout, retry_interval=0.5, access=self.access
        ) as kv:
            final = {}
            for key in self.key_names():
                called = time.monotonic()
                answer = kv.request(Get(key))
                final[key] = answer.valor
                self.history.append(
                    Operation(-1, "get", key, answer.valor, called, time.monotonic())
                )
        ops = self.history
        return Report(
            operations=len(ops),
            ok=sum(op.outcome == "ok" for op in ops),
            failed=sum(op.outcome == "fail" for op in ops),
            unknown=sum(op.outcome == "unknown" for op in ops),
            lost=lost_writes(ops, final),
            verdict=check(ops),
            stopped=list(self._errors),
            keys=self.key_names(),
        )


def _changed(op: Operation) -> bool:
    """A write that took effect, or may have: a put, a delete that found its key, a
    compare-and-set that applied; in doubt (timed out), any of them."""
    if op.outcome == "fail" or op.kind == "get":
        return False
    return op.kind == "put" or op.outcome == "unknown" or op.applied


def lost_writes(
    history: list[Operation], final: dict[str, str | None]
) -> list[tuple[str, str | None, list[str | None]]]:
    """Keys whose final value is not one a surviving write could have left: the value of a
    write (acknowledged or in doubt; None for a delete) that no acknowledged write followed
    strictly after."""
    lost = []
    puts_by_key: dict[str, list[Operation]] = {}
    for op in history:
        if _changed(op):
            puts_by_key.setdefault(op.key, []).append(op)
    for key, value in final.items():
        puts = puts_by_key.get(key, [])
        acked = sorted((op for op in puts if op.outcome == "ok"), key=lambda op: op.call)
        if not acked:
            continue
        latest = acked[-1]
        runner_up = acked[-2] if len(acked) > 1 else None

        def followed(
            p: Operation, latest: Operation = latest, runner_up: Operation | None = runner_up
        ) -> bool:
            later = runner_up if p is latest else latest
            return later is not None and later.call > p.ret

        candidates = [p.value for p in puts if not followed(p)]
        if value not in candidates:
            lost.append((key, value, candidates))
    return lost


def run_for(workload: Workload, seconds: float) -> Report:
    """`kvclient load`: the load for `seconds`, with its progress on standard error (a bar
    on a terminal), then its report, once the clients have stopped."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("load"), BarColumn(), TextColumn("{task.fields[ops]} operations"),
        TimeRemainingColumn(),
    )  # fmt: skip
    with workload, Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("load", total=seconds, ops=0)
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            bar.update(task, completed=elapsed, ops=workload.completed())
            time.sleep(0.2)
    return workload.report()
