"""`KVClient`: requests over MQTT with many in flight on one connection (protocol §10).

Every operation is a typed value (`kvclient.operations`) given to one `submit`. The
transport's thread only resolves futures. Pending requests live in a dict keyed by `idpedido`
and leave it when answered or when their deadline passes; a timed-out attempt is published
again with the same `idpedido`, which the replicas de-duplicate, so a retried put is applied
once.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NamedTuple

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from kvclient.batching import Outbox, Pending
from kvclient.cursor import Change
from kvclient.feed import FeedWatch
from kvclient.leases import Lease, new_lease_name
from kvclient.operations import (
    Compare,
    Delete,
    Get,
    Grant,
    History,
    KeepAlive,
    List,
    ListLeases,
    Operation,
    Put,
    Revoke,
    Txn,
    TxnStep,
    checked,
)
from kvclient.recipes import Election, Lock
from kvclient.transport import MqttTransport, Transport, Will
from kvwire.access import Access
from kvwire.batch import MAX_BATCH_REQUESTS, decode_answers, encode_batch
from kvwire.errors import (
    BrokerError,
    Conflict,
    InvalidRequest,
    KVError,
    RequestTimeout,
)
from kvwire.feed import Evento, Mudanca, decode_evento
from kvwire.leasing import LeaseSummary
from kvwire.messages import REQUESTS_TOPIC, Invalid, Resposta
from kvwire.mqtt import Closing, never_raises
from kvwire.txn import Resultado
from kvwire.wire import LIST_LIMIT_DEFAULT

RESPONSE_TOPIC_PREFIX = "inf1406-resp"


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
        session_lease: int | None = None,
        will_delay: int = 0,
        batching: bool = True,
        max_batch: int = 256,
        max_batch_bytes: int = 256 * 1024,
        linger: float = 0.0,
        max_in_flight: int = 1,
    ) -> None:
        """`access`: user name, password and TLS (default: from KV_USERNAME and the other
        variables of `kvwire.access`); `transport` replaces the MQTT connection to `broker`
        (tests: `MockTransport`).

        `session_lease` (a TTL in seconds): a lease bound to this connection, `self.session`
        (protocol §18). The connection's MQTT will revokes it, so that its keys end when the
        broker sees the connection die (at once for a killed process, after 15 s of silence
        for a dead network), `will_delay` seconds later unless the client is back by then;
        kept alive while connected, with the TTL as the backstop; revoked by `close()`.

        `batching` (protocol §21, `kvclient.batching`): while `max_in_flight` messages (1,
        Nagle's rule: the best of 1, 2 and 4 measured at 64 and 256 in flight and with 4 and
        16 threads) are on their way, requests wait and then go together, as one `lote` of at
        most `max_batch` requests and `max_batch_bytes`, when an answer frees a slot; with a
        slot free a request goes at once, so one in flight waits for nothing. `linger` (seconds,
        for bulk jobs): a batch also waits that long to fill. Callers see no difference but
        the speed."""
        self.broker = broker
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.requests_topic = requests_topic
        self.name = secrets.token_hex(6)
        access = access if access is not None else Access.load()
        self.access = access
        # A secured broker lets a user read answers under its own name only (protocol §16).
        user = f"{access.username}/" if access.username else ""
        self.response_topic = f"{RESPONSE_TOPIC_PREFIX}/{user}{self.name}"
        self._pending: dict[int, Pending] = {}
        #: Each watch's events go to its handler, by the `idpedido` of its `vigia` (§19).
        self._watches: dict[int, Callable[[Evento], None]] = {}
        self._lock = threading.Lock()
        self._next_id = 1
        self.batching = batching
        #: Requests submitted and not yet published (with `batching`), under `_lock`; and
        #: whether a thread is publishing them now (one at a time, so that they leave in the
        #: order they came).
        self._outbox = Outbox(
            max_batch=max(1, min(max_batch, MAX_BATCH_REQUESTS)), max_bytes=max_batch_bytes,
            max_in_flight=max(1, max_in_flight), linger=linger,
        )  # fmt: skip
        self._sending = False
        #: Batches published, and the requests they held (not counting requests sent alone).
        self.batches_sent = 0
        self.batched_requests = 0
        self._closed = threading.Event()
        #: The lease bound to this connection, with `session_lease`.
        self.session: Lease | None = None
        will, lease_name = None, None
        if session_lease is not None:
            lease_name = new_lease_name()
            revoke = Revoke(lease_name).message(self.response_topic, f"will-{lease_name}")
            will = Will(requests_topic, revoke.encode(), will_delay)
        # MQTT 3.1.1: requests and answers use no MQTT 5 property, and paho spends ~20% less
        # CPU per message without them (issue 16). A will with a delay is MQTT 5's.
        self._transport = transport or MqttTransport(
            broker,
            connect_timeout=min(timeout, 5.0),
            access=access,
            v5=will is not None,
            qos=0,
            will=will,
        )
        self._transport.open(self.response_topic, self._on_answer)
        self._retrier = threading.Thread(target=self._retry_loop, daemon=True, name="kv-retry")
        self._retrier.start()
        if session_lease is not None:
            try:
                self.session = self.lease(session_lease, lease_name)
            except BaseException:
                self.close()
                raise

    # --- the transport's thread: only resolve futures -------------------------------------

    @never_raises
    def _on_answer(self, topic: str, payload: bytes) -> None:
        if payload.startswith(_EVENT):
            event = decode_evento(payload)
            rid = event.idpedido if event is not None else None
            handler = self._watches.get(rid) if isinstance(rid, int) else None
            if handler is not None and event is not None:
                handler(event)
            return
        answers = decode_answers(payload)  # one, or an owner's part of a batch (§21)
        if isinstance(answers, Invalid):
            return  # not ours to understand; the request will time out and say so
        for answer in answers:
            rid = answer.idpedido
            with self._lock:
                pending = self._pending.pop(rid, None) if isinstance(rid, int) else None
                if pending is not None and pending.sent is not None:
                    self._outbox.landed(pending)
            if pending is not None:  # later answers to the same id are duplicates: dropped
                _settle(pending.future, answer)
        if self._outbox.items:  # what callers queued while these were on their way
            self._flush()

    # --- requests -------------------------------------------------------------------------

    def submit(self, operation: Operation) -> Future[Resposta]:
        """Send one operation; the future holds the replica's `resposta`, whatever its status."""
        return self._submit(operation, None)[1]

    def submit_watch(
        self, operation: Operation, events: Callable[[Evento], None]
    ) -> tuple[int, Future[Resposta]]:
        """Send a `vigia` (§19); `events` is called on the transport's thread with each event
        its owner sends under the request's id (returned), until `unwatch`."""
        return self._submit(operation, events)

    def _submit(
        self, operation: Operation, events: Callable[[Evento], None] | None
    ) -> tuple[int, Future[Resposta]]:
        if self._closed.is_set():
            raise BrokerError("this client is closed")
        future: Future[Resposta] = Future()
        now = time.monotonic()
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            try:
                message = operation.message(self.response_topic, rid)
            except ValidationError as exc:  # a wrong type or range, say a revision of -1
                problem = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in problem["loc"])
                raise InvalidRequest(f"{where}: {problem['msg'].lower()}") from None
            if events is not None:
                self._watches[rid] = events
            try:
                payload = message.encode()
            except PydanticSerializationError:
                # A command line's undecodable bytes arrive as lone surrogates.
                texts = [str(v) for v in message.model_dump().values() if isinstance(v, str)]
                bad = next((t for t in texts if not _encodable(t)), "")
                raise InvalidRequest(f"not valid UTF-8: {bad!r}") from None
            pending = Pending(future, payload, now + self.timeout, now + self.retry_interval)
            self._pending[rid] = pending
            alone = not self.batching or (not self._sending and self._outbox.alone(pending))
            if not alone:
                self._outbox.add(pending, now)
        if alone:
            self._transport.publish(self.requests_topic, payload)
        else:
            self._flush()
        return rid, future

    def _flush(self, force: bool = False) -> None:
        """Publish what waits, a message at a time, as long as `Outbox.may_send` says so (or
        once, `force`d), unless another thread is at it: it takes ours too."""
        with self._lock:
            now = time.monotonic()
            if self._sending or not (self._outbox.may_send(now) or (force and self._outbox.items)):
                return
            self._sending = True
        try:
            while True:
                with self._lock:
                    if not (force or self._outbox.may_send(time.monotonic())):
                        self._sending = False
                        return
                    force = False
                    batch = self._outbox.take(time.monotonic())
                    if not batch:
                        self._sending = False
                        return
                    if len(batch) > 1:
                        self.batches_sent += 1
                        self.batched_requests += len(batch)
                if len(batch) == 1:
                    payload = batch[0].payload
                else:
                    payload = encode_batch([pending.payload for pending in batch])
                self._transport.publish(self.requests_topic, payload)
        except BaseException:
            with self._lock:
                self._sending = False
            raise

    def wait(self, future: Future[Resposta]) -> Resposta:
        """The answer of a submitted request, whatever its status."""
        try:
            return future.result(timeout=self.timeout + 5)
        except FutureTimeout:  # the retry thread settles every future; this is a backstop
            raise RequestTimeout(f"no replica answered within {self.timeout:g} s") from None

    def request(self, operation: Operation) -> Resposta:
        """The replica's whole answer to one operation, whatever its status."""
        return self.wait(self.submit(operation))

    def get(self, key: str) -> str:
        """The key's value; KeyNotFound if it has none."""
        return self.get_entry(key).value

    def get_entry(self, key: str) -> Entry:
        """The key's value and revision; KeyNotFound if it has none."""
        answer = checked(self.request(Get(key)))
        return Entry(answer.valor or "", answer.revisao or 0)

    def put(
        self, key: str, value: str, *, if_revision: int | None = None, lease: str | None = None
    ) -> int:
        """Store the value once the key's owner acknowledged it; its new revision. With
        `if_revision` (0: only if the key has no value), Conflict when the key's revision
        is another: nothing was written. With `lease`, the key ends with that lease."""
        return checked(self.request(Put(key, value, if_revision, lease))).revisao or 0

    def grant(self, ttl: int, name: str | None = None) -> str:
        """Grant a lease of `ttl` seconds (or grant `name` again); its name. It ends, its keys
        with it, unless kept alive within each `ttl` (protocol §18)."""
        name = name or new_lease_name()
        checked(self.request(Grant(name, ttl)))
        return name

    def keep_alive(self, name: str) -> int:
        """Keep the lease alive for another TTL, which it returns; ServerError if it ended."""
        return checked(self.request(KeepAlive(name))).ttl or 0

    def revoke(self, name: str) -> None:
        """End the lease now: its keys are deleted. ServerError if it had ended already."""
        checked(self.request(Revoke(name)))

    def leases(self, *, page: int = LIST_LIMIT_DEFAULT) -> Iterator[LeaseSummary]:
        """Every lease of the cluster, in name order, a page at a time: its name, TTL, keys
        and the position of its last grant or keep-alive."""
        after: str | None = None
        while True:
            answer = checked(self.request(ListLeases(after, page)))
            found = answer.concessoes or []
            yield from found
            if not answer.mais or not found:
                return
            after = found[-1].concessao

    def lock(self, name: str) -> Lock:
        """The lock `name` (`with kv.lock("jobs/nightly") as token:`), held under this
        client's session lease: a client made with `session_lease=TTL`."""
        return Lock(self, name)

    def election(self, name: str, value: str) -> Election:
        """A candidacy in the election `name` (`campaign()` waits to lead), under this
        client's session lease."""
        return Election(self, name, value)

    def lease(self, ttl: int, name: str | None = None) -> Lease:
        """A lease granted now and kept alive until it is closed (a `with` block's end),
        which revokes it."""
        return Lease(self, self.grant(ttl, name), ttl)

    def delete(self, key: str, *, if_revision: int | None = None) -> int:
        """Delete the key; the delete's revision. KeyNotFound if it had no value, Conflict
        when `if_revision` is given and is not the key's."""
        return checked(self.request(Delete(key, if_revision))).revisao or 0

    def keys(
        self, prefix: str = "", *, limit: int | None = None, page: int = LIST_LIMIT_DEFAULT
    ) -> Iterator[str]:
        """Keys starting with `prefix`, in order, fetched a page at a time (each page as of
        its own position: keys written meanwhile may or may not be listed)."""
        after: str | None = None
        left = limit
        while left is None or left > 0:
            size = page if left is None else min(page, left)
            answer = checked(self.request(List(prefix, after, size)))
            found = answer.chaves or []
            yield from found
            if left is not None:
                left -= len(found)
            if not answer.mais or not found:
                return
            after = found[-1]

    def unwatch(self, rid: int | str) -> None:
        """Stop handing on the events of the watch registered with `rid`."""
        with self._lock:
            if isinstance(rid, int):
                self._watches.pop(rid, None)

    def watch(
        self, prefix: str = "", from_revision: int | None = None, *, lease_ttl: int = 10
    ) -> FeedWatch:
        """The changes of the keys starting with `prefix` (protocol §19), as an iterator of
        `Change`s, in revision order, once each, across a failover, a broker restart and a
        restart of the whole cluster: the changes after `from_revision`, or, without it, the
        current value of each key first. `Compacted` when the history no longer holds the
        changes after `from_revision`. The watch lives by a lease of `lease_ttl` s that it
        keeps alive; `close()` (or the `with` block's end) ends it.

        >>> with kv.watch("sensors/", from_revision=120) as changes:
        ...     for change in changes:
        ...         print(change.revision, change.key, change.value)
        """
        return FeedWatch(self, prefix, from_revision, lease_ttl=lease_ttl)

    def history(self, key: str, *, limit: int = 1000) -> list[Change]:
        """The key's changes that the history keeps (the newest `limit`), oldest first."""
        answer = checked(self.request(History(key, limit)))
        return [Change.of(m) for m in answer.mudancas or [] if isinstance(m, Mudanca)]

    def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[TxnStep] = (),
        failure: Sequence[TxnStep] = (),
    ) -> TxnResult:
        """If every compare holds, the operations of `success`, else those of `failure`, all
        at one position of the stream, all or nothing (protocol §20). `Conflict` when a put's
        or delete's own `if_revision` did not hold (nothing written), `ServerError` when the
        cluster refused it (say, 129 operations).

        >>> result = kv.txn([Compare("a", revision=5)], [Put("a", "1"), Get("b")], [Get("a")])
        >>> result.succeeded, result.results[1].valor
        """
        operation = Txn(tuple(compares), tuple(success), tuple(failure))
        answer = self.request(operation)
        if answer.status == "conflito":
            raise Conflict("", None, None, answer.erro)
        answer = checked(answer)
        return TxnResult(bool(answer.sucesso), answer.resultados or [], answer.revisao or 0)

    def _retry_loop(self) -> None:
        linger = self._outbox.linger
        tick = min(0.05, linger) if linger else 0.05
        while not self._closed.wait(tick):
            self._retry_due()
            if self._outbox.items:
                self._flush_waiting()

    @never_raises
    def _flush_waiting(self) -> None:
        """A linger ended; or the answers that would free a slot are lost: after a retry
        interval, what waits goes anyway."""
        waited = time.monotonic() - self._outbox.since
        self._flush(force=waited >= self.retry_interval)

    @never_raises
    def _retry_due(self) -> None:
        now = time.monotonic()
        expired: list[Pending] = []
        resend: list[bytes] = []
        with self._lock:
            for rid, pending in list(self._pending.items()):
                if now >= pending.deadline:
                    expired.append(self._pending.pop(rid))
                    self._outbox.landed(pending)
                elif now >= pending.next_send and (pending.sent or not self.batching):
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
        if self.session is not None:  # its keys end now, not at the TTL
            self.session.close()
            self.session = None
        self._closed.set()
        with self._lock:
            abandoned = list(self._pending.values())
            self._pending.clear()
            self._outbox.clear()
        for pending in abandoned:
            _settle(pending.future, BrokerError("the client was closed"))
        self._transport.close()


_EVENT = b'{"tipomsg":"evento"'


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


class TxnResult(NamedTuple):
    """Which branch ran, one result per operation of it, and the transaction's position
    (the revision of every key it wrote)."""

    succeeded: bool
    results: list[Resultado]
    revision: int


class Entry(NamedTuple):
    value: str
    #: The stream position of the write that set the value (protocol §12).
    revision: int
