"""Backups (issue 29), without a broker: an `instantaneo` answered by its owner alone with the
store as of its position (later writes not in it), the file's round trip and every way a
file is refused (truncated at a line or inside one, a changed byte, another version, not a
snapshot), and replicas restored from a file agreeing with the cluster that wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvclient.snapshot import Receiver, Spool
from kvserver.replica import Replica
from kvwire.errors import KVError
from kvwire.ring import key_slot
from kvwire.snapshot import Instantaneo, SnapshotError, SnapshotFile, read_snapshot, write_snapshot
from tests.bus import Bus

N = 3
TOPIC = "inf1406-resp/snapshot-1"


def taken(bus: Bus, rid: str = "s1") -> SnapshotFile:
    bus.publish(Instantaneo(topico_resp=TOPIC, idpedido=rid))
    bus.put("a", "after")  # applied after the snapshot's position: not in it
    sent = [t for t in bus.transfers if t.topic == TOPIC]
    assert len(sent) == 1, "the owner of the topic alone sends it"
    receiver = Receiver()
    for chunk in sent[0].chunks:
        receiver.add(chunk.encode())
    assert receiver.done
    return receiver.snapshot()


def test_a_snapshot_holds_the_store_as_of_its_position_and_nothing_later() -> None:
    bus = Bus.fresh(N, chunk_items=2)
    for i in range(7):
        bus.put(f"k{i}", f"v{i}")
    revision_a = bus.answer(bus.put("a", "before")).revisao
    at = bus.replica(0).position + 1
    digest = bus.replica(0).store.digest()
    snapshot = taken(bus)
    assert snapshot.position == at and snapshot.digest == digest
    assert snapshot.pairs["a"] == ("before", revision_a)
    assert len(snapshot.pairs) == 8
    assert snapshot.replica == key_slot(TOPIC, N)
    assert {bus.replica(i).store.get("a") for i in range(N)} == {"after"}


def test_a_snapshot_file_round_trips_and_replicas_restored_from_it_agree(tmp_path: Path) -> None:
    bus = Bus.fresh(N)
    bus.grant("session", 30)
    for i in range(5):
        bus.put(f"k{i}", str(i), lease="session" if i == 0 else None)
    snapshot = taken(bus)
    path = tmp_path / "backup.kvsnap"
    with path.open("wb") as out:
        write_snapshot(out, snapshot)
    back = read_snapshot(path)
    assert (back.position, back.digest, back.pairs) == (
        snapshot.position, snapshot.digest, snapshot.pairs,
    )  # fmt: skip
    assert [(lease.name, lease.keys) for lease in back.leases] == [("session", ["k0"])]
    restored = [
        Replica.restored(bus.config(i), incarnation=f"new-{i}", snapshot=back) for i in range(N)
    ]
    assert {(r.position, r.store.digest(), r.state) for r in restored} == {
        (snapshot.position, snapshot.digest, "live")
    }
    assert all(r.leases.is_live("session") for r in restored)


def test_chunks_spooled_on_disk_write_the_same_file_as_a_snapshot_held_whole(
    tmp_path: Path,
) -> None:
    """`kvclient snapshot save` spools pairs in SQLite as chunks come and writes them in key
    order from there: the file is byte for byte the one written from memory, keys with NUL,
    accents and astral characters sorted as Python sorts them; the scratch file goes."""
    bus = Bus.fresh(N, chunk_items=3)
    keys = ["b", "a\x00z", "a", "é", "z", "\U0001f600", "Z", "ab", "a\x7f", "\x80"]
    for i, key in enumerate(keys):
        bus.put(key, f"v{i} ✓")
    bus.grant("session", 30)
    bus.put("leased", "x", lease="session")
    bus.publish(Instantaneo(topico_resp=TOPIC, idpedido="s1"))
    bus.put("later", "not in it")  # the turn that sends it
    chunks = next(t for t in bus.transfers if t.topic == TOPIC).chunks
    assert len(chunks) > 2
    receiver = Receiver(Spool(tmp_path))
    for chunk in reversed(chunks):  # in any order, and once each
        receiver.add(chunk.encode())
        receiver.add(chunk.encode())
    assert receiver.done and receiver.spool.count == len(keys) + 1
    spooled = tmp_path / "spooled.kvsnap"
    saved = receiver.write(spooled)
    receiver.spool.close()
    assert [p.name for p in tmp_path.iterdir()] == ["spooled.kvsnap"]  # no scratch left
    whole = read_snapshot(spooled)
    assert list(whole.pairs) == sorted([*keys, "leased"])
    held = tmp_path / "held.kvsnap"
    with held.open("wb") as out:
        whole.taken_at = saved.header.taken_at
        assert write_snapshot(out, whole) == saved.checksum
    assert held.read_bytes() == spooled.read_bytes()


def test_a_spool_emptied_for_another_attempt_holds_only_the_new_sender_s_pairs() -> None:
    """The sender died mid-way: its successor's snapshot (a later position) starts over."""
    bus = Bus.fresh(N, chunk_items=2)
    for i in range(6):
        bus.put(f"k{i}", f"v{i}")
    first = taken(bus, "s1")
    bus.publish(Instantaneo(topico_resp=TOPIC, idpedido="s2"))
    bus.put("b", "later")
    chunks = [t for t in bus.transfers if t.topic == TOPIC][-1].chunks
    spool = Spool()
    half = Receiver(spool)
    half.add(chunks[0].encode())
    assert not half.done and spool.count > 0
    spool.clear()
    again = Receiver(spool)
    for chunk in chunks:
        again.add(chunk.encode())
    second = again.snapshot()
    assert second.position > first.position and second.pairs["k0"] == first.pairs["k0"]
    # `taken` wrote "a" after the first snapshot's position; "b" came after the second's.
    assert sorted(second.pairs) == sorted([*first.pairs, "a"])
    assert second.pairs["a"][0] == "after"
    spool.close()


