"""The mqtt-kv client: a Python API (`KVClient`) and the `kvclient` command."""

from kvclient.client import Entry, KVClient
from kvwire.errors import (
    BrokerError,
    ConfigError,
    Conflict,
    InvalidRequest,
    KeyNotFound,
    KVError,
    RequestTimeout,
    ServerError,
)

__all__ = [
    "BrokerError",
    "ConfigError",
    "Conflict",
    "Entry",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "KeyNotFound",
    "RequestTimeout",
    "ServerError",
]
