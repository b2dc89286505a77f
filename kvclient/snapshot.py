"""`kvclient snapshot save`: a consistent snapshot of a live cluster in a file (issue 29).

One `instantaneo` goes on the request topic, naming a topic of its own; the replica that owns
that topic sends the store as of the request's position there, in `estado` chunks
(`kvwire.snapshot`). `Receiver` (pure: fed payloads) puts the chunks together and checks them
against the digest the sender recorded; `save` asks again, on a new topic, when the sender
dies mid-way (its successor sends a later snapshot, consistent as well), and writes the file
under a temporary name first, so that FILE is only ever a whole snapshot.
"""

from __future__ import annotations

import os
import queue
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from kvclient.transport import MqttTransport
from kvwire.access import Access
from kvwire.batch import decode_answers
from kvwire.errors import KVError, RequestTimeout, ServerError
from kvwire.messages import REQUESTS_TOPIC, Estado, Invalid, decode_estado
from kvwire.snapshot import Instantaneo, SnapshotError, SnapshotFile, pairs_digest, write_snapshot

#: Asked again this many times when the sender goes quiet (it died: its successor answers).
ATTEMPTS = 3


class Receiver:
    """The chunks of one snapshot, as they come (in any order, each once)."""

    def __init__(self) -> None:
        self.parts: dict[int, Estado] = {}
        self.total: int | None = None
        self.refused: str | None = None

    def add(self, payload: bytes) -> None:
        chunk = decode_estado(payload)
        if isinstance(chunk, Invalid):  # else the sender's refusal, or not ours
            answers = decode_answers(payload)
            if not isinstance(answers, Invalid) and answers:
                self.refused = answers[0].erro or answers[0].status
            return
        if self.parts and chunk.corte != next(iter(self.parts.values())).corte:
            return
        self.total = chunk.partes
        self.parts[chunk.parte] = chunk

    @property
    def done(self) -> bool:
        return self.total is not None and len(self.parts) >= self.total

    def snapshot(self) -> SnapshotFile:
        """The whole snapshot, checked against the sender's digest and key count."""
        pairs: dict[str, tuple[str, int]] = {}
        leases = []
        first = self.parts[0]
        for index in range(self.total or 0):
            chunk = self.parts[index]
            for key, value in chunk.pares.items():
                pairs[key] = (value, chunk.revisoes[key])
            leases.extend(chunk.concessoes)
        if len(pairs) != first.chaves or pairs_digest(pairs.items()) != first.resumo:
            raise SnapshotError(
                f"the snapshot replica {first.idserv} sent does not match its own digest "
                f"({len(pairs)} keys received of {first.chaves}): take it again"
            )
        return SnapshotFile(first.corte, first.resumo, pairs, leases, time.time(), first.idserv)


def take(
    broker: str | None,
    *,
    access: Access | None = None,
    timeout: float = 30.0,
    progress: Callable[[int, int], None] = lambda done, total: None,
    requests_topic: str = REQUESTS_TOPIC,
) -> SnapshotFile:
    """A snapshot of the cluster at one position. `progress(chunks, of)` as chunks come;
    `timeout`: the most the sender may go quiet before it is asked again."""
    access = access if access is not None else Access.load()
    user = f"{access.username}/" if access.username else ""
    transport = MqttTransport(broker, name="kvsnapshot", access=access)
    payloads: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    topics = [f"inf1406-resp/{user}snapshot-{secrets.token_hex(6)}" for _ in range(ATTEMPTS)]
    transport.open(topics, lambda topic, payload: payloads.put((topic, payload)))
    try:
        for attempt, topic in enumerate(topics, start=1):
            receiver = Receiver()
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
                return receiver.snapshot()
        raise RequestTimeout(
            f"no replica sent a whole snapshot ({ATTEMPTS} attempts, {timeout:g} s of silence "
            "each): is the cluster up? (kvclient status)"
        )
    finally:
        transport.close()


def save(snapshot: SnapshotFile, path: Path) -> str:
    """Write it to `path` whole or not at all; its checksum."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as out:
            checksum = write_snapshot(out, snapshot)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise KVError(f"cannot write {path}: {exc.strerror or exc}") from None
    return checksum
