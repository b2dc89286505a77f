"""A secured cluster (protocol §16) against real processes: the broker's passwords and ACL
keep strangers out and clients in their lane, and the cluster key keeps anyone without it
from fencing a replica or posing as one. Every cluster here runs over TLS with a CA the test
generates (`scripts/tls-ca.sh`)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvclient.client import KVClient
from kvclient.operations import Get, KeepAlive
from kvclient.status import ClusterWatch
from kvwire.access import Access, ClusterKey, signature_of
from kvwire.errors import BrokerError
from kvwire.leasing import Expiracao
from kvwire.messages import FalhaServ, Heartbeat
from kvwire.mqtt import new_client
from tests.cluster import ROOT, Cluster, free_port, wait_until
from tests.plain import close_client, connect_blocking
from tests.test_cluster import key_owned_by, kvclient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, secure=True, tls=True)
    assert cluster.secrets is not None
    for name, value in cluster.secrets.env("client").items():
        monkeypatch.setenv(name, value)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


class Raw:
    """A plain MQTT 5 client logged in as `user`, which publishes exactly the bytes and
    properties it is given and records what it receives, properties included."""

    def __init__(self, cluster: Cluster, user: str, *topics: str) -> None:
        assert cluster.secrets is not None
        self.received: list[tuple[str, bytes, Properties | None]] = []
        self._lock = threading.Lock()
        self.client = new_client(f"raw-{user}-{time.monotonic_ns()}", access=_access(cluster, user))
        self.client.on_message = self._on_message
        self.granted: list[Any] = []
        self.client.on_subscribe = lambda c, u, mid, codes, props: self.granted.extend(codes)
        #: The broker's PUBACK reason code for each message id.
        self.acks: dict[int, str] = {}
        self.client.on_publish = lambda c, u, mid, code, props: self.acks.update({mid: str(code)})
        host, port = cluster.address.split(":")
        connect_blocking(self.client, host, int(port), timeout=5)
        for topic in topics:
            self.client.subscribe(topic, qos=1)
        if topics:
            wait_until(lambda: len(self.granted) >= len(topics), 5, "SUBACKs")

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload), msg.properties))

    def topics(self) -> set[str]:
        with self._lock:
            return {topic for topic, _, _ in self.received}

    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> str:
        """Publish and return the broker's answer ("Success", "Not authorized", ...)."""
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        return wait_until(lambda: self.acks.get(info.mid), 5, "the broker's PUBACK")

    def close(self) -> None:
        close_client(self.client)


def _access(cluster: Cluster, user: str) -> Access:
    assert cluster.secrets is not None
    return cluster.secrets.access(user)


def _incarnations(cluster: Cluster) -> dict[int, str]:
    with ClusterWatch(cluster.address) as watch:
        status = watch.wait_for(lambda s: len(s.live()) == 3, 10)
    assert status.live() == [0, 1, 2]
    return {i: str(status.replicas[i].beat.incarnacao) for i in range(3)}


def _owners_answer(cluster: Cluster) -> None:
    """Every key is read back from its own owner: nobody was fenced or failed over."""
    with KVClient(cluster.address, timeout=10) as kv:
        for owner in range(3):
            key = key_owned_by(owner, prefix="owned")
            kv.put(key, f"v{owner}")
            answer = kv.request(Get(key))
            assert (answer.valor, answer.idserv) == (f"v{owner}", owner)


