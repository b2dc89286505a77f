"""Quotas (issue 29) on a real cluster: `--max-keys 1000` refuses the 1,001st new key on every
replica alike, as `kvclient` shows it (one line, non-zero exit; `status` says how full),
accepts overwrites and deletes, and new keys again after deletes; a replica restarted with a
quota smaller than its data directory holds refuses to start, and says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvclient import KVClient, QuotaExceeded
from kvclient.operations import Put
from kvclient.status import ClusterWatch, as_rows
from tests.cluster import Cluster, wait_until
from tests.test_cluster import kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def replica_keys(cluster: Cluster) -> dict[int, object]:
    """Each replica's key count as `kvclient status --json` says it, read in-process."""
    with ClusterWatch(cluster.address) as watch:
        status = watch.wait_for(lambda s: len(s.live()) == cluster.n, 5)
    return {int(row["replica"]): row["keys"] for row in as_rows(status, cluster.n)}  # type: ignore[call-overload]


def test_max_keys_refuses_the_next_new_key_everywhere_and_deletes_make_room(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path, data=True)
    quota = ("--max-keys", "1000")
    try:
        cluster.start(extra=dict.fromkeys(range(cluster.n), quota))
        with KVClient(cluster.address, timeout=15) as kv:
            sent = [kv.submit(Put(f"q/{i:04}", "v")) for i in range(1000)]
            assert {pending.result().status for pending in sent} == {"ok"}
            with pytest.raises(QuotaExceeded, match="quota exceeded"):
                kv.put("q/1000", "v")
            refused = kvclient(cluster, "put", "q/1001", "v")
            assert refused.returncode != 0 and refused.stdout == ""
            assert refused.stderr.count("\n") == 1 and "quota exceeded" in refused.stderr
            at_quota = wait_until(
                lambda: (keys := replica_keys(cluster)) == {0: 1000, 1: 1000, 2: 1000} and keys,
                15, "every replica to hold 1000 keys",
            )  # fmt: skip
            assert at_quota
            status = kvclient(cluster, "status")
            assert "quota: 1000 of 1000 keys (100%)" in status.stdout, status.stdout
            for key in ("q/1000", "q/1001"):  # nothing of a refused write is anywhere
                assert kvclient(cluster, "get", key).returncode != 0
            assert kv.put("q/0000", "again") > 0  # an overwrite adds no key
            kv.delete("q/0001")
            kv.delete("q/0002")
            assert kv.put("q/1000", "now") > 0  # room made by a delete is used
            assert kv.put("q/1001", "now") > 0
            with pytest.raises(QuotaExceeded):
                kv.put("q/1002", "v")
            assert kv.get("q/1001") == "now" and kv.get("q/0000") == "again"
        wait_until(
            lambda: replica_keys(cluster) == {0: 1000, 1: 1000, 2: 1000}, 15,
            "the replicas to agree on 1000 keys",
        )  # fmt: skip
        # The same data directory with a smaller quota: refused at start, with what to do.
        cluster.replicas[2].stop()
        restarted = cluster.start_replica(2, extra=("--max-keys", "10"))
        wait_until(lambda: not restarted.alive(), 20, "replica 2 to refuse to start")
        said = restarted.log()
        assert "--max-keys 10 is smaller than the 1000 keys held" in said, said
        assert "start with a larger quota" in said
        assert restarted.proc.returncode == 2
    finally:
        cluster.close()


def test_a_bad_max_bytes_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvserver", "--id", "0", "--n", "1", "--max-bytes", "lots"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--max-bytes 'lots' is not a size" in done.stderr
