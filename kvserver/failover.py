"""Taking over for a failed replica (protocol §6), as rules of the view and the request log:
which keys a replica inherits when another fails, which logged requests it answers again, and
which failure notices it must not act on. The replica applies them; nothing here acts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvserver.history import RequestLog
from kvserver.view import View
from kvwire.messages import LoggedRequest
from kvwire.ring import key_slot

log = logging.getLogger("kvserver")


def inherited(previous: list[int | None], failed: int, view: View) -> Callable[[str], bool] | None:
    """Which keys `view`'s replica answers for now that `failed` is out (`previous`: the
    owners before); None when it inherits none of them."""
    if not view.owns_slot(failed):
        return None
    n = view.n
    return lambda key: previous[key_slot(key, n)] == failed and view.owns(key)


def to_replay(
    requests: RequestLog, since: float, taken: Callable[[str], bool]
) -> list[LoggedRequest]:
    """What the failed owner may have left unanswered: the logged requests for the keys we
    inherit, since its last heartbeat (less the clock skew allowed)."""
    return [entry for entry in requests.since(since) if taken(entry.key)]


class StaleNotices:
    """A falhaserv naming an incarnation already replaced (a monitor's late verdict, or an old
    one replayed) changes nothing; it is logged once for each, since a replay can loop."""

    _REMEMBERED = 1024

    def __init__(self, replica_id: int) -> None:
        self.replica_id = replica_id
        self._said: set[tuple[int, str | None]] = set()

    def ignore(self, failed: int, incarnation: str | None, position: int) -> None:
        said = (failed, incarnation)
        if said in self._said or len(self._said) >= self._REMEMBERED:
            return
        self._said.add(said)
        what = (self.replica_id, incarnation, failed, position)
        log.info(
            "replica %d ignores a falhaserv for an old incarnation %s of replica %d at %d", *what
        )
