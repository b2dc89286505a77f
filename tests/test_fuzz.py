"""Property-based fuzzing of the decoders and the replica's state machine (issue 11).

Arbitrary bytes, arbitrary JSON built from the protocol's own field names, and arbitrary
sequences of requests, stalls and `falhaserv`, fed through the in-memory bus. Invariants: no
exception, replicas fed the same stream agree, every well-formed request is answered once,
and nothing is ever published to a topic no MQTT client may publish to.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvwire.messages import Invalid, decode_beat, decode_estado, decode_request
from kvwire.topics import topic_problem
from tests.bus import Bus

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = [
    "tipomsg",
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
]
KINDS = ["consulta", "insercao", "falhaserv", "novoserv", "C", "i", "Inserção", "QUERY", "x"]
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
    decode_request(payload)
    decode_beat(payload)
    decode_estado(payload)


@FUZZ
@given(protocol_objects())
def test_no_json_object_makes_a_decoder_raise(obj: dict[str, Any]) -> None:
    payload = json.dumps(obj).encode()
    decode_request(payload)
    decode_beat(payload)
    decode_estado(payload)


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


# --- the stream as a whole: stalls, failures, forged control messages --------------------


@st.composite
def events(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["put", "get", "raw", "stall", "resume", "falhaserv", "time"]))
    if kind in ("put", "get"):
        return kind, draw(st.sampled_from(["a", "b", "c", "dd"]))
    if kind == "raw":
        return kind, json.dumps(draw(protocol_objects())).encode()
    if kind in ("stall", "resume"):
        return kind, draw(st.integers(min_value=0, max_value=2))
    if kind == "falhaserv":  # a stray or stale declaration: some other incarnation, or none
        return kind, (draw(st.integers(min_value=-1, max_value=3)), draw(st.booleans()))
    return kind, draw(st.floats(min_value=0.1, max_value=5.0))


@FUZZ
@given(st.lists(events(), max_size=40))
def test_any_sequence_of_requests_stalls_and_failures_ends_with_equal_replicas(
    sequence: list[tuple[str, Any]],
) -> None:
    bus = Bus.fresh(3)
    for kind, arg in sequence:
        if kind == "put":
            bus.put(arg, "v")
        elif kind == "get":
            bus.get(arg)
        elif kind == "raw":
            bus.publish_raw(arg)
            bus.run()
        elif kind == "stall":  # a pause long enough for the monitor to declare it
            bus.pause(arg)
            bus.fail(arg)
        elif kind == "resume":
            bus.resume(arg)
        elif kind == "falhaserv":
            replica_id, with_incarnation = arg
            incarnation = "someone-else" if with_incarnation else None
            body = {"tipomsg": "falhaserv", "idserv": replica_id, "vistoem": bus.now}
            if incarnation:
                body["incarnacao"] = incarnation
            bus.publish_raw(json.dumps(body).encode())
            bus.run()
        else:
            bus.advance(arg)
    for replica_id in range(3):
        bus.members[replica_id].reading = True
    for _ in range(6):
        bus.advance(bus.join_timeout)
    running = [i for i, m in bus.members.items() if not m.exited]
    assert all(bus.replica(i).state == "live" for i in running)
    assert len(bus.digests(*running)) == 1
    assert all(topic_problem(topic) is None for topic, _ in bus.answers)
    for key in ("a", "b", "c"):  # and the cluster still answers every key
        assert bus.answer(bus.get(key)).status in ("ok", "naoencontrada")


def test_a_decoded_payload_is_a_model_or_says_why() -> None:
    decoded = decode_request(b'{"tipomsg": "consulta", "chave": 1}')
    assert isinstance(decoded, Invalid) and "chave" in decoded.reason
