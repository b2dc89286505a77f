"""`kvclient web` as a person sees it: headless Chromium on the page, against real processes.

The screenshot of the failover test is saved under the test's directory, and where
KV_SCREENSHOT names a file (docs/web.png for the README), there too.
"""

from __future__ import annotations

import http.client
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvclient.client import KVClient
from kvclient.operations import Get
from kvwire.messages import Heartbeat
from tests.browser import Browser
from tests.cluster import BOTH_MODES, Broker, Cluster, terminate, wait_until

pytestmark = pytest.mark.integration

LIVE_NODES = (
    "return [...document.querySelectorAll('.node')].map(n => [+n.dataset.replica, n.dataset.state])"
)


class WebServer:
    """`kvclient web` as a user starts it, on a free port it chooses and prints."""

    def __init__(self, broker: str, logdir: Path, *extra: str) -> None:
        self.log = logdir / "web.log"
        env = dict(os.environ, KV_BROKER=broker)
        args = [sys.executable, "-m", "kvclient", "web", "--port", "0", *extra]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        found = wait_until(
            lambda: re.search(r"at (http://\S+/) ", self.log.read_text()), 15, "the page's address"
        )
        self.url = found.group(1)
        host, port = self.url.split("//")[1].rstrip("/").split(":")
        self.host: str = host
        self.port = int(port)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chrome = Browser(tmp_path)
    try:
        yield chrome
    finally:
        chrome.close()


def states(browser: Browser) -> dict[int, str]:
    return {int(i): state for i, state in browser.run(LIVE_NODES)}


def events_text(browser: Browser, kind: str) -> list[str]:
    script = f"return [...document.querySelectorAll('#events li[data-kind={kind}]')]"
    return [str(t) for t in browser.run(script + ".map(li => li.textContent)")]


@BOTH_MODES
@pytest.mark.timeout(120)
def test_the_page_shows_a_kill_the_takeover_and_the_join(
    cluster: Cluster, browser: Browser, tmp_path: Path
) -> None:
    web = WebServer(cluster.address, tmp_path)
    load = Load(cluster.address)
    try:
        browser.open(web.url)
        wait_until(lambda: states(browser) == dict.fromkeys(range(3), "live"), 10, "3 live")

        cluster.replicas[0].kill()

        def taken_over() -> bool:
            arrow = 'return !!document.querySelector(\'[data-answers-for="0"][data-by="1"]\')'
            return states(browser).get(0) == "down" and bool(browser.run(arrow))

        # About 1 s (the failure timeout) on a quiet machine; a busy one may take longer, and
        # how long failover takes is measured by scripts/bench_failover.py, not here.
        wait_until(taken_over, 10.0, "replica 0 down and replica 1 answering for it")
        wait_until(lambda: events_text(browser, "takeover"), 5, "the takeover's event")
        assert "takes over for replica 0" in events_text(browser, "takeover")[0]
        time.sleep(1.2)  # a second of positions under load: the req/s column has figures
        shot = tmp_path / "web-takeover.png"
        browser.screenshot(shot)
        if (target := os.environ.get("KV_SCREENSHOT")) and cluster.secrets is None:
            Path(target).write_bytes(shot.read_bytes())

        # The key box: "c" (UTF-8 byte sum 99) is of slot 0, answered by replica 1 meanwhile.
        browser.run(
            "const k = document.getElementById('key'); k.value = arguments[0];"
            "k.dispatchEvent(new Event('input'));",
            "c",
        )
        info = browser.run("return document.getElementById('keyinfo').textContent")
        assert "slot 0" in info and "owner now 1" in info and "successor 2" in info

        cluster.start_replica(0)
        cluster.wait_log(0, "joined at position", 20)
        wait_until(lambda: states(browser).get(0) == "live", 10, "replica 0 live again")
        joins = wait_until(lambda: events_text(browser, "join"), 5, "the join's event")
        assert re.search(r"replica 0 joined at position \d+", joins[0])
        browser.screenshot(tmp_path / "web-joined.png")
        assert load.stop() > 0
    finally:
        load.stop()
        web.stop()


