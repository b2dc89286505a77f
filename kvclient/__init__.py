"""The mqtt-kv client: a Python API (`KVClient`) and the `kvclient` command."""

from kvclient.client import Entry, KVClient
from kvclient.operations import Delete, Get, List, Operation, Put
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
    "Delete",
    "Entry",
    "Get",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "KeyNotFound",
    "List",
    "Operation",
    "Put",
    "RequestTimeout",
    "ServerError",
]
