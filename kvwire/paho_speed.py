"""paho-mqtt made cheaper where a profile says it costs: MQTT 5 `Properties`, topic
callbacks, and reading.

paho builds every `Properties` from scratch: two dictionaries of 27 entries and a list, for
every PUBLISH and PUBACK read over MQTT 5, and `unpack` then calls `clear`, 27 `hasattr`s.
A profile of a replica at 64 requests in flight puts a fifth of its CPU there (issue 16).
The tables never change after `__init__`, so every instance may share one set; `clear`
need only drop what was set, and a packet without properties (one zero byte, most of them)
is not parsed at all: paho 2.2 decodes an MQTT 5 PUBLISH in 12.9 us, this in 2.6. Behaviour
is the same: `speed_up` checks that this paho builds its instances as expected and does
nothing otherwise.

For every message it reads, paho looks for callbacks of the message's topic
(`message_callback_add`, which we never call) with a generator that refers to itself: a
reference cycle per message, which only the garbage collector frees. A replica ran a
young-generation collection every ~115 requests, mostly for them; without them, one every
~490. With nothing registered there is nothing to look for.

paho reads a packet with at least three `recv` calls (its first byte, its length byte by
byte, then the rest) and a fourth that finds nothing: four system calls per packet, about
a third of what paho costs each process per message (issue 16). `BufferedSocket` takes what
the kernel has in one call and hands it out from memory; `pending()` says what it holds, which
paho's own loop and `kvwire.mqtt.exchange` already ask a TLS socket before waiting in select.
paho also writes every packet with a `send` of its own; `exchange` corks the socket while
paho writes a batch, and the batch leaves in one.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from typing import Any

from paho.mqtt.matcher import MQTTMatcher
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

    unpack_any = Properties.unpack

    def unpack(self: Any, buffer: bytes | bytearray) -> tuple[Any, int]:
        # No properties at all, as in most PUBLISH and PUBACK packets: a zero length byte.
        if buffer[:1] != b"\x00":
            return unpack_any(self, buffer)  # type: ignore[no-any-return, no-untyped-call]
        if len(vars(self)) > len(_OWN):
            clear(self)
        return self, 1

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties.unpack = unpack  # type: ignore[method-assign]

    match_any = MQTTMatcher.iter_match

    def iter_match(self: Any, topic: str) -> Iterator[Any]:
        # Nothing registered (we never call message_callback_add): no match to look for.
        root = self._root
        if not root._children and root._content is None:
            return iter(())
        return match_any(self, topic)  # type: ignore[no-any-return, no-untyped-call]

    MQTTMatcher.iter_match = iter_match  # type: ignore[method-assign]
    Properties._kv_shared = True  # type: ignore[attr-defined]
    return True


class BufferedSocket:
    """A socket that reads ahead and, while corked, writes behind: everything else goes to
    the socket itself."""

    __slots__ = ("_at", "_buffer", "_corked", "_out", "_sock")

    #: Bytes asked of the kernel at once: a batch of small packets in one call.
    CHUNK = 65536

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0
        self._corked = False
        #: Written by paho, not yet by us: while corked, and what the kernel did not take.
        self._out: list[bytes] = []

    def recv(self, size: int) -> bytes:
        at, held = self._at, len(self._buffer)
        if at < held:
            self._at = min(at + size, held)
            return self._buffer[at : at + size]
        # Raises BlockingIOError (or TLS's want-read) when there is nothing, as paho expects.
        data: bytes = self._sock.recv(max(size, self.CHUNK))
        if len(data) <= size:
            return data
        self._buffer, self._at = data, size
        return data[:size]

    def pending(self) -> int:
        """Bytes read but not yet handed out, here and (TLS) in the socket below."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buffer) - self._at + (inner() if inner is not None else 0)

    def send(self, data: bytes | bytearray) -> int:
        if not self._corked and not self._out:
            sent: int = self._sock.send(data)
            return sent
        self._out.append(bytes(data))  # behind what is waiting: the order is the stream's
        if not self._corked:
            self.flush()
        return len(data)

    def cork(self) -> None:
        """Keep what paho writes until `flush`: one system call for a batch of packets."""
        self._corked = True

    def flush(self) -> None:
        """Uncork and write what waits, as much as the kernel takes now; the rest stays
        for the next flush, when select says the socket is writable (`unsent`)."""
        self._corked = False
        if not self._out:
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent = 0
        except OSError:
            sent = len(data)  # the connection is gone: paho learns it from its next read
        self._out = [data[sent:]] if sent < len(data) else []

    def unsent(self) -> bool:
        return bool(self._out)

    def close(self) -> None:
        self.flush()  # paho closes right after writing a DISCONNECT
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def read_ahead(client: Any, sock: Any) -> None:
    """From `on_socket_open`: read `client`'s new socket through a `BufferedSocket`, if this
    paho keeps its socket where this was written against (else nothing changes)."""
    if isinstance(sock, socket.socket) and getattr(client, "_sock", None) is sock:
        client._sock = BufferedSocket(sock)
