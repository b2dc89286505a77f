"""Data on disk (protocol §17): what `kvserver.disk` writes is what it reads back, damaged or
foreign directories are refused, and the state machine's recovery rule with data on disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kvserver.disk import DB_NAME, DataDir, DataDirError, DiskFull
from kvserver.durable import OnDisk, Written
from kvserver.history import RequestLog, SeenSet
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.settings import ReplicaSettings
from kvserver.store import Store
from kvserver.writes import earlier_outcome
from kvwire.messages import Insercao, LoggedRequest, NovoServ
from kvwire.ring import key_slot
from tests.bus import CLIENT_TOPIC, Bus


def fresh_core(store: Store, seen_capacity: int = 200_000) -> Replica:
    """A durable replica of a new cluster holding `store`: what it hands over is what a
    replica's adapter writes."""
    settings = ReplicaSettings(
        replica_id=0, n=3, data_dir=Path("/unused"), dedup_capacity=seen_capacity
    )
    return Replica.fresh(settings, incarnation="a", store=store)


def durable(core: Replica) -> Written:
    written = core.ready().durable
    assert written is not None
    return written


def write_all(disk: DataDir, bus: Bus, replica_id: int) -> None:
    for i, written in bus.written:
        if i == replica_id:
            disk.write(written)


def open_dir(path: Path, n: int = 3, replica_id: int = 0) -> DataDir:
    return DataDir(path, replica_id=replica_id, n=n, sync="periodic")


def test_what_is_written_is_read_back_in_order(tmp_path: Path) -> None:
    disk = open_dir(tmp_path)
    assert disk.load() is None  # a new directory holds nothing
    bus = Bus.fresh(3, durable=True, dedup_capacity=3)
    for i in range(5):
        bus.put(f"k{i % 2}", f"v{i}", rid=i)
    deleted = bus.delete("k1", rid=99)
    bus.stop(2)
    bus.fail(2)  # the view changes too
    replica = bus.replica(0)
    write_all(disk, bus, 0)
    disk.force()
    disk.close()
    with open_dir(tmp_path) as again:
        back, recent = again.load(), again.load(since=0.0)
    assert back is not None and recent is not None
    assert back.position == replica.position == 7
    assert dict(back.store.items()) == {"k0": ("v4", 5)}
    # The outcomes come back for the log: a plain put's is its revision (its value is its own).
    outcomes = [
        LoggedRequest(bus.now, "i", "k1", CLIENT_TOPIC, 3, None, "ok", 4),
        LoggedRequest(bus.now, "i", "k0", CLIENT_TOPIC, 4, None, "ok", 5),
        LoggedRequest(bus.now, "r", "k1", CLIENT_TOPIC, deleted, None, "ok", 6),
    ]
    assert back.outcomes == [] and recent.outcomes == outcomes
    assert back.store.digest() == replica.store.digest()
    assert (
        back.seen.snapshot() == replica.seen.snapshot() == [(CLIENT_TOPIC, i) for i in (3, 4, 99)]
    )
    assert back.live == [True, True, False]
    assert back.incarnations == replica.view.incarnations


def test_a_whole_state_replaces_what_was_there(tmp_path: Path) -> None:
    disk = open_dir(tmp_path)
    old = Store()
    old.put("gone", "x", 2)
    disk.write(durable(fresh_core(old)))
    new = Store()
    new.load({f"k{i}": (str(i), i) for i in range(120_000)})  # more than one slice
    core = fresh_core(new)
    for rid in (1, "x"):
        core.on_request(Insercao(chave="a", novovalor="1", topico_resp="u", idpedido=rid), 0.0)
    beats = []
    disk.write(durable(core), between=lambda: beats.append(1))
    disk.close()
    with open_dir(tmp_path) as again:
        back = again.load()
    assert back is not None and back.position == 2
    assert len(back.store) == 120_001 and back.store.get("gone") is None
    assert back.seen.snapshot() == [("u", 1), ("u", "x")]  # an idpedido keeps its type
    assert len(beats) >= 2


def test_a_second_process_on_one_directory_is_refused(tmp_path: Path) -> None:
    first = open_dir(tmp_path)
    with pytest.raises(DataDirError, match=r"in use by process \d+"):
        open_dir(tmp_path)
    first.close()
    open_dir(tmp_path).close()  # free again once the first is gone


def test_a_directory_of_another_cluster_size_or_replica_is_refused(tmp_path: Path) -> None:
    open_dir(tmp_path, n=5).close()
    with pytest.raises(DataDirError, match="cluster of 5 replicas, not 3"):
        open_dir(tmp_path, n=3)
    with pytest.raises(DataDirError, match="belongs to replica 0, not 2"):
        open_dir(tmp_path, n=5, replica_id=2)