class Load:
    """Puts and gets from a thread while the test looks, so that the page has keys and
    requests per second to show."""

    def __init__(self, broker: str) -> None:
        self.done = threading.Event()
        self.answered = 0
        self.thread = threading.Thread(target=self._run, args=(broker,), daemon=True)
        self.thread.start()

    def _run(self, broker: str) -> None:
        with KVClient(broker, timeout=10, retry_interval=0.5) as kv:
            i = 0
            while not self.done.is_set():
                kv.put(f"key-{i % 300}", f"value-{i}")
                kv.request(Get(f"key-{(i * 7) % 300}"))  # found or not: an answer
                self.answered += 2
                i += 1
                time.sleep(0.005)

    def stop(self) -> int:
        self.done.set()
        self.thread.join(15)
        return self.answered


def beat(i: int, n: int, **fields: Any) -> bytes:
    defaults = {"posicao": 100 + i, "chaves": 10, "resumo": f"{i:016x}", "n": n}
    return Heartbeat(idserv=i, incarnacao=f"inc{i}", **{**defaults, **fields}).encode()


class Beats:
    """Heartbeats of `n` pretend replicas, four a second, from a thread: enough to lay out
    16 replicas without starting 16 processes."""

    def __init__(self, broker: str, n: int) -> None:
        from kvclient.transport import MqttTransport

        self.n = n
        self.transport = MqttTransport(broker, name="beats", v5=False)
        self.transport.open("unused/beats", lambda t, p: None)

    def send(self) -> None:
        for i in range(self.n):
            self.transport.publish("inf1406-monitor", beat(i, self.n))

    def close(self) -> None:
        self.transport.close()


@pytest.mark.timeout(90)
def test_sixteen_replicas_fit_and_a_broker_that_goes_away_is_said(
    tmp_path: Path, browser: Browser
) -> None:
    broker = Broker(tmp_path)
    broker.start(persistence=False)
    web = WebServer(broker.address, tmp_path, "--n", "16")
    beats = Beats(broker.address, 16)
    try:
        browser.open(web.url)

        def all_live() -> bool:
            beats.send()
            return states(browser) == dict.fromkeys(range(16), "live")

        wait_until(all_live, 10, "16 live replicas on the page")
        boxes = browser.run(
            "const svg = document.getElementById('ring').getBoundingClientRect();"
            "return [svg, ...[...document.querySelectorAll('.node circle')]"
            ".map(c => c.getBoundingClientRect())]"
        )
        ring, circles = boxes[0], boxes[1:]
        assert len(circles) == 16
        for c in circles:  # inside the drawing
            assert ring["left"] <= c["left"] and c["right"] <= ring["right"]
            assert ring["top"] <= c["top"] and c["bottom"] <= ring["bottom"]
        for k, a in enumerate(circles):  # and none on another
            for b in circles[k + 1 :]:
                apart = math.dist(
                    (a["x"] + a["width"] / 2, a["y"] + a["height"] / 2),
                    (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2),
                )
                assert apart >= (a["width"] + b["width"]) / 2
        browser.screenshot(tmp_path / "web-16.png")

        beats.close()
        broker.kill()
        banner = "return document.getElementById('conn').textContent"
        wait_until(lambda: browser.run(banner) == "disconnected", 10, "'disconnected'")
        broker.start(persistence=False)  # the same port
        beats = Beats(broker.address, 16)
        wait_until(lambda: browser.run(banner) == "connected", 15, "'connected' again")
        wait_until(all_live, 10, "16 live replicas again")
    finally:
        beats.close()
        web.stop()
        broker.stop()


def open_stream(host: str, port: int) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/stream")
    return connection


