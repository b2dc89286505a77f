"""`kvclient snapshot save`: a consistent snapshot of a live cluster in a file (issue 29).

One `instantaneo` goes on the request topic, naming a topic of its own; the replica that owns
that topic sends the store as of the request's position there, in `estado` chunks
(`kvwire.snapshot`). `Receiver` (fed payloads) puts the chunks' pairs in a `Spool` on disk as
they come and checks them against the digest the sender recorded; `save` asks again, on a new
topic, when the sender dies mid-way (its successor sends a later snapshot, consistent as
well), and writes the file in key order from the spool under a temporary name first, so that
FILE is only ever a whole snapshot and a client's memory does not grow with the store.
"""

from __future__ import annotations

import os
import queue
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kvclient.transport import MqttTransport
from kvwire.access import Access
from kvwire.batch import decode_answers
from kvwire.digest import MASK, pack, sum_of
from kvwire.errors import KVError, RequestTimeout, ServerError
from kvwire.leasing import LeaseRecord
from kvwire.messages import REQUESTS_TOPIC, Estado, Invalid, decode_estado
from kvwire.snapshot import Header, Instantaneo, SnapshotError, SnapshotFile, write_lines

#: Asked again this many times when the sender goes quiet (it died: its successor answers).
ATTEMPTS = 3


class Spool:
    """A snapshot's pairs as they come, in a temporary SQLite file beside the one being
    written (or in memory, without a directory), so that a client writes a snapshot of any
    size in key order with bounded memory. SQLite compares text by its UTF-8 bytes, which
    orders keys as `sorted` does (UTF-8 keeps code point order).

    The table has no key index: pairs are appended as they come and sorted once, at the end
    (at 1M keys in random order, 0.9 s to insert and 1.0 s to read back sorted, against 10 s
    to insert into a primary key). A key sent twice is caught by the count and the digest."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path: Path | None = None
        if directory is not None:
            try:
                handle, name = tempfile.mkstemp(prefix=".kvsnap-", suffix=".spool", dir=directory)
            except OSError as exc:  # before anything is asked of the cluster
                raise KVError(f"cannot write in {directory}: {exc.strerror or exc}") from None
            os.close(handle)
            self.path = Path(name)
        self._db = sqlite3.connect(self.path or ":memory:", isolation_level=None)
        # A scratch file: nothing of it must survive a crash, so no fsync; the journal, in
        # memory, holds one chunk, so that a chunk that fails is undone whole.
        self._db.execute("PRAGMA journal_mode = MEMORY")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(
            "CREATE TABLE pairs (key TEXT NOT NULL, value TEXT NOT NULL, revision INTEGER NOT NULL)"
        )
        self.count = 0
        self._sum = 0

    def add(self, pairs: list[tuple[str, str, int]]) -> None:
        """One chunk's pairs."""
        try:
            with self._db:  # one transaction a chunk, undone whole if it fails
                self._db.execute("BEGIN")
                self._db.executemany("INSERT INTO pairs VALUES (?, ?, ?)", pairs)
        except sqlite3.Error as exc:  # the spool's disk is full, say
            raise KVError(f"cannot spool the snapshot in {self.path}: {exc}") from None
        self.count += len(pairs)
        self._sum += sum_of((k, pack(v, r)) for k, v, r in pairs)

    def clear(self) -> None:
        """Empty, for the next attempt (a sender that died mid-way)."""
        self._db.execute("DELETE FROM pairs")
        self.count, self._sum = 0, 0

    @property
    def digest(self) -> str:
        return f"{self._sum & MASK:016x}"

    def rows(self) -> Iterator[tuple[str, str, int]]:
        """Every pair, in key order."""
        yield from self._db.execute("SELECT key, value, revision FROM pairs ORDER BY key")

    def close(self) -> None:
        self._db.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Saved:
    """What `save` wrote."""

    header: Header
    checksum: str


