"""The change feed (protocol §19) with real processes: watchers from a revision get exactly
the acknowledged changes after it, in order, once each, while writers keep 64 writes in flight
and the watch's owner is killed (`kill -9`), the broker is killed and restarted, the whole
cluster is killed and restarted from its data directories, and a `kvclient watch` is killed
and resumed from the last revision it printed. Then what a person types: `--from-revision`
older than the history, and `kvclient history`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvclient.client import KVClient
from kvwire.ring import key_slot
from tests.cluster import Cluster, wait_until
from tests.feed_chaos import (
    PREFIX,
    ChangeWriter,
    CliWatcher,
    Watcher,
    agree,
    catch_up,
    problems,
)
from tests.test_cluster import kvclient
from tests.test_disk_cluster import restart_everything

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_watchers_get_every_change_once_in_order_through_four_faults(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, data=True)
    writers: list[ChangeWriter] = []
    watchers: list[Watcher] = []
    cli: CliWatcher | None = None
    try:
        cluster.start()
        with KVClient(cluster.address, timeout=10) as kv:
            for i in range(50):  # history from before the watchers: they start mid-way
                kv.put(f"{PREFIX}early/{i}", str(i))
            start = kv.put(f"{PREFIX}early/start", "x") - 20
        writers = [ChangeWriter(cluster.address, f"w{i}") for i in range(3)]
        watchers = [Watcher(cluster.address, start) for _ in range(2)]
        cli = CliWatcher(cluster.env, start)

        def more(count: int) -> None:
            goal = sum(w.count() for w in writers) + count
            wait_until(lambda: sum(w.count() for w in writers) >= goal, 90, f"{count} writes")

        more(600)
        owner = key_slot(watchers[0].topic, cluster.n)
        cluster.replicas[owner].kill()  # (a) the watch's owner, kill -9, mid-stream
        more(600)
        cluster.start_replica(owner)  # it joins again and takes its watches back
        cluster.broker.kill()  # (b) the broker, kill -9, then started again
        cluster.broker.start()
        more(600)
        cli.kill_and_resume()  # (d) the watcher itself, from the last revision it printed
        more(600)
        cluster.kill_everything()  # (c) every process at once, then restarted from disk
        restart_everything(cluster, list(range(cluster.n)))
        more(600)
        for writer in writers:
            writer.close()
        everyone: list[Watcher | CliWatcher] = [*watchers, cli]
        last = catch_up(cluster.address, everyone, 60)
        acked = sorted([*(a for w in writers for a in w.acked), last])
        upto = last.revision
        cli.stop()
        for i, watcher in enumerate(everyone):
            assert (i, problems(start, watcher.seen, acked, upto)) == (i, [])
        assert agree([(start, w.seen) for w in everyone]) == []
        ours = sum(1 for a in acked if a.key.startswith(PREFIX) and a.revision > start)
        handed = [len(w.seen) for w in everyone]
        restarts = [w.restarts for w in watchers]
        print(f"{len(acked)} acknowledged, {ours} watched; handed on {handed}, restarts {restarts}")
    finally:
        for writer in writers:
            writer.close()
        for watcher in watchers:
            watcher.close()
        if cli is not None:
            cli.close()
        cluster.close()


def test_a_revision_older_than_the_history_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start(extra=dict.fromkeys(range(3), ("--history", "5")))
        with KVClient(cluster.address, timeout=10) as kv:
            for i in range(10):
                last = kv.put("color", f"c{i}")
        watch = kvclient(cluster, "watch", "", "--from-revision", "1")
        assert watch.returncode == 2
        lines = watch.stderr.strip().splitlines()
        assert len(lines) == 1 and "revision 1 is compacted" in lines[0]
        oldest = last - 5
        assert f"after revision {oldest} only" in lines[0]
        history = kvclient(cluster, "history", "color", "--json")
        assert history.returncode == 0, history.stderr
        kept = [json.loads(line) for line in history.stdout.splitlines()]
        assert [c["valor"] for c in kept] == [f"c{i}" for i in range(5, 10)]
        assert kept[-1]["revisao"] == last
    finally:
        cluster.close()
