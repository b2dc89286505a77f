"""Jepsen's bank test over transactions (protocol §20), shared by `tests/test_txn_cluster.py`
and `scripts/bank.py`: accounts that clients move money between, each transfer a transaction
conditioned on both accounts' revisions, each audit a transaction that reads every account at
one position. In every audit the total is what it was at the start, and no balance is below
zero; no acknowledged transfer is lost (each account's revision, read after it, is at least
the transfer's)."""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field

from kvclient.client import KVClient
from kvclient.operations import Compare, Get, Put
from kvwire.errors import KVError
from tests.cluster import Cluster, wait_until

ACCOUNTS, OPENING = 10, 100


def account(i: int) -> str:
    return f"bank/{i}"


@dataclass
class Ledger:
    #: Every audit: (its position, the balances it read).
    audits: list[tuple[int, list[int]]] = field(default_factory=list)
    #: Every acknowledged transfer: (its position, the two accounts).
    transfers: list[tuple[int, int, int]] = field(default_factory=list)
    refused: int = 0
    failed: int = 0


class Teller:
    """One client: transfers between random accounts, an audit every fifth step."""

    def __init__(self, address: str, ledger: Ledger, seed: int) -> None:
        self.ledger, self._random = ledger, random.Random(seed)
        self._kv = KVClient(address, timeout=30.0, retry_interval=1.0)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        step = 0
        while not self._stop.is_set():
            step += 1
            try:
                if step % 5 == 0:
                    self._audit()
                else:
                    self._transfer()
            except KVError:
                self.ledger.failed += 1  # no answer in time across a fault: it may or may not
                time.sleep(0.05)

    def _audit(self) -> None:
        result = self._kv.txn([], [Get(account(i)) for i in range(ACCOUNTS)])
        balances = [int(r.valor or 0) for r in result.results]
        with self._lock:
            self.ledger.audits.append((result.revision, balances))

    def _transfer(self) -> None:
        one, other = self._random.sample(range(ACCOUNTS), 2)
        read = self._kv.txn([], [Get(account(one)), Get(account(other))])
        (a, b) = read.results
        amount = self._random.randint(1, 20)
        balance_a, balance_b = int(a.valor or 0), int(b.valor or 0)
        if balance_a < amount:
            return
        unchanged = [Compare(account(one), revision=a.revisao)]
        unchanged.append(Compare(account(other), revision=b.revisao))
        moves = [Put(account(one), str(balance_a - amount))]
        moves.append(Put(account(other), str(balance_b + amount)))
        moved = self._kv.txn(unchanged, moves)
        if moved.succeeded:
            with self._lock:
                self.ledger.transfers.append((moved.revision, one, other))
        else:
            self.ledger.refused += 1  # another teller moved one of them first

    def close(self) -> None:
        self._stop.set()
        self._thread.join(40)
        self._kv.close()


def open_accounts(address: str) -> None:
    with KVClient(address, timeout=10) as kv:
        kv.txn([], [Put(account(i), str(OPENING)) for i in range(ACCOUNTS)])


def nemesis(cluster: Cluster, seconds: float, seed: int) -> list[str]:
    """kill -9 or SIGSTOP of a random replica, one at a time, for `seconds`."""
    rng, done, end = random.Random(seed), [], time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.5, 1.5))
        victim, hold = rng.randrange(cluster.n), rng.uniform(0.3, 1.5)
        if rng.random() < 0.5:
            done.append(f"kill -9 replica {victim}")
            cluster.replicas[victim].kill()
            time.sleep(hold)
            cluster.start_replica(victim)
        else:
            done.append(f"SIGSTOP replica {victim} for {hold:.1f} s")
            cluster.replicas[victim].pause()
            time.sleep(hold)
            cluster.replicas[victim].signal(signal.SIGCONT)
        time.sleep(1.0)  # let it join again before the next
    return done


def problems(ledger: Ledger, final: tuple[int, list[int]], revisions: list[int]) -> list[str]:
    """What breaks the bank: an audit whose total is not the opening one, a balance below zero,
    an acknowledged transfer whose accounts were later at an earlier revision."""
    found = []
    total = ACCOUNTS * OPENING
    for position, balances in [*ledger.audits, final]:
        if sum(balances) != total or min(balances) < 0:
            found.append(f"audit at {position}: {balances}, total {sum(balances)}")
    for position, one, other in ledger.transfers:
        for i in (one, other):
            if revisions[i] < position:
                found.append(f"transfer at {position} lost: {account(i)} is at {revisions[i]}")
    return found


def final_audit(address: str) -> tuple[tuple[int, list[int]], list[int]]:
    with KVClient(address, timeout=30) as kv:
        result = kv.txn([], [Get(account(i)) for i in range(ACCOUNTS)])
    balances = [int(r.valor or 0) for r in result.results]
    return (result.revision, balances), [r.revisao or 0 for r in result.results]


def run(cluster: Cluster, seconds: float, seed: int) -> tuple[Ledger, list[str], list[str]]:
    """Open the accounts, let 3 tellers work while the nemesis runs for `seconds`, audit once
    more: the ledger, the faults, and what breaks the bank (nothing, or a bug)."""
    open_accounts(cluster.address)
    ledger = Ledger()
    tellers = [Teller(cluster.address, ledger, seed + i) for i in range(3)]
    try:
        wait_until(lambda: len(ledger.transfers) >= 20, 60, "20 transfers")
        faults = nemesis(cluster, seconds, seed)
    finally:
        for teller in tellers:
            teller.close()
    final, revisions = final_audit(cluster.address)
    return ledger, faults, problems(ledger, final, revisions)