class Receiver:
    """The chunks of one snapshot, as they come (in any order, each once): their pairs go to
    a `Spool` at once, so that only the chunk at hand and the leases are held in memory."""

    def __init__(self, spool: Spool | None = None) -> None:
        self.spool = spool if spool is not None else Spool()
        self.parts: set[int] = set()
        self.total: int | None = None
        self.refused: str | None = None
        self._first: Estado | None = None  # without its pairs: what every chunk repeats
        self._leases: dict[int, list[LeaseRecord]] = {}

    def add(self, payload: bytes) -> None:
        chunk = decode_estado(payload)
        if isinstance(chunk, Invalid):  # else the sender's refusal, or not ours
            answers = decode_answers(payload)
            if not isinstance(answers, Invalid) and answers:
                self.refused = answers[0].erro or answers[0].status
            return
        first = self._first
        if (first is not None and chunk.corte != first.corte) or chunk.parte in self.parts:
            return
        if first is None:
            self._first = chunk.model_copy(update={"pares": {}, "revisoes": {}})
        self.total = chunk.partes
        self.parts.add(chunk.parte)
        self.spool.add([(k, v, chunk.revisoes[k]) for k, v in chunk.pares.items()])
        self._leases[chunk.parte] = chunk.concessoes

    @property
    def done(self) -> bool:
        return self.total is not None and len(self.parts) >= self.total

    def header(self) -> Header:
        """The snapshot's header, once its pairs are checked against the sender's digest and
        key count."""
        first, spool = self._first, self.spool
        assert first is not None and self.done
        if spool.count != first.chaves or spool.digest != first.resumo:
            raise SnapshotError(
                f"the snapshot replica {first.idserv} sent does not match its own digest "
                f"({spool.count} keys received of {first.chaves}): take it again"
            )
        leases = sum(len(records) for records in self._leases.values())
        return Header(first.corte, first.resumo, spool.count, leases, time.time(), first.idserv)

    def leases(self) -> list[LeaseRecord]:
        return [lease for part in sorted(self._leases) for lease in self._leases[part]]

    def snapshot(self) -> SnapshotFile:
        """The whole snapshot in memory (a test's, or a small one's)."""
        header = self.header()
        pairs = {key: (value, revision) for key, value, revision in self.spool.rows()}
        return SnapshotFile(
            header.position, header.digest, pairs, self.leases(), header.taken_at,
            header.replica,
        )  # fmt: skip

    def write(self, path: Path) -> Saved:
        """Write the snapshot to `path` whole or not at all."""
        header = self.header()
        partial = path.with_name(f".{path.name}.partial")
        try:
            with partial.open("wb") as out:
                checksum = write_lines(out, header, self.spool.rows(), self.leases())
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise KVError(f"cannot write {path}: {exc.strerror or exc}") from None
        except sqlite3.Error as exc:  # SQLite's sort ran out of room for its scratch files
            partial.unlink(missing_ok=True)
            raise KVError(f"cannot sort the snapshot's pairs in {self.spool.path}: {exc}") from None
        return Saved(header, checksum)


def save(
    broker: str | None,
    path: Path,
    *,
    access: Access | None = None,
    timeout: float = 30.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
    requests_topic: str = REQUESTS_TOPIC,
) -> Saved:
    """A snapshot of the cluster at one position, written to `path` whole or not at all; its
    pairs are spooled beside it as they come. `progress(chunks, of)` as chunks come;
    `timeout`: the most the sender may go quiet before it is asked again."""
    access = access if access is not None else Access.load()
    user = f"{access.username}/" if access.username else ""
    spool = Spool(path.parent)  # a directory it cannot write in is said before anything else
    try:
        transport = MqttTransport(broker, name="kvsnapshot", access=access)
        payloads: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        topics = [f"inf1406-resp/{user}snapshot-{secrets.token_hex(6)}" for _ in range(ATTEMPTS)]
        transport.open(topics, lambda topic, payload: payloads.put((topic, payload)))
        try:
            for attempt, topic in enumerate(topics, start=1):
                spool.clear()
                receiver = Receiver(spool)
                request = Instantaneo(topico_resp=topic, idpedido=f"snapshot-{attempt}")
                transport.publish(requests_topic, request.encode())
                quiet_since = time.monotonic()
                while not receiver.done and receiver.refused is None:
                    try:
                        where, payload = payloads.get(timeout=0.2)
                    except queue.Empty:
                        if time.monotonic() - quiet_since > timeout:
                            break
                        continue
                    if where == topic:
                        receiver.add(payload)
                        quiet_since = time.monotonic()
                        progress(len(receiver.parts), receiver.total or 1)
                if receiver.refused is not None:
                    raise ServerError(f"the cluster refused the snapshot: {receiver.refused}")
                if receiver.done:
                    return receiver.write(path)
            raise RequestTimeout(
                f"no replica sent a whole snapshot ({ATTEMPTS} attempts, {timeout:g} s of "
                "silence each): is the cluster up? (kvclient status)"
            )
        finally:
            transport.close()
    finally:
        spool.close()  # the scratch file goes, whatever happened
