"""What the replica's and the monitor's settings share: the timing defaults of protocol §9
and a base that turns every bad value into one `ConfigError`.

The rules that tie the timings together live here once, so that a replica and a monitor
started with the same heartbeat interval derive the same failure timeout.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kvwire.errors import ConfigError

#: Seconds between heartbeats, for replicas and monitors alike.
HEARTBEAT_INTERVAL = 0.25


def failure_timeout_for(heartbeat_interval: float) -> float:
    """Four heartbeats missed: one late heartbeat (a GC pause, a busy broker) is not a
    failure, and a dead replica is still failed over within a second."""
    return 4 * heartbeat_interval


def check_failure_timeout(heartbeat_interval: float, failure_timeout: float) -> None:
    if heartbeat_interval <= 0:
        raise ConfigError(f"the heartbeat interval must be positive, not {heartbeat_interval:g}")
    if failure_timeout <= 2 * heartbeat_interval:
        raise ConfigError(
            f"the failure timeout ({failure_timeout:g} s) must exceed two heartbeat intervals "
            f"({heartbeat_interval:g} s), or a single late heartbeat fails a live replica"
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float | None:
    """`30s`, `2m`, `1h`, `1d`, `250ms` or a number of seconds; None if it is none of them."""
    match = _DURATION.match(text)
    return None if match is None else float(match[1]) * _UNIT_S[match[2] or "s"]


_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*$")
_SIZE_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def byte_size(text: str) -> int | None:
    """`1000000`, `500k`, `64M`, `2G` (powers of 1024; `KiB`, `MB` read alike); None if it is
    none of them."""
    match = _SIZE.match(text)
    return None if match is None else int(match[1]) * _SIZE_UNIT[match[2].lower()]


class Settings(BaseModel):
    """Frozen, and strict about names: a misspelt setting is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **values: Any) -> None:
        # An option left out on the command line arrives as None: the default, derived or not.
        values = {name: value for name, value in values.items() if value is not None}
        try:
            super().__init__(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "settings"
            raise ConfigError(f"{where}: {first['msg']}") from None
