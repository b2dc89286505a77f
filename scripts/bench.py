"""mqtt-kv's benchmark, in one run: against the bare-MQTT ceiling, and beside etcd.

Everything runs on brokers and clusters of its own, on free ports:

- paired rounds (ceiling, ours, ceiling, ours: the machine drifts), each a fresh broker with
  either N trivial paho responders of the same protocol (scripts/ceiling_responder.py, the
  cheapest a paho responder can be) or N replicas and the monitor, driven by the same lean
  load generator (scripts/loadgen.py, a bare paho client whose CPU per request is printed)
  and then by `KVClient`, what users run: sequential latency (one request in flight) and
  pipelined throughput (64 and 256 in flight), half gets, half puts of 100-byte values over
  1000 keys; the table shows the medians of the rounds, and ratios as the median over the
  pairs;
- failover: `kill -9` of a key's owner to the successor's answer, and every replica paused at
  once to every key answered again (bench_failover.py);
- join: from `novoserv` to live, with the peak RSS of the joiner and of the sender and the
  RSS of the third replica, for stores of 16-byte keys and 100-byte values (bench_join.py;
  filling 1M keys takes ~3 minutes);
- the same load shapes against a 3-member etcd from Debian's etcd-server (bench_etcd.py),
  when it is installed.

It prints one table with the issue's targets and writes every figure as JSON. `--plot` draws
latency over time across a `kill -9` and a re-join (needs matplotlib: `.venv/bin/pip install
-e '.[plot]'`).

    .venv/bin/python scripts/bench.py [--quick] [--rounds 3] [--keys 10000 100000 1000000]
                                      [--json bench.json] [--plot timeline.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_disk  # noqa: E402
import bench_etcd  # noqa: E402
import bench_failover  # noqa: E402
import bench_feed  # noqa: E402
import bench_join  # noqa: E402
from loadgen import generate, request  # noqa: E402  # the generator, apart or in process

from kvclient.client import KVClient  # noqa: E402
from kvwire.messages import Resposta  # noqa: E402
from tests.cluster import Broker, Cluster, Process, wait_until  # noqa: E402


def measure(
    address: str,
    ops: int,
    env: dict[str, str] | None = None,
    leased: bool = False,
    split: bool = False,
    batching: bool = False,
) -> dict[str, float]:
    """The lean generator for the table's rows (it is not the bound: its CPU per request is
    printed), and `KVClient`, what users run, as a second, labelled generator, batching off.
    `env`: the client's credentials (secured), else anonymous whatever the shell has;
    `leased`: half the lean generator's puts under a lease (protocol §18); `split`: half its
    puts under `w/`, the prefix `scripts/bench_feed.py`'s watchers watch (§19); `batching`:
    `KVClient` with batching on (§21) and off, at 1, 64 and 256 in flight."""
    env = env or {"KV_USERNAME": "", "KV_PASSWORD_FILE": "", "KV_PASSWORD": "", "KV_TLS_CA": ""}
    one = generate(address, ops // 5, 1, "lean", env, leased, split)
    at_64 = generate(address, ops, 64, "lean", env, leased, split)
    at_256 = generate(address, ops, 256, "lean", env, leased, split)
    kv_64 = generate(address, ops, 64, "kvclient-unbatched", env)
    result = {
        "p50_ms": one["p50_ms"],
        "p99_ms": one["p99_ms"],
        "ops_64": at_64["ops_s"],
        "ops_256": at_256["ops_s"],
        "gen_cpu_us": at_64["cpu_us"],
        "kv_ops_64": kv_64["ops_s"],
        "kv_cpu_us": kv_64["cpu_us"],
    }
    if batching:
        kv_1 = generate(address, ops // 5, 1, "kvclient-unbatched", env)
        kv_256 = generate(address, ops, 256, "kvclient-unbatched", env)
        kvb_1 = generate(address, ops // 5, 1, "kvclient", env)
        kvb_64 = generate(address, ops, 64, "kvclient", env)
        kvb_256 = generate(address, ops, 256, "kvclient", env)
        result |= {
            "kv_p50_ms": kv_1["p50_ms"],
            "kv_ops_256": kv_256["ops_s"],
            "kvb_p50_ms": kvb_1["p50_ms"],
            "kvb_ops_64": kvb_64["ops_s"],
            "kvb_ops_256": kvb_256["ops_s"],
            "kvb_cpu_us": kvb_64["cpu_us"],
        }
    return result


def connected(responder: Process) -> bool:
    return "connected" in responder.log()


def run_ceiling(workdir: Path, n: int, ops: int) -> dict[str, float]:
    broker = Broker(workdir)
    broker.start(persistence=False)
    script = str(ROOT / "scripts" / "ceiling_responder.py")
    responders = [
        Process(
            f"ceiling-{i}",
            [sys.executable, script, "--id", str(i), "--n", str(n), "--broker", broker.address],
            {"PYTHONUNBUFFERED": "1"},
            workdir,
        )
        for i in range(n)
    ]
    try:
        for responder in responders:
            wait_until(partial(connected, responder), 15, f"{responder.name} to connect")
        # The responders answer a `lote` too: with a batching KVClient, the batched ceiling.
        return measure(broker.address, ops, batching=True)
    finally:
        for responder in responders:
            responder.stop()
        broker.stop()


def run_ours(
    workdir: Path,
    n: int,
    ops: int,
    sync: str | None = None,
    secure: bool = False,
    tls: bool = False,
    mirror: str | None = None,
    leased: bool = False,
    watchers: int = 0,
    batching: bool = False,
    metrics: bool = False,
    quota: bool = False,
) -> dict[str, float]:
    """Our cluster; with `sync`, every replica keeps its data on disk (--data-dir); `secure`:
    passwords, the ACL and signed control messages (protocol §16), over TLS with `tls`;
    `mirror`: every write also published retained on the value mirror (§14); `leased`: half
    the puts under a lease (§18); `watchers`: that many watches of `w/` (§19), half the
    lean generator's puts under it; `metrics`: every replica serves Prometheus metrics,
    scraped every second (Prometheus's default is 15 s); `quota`: a quota of keys and bytes
    that every put is judged against, never reached."""
    cluster = Cluster(
        workdir, n=n, data=sync is not None, secure=secure, tls=tls, mirror=mirror,
        metrics=metrics,
    )  # fmt: skip
    extra: tuple[str, ...] = ("--sync", sync) if sync else ()
    if quota:
        extra += ("--max-keys", "10000000", "--max-bytes", "8G")
    try:
        cluster.start(extra=dict.fromkeys(range(n), extra) if extra else None)
        env = cluster.secrets.env("client") if cluster.secrets else None
        consumer = bench_feed.Consumer(cluster.address, watchers) if watchers else None
        scraping = threading.Event()
        if metrics:
            urls = [cluster.metrics_url(p) for p in cluster.replicas.values()]
            threading.Thread(target=scrape_every_second, args=(urls, scraping), daemon=True).start()
        try:
            return measure(cluster.address, ops, env, leased, watchers > 0, batching)
        finally:
            scraping.set()
            if consumer is not None:
                consumer.stop()
    finally:
        cluster.close()


def scrape_every_second(urls: list[str], done: threading.Event) -> None:
    while not done.wait(1.0):
        for url in urls:
            with urllib.request.urlopen(url, timeout=5) as answer:
                answer.read()


def in_tmp(fn: Callable[[Path, int, int], dict[str, float]], n: int, ops: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return fn(Path(tmp), n, ops)


# --- latency over time across a kill and a re-join ------------------------------------------


def timeline(rate: float = 500.0, duration: float = 9.0) -> dict[str, Any]:
    """Requests at a steady rate; replica 0 is killed at 1/3 and restarted at 2/3."""
    samples: list[tuple[float, float, int]] = []  # (sent, latency, idserv)
    lock = threading.Lock()
    events: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            with KVClient(cluster.address, timeout=10, retry_interval=2) as kv:
                start = time.monotonic()

                def record(sent: float) -> Callable[[Future[Resposta]], None]:
                    def done(future: Future[Resposta]) -> None:
                        if future.exception() is None:
                            latency = time.monotonic() - sent
                            with lock:
                                samples.append((sent - start, latency, future.result().idserv))

                    return done

                futures = []
                for i in range(int(rate * duration)):
                    due = start + i / rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    now = time.monotonic()
                    if "kill" not in events and now - start >= duration / 3:
                        cluster.replicas[0].kill()
                        events["kill"] = now - start
                    if "restart" not in events and now - start >= 2 * duration / 3:
                        cluster.start_replica(0)
                        events["restart"] = now - start
                    joining = "restart" in events and "joined" not in events
                    if joining and "joined at position" in cluster.replicas[0].log():
                        events["joined"] = now - start
                    future = request(kv, i)
                    future.add_done_callback(record(now))
                    futures.append(future)
                unanswered = sum(1 for f in futures if f.exception(timeout=15) is not None)
        finally:
            cluster.close()
    return {"samples": sorted(samples), "events": events, "unanswered": unanswered}


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for replica, colour in zip(range(3), ("tab:blue", "tab:orange", "tab:green"), strict=True):
        points = [(t, lat * 1e3) for t, lat, who in data["samples"] if who == replica]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, s=4, color=colour, label=f"answered by replica {replica}")
    labels = {"kill": "kill -9 replica 0", "restart": "replica 0 restarted", "joined": "joined"}
    for name, at in data["events"].items():
        ax.axvline(at, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            labels[name],
            (at, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(
        f"mqtt-kv, 3 replicas, 500 requests/s (50% gets): {len(data['samples'])} answered, "
        f"{data['unanswered']} unanswered"
    )
    ax.legend(loc="upper left", markerscale=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- the report ---------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


Row = tuple[str, float | None, float | None, float | None, str, bool | None, float | None]


def batching_rows(result: dict[str, Any]) -> list[Row]:
    """Issue 28's figures: `KVClient` with batching on (protocol §21) against the same client
    with it off and against the per-request ceiling, each a median over the rounds of ratios
    taken within one round; the ceiling column is the batched ceiling (the trivial responders
    answering a `lote`, driven by the same batching client)."""
    ceiling, ours = result["ceiling"], result["mqtt_kv"]
    if "kvb_ops_64" not in ours:
        return []
    etcd = result.get("etcd") or {}
    rounds = list(zip(result["rounds"]["ceiling"], result["rounds"]["mqtt_kv"], strict=True))

    def median(ours_field: str, over: str, of_ceiling: bool = False) -> float:
        """The median over the rounds of ours[ours_field] / (ceiling or ours)[over]."""
        ratios = [o[ours_field] / (c if of_ceiling else o)[over] for c, o in rounds]
        return float(statistics.median(ratios))

    rows: list[Row] = []
    for depth in ("64", "256"):
        on, off = f"kvb_ops_{depth}", f"kv_ops_{depth}"
        rows.append(
            (
                f"KVClient, batching on, {depth} in flight (ops/s)",
                ceiling[on], ours[on], result["ratio"][on], "", None, etcd.get(f"ops_{depth}"),
            )
        )  # fmt: skip
        gain = median(on, off)
        rows.append((f"  on ÷ off, {depth} in flight", None, gain, None, "≥ 3", gain >= 3, None))
        over = median(on, f"ops_{depth}", of_ceiling=True)
        rows.append(
            (f"  on ÷ per-request ceiling, {depth} in flight", None, over, None, "≥ 2",
             over >= 2, None)
        )  # fmt: skip
    p50 = median("kvb_p50_ms", "kv_p50_ms")
    rows.append(
        ("KVClient one in flight p50, batching on (ms)", ceiling["kvb_p50_ms"],
         ours["kvb_p50_ms"], result["ratio"]["kvb_p50_ms"], "", None, etcd.get("p50_ms"))
    )  # fmt: skip
    rows.append(("  on ÷ off, p50", None, p50, None, "≤ 1.05", p50 <= 1.05, None))
    rows.append(
        ("  KVClient CPU per request, batching on (µs)", ceiling["kvb_cpu_us"],
         ours["kvb_cpu_us"], None, "", None, None)
    )  # fmt: skip
    return rows


def report(result: dict[str, Any]) -> list[str]:
    """The table: one line per figure, its target and whether it is met.

    Ratios are the median over the paired rounds of ours / ceiling, each pair run back to
    back, so that the machine's drift between rounds cancels out.
    """
    rows: list[Row] = []
    ceiling, ours, ratio = result["ceiling"], result["mqtt_kv"], result["ratio"]
    etcd = result.get("etcd") or {}
    for label, field, bound in (
        ("sequential p50 (ms)", "p50_ms", 1.2),
        ("sequential p99 (ms)", "p99_ms", 1.5),
        ("64 in flight (ops/s)", "ops_64", 0.9),
        ("256 in flight (ops/s)", "ops_256", 0.9),
        ("  lean generator CPU per request (µs)", "gen_cpu_us", None),
        ("KVClient as the generator, batching off, 64 in flight (ops/s)", "kv_ops_64", None),
        ("  KVClient CPU per request (µs)", "kv_cpu_us", None),
    ):
        c, o, r, e = ceiling[field], ours[field], ratio[field], etcd.get(field)
        if field == "kv_cpu_us":
            rows.append((label, c, o, None, "≤ 40 µs", o <= 40, e))
        elif bound is None:
            rows.append((label, c, o, r, "", None, e))
        elif field in ("p50_ms", "p99_ms"):
            rows.append((label, c, o, r, f"ratio ≤ {bound}", r <= bound, e))
        else:
            rows.append((label, c, o, r, f"ratio ≥ {bound}", r >= bound, e))
    rows.extend(batching_rows(result))
    for side, label, bound in (
        ("disk_periodic", "64 in flight, data on disk, --sync periodic (ops/s)", 0.8),
        ("disk_always", "64 in flight, data on disk, --sync always (ops/s)", None),
        ("secured", "64 in flight, secured: passwords, ACL, signatures (ops/s)", 0.9),
        ("secured_tls", "64 in flight, secured over TLS (ops/s)", None),
        ("mirrored", "64 in flight, value mirror on (ops/s)", None),
        ("leased", "64 in flight, half the puts under a lease (ops/s)", 0.9),
        ("watched", "64 in flight, 10 watchers of half the puts (ops/s)", 0.85),
        ("metrics", "64 in flight, metrics on, scraped every second (ops/s)", 0.95),
        ("quota", "64 in flight, a quota of keys and bytes (ops/s)", None),
    ):
        if side in result:
            r = result[f"{side}_ratio"]
            target = f"≥ {bound}× open" if bound else f"{r:.2f}× open"
            met = r >= bound if bound else None
            rows.append((label, None, result[side]["ops_64"], r, target, met, None))
    for disk in result.get("disk", []):
        keys = disk["keys"]
        big = keys == 1_000_000
        rows.append(
            (
                f"start-up from disk to live, {keys:,} keys (s)",
                None,
                disk["startup_s"],
                None,
                "≤ 2" if big else "",
                disk["startup_s"] <= 2 if big else None,
                None,
            )
        )
        rows.append(("  disk bytes per key", None, disk["bytes_per_key"], None, "", None, None))
    failover = result.get("failover")
    if failover:
        leader = etcd.get("leader_failover_s")
        median = failover["kill_median_ms"]
        rows.append(
            (
                "kill -9 to answer, median (ms)",
                None,
                median,
                None,
                "≤ 50",
                median <= 50 and failover["by_successor"],
                leader * 1e3 if leader else None,
            )
        )
        stop = statistics.median(failover["sigstop_ms"])
        rows.append(("SIGSTOP to answer, median (ms)", None, stop, None, "", None, None))
        stall = max(failover["stall_all_s"])
        rows.append(
            (
                "all SIGSTOPped 2.5 s: CONT to answers, max (s)",
                None,
                stall,
                None,
                "≤ 10",
                stall <= 10,
                None,
            )
        )
    for join in result.get("join", []):
        keys = join["keys"]
        limit = {100_000: 1.0, 1_000_000: 5.0}.get(keys)
        target = f"≤ {limit:g}" if limit else ""
        met = join["join_s"] <= limit if limit else None
        rows.append((f"join {keys:,} keys (s)", None, join["join_s"], None, target, met, None))
        # 400 MB is 381 MiB; with 1M keys it holds for every replica, the two of the join too.
        big = keys == 1_000_000
        for label, field in (
            ("  joiner peak RSS (MiB)", "joiner_peak_mib"),
            ("  sender peak RSS (MiB)", "sender_peak_mib"),
            ("  other replica RSS (MiB)", "peer_rss_mib"),
        ):
            mib = join[field]
            rows.append(
                (
                    label,
                    None,
                    mib,
                    None,
                    "≤ 400 MB" if big else "",
                    mib <= 381 if big else None,
                    None,
                )
            )
    width = max(len(row[0]) for row in rows) + 1
    lines = [
        f"{'':{width}}{'ceiling':>10}{'mqtt-kv':>10}{'ratio':>7}  {'target':<13}{'met':<5}"
        f"{'etcd':>9}",
    ]
    for label, c, o, r, target, met, e in rows:
        verdict = "" if met is None else ("yes" if met else "NO")
        lines.append(
            f"{label:{width}}{fmt(c):>10}{fmt(o):>10}{fmt(r):>7}  {target:<13}{verdict:<5}"
            f"{fmt(e):>9}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="paired rounds only")
    parser.add_argument("--keys", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--trials", type=int, default=10, help="kill -9 trials")
    parser.add_argument(
        "--only", nargs="+", metavar="SIDE",
        help="these sides alone (with the ceiling and the open cluster they pair with): "
        "disk_periodic secured mirrored leased watched metrics quota",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of latency across a kill and a re-join")
    args = parser.parse_args()
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        sys.exit("bench: --plot needs matplotlib: .venv/bin/pip install -e '.[plot]'")
    # Data on disk, paired with the in-memory cluster in the same rounds (issue 13); forcing
    # the disk at every commit only in the full run.
    sides: dict[str, Callable[[Path, int, int], dict[str, float]]] = {
        "ceiling": run_ceiling,
        "mqtt_kv": partial(run_ours, batching=True),
        "disk_periodic": partial(run_ours, sync="periodic"),
        "secured": partial(run_ours, secure=True),
        "mirrored": partial(run_ours, mirror="inf1406-kv"),
        "leased": partial(run_ours, leased=True),
        "watched": partial(run_ours, watchers=10),
        "metrics": partial(run_ours, metrics=True),
        "quota": partial(run_ours, quota=True),
    }
    if not args.quick:
        sides["disk_always"] = partial(run_ours, sync="always")
        sides["secured_tls"] = partial(run_ours, secure=True, tls=True)
    if args.only:
        sides = {k: v for k, v in sides.items() if k in ("ceiling", "mqtt_kv", *args.only)}
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rounds": {side: [] for side in sides},
    }
    for _ in range(args.rounds):
        for side, run in sides.items():
            result["rounds"][side].append(in_tmp(run, args.n, args.ops))
    for side in sides:
        rounds = result["rounds"][side]
        result[side] = {field: statistics.median(r[field] for r in rounds) for field in rounds[0]}
    pairs = list(zip(result["rounds"]["ceiling"], result["rounds"]["mqtt_kv"], strict=True))
    result["ratio"] = {
        field: statistics.median(ours[field] / ceiling[field] for ceiling, ours in pairs)
        for field in result["ceiling"]
    }
    for side in sides:
        if side not in ("ceiling", "mqtt_kv"):  # each a cost paired with the open cluster
            paired = zip(result["rounds"]["mqtt_kv"], result["rounds"][side], strict=True)
            result[f"{side}_ratio"] = statistics.median(
                d["ops_64"] / m["ops_64"] for m, d in paired
            )
    if not args.quick:
        print("bench: failover trials", file=sys.stderr)
        result["failover"] = bench_failover.measure(args.trials)
        for keys in args.keys:
            print(f"bench: join of {keys:,} keys", file=sys.stderr)
            result.setdefault("join", []).append(bench_join.one_size(keys))
        print("bench: start-up from disk", file=sys.stderr)
        result["disk"] = [bench_disk.one_size(keys) for keys in args.keys]
        if bench_etcd.installed():
            print("bench: etcd", file=sys.stderr)
            result["etcd"] = bench_etcd.measure()
        else:
            print("bench: etcd is not installed (apt-get install -y etcd-server)", file=sys.stderr)
    if args.plot:
        print("bench: timeline across a kill and a re-join", file=sys.stderr)
        data = timeline()
        plot(data, args.plot)
        result["timeline"] = {"events": data["events"], "unanswered": data["unanswered"]}
    print(
        f"{args.n} replicas, {os.cpu_count()} cores, {args.rounds} paired rounds (medians); "
        "50% gets, 100-byte values"
    )
    print("\n".join(report(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
