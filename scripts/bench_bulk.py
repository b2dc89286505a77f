"""Bulk import and export (issue 28) against a running cluster, as a user runs them: writes a
file of K keys in `kvclient export`'s own form (16-byte keys, 100-byte values, key order),
times `kvclient import` of it, then `kvclient export` of the same prefix, compares the two
files byte for byte, and waits for every replica to report the same digest at one position.

    scripts/cluster.sh up && source run/env
    .venv/bin/python scripts/bench_bulk.py [--keys 1000000] [--prefix bulk/]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kvclient.bulk import json_line  # noqa: E402
from kvclient.status import ClusterWatch  # noqa: E402
from tests.cluster import all_equal  # noqa: E402


def kvclient(*args: str, out: Path | None = None) -> tuple[float, str]:
    """Run `kvclient`; its seconds and what it said (stdout, or stderr when stdout is `out`)."""
    started = time.monotonic()
    with open(out, "w") if out else open("/dev/null", "w") as sink:
        done = subprocess.run(
            [str(ROOT / ".venv/bin/kvclient"), *args],
            stdout=sink if out else subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            check=False,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"bench_bulk: kvclient {' '.join(args)} failed: {done.stderr.strip()}")
    return time.monotonic() - started, (done.stderr if out else done.stdout).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--prefix", default="bulk/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, back = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        width = 16 - len(args.prefix)
        with open(source, "w", encoding="utf-8") as f:
            for i in range(args.keys):
                f.write(json_line(f"{args.prefix}{i:0{width}d}", f"{i:0100d}"))
        size = source.stat().st_size
        seconds, said = kvclient("import", str(source))
        print(f"import: {said} (wall {seconds:.1f} s, file {size:,} bytes)", flush=True)
        seconds, said = kvclient("export", args.prefix, out=back)
        print(f"export: {said} (wall {seconds:.1f} s)", flush=True)
        same = filecmp.cmp(source, back, shallow=False)
        print(f"round trip byte for byte: {'yes' if same else 'NO'}")
    with ClusterWatch(None) as watch:
        status = watch.wait_for(all_equal(3), 60)
    rows = {i: (r.beat.posicao, r.beat.chaves, r.beat.resumo) for i, r in status.replicas.items()}
    agree = all_equal(3)(status)
    print(
        f"replicas (position, keys, digest): {json.dumps(rows)}; equal: {'yes' if agree else 'NO'}"
    )
    if not (same and agree):
        sys.exit(1)


if __name__ == "__main__":
    main()
