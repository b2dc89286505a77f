"""The mqtt-kv client: a Python API (`KVClient`) and the `kvclient` command."""

from kvclient.client import Entry, KVClient, TxnResult
from kvclient.cursor import Change
from kvclient.feed import FeedWatch
from kvclient.leases import Lease
from kvclient.operations import (
    Compare,
    Delete,
    Get,
    Grant,
    KeepAlive,
    List,
    Operation,
    Put,
    Revoke,
    Txn,
)
from kvclient.recipes import Election, Lock
from kvwire.errors import (
    BrokerError,
    Compacted,
    ConfigError,
    Conflict,
    InvalidRequest,
    KeyNotFound,
    KVError,
    QuotaExceeded,
    RequestTimeout,
    ServerError,
)

__all__ = [
    "BrokerError",
    "Change",
    "Compacted",
    "Compare",
    "ConfigError",
    "Conflict",
    "Delete",
    "Election",
    "Entry",
    "FeedWatch",
    "Get",
    "Grant",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "KeepAlive",
    "KeyNotFound",
    "Lease",
    "List",
    "Lock",
    "Operation",
    "Put",
    "QuotaExceeded",
    "RequestTimeout",
    "Revoke",
    "ServerError",
    "Txn",
    "TxnResult",
]