@pytest.mark.parametrize(("version", "says"), [("99", "newer mqtt-kv"), ("1", "older mqtt-kv")])
def test_another_format_is_refused(tmp_path: Path, version: str, says: str) -> None:
    open_dir(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'format'", (version,))
    with pytest.raises(DataDirError, match=says):
        open_dir(tmp_path)


def fill(path: Path, keys: int = 2000) -> None:
    disk = open_dir(path)
    store = Store()
    pairs = {f"key-{i}": ("v" * 100, i + 1) for i in range(keys)}
    store.load(pairs)
    disk.write(durable(fresh_core(store)))
    disk.close()


def test_a_changed_row_is_caught_by_the_digest(tmp_path: Path) -> None:
    fill(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("UPDATE pairs SET value = 'tampered' WHERE key = 'key-7'")
    with open_dir(tmp_path) as disk, pytest.raises(DataDirError, match=r"damaged .*digest"):
        disk.load()


def test_a_truncated_file_is_refused_not_served(tmp_path: Path) -> None:
    fill(tmp_path, keys=20_000)
    # Fold the WAL into the main file, then cut the file in half, as a full disk might.
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / DB_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataDirError, match="damaged"), open_dir(tmp_path) as disk:
        disk.load()


def test_garbage_in_place_of_the_database_is_refused(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(DataDirError, match="damaged"), open_dir(tmp_path) as disk:
        disk.load()


# --- the state machine with data on disk ----------------------------------------------------


def test_a_replica_recovered_from_disk_offers_its_position() -> None:
    settings = ReplicaSettings(replica_id=1, n=3, data_dir=Path("/unused"))
    store = Store()
    store.put("k", "v", 1)
    disk = open_dir_state(store)
    replica = Replica.recovered(settings, incarnation="a", disk=disk)
    assert replica.state == "starting"
    replica.connected("b", 0.0)
    [announce] = replica.ready().effects
    message = announce.message  # type: ignore[union-attr]
    assert isinstance(message, NovoServ) and message.posicao == 42
    assert heartbeat(replica, 0.0).posicao == 42


def open_dir_state(store: Store) -> OnDisk:
    return OnDisk(
        position=42,
        store=store,
        seen=SeenSet(10),
        live=[True, True, True],
        incarnations=[None, None, None],
    )


def stop_everything_and_restart(bus: Bus, restarted: list[int]) -> None:
    """Every replica fenced at once (as after a power cut), then only `restarted` run."""
    for i in range(3):
        bus.pause(i)
    for i in range(3):
        bus.fail(i)
    for i in restarted:
        bus.members[i].reading = True
    bus.run()


def test_with_data_on_disk_nobody_resumes_until_the_whole_last_view_reported() -> None:
    bus = Bus.fresh(3, durable=True)
    for i in range(20):
        bus.put(f"k{i}", f"v{i}")
    stop_everything_and_restart(bus, restarted=[0, 1])
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in (0, 1)] == ["joining", "joining"]
    bus.members[2].reading = True  # the third comes back: now the highest resumes
    bus.run()
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in range(3)] == ["live"] * 3
    assert len(bus.digests()) == 1
    assert bus.answer(bus.get("k19")).valor == "v19"


def test_an_operator_lets_the_others_resume_without_a_lost_replica() -> None:
    bus = Bus.fresh(3, durable=True)
    rid = bus.put("c", "kept")
    assert bus.answer(rid).status == "ok"
    stop_everything_and_restart(bus, restarted=[0, 1])
    bus.advance(bus.join_timeout)
    bus.order_recovery([2])
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in (0, 1)] == ["live", "live"]
    assert bus.answer(bus.get("c")).valor == "kept"


def test_in_memory_the_highest_resumes_without_waiting_for_the_dead() -> None:
    bus = Bus.fresh(3)
    bus.put("c", "v")
    stop_everything_and_restart(bus, restarted=[0, 1])
    for _ in range(4):
        bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in (0, 1)] == ["live", "live"]


def test_the_core_hands_its_changes_over_once() -> None:
    bus = Bus.fresh(3, durable=True)
    first = [w for i, w in bus.written if i == 0]
    assert len(first) == 1 and first[0].changes.everything  # a fresh replica at once
    bus.put("a", "1", rid=1)
    bus.put("a", "1", rid=1)  # a retry: nothing new to write but the position
    changes = [w.changes for i, w in bus.written[len(first) * 3 :] if i == 0]
    assert changes[0].puts == {"a": ("1", 1)} and len(changes[0].seen) == 1
    assert not changes[1]
    assert bus.replica(0).ready().durable is None  # nothing more


