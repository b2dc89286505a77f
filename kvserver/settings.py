"""Everything a replica is told, in one object, with the rules that tie the values together.

Timings that follow from others are derived here and nowhere else: the failure timeout from
the heartbeat interval (as the monitor derives it), the log's lifetime and the broker's
session expiry from the failure timeout.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from kvserver.disk import Sync
from kvserver.faults import Faults
from kvserver.quota import Quota
from kvwire.access import Access, ClusterKey
from kvwire.errors import ConfigError
from kvwire.messages import MONITOR_TOPIC, REQUESTS_TOPIC
from kvwire.settings import (
    HEARTBEAT_INTERVAL,
    Settings,
    check_failure_timeout,
    failure_timeout_for,
)


class ReplicaSettings(Settings):
    replica_id: int
    n: int
    host: str = "127.0.0.1"
    port: int = 1883
    #: Start a new, empty cluster instead of joining a running one.
    fresh: bool = False
    requests_topic: str = REQUESTS_TOPIC
    monitor_topic: str = MONITOR_TOPIC
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    #: The monitor's: a peer not heard for this long is not counted when joining (§11).
    failure_timeout: float = Field(
        default_factory=lambda v: failure_timeout_for(v["heartbeat_interval"])
    )
    #: How long a request stays in the log (protocol §6: 10 × the failure timeout).
    log_ttl: float = Field(default_factory=lambda v: 10 * v["failure_timeout"])
    #: How far before `vistoem` a substitute replays (a duplicate answer is harmless): one
    #: heartbeat interval, the most a monitor's `vistoem` can trail the last heartbeat sent.
    skew_margin: float = Field(default_factory=lambda v: v["heartbeat_interval"])
    #: How long the broker keeps our session across a disconnect (protocol §3).
    session_expiry: int = Field(default_factory=lambda v: max(10, round(10 * v["failure_timeout"])))
    #: A join attempt with no progress for this long is started again.
    join_timeout: float = 3.0
    connect_timeout: float = 10.0
    #: How many applied writes are remembered for de-duplication.
    dedup_capacity: int = 200_000
    max_key_bytes: int = 1024
    max_value_bytes: int = 256 * 1024
    #: Pairs (or log entries) per `estado` chunk.
    chunk_items: int = 1000
    #: Where the replica keeps its state (protocol §17); None keeps it in memory only.
    data_dir: Path | None = None
    #: When the disk is forced: at every commit, about every `sync_interval` s, or never.
    sync: Sync = "periodic"
    sync_interval: float = 0.1
    faults: Faults = Faults()
    #: Publish every key's value, retained, under this topic prefix (protocol §14).
    mirror: str | None = None
    #: The change feed's history (protocol §19): at most this many changes, none older than
    #: `history_age` seconds.
    history: int = Field(default=100_000, ge=0, le=10_000_000)
    history_age: float = Field(default=3600.0, gt=0)
    #: The cluster's quota (the same on every replica): None, no limit.
    max_keys: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    #: Start a new cluster from this snapshot file (`kvclient snapshot save`), not empty.
    restore: Path | None = None
    #: Where to serve Prometheus metrics (`[HOST:]PORT`); None: nowhere.
    metrics: str | None = None
    #: User name, password and TLS for the broker (protocol §16); empty: anonymous.
    access: Access = Access()
    #: Signs our control messages and checks others'; None: the open protocol.
    cluster_key: ClusterKey | None = None

    @property
    def quota(self) -> Quota:
        return Quota(self.max_keys, self.max_bytes)

    @model_validator(mode="after")
    def _check(self) -> ReplicaSettings:
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, not {self.n}")
        if not 0 <= self.replica_id < self.n:
            raise ConfigError(f"--id must be between 0 and {self.n - 1}, not {self.replica_id}")
        check_failure_timeout(self.heartbeat_interval, self.failure_timeout)
        if self.log_ttl <= self.skew_margin:
            raise ConfigError("the log must outlive the skew margin (log_ttl > skew_margin)")
        if self.chunk_items < 1:
            raise ConfigError("a state chunk must hold at least one item")
        if self.mirror is not None and (
            not self.mirror or self.mirror.endswith("/") or any(c in self.mirror for c in "+#")
        ):
            raise ConfigError(
                f"--mirror {self.mirror!r}: a topic prefix without '+', '#' or a trailing '/'"
            )
        if self.join_timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("the join and connect timeouts must be positive")
        return self
