"""`kvclient web`: a page that shows the cluster live, from the heartbeats `status` reads and
the events the replicas and monitors publish (`kvwire.events`).

The standard library's threading HTTP server, one page (`web.html`, plain HTML, CSS and a
little JavaScript, no build step) and server-sent events: the browser opens `/stream` and
gets a snapshot of the cluster as JSON four times a second, with the events it has not seen.
One MQTT connection serves every browser, and the broker's credentials stay in this process.
`/state` is the same snapshot once, for scripts and `curl`.
"""

from __future__ import annotations

import errno
import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlparse

from kvclient.status import ClusterWatch, as_rows, expected_size, quota_fill
from kvwire.errors import ConfigError

log = logging.getLogger("kvclient")

#: Seconds between two snapshots on a stream, and how stale a heartbeat may be for "live".
PERIOD = 0.25
STALE_AFTER = 1.0
#: How many events the page is given when it opens, and the server keeps.
EVENTS_KEPT = 200


class WebView:
    """What every browser is shown, read from one `ClusterWatch`."""

    def __init__(self, watch: ClusterWatch, broker: str, n: int | None = None) -> None:
        self.watch = watch
        self.broker = broker
        self.n = n
        self.started = time.time()

    def snapshot(self, seen: int = 0) -> tuple[dict[str, Any], int]:
        """The cluster now, and the events numbered after `seen`; the last number sent."""
        status = self.watch.status(stale_after=STALE_AFTER)
        size = expected_size(status, self.n)
        rows = as_rows(status, size)
        kept = self.watch.events_after(0)
        events = [(number, event) for number, event in kept if number > seen]
        for row in rows:
            state = status.replicas.get(int(row["replica"]))  # type: ignore[call-overload]
            row["incarnation"] = state.beat.incarnacao if state else None
        fenced = _fenced_now([event for _, event in kept], rows)
        for row in rows:
            if row["replica"] in fenced:
                row["state"] = "fenced"
            elif row["state"] == "gone":
                row["state"] = "down"
        ports = status.monitor_metrics
        snapshot = {
            "connected": self.watch.connected,
            "broker": self.broker,
            "now": time.time(),
            "n": size,
            "replicas": rows,
            "monitors": [
                {"name": name, "age": round(age, 2), "metrics_port": ports.get(name)}
                for name, age in sorted(status.monitors.items())
                if age <= 5 * STALE_AFTER
            ],
            "divergent": status.divergent(),
            "quota": quota_fill(rows),
            "events": [{"number": number, **event.model_dump()} for number, event in events],
        }
        return snapshot, (events[-1][0] if events else seen)


def _fenced_now(events: list[Any], rows: list[dict[str, Any]]) -> set[int]:
    """Replicas not live whose last event is their fencing: declared failed while running,
    they stopped answering and are on their way back (protocol §8)."""
    last: dict[int, str] = {}
    for event in events:
        origin = event.origem
        if origin.startswith("replica ") and event.tipo in ("fenced", "join", "recovery"):
            last[int(origin.split()[1])] = event.tipo
    return {
        int(row["replica"])
        for row in rows
        if row["state"] != "live" and last.get(int(row["replica"])) == "fenced"
    }


def page() -> bytes:
    return resources.files("kvclient").joinpath("web.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: " + format, *args)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/":
            self._send(200, "text/html; charset=utf-8", page())
        elif path == "/state":
            snapshot, _ = self.server.view.snapshot()
            self._send(200, "application/json", json.dumps(snapshot).encode())
        elif path == "/stream":
            self._stream()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        """Server-sent events until the browser goes away (a write fails) or we stop."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        seen = 0
        try:
            while not self.server.stopping:
                snapshot, seen = self.server.view.snapshot(seen)
                self.wfile.write(b"data: " + json.dumps(snapshot).encode() + b"\n\n")
                self.wfile.flush()
                self.server.view.watch.wait_change(PERIOD)
                time.sleep(0.05)  # several heartbeats arrive together: one snapshot for them
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return  # the browser left mid-stream; its thread ends, nobody else notices


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # 50 browsers opening at once must not find the listen queue full.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], view: WebView) -> None:
        super().__init__(address, _Handler)
        self.view = view
        self.stopping = False


def serve(view: WebView, host: str, port: int) -> _Server:
    """A server bound to `host:port` (port 0: any free one); the caller runs
    `serve_forever` and, to stop, sets `stopping` and calls `shutdown`."""
    return _Server((host, port), view)


def serve_until_stopped(view: WebView, host: str, port: int, open_browser: bool) -> None:
    """`kvclient web`: serve `view` until Ctrl-C, saying where first."""
    import webbrowser

    try:
        server = serve(view, host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use: if it is a view already running (scripts/"
                f"cluster.sh up starts one), open http://{host}:{port}/; else choose --port"
            ) from None
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    url = f"http://{host}:{server.server_address[1]}/"
    print(f"mqtt-kv view of {view.broker} at {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.stopping = True
        server.server_close()
