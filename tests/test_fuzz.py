"""Property-based fuzzing of the decoders and the replica's state machine (issue 11).

Arbitrary bytes, arbitrary JSON built from the protocol's own field names, and arbitrary
sequences of requests, stalls and `falhaserv`, fed through the in-memory bus. Invariants: no
exception, replicas fed the same stream agree, every well-formed request is answered once,
and nothing is ever published to a topic no MQTT client may publish to.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvwire.batch import Batch, decode_stream, encode_batch
from kvwire.feed import Mudanca
from kvwire.leasing import Expiracao
from kvwire.messages import (
    Estado,
    Heartbeat,
    Invalid,
    MonitorBeat,
    Recuperacao,
    decode_beat,
    decode_estado,
    decode_request,
)
from kvwire.topics import topic_problem
from tests.bus import CLIENT_TOPIC, Bus

#: Examples come from the profile (`tests/conftest.py`): derandomized in CI, more by hand.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = [
    "tipomsg",
    "pedidos",
    "chave",
    "novovalor",
    "topico-resp",
    "topicoresp",
    "topico_resp",
    "idpedido",
    "idserv",
    "idServ",
    "vistoem",
    "incarnacao",
    "posicao",
    "concessao",
    "ttl",
    "renovadaem",
]
REQUEST_KINDS = {"consulta", "insercao", "remocao", "listagem", "falhaserv", "novoserv"}
REQUEST_KINDS |= {"concessao", "renovacao", "revogacao", "expiracao"}
KINDS = ["consulta", "insercao", "falhaserv", "novoserv", "C", "i", "Inserção", "QUERY", "x"]
KINDS += ["concessao", "renovacao", "revogacao", "expiracao", "lote"]
# Topics a client might send, good and bad: the bad ones are those that used to silence a
# replica (paho raised inside its callback) or make Mosquitto drop its connection.
TOPICS = st.sampled_from(
    ["t/1", "t/2", "x/#", "x/+", "", "a\x00b", "$SYS/x", "tab\t", "\ufffe", "x" * 70_000]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | TOPICS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def protocol_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = draw(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8))
    if draw(st.booleans()):
        obj["tipomsg"] = draw(st.sampled_from(KINDS))
    return obj


@FUZZ
@given(st.binary(max_size=512))
def test_no_bytes_make_a_decoder_raise(payload: bytes) -> None:
    decoded_or_invalid(payload)


@FUZZ
@given(protocol_objects())
def test_no_json_object_makes_a_decoder_raise(obj: dict[str, Any]) -> None:
    decoded_or_invalid(json.dumps(obj).encode())


def decoded_or_invalid(payload: bytes) -> None:
    """Each decoder gives back one of its models, or an `Invalid` that says why."""
    request = decode_request(payload)
    assert isinstance(request, Invalid) or request.tipomsg in REQUEST_KINDS
    streamed = decode_stream(payload)
    assert isinstance(streamed, Invalid | Batch) or streamed.tipomsg in REQUEST_KINDS
    if isinstance(streamed, Batch):
        assert streamed.requests and all(
            isinstance(r, Invalid) or r.tipomsg in REQUEST_KINDS for r in streamed.requests
        )
    beat = decode_beat(payload)
    assert isinstance(beat, Heartbeat | MonitorBeat | Recuperacao | Invalid)
    chunk = decode_estado(payload)
    assert isinstance(chunk, Estado | Invalid)
    for decoded in (request, beat, chunk):
        assert not isinstance(decoded, Invalid) or decoded.reason


# --- client traffic: every well-formed request answered once, replicas equal -------------


@st.composite
def client_messages(draw: st.DrawFn, rid: str) -> tuple[bytes, bool]:
    """A payload and whether it is a well-formed request to a usable topic."""
    shape = draw(st.sampled_from(["get", "put", "junk", "object"]))
    topic = draw(TOPICS)
    key = draw(st.sampled_from(["a", "b", "c", "dd", "ção"]))
    if shape == "get":
        message = {"tipomsg": "consulta", "chave": key, "topico-resp": topic, "idpedido": rid}
    elif shape == "put":
        value = draw(st.text(max_size=10))
        message = {
            "tipomsg": "insercao",
            "chave": key,
            "novovalor": value,
            "topico-resp": topic,
            "idpedido": rid,
        }
    elif shape == "junk":
        return draw(st.binary(max_size=64)), False
    else:
        return json.dumps(draw(protocol_objects())).encode(), False
    return json.dumps(message).encode(), topic_problem(topic) is None


@FUZZ
@given(st.data())
def test_client_traffic_keeps_replicas_equal_and_answers_each_request_once(
    data: st.DataObject,
) -> None:
    bus = Bus.fresh(3)
    expected = []
    count = data.draw(st.integers(min_value=1, max_value=40))
    for n in range(count):
        rid = f"fuzz-request-{n}"  # no id the random objects could also carry
        payload, answerable = data.draw(client_messages(rid))
        bus.publish_raw(payload)
        if answerable:
            expected.append(rid)
        bus.run()
    assert len(bus.digests()) == 1
    counts = Counter(answer.idpedido for _, answer in bus.answers)
    for rid in expected:
        assert counts[rid] == 1, f"request {rid} answered {counts[rid]} times"
    assert all(topic_problem(topic) is None for topic, _ in bus.answers)


# --- the stream as a whole: a rule-based machine of requests and faults ------------------

KEYS = ["a", "b", "c", "dd"]
#: Fewer than the keys the rules write (these and the leases'): 7% of runs pass it (4 or 5:
#: next to none).
QUOTA_KEYS = 3
REPLICAS = st.integers(min_value=0, max_value=2)
#: Leases and the keys put under them (apart from KEYS: these may end by themselves).
LEASES = st.sampled_from(["L1", "L2"])
LEASE_KEYS = st.sampled_from(["la", "lb", "lc"])


class ClusterMachine(RuleBasedStateMachine):
    """Three cores on the in-memory bus, driven by rules for requests, kills, stalls, false
    suspicions, joins and time; invariants are checked after every step, and hypothesis
    shrinks a failure to the named steps that cause it.

    What is checked: replicas at the same position hold the same digest; nothing goes to an
    unusable topic; a request made while every replica is live is answered exactly once, at
    once; a write's answers all say the same; and at the end, once every replica is back,
    each key holds its last acknowledged value or a later write's, unless a replica resumed
    alone (protocol §11) while one that had applied more was stalled and not heard: in
    memory that replica's history is given up by design, and positions are no longer
    comparable across the two (a known limitation, see `LossyResume`)."""

    def __init__(self) -> None:
        super().__init__()
        # A quota the rules pass now and then (issue 29): its refusals must agree as well.
        self.bus = Bus.fresh(3, max_keys=QUOTA_KEYS)
        self.lossy = LossyResume(self.bus)
        #: Every put in stream order: (request id, key, value).
        self.puts: list[tuple[int, str, str]] = []
        self.acked: set[int] = set()
        #: Every grant, keep-alive, revoke and put under a lease: its answers must agree.
        self.lease_requests: set[int] = set()
        #: Every watch registered (§19), by its request id.
        self.watches: list[int] = []

    def healthy(self) -> bool:
        members = self.bus.members.values()
        return all(m.reading and not m.exited and m.replica.state == "live" for m in members)

    def _answered_once_if_healthy(self, rid: int, healthy: bool) -> None:
        if healthy:
            assert len(self.bus.answers_to(rid)) == 1, (
                f"request {rid} answered {self.bus.answers_to(rid)}"
            )

    @rule(key=st.sampled_from(KEYS))
    def put(self, key: str) -> None:
        healthy = self.healthy()
        rid = self.bus._fresh_id()
        value = f"v{rid}"
        self.puts.append((rid, key, value))
        self.bus.put(key, value, rid=rid)
        self._answered_once_if_healthy(rid, healthy)

    @rule(key=st.sampled_from(KEYS))
    def get(self, key: str) -> None:
        healthy = self.healthy()
        self._answered_once_if_healthy(self.bus.get(key), healthy)

    @rule(lease=LEASES, ttl=st.integers(min_value=1, max_value=4))
    def grant(self, lease: str, ttl: int) -> None:
        healthy = self.healthy()
        rid = self.bus.grant(lease, ttl)
        self.lease_requests.add(rid)
        self._answered_once_if_healthy(rid, healthy)

    @rule(lease=LEASES)
    def keep_alive(self, lease: str) -> None:
        healthy = self.healthy()
        rid = self.bus.keep_alive(lease)
        self.lease_requests.add(rid)
        self._answered_once_if_healthy(rid, healthy)

    @rule(lease=LEASES)
    def revoke(self, lease: str) -> None:
        self.lease_requests.add(self.bus.revoke(lease))

    @rule(key=LEASE_KEYS, lease=LEASES)
    def put_under_lease(self, key: str, lease: str) -> None:
        healthy = self.healthy()
        rid = self.bus.put(key, "v", lease=lease)
        self.lease_requests.add(rid)
        self._answered_once_if_healthy(rid, healthy)

    @rule(
        lease=LEASES,
        prefix=st.sampled_from(["", "l", "k"]),
        since=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
    )
    def watch(self, lease: str, prefix: str, since: int | None) -> None:
        self.watches.append(self.bus.watch(lease, prefix, since))

    @rule(expect=st.sampled_from(["0", "1"]), value=st.sampled_from(["0", "1"]))
    def transaction(self, expect: str, value: str) -> None:
        """A transaction (§20) over keys of its own: its answers must agree like a write's."""
        puts: list[dict[str, object]] = [
            {"tipomsg": "insercao", "chave": k, "novovalor": value} for k in ("t1", "t2")
        ]
        rid = self.bus.txn(
            [{"chave": "t1", "valor": expect}], puts, [{"tipomsg": "consulta", "chave": "t1"}]
        )
        self.lease_requests.add(rid)

    @rule(
        items=st.lists(
            st.tuples(
                st.sampled_from(["put", "get", "cas", "bad", "control", "lease"]),
                st.sampled_from(KEYS),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def batch(self, items: list[tuple[str, str]]) -> None:
        """A `lote` (§21) of puts, reads, compare-and-sets, a grant, and bad or control
        messages (each refused alone): applied as its requests one after another, so the
        invariants and the final check hold as for single requests; when every replica is
        live, each request with a usable topic is answered exactly once."""
        healthy = self.healthy()
        payloads, answered = [], []
        for kind, key in items:
            rid = self.bus.next_id()
            body: dict[str, Any] = {"topico-resp": CLIENT_TOPIC, "idpedido": rid}
            if kind in ("put", "cas"):
                value = f"v{rid}"
                self.puts.append((rid, key, value))
                body |= {"tipomsg": "insercao", "chave": key, "novovalor": value}
                if kind == "cas":
                    body["serevisao"] = 0
            elif kind == "get":
                body |= {"tipomsg": "consulta", "chave": key}
            elif kind == "lease":
                self.lease_requests.add(rid)
                body |= {"tipomsg": "concessao", "concessao": "la", "ttl": 2}
            elif kind == "bad":
                body |= {"tipomsg": "insercao", "chave": key, "novovalor": 5}
            else:
                body |= {"tipomsg": "falhaserv", "idserv": 0, "vistoem": self.bus.now}
            payloads.append(json.dumps(body).encode())
            answered.append(rid)
        self.bus.publish_raw(encode_batch(payloads))
        self.bus.run()
        for rid in answered:
            self._answered_once_if_healthy(rid, healthy)

    @rule(data=st.data())
    def cancel_watch(self, data: st.DataObject) -> None:
        if self.watches:
            self.bus.cancel_watch(data.draw(st.sampled_from(self.watches)))

    @rule(lease=LEASES, current=st.booleans(), other=st.integers(min_value=-1, max_value=500))
    def expiry(self, lease: str, current: bool, other: int) -> None:
        """An `expiracao` at any moment: naming the lease's last renewal as some replica holds
        it (it ends the lease), or another position (ignored)."""
        held = [r.leases.agreed().get(lease) for r in map(self.bus.replica, self.bus.members)]
        renewed = next((h[1] for h in held if h is not None), other) if current else other
        self.bus.publish(Expiracao(concessao=lease, renovadaem=renewed, idserv=0))
        self.bus.run()

    @rule(payload=st.one_of(st.binary(max_size=64), protocol_objects().map(json.dumps)))
    def junk(self, payload: bytes | str) -> None:
        self.bus.publish_raw(payload if isinstance(payload, bytes) else payload.encode())
        self.bus.run()

    @rule(replica=REPLICAS)
    def stall(self, replica: int) -> None:
        """SIGSTOP long enough for the monitor to declare it failed."""
        if not self.bus.members[replica].reading:
            return
        last_beat = self.bus.now
        self.bus.pause(replica)
        self.bus.advance(1.1)
        self.bus.fail(replica, vistoem=last_beat)

    @rule(replica=REPLICAS)
    def resume(self, replica: int) -> None:
        """SIGCONT: it reads on from where it stopped."""
        if not self.bus.members[replica].reading:
            self.bus.resume(replica)

    @rule(replica=REPLICAS)
    def false_suspicion(self, replica: int) -> None:
        """A monitor declares a running replica failed: it is fenced and joins again."""
        self.bus.fail(replica)

    @rule(replica=REPLICAS)
    def kill_and_restart(self, replica: int) -> None:
        """kill -9 and a new process, while the others are live (in memory, a replica's data
        lives only as long as some process holds it)."""
        if not self.healthy():
            return
        self.bus.stop(replica)
        self.bus.fail(replica)
        self.bus.start_joining(replica)

    @rule(replica=st.integers(min_value=-1, max_value=3), named=st.booleans())
    def stray_failure_notice(self, replica: int, named: bool) -> None:
        """A falhaserv for another incarnation, or none, or no such replica."""
        body: dict[str, Any] = {"tipomsg": "falhaserv", "idserv": replica, "vistoem": self.bus.now}
        if named:
            body["incarnacao"] = "someone-else"
        self.bus.publish_raw(json.dumps(body).encode())
        self.bus.run()

    @rule(seconds=st.floats(min_value=0.1, max_value=5.0))
    def time_passes(self, seconds: float) -> None:
        self.bus.advance(seconds)

    @invariant()
    def replicas_at_one_position_agree(self) -> None:
        by_position: dict[int, set[str]] = {}
        for member in self.bus.members.values():
            replica = member.replica
            if replica.state == "live" and member.reading:
                leases = replica.leases.agreed()
                # Every key attached to a lease has a value: none outlives its lease's end.
                attached = {key for _, _, keys in leases.values() for key in keys}
                assert all(replica.store.get(key) is not None for key in attached), leases
                canonical = sorted((n, t, r, sorted(keys)) for n, (t, r, keys) in leases.items())
                watches = sorted(replica.feed.agreed().items(), key=str)
                held = f"{replica.store.digest()} {canonical} {watches}"
                by_position.setdefault(replica.position, set()).add(held)
        assert all(len(digests) == 1 for digests in by_position.values()), by_position
        # The quota is never passed: a write past it is refused at its position everywhere.
        assert all(len(m.replica.store) <= QUOTA_KEYS for m in self.bus.members.values())
        if any(answer.status == "cota" for _, answer in self.bus.answers[-5:]):
            note_event("a write refused by the quota")

    @invariant()
    def answers_go_to_usable_topics_and_agree(self) -> None:
        assert all(topic_problem(topic) is None for topic, _ in self.bus.answers)
        writes = {rid for rid, _, _ in self.puts} | self.lease_requests
        said: dict[object, set[tuple[object, ...]]] = {}
        values: dict[object, set[str]] = {}
        for _, answer in self.bus.answers:
            if answer.idpedido in writes:
                outcome = (answer.status, answer.revisao, answer.ttl, answer.sucesso)
                said.setdefault(answer.idpedido, set()).add(outcome)
                # A substitute's replay of a plain put gives its value only if the key still
                # has the put's revision (`Replies.replay`): null, or the same value.
                if answer.valor is not None:
                    values.setdefault(answer.idpedido, set()).add(answer.valor)
                if answer.status == "ok":
                    self.acked.add(answer.idpedido)
        assert all(len(outcomes) == 1 for outcomes in said.values()), said
        assert all(len(found) == 1 for found in values.values()), values

    @invariant()
    def events_name_the_changes_before_them_alike_whoever_sends_them(self) -> None:
        """Every replica that sends a watch's events numbers them alike (§19): a change is
        the same from any sender, and an event holds every change of its watch from its
        `anterior` through its `revisao`, so a successor goes on where the owner stopped."""
        changes: dict[object, dict[tuple[int, str], set[str]]] = {}
        spans = []
        for _, _, event in self.bus.events:
            if event.tipo in ("progresso", "fim"):
                continue
            items = event.mudancas or [
                Mudanca(chave=event.chave or "", valor=event.valor, tipo=event.tipo)  # type: ignore[arg-type]
            ]
            revisions = [m.revisao or event.revisao for m in items]
            assert event.anterior < revisions[0] and revisions[-1] == event.revisao, event
            assert revisions == sorted(revisions), event
            held = changes.setdefault(event.idpedido, {})
            for revision, m in zip(revisions, items, strict=True):
                held.setdefault((revision, m.chave), set()).add(f"{m.tipo} {m.valor}")
            spans.append((event.idpedido, event.anterior, event.revisao, set(revisions)))
        assert all(len(forms) == 1 for held in changes.values() for forms in held.values())
        for watch, after, upto, sent in spans:
            known = {r for r, _ in changes[watch] if after < r <= upto}
            assert known == sent, (watch, after, upto, known, sent)

    def teardown(self) -> None:
        self.lossy.close()
        bus = self.bus
        for member in bus.members.values():
            member.reading = True
        bus.run()
        for _ in range(6):
            bus.advance(bus.join_timeout)
        running = [i for i, m in bus.members.items() if not m.exited]
        assert all(bus.replica(i).state == "live" for i in running)
        assert len(bus.digests(*running)) == 1
        # No keep-alive for 18 s: every lease has ended on every replica, its keys with it.
        assert bus.leases(*running) == [{}] * len(running)
        assert bus.watches(*running) == [{}] * len(running)  # each ended with its lease
        assert all(bus.answer(bus.get(key)).status == "naoencontrada" for key in ("la", "lb", "lc"))
        if self.lossy.happened:
            return
        for key in KEYS:
            acked = [n for n, (rid, k, _) in enumerate(self.puts) if k == key and rid in self.acked]
            allowed = {v for rid, k, v in self.puts[acked[-1] :] if k == key} if acked else None
            answer = bus.answer(bus.get(key))
            if allowed is None:
                assert answer.status in ("ok", "naoencontrada")
            else:
                assert answer.valor in allowed, f"{key}: read {answer.valor!r}, acked {allowed}"


class LossyResume(logging.Handler):
    """Notes when a replica resumes alone from its own store while another, stalled and not
    heard, had applied more: in memory, the stalled one's later writes are given up (the
    README's limits), and afterwards a recovery compares positions of two histories that no
    longer share a stream, so either may win (an issue of its own: candidates need an epoch)."""

    def __init__(self, bus: Bus) -> None:
        super().__init__()
        self.bus = bus
        self.happened = False
        logging.getLogger("kvserver").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "resumes alone" not in record.getMessage():
            return
        position = record.args[1] if isinstance(record.args, tuple) else 0
        for member in self.bus.members.values():
            if not member.reading and member.replica.position > int(position):  # type: ignore[call-overload]
                self.happened = True

    def close(self) -> None:
        logging.getLogger("kvserver").removeHandler(self)
        super().close()


ClusterMachine.TestCase.settings = settings(
    max_examples=FUZZ.max_examples, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_requests_and_faults_in_any_order = ClusterMachine.TestCase


def test_a_decoded_payload_is_a_model_or_says_why() -> None:
    decoded = decode_request(b'{"tipomsg": "consulta", "chave": 1}')
    assert isinstance(decoded, Invalid) and "chave" in decoded.reason
