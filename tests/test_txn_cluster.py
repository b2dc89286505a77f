"""Transactions (protocol §20) with real processes: from `mosquitto_rr`, a stock MQTT tool, a
transaction that writes its keys at one revision on every replica, one whose compares fail,
and its retry after a `kill -9` of the replica that answered it; `kvclient txn` as a person
types it; and the bank test under kills and stops."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvclient.client import KVClient
from kvclient.status import ClusterWatch
from kvwire.ring import key_slot
from tests import bank
from tests.cluster import Cluster, all_equal, running
from tests.test_cluster import kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ANSWERS = "rr/answers"


def rr(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    """One request and its answer with Debian's mosquitto_rr (MQTT 5 request/response)."""
    host, port = cluster.address.rsplit(":", 1)
    done = subprocess.run(
        ["mosquitto_rr", "-h", host, "-p", port, "-t", "inf1406-reqs", "-q", "1",
         "-e", ANSWERS, "-W", "20", "-m", json.dumps(body)],
        capture_output=True, text=True, timeout=40, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the two tests below: the CLI's does not mind the other's kill."""
    with running(tmp_path_factory.mktemp("txn")) as cluster:
        yield cluster


def test_kvclient_txn_reads_three_blocks_and_exits_3_when_the_compares_fail(
    shared: Cluster,
) -> None:
    held = kvclient(shared, "txn", stdin="absent(job)\n\nput job me\nget job\n\nget job\n")
    assert held.returncode == 0, held.stderr
    lines = held.stdout.splitlines()
    assert lines[0] == "SUCCESS" and lines[1].startswith("put job (revision ")
    assert lines[2].startswith("job = me (revision ")
    failed = kvclient(shared, "txn", stdin="absent(job)\n\nput job you\n\nget job\n")
    assert failed.returncode == 3, failed.stderr
    assert failed.stdout.splitlines()[:2] == ["FAILURE", lines[2]]
    bad = kvclient(shared, "txn", stdin="absent(job\n\nput job x\n")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "not a compare" in bad.stderr


def test_a_transaction_from_mosquitto_rr_and_its_retry_after_its_owner_is_killed(
    shared: Cluster,
) -> None:
    cluster = shared
    with KVClient(cluster.address, timeout=10) as kv:
        revision = kv.put("acct/1", "100")
    move = {
        "tipomsg": "transacao",
        "se": [{"chave": "acct/1", "revisao": revision}, {"chave": "acct/2", "ausente": True}],
        "entao": [
            {"tipomsg": "insercao", "chave": "acct/1", "novovalor": "60"},
            {"tipomsg": "insercao", "chave": "acct/2", "novovalor": "40"},
        ],
        "senao": [{"tipomsg": "consulta", "chave": "acct/1"}],
        "topico-resp": ANSWERS,
        "idpedido": "move-1",
    }
    done = rr(cluster, move)
    assert (done["status"], done["sucesso"]) == ("ok", True)
    assert done["idserv"] == key_slot(ANSWERS, cluster.n)
    at = done["revisao"]
    assert [r["revisao"] for r in done["resultados"]] == [at, at]
    with ClusterWatch(cluster.address) as watch:  # on every replica: one digest
        assert all_equal(3)(watch.wait_for(all_equal(3), 10))
    with KVClient(cluster.address, timeout=10) as kv:
        assert [kv.get_entry(k) for k in ("acct/1", "acct/2")] == [("60", at), ("40", at)]
    again = dict(move, idpedido="move-2")  # the same compares, now false
    lost = rr(cluster, again)
    assert (lost["status"], lost["sucesso"]) == ("ok", False)
    assert lost["resultados"] == [{"chave": "acct/1", "valor": "60", "revisao": at}]
    cluster.replicas[done["idserv"]].kill()  # kill -9 of the replica that answered
    retry = rr(cluster, move)  # as a client whose answer was lost would
    assert retry["idserv"] != done["idserv"]
    assert {k: retry[k] for k in ("status", "sucesso", "revisao", "resultados")} == {
        k: done[k] for k in ("status", "sucesso", "revisao", "resultados")
    }
    with KVClient(cluster.address, timeout=10) as kv:
        assert kv.get_entry("acct/1") == ("60", at)  # not applied twice


def test_the_bank_keeps_its_total_under_kills_and_stops(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start()
        ledger, faults, found = bank.run(cluster, 5.0, seed=20261202)
        print(f"{len(ledger.transfers)} transfers, {len(ledger.audits)} audits, "
              f"{ledger.refused} refused, {ledger.failed} unanswered; {faults}")  # fmt: skip
        assert len(ledger.transfers) >= 60 and len(ledger.audits) >= 5 and faults
        assert found == []
    finally:
        cluster.close()
