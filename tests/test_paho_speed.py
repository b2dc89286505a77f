"""The shared-table `Properties` (kvwire.paho_speed) behaves as paho's own: what is packed
and unpacked, what `clear` drops, and the checks paho makes on names and packet types."""

from __future__ import annotations

import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kvwire.paho_speed import speed_up


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
