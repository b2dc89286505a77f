"""Where the CPU goes, per request: the broker, each replica (or ceiling responder), the
monitor and the lean generator, from /proc, over one run at a given depth. bench.py gives the
ratios; this says which process makes them (issue 16).

    .venv/bin/python scripts/bench_cpu.py [--side ours|ceiling|adapter] [--ops 20000] [--depth 64]
                                          [--client lean|kvclient|kvclient-unbatched]

`adapter` is the ceiling's logic run inside a replica's own adapter (scripts/adapter_responder.py):
between the two, it tells the transport's cost from the replica's own work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
from loadgen import generate  # noqa: E402

from tests.cluster import Broker, Cluster, Process, wait_until  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(address: str, pids: dict[str, int], ops: int, depth: int, client: str = "lean") -> str:
    generate(address, 2000, 64, "lean", None)  # warm up: keys exist
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    result = generate(address, ops, depth, client, None)
    used = {name: (cpu_seconds(pid) - before[name]) / ops * 1e6 for name, pid in pids.items()}
    total = sum(used.values()) + result["cpu_us"]
    parts = " ".join(f"{name} {us:.1f}" for name, us in used.items())
    return (
        f"{result['ops_s']:.0f} ops/s; CPU µs per request: generator {result['cpu_us']:.1f} "
        f"{parts}; all {total:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["ours", "ceiling", "adapter"], default="ours")
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument(
        "--client",
        choices=["lean", "kvclient", "kvclient-unbatched"],
        default="lean",
        help="the generator: kvclient batches (protocol §21), kvclient-unbatched does not",
    )
    parser.add_argument(
        "--metrics", action="store_true",
        help="ours: every replica serves metrics, scraped every second (issue 29)",
    )  # fmt: skip
    parser.add_argument(
        "--quota", action="store_true", help="ours: a quota of keys and bytes (issue 29)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.side == "ours":
            cluster = Cluster(workdir, n=3, metrics=args.metrics)
            quota = ("--max-keys", "10000000", "--max-bytes", "8G") if args.quota else ()
            scraping = threading.Event()
            try:
                cluster.start(extra=dict.fromkeys(range(3), quota))
                if args.metrics:
                    urls = [cluster.metrics_url(p) for p in cluster.replicas.values()]
                    scraper = partial(bench.scrape_every_second, urls, scraping)
                    threading.Thread(target=scraper, daemon=True).start()
                assert cluster.broker.proc is not None
                pids = {"broker": cluster.broker.proc.pid}
                pids |= {f"replica{i}": p.pid for i, p in cluster.replicas.items()}
                pids["monitor"] = cluster.monitors[0].pid
                figures = measure(cluster.address, pids, args.ops, args.depth, args.client)
                what = " metrics" * args.metrics + " quota" * args.quota
                print(f"mqtt-kv ({args.client}{what}):", figures)
            finally:
                scraping.set()
                cluster.close()
            return
        broker = Broker(workdir)
        broker.start(persistence=False)
        # `adapter`: the ceiling's logic inside a replica's adapter (scripts/adapter_responder.py)
        name = "ceiling_responder.py" if args.side == "ceiling" else "adapter_responder.py"
        script = str(ROOT / "scripts" / name)
        responders = [
            Process(
                f"ceiling-{i}",
                [sys.executable, script, "--id", str(i), "--n", "3", "--broker", broker.address],
                {"PYTHONUNBUFFERED": "1"},
                workdir,
            )
            for i in range(3)
        ]
        try:
            for responder in responders:
                wait_until(partial(bench.connected, responder), 15, responder.name)
            assert broker.proc is not None
            pids = {"broker": broker.proc.pid}
            pids |= {f"responder{i}": r.pid for i, r in enumerate(responders)}
            print(f"{args.side}:", measure(broker.address, pids, args.ops, args.depth))
        finally:
            for responder in responders:
                responder.stop()
            broker.stop()


if __name__ == "__main__":
    main()
