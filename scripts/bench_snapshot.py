"""Backup and restore (issue 29) at size, as an operator runs them: a cluster of K keys
(imported), `kvclient snapshot save` while a 64-in-flight load runs and the load's rate
before and during it, `kvclient snapshot verify`, and a new cluster restored from the file
(`kvserver --restore`): its start-up time and whether every replica reports the snapshot's
digest at its position.

    .venv/bin/python scripts/bench_snapshot.py [--keys 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvclient.bulk import json_line  # noqa: E402
from kvclient.status import ClusterWatch  # noqa: E402
from kvclient.workload import Workload  # noqa: E402
from kvwire.snapshot import read_snapshot  # noqa: E402
from tests.cluster import Cluster, all_equal  # noqa: E402


def kvclient(cluster: Cluster, *args: str) -> tuple[float, str, float]:
    """Run it; its seconds, what it printed, and its peak resident memory in MB."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/kvclient"), *args], env=cluster.env, stdout=out, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)  # its own peak, not the replicas'
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"bench_snapshot: kvclient {' '.join(args)} failed: {err.read().strip()}")
        return time.monotonic() - started, out.read().strip(), usage.ru_maxrss / 1024


def rate(load: Workload, seconds: float) -> float:
    before, started = load.completed(), time.monotonic()
    time.sleep(seconds)
    return (load.completed() - before) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source, path = work / "in.jsonl", work / "backup.kvsnap"
        with open(source, "w", encoding="utf-8") as f:
            for i in range(args.keys):
                f.write(json_line(f"snap/{i:011d}", f"{i:0100d}"))
        (work / "old").mkdir()
        old = Cluster(work / "old", data=True)
        try:
            old.start()
            seconds, said, _ = kvclient(old, "import", str(source))
            print(f"import of {args.keys:,} keys: {seconds:.1f} s", flush=True)
            with Workload(old.address, clients=64, keys=1000, shared=True, timeout=60) as load:
                time.sleep(1.0)
                before = rate(load, 3.0)
                done: list[tuple[float, str, float]] = []
                saving = threading.Thread(
                    target=lambda: done.append(kvclient(old, "snapshot", "save", str(path)))
                )
                saving.start()
                during = rate(load, 1.0)
                saving.join()
            seconds, said, peak = done[0]
            size = path.stat().st_size
            print(f"save, under a 64-in-flight load: {seconds:.2f} s, {size / 1e6:.1f} MB: {said}")
            print(f"  kvclient snapshot save's peak resident memory: {peak:.0f} MB")
            print(
                f"  the load: {before:,.0f} ops/s before, {during:,.0f} in the save's first second"
            )
        finally:
            old.close()
        started = time.monotonic()
        snapshot = read_snapshot(path)
        print(f"verify (read and check whole): {time.monotonic() - started:.2f} s")
        (work / "new").mkdir()
        new = Cluster(work / "new", data=True)
        try:
            started = time.monotonic()
            # Each replica reads and checks the whole file, then writes its whole state.
            restore: dict[int, tuple[str, ...]] = dict.fromkeys(
                range(new.n), ("--restore", str(path))
            )
            new.start(extra=restore, connect_timeout=120)
            with ClusterWatch(new.address) as watch:
                status = watch.wait_for(all_equal(new.n), 120)
            up = time.monotonic() - started
            digests = {r.beat.resumo for r in status.replicas.values()}
            same = digests == {snapshot.digest}
            print(
                f"restore: 3 replicas live in {up:.1f} s, digest equal to the snapshot's: "
                f"{'yes' if same else 'NO'}"
            )
        finally:
            new.close()


if __name__ == "__main__":
    main()
