"""Backups (issue 29): the `instantaneo` request and the snapshot file.

A `instantaneo` is applied by every replica at its position like any request; the owner of its
`topico-resp` (hashed as a key) sends its keys, values, revisions and leases as of that
position there, in `estado` chunks, as it sends a joiner its state: the store is frozen for
the transfer and writes go on meanwhile, so the snapshot is consistent at one position
without stopping anything.

The file, version 1, is JSON lines in UTF-8, so that `head`, `grep` and `jq` read it:

    {"format": "mqtt-kv-snapshot", "version": 1, "position": P, "keys": N, "leases": L,
     "digest": "<the store's digest at P>", "taken_at": <Unix time>, "replica": I}
    ["<key>", "<value>", <revision>]                         N lines, in key order
    {"lease": ["<name>", <ttl>, <renewed at>, <age s>, ["<key>", ...]]}    L lines
    {"sha256": "<hex digest of every byte before this line>"}

A reader refuses a file whose last line is not the checksum (truncated), whose checksum or
counts or digest do not match (damaged), or whose format or version it does not know.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import StrictStr

from kvwire.digest import digest_of, pack
from kvwire.errors import KVError
from kvwire.leasing import LeaseRecord
from kvwire.wire import _TOPICO_RESP, RequestId, _Wire

FORMAT = "mqtt-kv-snapshot"
VERSION = 1


class Instantaneo(_Wire):
    """Ask for a snapshot at this request's position: its owner sends it to `topico-resp`."""

    tipomsg: Literal["instantaneo"] = "instantaneo"
    topico_resp: StrictStr = _TOPICO_RESP
    idpedido: RequestId


class SnapshotError(KVError):
    """A snapshot file that cannot be used: truncated, damaged, or of another version."""


@dataclass
class SnapshotFile:
    position: int
    digest: str
    #: key -> (value, revision), in key order.
    pairs: dict[str, tuple[str, int]]
    leases: list[LeaseRecord] = field(default_factory=list)
    taken_at: float = 0.0
    #: The replica that sent it.
    replica: int = 0


@dataclass(frozen=True)
class Header:
    """A snapshot file's first line: what it holds, before it holds it."""

    position: int
    digest: str
    keys: int
    leases: int
    taken_at: float = 0.0
    replica: int = 0


def write_snapshot(out: IO[bytes], snapshot: SnapshotFile) -> str:
    """Write it (pairs in key order); the checksum written."""
    header = Header(
        snapshot.position, snapshot.digest, len(snapshot.pairs), len(snapshot.leases),
        snapshot.taken_at, snapshot.replica,
    )  # fmt: skip
    pairs = ((key, *snapshot.pairs[key]) for key in sorted(snapshot.pairs))
    return write_lines(out, header, pairs, snapshot.leases)


def write_lines(
    out: IO[bytes],
    header: Header,
    pairs: Iterable[tuple[str, str, int]],
    leases: Iterable[LeaseRecord],
) -> str:
    """Write a snapshot from its parts, `pairs` already in key order, one at a time (a
    client spools a large one on disk); the checksum written."""
    check = hashlib.sha256()

    def line(obj: object) -> None:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        check.update(data)
        out.write(data)

    line({
        "format": FORMAT, "version": VERSION, "position": header.position,
        "keys": header.keys, "leases": header.leases, "digest": header.digest,
        "taken_at": header.taken_at, "replica": header.replica,
    })  # fmt: skip
    for key, value, revision in pairs:
        line([key, value, revision])
    for lease in leases:
        line({"lease": list(lease)})
    checksum = check.hexdigest()
    out.write(json.dumps({"sha256": checksum}).encode() + b"\n")
    return checksum


def read_snapshot(path: Path) -> SnapshotFile:
    """The snapshot in `path`, checked whole; SnapshotError saying what is wrong."""
    try:
        with path.open("rb") as stream:
            return _read(stream, path)
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror or exc}") from None


def _read(stream: IO[bytes], path: Path) -> SnapshotFile:
    check = hashlib.sha256()
    lines = _lines(stream, check, path)
    header = next(lines, None)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not an mqtt-kv snapshot (its first line says otherwise)")
    if header.get("version") != VERSION:
        raise SnapshotError(
            f"{path} is a snapshot of version {header.get('version')!r}; this mqtt-kv reads "
            f"version {VERSION} (restore it with the mqtt-kv that wrote it)"
        )
    try:
        position, keys, leases = int(header["position"]), int(header["keys"]), header["leases"]
        digest = str(header["digest"])
    except (KeyError, TypeError, ValueError):
        raise SnapshotError(f"{path}: its header is damaged") from None
    pairs: dict[str, tuple[str, int]] = {}
    records: list[LeaseRecord] = []
    checksum: str | None = None
    for number, obj in enumerate(lines, start=2):
        if checksum is not None:
            raise SnapshotError(f"{path}: damaged: line {number} follows the checksum")
        if isinstance(obj, list) and len(obj) == 3 and _pair(obj):
            pairs[obj[0]] = (obj[1], obj[2])
        elif isinstance(obj, dict) and "lease" in obj:
            try:
                records.append(LeaseRecord(*obj["lease"]))
            except TypeError:
                raise SnapshotError(f"{path}: damaged: line {number} is not a lease") from None
        elif isinstance(obj, dict) and "sha256" in obj:
            checksum = str(obj["sha256"])
        else:
            raise SnapshotError(f"{path}: damaged: line {number} is not a pair or a lease")
    if checksum is None:
        raise SnapshotError(
            f"{path} is truncated: it ends without its checksum line ({len(pairs)} of {keys} "
            "keys read)"
        )
    if checksum != check.hexdigest():
        raise SnapshotError(f"{path} is damaged: its checksum does not match its content")
    if len(pairs) != keys or len(records) != leases:
        found = f"{len(pairs)} keys and {len(records)} leases"
        raise SnapshotError(f"{path} is damaged: {found} where its header says {keys} and {leases}")
    if pairs_digest(pairs.items()) != digest:
        raise SnapshotError(f"{path} is damaged: its pairs do not give the digest it records")
    return SnapshotFile(
        position, digest, pairs, records, float(header.get("taken_at") or 0),
        int(header.get("replica") or 0),
    )  # fmt: skip


def _pair(obj: list[Any]) -> bool:
    key, value, revision = obj
    return isinstance(key, str) and isinstance(value, str) and type(revision) is int


def _lines(stream: IO[bytes], check: Any, path: Path) -> Iterator[Any]:
    """Each line decoded; the checksum fed every line but the checksum's own."""
    for number, raw in enumerate(stream, start=1):
        if not raw.endswith(b"\n"):
            raise SnapshotError(f"{path} is truncated: line {number} is cut short")
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise SnapshotError(f"{path}: damaged: line {number} is not JSON") from None
        if not (isinstance(obj, dict) and "sha256" in obj):
            check.update(raw)
        yield obj


def pairs_digest(pairs: Iterable[tuple[str, tuple[str, int]]]) -> str:
    return digest_of((k, pack(v, r)) for k, (v, r) in pairs)
