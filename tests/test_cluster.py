"""Normal operation against real processes and a real Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from kvclient.client import KVClient
from kvclient.operations import Get, Put
from kvclient.status import ClusterWatch
from kvwire.access import Access
from kvwire.errors import InvalidRequest, KeyNotFound, ServerError
from kvwire.mqtt import new_client
from kvwire.ring import key_slot
from tests.cluster import Cluster, free_port, wait_until
from tests.plain import close_client, connect_blocking

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def key_owned_by(owner: int, n: int = 3, prefix: str = "key") -> str:
    return next(f"{prefix}{i}" for i in range(1000) if key_slot(f"{prefix}{i}", n) == owner)


def kvclient(
    cluster: Cluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvclient", *args],
        env=cluster.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_put_takes_a_value_from_standard_input_and_refuses_an_empty_key(
    cluster: Cluster,
) -> None:
    """A value too long for a command line's arguments (the kernel's limit is 128 KiB for one),
    given on standard input as etcdctl takes it; "-" is a value like any other."""
    big = "".join(f"{i:07d}\n" for i in range(25_000))  # 200,000 bytes
    assert kvclient(cluster, "put", "config", stdin=big).returncode == 0
    assert kvclient(cluster, "get", "config").stdout == big + "\n"
    assert kvclient(cluster, "put", "dash", "-").stdout == "-\n"
    empty = kvclient(cluster, "put", "", "v")
    assert (empty.returncode, empty.stderr.count("\n")) == (2, 1), empty.stderr
    assert "empty key" in empty.stderr


def test_each_program_says_its_version() -> None:
    for module in ("kvclient", "kvserver", "monitor"):
        shown = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
        assert shown.returncode == 0 and "(mqtt-kv) " in shown.stdout, shown


class Listener:
    """A plain paho client, not ours, that publishes raw JSON and collects every answer."""

    def __init__(self, address: str, topic: str, access: Access | None = None) -> None:
        self.topic = topic
        self.answers: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self.client = new_client(f"plain-{topic.replace('/', '-')}", v5=False, access=access)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        host, port = address.split(":")
        connect_blocking(self.client, host, int(port), timeout=5)

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.raw.append(bytes(msg.payload))
            try:
                self.answers.append(json.loads(msg.payload))
            except ValueError:
                self.answers.append({"unparsable": True})

    def send(self, payload: bytes | str) -> None:
        self.client.publish("inf1406-reqs", payload, qos=1).wait_for_publish(5)

    def for_id(self, rid: object) -> list[dict[str, Any]]:
        with self._lock:
            return [a for a in self.answers if a.get("idpedido") == rid]

    def wait_for(self, rid: object, timeout: float = 10) -> dict[str, Any]:
        return wait_until(lambda: self.for_id(rid)[:1], timeout, f"an answer to {rid!r}")[0]

    def barrier(self, n: int = 3) -> None:
        """Each replica answers in stream order on one connection: once every replica has
        answered a request sent after the others, nothing older is still on its way."""
        for owner in range(n):
            rid = f"barrier-{owner}-{time.monotonic()}"
            request = {
                "tipomsg": "consulta",
                "chave": key_owned_by(owner),
                "topico-resp": self.topic,
                "idpedido": rid,
            }
            self.send(json.dumps(request))
            self.wait_for(rid)

    def close(self) -> None:
        close_client(self.client)


def test_cli_put_then_get_prints_the_value(cluster: Cluster) -> None:
    put = kvclient(cluster, "put", "color", "blue")
    assert (put.returncode, put.stdout.strip()) == (0, "blue")
    got = kvclient(cluster, "get", "color")
    assert (got.returncode, got.stdout.strip()) == (0, "blue")
    as_json = kvclient(cluster, "get", "color", "--json")
    reply = json.loads(as_json.stdout)
    assert reply["valor"] == "blue"
    assert reply["idserv"] == key_slot("color", 3)
    missing = kvclient(cluster, "get", "no-such-key")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "kvclient: key not found: 'no-such-key'"


def test_cli_load_reads_the_keys_back_once_its_clients_have_stopped(cluster: Cluster) -> None:
    # Read back while the clients still wrote, a key could hold a value older than a write
    # acknowledged after the read: the report then claimed acknowledged writes were lost.
    done = kvclient(cluster, "load", "--duration", "3", "--clients", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "acknowledged writes lost: 0" in done.stdout
    first = done.stdout.splitlines()[0]  # operations: N (ok N, failed 0, unknown 0)
    total, ok = (int(word.strip("(,")) for word in first.split()[1:4:2])
    assert ok == total > 100, first


def test_cli_says_in_one_line_when_the_broker_is_down(cluster: Cluster) -> None:
    dead = dict(cluster.env, KV_BROKER=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kvclient", "get", "x"],
        env=dead,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach the MQTT broker" in result.stderr
    assert time.monotonic() - started < 10


def test_a_plain_mqtt_request_is_answered_once_by_its_owner(
    cluster: Cluster, plain: Listener
) -> None:
    for owner in range(3):
        key = key_owned_by(owner)
        plain.send(
            json.dumps(
                {
                    "tipomsg": "insercao",
                    "chave": key,
                    "novovalor": f"v{owner}",
                    "topico-resp": plain.topic,
                    "idpedido": f"put-{owner}",
                }
            )
        )
        plain.send(
            json.dumps(
                {
                    "tipomsg": "consulta",
                    "chave": key,
                    "topico-resp": plain.topic,
                    "idpedido": f"get-{owner}",
                }
            )
        )
    for owner in range(3):
        assert plain.wait_for(f"put-{owner}")["status"] == "ok"
        answer = plain.wait_for(f"get-{owner}")
        assert (answer["valor"], answer["idserv"], answer["status"]) == (f"v{owner}", owner, "ok")
    plain.barrier()
    for owner in range(3):
        assert len(plain.for_id(f"put-{owner}")) == 1
        assert len(plain.for_id(f"get-{owner}")) == 1


@pytest.mark.parametrize(
    ("read_kind", "write_kind", "topic_field"),
    [
        ("C", "I", "topicoresp"),
        ("query", "insert", "topico_resp"),
        ("leitura", "inserção", "topico-resp"),
    ],
)
def test_other_implementations_spellings_over_the_wire(
    cluster: Cluster, plain: Listener, read_kind: str, write_kind: str, topic_field: str
) -> None:
    plain.send(
        json.dumps(
            {
                "tipomsg": write_kind,
                "chave": "sp",
                "novovalor": write_kind,
                topic_field: plain.topic,
                "idpedido": 1,
            }
        )
    )
    assert plain.wait_for(1)["status"] == "ok"
    plain.send(
        json.dumps({"tipomsg": read_kind, "chave": "sp", topic_field: plain.topic, "idpedido": 2})
    )
    assert plain.wait_for(2)["valor"] == write_kind


def test_bad_payloads_get_an_error_reply_and_the_replicas_keep_answering(
    cluster: Cluster, plain: Listener, kv: KVClient
) -> None:
    topic = plain.topic
    bad: dict[str, bytes] = {
        "malformed": b'{"tipomsg": "consulta", "chave": "k", "topico-resp": "'
        + topic.encode()
        + b'", "idpedido": "malformed"',  # cut short
        # A lone surrogate: no UTF-8 encoder can hash or answer it.
        "surrogate": b'{"tipomsg": "consulta", "chave": "\\udc80", "topico-resp": "'
        + topic.encode()
        + b'", "idpedido": "surrogate"}',
        "missing": json.dumps(
            {"tipomsg": "insercao", "chave": "k", "topico-resp": topic, "idpedido": "missing"}
        ).encode(),
        "number": json.dumps(
            {"tipomsg": "consulta", "chave": 42, "topico-resp": topic, "idpedido": "number"}
        ).encode(),
        "unknown": json.dumps(
            {"tipomsg": "apagar", "chave": "k", "topico-resp": topic, "idpedido": "unknown"}
        ).encode(),
        "huge": json.dumps(
            {
                "tipomsg": "insercao",
                "chave": "k",
                "novovalor": "x" * 1_000_000,
                "topico-resp": topic,
                "idpedido": "huge",
            }
        ).encode(),
    }
    for payload in bad.values():
        plain.send(payload)
    plain.send(bytes(range(256)) * 4)  # binary garbage: no response topic to answer on
    for rid in ("missing", "number", "unknown", "huge"):
        answer = plain.wait_for(rid)
        assert answer["status"] == "erro", answer
        assert answer["erro"]
    plain.barrier()
    assert len(plain.for_id("huge")) == 1
    # Malformed JSON has no readable topic: no reply, but a log line on every replica.
    assert plain.for_id("malformed") == []
    assert plain.for_id("surrogate") == []
    for replica in cluster.replicas.values():
        assert replica.alive()
        assert "malformed JSON" in replica.log()
    kv.put("k", "fine")
    assert kv.get("k") == "fine"


def test_python_api_pipelines_many_requests_on_one_connection(kv: KVClient) -> None:
    futures = [kv.submit(Put(f"p{i}", str(i))) for i in range(500)]
    assert all(f.result(timeout=30).status == "ok" for f in futures)
    reads = [kv.submit(Get(f"p{i}")) for i in range(500)]
    assert [f.result(timeout=30).valor for f in reads] == [str(i) for i in range(500)]
    with pytest.raises(KeyNotFound):
        kv.get("never-written")
    with pytest.raises(ServerError):
        kv.put("big", "y" * 300_000)
    with pytest.raises(InvalidRequest):
        kv.put("\udcff", "undecodable bytes from a command line")


def test_every_replica_holds_every_write(
    cluster: Cluster, kv: KVClient, watch: ClusterWatch
) -> None:
    """Write through the owner, then read it back from each survivor as the others die."""
    key = key_owned_by(0)
    kv.put(key, "everywhere")
    for _ in range(50):
        kv.put(key_owned_by(1, prefix="filler"), "x")
    status = watch.wait_for(
        lambda s: len(s.live()) == 3 and len({s.replicas[i].beat.posicao for i in s.live()}) == 1,
        10,
    )
    assert len({status.replicas[i].beat.resumo for i in status.live()}) == 1
    cluster.replicas[0].kill()
    answer = kv.request(Get(key))
    assert (answer.valor, answer.idserv) == ("everywhere", 1)
    cluster.replicas[1].kill()
    answer = kv.request(Get(key))
    assert (answer.valor, answer.idserv) == ("everywhere", 2)
