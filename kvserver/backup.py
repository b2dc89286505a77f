"""Backups (issue 29), the replica's side: what the owner of an `instantaneo` sends, and the
state a new cluster starts from with `kvserver --restore FILE` (`kvwire.snapshot`).

A snapshot is a state transfer with only what outlives a cluster: keys, values, revisions
and leases. The de-duplication set, the request log, the watches and the feed's history
belong to the clients of the cluster that wrote it, which a restored cluster does not have.
"""

from __future__ import annotations

from kvserver.leases import Leases
from kvserver.store import Store
from kvserver.transfer import Snapshot
from kvwire.digest import pack
from kvwire.snapshot import SnapshotFile


def backup(sender: int, position: int, store: Store, leases: Leases, now: float) -> Snapshot:
    """The store as of `position`, frozen until the transfer ends (`Replica.state_sent`)."""
    return Snapshot(
        sender=sender, cut=position, pairs=store.freeze(), digest=store.digest(), live=(),
        incarnations=(), seen=[], log=[], leases=list(leases.records(now)),
    )  # fmt: skip


def restored_store(snapshot: SnapshotFile) -> Store:
    store = Store()
    store.load_packed({key: pack(value, rev) for key, (value, rev) in snapshot.pairs.items()})
    return store
