"""kvwire.paho_speed behaves as paho expects: the shared-table `Properties` packs and unpacks
as paho's own, and `BufferedSocket` hands out every byte, in order, once."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvwire.mqtt import exchange, new_client
from kvwire.paho_speed import BufferedSocket, speed_up


def test_patched_properties_round_trip_and_stay_apart() -> None:
    assert speed_up()
    sent = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    sent.ResponseTopic = "inf1406-resp/x"
    sent.CorrelationData = b"\x00\x01"
    sent.UserProperty = ("assinatura", "ab" * 32)
    sent.UserProperty = ("outra", "1")
    other = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    assert not hasattr(other, "ResponseTopic")  # instances share tables, not values

    got = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    got.unpack(sent.pack())  # type: ignore[no-untyped-call]
    assert getattr(got, "ResponseTopic") == "inf1406-resp/x"  # noqa: B009 (paho's dynamic names)
    assert getattr(got, "CorrelationData") == b"\x00\x01"  # noqa: B009
    assert getattr(got, "UserProperty") == [("assinatura", "ab" * 32), ("outra", "1")]  # noqa: B009

    got.clear()  # type: ignore[no-untyped-call]
    assert got.isEmpty()  # type: ignore[no-untyped-call]
    assert got.packetType == PacketTypes.PUBLISH
    with pytest.raises(MQTTException):
        got.SessionExpiryInterval = 10  # not a PUBLISH property: paho's own check still runs


def test_no_properties_unpack_as_none_and_drop_earlier_ones() -> None:
    assert speed_up()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    sent = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    sent.ResponseTopic = "inf1406-resp/x"
    props.unpack(sent.pack())  # type: ignore[no-untyped-call]
    # A zero length, then the payload: only the length byte is the properties'.
    got, length = props.unpack(b"\x00{}")  # type: ignore[no-untyped-call]
    assert got is props and length == 1
    assert props.isEmpty()
    assert not hasattr(props, "ResponseTopic")


def test_one_turn_reads_every_packet_already_read_ahead() -> None:
    """paho reads one packet a call when nothing is in flight; a replica then wrote and
    waited in select() between every two requests of a batch that had arrived together."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    client = new_client("test", v5=False)
    got: list[bytes] = []
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    client._sock = BufferedSocket(ours)  # what read_ahead does once connected
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED  # type: ignore[attr-defined]
    try:
        topic = b"\x00\x01t"
        peer.sendall(b"".join(b"\x30\x05" + topic + b"m%d" % i for i in range(10)))
        assert exchange(client, 1.0) == mqtt.MQTT_ERR_SUCCESS
        assert got == [b"m%d" % i for i in range(10)]
    finally:
        ours.close()
        peer.close()


def test_topic_callbacks_still_match_once_one_is_added() -> None:
    assert speed_up()
    client = new_client("test", v5=False)
    matcher = client._on_message_filtered
    # Nothing registered: nothing to walk.
    assert list(matcher.iter_match("a/b")) == []  # type: ignore[no-untyped-call]
    client.message_callback_add("a/+", print)
    assert list(matcher.iter_match("a/b")) == [print]  # type: ignore[no-untyped-call]
    assert list(matcher.iter_match("c")) == []  # type: ignore[no-untyped-call]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_reads_ahead_and_hands_out_what_was_asked(pair: tuple[socket.socket, ...]) -> None:
    raw, peer = pair
    sock = BufferedSocket(raw)
    with pytest.raises(BlockingIOError):  # nothing yet: what paho's read expects
        sock.recv(1)
    peer.sendall(b"\x30\x05hello\x40\x02\x00\x01")  # a PUBLISH-like packet and a PUBACK
    assert sock.recv(1) == b"\x30"
    assert sock.pending() == 10  # the rest was read in the same call
    assert sock.recv(1) == b"\x05"
    assert sock.recv(5) == b"hello"
    assert sock.recv(100) == b"\x40\x02\x00\x01"  # never more than what is held
    assert sock.pending() == 0
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    peer.close()
    assert sock.recv(1) == b""  # the end of the stream, as paho expects it


def test_a_corked_batch_leaves_in_one_send_in_order(pair: tuple[socket.socket, ...]) -> None:
    raw, peer = pair
    sends: list[bytes] = []

    class Counting:
        def send(self, data: bytes) -> int:
            sends.append(bytes(data))
            return raw.send(data)

    sock = BufferedSocket(Counting())
    assert sock.send(b"alone") == 5  # not corked: straight through
    sock.cork()
    assert sock.send(b"one,") == 4  # paho is told it is written...
    assert sock.send(bytearray(b"two,")) == 4
    assert sock.send(b"three") == 5
    assert sends == [b"alone"]  # ...but nothing left yet
    sock.flush()
    assert sends == [b"alone", b"one,two,three"]
    assert peer.recv(100) == b"aloneone,two,three"
    assert not sock.unsent()


def test_what_the_kernel_does_not_take_is_kept_and_sent_first(
    pair: tuple[socket.socket, ...],
) -> None:
    raw, peer = pair
    sock = BufferedSocket(raw)
    big = bytes(range(256)) * 40_000  # more than the socket buffers take at once
    sock.cork()
    sock.send(big)
    sock.flush()
    assert sock.unsent()  # the rest waits for select() to say the socket is writable
    assert sock.send(b"after") == 5  # queued behind it, never overtaking it
    received = bytearray()
    while sock.unsent() or len(received) < len(big) + 5:
        with contextlib.suppress(BlockingIOError):
            received += peer.recv(1 << 20, socket.MSG_DONTWAIT)
        sock.flush()
    assert bytes(received) == big + b"after"


def test_closing_writes_what_waits(pair: tuple[socket.socket, ...]) -> None:
    raw, peer = pair
    sock = BufferedSocket(raw)
    sock.cork()
    sock.send(b"\xe0\x00")  # paho closes right after writing its DISCONNECT
    sock.close()
    assert peer.recv(10) == b"\xe0\x00"
