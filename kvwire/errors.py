"""The one exception hierarchy of mqtt-kv.

    KVError
    ├── ConfigError          bad option or timing settings
    ├── InvalidRequest       a key or value that JSON over UTF-8 cannot carry
    ├── BrokerError          the broker cannot be reached or dropped us
    ├── RequestTimeout       no answer within the deadline (retries included)
    ├── KeyNotFound          a read of a key that holds no value
    ├── Conflict             a compare-and-set lost: the key's revision was another
    ├── Compacted            a watch from a revision the history no longer keeps
    ├── QuotaExceeded        a write the cluster's --max-keys or --max-bytes refused
    └── ServerError          a replica answered status "erro"

The CLI turns each into a one-line message and an exit code; library users catch `KVError`.
"""

from __future__ import annotations


class KVError(Exception):
    """Base of every error mqtt-kv raises on purpose."""


class ConfigError(KVError):
    """An option or a combination of settings that cannot work."""


class InvalidRequest(KVError):
    """A key or value the protocol cannot carry, refused before it is sent."""


class BrokerError(KVError):
    """The MQTT broker could not be reached, refused us, or went away."""


class RequestTimeout(KVError):
    """No replica answered in time, retries included."""


class KeyNotFound(KVError):
    """The key holds no value."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key!r}")
        self.key = key


class Conflict(KVError):
    """A compare-and-set lost: nothing was written. Carries the key's current value and
    revision (None and None when it has no value), to retry from."""

    def __init__(
        self, key: str, value: str | None, revision: int | None, said: str | None = None
    ) -> None:
        now = "has no value" if revision is None else f"is at revision {revision}"
        super().__init__(f"conflict: {said}" if said else f"conflict: key {key!r} {now}")
        self.key, self.value, self.revision = key, value, revision


class Compacted(KVError):
    """A watch asked for the changes after a revision the history has dropped: `oldest` is
    the earliest revision a watch may start from now."""

    def __init__(self, since: int, oldest: int) -> None:
        super().__init__(
            f"revision {since} is compacted: the history keeps the changes after revision "
            f"{oldest} only; watch from {oldest} or later, or without a revision to start from "
            "the current values"
        )
        self.since, self.oldest = since, oldest


class QuotaExceeded(KVError):
    """The cluster's quota (`--max-keys`, `--max-bytes`) refused a write: nothing was
    written. Reads and deletes still work; a delete makes room."""

    def __init__(self, key: str, said: str | None = None) -> None:
        what = f"key {key!r} not written" if key else "nothing written"
        why = said or "the cluster's quota of keys or bytes is full"
        super().__init__(f"quota exceeded: {what}: {why}; delete keys to make room")
        self.key = key


class ServerError(KVError):
    """A replica refused the request and said why."""
