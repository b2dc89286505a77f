"""The few paho-mqtt settings every program of mqtt-kv must get right (protocol §3)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import socket
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kvwire.access import Access, ClusterKey
from kvwire.errors import BrokerError, ConfigError
from kvwire.messages import ReplyRoute
from kvwire.paho_speed import BufferedSocket, read_ahead, speed_up

DEFAULT_BROKER = "127.0.0.1:1883"

log = logging.getLogger("kvwire")
speed_up()
_P = ParamSpec("_P")


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


def _socket_opened(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on; a request/response round trip then costs ~40 ms instead of ~0.3 ms.
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_ahead(client, sock)  # one recv per batch, not four per packet (issue 16)


def new_client(client_id: str, *, v5: bool = True, access: Access | None = None) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    client.on_socket_open = _socket_opened
    if access is not None:
        access.apply(client)
    return client


def _tls_failed(where: str, exc: ssl.SSLError) -> BrokerError:
    reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
    return BrokerError(
        f"TLS with the MQTT broker at {where} failed: {reason} (check --tls-ca and the "
        "broker's certificate)"
    )


def _refused(where: str, reason: str) -> BrokerError:
    hint = ""
    if "user name or password" in reason or "authori" in reason.lower():
        hint = " (check --username and --password-file, or KV_USERNAME and KV_PASSWORD_FILE)"
    return BrokerError(f"the MQTT broker at {where} refused us: {reason}{hint}")


def never_raises(handler: Callable[_P, None]) -> Callable[_P, None]:
    """For the handlers of clients whose reading thread must outlive any one message
    (`KVClient`'s transport, the status watcher, the web view): an exception there would
    end the thread and leave the client connected but deaf, so it is logged with its
    traceback and the next message is handled."""

    @functools.wraps(handler)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            handler(*args, **kwargs)
        except Exception:
            log.exception("unexpected error in %s; going on", handler.__qualname__)

    return guarded


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


def reply_route(properties: Properties | None) -> ReplyRoute | None:
    """An MQTT 5 request's Response Topic and Correlation Data (protocol §15), if it has one."""
    topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    if not topic:
        return None
    correlation = getattr(properties, "CorrelationData", None)
    return ReplyRoute(str(topic), bytes(correlation) if correlation else None)


def correlated(correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = correlation
    return props


def _written_by_pump(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    pass


def pump_only(client: mqtt.Client) -> None:
    """Let `exchange` alone write: registered, these callbacks stop paho from writing at the
    moment a packet is queued (a send() for every PUBACK)."""
    client.on_socket_register_write = _written_by_pump
    client.on_socket_unregister_write = _written_by_pump


#: `hold` for a client only its owner's thread touches (the replica, the monitor).
_UNLOCKED = contextlib.nullcontext()

#: paho reads in one turn of `exchange`, at most.
_MAX_READS = 1000


def exchange(
    client: mqtt.Client,
    timeout: float,
    wake: int | None = None,
    hold: contextlib.AbstractContextManager[Any] = _UNLOCKED,
    after_read: Callable[[], None] | None = None,
) -> MQTTErrorCode:
    """One turn of a client's loop on its owner's thread: wait up to `timeout` s, read what
    came, write what that queued, ping when due. Not paho's `loop()`, which makes a socket
    pair and writes a byte to it for every packet queued, two system calls per packet that
    wake nobody when one thread does everything. The ceiling and the load generator of the
    benchmark turn the same loop, so that it is not what the benchmark measures. `wake`: a
    file descriptor that ends the wait when readable (drained here), for another thread with
    something to publish. `hold`: a lock taken for the reading and writing, not the wait,
    when other threads publish on the same client. `after_read`: called once what came was
    handled, before the turn writes: what it publishes leaves with the turn's PUBACKs."""
    sock = client.socket()
    if sock is None:
        return mqtt.MQTT_ERR_NO_CONN
    pending = getattr(sock, "pending", None)  # read ahead (`BufferedSocket`), or TLS's
    if pending is not None and pending() > 0:
        timeout = 0.0
    waiting: list[Any] = [sock] if wake is None else [sock, wake]
    unsent = getattr(sock, "unsent", None)
    writing = client.want_write() or (unsent is not None and unsent())
    try:
        readable, _, _ = select.select(waiting, [sock] if writing else [], [], timeout)
    except (OSError, ValueError):
        return mqtt.MQTT_ERR_CONN_LOST
    if wake is not None and wake in readable:
        os.read(wake, 4096)
    with hold:
        rc = mqtt.MQTT_ERR_SUCCESS
        if sock in readable or (pending is not None and pending() > 0):
            rc = client.loop_read()
            # paho reads as many packets per call as it has messages in flight (a replica:
            # 3 or 4 at 64 requests in flight), then this turn writes, and the next one
            # selects: what the read-ahead holds is read now, so that one turn answers a
            # batch, and a turn's costs are shared by ~11 messages (issue 16).
            # Bounded: in a flood, what is due (our PUBACKs, a heartbeat) is written first.
            for _ in range(_MAX_READS):
                if rc != mqtt.MQTT_ERR_SUCCESS or pending is None or not pending():
                    break
                rc = client.loop_read()
            if after_read is not None:
                after_read()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = write_batch(client)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc


def write_batch(client: mqtt.Client) -> MQTTErrorCode:
    """Write what paho has queued, in one system call when the socket is a `BufferedSocket`
    (paho sends each packet alone: a PUBACK and an answer per request)."""
    sock = client.socket()
    if not isinstance(sock, BufferedSocket):
        return client.loop_write() if client.want_write() else mqtt.MQTT_ERR_SUCCESS
    if client.want_write():
        sock.cork()
        try:
            return client.loop_write()
        finally:
            sock.flush()
    if sock.unsent():
        sock.flush()
    return mqtt.MQTT_ERR_SUCCESS


class Link:
    """One paho client driven by its owner's thread (`pump`), never by a thread of paho's.

    The replica and the monitor receive every message and run every timer on one thread, so
    a program whose loop is stuck stops beating too: it is failed over instead of looking live
    while it applies nothing. There is no lock between threads either. Messages are still
    handled on the thread that reads them (handing each to another thread cost the replica
    ~0.35 ms per request).

    No exception from a handler ever reaches paho (an escaped one used to end paho's thread
    and leave the program silent but connected): it goes to `on_error`, and no handler runs
    again until the owner decides what to do.
    """

    #: Seconds between attempts to reconnect, doubling up to the second value.
    RETRY = (0.25, 2.0)

    def __init__(
        self,
        client: mqtt.Client,
        host: str,
        port: int,
        *,
        on_connect: Callable[[bool], None],
        on_message: Callable[[str, bytes, bool, Properties | None], None],
        on_error: Callable[[BaseException], None],
        on_disconnect: Callable[[], None] | None = None,
        on_batch: Callable[[], None] | None = None,
        key: ClusterKey | None = None,
    ) -> None:
        """With `key`, `publish(..., signed=True)` signs. `on_message` is given each message's
        MQTT 5 properties, where a signature is (`kvwire.access.signature_of`). `on_batch`
        runs after each turn's messages were handled, before the turn writes."""
        self.client = client
        self.key = key
        self.host = host
        self.port = port
        self.connected = False
        self.failed: BaseException | None = None
        self.refused: str | None = None
        self._on_connect = on_connect
        self._on_message = on_message
        self._on_error = on_error
        self._on_disconnect = on_disconnect
        self._after_read = (lambda: self._guard(on_batch)) if on_batch is not None else None
        self._retry_at = 0.0
        self._delay = self.RETRY[0]
        client.on_connect = self._connected
        client.on_message = self._message
        client.on_disconnect = self._disconnected
        pump_only(client)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # --- paho's callbacks, run inside `pump` ----------------------------------------------

    def _guard(self, handler: Callable[..., None], *args: Any) -> None:
        if self.failed is not None:
            return
        try:
            handler(*args)
        except Exception as exc:  # every one: none may reach paho's loop
            self.failed = exc
            self._on_error(exc)

    def _connected(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            return
        self.connected = True
        self.refused = None
        self._delay = self.RETRY[0]
        self._guard(self._on_connect, bool(flags.session_present))

    def _message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        self._guard(self._on_message, msg.topic, msg.payload, bool(msg.dup), msg.properties)

    def _disconnected(self, c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self._lost()

    def _lost(self) -> None:
        if self.connected:
            self.connected = False
            if self._on_disconnect is not None:
                self._guard(self._on_disconnect)

    # --- driven by the owner --------------------------------------------------------------

    def open(
        self, timeout: float, *, keepalive: int = 5, patient: bool = True, **connect_args: Any
    ) -> None:
        """Connect, retrying while the broker is not there yet (`patient`; else one attempt);
        BrokerError unless it accepts us within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.connect(self.host, self.port, keepalive=keepalive, **connect_args)
                break
            except ssl.SSLError as exc:
                raise _tls_failed(self.where, exc) from None
            except OSError as exc:
                if not patient or time.monotonic() >= deadline:
                    raise BrokerError(
                        f"cannot reach the MQTT broker at {self.where}: {exc}"
                    ) from None
                time.sleep(0.2)
        while not self.connected and self.failed is None:
            if self.refused is not None:
                self._say_goodbye()
                raise _refused(self.where, self.refused)
            left = deadline - time.monotonic()
            if left <= 0:
                self._say_goodbye()
                raise BrokerError(
                    f"the MQTT broker at {self.where} did not answer within {timeout:g} s"
                )
            self.pump(min(left, 0.1))

    def pump(
        self,
        timeout: float,
        wake: int | None = None,
        hold: contextlib.AbstractContextManager[Any] = _UNLOCKED,
    ) -> None:
        """Wait up to `timeout` s for traffic and handle it; reconnect when the link is down.
        `wake` and `hold`: see `exchange`; `hold` is not held while waiting."""
        client = self.client
        if client.socket() is not None:
            if exchange(client, timeout, wake, hold, self._after_read) == mqtt.MQTT_ERR_SUCCESS:
                return
            with hold:
                self._lost()
            self._retry_at = time.monotonic() + self._delay
            return
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(min(timeout, self._retry_at - now))
            return
        self._delay = min(self._delay * 2, self.RETRY[1])
        self._retry_at = now + self._delay
        with hold, contextlib.suppress(OSError):
            client.reconnect()

    def flush(self) -> None:
        """Write what is queued now. From a handler, paho writes only once the whole batch it
        is reading has been handled; this is safe there because we never set on_publish."""
        if self.client.socket() is not None:
            write_batch(self.client)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        signed: bool = False,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo | None:
        """Publish, `signed` with the cluster key if there is one (a control message); None
        (and nothing sent) if paho refuses the topic or payload."""
        try:
            if signed and self.key is not None:
                properties = self.key.properties(payload)
            return self.client.publish(
                topic, payload, qos=qos, retain=retain, properties=properties
            )
        except ValueError:
            return None

    def _say_goodbye(self, reasoncode: ReasonCode | None = None) -> None:
        self.client.disconnect(reasoncode=reasoncode)
        self.client.loop_write()  # the DISCONNECT; paho closes the socket once it is sent

    def close(self, reasoncode: ReasonCode | None = None) -> None:
        """Disconnect (with `reasoncode`: 4 asks the broker to publish our will) and unhook."""
        client = self.client
        if client.socket() is not None:
            self._say_goodbye(reasoncode)
        client.on_connect = None
        client.on_message = None
        client.on_disconnect = None
        client.on_socket_open = None
        self.connected = False
