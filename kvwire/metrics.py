"""Serving Prometheus metrics (issue 29), the same for the replica and the monitor.

prometheus-client writes the text format; this serves its WSGI app on a thread of its own,
so a scrape never waits for the loop that applies the stream, and the loop never waits for
a scrape. Every accepted socket gets TCP_NODELAY, as every socket of ours does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvwire.errors import ConfigError

#: What `--metrics-port` says: `PORT` (on 127.0.0.1), or `HOST:PORT`; port 0 takes a free one.
METRICS_HELP = (
    "Serve Prometheus metrics on [HOST:]PORT (HOST defaults to 127.0.0.1; 0.0.0.0:PORT to be "
    "scraped from other machines; port 0 takes a free one, which the heartbeat reports)."
)


# A `_created` series beside every counter and histogram doubles what is scraped and says
# only when the process started, which `process_start_time_seconds` says once.
disable_created_metrics()  # type: ignore[no-untyped-call]


def new_registry() -> CollectorRegistry:
    """A registry of our own (not the process-global one), with the process's CPU, memory
    and open files, as every Prometheus exporter has them."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def broker_connected(connected: bool) -> GaugeMetricFamily:
    """The same gauge from the replica and the monitor."""
    return GaugeMetricFamily(
        "mqttkv_broker_connected", "1 while the connection to the broker is up.",
        value=int(connected),
    )  # fmt: skip


def counters(prefix: str, rows: Iterable[tuple[str, int, str]]) -> Iterator[Metric]:
    """A counter without labels for each `(name, value, help)`, named `prefix` + name."""
    for name, value, text in rows:
        yield CounterMetricFamily(f"{prefix}{name}", text, value=value)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(
        self, format: str, *args: Any
    ) -> None:  # quiet: one line per event that matters
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def metrics_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"--metrics-port {text!r}: a port (9400) or HOST:PORT (0.0.0.0:9400)")
    return host or "127.0.0.1", number


class MetricsServer:
    """The endpoint, running: `port` is the one bound (the one asked for, or a free one)."""

    def __init__(self, registry: CollectorRegistry, where: str) -> None:
        host, port = metrics_address(where)
        try:
            self._httpd = make_server(
                host, port, make_wsgi_app(registry), _Server, handler_class=_Handler
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.host, self.port = host, int(self._httpd.server_port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
