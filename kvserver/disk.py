"""A replica's state on disk (protocol §17): SQLite in WAL mode, one file per data directory.

What is kept is exactly what a replica needs to be a §11 candidate after its process is gone:
the pairs, the de-duplication set in its order, the stream position, the view with its
incarnations, and the digest, all as of one stream position, because the adapter writes them
in one transaction per batch of applied messages. The request log is not kept: it matters
for ten seconds, and after a restart every client has retried.

On opening, everything is read back and checked (the pair count and the digest against the
ones written with them), so a damaged file is refused rather than served.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import multiprocessing
import os
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path
from typing import Literal

from kvserver.durable import OnDisk, Written
from kvserver.history import SeenSet
from kvserver.store import Store, sum_of
from kvwire.errors import ConfigError
from kvwire.feed import ChangeRecord, WatchRecord
from kvwire.leasing import LeaseRecord
from kvwire.messages import LoggedRequest

log = logging.getLogger("kvserver")

#: The layout below; a directory written by a newer mqtt-kv is refused, not misread.
#: 2: every pair with its revision (protocol §12).
FORMAT_VERSION = 2
DB_NAME = "replica.sqlite3"
LOCK_NAME = "lock"

Sync = Literal["always", "periodic", "never"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL
) WITHOUT ROWID;
-- rid has no declared type: an idpedido stays the integer or the string it was.
-- A write's outcome beside its de-duplication entry, for a retry after a restart (see
-- `Outcomes`); NULL where the request carries it (a plain put answers its own value).
-- Leases (protocol §18; added within format 2: an older mqtt-kv reads the pairs and ignores
-- them) and the lease each key ends with.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, ttl INTEGER NOT NULL, renewed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lease_keys (key TEXT PRIMARY KEY, lease TEXT NOT NULL) WITHOUT ROWID;
-- The change feed (protocol §19; within format 2 as well): the history in stream order, `at`
-- the wall-clock time each change was applied, and the watches.
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY, revision INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
    value TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS watches (
    topic TEXT NOT NULL, rid, prefix TEXT NOT NULL, lease TEXT NOT NULL,
    since INTEGER NOT NULL, registered_at INTEGER NOT NULL, PRIMARY KEY (topic, rid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, rid,
    key TEXT, kind TEXT, status TEXT, revision INTEGER, value TEXT, at REAL
);
"""

#: Rows per statement when the whole state is written: the caller's loop runs in between.
_SLICE = 50_000


class DataDirError(ConfigError):
    """A data directory that must not be used as it is; the message says what to do."""


class DiskFull(DataDirError):
    """The data directory's file system has no room (or the user's quota is spent): the
    write was rolled back whole, and may be tried again once there is room."""


#: SQLite's SQLITE_FULL (Python 3.11 names it; 3.10 does not).
_SQLITE_FULL = 13


def _full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == _SQLITE_FULL or "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _room(path: Path) -> Iterator[None]:
    """A full disk, said as `DiskFull`; any other failure as it is."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        if _full(exc):
            raise DiskFull(f"data directory {path} is full: {exc}") from None
        raise


#: The pairs as `kvserver.store.pack` writes them: revision, NUL, value.
_PACKED_PAIRS = "SELECT key, revision || char(0) || value FROM pairs"


def _sum_on_disk(db_path: Path) -> int:
    """`kvserver.store.sum_of` the pairs in the file, read on a connection of its own."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return sum_of(db.execute(_PACKED_PAIRS))
    finally:
        db.close()


@contextlib.contextmanager
def _summing(db_path: Path) -> Iterator[Callable[[], int | None]]:
    """The digest of the pairs on disk, worked out by a forked process while this one reads
    them: hashing a million pairs is a third of a start-up from disk, and the machine has
    another core (issue 28). Called, it waits for the sum; None if the process could not be
    had, and then the store sums them itself."""
    try:
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
        future = pool.submit(_sum_on_disk, db_path)
    except (OSError, RuntimeError, ValueError):
        yield lambda: None
        return

    def summed() -> int | None:
        try:
            return future.result()
        except (OSError, sqlite3.Error, BrokenProcessPool):
            return None

    try:
        yield summed
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _row(seq: int, entry: LoggedRequest) -> tuple[object, ...]:
    e = entry
    return (seq, e.reply_to, e.request_id, e.key, e.kind, e.status, e.revision, e.value, e.at)


def _write_leases(
    db: sqlite3.Connection,
    leases: dict[str, LeaseRecord | None],
    attached: dict[str, str | None],
) -> None:
    db.executemany(
        "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)",
        [(x.name, x.ttl, x.renewed_at) for x in leases.values() if x is not None],
    )
    db.executemany(
        "DELETE FROM leases WHERE name = ?", [(name,) for name, x in leases.items() if x is None]
    )
    db.executemany(
        "INSERT OR REPLACE INTO lease_keys VALUES (?, ?)",
        [(key, lease) for key, lease in attached.items() if lease is not None],
    )
    db.executemany(
        "DELETE FROM lease_keys WHERE key = ?",
        [(key,) for key, lease in attached.items() if lease is None],
    )


