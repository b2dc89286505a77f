"""Jepsen's bank test over transactions (protocol §20), for as long as asked: 3 tellers move
money between 10 accounts, each transfer a transaction conditioned on both accounts'
revisions, each fifth step an audit that reads every account in one transaction, while a
replica is killed (`kill -9`) or stopped (SIGSTOP) every 1.5-3 s. Then: the total is the
opening one in every audit, no balance is below zero, and no acknowledged transfer is lost.
`tests/test_txn_cluster.py` runs the same for 8 s.

    .venv/bin/python scripts/bank.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.bank import run
from tests.cluster import Cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            ledger, faults, found = run(cluster, args.seconds, seed=60)
        finally:
            cluster.close()
    kills = sum("kill" in f for f in faults)
    counts = (len(ledger.transfers), ledger.refused, ledger.failed, len(ledger.audits))
    print(f"{args.seconds:.0f} s, {kills} kill -9 and {len(faults) - kills} SIGSTOP: "
          "%d transfers acknowledged, %d refused (a compare lost), %d unanswered in time, "
          "%d audits" % counts)  # fmt: skip
    print("problems:", found[:10] or "none")
    if found:
        sys.exit(1)


if __name__ == "__main__":
    main()
