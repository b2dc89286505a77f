"""The mqtt-kv client: a Python API (`KVClient`) and the `kvclient` command."""

from kvclient.client import KVClient
from kvwire.errors import (
    BrokerError,
    ConfigError,
    InvalidRequest,
    KeyNotFound,
    KVError,
    RequestTimeout,
    ServerError,
)

__all__ = [
    "BrokerError",
    "ConfigError",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "KeyNotFound",
    "RequestTimeout",
    "ServerError",
]
