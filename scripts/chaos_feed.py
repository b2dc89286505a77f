"""The change feed under faults (protocol §19), for as long as asked: 3 writers keep 64 puts,
deletes and compare-and-sets in flight for `--seconds` while 3 watchers (two `KVClient.watch`,
one `kvclient watch --from-revision` process) follow `feed/` from a revision before the load;
meanwhile, spread over the run, the owner of a watch is killed (`kill -9`) and restarted, the
broker is killed and restarted, the watcher process is killed and resumed from the last
revision it printed, and every process is killed at once and the cluster restarted from its
data directories. Then: each watcher got exactly the acknowledged changes after its revision,
in order, once each, and the three agree. `tests/test_feed_cluster.py` is the same, shorter.

    .venv/bin/python scripts/chaos_feed.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvclient.client import KVClient
from kvwire.ring import key_slot
from tests.cluster import Cluster
from tests.feed_chaos import (
    PREFIX,
    ChangeWriter,
    CliWatcher,
    Watcher,
    agree,
    catch_up,
    problems,
)
from tests.test_disk_cluster import restart_everything


class Run:
    """The writers and watchers of one run, started at once, ended by `close`."""

    def __init__(self, cluster: Cluster) -> None:
        self.address = cluster.address
        with KVClient(cluster.address, timeout=10) as kv:
            for i in range(200):
                kv.put(f"{PREFIX}early/{i}", str(i))
            self.start = kv.put(f"{PREFIX}early/start", "x") - 100  # within the history
        self.writers = [ChangeWriter(cluster.address, f"w{i}") for i in range(3)]
        self.watchers = [Watcher(cluster.address, self.start) for _ in range(2)]
        self.cli = CliWatcher(cluster.env, self.start)

    def verdict(self) -> list[str]:
        for writer in self.writers:
            writer.close()
        everyone: list[Watcher | CliWatcher] = [*self.watchers, self.cli]
        last = catch_up(self.address, everyone, 60)
        acked = sorted([*(a for w in self.writers for a in w.acked), last])
        upto = last.revision
        self.cli.stop()
        found = [p for w in everyone for p in problems(self.start, w.seen, acked, upto)]
        found += agree([(self.start, w.seen) for w in everyone])
        watched = sum(1 for a in acked if a.key.startswith(PREFIX) and a.revision > self.start)
        refused = sum(w.refused for w in self.writers)
        print(f"{len(acked)} changes acknowledged ({refused} compare-and-sets lost or deletes "
              f"of nothing), {watched} of them watched; the watchers handed on "
              f"{[len(w.seen) for w in everyone]} changes, registered again "
              f"{[w.restarts for w in self.watchers]} times")  # fmt: skip
        return found

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for watcher in self.watchers:
            watcher.close()
        self.cli.close()


def faults(cluster: Cluster, run: Run, seconds: float) -> None:
    began = time.monotonic()
    owner = key_slot(run.watchers[0].topic, cluster.n)

    def at(fraction: float, what: str) -> None:
        wait = began + fraction * seconds - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        done = sum(w.count() for w in run.writers)
        print(f"{time.monotonic() - began:5.1f} s, {done} acknowledged: {what}", flush=True)

    at(0.15, f"kill -9 replica {owner}, the owner of a watch")
    cluster.replicas[owner].kill()
    at(0.3, f"replica {owner} restarted (it joins)")
    cluster.start_replica(owner)
    at(0.45, "kill -9 the broker, and start it again")
    cluster.broker.kill()
    cluster.broker.start()
    at(0.6, "kill -9 kvclient watch, resumed from its last revision printed")
    run.cli.kill_and_resume()
    at(0.75, "kill -9 every process; restart from the data directories")
    cluster.kill_everything()
    restart_everything(cluster, list(range(cluster.n)))
    at(1.0, "the writers stop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), data=True)
        run: Run | None = None
        try:
            cluster.start()
            run = Run(cluster)
            faults(cluster, run, args.seconds)
            found = run.verdict()
        finally:
            if run is not None:
                run.close()
            cluster.close()
    print("problems:", found or "none")
    if found:
        sys.exit(1)


if __name__ == "__main__":
    main()