def test_with_the_whole_view_reported_the_highest_resumes_without_the_join_timeout() -> None:
    bus = Bus.fresh(3, durable=True)
    bus.put("c", "v")
    stop_everything_and_restart(bus, restarted=[0, 1, 2])
    bus.advance(0.3)  # one heartbeat interval, far below the join timeout
    # Replica 2 read the three failures, the others stopped at their own: it is highest.
    assert [bus.replica(i).state for i in range(3)] == ["joining", "joining", "live"]
    bus.advance(0.3)
    bus.advance(bus.join_timeout)
    assert [bus.replica(i).state for i in range(3)] == ["live"] * 3
    assert bus.answer(bus.get("c")).valor == "v"


def test_in_memory_a_joiner_still_waits_out_the_join_timeout() -> None:
    bus = Bus.fresh(3)
    stop_everything_and_restart(bus, restarted=[0, 1, 2])
    bus.advance(0.3)
    assert [bus.replica(i).state for i in range(3)] == ["joining"] * 3


def test_no_answer_of_a_step_goes_out_when_its_disk_write_fails() -> None:
    """The owner's disk fails as it writes a put: it dies with nothing published (its
    successor answers the retry), where an answer first would claim a write not on disk."""
    bus = Bus.fresh(3, durable=True)
    before = bus.put("c", "old")  # "c" is replica 0's
    assert [a.idserv for a in bus.answers_to(before)] == [0]
    bus.failing_disks = {0}
    rid = bus.put("c", "new")
    assert bus.answers_to(rid) == []
    assert bus.members[0].exited
    bus.fail(0)  # its last will, then the monitor's verdict: replica 1 replays the put
    assert [(a.idserv, a.status, a.valor) for a in bus.answers_to(rid)] == [(1, "ok", "new")]


def test_every_answer_follows_the_write_of_its_step() -> None:
    """The bus checks it on every hand-off; this drives each kind of answer through it."""
    bus = Bus.fresh(3, durable=True, mirror="kv")
    for i in range(30):
        bus.put(f"k{i}", str(i))
        bus.get(f"k{i}")
    bus.delete("k3")
    bus.list_keys("k")
    bus.stop(1)
    bus.fail(1)
    bus.start_joining(1)
    written = [w.position for i, w in bus.written if i == 0]
    assert written == sorted(written) and written[-1] == bus.replica(0).position
    replayed = 2 * sum(key_slot(f"k{i}", 3) == 1 for i in range(30))  # 1's puts and gets
    assert len(bus.answers) == 30 + 30 + 1 + 1 + replayed


def test_a_put_retried_after_a_restart_from_disk_is_answered_with_its_own_revision() -> None:
    store = Store()
    store.put("k", "later", 9)
    retry = Insercao(chave="k", novovalor="mine", topico_resp=CLIENT_TOPIC, idpedido=7)
    # Its outcome as the disk gives it back: the revision, not the value (its own).
    from_disk = RequestLog(10.0, [LoggedRequest(0.0, "i", "k", CLIENT_TOPIC, 7, None, "ok", 4)])
    assert earlier_outcome(from_disk, store, retry) == ("ok", "mine", 4)
    # Forgotten, it is not given the later write's revision; the key's, if it holds its value.
    assert earlier_outcome(RequestLog(10.0), store, retry) == ("ok", "mine", None)
    store.put("k", "mine", 12)
    assert earlier_outcome(RequestLog(10.0), store, retry) == ("ok", "mine", 12)


def test_a_full_disk_rolls_a_write_back_whole_and_it_passes_once_there_is_room(
    tmp_path: Path,
) -> None:
    """The storage seam (issue 29): SQLite's own "database or disk is full" (its page limit
    standing in for a full file system) is `DiskFull`, and nothing of the write stays."""
    disk = open_dir(tmp_path)
    bus = Bus.fresh(3, durable=True)
    bus.put("small", "v")
    write_all(disk, bus, 0)
    written_before = len(bus.written)
    bus.put("big", "x" * 200_000)
    latest = [w for i, w in bus.written[written_before:] if i == 0]
    assert latest
    db = disk._db  # the seam: the file system's room, as SQLite sees it
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(DiskFull, match="is full"):
        for written in latest:
            disk.write(written)
    disk.close()
    with open_dir(tmp_path) as again:  # what a kill -9 now would leave: the last whole write
        back = again.load()
        assert back is not None and back.store.get("big") is None
        assert back.store.get("small") == "v" and back.position == latest[0].position - 1
        for written in latest:
            again.write(written)  # room again (a new connection has no page limit)
        back = again.load()
        assert back is not None and back.store.get("big") == "x" * 200_000
        assert back.store.digest() == bus.replica(0).store.digest()
