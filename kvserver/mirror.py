"""The value mirror (protocol §14): the owner of a key publishes its current value, retained,
on `<prefix>/<key>`, so that any MQTT client reads and watches it without this protocol.

Only the owner publishes, after applying the write. A replica that becomes the owner of keys
(a takeover, a join) publishes again the current value of each of them written within the
request log's lifetime: a publish lost with a dead owner, or a stale one sent late by a
replica that was only slow, is corrected.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from kvserver.effects import Mirror
from kvserver.history import RequestLog
from kvserver.store import Entry, Store
from kvwire.messages import Espelho
from kvwire.topics import TopicCheck, mirror_topic

log = logging.getLogger("kvserver")


class ValueMirror:
    __slots__ = ("_ended", "_topics", "prefix", "replica_id", "skipped")

    def __init__(self, replica_id: int, prefix: str) -> None:
        self.replica_id = replica_id
        self.prefix = prefix
        self._topics = TopicCheck()
        #: Keys whose topic no MQTT client may publish to (too long, control characters).
        self.skipped = 0
        #: Keys deleted when their lease ended (protocol §18), with when: the request log
        #: does not hold them, and a new owner must clear them too (`again`).
        self._ended: deque[tuple[float, str]] = deque()

    def ended(self, key: str, now: float) -> None:
        self._ended.append((now, key))

    def expire(self, horizon: float) -> None:
        """Forget the lease ends older than `horizon`, as the request log forgets requests."""
        ended = self._ended
        while ended and ended[0][0] < horizon:
            ended.popleft()

    def value(self, key: str, entry: Entry | None) -> list[Mirror]:
        """The retained message for `key` holding `entry` (an empty one clears a deleted
        key's topic); none when no MQTT client may publish to the key's topic."""
        topic = mirror_topic(self.prefix, key)
        problem = self._topics.problem(topic)
        if problem is not None:
            self.skipped += 1
            if self.skipped <= 20 or self.skipped % 1000 == 0:
                log.warning(
                    "replica %d does not mirror key %.40r (%d so far): its topic %s",
                    self.replica_id, key, self.skipped, problem,
                )  # fmt: skip
            return []
        if entry is None:
            return [Mirror(topic, b"")]
        return [Mirror(topic, Espelho(chave=key, valor=entry[0], revisao=entry[1]).encode())]

    def again(
        self, requests: RequestLog, store: Store, owned: Callable[[str], bool]
    ) -> list[Mirror]:
        """The current value of every key written within the log (or ended with its lease
        since) that we own now."""
        out = []
        for key in sorted(requests.written_keys() | {key for _, key in self._ended}):
            if owned(key):
                out.extend(self.value(key, store.entry(key)))
        return out
