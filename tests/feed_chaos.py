"""The change feed's check under faults (protocol §19), shared by `tests/test_feed_cluster.py`
and `scripts/chaos_feed.py`: writers whose acknowledged changes are the truth, watchers (in
this process, and `kvclient watch` processes) that record what they were handed, and the
verdict: each watcher got exactly the changes after its revision, in order, once each."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from functools import partial
from typing import NamedTuple

from kvclient.client import KVClient
from kvclient.cursor import Change
from kvclient.operations import Delete, Put
from kvwire.messages import Resposta
from tests.cluster import Lines

#: The watched prefix; the writers write as often under `OTHER`, which no watcher sees.
PREFIX, OTHER = "feed/", "other/"


class Seen(NamedTuple):
    revision: int
    key: str
    kind: str
    value: str | None


class ChangeWriter:
    """Keeps `in_flight` writes in flight over a few keys: puts, deletes and compare-and-sets
    (from the last revision it knows of the key), and remembers each acknowledged change."""

    def __init__(self, address: str, name: str, in_flight: int = 64, keys: int = 40) -> None:
        self.acked: list[Seen] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kv = KVClient(address, timeout=60.0, retry_interval=1.0)
        self._name, self._keys = name, keys
        self._known: dict[str, int] = {}
        self._slots = threading.Semaphore(in_flight)
        self._random = random.Random(name)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            i += 1
            under = PREFIX if i % 2 else OTHER
            key = f"{under}{self._name}/{self._random.randrange(self._keys)}"
            roll = self._random.random()
            if roll < 0.2:
                operation: Put | Delete = Delete(key)
            elif roll < 0.4:
                operation = Put(key, f"cas{i}", if_revision=self._known.get(key, 0))
            else:
                operation = Put(key, f"v{i}")
            future = self._kv.submit(operation)
            future.add_done_callback(partial(self._done, operation=operation))

    def _done(self, future: Future[Resposta], *, operation: Put | Delete) -> None:
        self._slots.release()
        if future.cancelled() or future.exception() is not None:
            return
        answer = future.result()
        if answer.status != "ok" or answer.revisao is None:
            self.refused += 1  # a lost compare-and-set, or a delete of a key with no value
            return
        is_put = isinstance(operation, Put)
        seen = Seen(
            answer.revisao,
            operation.key,
            "insercao" if is_put else "remocao",
            operation.value if isinstance(operation, Put) else None,
        )
        with self._lock:
            self.acked.append(seen)
            self._known[operation.key] = answer.revisao if is_put else 0

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._kv.close()


class Watcher:
    """`KVClient.watch` in this process, from `since`, recording what it hands on."""

    def __init__(self, address: str, since: int) -> None:
        self.since = since
        self.seen: list[Seen] = []
        self.error: Exception | None = None
        self._kv = KVClient(address, timeout=10.0, retry_interval=1.0)
        self.topic = self._kv.response_topic
        self._watch = self._kv.watch(PREFIX, since)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                change = self._watch.get(timeout=0.2)
                if change is not None:
                    self.seen.append(_seen(change))
        except Exception as exc:  # said by `state` when the test waits for it in vain
            self.error = exc

    def state(self) -> str:
        """Where it is, for a test that waited for it in vain."""
        said = f", stopped by {self.error!r}" if self.error else ""
        return f"at revision {self.last()} ({self.restarts} restarts{said})"

    @property
    def restarts(self) -> int:
        return self._watch.restarts

    def last(self) -> int:
        return self.seen[-1].revision if self.seen else self.since

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._watch.close()
        self._kv.close()


class CliWatcher:
    """`kvclient watch feed/ --from-revision R --json`, as a person runs it: killed with
    SIGKILL and started again from the last revision it printed."""

    def __init__(self, env: dict[str, str], since: int) -> None:
        self.since = since
        self.seen: list[Seen] = []
        self._env = env
        self._proc: subprocess.Popen[str] | None = None
        self._lines: Lines | None = None
        self._reader: threading.Thread | None = None
        self.start(since)

    def start(self, since: int) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "kvclient", "watch", PREFIX, "--from-revision", str(since),
             "--json"],
            env=self._env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            body = json.loads(line)
            self.seen.append(Seen(body["revisao"], body["chave"], body["tipo"], body["valor"]))

    def last(self) -> int:
        return self.seen[-1].revision if self.seen else self.since

    def state(self) -> str:
        """Where it is, and how it ended if it did, for a test that waited for it in vain."""
        proc = self._proc
        if proc is None or proc.poll() is None:
            return f"at revision {self.last()}"
        assert proc.stderr is not None
        return f"at revision {self.last()}, exited {proc.returncode}: {proc.stderr.read()!r}"

    def kill_and_resume(self) -> None:
        """kill -9, then again from the last revision printed (what its user would do)."""
        self.stop()
        self.start(self.last())

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            if self._reader is not None:
                self._reader.join(5)  # every line printed before the kill is read
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
            self._proc = None

    def close(self) -> None:
        self.stop()


def catch_up(address: str, watchers: Sequence[Watcher | CliWatcher], timeout: float) -> Seen:
    """Write one last change under the prefix once the writers have stopped, and wait until
    every watcher has handed it on; that change. The writers' last acknowledged change may be
    under `OTHER`, which no watcher sees, so it cannot be what they wait for."""
    with KVClient(address, timeout=30.0, retry_interval=1.0) as kv:
        last = kv.put(f"{PREFIX}last", "end")
    deadline = time.monotonic() + timeout
    while any(w.last() < last for w in watchers):
        if time.monotonic() >= deadline:
            states = "; ".join(w.state() for w in watchers)
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for the watchers to reach revision "
                f"{last}: {states}"
            )
        time.sleep(0.02)
    return Seen(last, f"{PREFIX}last", "insercao", "end")


def _seen(change: Change) -> Seen:
    return Seen(change.revision, change.key, change.kind, change.value)


def problems(since: int, seen: list[Seen], acked: Iterable[Seen], upto: int) -> list[str]:
    """What is wrong with what a watcher from `since` was handed, against the acknowledged
    changes up to revision `upto`: a change out of order or twice, or an acknowledged one
    missing or different."""
    found = []
    revisions = [s.revision for s in seen]
    for before, after in itertools.pairwise(revisions):
        if after <= before:
            found.append(f"revision {after} after {before}: out of order or twice")
    if seen and seen[0].revision <= since:
        found.append(f"revision {seen[0].revision} is not after the start, {since}")
    outside = [s for s in seen if not s.key.startswith(PREFIX)]
    if outside:
        found.append(f"{len(outside)} changes outside {PREFIX}: {outside[:3]}")
    by_revision = {s.revision: s for s in seen}
    expected = [a for a in acked if a.key.startswith(PREFIX) and since < a.revision <= upto]
    missing = [a for a in expected if by_revision.get(a.revision) != a]
    if missing:
        got = [by_revision.get(a.revision) for a in missing[:3]]
        found.append(f"{len(missing)} of {len(expected)} acknowledged changes missing or "
                     f"different: {missing[:3]}, got {got}")  # fmt: skip
    return found


def agree(watchers: list[tuple[int, list[Seen]]]) -> list[str]:
    """Watchers of the same prefix (each: its start, what it saw) saw the same changes where
    their ranges overlap."""
    found = []
    for i, (since, one) in enumerate(watchers):
        for other_since, other in watchers[i + 1 :]:
            low = max(since, other_since)
            high = min(one[-1].revision if one else 0, other[-1].revision if other else 0)
            a = [s for s in one if low < s.revision <= high]
            b = [s for s in other if low < s.revision <= high]
            if a != b:
                found.append(f"two watchers differ between revisions {low} and {high}")
    return found
