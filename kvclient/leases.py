"""A lease a client holds (protocol §18): granted, kept alive on a timer, revoked at the end.

Keep-alives go every third of the TTL, so that two may be lost (a broker restart, a stalled
network) before the lease ends; one that finds the lease ended sets `lost`, and the holder's
keys are gone with it.
"""

from __future__ import annotations

import contextlib
import secrets
import threading

from kvclient.operations import Asks, KeepAlive, Revoke
from kvwire.errors import InvalidRequest, KVError
from kvwire.leasing import TTL_MAX_S, TTL_MIN_S
from kvwire.mqtt import Closing
from kvwire.settings import duration_seconds


def new_lease_name() -> str:
    """A name no other client draws: the lease is named before it exists."""
    return f"lease-{secrets.token_hex(8)}"


def ttl_seconds(text: str) -> int:
    """`30s`, `2m`, `1h`, `1d` or a number of seconds, as the whole seconds of a TTL."""
    seconds = duration_seconds(text)
    if seconds is None:
        raise InvalidRequest(f"{text!r} is not a duration (30s, 2m, 1h)")
    if seconds != int(seconds) or not TTL_MIN_S <= seconds <= TTL_MAX_S:
        raise InvalidRequest(
            f"a lease's TTL is whole seconds from {TTL_MIN_S} to {TTL_MAX_S} (1d), not {text!r}"
        )
    return int(seconds)


class Lease(Closing):
    """A granted lease, kept alive until `close()`, which revokes it (its keys go at once).

    >>> with kv.lease(10) as lease:
    ...     kv.put("workers/7", "up", lease=lease.name)
    """

    def __init__(self, client: Asks, name: str, ttl: int, *, keep_alive: bool = True) -> None:
        self.name = name
        self.ttl = ttl
        #: Set when a keep-alive found the lease ended: its keys are gone.
        self.lost = threading.Event()
        self._client = client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if keep_alive:
            self._thread = threading.Thread(target=self._run, daemon=True, name="kv-lease")
            self._thread.start()

    def _run(self) -> None:
        interval = max(self.ttl / 3, 0.2)
        while not self._stop.wait(interval):
            try:
                answer = self._client.request(KeepAlive(self.name))
            except KVError:
                continue  # no answer this time: the next one, before the TTL runs out
            if answer.status != "ok":
                self.lost.set()
                return

    def close(self, *, revoke: bool = True) -> None:
        """Stop keeping it alive and, unless `revoke` is False, end it now."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if revoke:
            with contextlib.suppress(KVError):  # the TTL ends it anyway
                self._client.request(Revoke(self.name))
