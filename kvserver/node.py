"""The thin MQTT adapter around the replica's state machine.

One thread does everything: it pumps the connection (`kvwire.mqtt.Link`), and each message
is decoded once, fed to the state machine and what it returns is published, all inside the
pump; between pumps the same thread runs the timers, publishes heartbeats and feeds state
transfers to the socket a window at a time. So a heartbeat proves that messages are being
applied: a replica whose loop is stuck goes silent and is failed over (issue 11). The reason
the replica applies messages on the thread that reads them stays: a hand-off to another
thread cost ~0.35 ms per request.

If the state machine raises (a bug), the replica must not live on half-dead: it logs the
traceback and exits at once without a DISCONNECT, so the broker publishes its last will and
the monitor fails it over in milliseconds.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kvserver.disk import DataDir, DataDirError, DiskFull
from kvserver.effects import Effect, Mirror, Publish, Ready, Reconnect, SendState, Stop
from kvserver.replica import Replica
from kvserver.report import heartbeat
from kvserver.routing import Router
from kvserver.sending import Transfers
from kvserver.settings import ReplicaSettings
from kvserver.transfer import Snapshot
from kvwire.errors import ConfigError
from kvwire.events import forward_events
from kvwire.messages import (
    SIGNED_REQUESTS,
    SYNC_TOPIC_PREFIX,
    Heartbeat,
    Resposta,
    correlation_of,
)
from kvwire.mqtt import Link, correlated, new_client
from kvwire.snapshot import read_snapshot

if TYPE_CHECKING:  # imported when metrics are asked for: prometheus-client costs start-up
    from kvserver.metrics import AdapterState, ReplicaMetrics
    from kvwire.metrics import MetricsServer

log = logging.getLogger("kvserver")

#: Exit status of a replica whose state machine raised: EX_SOFTWARE.
EXIT_BUG = 70
#: How often a replica whose disk is full tries its write again.
_FULL_RETRY_S = 0.5


def new_incarnation() -> str:
    """A name for one connection of this process: the core never draws random numbers."""
    return secrets.token_hex(8)


class Node:
    def __init__(self, settings: ReplicaSettings) -> None:
        self.settings = settings
        self.core: Replica
        self.link: Link | None = None
        self._stopping = threading.Event()
        #: The incarnation of the connection being made, and whether its CONNACK is to come.
        self._incarnation = ""
        self._first_connect = True
        self._router = Router(
            settings.replica_id,
            requests_topic=settings.requests_topic,
            monitor_topic=settings.monitor_topic,
            key=settings.cluster_key,
        )
        self._control: list[Reconnect | Stop] = []
        self._transfers = Transfers(
            settings.replica_id,
            settings.connect_timeout,
            self._sent,
            pace=settings.faults.pace_transfers,
        )
        self._exit_code = 0
        self._next_beat = 0.0
        self.disk: DataDir | None = None
        self._unforced = False
        self._force_at = 0.0
        #: Effects waiting for room on a full disk, in order (None: the disk has room), and
        #: since when it is full.
        self._held: list[Effect] | None = None
        self._full_since: float | None = None
        self._retry_at = 0.0
        self.metrics: ReplicaMetrics | None = None
        self._metrics_server: MetricsServer | None = None
        forward_events(
            log,
            f"replica {settings.replica_id}",
            lambda: self.link,
            settings.monitor_topic,
            lambda: self.core.position if hasattr(self, "core") else None,
        )

    # --- connections ----------------------------------------------------------------------

    def _connect(self, incarnation: str) -> None:
        """A new connection is a new incarnation: new client id, new will, clean session."""
        settings = self.settings
        client = new_client(f"kvserver-{settings.replica_id}-{incarnation}", access=settings.access)
        will = Heartbeat(idserv=settings.replica_id, incarnacao=incarnation, modo="gone").encode()
        key = settings.cluster_key
        client.will_set(
            settings.monitor_topic,
            will,
            qos=1,
            properties=key.will_properties(will) if key else None,
        )
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry
        self._incarnation, self._first_connect = incarnation, True
        self.link = Link(
            client,
            self.settings.host,
            self.settings.port,
            on_connect=self._on_connected,
            on_message=self.settings.faults.wrap(self._on_message, self.settings.requests_topic),
            on_error=self._on_bug,
            on_batch=self._commit,
            key=settings.cluster_key,
        )
        self.link.open(
            self.settings.connect_timeout,
            # A new session for a new incarnation; the same one across reconnects, so that
            # a short disconnect loses nothing (protocol §3).
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )

    def _subscribe(self, client: mqtt.Client) -> None:
        own_sync = f"{SYNC_TOPIC_PREFIX}/{self.settings.replica_id}/+"
        client.subscribe(
            [(self.settings.requests_topic, 1), (self.settings.monitor_topic, 0), (own_sync, 1)]
        )

    def _drop_connection(self, with_will: bool) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        self._transfers.drop("the connection was dropped")  # the joiner asks again
        # Reason code 4 asks the broker to publish our will: the monitor learns at once.
        link.close(ReasonCode(PacketTypes.DISCONNECT, identifier=4) if with_will else None)

    # --- the loop -------------------------------------------------------------------------

    def _start_core(self, incarnation: str) -> Replica:
        settings = self.settings
        on_disk = None
        if settings.data_dir is not None:
            self.disk = DataDir(
                settings.data_dir, replica_id=settings.replica_id, n=settings.n, sync=settings.sync
            )
            on_disk = self.disk.load(since=time.time() - settings.log_ttl)
        if settings.restore is not None:
            if on_disk is not None:
                raise DataDirError(
                    f"data directory {settings.data_dir} holds this replica's state at position "
                    f"{on_disk.position}: a restore starts a new cluster; give it an empty "
                    "data directory"
                )
            snapshot = read_snapshot(settings.restore)
            return Replica.restored(settings, incarnation=incarnation, snapshot=snapshot)
        if settings.fresh:
            if on_disk is not None:
                raise DataDirError(
                    f"data directory {settings.data_dir} holds this replica's state at position "
                    f"{on_disk.position}: start without --fresh to resume from it, or delete "
                    "it to start an empty cluster"
                )
            store = settings.faults.initial_store(settings.replica_id)
            return Replica.fresh(settings, incarnation=incarnation, store=store)
        if on_disk is not None:
            return Replica.recovered(settings, incarnation=incarnation, disk=on_disk)
        return Replica(settings, incarnation=incarnation)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        incarnation = new_incarnation()
        try:
            self.core = self._start_core(incarnation)
            problem = self.settings.quota.start_problem(self.core.store)
            if problem is not None:
                raise ConfigError(problem)
            if self.settings.metrics is not None:
                self._serve_metrics(self.settings.metrics)
            self._commit()  # a fresh replica's directory holds position 0 from the start
            # What start-up made (modules, the store from disk) lives as long as the process:
            # out of the collector's sight, a full collection walks only what came since
            # (2-5 ms instead of 16-32 at 64 requests in flight, issue 16).
            gc.freeze()
            self._connect(incarnation)
        except BaseException:
            if self.disk is not None:
                self.disk.close()
            raise
        while not self._stopping.is_set():
            link = self.link
            assert link is not None
            busy = self._transfers.busy
            link.pump(0.0 if busy else max(0.0, min(1.0, self._next_beat - time.time())))
            if link.failed is not None:
                self._die(link.failed)
            self._commit()
            while self._control and not self._stopping.is_set():
                self._on_control(self._control.pop(0))
            if self.link is not None:
                self._transfers.feed(self.link, time.monotonic())
            now = time.time()
            if now >= self._next_beat and self.link is not None:
                self._on_timer(now)
                self._commit()
        self._shutdown()
        return self._exit_code

    def _serve_metrics(self, where: str) -> None:
        """A port that cannot be had costs the metrics, not the replica: one line, and on."""
        from kvserver.metrics import ReplicaMetrics
        from kvwire.metrics import MetricsServer

        metrics = ReplicaMetrics(lambda: getattr(self, "core", None), self._link_state)
        try:
            self._metrics_server = MetricsServer(metrics.registry, where)
        except ConfigError as exc:
            log.error("replica %d serves no metrics: %s", self.settings.replica_id, exc)
            return
        self.metrics = metrics
        where = self._metrics_server.url
        log.info("replica %d serves metrics on %s", self.settings.replica_id, where)

    def _link_state(self) -> AdapterState:
        from kvserver.metrics import AdapterState

        link = self.link
        connected = link is not None and link.connected
        return AdapterState(connected, self._router.forgeries.counted, self.disk_full)

    # --- data on disk ---------------------------------------------------------------------

    def _commit(self) -> None:
        """Take what the core has ready: its durable part goes to disk in one transaction
        (group commit: everything a turn applied), and only then are its effects performed,
        so an acknowledged write is on disk (handed to the operating system, or forced with
        --sync always) first. A write that fails raises: nothing of the batch goes out.

        A full disk is waited out instead (issue 29). The transaction is rolled back whole;
        the turn's effects are held, and so are those of later turns (applied in memory,
        their changes dropped); heartbeats say `disco: "cheio"`. Every `_FULL_RETRY_S` the
        core is asked for its whole state, at its position now, and once that is written
        everything held goes out, in order."""
        ready = self.core.ready()
        held = self._held
        if held is None:
            if self._made_durable(ready):
                self._perform_all(ready.effects)
            else:
                self._held = list(ready.effects)
            return
        held.extend(ready.effects)
        if time.monotonic() < self._retry_at:
            return
        self.core.write_everything()
        again = self.core.ready()
        held.extend(again.effects)
        if not self._made_durable(again):
            return
        self._held = None
        waited = time.monotonic() - (self._full_since or time.monotonic())
        self._full_since = None
        log.warning(
            "replica %d has room in its data directory again at position %d after %.1f s: "
            "%d effects it held go out", self.core.id, self.core.position, waited, len(held),
        )  # fmt: skip
        self._perform_all(held)

    def _made_durable(self, ready: Ready) -> bool:
        """False when the disk is full: nothing of `ready` was written."""
        disk = self.disk
        if disk is None:
            return True
        try:
            if ready.durable is not None:
                if self.link is not None:
                    # The turn's PUBACKs first: the broker sends more while we write (the
                    # disk's latency would otherwise hold its in-flight window shut).
                    self.link.flush()
                began = time.perf_counter()
                disk.write(ready.durable, between=self._beat_if_due)
                if self.metrics is not None:
                    self.metrics.disk.observe(time.perf_counter() - began)
                self._unforced = True
            if self._unforced and self.settings.sync == "periodic":
                now = time.monotonic()
                if now >= self._force_at:
                    disk.force()
                    self._unforced = False
                    self._force_at = now + self.settings.sync_interval
        except DiskFull as exc:
            if self._full_since is None:
                self._full_since = time.monotonic()
                log.error(
                    "replica %d cannot write its data directory at position %d: %s; it answers "
                    "nothing until there is room (what it applies meanwhile waits, nothing is "
                    "lost)", self.core.id, self.core.position, exc,
                )  # fmt: skip
            self._retry_at = time.monotonic() + _FULL_RETRY_S
            return False
        return True

    @property
    def disk_full(self) -> bool:
        return self._full_since is not None

    def _perform_all(self, effects: list[Effect]) -> None:
        for effect in effects:
            if not self._perform(effect):
                break
        if self.metrics is not None:
            self.metrics.performed(effects, self.core)

    def _publish(self, effect: Publish | Mirror) -> None:
        if isinstance(effect, Mirror):
            if self.link is not None:
                self.link.publish(effect.topic, effect.payload, retain=True)
            return
        link, message = self.link, effect.message
        # A control message; answers are not signed.
        signed = isinstance(message, SIGNED_REQUESTS)
        correlation = correlation_of(message.idpedido) if isinstance(message, Resposta) else None
        if link is None:
            info = None
        elif correlation is not None:  # an MQTT 5 request's answer carries its data back
            info = link.publish(effect.topic, message.encode(), properties=correlated(correlation))
        else:
            info = link.publish(effect.topic, message.encode(), effect.qos, signed=signed)
        if info is None:
            log.error("replica %d could not publish to %.80r", self.core.id, effect.topic)

    def _beat_if_due(self) -> None:
        now = time.time()
        if now >= self._next_beat and self.link is not None:
            self._next_beat = now + self.settings.heartbeat_interval
            self._beat(now)
            self.link.flush()

    def _on_timer(self, now: float) -> None:
        """Expire, retry joins, beat. Run between pumps, and from the message handler when a
        backlog keeps one pump busy: paho reads as many messages per pump as we have answers
        unacknowledged, and a lagging replica's PUBACKs wait behind its whole backlog."""
        self._next_beat = now + self.settings.heartbeat_interval
        self.core.tick(now)
        self._beat(now)

    def _beat(self, now: float) -> None:
        if self.link is not None and self.link.connected:
            server = self._metrics_server
            port = server.port if server is not None else None
            if self.metrics is not None or self.core.quota.bytes is not None:
                self.core.store.nbytes()  # summed here, on the loop's thread, then kept
            forged = self._router.forgeries.counted
            beat = heartbeat(self.core, now, forged, port, self.disk_full).encode()
            self.link.publish(self.settings.monitor_topic, beat, 0, signed=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def _on_control(self, effect: Reconnect | Stop) -> None:
        if isinstance(effect, Stop):
            log.error("replica %d exits: %s", self.core.id, effect.reason)
            self._exit_code = 3
            self._stopping.set()
            return
        self._drop_connection(effect.with_will)
        self._connect(new_incarnation())

    def _on_bug(self, exc: BaseException) -> None:
        log.critical(
            "replica %d hit a bug at position %d and exits (its last will fails it over)",
            self.core.id,
            self.core.position,
            exc_info=exc,
        )

    def _die(self, exc: BaseException) -> None:
        # No DISCONNECT, no clean-up: the broker sees the connection drop and publishes our
        # will, and nothing of a state machine in an unknown state is published.
        logging.shutdown()
        os._exit(EXIT_BUG)

    def _shutdown(self) -> None:
        self._commit()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._held is not None:  # never sent: their retries go to the successor
            what = (self.core.id, len(self._held), self.core.position)
            log.error("replica %d stops with %d effects held by a full disk at position %d", *what)
        if self.disk is not None:
            with contextlib.suppress(DiskFull):  # what is committed stays; nothing more is
                self.disk.force()
            self.disk.close()
        link = self.link
        if link is None:
            return
        gone = Heartbeat(idserv=self.core.id, incarnacao=self.core.incarnation, modo="gone")
        info = link.publish(self.settings.monitor_topic, gone.encode(), 1, signed=True)
        deadline = time.monotonic() + 1.0
        while info is not None and not _published(info) and time.monotonic() < deadline:
            link.pump(0.05)  # not connected: the will does the job
        self._drop_connection(with_will=False)
        log.info("replica %d stopped at position %d", self.core.id, self.core.position)

    # --- inside the pump ------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, dup: bool, props: Properties | None) -> None:
        now = time.time()
        routed = self._router.route(topic, payload, dup, props)
        if routed is not None:
            self.core.receive(routed, now)
            if self.metrics is not None:
                self.metrics.arrived(self.core.pending, now)
        if now >= self._next_beat and self.link is not None:
            self._on_timer(now)
            self.link.flush()  # inside the pump paho would hold it until the backlog is read

    def _on_connected(self, session_present: bool) -> None:
        assert self.link is not None
        now = time.time()
        if self._first_connect:
            self._first_connect = False
            self._subscribe(self.link.client)
            self.core.connected(self._incarnation, now)
            # Beat at once: the monitor learns this incarnation before anything else happens
            # (the novoserv leaves with the turn's batch).
            self._beat(now)
            log.info(
                "replica %d connected to %s:%d",
                self.core.id,
                self.settings.host,
                self.settings.port,
            )
        elif not session_present:
            self.core.on_session_lost(now)

    def _perform(self, effect: Effect) -> bool:
        """Whether to go on with the batch: a reconnect closes the connection it came on."""
        if isinstance(effect, Publish | Mirror):
            self._publish(effect)
        elif isinstance(effect, SendState):
            self._transfers.start(effect.topic, effect.snapshot, self.settings.chunk_items)
        else:
            self._control.append(effect)
            return False
        return True

    def _sent(self, snapshot: Snapshot) -> None:
        self.core.state_sent(snapshot)


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except RuntimeError:  # paho's way of saying it will never be: the connection is gone
        return True
