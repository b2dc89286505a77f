"""`KVClient.watch`: the change feed (protocol §19) as an iterator of changes, with no gap and
no duplicate across failures.

The watch is registered in the stream under a lease this object keeps alive. What it hands on
is decided by `kvclient.cursor.Cursor` from the events' revisions; when the cursor sees a gap,
the watch's end, or nothing at all for a long while (a broker or a whole cluster restarted),
a new watch is registered from the last revision seen, and the old one cancelled. Without a
starting revision, the current values come first: the keys listed at one position, read, then
the feed from that position, each key's changes after the value shown.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Protocol

from kvclient.cursor import Change, Cursor
from kvclient.leases import Lease, new_lease_name
from kvclient.operations import Asks, Get, Grant, List, Operation, Unwatch, Watch, checked
from kvwire.errors import Compacted, KVError, RequestTimeout, ServerError
from kvwire.feed import Evento
from kvwire.messages import Resposta
from kvwire.mqtt import Closing

#: How long a watch may hear nothing (no event, no progress note) before it is registered
#: again: a few of the owner's progress rounds (2 s each), and a failover.
SILENCE_S = 10.0
#: Reads in flight while the current values are read.
_READS_IN_FLIGHT = 64


class Watches(Asks, Protocol):
    """What a watch needs of a client (`KVClient` is one): to send a `vigia` with a handler
    for its events, and to stop handing them on."""

    def submit(self, operation: Operation) -> Future[Resposta]: ...
    def submit_watch(
        self, operation: Operation, events: Callable[[Evento], None]
    ) -> tuple[int, Future[Resposta]]: ...
    def wait(self, future: Future[Resposta]) -> Resposta: ...
    def unwatch(self, rid: int | str) -> None: ...


class FeedWatch(Closing):
    """A watch of the keys starting with `prefix`; iterate it for `Change`s (`get` waits a
    bounded time). Made by `KVClient.watch`."""

    def __init__(
        self,
        client: Watches,
        prefix: str,
        from_revision: int | None,
        *,
        lease_ttl: int = 10,
        silence: float = SILENCE_S,
    ) -> None:
        self.prefix, self.lease_ttl, self.silence = prefix, lease_ttl, silence
        self._client = client
        self._events: queue.Queue[Evento] = queue.Queue()
        self._ready: deque[Change] = deque()
        self._closed = threading.Event()
        self._lease: Lease | None = None
        self._rid: int | None = None
        #: Without a starting revision: each key read, with the revision of the value shown.
        self._shown: dict[str, int] = {}
        #: How many times the watch was registered again (a gap, its end, a long silence).
        self.restarts = 0
        try:
            since = self._read_current() if from_revision is None else from_revision
            self.cursor = Cursor(since)
            self._register()
        except BaseException:
            self.close()
            raise
        self._heard = time.monotonic()

    # --- what the user reads --------------------------------------------------------------

    def __iter__(self) -> Iterator[Change]:
        while True:
            change = self.get(timeout=None)
            if change is None:
                return
            yield change

    def get(self, timeout: float | None = 1.0) -> Change | None:
        """The next change; None when `timeout` s pass without one, or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed.is_set():
            if self._ready:
                return self._ready.popleft()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = 0.25 if deadline is None else min(0.25, deadline - now)
            try:
                event = self._events.get(timeout=wait)
            except queue.Empty:
                if time.monotonic() - self._heard > self.silence:
                    self._again()
                continue
            if event.idpedido == self._rid:
                self._take(event)
        return None

    def _take(self, event: Evento) -> None:
        self._heard = time.monotonic()
        verdict, changes = self.cursor.take(event)
        if verdict == "new":
            shown = self._shown
            # A key read with the current values: its changes after the value shown.
            self._ready.extend(c for c in changes if c.revision > shown.get(c.key, 0))
            if shown and self.cursor.last >= max(shown.values()):
                shown.clear()
        elif verdict != "seen":  # a gap, or the watch ended: again from what we have seen
            self._again()

    # --- registering ----------------------------------------------------------------------

    def _read_current(self) -> int:
        """Read every matching key's value into the queue; the listing's first position."""
        client, after, position = self._client, None, None
        keys: list[str] = []
        while True:
            answer = checked(client.request(List(self.prefix, after, 10_000)))
            position = answer.posicao if position is None else position
            found = answer.chaves or []
            keys.extend(found)
            if not answer.mais or not found:
                break
            after = found[-1]
        for start in range(0, len(keys), _READS_IN_FLIGHT):
            batch = keys[start : start + _READS_IN_FLIGHT]
            for key, future in [(k, client.submit(Get(k))) for k in batch]:
                read = client.wait(future)
                if read.status == "ok" and read.revisao is not None:
                    self._shown[key] = read.revisao
                    self._ready.append(Change(read.revisao, key, "insercao", read.valor))
        return position or 0

    def _again(self) -> None:
        self.restarts += 1
        self._register()

    def _register(self) -> None:
        """A new watch from `cursor.last`, until one is registered (the cluster may be down
        for a while); then the old one is cancelled."""
        client, old = self._client, self._rid
        while not self._closed.is_set():
            try:
                lease = self._live_lease()
                operation = Watch(self.prefix, self.cursor.last, lease.name)
                rid, future = client.submit_watch(operation, self._events.put)
            except RequestTimeout:
                continue  # the cluster is away: ask again
            try:
                answer = client.wait(future)
            except RequestTimeout:
                client.unwatch(rid)
                continue
            if answer.status == "ok":
                self._rid = rid
                break
            client.unwatch(rid)
            if answer.status == "compactada":
                raise Compacted(self.cursor.last, answer.revisao or 0)
            if "lease" in (answer.erro or ""):
                self._drop_lease()  # it ended while we were away: a new one
                continue
            raise ServerError(f"replica {answer.idserv} refused the watch: {answer.erro}")
        self._heard = time.monotonic()
        if old is not None:
            client.unwatch(old)
            with contextlib.suppress(KVError):
                client.submit(Unwatch(old))  # not waited for: its lease ends it anyway

    def _live_lease(self) -> Lease:
        if self._lease is not None and self._lease.lost.is_set():
            self._drop_lease()
        if self._lease is None:
            name = new_lease_name()
            checked(self._client.request(Grant(name, self.lease_ttl)))
            self._lease = Lease(self._client, name, self.lease_ttl)
        return self._lease

    def _drop_lease(self) -> None:
        if self._lease is not None:
            self._lease.close(revoke=False)
            self._lease = None

    def close(self) -> None:
        """End the watch: its lease is revoked, which ends it on the replicas."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._rid is not None:
            self._client.unwatch(self._rid)
        if self._lease is not None:
            self._lease.close()
