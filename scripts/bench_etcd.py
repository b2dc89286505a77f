"""What a user would pick instead: the same load shapes against a 3-member etcd on loopback.

etcd comes from Debian's package (`apt-get install -y etcd-server`); its data lives on tmpfs
(/dev/shm) and it is driven through its JSON gateway (HTTP/1.1 keep-alive, one connection per
client), as mqtt-kv is driven through KVClient. Prints sequential latency (one request in
flight), throughput with 64 and 256 concurrent clients (50% gets), and the time from `kill -9` of
the leader to the next accepted write.

    .venv/bin/python scripts/bench_etcd.py [--ops 4000]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import free_port


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Member:
    def __init__(self, name: str, client_port: int, peer_port: int, data: Path) -> None:
        self.name, self.client_port, self.peer_port, self.data = name, client_port, peer_port, data
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cluster: str, workdir: Path) -> None:
        args = [
            shutil.which("etcd") or "/usr/bin/etcd",
            "--name",
            self.name,
            "--data-dir",
            str(self.data),
            "--listen-client-urls",
            f"http://127.0.0.1:{self.client_port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{self.client_port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "bench",
        ]
        with (workdir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def call(self, conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> Any:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return json.loads(data)

    def connect(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=timeout)


def operation(member: Member, conn: http.client.HTTPConnection, i: int) -> None:
    key = b64(f"bench-{i % 1000}")
    if i % 2:
        member.call(conn, "/v3/kv/put", {"key": key, "value": b64("v" * 100)})
    else:
        member.call(conn, "/v3/kv/range", {"key": key})


def wait_ready(members: list[Member]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = members[0].connect()
            members[0].call(conn, "/v3/kv/put", {"key": b64("ready"), "value": b64("1")})
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.2)
    raise RuntimeError("etcd did not become ready")


def leader(members: list[Member]) -> Member:
    for member in members:
        status = member.call(member.connect(), "/v3/maintenance/status", {})
        if status["header"]["member_id"] == status["leader"]:
            return member
    raise RuntimeError("no leader")


def sequential(member: Member, ops: int) -> tuple[float, float]:
    conn = member.connect()
    for i in range(500):
        operation(member, conn, i)
    latencies = []
    for i in range(ops):
        started = time.perf_counter()
        operation(member, conn, i)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return latencies[len(latencies) // 2] * 1e3, latencies[int(len(latencies) * 0.99)] * 1e3


def concurrent(members: list[Member], ops: int, clients: int = 64) -> float:
    counter = iter(range(ops))
    lock = threading.Lock()

    def client(index: int) -> None:
        member = members[index % len(members)]
        own = member.connect()
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            operation(member, own, i)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ops / (time.perf_counter() - started)


def leader_failover(members: list[Member]) -> float:
    chief = leader(members)
    other = next(m for m in members if m is not chief)
    # A write in flight during the election hangs: retry it every 50 ms, so that the figure
    # is etcd's and not this client's timeout.
    conn = other.connect(timeout=0.05)
    assert chief.proc is not None
    killed = time.monotonic()
    chief.proc.send_signal(signal.SIGKILL)
    while True:
        try:
            other.call(conn, "/v3/kv/put", {"key": b64("after"), "value": b64("1")})
            return time.monotonic() - killed
        except (OSError, RuntimeError, http.client.HTTPException):
            conn.close()
            conn = other.connect(timeout=0.05)


def installed() -> bool:
    return bool(shutil.which("etcd")) or Path("/usr/bin/etcd").exists()


def measure(ops: int = 4000) -> dict[str, float]:
    """The load shapes of bench.py against a fresh 3-member etcd on tmpfs."""
    workdir = Path(tempfile.mkdtemp(prefix="etcd-", dir="/dev/shm"))
    members = [Member(f"m{i}", free_port(), free_port(), workdir / f"m{i}") for i in range(3)]
    cluster = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in members)
    try:
        for member in members:
            member.start(cluster, workdir)
        wait_ready(members)
        p50, p99 = sequential(members[0], ops // 2)
        return {
            "p50_ms": p50,
            "p99_ms": p99,
            "ops_64": concurrent(members, ops, 64),
            "ops_256": concurrent(members, ops, 256),
            "leader_failover_s": leader_failover(members),
        }
    finally:
        for member in members:
            if member.proc is not None and member.proc.poll() is None:
                member.proc.kill()
                member.proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=4000)
    args = parser.parse_args()
    if not installed():
        print("etcd is not installed: apt-get install -y etcd-server")
        return
    r = measure(args.ops)
    print("3-member etcd (Debian etcd-server), loopback, data on tmpfs, JSON gateway")
    print(f"sequential p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms (one in flight)")
    print(f"64 concurrent clients: {r['ops_64']:.0f} ops/s; 256: {r['ops_256']:.0f} ops/s")
    print(f"kill -9 of the leader to the next accepted write: {r['leader_failover_s']:.2f} s")


if __name__ == "__main__":
    main()
