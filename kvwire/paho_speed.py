"""paho-mqtt's MQTT 5 `Properties`, made cheap to create and to clear.

paho builds every `Properties` from scratch: two dictionaries of 27 entries and a list, for
every PUBLISH and PUBACK read over MQTT 5, and `unpack` then calls `clear`, 27 `hasattr`s.
A profile of a replica at 64 requests in flight puts a fifth of its CPU there (issue 16).
The tables never change after `__init__`, so every instance may share one set; `clear`
need only drop what was set. Behaviour is the same: `speed_up` checks that this paho builds
its instances as expected and does nothing otherwise.
"""

from __future__ import annotations

from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_TABLES = ("types", "names", "properties")
_OWN = frozenset(("packetType", *_TABLES))


def speed_up() -> bool:
    """Patch `Properties` once; False (and nothing changed) if this paho is not the one
    this was written against."""
    if getattr(Properties, "_kv_shared", False):
        return True
    template = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if set(vars(template)) != _OWN:
        return False
    shared = {name: vars(template)[name] for name in _TABLES}

    def __init__(self: Any, packetType: int) -> None:
        fields = vars(self)
        fields["packetType"] = packetType
        fields.update(shared)

    def clear(self: Any) -> None:
        fields = vars(self)
        for name in [name for name in fields if name not in _OWN]:
            del fields[name]

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._kv_shared = True  # type: ignore[attr-defined]
    return True
