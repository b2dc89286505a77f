"""A full disk under `--data-dir` (issue 29), on a real file system: replica 0's directory on
an 8 MB tmpfs that a filler file then fills. Its write fails, is rolled back whole, and it
answers nothing more (the other replicas go on answering their keys) while its heartbeat,
`kvclient status`, a `kvclient put` that timed out and its metrics say why; when the filler
is deleted, its held answers go out, the write that waited is acknowledged, and after a
`kill -9` its directory holds it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvclient import KVClient
from kvclient.operations import Put
from kvclient.status import ClusterWatch, as_rows
from tests.cluster import Cluster, wait_until
from tests.test_cluster import key_owned_by, kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@contextlib.contextmanager
def small_file_system(where: Path, size: str = "8m") -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:  # tests/test_disk.py checks the seam without one
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system up; the file that does it."""
    filler = directory / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


def disk_full(watch: ClusterWatch) -> list[int]:
    """What `kvclient status --json` says in `disk_full`, read in-process (no listen time)."""
    rows = as_rows(watch.status(), 3)
    return [int(row["replica"]) for row in rows if row["disk_full"]]  # type: ignore[call-overload]


def test_a_full_disk_holds_the_answers_and_recovers_when_there_is_room(tmp_path: Path) -> None:
    with small_file_system(tmp_path / "small") as small:
        cluster = Cluster(tmp_path, data=True, metrics=True)
        cluster.data_dirs[0] = small / "0"
        try:
            cluster.start()
            mine, other = key_owned_by(0, prefix="full/"), key_owned_by(1, prefix="full/")
            with (
                KVClient(cluster.address, timeout=60, retry_interval=1.0) as kv,
                ClusterWatch(cluster.address) as watch,
            ):
                kv.put(mine, "before")
                filler = fill(small)
                # The WAL has room left in it: writes of new pages run out of it soon.
                waiting = None
                for i in range(60):
                    pending = kv.submit(Put(key_owned_by(0, prefix=f"big{i}/"), "x" * 200_000))
                    try:
                        pending.result(timeout=1.5)
                    except TimeoutError:
                        waiting = pending
                        break
                assert waiting is not None, "replica 0's writes never ran out of room"
                assert wait_until(lambda: disk_full(watch) == [0], 10, "status to say so")
                log = cluster.replicas[0].log()
                assert "cannot write its data directory" in log and "is full" in log
                assert kv.put(other, "still answered") > 0  # replica 1's keys are not held
                assert kv.get(other) == "still answered"
                health = kvclient(cluster, "health")
                assert health.returncode == 2 and "data directory is full" in health.stdout
                # What a person at the shell sees: the timeout, and why, on one line.
                cli_key = key_owned_by(0, prefix="cli/")
                put = kvclient(cluster, "put", cli_key, "v", "--timeout", "1")
                lines = put.stderr.strip().splitlines()
                assert put.returncode == 2 and len(lines) == 1, put
                assert "no replica answered within 1 s" in lines[0]
                assert "replica 0, which answers key" in lines[0]
                assert "says its data directory is full" in lines[0]
                held = kv.submit(Put(mine, "after"))
                time.sleep(0.5)
                assert not held.done()  # held, not refused: its outcome comes with the room

                filler.unlink()
                assert held.result(timeout=30).status == "ok"
                assert waiting.result(timeout=30).status == "ok"
                assert kv.get(mine) == "after"
                wait_until(lambda: disk_full(watch) == [], 10, "status to say it has room")
                assert "has room in its data directory again" in cluster.replicas[0].log()

            cluster.replicas[0].kill()  # what it acknowledged is on its disk
            cluster.start_replica(0)
            cluster.wait_log(0, "joined at position", 30)
            assert "holds" in cluster.replicas[0].log()
            with KVClient(cluster.address, timeout=20) as kv:
                assert kv.get(mine) == "after"
        finally:
            cluster.close()