def test_a_chunk_that_repeats_a_key_fails_the_check_against_the_sender_s_digest() -> None:
    bus = Bus.fresh(N, chunk_items=2)
    for i in range(6):
        bus.put(f"k{i}", f"v{i}")
    bus.publish(Instantaneo(topico_resp=TOPIC, idpedido="s1"))
    bus.put("later", "x")
    chunks = next(t for t in bus.transfers if t.topic == TOPIC).chunks
    taken_key = next(iter(chunks[0].pares))
    lost_key = next(iter(chunks[1].pares))
    pares = {taken_key if k == lost_key else k: v for k, v in chunks[1].pares.items()}
    revisoes = {k: chunks[0].revisoes.get(k) or chunks[1].revisoes[k] for k in pares}
    wrong = chunks[1].model_copy(update={"pares": pares, "revisoes": revisoes})
    receiver = Receiver()
    for chunk in [chunks[0], wrong, *chunks[2:]]:
        receiver.add(chunk.encode())
    assert receiver.done
    with pytest.raises(SnapshotError, match="does not match its own digest"):
        receiver.header()
    receiver.spool.close()


def good_file(tmp_path: Path) -> Path:
    pairs = {f"key{i}": (f"value {i} é", i + 1) for i in range(50)}
    from kvwire.snapshot import pairs_digest

    snapshot = SnapshotFile(60, pairs_digest(pairs.items()), pairs)
    path = tmp_path / "good.kvsnap"
    with path.open("wb") as out:
        write_snapshot(out, snapshot)
    read_snapshot(path)  # whole
    return path


def refused(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "bad.kvsnap"
    path.write_bytes(data)
    with pytest.raises(SnapshotError) as caught:
        read_snapshot(path)
    assert isinstance(caught.value, KVError)  # the CLI's one line and exit 2
    return str(caught.value)


def test_a_truncated_damaged_or_foreign_file_is_refused_saying_why(tmp_path: Path) -> None:
    data = good_file(tmp_path).read_bytes()
    lines = data.splitlines(keepends=True)
    assert "ends without its checksum line (30 of 50 keys" in refused(
        tmp_path, b"".join(lines[:31])
    )
    assert "line 31 is cut short" in refused(tmp_path, b"".join(lines[:30]) + lines[30][:5])
    assert "checksum does not match" in refused(tmp_path, data.replace(b"value 7", b"value 8"))
    header = json.loads(lines[0])
    header["version"] = 2
    other = json.dumps(header).encode() + b"\n" + b"".join(lines[1:])
    assert "version 2; this mqtt-kv reads version 1" in refused(tmp_path, other)
    assert "not an mqtt-kv snapshot" in refused(tmp_path, b'{"key": "a", "value": "b"}\n')
    assert "not an mqtt-kv snapshot" in refused(tmp_path, b"")
    missing = tmp_path / "missing.kvsnap"
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        read_snapshot(missing)