def test_strangers_are_refused_and_the_client_works_with_its_settings(
    secured: Cluster, tmp_path: Path
) -> None:
    assert secured.secrets is not None and secured.secrets.ca is not None
    anonymous = Access(tls_ca=secured.secrets.ca)
    with pytest.raises(BrokerError, match="refused us: Not authorized"):
        KVClient(secured.address, access=anonymous, timeout=3)

    def get_with(**changed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / ".venv" / "bin" / "kvclient"), "get", "a"],
            env=dict(secured.env, **changed), capture_output=True, text=True, timeout=30,
            check=False,
        )  # fmt: skip

    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    result = get_with(KV_PASSWORD_FILE=str(wrong))
    assert result.returncode == 2
    # Mosquitto 2.0 says "Not authorized" for a wrong password too; newer ones "Bad user name".
    assert result.stderr.count("\n") == 1 and "refused us" in result.stderr
    # With another CA, the broker's certificate does not verify: one line, exit 2.
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "tls-ca.sh"), str(tmp_path / "other-ca")],
        check=True, capture_output=True,
    )  # fmt: skip
    result = get_with(KV_TLS_CA=str(tmp_path / "other-ca" / "ca.crt"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "TLS with the MQTT broker" in result.stderr
    # Without TLS, the broker's TLS listener does not take the plain connection: one line.
    result = get_with(KV_TLS_CA="")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "MQTT broker" in result.stderr
    # With the client's own settings (as `source run/env` gives them), put and get work.
    assert kvclient(secured, "put", "color", "blue").stdout == "blue\n"
    assert kvclient(secured, "get", "color").stdout == "blue\n"


def test_a_client_forging_falhaserv_for_every_replica_fences_nobody(secured: Cluster) -> None:
    incarnations = _incarnations(secured)
    forger = Raw(secured, "client")
    try:
        for _ in range(3):
            for replica, incarnation in incarnations.items():
                for named in (incarnation, None):
                    forged = FalhaServ(idserv=replica, vistoem=time.time(), incarnacao=named)
                    # The broker takes it (a client may publish requests): the signature
                    # check, not the ACL, is what stops it.
                    assert forger.publish("inf1406-reqs", forged.encode()) == "Success"
    finally:
        forger.close()
    for i in range(3):
        secured.wait_log(i, "ignores a falhaserv from", 10)
    _owners_answer(secured)
    with ClusterWatch(secured.address) as watch:
        status = watch.wait_for(
            lambda s: (
                len(s.live()) == 3
                and all((s.replicas[i].beat.semassinatura or 0) >= 18 for i in range(3))
            ),
            10,
        )
    assert status.live() == [0, 1, 2]
    assert _incarnations(secured) == incarnations  # nobody re-joined
    shown = kvclient(secured, "status")
    assert shown.returncode == 0, shown.stderr
    assert "control messages with a bad signature" in shown.stdout
    for i in range(3):
        log = secured.replicas[i].log()
        assert "fenced" not in log
        assert log.count("ignores a falhaserv from") == 1  # once per sender, then counted


def test_the_acl_keeps_a_client_to_its_own_answers(secured: Cluster) -> None:
    other = Raw(secured, "other", "#", "inf1406-resp/#", "inf1406-reqs", "inf1406-sync/#")
    try:
        with KVClient(secured.address, timeout=10) as kv:  # the user `client`
            for i in range(20):
                kv.put(f"secret-{i}", "do not read")
                assert kv.get(f"secret-{i}") == "do not read"
        secured.replicas[0].kill()  # a join makes a state transfer on a sync topic
        secured.start_replica(0)
        secured.wait_log(0, "joined at position", 15)
        _owners_answer(secured)
        # What `status` and `web` need, it may read; nothing else reaches it. The events
        # (`kvclient web`'s timeline) name replicas and positions, never a key or a value.
        wait_until(lambda: "inf1406-monitor" in other.topics(), 5, "heartbeats")
        wait_until(lambda: "inf1406-monitor/events" in other.topics(), 5, "the join's event")
        assert other.topics() == {"inf1406-monitor", "inf1406-monitor/events"}
        events = [p for t, p, _ in other.received if t == "inf1406-monitor/events"]
        assert any(b"joined at position" in p for p in events)
        assert not any(b"secret-" in p or b"do not read" in p for p in events)
    finally:
        other.close()
    # Nor may it publish heartbeats: the broker refuses, and a reader of the topic never sees
    # it while the replicas' heartbeats keep coming.
    reader = Raw(secured, "replica", "inf1406-monitor")
    client = Raw(secured, "client")
    try:
        fake = Heartbeat(idserv=0, incarnacao="fake", modo="gone").encode()
        assert client.publish("inf1406-monitor", fake) == "Not authorized"
        seen = len(reader.received)
        wait_until(lambda: len(reader.received) >= seen + 12, 10, "more heartbeats")
        assert all(payload != fake for _, payload, _ in reader.received)
    finally:
        reader.close()
        client.close()


def test_another_key_a_replayed_falhaserv_and_an_unsigned_heartbeat_are_ignored(
    secured: Cluster,
) -> None:
    # The `replica` user may publish anywhere: what stops it is not holding the cluster key.
    insider = Raw(secured, "replica", "inf1406-reqs")
    try:
        incarnations = _incarnations(secured)
        wrong = ClusterKey(b"another cluster's key, 32 bytes!")
        for _ in range(2):
            forged = FalhaServ(idserv=1, vistoem=time.time(), incarnacao=incarnations[1]).encode()
            assert insider.publish("inf1406-reqs", forged, wrong.properties(forged)) == "Success"
            gone = Heartbeat(idserv=0, incarnacao=incarnations[0], modo="gone").encode()
            assert insider.publish("inf1406-monitor", gone) == "Success"
        secured.wait_log(1, "ignores a falhaserv from", 10)
        wait_until(
            lambda: "ignores a heartbeat from replica 0" in secured.monitors[0].log(),
            10,
            "the monitor to ignore the unsigned heartbeat",
        )
        # A real failure: the monitor's falhaserv, signed, is captured on its way...
        secured.replicas[2].kill()
        secured.start_replica(2)
        secured.wait_log(2, "joined at position", 15)

        def signed_falhaserv() -> tuple[bytes, str] | None:
            for _topic, payload, props in list(insider.received):
                signature = signature_of(props)
                # Replica 2's, not the one signed with the wrong key.
                if signature and b'"falhaserv"' in payload and json.loads(payload)["idserv"] == 2:
                    return payload, signature
            return None

        payload, signature = wait_until(signed_falhaserv, 10, "the monitor's falhaserv")
        # ...and replayed, twice, once replica 2 is back under a new incarnation.
        replayed = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        replayed.UserProperty = ("assinatura", signature)
        for _ in range(2):
            assert insider.publish("inf1406-reqs", payload, replayed) == "Success"
        for i in range(3):
            secured.wait_log(i, "ignores a falhaserv for an old incarnation", 10)
    finally:
        insider.close()
    _owners_answer(secured)
    assert secured.replicas[1].log().count("ignores a falhaserv from") == 1
    assert secured.monitors[0].log().count("ignores a heartbeat from replica 0") == 1
    assert "replica 0 declared failed" not in secured.monitors[0].log()
    for i in range(3):
        log = secured.replicas[i].log()
        assert log.count("ignores a falhaserv for an old incarnation") == 1
        assert "fenced" not in log
    assert _incarnations(secured)[2] != incarnations[2]


def test_cluster_sh_up_secure_over_tls_from_a_shell(tmp_path: Path) -> None:
    """What the README shows: `cluster.sh up --secure --tls`, then `source run/env`."""
    run = tmp_path / "run"
    port = free_port()
    env = dict(os.environ, KV_RUN_DIR=str(run), KV_PORT=str(port))
    for name in ("KV_BROKER", "KV_USERNAME", "KV_PASSWORD_FILE", "KV_PASSWORD", "KV_TLS_CA"):
        env.pop(name, None)
    script = str(ROOT / "scripts" / "cluster.sh")

    def shell(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60,
            check=False, cwd=ROOT,
        )  # fmt: skip

    try:
        up = shell(f"bash {script} up --secure --tls")
        assert up.returncode == 0, up.stderr
        assert "secured, over TLS" in up.stdout
        modes = {p.name: p.stat().st_mode & 0o777 for p in (run / "secrets").iterdir()}
        assert {modes[f"{u}.password"] for u in ("replica", "monitor", "client")} == {0o600}
        assert modes["cluster.key"] == modes["passwd"] == 0o600
        done = shell(
            f"source {run}/env && kvclient put color blue && "
            f"bash {script} kill 0 && bash {script} start 0 && kvclient get color"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "blue" and done.stdout.splitlines()[-1] == "blue"
        # The same client without the settings is refused by the broker, in one line.
        anonymous = shell(
            f"source {run}/env && unset KV_USERNAME KV_PASSWORD_FILE && .venv/bin/kvclient get a"
        )
        assert anonymous.returncode == 2 and anonymous.stderr.count("\n") == 1
        assert "Not authorized" in anonymous.stderr
    finally:
        shell(f"bash {script} down --wipe")


def test_a_client_forging_an_expiracao_ends_no_lease(secured: Cluster) -> None:
    """The keeper's `expiracao` is a signed control message (protocol §18): a client that
    names a lease's last renewal exactly, as only a replica should, still ends nothing."""
    with KVClient(secured.address, timeout=10) as kv:
        lease = kv.grant(30)
        kv.put("leased", "v", lease=lease)
        renewed = kv.request(KeepAlive(lease)).revisao
        assert renewed is not None
        forger = Raw(secured, "client")
        try:
            forged = Expiracao(concessao=lease, renovadaem=renewed, idserv=0)
            assert forger.publish("inf1406-reqs", forged.encode()) == "Success"
        finally:
            forger.close()
        for i in range(3):
            secured.wait_log(i, "ignores an expiracao from replica 0", 10)
        assert kv.get("leased") == "v"
        kv.revoke(lease)  # a client's own revoke is a request, not a control message
        assert kv.request(Get("leased")).status == "naoencontrada"
