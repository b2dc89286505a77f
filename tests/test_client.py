"""`KVClient` and `ClusterWatch` through `MockTransport`: answers, retries, timeouts and
errors, without a broker (the same paths against a real one are in test_cluster.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError

import pytest

from kvclient.client import KVClient
from kvclient.operations import Get, Put, Watch
from kvclient.status import ClusterWatch
from kvclient.transport import Deliver, MockTransport
from kvwire.errors import (
    BrokerError,
    InvalidRequest,
    KeyNotFound,
    KVError,
    RequestTimeout,
    ServerError,
)
from kvwire.messages import Heartbeat, MonitorBeat, Resposta

pytestmark = pytest.mark.timeout(10)


class Replica:
    """Answers like an owner would; can stay silent for the first `silent` attempts."""

    def __init__(self, silent: int = 0, status: str = "ok") -> None:
        self.store: dict[str, str] = {}
        self.silent = silent
        self.status = status
        self.attempts: list[dict[str, object]] = []

    def __call__(self, topic: str, payload: bytes) -> Iterable[bytes]:
        request = json.loads(payload)
        self.attempts.append(request)
        if len(self.attempts) <= self.silent:
            return []
        key = request["chave"]
        if request["tipomsg"] == "insercao":
            self.store[key] = request["novovalor"]
        value = self.store.get(key)
        status = self.status if value is not None or self.status != "ok" else "naoencontrada"
        answer = Resposta(
            idpedido=request["idpedido"],
            chave=key,
            valor=value if status == "ok" else None,
            status=status,  # type: ignore[arg-type]
            idserv=0,
            erro="refused" if status == "erro" else None,
        )
        return [answer.encode()]


def client(handler: Replica | None, **options: float) -> tuple[KVClient, MockTransport]:
    transport = MockTransport(handler)
    kv = KVClient(
        timeout=options.get("timeout", 2.0),
        retry_interval=options.get("retry_interval", 0.05),
        transport=transport,
    )
    return kv, transport


def test_a_put_then_a_get_reads_the_value_back() -> None:
    replica = Replica()
    kv, transport = client(replica)
    with kv:
        kv.put("color", "blue")
        assert kv.get("color") == "blue"
    assert transport.topic == kv.response_topic
    assert [topic for topic, _ in transport.published] == ["inf1406-reqs"] * 2
    assert transport.closed


def test_the_answers_statuses_become_the_matching_errors() -> None:
    with client(Replica())[0] as kv, pytest.raises(KeyNotFound):
        kv.get("missing")
    with client(Replica(status="erro"))[0] as kv, pytest.raises(ServerError, match="refused"):
        kv.put("k", "v")


def test_an_unanswered_attempt_is_sent_again_with_the_same_id() -> None:
    replica = Replica(silent=2)
    with client(replica, retry_interval=0.05)[0] as kv:
        kv.put("k", "v")
    assert len(replica.attempts) == 3
    assert len({a["idpedido"] for a in replica.attempts}) == 1  # replicas de-duplicate it


def test_no_answer_at_all_is_a_request_timeout_a_kv_error() -> None:
    replica = Replica(silent=10**6)
    kv = client(replica, timeout=0.3, retry_interval=0.05)[0]
    with kv, pytest.raises(RequestTimeout, match=r"within 0\.3 s") as raised:
        kv.get("k")
    assert isinstance(raised.value, KVError)
    assert 3 <= len(replica.attempts) <= 8  # retried until the deadline, then no more


def test_late_duplicate_and_foreign_answers_are_ignored() -> None:
    kv, transport = client(None, timeout=1.0)
    with kv:
        future = kv.submit(Get("k"))
        request = json.loads(transport.published[0][1])
        transport.send(b"not json")
        transport.send(b'{"idpedido": "someone-else", "status": "ok"}')
        transport.send(Resposta(idpedido=999, status="ok", valor="x", idserv=1).encode())
        assert not future.done()
        first = Resposta(idpedido=request["idpedido"], chave="k", valor="1", status="ok", idserv=0)
        transport.send(first.encode())
        transport.send(first.model_copy(update={"valor": "2"}).encode())  # a replayed answer
        assert future.result(timeout=1).valor == "1"
        kv.submit(Put("k", "v"))  # the client is still working
        assert len(transport.published) == 2


def test_a_cancelled_request_leaves_the_client_working() -> None:
    replica = Replica(silent=1)
    with client(replica)[0] as kv:
        future = kv.submit(Put("k", "v"))
        future.cancel()
        with pytest.raises(CancelledError):
            future.result(timeout=1)
        kv.put("other", "w")
        assert kv.get("other") == "w"


def test_closing_settles_every_pending_request_and_refuses_new_ones() -> None:
    kv, transport = client(None, timeout=5.0)
    future = kv.submit(Get("k"))
    kv.close()
    with pytest.raises(BrokerError, match="closed"):
        future.result(timeout=1)
    with pytest.raises(BrokerError, match="closed"):
        kv.get("k")
    assert transport.closed


def test_a_key_that_is_not_utf8_is_refused_before_anything_is_sent() -> None:
    kv, transport = client(Replica())
    with kv, pytest.raises(InvalidRequest, match="UTF-8"):
        kv.put("bad\udcff", "v")
    assert transport.published == []


@pytest.mark.parametrize(
    ("operation", "says"),
    [
        (Watch("a/", -1, "lease"), "desde: input should be greater than or equal to 0"),
        (Watch(7, 3, "lease"), "prefixo: input should be a valid string"),  # type: ignore[arg-type]
        (Watch("a/", "3", "lease"), "desde: input should be a valid integer"),  # type: ignore[arg-type]
    ],
)
def test_a_watch_from_a_bad_revision_or_prefix_is_refused_before_it_is_sent(
    operation: Watch, says: str
) -> None:
    kv, transport = client(Replica())
    with kv, pytest.raises(InvalidRequest, match=says):
        kv.submit(operation)
    assert transport.published == []


def test_a_transport_that_cannot_open_fails_the_constructor() -> None:
    class Down(MockTransport):
        def open(self, topic: str | Sequence[str], deliver: Deliver) -> None:
            raise BrokerError("cannot reach the MQTT broker at 127.0.0.1:9: refused")

    with pytest.raises(BrokerError, match="cannot reach"):
        KVClient(transport=Down())


def test_the_watch_reads_beats_and_ignores_garbage() -> None:
    transport = MockTransport()
    with ClusterWatch(transport=transport) as watch:
        assert transport.topic == "inf1406-monitor"
        transport.send(b"\xff garbage")
        for i, digest in enumerate(["aa", "aa", "bb"]):
            beat = Heartbeat(idserv=i, incarnacao=f"i{i}", posicao=7, resumo=digest)
            transport.send(beat.encode())
        transport.send(MonitorBeat(idmonitor="m1", enviadoem=0.0).encode())
        status = watch.wait_for(lambda s: len(s.live()) == 3, timeout=1)
    assert status.live() == [0, 1, 2]
    assert status.divergent() == [(0, 2), (1, 2)]
    assert list(status.monitors) == ["m1"]
