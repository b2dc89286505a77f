"""A plain paho client for the tests, not ours: paho's own network thread, its own
callbacks, the way an outside program (a device, a dashboard, an attacker) talks to the
broker. The programs of mqtt-kv never use it: they turn `kvwire.mqtt.Link`."""

from __future__ import annotations

import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt

from kvwire.errors import BrokerError


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
    except ssl.SSLError as exc:
        raise BrokerError(f"TLS with the MQTT broker at {host}:{port} failed: {exc}") from None
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
