"""Failover time: from `kill -9` (or SIGSTOP) of a key's owner to the first answer for it.

Starts its own broker and 3-replica cluster (with the monitor) on a free port. Each trial
stops the owner of a key with SIGSTOP so that a read reaches the stream but not the owner,
then `kill -9`s it and times the successor's answer; the killed replica is restarted and
re-joins before the next trial. A second series times SIGSTOP to the first answer, which
waits for the monitor's heartbeat timeout. A third pauses every replica at once for 2.5 s (a
host pause: the monitor fails all three and each fences) and times SIGCONT to the moment a
key of every owner is answered again with its value (protocol §11's recovery).

    .venv/bin/python scripts/bench_failover.py [--trials 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvclient.client import KVClient
from kvclient.operations import Get
from kvclient.status import ClusterWatch
from kvwire.messages import Resposta
from kvwire.ring import key_slot
from tests.cluster import Cluster


def key_of(owner: int, n: int) -> str:
    return next(f"fk{i}" for i in range(10_000) if key_slot(f"fk{i}", n) == owner)


def answered_at(future: Future[Resposta]) -> list[float]:
    stamp: list[float] = []
    future.add_done_callback(lambda _: stamp.append(time.monotonic()))
    return stamp


def restart(cluster: Cluster, owner: int) -> None:
    cluster.start_replica(owner)
    deadline = time.monotonic() + 20
    while "joined at position" not in cluster.replicas[owner].log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {owner} did not re-join:\n{cluster.logs()}")
        time.sleep(0.01)


def kill_trial(cluster: Cluster, kv: KVClient, owner: int) -> tuple[float, int]:
    key = key_of(owner, cluster.n)
    kv.put(key, "v")
    cluster.replicas[owner].pause()
    pending = kv.submit(Get(key))
    stamp = answered_at(pending)
    time.sleep(0.05)  # the read is in the stream, unanswered
    killed = time.monotonic()
    cluster.replicas[owner].kill()
    answer = pending.result(timeout=10)
    while not stamp:
        time.sleep(0.0005)
    restart(cluster, owner)
    return stamp[0] - killed, answer.idserv


def stop_trial(cluster: Cluster, kv: KVClient, owner: int) -> float:
    key = key_of(owner, cluster.n)
    kv.put(key, "v")
    stopped = time.monotonic()
    cluster.replicas[owner].pause()
    pending = kv.submit(Get(key))
    stamp = answered_at(pending)
    pending.result(timeout=10)
    while not stamp:
        time.sleep(0.0005)
    cluster.replicas[owner].kill()
    restart(cluster, owner)
    return stamp[0] - stopped


def stall_all_trial(cluster: Cluster, trial: int) -> float:
    keys = {key_of(owner, cluster.n): f"stall-{trial}-{owner}" for owner in range(cluster.n)}
    # Retry quickly: requests published while every replica re-joins are dropped (§11).
    with KVClient(cluster.address, timeout=30, retry_interval=0.25) as kv:
        for key, value in keys.items():
            kv.put(key, value)
        resumed = cluster.stall_everyone(2.5)
        pending = {key: kv.submit(Get(key)) for key in keys}
        stamps = [answered_at(future) for future in pending.values()]
        for key, future in pending.items():
            if future.result(timeout=30).valor != keys[key]:
                raise RuntimeError(f"{key} lost its value across the stall:\n{cluster.logs()}")
        while not all(stamps):
            time.sleep(0.0005)
    with ClusterWatch(cluster.address) as watch:  # every replica live again before the next
        watch.wait_for(lambda status: len(status.live()) == cluster.n, 30)
    return max(stamp[0] for stamp in stamps) - resumed


def measure(trials: int = 10, stop_trials: int = 3, stall_trials: int = 3) -> dict[str, Any]:
    """Failover figures from a cluster of its own: kill -9, SIGSTOP and whole-cluster stall
    trials."""
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            with KVClient(cluster.address, timeout=15, retry_interval=5) as kv:
                kills = [kill_trial(cluster, kv, t % cluster.n) for t in range(trials)]
                stops = [stop_trial(cluster, kv, t % cluster.n) for t in range(stop_trials)]
            stalls = [stall_all_trial(cluster, t) for t in range(stall_trials)]
        finally:
            cluster.close()
    kill_ms = [k[0] * 1000 for k in kills]
    return {
        "kill_ms": kill_ms,
        "kill_median_ms": statistics.median(kill_ms),
        "kill_max_ms": max(kill_ms),
        # The successor in ring order, every time: no other replica answered for the dead one.
        "by_successor": all(idserv == (t % 3 + 1) % 3 for t, (_, idserv) in enumerate(kills)),
        "answered_by": [idserv for _, idserv in kills],
        "sigstop_ms": [s * 1000 for s in stops],
        "stall_all_s": stalls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--stop-trials", type=int, default=3)
    parser.add_argument("--stall-trials", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.trials, args.stop_trials, args.stall_trials)
    kill_ms, stop_ms = result["kill_ms"], result["sigstop_ms"]
    print(
        f"kill -9 to first answer, {len(kill_ms)} trials (ms): "
        + " ".join(f"{x:.1f}" for x in kill_ms)
    )
    print(
        f"  median {result['kill_median_ms']:.1f} ms, max {result['kill_max_ms']:.1f} ms; "
        f"answered by the successor every time: {result['by_successor']}"
    )
    print(
        f"SIGSTOP to first answer, {len(stop_ms)} trials (ms): "
        + " ".join(f"{x:.0f}" for x in stop_ms)
        + "  (failure timeout 1000 ms)"
    )
    print(
        f"every replica SIGSTOPped 2.5 s, SIGCONT to every owner's key answered, "
        f"{len(result['stall_all_s'])} trials (s): "
        + " ".join(f"{x:.2f}" for x in result["stall_all_s"])
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
