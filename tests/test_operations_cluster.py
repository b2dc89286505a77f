"""Delete, revisions, compare-and-set and listing against real processes (protocol §12, §13),
asked by a plain MQTT client that is not ours, and by the CLI as a user types it."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest

from kvclient.client import KVClient
from kvclient.operations import Put
from kvwire.errors import Conflict, KeyNotFound
from kvwire.mqtt import new_client
from tests.cluster import Cluster, wait_until
from tests.plain import close_client, connect_blocking
from tests.test_cluster import Listener, key_owned_by, kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class Raw5:
    """A plain MQTT 5 subscriber that keeps the Correlation Data of what it receives."""

    def __init__(self, address: str, topic: str) -> None:
        self._seen: list[bytes] = []
        subscribed = threading.Event()
        self.client = new_client(f"raw5-{time.monotonic_ns()}")
        self.client.on_message = lambda c, u, msg: self._seen.append(
            bytes(getattr(msg.properties, "CorrelationData", b"") or b"")
        )
        self.client.on_subscribe = lambda *args: subscribed.set()
        host, port = address.split(":")
        connect_blocking(self.client, host, int(port), timeout=5)
        self.client.subscribe(topic, qos=1)
        assert subscribed.wait(5), "no SUBACK"

    def correlations(self) -> list[bytes]:
        return list(self._seen)

    def close(self) -> None:
        close_client(self.client)


class Asker:
    """Raw JSON requests through a plain paho client, one answer awaited for each."""

    def __init__(self, plain: Listener) -> None:
        self.plain = plain
        self.next = 0

    def __call__(self, **request: Any) -> dict[str, Any]:
        self.next += 1
        rid = f"op-{self.next}"
        self.plain.send(json.dumps({**request, "topico-resp": self.plain.topic, "idpedido": rid}))
        return self.plain.wait_for(rid)


def test_delete_and_compare_and_set_from_a_plain_client(cluster: Cluster, plain: Listener) -> None:
    ask = Asker(plain)
    key = key_owned_by(1, prefix="cas")
    put = ask(tipomsg="insercao", chave=key, novovalor="v1")
    assert put["status"] == "ok" and isinstance(put["revisao"], int)
    deleted = ask(tipomsg="remocao", chave=key)
    assert (deleted["status"], deleted["valor"]) == ("ok", None)
    assert deleted["revisao"] > put["revisao"]
    assert ask(tipomsg="consulta", chave=key)["status"] == "naoencontrada"
    assert ask(tipomsg="remocao", chave=key)["status"] == "naoencontrada"
    created = ask(tipomsg="insercao", chave=key, novovalor="v2", serevisao=0)
    assert created["status"] == "ok"
    again = ask(tipomsg="insercao", chave=key, novovalor="x", serevisao=0)
    assert (again["status"], again["valor"], again["revisao"]) == (
        "conflito", "v2", created["revisao"],
    )  # fmt: skip
    stale = ask(tipomsg="insercao", chave=key, novovalor="x", serevisao=put["revisao"])
    assert (stale["status"], stale["valor"]) == ("conflito", "v2")
    won = ask(tipomsg="insercao", chave=key, novovalor="v3", serevisao=created["revisao"])
    assert won["status"] == "ok" and won["revisao"] > created["revisao"]
    bad = ask(tipomsg="insercao", chave=key, novovalor="x", serevisao="3")
    assert bad["status"] == "erro"
    # The value is the same on every replica: read it again after its owner is killed, from
    # the successor, with the same revision.
    plain.barrier()
    cluster.replicas[1].kill()
    after = ask(tipomsg="consulta", chave=key)
    assert (after["valor"], after["revisao"], after["idserv"]) == ("v3", won["revisao"], 2)


def test_listing_of_2500_keys_in_three_pages(cluster: Cluster, plain: Listener) -> None:
    with KVClient(cluster.address, timeout=20) as kv:
        futures = [kv.submit(Put(f"list/{i:05d}", "v")) for i in range(2500)]
        futures += [kv.submit(Put(name, "v")) for name in ("lis", "list", "lisz", "other")]
        for future in futures:
            assert future.result(20).status == "ok"
    ask = Asker(plain)
    pages, after = [], None
    for _ in range(4):
        request: dict[str, Any] = {"tipomsg": "listagem", "prefixo": "list/", "limite": 1000}
        if after is not None:
            request["apos"] = after
        page = ask(**request)
        pages.append(page)
        if not page["mais"]:
            break
        after = page["chaves"][-1]
    assert [len(p["chaves"]) for p in pages] == [1000, 1000, 500]
    assert [p["mais"] for p in pages] == [True, True, False]
    listed = [key for page in pages for key in page["chaves"]]
    assert listed == [f"list/{i:05d}" for i in range(2500)]
    for huge in (10**9, -1, "ten"):
        refused = ask(tipomsg="listagem", prefixo="list/", limite=huge)
        assert refused["status"] == "erro" and "limite" in refused["erro"]


def test_the_cli_and_the_python_api_delete_compare_and_list(cluster: Cluster) -> None:
    assert kvclient(cluster, "put", "color", "blue").returncode == 0
    shown = json.loads(kvclient(cluster, "get", "color", "--json").stdout)
    revision = shown["revisao"]
    lost = kvclient(cluster, "put", "color", "red", "--if-revision", str(revision - 1))
    assert lost.returncode == 3 and lost.stderr.count("\n") == 1 and "conflict" in lost.stderr
    assert kvclient(cluster, "put", "color", "red", "--if-absent").returncode == 3
    won = kvclient(cluster, "put", "color", "red", "--if-revision", str(revision))
    assert (won.returncode, won.stdout) == (0, "red\n")
    for i in range(5):
        kvclient(cluster, "put", f"fruit/{i}", "x")
    listed = kvclient(cluster, "keys", "fruit/", "--limit", "3")
    assert listed.stdout.split() == ["fruit/0", "fruit/1", "fruit/2"]
    assert kvclient(cluster, "del", "color").returncode == 0
    assert kvclient(cluster, "del", "color").returncode == 1
    assert kvclient(cluster, "get", "color").returncode == 1
    with KVClient(cluster.address, timeout=10) as kv:
        revision = kv.put("k", "v1", if_revision=0)
        assert kv.get_entry("k") == ("v1", revision)
        with pytest.raises(Conflict) as conflict:
            kv.put("k", "v2", if_revision=revision + 1000)
        assert (conflict.value.value, conflict.value.revision) == ("v1", revision)
        assert kv.delete("k", if_revision=revision) > revision
        with pytest.raises(KeyNotFound):
            kv.delete("k")
        assert list(kv.keys("fruit/", page=2)) == [f"fruit/{i}" for i in range(5)]


def test_mosquitto_rr_asks_without_topico_resp_and_gets_its_correlation_data(
    cluster: Cluster,
) -> None:
    """protocol §15 as the README shows it, with a stock MQTT 5 tool."""
    host, port = cluster.address.split(":")
    watcher = Raw5(cluster.address, "rr/answers")

    def rr(body: dict[str, Any], correlation: str | None = None) -> dict[str, Any]:
        extra = ["-D", "publish", "correlation-data", correlation] if correlation else []
        done = subprocess.run(
            ["mosquitto_rr", "-h", host, "-p", port, "-t", "inf1406-reqs", "-q", "1",
             "-e", "rr/answers", "-W", "10", *extra, "-m", json.dumps(body)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    try:
        put = rr({"tipomsg": "insercao", "chave": "color", "novovalor": "blue"}, "put-1")
        assert (put["status"], put["valor"]) == ("ok", "blue")
        got = rr({"tipomsg": "consulta", "chave": "color"})
        assert (got["valor"], got["revisao"]) == ("blue", put["revisao"])
        wait_until(lambda: b"put-1" in watcher.correlations(), 5, "the correlation data")
        # A write with neither idpedido nor correlation data cannot be de-duplicated: refused.
        refused = rr({"tipomsg": "insercao", "chave": "color", "novovalor": "red"})
        assert refused["status"] == "erro" and "idpedido" in refused["erro"]
    finally:
        watcher.close()
    with KVClient(cluster.address) as kv:
        assert kv.get("color") == "blue"
