"""Everything a monitor is told, in one object: the failure timeout is derived from the
heartbeat interval exactly as the replicas derive theirs (`kvwire.settings`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from kvwire.access import Access, ClusterKey
from kvwire.errors import ConfigError
from kvwire.messages import MONITOR_TOPIC, REQUESTS_TOPIC
from kvwire.settings import (
    HEARTBEAT_INTERVAL,
    Settings,
    check_failure_timeout,
    failure_timeout_for,
)


class MonitorSettings(Settings):
    n: int
    host: str = "127.0.0.1"
    port: int = 1883
    #: The replicas' heartbeat interval.
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    #: Seconds without a heartbeat before a replica is declared failed.
    failure_timeout: float = Field(
        default_factory=lambda v: failure_timeout_for(v["heartbeat_interval"])
    )
    requests_topic: str = REQUESTS_TOPIC
    monitor_topic: str = MONITOR_TOPIC
    connect_timeout: float = 10.0
    #: Where to serve Prometheus metrics (`[HOST:]PORT`); None: nowhere.
    metrics: str | None = None
    #: User name, password and TLS for the broker (protocol §16); empty: anonymous.
    access: Access = Access()
    #: Signs our control messages and checks others'; None: the open protocol.
    cluster_key: ClusterKey | None = None

    @model_validator(mode="after")
    def _check(self) -> MonitorSettings:
        if self.n < 1:
            raise ConfigError(f"--n must be at least 1, not {self.n}")
        check_failure_timeout(self.heartbeat_interval, self.failure_timeout)
        return self
