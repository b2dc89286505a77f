"""`KVClient`: requests over MQTT with many in flight on one connection (PROTOCOL §10).

paho's callbacks only resolve futures. Pending requests live in a dict keyed by `idpedido`
and leave it when answered or when their deadline passes; a timed-out attempt is published
again with the same `idpedido`, which the replicas de-duplicate, so a retried put is applied
once.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from pydantic_core import PydanticSerializationError

from kvclient.transport import MqttTransport, Transport
from kvwire.access import Access
from kvwire.errors import (
    BrokerError,
    InvalidRequest,
    KeyNotFound,
    KVError,
    RequestTimeout,
    ServerError,
)
from kvwire.messages import (
    REQUESTS_TOPIC,
    Consulta,
    Insercao,
    Invalid,
    Resposta,
    decode_resposta,
)
from kvwire.mqtt import Closing, never_raises

RESPONSE_TOPIC_PREFIX = "inf1406-resp"


@dataclass
class _Pending:
    future: Future[Resposta]
    payload: bytes
    deadline: float
    next_send: float


class KVClient(Closing):
    """A connection to an mqtt-kv cluster.

    >>> with KVClient("127.0.0.1:1883") as kv:
    ...     kv.put("color", "blue")
    ...     kv.get("color")
    'blue'
    """

    def __init__(
        self,
        broker: str | None = None,
        *,
        timeout: float = 5.0,
        retry_interval: float = 1.0,
        requests_topic: str = REQUESTS_TOPIC,
        access: Access | None = None,
        transport: Transport | None = None,
    ) -> None:
        """`access`: user name, password and TLS (default: from KV_USERNAME and the other
        variables of `kvwire.access`); `transport` replaces the MQTT connection to `broker`
        (tests: `MockTransport`)."""
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.requests_topic = requests_topic
        self.name = secrets.token_hex(6)
        access = access if access is not None else Access.load()
        # A secured broker lets a user read answers under its own name only (PROTOCOL §16).
        user = f"{access.username}/" if access.username else ""
        self.response_topic = f"{RESPONSE_TOPIC_PREFIX}/{user}{self.name}"
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self._closed = threading.Event()
        self._transport = transport or MqttTransport(
            broker, connect_timeout=min(timeout, 5.0), access=access
        )
        self._transport.open(self.response_topic, self._on_answer)
        self._retrier = threading.Thread(target=self._retry_loop, daemon=True, name="kv-retry")
        self._retrier.start()

    # --- the transport's thread: only resolve futures -------------------------------------

    @never_raises
    def _on_answer(self, payload: bytes) -> None:
        answer = decode_resposta(payload)
        if isinstance(answer, Invalid) or not isinstance(answer.idpedido, int):
            return  # not ours to understand; the request will time out and say so
        with self._lock:
            pending = self._pending.pop(answer.idpedido, None)
        if pending is not None:  # later answers to the same id are duplicates: dropped
            _settle(pending.future, answer)

    # --- requests -------------------------------------------------------------------------

    def submit(self, key: str, value: str | None = None) -> Future[Resposta]:
        """Send a get (value None) or a put; the future holds the replica's `resposta`."""
        if self._closed.is_set():
            raise BrokerError("this client is closed")
        future: Future[Resposta] = Future()
        now = time.monotonic()
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            message: Consulta | Insercao
            if value is None:
                message = Consulta(chave=key, topico_resp=self.response_topic, idpedido=rid)
            else:
                message = Insercao(
                    chave=key, novovalor=value, topico_resp=self.response_topic, idpedido=rid
                )
            try:
                payload = message.encode()
            except PydanticSerializationError:
                # A command line's undecodable bytes arrive as lone surrogates.
                bad = key if not _encodable(key) else value
                raise InvalidRequest(f"not valid UTF-8: {bad!r}") from None
            self._pending[rid] = _Pending(
                future, payload, now + self.timeout, now + self.retry_interval
            )
        self._transport.publish(self.requests_topic, payload)
        return future

    def get_async(self, key: str) -> Future[Resposta]:
        return self.submit(key)

    def put_async(self, key: str, value: str) -> Future[Resposta]:
        return self.submit(key, value)

    def request(self, key: str, value: str | None = None) -> Resposta:
        """The replica's whole answer, whatever its status."""
        future = self.submit(key, value)
        try:
            return future.result(timeout=self.timeout + 5)
        except FutureTimeout:  # the retry thread settles every future; this is a backstop
            raise RequestTimeout(f"no replica answered within {self.timeout:g} s") from None

    def get(self, key: str) -> str:
        """The key's value; KeyNotFound if it has none."""
        return value_of(self.request(key))

    def put(self, key: str, value: str) -> None:
        """Store the value; returns once the key's owner acknowledged it."""
        value_of(self.request(key, value))

    def _retry_loop(self) -> None:
        while not self._closed.wait(0.05):
            self._retry_due()

    @never_raises
    def _retry_due(self) -> None:
        now = time.monotonic()
        expired: list[_Pending] = []
        resend: list[bytes] = []
        with self._lock:
            for rid, pending in list(self._pending.items()):
                if now >= pending.deadline:
                    expired.append(self._pending.pop(rid))
                elif now >= pending.next_send:
                    pending.next_send = now + self.retry_interval
                    resend.append(pending.payload)
        for payload in resend:
            self._transport.publish(self.requests_topic, payload)
        for pending in expired:
            _settle(
                pending.future, RequestTimeout(f"no replica answered within {self.timeout:g} s")
            )

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            abandoned = list(self._pending.values())
            self._pending.clear()
        for pending in abandoned:
            _settle(pending.future, BrokerError("the client was closed"))
        self._transport.close()


def _settle(future: Future[Resposta], outcome: Resposta | KVError) -> None:
    """Resolve a request's future, unless its caller cancelled it meanwhile."""
    with contextlib.suppress(InvalidStateError):
        if isinstance(outcome, KVError):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def value_of(answer: Resposta) -> str:
    """The value an `ok` answer carries; the matching KVError otherwise."""
    if answer.status == "ok":
        return answer.valor or ""
    if answer.status == "naoencontrada":
        raise KeyNotFound(answer.chave or "")
    raise ServerError(f"replica {answer.idserv} refused the request: {answer.erro}")