class DataDir:
    """One replica's directory: locked for as long as it is open."""

    def __init__(self, path: Path, *, replica_id: int, n: int, sync: Sync) -> None:
        self.path = path
        self.replica_id = replica_id
        self.n = n
        self.sync = sync
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = open(path / LOCK_NAME, "a+")  # noqa: SIM115 (held until close)
        except OSError as exc:
            raise DataDirError(f"cannot use data directory {path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise DataDirError(
                f"data directory {path} is in use by process {holder}: one replica per directory"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self._db_path = path / DB_NAME
        self._seen_total = 0
        self._history_total = 0
        try:
            self._db = self._connect()
            meta = self._meta()
            if meta:
                self._check_identity(meta)
            else:
                self._write_identity()
        except sqlite3.DatabaseError as exc:
            self._lock.close()
            raise self._damaged(str(exc)) from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL never corrupts a WAL database on power loss; FULL also forces every commit.
            db.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'always' else 'NORMAL'}")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _damaged(self, why: str) -> DataDirError:
        return DataDirError(
            f"data directory {self.path} is damaged ({why}); it is not served from. Move it "
            "away and start this replica without it: it joins and copies the data from a "
            "live replica (if none is live, another replica's directory holds the data)"
        )

    # --- reading --------------------------------------------------------------------------

    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, value FROM meta"))

    def load(self, since: float = float("inf")) -> OnDisk | None:
        """The state kept here, checked; None for a directory that holds none yet. The
        outcomes of writes applied at or after `since` (wall clock) come back for the log."""
        try:
            meta = self._meta()
            if "position" not in meta:
                return None  # created, never written: as good as empty
            store = Store()
            with _summing(self._db_path) as summed:
                # Packed as the store keeps them (`kvserver.store.pack`) by SQLite itself: two
                # objects a row for Python to make instead of four.
                pairs = dict(self._db.execute(_PACKED_PAIRS))
                store.adopt(pairs, summed())
            seen_rows = self._db.execute("SELECT * FROM seen ORDER BY seq").fetchall()
            view = json.loads(meta["view"])
            leases = self._leases()
            history_rows = self._db.execute("SELECT * FROM history ORDER BY seq").fetchall()
            floor = int(meta.get("history_floor", "0"))
            watch_rows = self._db.execute(
                "SELECT topic, rid, prefix, lease, since, registered_at FROM watches"
            )
            # Each watch's last match is found again in the history as loaded (`Feed.load`).
            watches = [WatchRecord(t, r, p, x, s, at, 0) for t, r, p, x, s, at in watch_rows]
        except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
            raise self._damaged(str(exc)) from None
        if len(store) != int(meta["keys"]) or store.digest() != meta["digest"]:
            raise self._damaged(
                f"it holds {len(store)} keys with digest {store.digest()}, but was written with "
                f"{meta['keys']} keys and digest {meta['digest']}"
            )
        self._seen_total = seen_rows[-1][0] if seen_rows else 0
        self._history_total = history_rows[-1][0] if history_rows else 0
        return OnDisk(
            position=int(meta["position"]),
            store=store,
            seen=SeenSet(int(meta["seen_capacity"]), [(row[1], row[2]) for row in seen_rows]),
            live=[bool(up) for up in view["live"]],
            incarnations=list(view["incarnations"]),
            outcomes=[
                LoggedRequest(at, kind, key, topic, rid, value, status, revision)
                for _, topic, rid, key, kind, status, revision, value, at in seen_rows
                if at is not None and at >= since
            ],
            leases=leases,
            watches=watches,
            history=[ChangeRecord(*row[1:]) for row in history_rows if row[1] > floor],
            history_floor=floor,
        )

    def _leases(self) -> list[LeaseRecord]:
        keys: dict[str, list[str]] = {}
        for key, lease in self._db.execute("SELECT key, lease FROM lease_keys ORDER BY key"):
            keys.setdefault(lease, []).append(key)
        rows = self._db.execute("SELECT name, ttl, renewed_at FROM leases")
        return [LeaseRecord(name, ttl, at, 0.0, keys.get(name, [])) for name, ttl, at in rows]

    def _write_identity(self) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [
                    ("format", str(FORMAT_VERSION)),
                    ("n", str(self.n)),
                    ("replica_id", str(self.replica_id)),
                ],
            )

    def _check_identity(self, meta: dict[str, str]) -> None:
        version = int(meta.get("format", "0"))
        if version > FORMAT_VERSION:
            raise DataDirError(
                f"data directory {self.path} was written by a newer mqtt-kv (format {version}; "
                f"this one reads {FORMAT_VERSION}): run the newer version"
            )
        if version < 1 or "n" not in meta or "replica_id" not in meta:
            raise self._damaged("no format version")
        if version < FORMAT_VERSION:
            raise DataDirError(
                f"data directory {self.path} was written by an older mqtt-kv (format {version}, "
                f"without revisions; this one reads {FORMAT_VERSION}): move it away and start "
                "the replica without it, to copy the state from a live replica"
            )
        n, replica_id = int(meta["n"]), int(meta["replica_id"])
        if n != self.n:
            raise DataDirError(
                f"data directory {self.path} belongs to a cluster of {n} replicas, not {self.n}: "
                "give each cluster its own directories (or start with --n "
                f"{n})"
            )
        if replica_id != self.replica_id:
            raise DataDirError(
                f"data directory {self.path} belongs to replica {replica_id}, not "
                f"{self.replica_id}: give each replica its own directory"
            )

    # --- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")  # which fails, too, when the disk is full
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")  # nothing of the transaction stays: no half-written state
            raise

    def write(self, state: Written, between: Callable[[], None] = lambda: None) -> None:
        """One transaction: the changes, or everything, and the position they bring us to.

        `between` is called between slices of a whole-state write, so that the caller's
        heartbeats go on while a million keys are written.
        """
        changes = state.changes
        with _room(self.path), self._transaction() as db:
            if changes.everything:
                db.execute("DELETE FROM pairs")
                db.execute("DELETE FROM seen")
                pairs = iter(state.pairs)
                while batch := list(islice(pairs, _SLICE)):
                    db.executemany(
                        "INSERT INTO pairs VALUES (?, ?, ?)", [(k, v, r) for k, (v, r) in batch]
                    )
                    between()
                seen, outcomes = state.all_seen, state.outcomes
                none = (None,) * 6
                db.executemany(
                    "INSERT INTO seen VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        _row(i, outcomes[entry]) if entry in outcomes else (i, *entry, *none)
                        for i, entry in enumerate(seen, start=1)
                    ],
                )
                self._seen_total = len(seen)
                db.execute("DELETE FROM leases")
                db.execute("DELETE FROM lease_keys")
                db.executemany(
                    "INSERT INTO leases VALUES (?, ?, ?)",
                    [(x.name, x.ttl, x.renewed_at) for x in state.leases],
                )
                db.executemany(
                    "INSERT INTO lease_keys VALUES (?, ?)",
                    [(key, x.name) for x in state.leases for key in x.keys],
                )
                db.execute("DELETE FROM history")
                db.execute("DELETE FROM watches")
                self._history_total = 0
                self._write_feed(db, state)
            else:
                puts = changes.puts
                if puts:
                    db.executemany(
                        "INSERT OR REPLACE INTO pairs VALUES (?, ?, ?)",
                        [(k, e[0], e[1]) for k, e in puts.items() if e is not None],
                    )
                    db.executemany(
                        "DELETE FROM pairs WHERE key = ?",
                        [(k,) for k, e in puts.items() if e is None],
                    )
                if changes.seen:
                    first = self._seen_total + 1
                    db.executemany(
                        "INSERT INTO seen VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [_row(first + i, entry) for i, entry in enumerate(changes.seen)],
                    )
                    self._seen_total += len(changes.seen)
                    db.execute(
                        "DELETE FROM seen WHERE seq <= ?", (self._seen_total - state.seen_capacity,)
                    )
                if changes.leases or changes.attached:
                    _write_leases(db, changes.leases, changes.attached)
                if state.history or state.watches:
                    self._write_feed(db, state)
            view = json.dumps({"live": state.live, "incarnations": state.incarnations})
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [
                    ("position", str(state.position)),
                    ("digest", state.digest),
                    ("keys", str(state.key_count)),
                    ("view", view),
                    ("seen_capacity", str(state.seen_capacity)),
                    ("history_floor", str(state.history_floor)),
                ],
            )

    def _write_feed(self, db: sqlite3.Connection, state: Written) -> None:
        if state.history:
            first = self._history_total + 1
            db.executemany(
                "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?)",
                [(first + i, *change) for i, change in enumerate(state.history)],
            )
            self._history_total += len(state.history)
            db.execute(
                "DELETE FROM history WHERE seq <= ?", (self._history_total - state.history_limit,)
            )
        watches = state.watches
        db.executemany(
            "INSERT OR REPLACE INTO watches VALUES (?, ?, ?, ?, ?, ?)",
            [x[:6] for x in watches.values() if x is not None],
        )
        db.executemany(
            "DELETE FROM watches WHERE topic = ? AND rid = ?",
            [wid for wid, x in watches.items() if x is None],
        )

    def force(self) -> None:
        """Make what is committed survive a power cut (`--sync periodic`): fsync the WAL."""
        with _room(self.path):
            self._force()

    def _force(self) -> None:
        for name in (f"{DB_NAME}-wal", DB_NAME):
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self.path / name, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._lock.close()

    def __enter__(self) -> DataDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
