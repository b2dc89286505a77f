"""Two things users build on leases (protocol §18), as etcd's `concurrency` package does: a
lock and a leader election. Both hold a session-bound lease, so a holder whose process dies
lets go when the broker sees it go, and both wait on the value mirror (§14), not by polling.

A lock is one key created only if absent (`--if-absent`) under the holder's lease; its
revision is a fencing token: a resource that remembers the highest token it has seen can
refuse a holder that lost the lock without knowing. A waiter retries once the key is
deleted, and also every TTL in case the mirror is off.

An election: each candidate puts `NAME/<its lease>` under its lease; the candidate whose key
has the lowest revision leads. Each one follows the keys under `NAME/` on the mirror; a
leader's key ends with its lease, and the next lowest leads.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import TYPE_CHECKING, Protocol

from kvclient.leases import Lease
from kvclient.watch import DEFAULT_MIRROR, MirrorWatch
from kvwire.access import Access
from kvwire.errors import Conflict, KeyNotFound, ServerError

if TYPE_CHECKING:
    from types import TracebackType


class SessionClient(Protocol):
    """What a lock and an election need of a client (`KVClient` is one): its broker, to
    follow the mirror, its lease bound to the connection, and puts and deletes."""

    broker: str | None
    access: Access
    session: Lease | None

    def put(
        self, key: str, value: str, *, if_revision: int | None = None, lease: str | None = None
    ) -> int: ...

    def delete(self, key: str, *, if_revision: int | None = None) -> int: ...


class Lock:
    """`with Lock(kv, "jobs/nightly") as token:` runs the block holding the lock; `kv` must
    have a session lease (`KVClient(session_lease=TTL)`)."""

    def __init__(self, kv: SessionClient, name: str, *, mirror: str = DEFAULT_MIRROR) -> None:
        if kv.session is None:
            raise ServerError("a lock needs a client with a session lease (session_lease=TTL)")
        self.kv, self.name, self.mirror = kv, name, mirror
        #: The lock key's revision while held: a fencing token.
        self.revision: int | None = None

    def acquire(self, timeout: float | None = None) -> int:
        """Wait until the lock is ours; its fencing token. TimeoutError after `timeout` s."""
        session = self.kv.session
        assert session is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        retry = max(session.ttl, 1)
        with MirrorWatch(
            self.kv.broker, self.name, mirror=self.mirror, access=self.kv.access, exact=True
        ) as watch:
            while True:
                try:
                    self.revision = self.kv.put(
                        self.name, session.name, if_revision=0, lease=session.name
                    )
                    return self.revision
                except Conflict:
                    pass
                wait = retry if deadline is None else min(retry, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"lock {self.name} not acquired within {timeout:g} s")
                _until_deleted(watch, wait)

    def release(self) -> None:
        """Let go: the key is deleted, and the next waiter acquires it."""
        revision, self.revision = self.revision, None
        if revision is not None:
            # Only our own key: if our lease ended meanwhile, another holder's is there now.
            with contextlib.suppress(Conflict, KeyNotFound):
                self.kv.delete(self.name, if_revision=revision)

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


def _until_deleted(watch: MirrorWatch, seconds: float) -> None:
    """Until the watched key is deleted, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            change = watch.changes.get(timeout=left)
        except queue.Empty:
            return
        if change.value is None:
            return


class Election:
    """A candidate in the election `name`: `campaign()` returns once it leads; `leading`
    tells whether it still does (a lost lease, a resignation end it)."""

    def __init__(
        self, kv: SessionClient, name: str, value: str, *, mirror: str = DEFAULT_MIRROR
    ) -> None:
        if kv.session is None:
            raise ServerError("an election needs a client with a session lease")
        self.kv, self.value = kv, value
        self.prefix = name.rstrip("/") + "/"
        self.key = self.prefix + kv.session.name
        self._watch = MirrorWatch(kv.broker, self.prefix, mirror=mirror, access=kv.access)
        #: Each candidate's key and revision, as the mirror shows them.
        self.candidates: dict[str, int] = {}
        self.revision: int | None = None
        self._resigned = threading.Event()

    def leader(self) -> str | None:
        """The key of the candidate that leads as far as this one has seen."""
        if not self.candidates:
            return None
        return min(self.candidates, key=self.candidates.__getitem__)

    @property
    def leading(self) -> bool:
        session = self.kv.session
        lost = session is None or session.lost.is_set() or self._resigned.is_set()
        return not lost and self.leader() == self.key

    def campaign(self, timeout: float | None = None) -> None:
        """Stand, and wait until this candidate leads. TimeoutError after `timeout` s."""
        session = self.kv.session
        assert session is not None
        self.revision = self.kv.put(self.key, self.value, lease=session.name)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.leading:
            if session.lost.is_set():
                raise ServerError(f"the lease of {self.key} ended: out of the election")
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"not elected within {timeout:g} s")
            self.follow(left)

    def follow(self, seconds: float) -> None:
        """Take in what the mirror says of the candidates for up to `seconds`."""
        try:
            change = self._watch.changes.get(timeout=seconds)
            while True:
                if change.value is None or change.revision is None:
                    self.candidates.pop(change.key, None)
                else:
                    self.candidates[change.key] = change.revision
                change = self._watch.changes.get_nowait()
        except queue.Empty:
            return

    def resign(self) -> None:
        """Step down: the key goes, and the next candidate leads."""
        if not self._resigned.is_set():
            self._resigned.set()
            with contextlib.suppress(KeyNotFound):
                self.kv.delete(self.key)
        self._watch.close()
