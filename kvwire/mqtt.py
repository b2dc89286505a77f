"""The few paho-mqtt settings every program of mqtt-kv must get right (PROTOCOL.md §3)."""

from __future__ import annotations

import os
import socket
import threading
from types import TracebackType
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kvwire.errors import BrokerError, ConfigError

DEFAULT_BROKER = "127.0.0.1:1883"


def broker_address(value: str | None) -> tuple[str, int]:
    """`HOST:PORT` from the option, else from KV_BROKER, else the default."""
    text = value or os.environ.get("KV_BROKER") or DEFAULT_BROKER
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "1883"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"broker address {text!r} is not HOST:PORT") from None
    if not host or not 0 < number < 65536:
        raise ConfigError(f"broker address {text!r} is not HOST:PORT")
    return host.strip("[]"), number


def _no_nagle(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on; a request/response round trip then costs ~40 ms instead of ~0.3 ms.
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_client(client_id: str, *, v5: bool = True) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.on_socket_open = _no_nagle
    return client


def connect_blocking(
    client: mqtt.Client,
    host: str,
    port: int,
    *,
    timeout: float,
    keepalive: int = 10,
    **connect_args: Any,
) -> None:
    """Connect and start the network thread; raise BrokerError unless CONNACK comes in time."""
    ready = threading.Event()
    refused: list[str] = []
    previous: Any = client.on_connect

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        # The caller's handler (which subscribes) runs first, so that nothing the caller
        # publishes after we return can overtake its SUBSCRIBE.
        if previous is not None:
            previous(c, u, flags, reason, props)
        ready.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=keepalive, **connect_args)
    except OSError as exc:
        raise BrokerError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None
    client.loop_start()
    if not ready.wait(timeout):
        close_client(client)
        raise BrokerError(f"the MQTT broker at {host}:{port} did not answer within {timeout:g} s")
    client.on_connect = previous
    if refused:
        close_client(client)
        raise BrokerError(f"the MQTT broker at {host}:{port} refused us: {refused[0]}")


def close_client(client: mqtt.Client) -> None:
    """Disconnect, stop the network thread, and drop the callbacks.

    The callbacks are bound methods of the owner, which holds the client: a reference cycle.
    Left to the cyclic collector, paho's internal socket pair may be finalized before the
    client that would have closed it (a ResourceWarning); without the cycle, reference
    counting frees the client, and its sockets with it, when the owner goes.
    """
    client.disconnect()
    client.loop_stop()
    client.on_connect = None
    client.on_message = None
    client.on_disconnect = None
    client.on_socket_open = None


_Self = TypeVar("_Self", bound="Closing")


class Closing:
    """For the objects that own a connection: `with` closes them."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
