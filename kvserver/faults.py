"""Misbehaviour on purpose, for the fault tests only (hidden options of `kvserver`).

None of it touches the state machine, and with every switch off `wrap` returns the handler
itself: the hot path does not pay for what the tests need.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from paho.mqtt.properties import Properties

from kvserver.store import Store

log = logging.getLogger("kvserver")

Handler = Callable[[str, bytes, bool, Properties | None], None]


class InjectedBug(RuntimeError):
    """Raised where a bug in the state machine would raise."""


@dataclass(frozen=True)
class Faults:
    #: KEY=VALUE stored on this replica alone: the divergence check must see it.
    corrupt: str | None = None
    #: A request whose payload holds this text stops the message loop for good.
    stall_on: str | None = None
    #: A request whose payload holds this text raises, as a bug in the core would.
    crash_on: str | None = None
    #: Seconds spent on every message of the request topic: a slow replica, not a stuck one.
    slow: float = 0.0
    #: A broken replica that acknowledges writes but applies each one this many writes
    #: late, so that its reads are stale: the linearizability check must catch it.
    lag_writes: int = 0
    #: Seconds between the chunks of a state transfer this replica sends: a fault can then
    #: land while one is under way.
    pace_transfers: float = 0.0

    def wrap(self, handler: Handler, requests_topic: str) -> Handler:
        if not (self.stall_on or self.crash_on or self.slow):
            return handler
        stall = self.stall_on.encode() if self.stall_on else None
        crash = self.crash_on.encode() if self.crash_on else None

        def faulty(topic: str, payload: bytes, dup: bool, props: Properties | None) -> None:
            if topic == requests_topic:
                if self.slow:
                    time.sleep(self.slow)
                if stall is not None and stall in payload:
                    _stall_forever()
                if crash is not None and crash in payload:
                    raise InjectedBug("injected bug (test switch --crash-on-for-tests)")
            handler(topic, payload, dup, props)

        return faulty

    def initial_store(self, replica_id: int) -> Store:
        """The store a fresh replica starts with: honest unless a switch says otherwise. It
        lasts until the replica loads another one by joining."""
        store = LaggingStore(self.lag_writes) if self.lag_writes else Store()
        if self.corrupt:
            key, _, value = self.corrupt.partition("=")
            Store.put(store, key, value, 0)
            log.warning("replica %d corrupted on purpose (test switch)", replica_id)
        return store


class LaggingStore(Store):
    __slots__ = ("_lag", "_late")

    def __init__(self, lag: int) -> None:
        super().__init__()
        self._lag = lag
        self._late: list[tuple[str, str, int]] = []

    def put(self, key: str, value: str, revision: int) -> None:
        self._late.append((key, value, revision))
        if len(self._late) > self._lag:
            super().put(*self._late.pop(0))


def _stall_forever() -> None:
    log.warning("message loop stalled on purpose (test switch)")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # so that the test can still stop us
    while True:
        time.sleep(1)