def test_the_server_outlives_browsers_that_leave_and_serves_fifty(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start(persistence=False)
    web = WebServer(broker.address, tmp_path, "--n", "3")
    beats = Beats(broker.address, 3)
    streams: list[http.client.HTTPConnection] = []
    responses: list[http.client.HTTPResponse] = []
    try:
        beats.send()
        for _ in range(50):
            streams.append(open_stream(web.host, web.port))
        responses = [stream.getresponse() for stream in streams]
        for response in responses:  # each gets its first snapshot
            assert response.status == 200
            assert response.readline().startswith(b"data: {")
        for stream, response in zip(streams[:25], responses[:25], strict=True):
            response.close()  # half leave mid-stream, without a word
            stream.close()
        beats.send()
        time.sleep(1.0)  # the server writes to them at least twice meanwhile
        for response in responses[25:]:  # the others keep being served
            lines = [response.readline() for _ in range(6)]
            assert any(b'"replicas"' in line and line.startswith(b"data: ") for line in lines)
        assert web.alive()
        check = http.client.HTTPConnection(web.host, web.port, timeout=5)
        check.request("GET", "/state")
        with check.getresponse() as state:
            assert state.status == 200 and b'"n": 3' in state.read()
        check.close()
    finally:
        for response in responses:
            response.close()
        for stream in streams:
            stream.close()
        beats.close()
        web.stop()
        broker.stop()


def test_a_second_view_on_a_busy_port_says_where_the_first_may_be(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.start(persistence=False)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        shown = subprocess.run(
            [sys.executable, "-m", "kvclient", "web", "--port", str(port)],
            env=dict(os.environ, KV_BROKER=broker.address), capture_output=True, text=True,
            timeout=30, check=False,
        )  # fmt: skip
    finally:
        taken.close()
        broker.stop()
    assert shown.returncode == 2 and shown.stderr.count("\n") == 1, shown.stderr
    assert f"open http://127.0.0.1:{port}/" in shown.stderr


@pytest.mark.timeout(120)
def test_the_page_speaks_a_person_s_time_and_shows_the_quota_and_the_metrics(
    tmp_path: Path, browser: Browser
) -> None:
    """Event lines show the browser's clock and ages, never Unix seconds; the quota's fill and
    each replica's and the monitor's metrics link are beside the ring."""
    cluster = Cluster(tmp_path, metrics=True)
    web = None
    try:
        cluster.start(extra=dict.fromkeys(range(3), ("--max-keys", "100")))
        web = WebServer(cluster.address, tmp_path)
        with KVClient(cluster.address, timeout=15) as kv:
            for i in range(40):
                kv.put(f"t/{i}", "x")
        browser.open(web.url)
        wait_until(lambda: states(browser) == dict.fromkeys(range(3), "live"), 10, "3 live")
        read_quota = "return document.getElementById('quota').innerText"
        quota = wait_until(
            lambda: "40 of 100 keys" in (text := browser.run(read_quota)) and text, 10,
            "the quota's fill",
        )  # fmt: skip
        assert "40% full" in quota
        read_links = (
            "return [...document.querySelectorAll('#metrics a')].map(a => [a.textContent, a.href])"
        )
        links = wait_until(
            lambda: len(found := browser.run(read_links)) == 4 and found, 10, "4 metrics links"
        )
        names = [name for name, _ in links]
        assert names[:3] == ["replica 0", "replica 1", "replica 2"]
        assert names[3].startswith("monitor ")
        processes = [*cluster.replicas.values(), cluster.monitors[0]]
        for (_, href), process in zip(links, processes, strict=True):
            assert href == cluster.metrics_url(process).replace("127.0.0.1", web.host)
        for _, href in links[:3]:
            with urllib.request.urlopen(href, timeout=5) as answer:
                assert b"mqttkv_keys 40.0" in answer.read()
        with urllib.request.urlopen(links[3][1], timeout=5) as answer:
            assert b'mqttkv_monitor_replica_up{replica="0"} 1.0' in answer.read()

        cluster.replicas[0].kill()
        failure = wait_until(lambda: events_text(browser, "failure"), 10, "the failure event")[0]
        assert "replica 0 declared failed" in failure
        assert not re.search(r"\b1[6-9]\d{8}\b", failure), failure  # no Unix seconds
        # "05:52:04.192 · 1.3 s ago" then the text, its last heartbeat "(0.9 s before)".
        assert re.match(r"\d{1,2}:\d{2}:\d{2}\.\d{3} · \d+\.\d s ago", failure), failure
        assert re.search(r"last heartbeat \d{1,2}:\d{2}:\d{2}\.\d{3} \(\d+\.\d s before\)", failure)
        browser.screenshot(tmp_path / "web-times.png")
    finally:
        if web is not None:
            web.stop()
        cluster.close()
