"""The lock and the election built on leases (protocol §18), run as a user runs them:
`kvclient lock NAME -- COMMAND` and `kvclient elect NAME VALUE`, against real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import Cluster, Lines, interrupt, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def kvclient_bg(cluster: Cluster, *args: str) -> subprocess.Popen[str]:
    """A kvclient in a session of its own, so that its COMMAND can be killed with it."""
    return subprocess.Popen(
        [sys.executable, "-m", "kvclient", *args],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def end(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_two_lock_holders_never_interleave_and_a_killed_holder_lets_go(
    mirrored: Cluster, tmp_path: Path
) -> None:
    record = tmp_path / "order"
    job = f"echo start $KV_LOCK_REVISION >> {record}; sleep 1; echo end >> {record}"
    both = [kvclient_bg(mirrored, "lock", "job", "--", "sh", "-c", job) for _ in range(2)]
    try:
        assert [proc.wait(60) for proc in both] == [0, 0]
    finally:
        end(*both)
    lines = record.read_text().split("\n")
    assert [line.split()[0] for line in lines if line] == ["start", "end", "start", "end"]
    tokens = [int(line.split()[1]) for line in lines if line.startswith("start")]
    assert tokens[0] < tokens[1], "each new holder's fencing token is higher"
    # A holder killed with kill -9 while it runs: the waiter runs within the TTL (2 s) + 1 s.
    holder = kvclient_bg(mirrored, "lock", "--ttl", "2s", "job", "--", "sh", "-c",
                         f"echo held >> {record}; sleep 60")  # fmt: skip
    waiter = None
    try:
        wait_until(lambda: "held" in record.read_text(), 60, "the holder to run")
        waiter = kvclient_bg(mirrored, "lock", "job", "--", "sh", "-c", f"echo next >> {record}")
        time.sleep(2.0)  # long enough for a Python to start and wait on the lock
        assert "next" not in record.read_text()
        os.kill(holder.pid, signal.SIGKILL)  # kvclient only: its COMMAND sleeps on
        killed = time.monotonic()
        assert waiter.wait(30) == 0
        assert time.monotonic() - killed < 2 + 1
        assert record.read_text().endswith("held\nnext\n")
    finally:
        end(holder, *([waiter] if waiter else []))


def test_an_election_has_one_leader_and_the_next_leads_when_it_is_killed(
    mirrored: Cluster,
) -> None:
    candidates, errors = [], []
    try:
        for name in ("a", "b", "c"):
            candidates.append(kvclient_bg(mirrored, "elect", "--ttl", "2s", "svc/leader", name))
            assert candidates[-1].stderr is not None
            errors.append(Lines(candidates[-1].stderr))
            errors[-1].next(60, f"candidate {name}")  # it has stood
        outputs = [Lines(c.stdout) for c in candidates if c.stdout is not None]
        first = outputs[0].next(30, "candidate a")
        assert first.startswith("leader: a ")  # the lowest revision: the first to stand
        os.kill(candidates[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        second = outputs[1].next(30, "candidate b")
        assert second.startswith("leader: b ")
        assert time.monotonic() - killed < 2 + 1
        with pytest.raises(AssertionError, match="no line"):
            outputs[2].next(0.5, "candidate c")  # it does not lead while b does
        code = interrupt(candidates[1])  # b resigns on Ctrl-C, and c leads
        assert code == 0, errors[1].rest()
        assert outputs[2].next(30, "candidate c").startswith("leader: c ")
    finally:
        end(*candidates)
